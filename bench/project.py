"""Projection throughput: seconds per image-step and images per hour at 1000 steps, by batch size.

    python -m bench.project                    # CPU: the bundled model, batch 1-16, 2 and 1 threads (~3-4 min)
    python -m bench.project --quick            # a short run (CPU: about a minute)
    python -m bench.project --device cuda      # GPU: the bundled model and config-f 1024 px, fp32 and --amp
    python -m bench.project --batches 1,4 --threads 1 --steps 20

Run from the repository root.

What is timed is `projector.project.project` itself, LPIPS included, exactly as `sgproject invert` runs it
(W space, noise regularisation, per-step renormalisation, early stopping off). A callback records a timestamp after
every optimisation step (on CUDA the step ends with a device-to-host copy of the distances, so the timestamps are
synchronised); the figure is the median duration of the steps after `--warmup` warm-up steps. The fixed cost of a
batch (target features, initial noise, the final render) is measured too and included in "images per hour at
1000 steps" = 3600 * batch / (overhead + 1000 * seconds per step). Batch 1 is one-at-a-time; "x B=1" is how much
faster per image a batch is. GFLOP/s is the achieved rate: the floating-point operations of one image-step (matrix
products and convolutions, forward and backward, as torch.utils.flop_counter counts them on a one-image
projection) divided by the seconds per image-step.

Models: the bundled `portraits-64` when its weights file exists, else a generator with the `portraits64` preset's
config and random weights (the cost is the same); on a GPU also the paper's config-f at 1024 px with random weights
(`--big-res` changes its resolution, e.g. to try the code path on a CPU). LPIPS uses whatever backbone
`load_perceptual` resolves without downloading (its identity is printed); the cost does not depend on the weights.

Targets to report against: at most 0.15 s per image-step for the bundled model on a 2-core CPU; at least 1,000
images per hour at 1000 steps for config-f 1024 px on one H200.

On a shared machine CPU figures move with other work: the load average is printed before and after, and each row
says how many cores other processes used while it ran ("others") and this process's CPU time per image-step ("cpu").
When another process keeps a core busy, torch's OpenMP threads spin-wait for each other: measured on a 2-core VM
with one core taken, 2 threads ran 20x slower than 1 (2.4 against 0.12 s per image-step at batch 1), and
`OMP_WAIT_POLICY=PASSIVE` brought 2 threads back to 0.12. Hence the default of measuring both 2 threads and 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench._common import load_average, out_of_memory, pick_device, print_machine, sync
from generator.metrics.lpips import load_perceptual
from generator.networks import Generator, GeneratorConfig
from generator.registry import WEIGHTS_DIR, load_generator
from generator.training.config import PRESETS
from projector.project import ProjectorConfig, project, w_statistics

CPU_TARGET_S = 0.15  # s per image-step, bundled model, 2-core CPU
GPU_TARGET_IPH = 1000  # images per hour at 1000 steps, config-f 1024 px, one H200
STEPS_PER_IMAGE = 1000  # the paper's projection length


# ------------------------------------------------------------------------------------------------ models


def bundled_model(device: torch.device) -> tuple[Generator, str]:
    if (WEIGHTS_DIR / "portraits-64.safetensors").exists():
        G, info = load_generator("portraits-64", device)
        return G, f"portraits-64, bundled weights (sha256 {info.sha256[:12]})"
    cfg = GeneratorConfig(**PRESETS["portraits64"]["g"])
    G = Generator(cfg, seed=0).eval().requires_grad_(False).to(device)
    return G, "no bundled weights file: the portraits64 preset's config with random weights"


def config_f(resolution: int, device: torch.device) -> tuple[Generator, str]:
    cfg = GeneratorConfig(**{**PRESETS["config-f"]["g"], "resolution": resolution})
    G = Generator(cfg, seed=0).eval().requires_grad_(False).to(device)
    return G, f"config-f sizes at {resolution} px, random weights"


def describe(G: Generator) -> str:
    c = G.cfg
    n = sum(p.numel() for p in G.parameters())
    return (f"{c.resolution} px, z/w {c.z_dim}/{c.w_dim}, {c.mapping_layers} mapping layers, channel_base "
            f"{c.channel_base}, channel_max {c.channel_max}, {n / 1e6:.1f} M parameters, {G.num_ws} ws")


@torch.no_grad()
def make_targets(G: Generator, n: int, seed: int = 0) -> torch.Tensor:
    """n images of G in [-1, 1] (the content does not change the cost). [n, C, R, R]"""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, 8):
        z = torch.randn(min(8, n - i), G.z_dim, generator=gen).to(G.device)
        out.append(G(z).clamp(-1, 1))
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ machine


def busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat), or None."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------- timing


def image_step_gflop(G, P, device: torch.device) -> float:
    """GFLOP of one optimisation step on one image: a 2-step projection less a 1-step one, counted (the fixed cost of
    a projection, target features and the final render, cancels)."""
    target = make_targets(G, 1, seed=7)
    w_statistics(G, ProjectorConfig().w_avg_samples)  # computed once per model: not inside the first count only
    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as fc:
            project(G, target, num_steps=steps, seed=0, perceptual=P, device=device)
        counts.append(fc.get_total_flops())
    return (counts[1] - counts[0]) / 1e9


def measure(G, P, batch: int, device: torch.device, *, warmup: int, steps: int, amp: bool) -> dict:
    """Time one `project` call of warmup + steps steps on `batch` images."""
    targets = make_targets(G, batch, seed=batch)
    stamps: list[tuple[float, float]] = []  # (wall, this process's CPU) after every step

    def on_step(step, total, active):
        stamps.append((time.perf_counter(), time.process_time()))

    sync(device)
    busy0, c0, t0 = busy_seconds(), time.process_time(), time.perf_counter()
    project(G, targets, num_steps=warmup + steps, seed=0, perceptual=P, device=device, amp=amp, callback=on_step)
    sync(device)
    t1, c1, busy1 = time.perf_counter(), time.process_time(), busy_seconds()
    walls = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])][max(0, warmup - 1):]  # steps warmup+1 .. end
    cpus = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])][max(0, warmup - 1):]
    step_s = statistics.median(walls)
    # Everything that is not a steady-state step: setup, the extra cost of the first steps, the final render.
    overhead = max(0.0, (t1 - t0) - step_s * len(stamps))
    row = {
        "batch": batch, "step_s": step_s, "img_step_s": step_s / batch, "overhead_s": overhead,
        "iph": 3600 * batch / (overhead + STEPS_PER_IMAGE * step_s),
        "cpu_img_step_s": statistics.median(cpus) / batch, "n": len(walls), "wall_s": t1 - t0,
        "spread": (max(walls) - min(walls)) / step_s if len(walls) > 1 else 0.0, "load1": os.getloadavg()[0],
    }
    if busy0 is not None and busy1 is not None and device.type == "cpu":
        # Cores kept busy by other processes meanwhile: the machine's busy time less ours, per second of wall time.
        row["others_cores"] = max(0.0, (busy1 - busy0) - (c1 - c0)) / (t1 - t0)
    return row


def run_series(label: str, G, P, batches: list[int], device: torch.device, args, *, amp: bool,
               gflop: float) -> list[dict]:
    """Every batch size in turn; stops at an out-of-memory error or when the time budget would be exceeded."""
    print(f"\n{label}", flush=True)
    rows, per_image_step, started = [], None, time.perf_counter()
    for batch in batches:
        if per_image_step is not None:
            est = per_image_step * batch * (args.warmup + args.steps) + rows[-1]["overhead_s"]
            if time.perf_counter() - started + est > args.budget_s:
                print(f"  batch {batch:>4}: skipped (would pass the {args.budget_s:.0f} s budget; est. {est:.0f} s)")
                rows.append({"batch": batch, "skipped": "budget"})
                break
        try:
            row = measure(G, P, batch, device, warmup=args.warmup, steps=args.steps, amp=amp)
        except RuntimeError as e:
            if not out_of_memory(e):
                raise
            torch.cuda.empty_cache()
            print(f"  batch {batch:>4}: out of memory")
            rows.append({"batch": batch, "skipped": "OOM"})
            break
        per_image_step = row["img_step_s"]
        row["gflops"] = gflop / row["img_step_s"]
        row["speedup"] = rows[0]["img_step_s"] / row["img_step_s"] if rows else 1.0
        rows.append(row)
        print("  " + format_row(row, cpu=device.type == "cpu"), flush=True)
    return rows


def format_row(r: dict, *, cpu: bool) -> str:
    s = (f"batch {r['batch']:>4}: {r['step_s']:8.3f} s/step  {r['img_step_s']:8.4f} s/img-step  "
         f"{r['gflops']:8.1f} GFLOP/s  "
         f"{r['iph']:9.1f} img/h@1000  x{r['speedup']:5.2f} vs B=1  overhead {r['overhead_s']:6.2f} s  "
         f"(n={r['n']}, spread {100 * r['spread']:.0f}%)")
    if cpu:
        s += f"  cpu {r['cpu_img_step_s']:.4f} s/img-step  others {r.get('others_cores', float('nan')):.2f} cores"
        s += f"  load {r['load1']:.2f}"
    return s


def amp_difference(G, P, device: torch.device, n: int, steps: int) -> dict:
    """LPIPS after `steps` steps with bfloat16 autocast against float32, same targets and seed."""
    targets = make_targets(G, n, seed=123)
    fp32 = project(G, targets, num_steps=steps, seed=0, perceptual=P, device=device)
    bf16 = project(G, targets, num_steps=steps, seed=0, perceptual=P, device=device, amp=True)
    d = [abs(a.lpips - b.lpips) for a, b in zip(fp32, bf16)]
    return {
        "fp32": [a.lpips for a in fp32], "amp": [b.lpips for b in bf16], "max_abs": max(d),
        "mean_abs": sum(d) / n, "max_rel": max(x / a.lpips for x, a in zip(d, fp32)),
    }


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--quick", action="store_true", help="fewer batch sizes and steps: a short run")
    p.add_argument("--batches", default=None, help="batch sizes (default CPU 1,2,4,8,16; GPU 1,2,4,...,64)")
    p.add_argument("--threads", default=None,
                   help="CPU: comma-separated torch thread counts to measure (default: torch's default, then 1)")
    p.add_argument("--warmup", type=int, default=3, help="steps before timing starts (default 3)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per figure (default 10 CPU, 20 GPU)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="per series: stop adding batch sizes after this long (default 100 CPU, 40 quick, none GPU)")
    p.add_argument("--big-res", type=int, default=1024, help="resolution of the config-f model (GPU; default 1024)")
    p.add_argument("--models", default=None,
                   help="comma-separated: bundled, config-f (default: bundled on CPU, both on GPU)")
    p.add_argument("--no-amp", action="store_true", help="GPU: measure float32 only")
    p.add_argument("--amp-steps", type=int, default=100, help="GPU: steps of the amp-vs-fp32 LPIPS comparison")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cudnn autotune (sgproject invert does not; off by default to match it)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = pick_device(args.device, cudnn_benchmark=args.cudnn_benchmark)
    gpu = device.type == "cuda"
    if args.steps is None:
        args.steps = (5 if args.quick else 10) if not gpu else (10 if args.quick else 20)
    if args.budget_s is None:
        args.budget_s = float("inf") if gpu else (40.0 if args.quick else 100.0)
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    else:
        batches = ([1, 4, 16] if args.quick else [1, 2, 4, 8, 16]) if not gpu else (
            [1, 8, 32] if args.quick else [1, 2, 4, 8, 16, 32, 64])
    models = args.models.split(",") if args.models else (["bundled", "config-f"] if gpu else ["bundled"])
    default_threads = torch.get_num_threads()
    if args.threads:
        thread_counts = [int(t) for t in args.threads.split(",")]
    else:
        thread_counts = [default_threads] if gpu else list(dict.fromkeys([default_threads, 1]))

    print_machine("Projection throughput (sgproject invert's projector, LPIPS included)", device)
    P = load_perceptual(device=device, allow_download=False, warn=lambda m: None)  # never fetch 528 MB to time it
    print(f"  lpips    {P.identity}" + ("  (random backbone: same cost as the real one)" if P.source.is_random else ""))
    print(f"  timing   {args.warmup} warm-up + {args.steps} timed steps per figure (median step), "
          f"budget {args.budget_s:.0f} s per series")
    t_all = time.perf_counter()
    summary = []
    for name in models:
        if name == "bundled":
            G, note = bundled_model(device)
        elif name == "config-f":
            G, note = config_f(args.big_res, device)
        else:
            sys.exit(f"error: unknown model {name!r} (bundled, config-f)")
        gflop = image_step_gflop(G, P, device)
        print(f"\n== {note}\n   {describe(G)}\n   {gflop:.2f} GFLOP per image-step", flush=True)
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for amp in ([False] if not gpu or args.no_amp else [False, True]):
                label = f"{name}, {threads} thread{'s' * (threads != 1)}" + (", amp (bfloat16)" if amp else ", fp32")
                rows = run_series(label, G, P, batches, device, args, amp=amp, gflop=gflop)
                done = [r for r in rows if "skipped" not in r]
                if done:
                    best = min(done, key=lambda r: r["img_step_s"])
                    summary.append((label, G.img_resolution, best, done[0]))
        if gpu and not args.no_amp and args.amp_steps > 0:
            torch.set_num_threads(default_threads)
            d = amp_difference(G, P, device, n=4, steps=args.amp_steps)
            print(f"\n  amp vs fp32 after {args.amp_steps} steps, 4 targets: LPIPS fp32 "
                  f"{[round(x, 4) for x in d['fp32']]}, amp {[round(x, 4) for x in d['amp']]}; |diff| mean "
                  f"{d['mean_abs']:.2e}, max {d['max_abs']:.2e} ({100 * d['max_rel']:.1f}% relative)")
        del G
        if gpu:
            torch.cuda.empty_cache()
    torch.set_num_threads(default_threads)

    print("\nSummary (best batch size per series; B=1 is one image at a time)")
    for label, res, best, one in summary:
        print(f"  {label:<40} {res:>4} px: best B={best['batch']:<3} {best['img_step_s']:.4f} s/img-step "
              f"({best['gflops']:.1f} GFLOP/s), "
              f"{best['iph']:8.1f} img/h@1000  |  B=1: {one['img_step_s']:.4f} s/img-step, {one['iph']:7.1f} img/h")
    for label, res, best, _ in summary:
        if label.startswith("bundled") and not gpu:
            verdict = "meets" if best["img_step_s"] <= CPU_TARGET_S else "MISSES"
            print(f"  target <= {CPU_TARGET_S} s/img-step (bundled, 2-core CPU): {label}: {verdict} "
                  f"({best['img_step_s']:.3f})")
        if label.startswith("config-f") and gpu and res == 1024:
            verdict = "meets" if best["iph"] >= GPU_TARGET_IPH else "MISSES"
            print(f"  target >= {GPU_TARGET_IPH} img/h@1000 (config-f 1024, one H200): {label}: {verdict} "
                  f"({best['iph']:.0f})")
    print(f"\nload     {load_average()} at the end; total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
