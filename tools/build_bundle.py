"""Release pipeline of the bundled `portraits-64` model: snapshot -> package weights, model card, samples, grid.

    python -m tools.build_bundle RUN_DIR [--network network-latest.safetensors] [--samples-only]
    python -m tools.build_bundle --evaluation --fid fid.json --bench bench/results/detect.json

Run from the repository root.

1. copies RUN_DIR/NETWORK to generator/weights/portraits-64.safetensors, with the model card in its header and in
   generator/weights/portraits-64.json (config, data recipe, kimg, wall time, hardware);
2. writes docs/portraits64_grid.png (seeds 0-15, stored noise) and, beside it for comparison,
   docs/portraits64_renders.png (held-out procedural portraits of set 1, indices 0-15, at the model's resolution);
3. regenerates samples/: face.png (a generated portrait), generated-*.png (fresh seeds), real-*.png (held-out
   procedural portraits of set 1, which training never saw: it used set 0) and labels.csv.

Calibration and accuracy figures are separate steps (`sgproject calibrate`, `python -m bench.detect`): they take
long. `--evaluation` then adds them to the model card JSON beside the weights (generator/weights/portraits-64.json,
key "evaluation"); the weights file itself is not touched, so its sha256, which the calibration names, stays the
same.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from detectors.calibration import Calibration, bundled_calibration_path
from generator.checkpoint import load_safetensors_generator, read_header, save_generator
from generator.data.portraits import render_portrait
from generator.registry import WEIGHTS_DIR
from generator.render import generate_images, make_grid
from generator.util.devices import cpu_model
from generator.util.imaging import save_png

ROOT = Path(__file__).resolve().parents[1]  # the repository: docs/ and samples/ are written here

NAME = "portraits-64"
GENERATED_SEEDS = [7, 21, 42, 99]  # samples/generated-*.png (face.png is seed 3)
FACE_SEED = 3
REAL_SET, REAL_INDICES = 1, [0, 1, 2, 3]  # held-out procedural portraits: set 1 (training used set 0)


def build_weights(run_dir: Path, network: str) -> Path:
    src = run_dir / network
    G, info = load_safetensors_generator(src)
    header = read_header(src)
    train_info = header.get("info", {})
    stats = [json.loads(line) for line in open(run_dir / "stats.jsonl") if line.strip()]
    devices = sorted({s.get("device") for s in stats if s.get("event") == "start"})
    card = {
        "name": NAME,
        "description": "StyleGAN2 trained by sgproject on procedural portraits (generator/portraits.py), 64 px",
        "config": G.cfg.to_dict(),
        "data": {"recipe": "sgproject make-dataset portraits --n 50000 --res 64 --seed 0 (rendered on the fly: "
                           "portraits:50000:0)", "held_out": "set 1 (seed 1) is never used for training"},
        "training": {k: train_info.get(k) for k in ("kimg", "step", "train_seconds", "preset", "batch", "r1_gamma",
                                                    "seed")},
        "hardware": {"devices": devices, "cpu": cpu_model(), "torch": torch.__version__},
        "source_snapshot": network,
        "parameters": sum(p.numel() for p in G.parameters()),
    }
    out = save_generator(G, WEIGHTS_DIR / f"{NAME}.safetensors", info=card)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB), kimg {card['training']['kimg']}")
    return out


def build_grid_and_samples() -> None:
    G, info = load_safetensors_generator(WEIGHTS_DIR / f"{NAME}.safetensors")
    imgs = [a for _, a in generate_images(G, list(range(16)), noise_mode="const")]
    save_png(make_grid(imgs, cols=4), ROOT / "docs" / "portraits64_grid.png")
    renders = [render_portrait(REAL_SET, i, G.img_resolution)[0] for i in range(16)]
    save_png(make_grid(renders, cols=4), ROOT / "docs" / "portraits64_renders.png")
    samples = ROOT / "samples"
    samples.mkdir(exist_ok=True)
    for old in samples.glob("*.png"):
        old.unlink()
    rows = []
    # Generated images carry random noise, as a generator's output in the wild does (seeded per image).
    for seed, arr in generate_images(G, [FACE_SEED] + GENERATED_SEEDS, noise_mode="random"):
        name = "face.png" if seed == FACE_SEED else f"generated-{seed}.png"
        save_png(arr, samples / name)
        rows.append({"file": name, "label": "generated", "source": f"{NAME} seed {seed}, noise random(seed)"})
    for i in REAL_INDICES:
        rgb, _ = render_portrait(REAL_SET, i, G.img_resolution)
        name = f"real-{i}.png"
        save_png(rgb, samples / name)
        rows.append({"file": name, "label": "real", "source": f"procedural portrait set {REAL_SET} index {i}"})
    with open(samples / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "label", "source"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} samples and labels.csv; grids docs/portraits64_grid.png and "
          f"portraits64_renders.png ({info.sha256[:12]})")


def write_evaluation(fid_path: Path | None, bench_path: Path | None) -> None:
    """Add measured figures to the card JSON beside the weights (not to the weights' header: see the docstring)."""
    weights = WEIGHTS_DIR / f"{NAME}.safetensors"
    G, info = load_safetensors_generator(weights)
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    ev: dict = {"model_sha256": info.sha256}
    cal_path = bundled_calibration_path(NAME)
    if cal_path is not None:
        cal = Calibration.load(cal_path)
        if cal.model_sha256 != info.sha256:
            sys.exit(f"{cal_path} is for another model ({cal.model_sha256[:12]}): recalibrate first")
        m = cal.metrics
        ev["calibration"] = {
            "file": str(cal_path.relative_to(ROOT)), "n_generated": cal.n_generated, "n_real": cal.n_real,
            "steps": cal.projector.get("num_steps"), "perceptual": cal.perceptual, "features": cal.features,
            "estimate": m.get("estimate"), "auc": m.get("auc"), "tpr_at_1fpr": m.get("tpr_at_1fpr"),
            "tpr_at_5fpr": m.get("tpr_at_5fpr"), "auc_on_calibration_data": m["train"]["auc"],
        }
    if fid_path is not None:
        fid = json.loads(fid_path.read_text())
        if fid.get("model_sha256", info.sha256) != info.sha256:
            sys.exit(f"{fid_path} measured another model")
        ev["fid"] = fid
    if bench_path is not None:
        bench = json.loads(bench_path.read_text())
        if bench["sha256"] != info.sha256:
            sys.exit(f"{bench_path} measured another model ({bench['sha256'][:12]})")
        ev["detection_benchmark"] = {"script": "bench/detect.py", "file": str(bench_path), "n": bench.get("n"),
                                     "machine": bench["machine"], "calibrations": bench.get("calibrations"),
                                     "figures": bench["figures"]}  # per setup ('encoder:25', ...), then variant
    card["evaluation"] = ev
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote the evaluation into {card_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, nargs="?")
    ap.add_argument("--network", default="network-latest.safetensors")
    ap.add_argument("--samples-only", action="store_true", help="Keep the packaged weights; redo grid and samples.")
    ap.add_argument("--evaluation", action="store_true", help="Only add measured figures to the card JSON.")
    ap.add_argument("--fid", type=Path, help="with --evaluation: `sgproject metrics --json` output")
    ap.add_argument("--bench", type=Path, help="with --evaluation: `python -m bench.detect --out` output")
    args = ap.parse_args()
    if args.evaluation:
        write_evaluation(args.fid, args.bench)
        return
    if not args.samples_only:
        if args.run_dir is None:
            ap.error("RUN_DIR is needed unless --samples-only")
        build_weights(args.run_dir, args.network)
    build_grid_and_samples()


if __name__ == "__main__":
    main()
