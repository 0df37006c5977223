"""Detection accuracy and speed of a model: ROC AUC and TPR at 1% FPR, clean and after JPEG / resizing.

    python bench/detect.py [--model portraits-64] [--n 100] [--steps N] [--variants clean,jpeg90,resize0.9]

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import cpu_model  # noqa: E402
from detectors.batch import DetectSettings, Detector  # noqa: E402
from generator import load_generator  # noqa: E402
from generator.portraits import render_portrait  # noqa: E402
from generator.render import generate_images  # noqa: E402
from projector.perceptual import load_perceptual  # noqa: E402
from projector.project import ProjectorConfig  # noqa: E402

REAL_SET, REAL_START = 1, 20_000
GEN_START = 2_000_000


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """True-positive rate at the strictest threshold whose false-positive rate is at most `fpr`."""
    neg = np.sort(scores[labels == 0])[::-1]
    k = int(np.floor(fpr * len(neg)))  # negatives allowed above the threshold
    thr = neg[k] if k < len(neg) else -np.inf
    return float((scores[labels == 1] > thr).mean())


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="portraits-64")
    ap.add_argument("--n", type=int, default=100, help="images per class")
    ap.add_argument("--steps", type=int, default=None, help="projection steps (default: the calibration's)")
    ap.add_argument("--variants", default="clean,jpeg90,resize0.9")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--calibration", type=Path, default=None)
    ap.add_argument("--no-calibration", action="store_true", help="rank by the raw LPIPS distance only")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    dev = torch.device(args.device)
    G, info = load_generator(args.model, dev)
    cal = None
    if not args.no_calibration:
        from detectors.calibration import calibration_for

        cal = calibration_for(info.name, args.calibration)
    if cal is not None:
        cfg = ProjectorConfig(**cal.projector)
        perceptual = load_perceptual(device=dev, require=cal.perceptual)
    else:
        cfg = ProjectorConfig()
        perceptual = load_perceptual(device=dev)
    if args.steps:
        cfg.num_steps = args.steps
    if cal is not None and cfg.fingerprint() != cal.projector_fingerprint:
        print(f"note: --steps differs from the calibration's; probabilities use the calibration anyway", file=sys.stderr)
        cal.projector_fingerprint = cfg.fingerprint()  # evaluate the calibration as is under other settings

    res = G.img_resolution
    reals = [render_portrait(REAL_SET, REAL_START + i, res)[0] for i in range(args.n)]
    gens = [a for _, a in generate_images(G, list(range(GEN_START, GEN_START + args.n)), noise_mode="random")]
    print(f"model {info.name} ({info.sha256[:12]}), {perceptual.identity}, {cfg.num_steps} steps, "
          f"{'calibrated' if cal else 'uncalibrated (raw LPIPS)'}; {args.n} real + {args.n} generated; "
          f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {dev}; load {os.getloadavg()[0]:.1f}", flush=True)

    figures = {}
    for name in args.variants.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "in").mkdir()
            labels = {}
            for i, px in enumerate(reals):
                labels[str(variant(px, name, tmp / "in" / f"real-{i:04d}"))] = 0
            for i, px in enumerate(gens):
                labels[str(variant(px, name, tmp / "in" / f"gen-{i:04d}"))] = 1
            det = Detector(G, info, perceptual, DetectSettings(config=cfg, batch_size=args.batch_size),
                           calibration=cal, device=dev)
            t0 = time.time()
            result = det.run([tmp / "in"], tmp / "report", formats=("json",))
            dt = time.time() - t0
            rows = [r for r in result.all_rows if r["status"] == "ok"]
            y = np.array([labels[r["path"]] for r in rows])
            lp = np.array([r["features"]["lpips"] for r in rows])
            raw = np.array([r["features"]["lpips_raw"] for r in rows])
            fig = {
                "n_real": int((y == 0).sum()), "n_generated": int((y == 1).sum()),
                "auc_lpips": roc_auc(-lp, y), "tpr1_lpips": tpr_at_fpr(-lp, y, 0.01),
                "auc_lpips_raw": roc_auc(-raw, y),
                "seconds_per_image": dt / max(1, len(rows)),
            }
            if cal is not None:
                p = np.array([r["probability"] for r in rows])
                verdicts = [r["verdict"] for r in rows]
                fig.update({
                    "auc": roc_auc(p, y), "tpr_at_1fpr": tpr_at_fpr(p, y, 0.01), "tpr_at_5fpr": tpr_at_fpr(p, y, 0.05),
                    "verdict_accuracy": float(np.mean([(v == "generated") == bool(t) for v, t in zip(verdicts, y)
                                                       if v != "uncertain"] or [float("nan")])),
                    "uncertain": sum(v == "uncertain" for v in verdicts),
                })
            figures[name] = fig
            print(f"{name:>10}: " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in fig.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": info.name, "sha256": info.sha256, "steps": cfg.num_steps,
                                        "perceptual": perceptual.identity, "figures": figures,
                                        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "device": str(dev),
                                                    "torch": torch.__version__}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
