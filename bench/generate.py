"""Generator throughput: images per second by batch size and resolution, fused vs non-fused modulated conv.

    python -m bench.generate                 # default run (CPU: about 2-3 minutes on 2 cores)
    python -m bench.generate --quick         # a short run
    python -m bench.generate --device cuda   # on a GPU it adds 1024 px with the paper's config-f sizes

Run from the repository root.

Each figure is `batch / median(seconds per forward)` of the full generator (mapping + synthesis, const noise)
under torch.no_grad with random (seeded) weights: speed does not depend on the weights. Every (batch, mode) is
warmed up before it is timed; on CPU a single forward that is expected to take longer than --max-warmup-s skips
its own warm-up (the model is always warmed up at batch 1 first) and the row is marked '*'. On CUDA the clock is
read after torch.cuda.synchronize().

Configurations:
  64 px    the bundled model's config (generator/weights/portraits-64.json) when present,
           else channel_base 8192, channel_max 256, z/w 512, 8 mapping layers
  256 px   config-f sizes: channel_base 32768, channel_max 512, z/w 512, 8 mapping layers
  1024 px  config-f (the paper's FFHQ generator); only when the device is a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from bench._common import out_of_memory, pick_device, print_machine, sync
from generator.networks import Generator, GeneratorConfig
from generator.registry import WEIGHTS_DIR
from generator.training.config import preset_generator_config

BUNDLED_64 = WEIGHTS_DIR / "portraits-64.json"


# ------------------------------------------------------------------------------------------------ configs


def config_64() -> tuple[GeneratorConfig, str]:
    if BUNDLED_64.exists():
        header = json.loads(BUNDLED_64.read_text())
        cfg = GeneratorConfig.from_dict(header.get("config", header))
        return cfg, f"bundled portraits-64 config ({BUNDLED_64.name})"
    cfg = GeneratorConfig(resolution=64, channel_base=8192, channel_max=256)
    return cfg, "no bundled model: channel_base 8192, channel_max 256"


def config_f(resolution: int) -> GeneratorConfig:
    """The paper's config-f sizes (the `config-f` training preset) at `resolution`."""
    return dataclasses.replace(preset_generator_config("config-f"), resolution=resolution)


def describe(cfg: GeneratorConfig) -> str:
    return (
        f"z/w {cfg.z_dim}/{cfg.w_dim}, {cfg.mapping_layers} mapping layers, channel_base {cfg.channel_base}, "
        f"channel_max {cfg.channel_max}"
    )


# ------------------------------------------------------------------------------------------------- timing


@torch.no_grad()
def forward_seconds(G: Generator, z: torch.Tensor, fused: bool, device: torch.device) -> float:
    return forward_times(G, z, fused, device)[0]


@torch.no_grad()
def forward_times(G: Generator, z: torch.Tensor, fused: bool, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one forward."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    G(z, fused=fused)
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def measure(
    G: Generator,
    batch: int,
    fused: bool,
    device: torch.device,
    *,
    repeats: int,
    target_s: float,
    est_s: float | None,
    max_warmup_s: float,
) -> tuple[float, int, bool, float]:
    """(images per second, timed repeats, warmed up, CPU seconds per image). Repeats are capped so one
    measurement takes about target_s."""
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(batch)).to(device)
    warmed = est_s is None or est_s <= max_warmup_s
    if warmed:
        est_s = forward_seconds(G, z, fused, device)
        if device.type == "cuda":  # a second call, after cudnn has picked its algorithms
            est_s = forward_seconds(G, z, fused, device)
    n = max(1, min(repeats, int(target_s / max(est_s, 1e-6))))
    times = [forward_times(G, z, fused, device) for _ in range(n)]
    cpu_per_image = statistics.median(c for _, c in times) / batch
    return batch / statistics.median(w for w, _ in times), n, warmed, cpu_per_image


def run_resolution(
    label: str, cfg: GeneratorConfig, note: str, batches: list[int], device: torch.device, args
) -> list[dict]:
    print(f"\n{label}: {note}", flush=True)
    print(f"  {describe(cfg)}", flush=True)
    G = Generator(cfg, seed=0).eval().requires_grad_(False).to(device)
    params = sum(p.numel() for p in G.parameters())
    print(f"  {params / 1e6:.1f} M parameters", flush=True)
    z1 = torch.randn(1, G.z_dim).to(device)
    for fused in (False, True):  # model-level warm-up: allocator, thread pools, kernels, lazy init
        forward_seconds(G, z1, fused, device)

    rows = []
    per_image = {False: None, True: None}  # seconds per image at the previous batch size, to predict the next
    started = time.perf_counter()
    for batch in batches:
        row = {"res": cfg.resolution, "batch": batch}
        for fused in (False, True):
            key = "fused" if fused else "non-fused"
            est = None if per_image[fused] is None else per_image[fused] * batch
            if est is not None and time.perf_counter() - started + est * 2 > args.budget_s:
                row[key] = "budget"
                continue
            try:
                ips, n, warmed, cpu_s = measure(
                    G, batch, fused, device, repeats=args.repeats, target_s=args.target_s, est_s=est,
                    max_warmup_s=args.max_warmup_s,
                )
            except RuntimeError as e:
                if not out_of_memory(e):
                    raise
                torch.cuda.empty_cache()
                row[key] = "OOM"
                continue
            per_image[fused] = 1 / ips
            row[key] = ips
            row[key + " cpu"] = cpu_s
            row[key + " n"] = n
            row[key + " warm"] = warmed
        rows.append(row)
        print("  " + format_row(row), flush=True)
    del G
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------- output


def cell(row: dict, key: str) -> str:
    v = row.get(key)
    if not isinstance(v, float):
        return str(v or "-")
    mark = "" if row.get(key + " warm", True) else "*"
    return f"{v:9.2f} (n={row[key + ' n']}){mark}"


def faster(row: dict) -> str:
    a, b = row.get("non-fused"), row.get("fused")
    if not (isinstance(a, float) and isinstance(b, float)):
        return "-"
    return f"non-fused x{a / b:.2f}" if a >= b else f"fused x{b / a:.2f}"


def cpu_cell(row: dict, key: str) -> str:
    v = row.get(key + " cpu")
    return "-" if v is None else f"{v:.3f}"


def format_row(row: dict) -> str:
    return (
        f"{row['res']:>5} px  batch {row['batch']:>3}  non-fused {cell(row, 'non-fused'):>18}  "
        f"fused {cell(row, 'fused'):>18}  faster: {faster(row)}"
    )


def print_table(rows: list[dict], *, show_cpu: bool) -> None:
    head = f"{'res':>6} {'batch':>5} | {'non-fused img/s':>20} | {'fused img/s':>20} | {'faster':<16}"
    if show_cpu:
        head += f" | {'CPU-s/img non-fused':>19} | {'fused':>7}"
    print("\n" + head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['res']:>6} {r['batch']:>5} | {cell(r, 'non-fused'):>20} | {cell(r, 'fused'):>20} | {faster(r):<16}"
        if show_cpu:
            line += f" | {cpu_cell(r, 'non-fused'):>19} | {cpu_cell(r, 'fused'):>7}"
        print(line)
    print("n = timed repeats (median); * = no per-shape warm-up (one forward > --max-warmup-s); "
          "budget = skipped to keep the run short")
    if show_cpu:
        print("CPU-s/img = this process's CPU time per image (all threads): less sensitive than img/s to other "
              "work on a shared machine")
    for res in sorted({r["res"] for r in rows}):
        wins = [faster(r).split()[0] for r in rows if r["res"] == res and faster(r) != "-"]
        if wins:
            print(f"{res} px: non-fused faster at {wins.count('non-fused')} of {len(wins)} batch sizes, "
                  f"fused at {wins.count('fused')}")


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--quick", action="store_true", help="few batch sizes and repeats: a short run")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (median; default 5 GPU, 3 CPU)")
    p.add_argument("--resolutions", default=None, help="comma-separated subset of 64,256,1024")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,4,16,64)")
    p.add_argument("--max-warmup-s", type=float, default=None,
                   help="skip the per-shape warm-up when one forward is expected to take longer "
                   "(default 3 CPU, none GPU)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="per resolution: stop adding batch sizes after this long (default 90 CPU, 30 quick, none GPU)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    # fixed shapes: on CUDA let cudnn pick the fastest algorithms
    device = pick_device(args.device, threads=args.threads, cudnn_benchmark=True)
    gpu = device.type == "cuda"

    batches = [int(b) for b in args.batches.split(",")] if args.batches else [1, 4, 16, 64]
    if args.repeats is None:
        args.repeats = 2 if args.quick else (5 if gpu else 3)
    # One measurement aims at target_s of timed runs; a resolution stops adding batch sizes past budget_s.
    args.target_s = 2.0 if args.quick else (5.0 if gpu else 8.0)
    if args.max_warmup_s is None:
        args.max_warmup_s = float("inf") if gpu else 3.0
    if args.budget_s is None:
        args.budget_s = float("inf") if gpu else (30.0 if args.quick else 90.0)

    plan = []  # (label, cfg, note, batch sizes)
    cfg64, note64 = config_64()
    plan.append(("64 px", cfg64, note64, [1, 4] if args.quick else batches))
    b256 = batches
    if not gpu:  # ~0.2 img/s on a small CPU: cap the batch sizes
        b256 = [b for b in batches if b <= 4][: 1 if args.quick else 2]
    plan.append(("256 px", config_f(256), "config-f sizes (channel_base 32768, channel_max 512)", b256))
    if gpu:
        plan.append(("1024 px", config_f(1024), "config-f (the paper's FFHQ generator)",
                     [1, 4] if args.quick else batches))
    else:
        print("(1024 px config-f is measured only on a GPU)")
    if args.resolutions:
        keep = {int(r) for r in args.resolutions.split(",")}
        plan = [p for p in plan if p[1].resolution in keep]

    print_machine("Generator throughput (images/s, higher is better)", device)
    t0 = time.perf_counter()
    rows = []
    for label, cfg, note, bs in plan:
        rows += run_resolution(label, cfg, note, bs, device, args)
    print_table(rows, show_cpu=not gpu)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
