"""Does a pixel term in the projection loss (LPIPS + lambda * MSE) make reconstructions faithful where LPIPS is
blind, and does it help or hurt separating generated from real images?

    python -m bench.pixel_term [--n 20] [--weights 0,0.1,1] [--steps 25]

Run from the repository root. Projects, from the bundled encoder's guess with the detection schedule, n fresh
generated images (seeds from 7,000,000, random noise), n held-out real portraits (set 1 from 90,000) and n flat
images (uniform, gradient, blurred noise: detectors/variants.py) with each weight, and prints per class the median
LPIPS and PSNR of the reconstruction, and the 5-fold cross-validated AUC of a logistic model on (lpips, psnr), and
seconds per image.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench._common import machine_lines, pick_device
from detectors.calibration import cross_validate, feature_matrix, roc_auc
from detectors.scoring import score_batch
from detectors.variants import SIMPLE_KINDS, simple_image
from generator import load_generator
from generator.data.portraits import render_portrait
from generator.metrics.lpips import load_perceptual
from generator.render import generate_images
from generator.util.imaging import to_tensor
from projector.encoder import encoder_for
from projector.project import projector_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="portraits-64")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--weights", default="0,0.1,1")
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    dev = pick_device(a.device)
    for line in machine_lines(dev):
        print(line)
    G, info = load_generator(a.model, dev)
    E = encoder_for(info, None, dev)
    perceptual = load_perceptual(device=dev)
    res = G.img_resolution
    rng = np.random.default_rng(0)
    sets = {
        "generated": [arr for _, arr in generate_images(G, list(range(7_000_000, 7_000_000 + a.n)),
                                                        noise_mode="random")],
        "real": [render_portrait(1, 90_000 + i, res)[0] for i in range(a.n)],
        "flat": [simple_image(SIMPLE_KINDS[i % len(SIMPLE_KINDS)], res, rng) for i in range(a.n)],
    }
    print(f"{'lambda':>7s} {'class':>10s} {'LPIPS':>8s} {'PSNR dB':>8s}   cv AUC (lpips, psnr), s/img")
    for lam in [float(x) for x in a.weights.split(",")]:
        cfg = projector_config(E, num_steps=a.steps, mse_weight=lam)
        feats, t0 = {}, time.time()
        for name, imgs in sets.items():
            feats[name] = [s.features for s in score_batch(G, to_tensor(imgs), config=cfg, perceptual=perceptual,
                                                           encoder=E, device=dev)]
        sec = (time.time() - t0) / sum(len(v) for v in sets.values())
        cols = ["lpips", "psnr"]
        xg, xr = feature_matrix(feats["generated"], cols), feature_matrix(feats["real"], cols)
        p = cross_validate(xg, xr)
        auc = roc_auc(p, np.r_[np.ones(len(xg)), np.zeros(len(xr))])
        for name, f in feats.items():
            print(f"{lam:7.3g} {name:>10s} {np.median([r['lpips'] for r in f]):8.4f} "
                  f"{np.median([r['psnr'] for r in f]):8.2f}" + (f"   {auc:.3f}, {sec:.2f}" if name == "flat" else ""))


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
