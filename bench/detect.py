"""Detection accuracy and speed of a model: ROC AUC and TPR at 1% FPR, clean and after JPEG / resizing.

    python -m bench.detect [--model portraits-64] [--n 100] [--steps N] [--variants clean,jpeg90,resize0.9]
    python -m bench.detect --variants jpeg90 --rows-out r-jpeg.jsonl   # one variant per process, then:
    python -m bench.detect --from-rows r-*.jsonl --out figures.json

Run from the repository root.

Real images: held-out procedural portraits (set 1, indices from 20000; training used set 0, the calibration
set 1 from 10000, samples/ set 1 from 0). Generated images: the model's own outputs for fresh seeds (from
2,000,000; the calibration uses 1,000,000+), with random noise as in the wild. Every image is written to a file
in each variant and judged by the same pipeline as `sgproject detect` (loading, degradation matching, projection,
calibration), so the figures are what a user gets.

Variants: `clean` (PNG), `jpeg90` (re-saved as JPEG quality 90, Pillow's default 4:2:0 subsampling), `resize0.9`
(shrunk to 0.9x with Lanczos, saved as PNG; the loader scales it back up).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench._common import cpu_model, pick_device
from detectors.batch import DetectSettings, Detector
from detectors.calibration import calibration_for, roc_auc, tpr_at_fpr
from generator import load_generator
from generator.data.portraits import render_portrait
from generator.metrics.lpips import load_perceptual
from generator.render import generate_images
from projector.project import ProjectorConfig

REAL_SET, REAL_START = 1, 20_000
GEN_START = 2_000_000


def variant(pixels: np.ndarray, name: str, path: Path) -> Path:
    img = Image.fromarray(pixels)
    if name == "clean":
        path = path.with_suffix(".png")
        img.save(path)
    elif name.startswith("jpeg"):
        path = path.with_suffix(".jpg")
        img.save(path, quality=int(name[4:]))
    elif name.startswith("resize"):
        s = float(name[6:])
        w = max(1, round(img.width * s))
        path = path.with_suffix(".png")
        img.resize((w, w), Image.Resampling.LANCZOS).save(path)
    else:
        raise ValueError(name)
    return path


def figures_of(rows: list[dict], cal) -> dict:
    """The figures of one variant from its rows ({label, features, seconds}), calibrated if `cal` is given."""
    y = np.array([r["label"] for r in rows])
    lp = np.array([r["features"]["lpips"] for r in rows])
    raw = np.array([r["features"]["lpips_raw"] for r in rows])
    fig = {
        "n_real": int((y == 0).sum()), "n_generated": int((y == 1).sum()),
        "auc_lpips": roc_auc(-lp, y), "tpr1_lpips": tpr_at_fpr(-lp, y, 0.01),
        "auc_lpips_raw": roc_auc(-raw, y),
        "seconds_per_image": float(np.mean([r["seconds"] for r in rows])),
    }
    if cal is not None:
        # exactly what Detector does per image (detectors.batch): P from the features, then the verdict bands
        p = cal.probabilities([r["features"] for r in rows])
        verdicts = [cal.verdict(float(v)) for v in p]
        decided = [(v == "generated") == bool(t) for v, t in zip(verdicts, y) if v != "uncertain"]
        fig.update({
            "auc": roc_auc(p, y), "tpr_at_1fpr": tpr_at_fpr(p, y, 0.01), "tpr_at_5fpr": tpr_at_fpr(p, y, 0.05),
            "verdict_accuracy": float(np.mean(decided)) if decided else float("nan"),
            "wrong": int(sum(not d for d in decided)),
            "uncertain": sum(v == "uncertain" for v in verdicts),
        })
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="portraits-64")
    ap.add_argument("--n", type=int, default=100, help="images per class")
    ap.add_argument("--steps", type=int, default=None, help="projection steps (default: the calibration's)")
    ap.add_argument("--variants", default="clean,jpeg90,resize0.9")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    ap.add_argument("--calibration", type=Path, default=None)
    ap.add_argument("--no-calibration", action="store_true", help="rank by the raw LPIPS distance only")
    ap.add_argument("--rows-out", type=Path, default=None,
                    help="also write every image's features here (JSON lines), for --from-rows")
    ap.add_argument("--from-rows", type=Path, nargs="+", default=None,
                    help="no projection: compute the figures from rows written by --rows-out (e.g. by several "
                         "processes, one variant each, projected before the calibration existed)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    dev = pick_device(args.device)
    G, info = load_generator(args.model, dev)
    cal = None if args.no_calibration else calibration_for(info.name, args.calibration)
    if cal is not None:
        cfg = ProjectorConfig(**cal.projector)
    else:
        cfg = ProjectorConfig()
    if args.steps:
        cfg.num_steps = args.steps

    if args.from_rows:
        rows = [json.loads(line) for p in args.from_rows for line in p.read_text().splitlines() if line.strip()]
        head = rows[0]
        for r in rows:
            if (r["model_sha256"], r["fingerprint"], r["perceptual"]) != (
                    head["model_sha256"], head["fingerprint"], head["perceptual"]):
                sys.exit("rows made with different models, projector settings or perceptual networks")
        if head["model_sha256"] != info.sha256:
            sys.exit(f"rows are of model {head['model_sha256'][:12]}, not {info.name} ({info.sha256[:12]})")
        if cal is not None and (head["fingerprint"], head["perceptual"]) != (cal.projector_fingerprint, cal.perceptual):
            print("note: the rows were projected with other settings than the calibration's; probabilities use "
                  "the calibration anyway", file=sys.stderr)
        steps, perceptual_id = head["steps"], head["perceptual"]
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        by_variant = {v: [r for r in rows if r["variant"] == v] for v in variants}
        print(f"model {info.name} ({info.sha256[:12]}), {perceptual_id}, {steps} steps, "
              f"{'calibrated' if cal else 'uncalibrated (raw LPIPS)'}; from {len(rows)} rows; "
              f"projected on: {head['machine']}", flush=True)
        machine = head["machine"]
    else:
        perceptual = load_perceptual(device=dev, require=cal.perceptual if cal is not None else None)
        if cal is not None and cfg.fingerprint() != cal.projector_fingerprint:
            print("note: --steps differs from the calibration's; probabilities use the calibration anyway",
                  file=sys.stderr)
        steps, perceptual_id = cfg.num_steps, perceptual.identity
        machine = (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"threads {torch.get_num_threads()}, device {dev}")
        res = G.img_resolution
        reals = [render_portrait(REAL_SET, REAL_START + i, res)[0] for i in range(args.n)]
        gens = [a for _, a in generate_images(G, list(range(GEN_START, GEN_START + args.n)), noise_mode="random")]
        print(f"model {info.name} ({info.sha256[:12]}), {perceptual_id}, {steps} steps, "
              f"{'calibrated' if cal else 'uncalibrated (raw LPIPS)'}; {args.n} real + {args.n} generated; "
              f"{machine}; load {os.getloadavg()[0]:.1f}", flush=True)
        variants = args.variants.split(",")
        by_variant = {}
        for name in variants:
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                (tmp / "in").mkdir()
                labels = {}
                for i, px in enumerate(reals):
                    labels[str(variant(px, name, tmp / "in" / f"real-{i:04d}"))] = 0
                for i, px in enumerate(gens):
                    labels[str(variant(px, name, tmp / "in" / f"gen-{i:04d}"))] = 1
                # Scores only; the calibration is applied afterwards exactly as Detector applies it, so that
                # variants can be projected in parallel before the calibration exists (--rows-out/--from-rows).
                det = Detector(G, info, perceptual, DetectSettings(config=cfg, batch_size=args.batch_size),
                               calibration=None, device=dev)
                t0 = time.time()
                result = det.run([tmp / "in"], tmp / "report", formats=("json",))
                dt = time.time() - t0
                ok = [r for r in result.all_rows if r["status"] == "ok"]
                by_variant[name] = [{
                    "variant": name, "name": Path(r["path"]).name, "label": labels[r["path"]],
                    "features": r["features"], "seconds": dt / max(1, len(ok)), "model_sha256": info.sha256,
                    "fingerprint": cfg.fingerprint(), "perceptual": perceptual_id, "steps": steps,
                    "machine": machine,
                } for r in ok]
            if args.rows_out:
                args.rows_out.parent.mkdir(parents=True, exist_ok=True)
                with open(args.rows_out, "a") as f:
                    for r in by_variant[name]:
                        f.write(json.dumps(r) + "\n")
            print(f"{name:>10}: projected {len(by_variant[name])} images in {dt:.0f} s", flush=True)

    figures = {}
    for name in variants:
        fig = figures[name] = figures_of(by_variant[name], cal)
        print(f"{name:>10}: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in fig.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "model": info.name, "sha256": info.sha256, "steps": steps, "perceptual": perceptual_id,
            "calibration": (None if cal is None else
                            {"model_sha256": cal.model_sha256, "n_generated": cal.n_generated, "n_real": cal.n_real,
                             "created": cal.created}),
            "figures": figures, "machine": machine,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
