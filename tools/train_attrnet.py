"""Train the portrait attribute network (generator/metrics/attrnet.py), the feature space of `--feature-net portraits`.

    python -m tools.train_attrnet [--n 50000] [--epochs 4] [--val 1000] [--out FILE]

Run from the repository root; --out defaults to generator/weights/portraits-attr.safetensors.

Training images: the first N portraits of set 0 (the GAN's training set, from the data set cache; rendered once if
missing), labels from generator.data.portraits.sample_params. Validation: portraits of set 1 from index 30,000 (never
trained on by either network). The held-out accuracy per attribute goes into the weights' header and is printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from generator.data.datasets import load_portraits
from generator.data.portraits import render_portrait, sample_params
from generator.metrics.attrnet import WEIGHTS, PortraitAttributeNet, accuracy, labels_of, loss_of, save_attribute_net
from generator.util.imaging import to_tensor

VAL_SET, VAL_START = 1, 30_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.time()
    data = load_portraits(args.n, 64, seed=0)
    cls, reg = labels_of([sample_params(0, i) for i in range(args.n)])
    val_px = np.stack([render_portrait(VAL_SET, VAL_START + i, 64)[0] for i in range(args.val)])
    val_x = to_tensor(val_px)
    val_cls, _ = labels_of([sample_params(VAL_SET, VAL_START + i) for i in range(args.val)])
    print(f"data ready in {time.time() - t0:.0f} s: {args.n} training, {args.val} validation images", flush=True)

    net = PortraitAttributeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (args.n // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    rng = np.random.default_rng(0)
    step, t0 = 0, time.time()
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(args.n)
        for i in range(0, args.n - args.batch + 1, args.batch):
            idx = np.sort(order[i : i + args.batch])
            x = data.batch(idx)
            loss = loss_of(net, x, cls[idx], reg[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.4f} {time.time() - t0:.0f} s", flush=True)
        acc = accuracy(net, val_x, val_cls)
        print(f"epoch {epoch}: held-out accuracy mean {np.mean(list(acc.values())):.3f} "
              + " ".join(f"{k} {v:.2f}" for k, v in acc.items()), flush=True)
    info = {"train": f"portraits:{args.n}:0", "validation": f"set {VAL_SET}, {args.val} from index {VAL_START}",
            "epochs": args.epochs, "batch": args.batch, "seconds": round(time.time() - t0, 1),
            "held_out_accuracy": {k: round(v, 4) for k, v in acc.items()},
            "mean_held_out_accuracy": round(float(np.mean(list(acc.values()))), 4)}
    out = save_attribute_net(net.eval(), args.out, info)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
