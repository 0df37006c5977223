"""`sgproject train`: train a StyleGAN2 on a folder of images (or the procedural portraits)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sgproject.app import app, err, fail, handle_errors, out, pick_device


@app.command(rich_help_panel="Generator")
@handle_errors
def train(
    data: str = typer.Argument(..., help="Image folder (recursive; png, jpg, webp, bmp, tif) or portraits:N[:SEED]."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Run folder: snapshots, samples, stats.jsonl."),
    cfg: Optional[str] = typer.Option(None, "--cfg", help="Preset: tiny, portraits64 (default), paper256, config-f."),
    res: Optional[int] = typer.Option(None, "--res", help="Training resolution (default: the preset's)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Global minibatch (default: the preset's)."),
    kimg: float = typer.Option(500, "--kimg", help="Train until this many thousand real images were shown."),
    snap: float = typer.Option(50, "--snap", help="Snapshot every this many kimg (and on exit)."),
    tick: float = typer.Option(1, "--tick", help="Progress and log every this many kimg."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="R1 weight (default 0.0002*res^2/batch)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, data order and every random draw."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate of G and D (default: the preset's)."),
    pl_weight: float = typer.Option(2.0, "--pl-weight", help="Path-length regularisation weight (0: off)."),
    mixing: float = typer.Option(0.9, "--mixing", help="Style-mixing probability."),
    xflip: bool = typer.Option(False, "--xflip", help="Random horizontal flips of the real images."),
    amp: bool = typer.Option(False, "--amp", help="bfloat16 autocast for the main passes (CUDA only)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --outdir from its latest snapshot."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's)."),
) -> None:
    """Train StyleGAN2 (lazy R1 and path length, style mixing, G EMA) with snapshots you can resume.

    A snapshot (the complete training state, G_ema as a generator checkpoint and a sample grid) is written every
    --snap kimg, at the end, and when you press Ctrl-C or the process gets SIGTERM. With --resume the run
    continues where it stopped and repeats what an uninterrupted run would have done.

    Examples:

      sgproject train photos/ --outdir runs/faces --res 64 --batch 32 --kimg 500

      sgproject train portraits:50000 --outdir runs/portraits --cfg portraits64 --kimg 1000

      sgproject train photos/ --outdir runs/faces --resume --kimg 800

      torchrun --nproc_per_node=2 -m sgproject train photos/ --outdir runs/faces
    """
    import torch

    from generator.train import STATE_FILE, TrainConfig, TrainingError, train as run_training

    rank = int(os.environ.get("RANK", "0"))
    if threads:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)

    if resume:
        saved = outdir / "config.json"
        if not (outdir / STATE_FILE).exists() or not saved.exists():
            fail(f"--resume: {outdir} holds no run to resume (no {STATE_FILE})")
        d = json.loads(saved.read_text())
        d.update(kimg=kimg, snap_kimg=snap, tick_kimg=tick, outdir=str(outdir))  # the folder may have moved
        config = TrainConfig(**d)
        # The networks of a run are fixed: a contradicting option is an error, not something to ignore silently.
        if cfg is not None and cfg != config.preset:
            fail(f"--resume: the run in {outdir} was started with --cfg {config.preset}, not {cfg}")
        if res is not None and res != config.g_config().resolution:
            fail(f"--resume: the run in {outdir} trains at --res {config.g_config().resolution}, not {res}")
        if data != config.data:
            err.print(f"[yellow]note:[/] resuming on the run's own data {config.data!r}, not {data!r}")
    else:
        overrides = dict(
            resolution=res, batch=batch, kimg=kimg, snap_kimg=snap, tick_kimg=tick, gamma=gamma, seed=seed,
            pl_weight=pl_weight, mixing_prob=mixing, xflip=xflip, amp=amp, g_lr=lr, d_lr=lr,
        )
        config = TrainConfig.from_preset(data, str(outdir), cfg or "portraits64", **overrides)

    stop = {"requested": False}

    def on_signal(signum, frame):
        if stop["requested"]:  # a second Ctrl-C: leave now (the last snapshot is intact)
            raise KeyboardInterrupt
        stop["requested"] = True
        if rank == 0:
            err.print("[yellow]stopping after this minibatch: writing a snapshot (Ctrl-C again to quit now)[/]")

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    g = config.g_config()
    if rank == 0:
        err.print(
            f"training [bold]{config.preset}[/] {g.resolution}px on {config.data} -> {outdir} "
            f"(batch {config.batch}, R1 gamma {config.r1_gamma:.4g}, device {dev}, "
            f"{'resuming' if resume else 'new run'})"
        )
    bar = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(),
        TextColumn("{task.fields[count]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[line]}"), console=err, disable=rank != 0,
    )
    try:
        with bar:
            data_task = bar.add_task("preparing data", total=None, line="", count="")
            task = bar.add_task("training", total=config.kimg, line="", count="", visible=False)

            def data_progress(done: int, total: int) -> None:
                bar.update(data_task, completed=done, total=total, count=f"{done}/{total} images")

            def on_tick(t) -> None:
                bar.update(data_task, visible=False)
                s = t.stats
                line = (
                    f"{t.sec_per_kimg:6.1f} s/kimg  G {s.get('G_loss', float('nan')):.3f}  "
                    f"D {s.get('D_loss', float('nan')):.3f}"
                )
                if "r1_penalty" in s:
                    line += f"  R1 {s['r1_penalty']:.3g}"
                if "pl_length" in s:
                    line += f"  pl {s['pl_length']:.3f}"
                bar.update(task, completed=t.kimg, line=line, visible=True, count=f"{t.kimg:.1f}/{config.kimg:g} kimg")
                if t.snapshot:
                    bar.console.print(f"{t.event} at {t.kimg:.1f} kimg: {t.snapshot}")
                elif not err.is_terminal:
                    bar.console.print(f"kimg {t.kimg:.2f}  {line}")

            state = run_training(
                config, device=dev, resume=resume, callback=on_tick,
                should_stop=lambda: stop["requested"], data_progress=data_progress,
            )
    except TrainingError as e:
        fail(str(e))
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    if rank == 0:
        latest = outdir / "network-latest.safetensors"
        word = "interrupted" if getattr(state, "last_event", "") == "interrupted" else "finished"
        out.print(f"{word} at {state.nimg / 1000:.1f} kimg; generator: {latest}")
        if word == "interrupted":
            raise typer.Exit(130)
