"""`sgproject train`: train a StyleGAN2 on a folder of images (or the procedural portraits)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sgproject.app import app, err, handle_errors, out, pick_device


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
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate of G and D (default: the preset's; "
                                    "with --resume: from here on, e.g. a decay late in training)."),
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
    import torch  # local: keeps --help fast

    from generator.training.config import TrainConfig  # local: keeps --help fast
    from generator.training.loop import train as run_training

    rank = int(os.environ.get("RANK", "0"))
    dev = pick_device(device, threads=threads)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    if resume:
        config = TrainConfig.for_resume(outdir, kimg=kimg, snap_kimg=snap, tick_kimg=tick, preset=cfg, resolution=res,
                                        g_lr=lr, d_lr=lr)
        if data != config.data:
            err.print(f"[yellow]note:[/] resuming on the run's own data {config.data!r}, not {data!r}")
    else:
        overrides = dict(
            resolution=res, batch=batch, kimg=kimg, snap_kimg=snap, tick_kimg=tick, gamma=gamma, seed=seed,
            pl_weight=pl_weight, mixing_prob=mixing, xflip=xflip, amp=amp, g_lr=lr, d_lr=lr,
        )
        config = TrainConfig.from_preset(data, str(outdir), cfg or "portraits64", **overrides)
    if rank == 0:
        err.print(
            f"training [bold]{config.preset}[/] {config.g_config().resolution}px on {config.data} -> {outdir} "
            f"(batch {config.batch}, R1 gamma {config.r1_gamma:.4g}, device {dev}, "
            f"{'resuming' if resume else 'new run'})"
        )
    with stop_on_signals(verbose=rank == 0) as should_stop, TrainProgress(config.kimg, rank) as progress:
        state = run_training(config, device=dev, resume=resume, callback=progress.on_tick, should_stop=should_stop,
                             data_progress=progress.on_data)
    if rank == 0:
        interrupted = getattr(state, "last_event", "") == "interrupted"
        out.print(f"{'interrupted' if interrupted else 'finished'} at {state.nimg / 1000:.1f} kimg; "
                  f"generator: {outdir / 'network-latest.safetensors'}")
        if interrupted:
            raise typer.Exit(130)


@contextlib.contextmanager
def stop_on_signals(*, verbose: bool) -> Iterator[Callable[[], bool]]:
    """Ctrl-C and SIGTERM ask the loop to stop after the current minibatch (it then writes a snapshot); a second
    Ctrl-C leaves at once. Yields the `should_stop` poll; the previous handlers are restored on exit."""
    requested = False

    def on_signal(signum, frame):
        nonlocal requested
        if requested:  # a second Ctrl-C: leave now (the last snapshot is intact)
            raise KeyboardInterrupt
        requested = True
        if verbose:
            err.print("[yellow]stopping after this minibatch: writing a snapshot (Ctrl-C again to quit now)[/]")

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


class TrainProgress:
    """The progress display on stderr (rank 0 only): data preparation, then kimg with the latest losses."""

    def __init__(self, total_kimg: float, rank: int):
        self.total_kimg = total_kimg
        self.bar = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(),
            TextColumn("{task.fields[count]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[line]}"), console=err, disable=rank != 0,
        )

    def __enter__(self) -> "TrainProgress":
        self.bar.__enter__()
        self.data_task = self.bar.add_task("preparing data", total=None, line="", count="")
        self.task = self.bar.add_task("training", total=self.total_kimg, line="", count="", visible=False)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def on_data(self, done: int, total: int) -> None:
        self.bar.update(self.data_task, completed=done, total=total, count=f"{done}/{total} images")

    def on_tick(self, t) -> None:  # t: generator.training.loop.Tick
        self.bar.update(self.data_task, visible=False)
        s = t.stats
        nan = float("nan")
        line = f"{t.sec_per_kimg:6.1f} s/kimg  G {s.get('G_loss', nan):.3f}  D {s.get('D_loss', nan):.3f}"
        if "r1_penalty" in s:
            line += f"  R1 {s['r1_penalty']:.3g}"
        if "pl_length" in s:
            line += f"  pl {s['pl_length']:.3f}"
        count = f"{t.kimg:.1f}/{self.total_kimg:g} kimg"
        self.bar.update(self.task, completed=t.kimg, line=line, visible=True, count=count)
        if t.snapshot:
            self.bar.console.print(f"{t.event} at {t.kimg:.1f} kimg: {t.snapshot}")
        elif not err.is_terminal:
            self.bar.console.print(f"kimg {t.kimg:.2f}  {line}")
