"""Projection from an encoder's guess against projection from w_avg: LPIPS after k steps, generated and real.

    python -m bench.encoder                       # out/portraits-64.encoder.safetensors, 20 + 20 images
    python -m bench.encoder --encoder my.encoder.safetensors --model my-model.safetensors --n 10
    python -m bench.encoder --enc-steps 0,10,25,50 --avg-steps 25,50,100,200 --threads 1

Run from the repository root, after `sgproject train-encoder` (docs/ARCHITECTURE.md, "Projection").

Images: the model's own outputs for fresh seeds (from 5,000,000: the encoder's training never draws seeds this
way, the calibration uses 1,000,000+ and bench.detect 2,000,000+), with random noise as in the wild; and held-out
procedural portraits (set 1, indices from 30,000; bench.detect uses 20,000+, the calibration 10,000+), fitted to
the model's resolution as detection fits them.

Rows: `encoder, 0 steps` is the guess itself, rendered with the model's stored noise maps; `w_avg, 0 steps` the
same for w_avg (the paper's start). Every other row is a separate `project()` run of that many steps (W space,
the default schedule, whose learning-rate ramps scale with the number of steps), started at the encoder's guess
(`init='encoder'`) or at w_avg, on all images of a set in one batch; its LPIPS is the final one, as detection
scores it. `AUC` is the ROC AUC of that LPIPS as a score separating real (higher) from generated images: how well
the distance alone would detect. `s/img` is the run's wall time per image (CPU figures move with the load printed
above the table).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import load_average, pick_device, print_machine
from detectors.calibration import roc_auc
from generator import load_generator
from generator.data.portraits import render_portrait
from generator.metrics.lpips import load_perceptual
from generator.render import generate_images
from generator.util.files import write_json_atomic
from generator.util.imaging import centre_crop_resize, to_tensor
from projector.encoder import load_encoder, num_parameters
from projector.project import ProjectorConfig, project, w_statistics

GEN_START = 5_000_000
REAL_SET, REAL_START = 1, 30_000
DEFAULT_ENCODER = Path("out/portraits-64.encoder.safetensors")


def image_sets(G, n: int) -> dict[str, torch.Tensor]:
    res = G.img_resolution
    gens = [a for _, a in generate_images(G, list(range(GEN_START, GEN_START + n)), noise_mode="random")]
    reals = [centre_crop_resize(render_portrait(REAL_SET, REAL_START + i, res)[0], res) for i in range(n)]
    return {"generated": to_tensor(gens), "real": to_tensor(reals)}


@torch.no_grad()
def start_distance(G, perceptual, x: torch.Tensor, w: torch.Tensor) -> list[float]:
    """LPIPS of the image of w ([N, w_dim], on every layer, stored noise maps) to x. [N]"""
    img = G.synthesis(w[:, None].expand(-1, G.num_ws, -1), noise_mode="const")
    return perceptual(img, x).tolist()


def speed(E, res: int, batch: int = 64, repeats: int = 3) -> float:
    x = torch.rand(batch, 3, res, res) * 2 - 1
    E.guess(x)
    t = time.perf_counter()
    for _ in range(repeats):
        E.guess(x)
    return batch * repeats / (time.perf_counter() - t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", type=Path, default=DEFAULT_ENCODER)
    ap.add_argument("--model", default="portraits-64")
    ap.add_argument("--n", type=int, default=20, help="images per set")
    ap.add_argument("--enc-steps", default="0,10,25,50")
    ap.add_argument("--avg-steps", default="0,25,50,100,200")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    device = pick_device(args.device, threads=args.threads)
    print_machine("bench.encoder: projection from an encoder's guess vs from w_avg", device)
    G, info = load_generator(args.model, device)
    perceptual = load_perceptual(device=device)
    E = load_encoder(args.encoder, info, device)
    tr = E.info.get("training", {})
    print(f"  model    {info.name} ({G.img_resolution} px, sha256 {info.sha256[:12]}), {perceptual.identity}")
    print(f"  encoder  {args.encoder}: {num_parameters(E):,} parameters, {speed(E, G.img_resolution):.0f} images/s "
          f"(batch 64), trained {tr.get('steps')} steps x {tr.get('batch')} images "
          f"({tr.get('seconds')} s), identity {E.identity()}")
    sets = image_sets(G, args.n)
    w_avg, _ = w_statistics(G)

    runs = [("encoder", int(k)) for k in args.enc_steps.split(",")]
    runs += [("w_avg", int(k)) for k in args.avg_steps.split(",")]
    rows = []
    print(f"\n  {'start':8} {'steps':>5}  {'generated':>9}  {'real':>7}  {'AUC':>5}  {'s/img':>6}")
    for start, steps in runs:
        lp, secs = {}, 0.0
        for name, x in sets.items():
            t = time.perf_counter()
            if steps == 0:
                w = E.guess(x) if start == "encoder" else w_avg[None].expand(len(x), -1)
                lp[name] = start_distance(G, perceptual, x, w)
            else:
                cfg = ProjectorConfig(num_steps=steps)
                cfg = cfg.using_encoder(E) if start == "encoder" else cfg
                res = project(G, x, config=cfg, seed=0, device=device, perceptual=perceptual,
                              encoder=E if start == "encoder" else None)
                lp[name] = [p.lpips for p in res]
            secs += time.perf_counter() - t
        # Generated images are label 1 and should score higher: the score is minus the distance.
        auc = roc_auc([-v for v in lp["generated"] + lp["real"]], [1] * args.n + [0] * args.n)
        row = {"start": start, "steps": steps, "generated": float(np.mean(lp["generated"])),
               "real": float(np.mean(lp["real"])), "auc": auc, "s_per_image": secs / (2 * args.n),
               "lpips": lp}
        rows.append(row)
        print(f"  {start:8} {steps:>5}  {row['generated']:9.4f}  {row['real']:7.4f}  {auc:5.3f}  "
              f"{row['s_per_image']:6.2f}", flush=True)
    print(f"\n  load     {load_average()} at the end")
    if args.out:
        figures = {"model": info.name, "model_sha256": info.sha256, "encoder": str(args.encoder),
                   "encoder_identity": E.identity(), "perceptual": perceptual.identity, "n": args.n, "rows": rows}
        write_json_atomic(args.out, figures)


if __name__ == "__main__":
    main()
