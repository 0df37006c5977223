"""Training speed: seconds per kimg (thousand real images shown) of full StyleGAN2 training steps, by phase.

    python -m bench.train                              # portraits64 on the CPU (about 1-2 minutes on 2 cores)
    python -m bench.train --device cuda                # portraits64 and paper256 (config-f sizes at 256 px)
    python -m bench.train --preset paper256 --batch 8 --steps 4 --threads 2
    python -m bench.train --threads 2 --compare-memory-format   # NCHW against NHWC (the default), side by side

Run from the repository root.

Each step is `generator.training.loop.train_step` on synthetic data (random uint8 images in an ImageDataset), with the
preset's optimisers, lazy regularisation intervals (R1 every 16, path length every 4 minibatches), style mixing
and G EMA: the same code a real run executes, minus data decoding (cached in a real run) and snapshots. After
--warmup steps (not timed), --steps steps are timed; the timed window starts at minibatch 16 so that it holds one
R1 pass and the path-length passes in their usual proportion. Every phase function is timed on its own (after
torch.cuda.synchronize() on a GPU); 'data, other' is the rest of the step (indices, batch upload, random streams).

Two figures per preset:
  measured   mean wall time of the timed steps, whatever mix of regularisation passes they held;
  amortised  main phases per step + each regularisation pass divided by its interval: what a long run averages.
sec/kimg = amortised seconds per step * 1000 / batch. CPU-s/kimg is this process's CPU time (all threads): less
sensitive than wall time to other work on a shared machine.

NVIDIA's published figures are printed beside ours for reference. They come from other hardware (Tesla V100 /
A100), other code (TensorFlow StyleGAN2, PyTorch StyleGAN2-ADA/StyleGAN3 with custom CUDA kernels) and include
what a real run does besides training steps (metrics, snapshots); the configurations differ as noted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import generator.training.loop as T
from bench._common import load_average, pick_device, print_machine, sync
from generator.data.datasets import ImageDataset
from generator.training.config import PRESETS, TrainConfig
from generator.util.distributed import Dist

PHASES = [  # (function name in generator.training.loop, label, interval attribute of TrainConfig or None)
    ("g_main", "G main (non-saturating)", None),
    ("d_main", "D main (logistic)", None),
    ("g_path_length", "G path length", "pl_interval"),
    ("d_r1", "D R1", "r1_interval"),
    ("update_ema", "G EMA", None),
]

# Published training speeds (seconds per kimg). "derived" rows are wall-clock training times from the table divided
# by the kimg they cover; the others are the tables' own s/kimg. None of these were measured here.
REFERENCE = [
    # (resolution, label, source)
    (256, "config-f 256 px, batch 32, 1x V100 (TF): 112.5 s/kimg, derived (25000 kimg in 32d 13h)",
     "NVlabs/stylegan2 README.md, training-time table"),
    (256, "config-f 256 px, batch 32, 8x V100 (TF): 16.4 s/kimg, derived (25000 kimg in 4d 18h)",
     "NVlabs/stylegan2 README.md, training-time table"),
    (256, "--cfg=auto 256 px (cbase 16384, batch 16, map 2, ADA), 1x V100: 21.6-24.2 s/kimg",
     "NVlabs/stylegan2-ada-pytorch README.md, 'Expected training time'"),
    (256, "ADA 'paper256' (cbase 16384, batch 64, mbstd 8), 8x V100: 4.01 s/kimg; 8x A100: 2.47 s/kimg",
     "NVlabs/stylegan3 docs/configs.md, 'Repro configurations'"),
    (1024, "config-f 1024 px, batch 32, 1x V100 (TF): 241.8 s/kimg, derived (25000 kimg in 69d 23h)",
     "NVlabs/stylegan2 README.md, training-time table"),
    (1024, "--cfg=stylegan2 1024 px (config-f), batch 32, 8x V100: 17.55 s/kimg; 8x A100: 14.57 s/kimg",
     "NVlabs/stylegan3 docs/configs.md, 'Repro configurations'"),
]


# ------------------------------------------------------------------------------------------------- timing


class PhaseTimer:
    """Wraps the phase functions of generator.training.loop so that each call's wall time is recorded."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: dict[str, list[float]] = {name: [] for name, _, _ in PHASES}
        self.originals = {name: getattr(T, name) for name, _, _ in PHASES}
        self.recording = False

    def __enter__(self) -> "PhaseTimer":
        for name, fn in self.originals.items():
            setattr(T, name, self._wrap(name, fn))
        return self

    def __exit__(self, *exc) -> None:
        for name, fn in self.originals.items():
            setattr(T, name, fn)

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            sync(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            if self.recording:
                self.times[name].append(time.perf_counter() - t0)
            return out

        return timed


def synthetic_data(n: int, res: int, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    return ImageDataset(rng.integers(0, 256, (n, 3, res, res), dtype=np.uint8), "synthetic")


def bench_preset(preset: str, device: torch.device, args, channels_last: bool | None = None) -> dict:
    overrides = dict(batch=args.batch, amp=args.amp or None, channels_last=channels_last)
    cfg = TrainConfig.from_preset("synthetic", "unused", preset, **overrides)
    g = cfg.g_config()
    print(f"\n{preset} on {device}: {g.resolution} px, z/w {g.z_dim}/{g.w_dim}, {g.mapping_layers} mapping layers, "
          f"channel_base {g.channel_base}, channel_max {g.channel_max}, batch {cfg.batch}"
          f"{', bf16 autocast' if cfg.amp else ''}, {'channels-last' if cfg.channels_last else 'contiguous'} "
          "memory", flush=True)
    t0 = time.perf_counter()
    st = T.build_state(cfg, device)
    n_g = sum(p.numel() for p in st.G.parameters())
    n_d = sum(p.numel() for p in st.D.parameters())
    data = synthetic_data(max(4 * cfg.batch, 64), g.resolution)
    dist = Dist()
    print(f"  G {n_g / 1e6:.2f} M parameters, D {n_d / 1e6:.2f} M; built in {time.perf_counter() - t0:.1f} s",
          flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    with PhaseTimer(device) as timer:
        t0 = time.perf_counter()
        for _ in range(args.warmup):  # step 0 runs both regularisation passes: everything is warmed up
            T.train_step(st, cfg, data, device, dist)
        sync(device)
        print(f"  warm-up: {args.warmup} steps in {time.perf_counter() - t0:.1f} s", flush=True)
        # Start the timed window on an R1 minibatch (the step counter only picks the random streams and the
        # regularisation schedule), so that it holds one R1 pass and its share of path-length passes.
        st.step = max(cfg.r1_interval, 1) * max(1, -(-st.step // max(cfg.r1_interval, 1)))
        first = st.step
        timer.recording = True
        steps, cpu = [], []
        for _ in range(args.steps):
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            T.train_step(st, cfg, data, device, dist)
            sync(device)
            steps.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if args.verbose:
                print(f"    minibatch {st.step - 1}: {steps[-1]:.3f} s", flush=True)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    # Per phase: mean seconds per call, calls in the window, and the amortised seconds per step.
    rows = []
    main_total = 0.0
    for name, label, interval_attr in PHASES:
        calls = timer.times[name]
        if not calls:
            rows.append((label, None, 0, None, interval_attr))
            continue
        per_call = statistics.mean(calls)
        if interval_attr is None:
            per_step = sum(calls) / len(steps)  # main phases run every step
            main_total += per_step
        else:
            interval = getattr(cfg, interval_attr)
            per_step = per_call / interval
        rows.append((label, per_call, len(calls), per_step, interval_attr and getattr(cfg, interval_attr)))
    mean_step = statistics.mean(steps)
    phases_in_window = sum(sum(timer.times[name]) for name, _, _ in PHASES)
    other = max(0.0, (sum(steps) - phases_in_window) / len(steps))
    amortised = main_total + other + sum(r[3] for r in rows if r[4] and r[3] is not None)
    cpu_per_step = statistics.mean(cpu)

    print(f"  timed: {len(steps)} steps (minibatches {first}-{first + len(steps) - 1}), "
          f"median {statistics.median(steps):.3f} s, mean {mean_step:.3f} s", flush=True)
    head = f"  {'phase':<26} {'s/call':>9} {'calls':>6} {'every':>6} {'s/step (amortised)':>19} {'share':>6}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for label, per_call, calls, per_step, every in rows:
        if per_call is None:
            print(f"  {label:<26} {'-':>9} {0:>6} {every or 1:>6} {'(not in window)':>19}")
            continue
        print(f"  {label:<26} {per_call:>9.3f} {calls:>6} {every or 1:>6} {per_step:>19.3f} "
              f"{100 * per_step / amortised:>5.1f}%")
    print(f"  {'data, other':<26} {'':>9} {'':>6} {1:>6} {other:>19.3f} {100 * other / amortised:>5.1f}%")
    reg = sum(r[3] for r in rows if r[4] and r[3] is not None)
    print(f"  amortised step {amortised:.3f} s (main {main_total + other:.3f} s + regularisation {reg:.3f} s); "
          f"measured mean {mean_step:.3f} s")
    result = {
        "preset": preset, "device": str(device), "res": g.resolution, "batch": cfg.batch,
        "channels_last": cfg.channels_last,
        "sec_per_kimg": amortised * 1000 / cfg.batch,
        "measured_sec_per_kimg": mean_step * 1000 / cfg.batch,
        "cpu_sec_per_kimg": cpu_per_step * 1000 / cfg.batch,
        "img_per_s": cfg.batch / amortised, "peak_gib": peak,
    }
    mem = f", peak GPU memory {peak:.1f} GiB" if peak is not None else ""
    print(f"  => {result['sec_per_kimg']:.1f} s/kimg amortised ({result['img_per_s']:.1f} img/s), "
          f"{result['measured_sec_per_kimg']:.1f} s/kimg measured, "
          f"{result['cpu_sec_per_kimg']:.1f} CPU-s/kimg{mem}", flush=True)
    del st
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", action="append", choices=list(PRESETS),
                   help="preset to time (repeatable; default portraits64 on CPU, portraits64 and paper256 on GPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--batch", type=int, default=None, help="global minibatch (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 8 CPU, 64 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 CPU, 10 GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the main passes (CUDA only)")
    p.add_argument("--verbose", action="store_true", help="print every timed step")
    p.add_argument("--compare-memory-format", action="store_true",
                   help="time every preset with contiguous (NCHW) and channels-last (NHWC) memory, alternating "
                        "--rounds times, and print the ratio")
    p.add_argument("--rounds", type=int, default=3, help="with --compare-memory-format: rounds of the pair")
    return p.parse_args(argv)


def compare_memory_format(presets: list[str], device: torch.device, args) -> None:
    """Each preset timed in both memory formats, alternating (so that a change in the machine's load falls on both
    alike); prints the median s/kimg of each and their ratio."""
    for preset in presets:
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for cl in (False, True):
                runs[cl].append(bench_preset(preset, device, args, channels_last=cl)["sec_per_kimg"])
        nchw, nhwc = statistics.median(runs[False]), statistics.median(runs[True])
        print(f"\n  {preset}: contiguous {nchw:.1f} s/kimg (runs {', '.join(f'{x:.1f}' for x in runs[False])}), "
              f"channels-last {nhwc:.1f} s/kimg (runs {', '.join(f'{x:.1f}' for x in runs[True])}): "
              f"{nchw / nhwc:.2f}x", flush=True)


def print_summary(results: list[dict]) -> None:
    """Our figures beside NVIDIA's published ones for the same resolutions."""
    print("\nSummary (ours: this machine; NVIDIA: published, other hardware and code, for reference only)")
    for r in results:
        print(f"  ours     {r['preset']:<12} {r['res']:>4} px  batch {r['batch']:>3}  {r['device']:<7} "
              f"{r['sec_per_kimg']:9.1f} s/kimg  ({r['cpu_sec_per_kimg']:.1f} CPU-s/kimg)")
    resolutions = sorted({r["res"] for r in results})
    for res in resolutions:
        refs = [(label, src) for rr, label, src in REFERENCE if rr == res]
        if not refs:
            print(f"  NVIDIA   {res} px: no published figure for this size (column left empty)")
        for label, src in refs:
            print(f"  NVIDIA   {label}  [{src}]")
    if not any(rr in resolutions for rr, _, _ in REFERENCE):
        print("  (NVIDIA figures exist for 256 px and 1024 px: run --preset paper256 to compare, ideally on a GPU)")


def main(argv=None) -> None:
    args = parse_args(argv)
    # fixed shapes: on CUDA let cudnn pick the fastest algorithms
    device = pick_device(args.device, threads=args.threads, cudnn_benchmark=True)
    gpu = device.type == "cuda"
    presets = args.preset or (["portraits64", "paper256"] if gpu else ["portraits64"])
    if args.steps is None:
        args.steps = 64 if gpu else 8
    if args.warmup is None:
        args.warmup = 10 if gpu else 2

    print_machine("Training speed (seconds per kimg, lower is better)", device)
    t0 = time.perf_counter()
    if args.compare_memory_format:
        compare_memory_format(presets, device, args)
    else:
        print_summary([bench_preset(p, device, args) for p in presets])
    print(f"load     {load_average()} at the end")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
