"""`sgproject train-encoder`: train an encoder that guesses a model's latent in one pass (a start for projection)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sgproject.app import app, err, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar
from sgproject.cmd_train import stop_on_signals


@app.command("train-encoder", rich_help_panel="Forensics")
@handle_errors
def train_encoder(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    out_path: Path = typer.Option(..., "--out", "-o", help="The encoder file (.safetensors); NAME.json and "
                                  "NAME.state.pt (for --resume) are written beside it."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Train until this many minibatches were done."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Images per minibatch (default 32; "
                                        "with --resume: the run's)."),
    lpips_batch: Optional[int] = typer.Option(None, "--lpips-batch", min=0, help="Images per minibatch that also "
                                              "get the LPIPS loss (default 4; 0: w loss only, much faster)."),
    w_plus: bool = typer.Option(False, "--w-plus", help="Guess one w per layer (W+) instead of one w."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of every random draw (default 0; with --resume: "
                                       "the run's)."),
    snap: int = typer.Option(500, "--snap", min=0, help="Checkpoint every this many steps (and at the end, and "
                             "on Ctrl-C)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run of --out from its last checkpoint."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this encoder's weights (one trained for "
                                        "another generator of the same size, e.g. an earlier snapshot of the same "
                                        "training run) instead of a fresh network: far fewer steps for new weights."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights for LPIPS (.pth)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's)."),
) -> None:
    """Train an encoder for one model on its own images (degraded as detection inputs are), so that projections
    can start from its guess (invert --encoder) and need far fewer steps.

    Examples:

      sgproject train-encoder --model portraits-64 --out out/portraits-64.encoder.safetensors --steps 3000

      sgproject train-encoder --model portraits-64 --out out/portraits-64.encoder.safetensors --resume --steps 6000

      sgproject train-encoder --model training/run/network-latest.safetensors --out out/new.encoder.safetensors \
          --init generator/weights/portraits-64.encoder.safetensors --steps 1000
    """
    # local: keeps --help fast
    from generator import load_generator
    from generator.metrics.lpips import load_perceptual
    from projector.encoder import EncoderConfig, num_parameters
    from projector.encoder_train import EncoderTrainConfig, train_encoder as run_training

    dev = pick_device(device, threads=threads)
    G, info = load_generator(model, dev)
    perceptual = load_perceptual(vgg_weights, dev, warn=lambda m: err.print(f"[bold yellow]warning:[/] {m}"))
    # Settings not given are the defaults, or with --resume the run's own.
    config = EncoderConfig(w_plus=True) if w_plus else None
    train_config = None if lpips_batch is None else EncoderTrainConfig(lpips_batch=lpips_batch)
    err.print(f"model [bold]{info.name}[/] ({G.img_resolution}px, sha256 {info.sha256[:12]}), {perceptual.identity}, "
              f"on {dev}; {'resuming' if resume else 'new run'}{f' from {init}' if init else ''} -> {out_path}")
    with stop_on_signals(verbose=True) as should_stop, progress_bar() as bar:
        task = bar.add_task("training", total=steps)

        def on_tick(t) -> None:  # t: projector.encoder_train.EncoderTick
            line = "  ".join(f"{k} {v:.4f}" for k, v in sorted(t.stats.items()))
            bar.update(task, completed=t.step, description=f"training ({line})")
            if t.checkpoint:
                bar.console.print(f"{t.event} at step {t.step}: {t.checkpoint}", highlight=False)
            elif not err.is_terminal and t.step % 50 == 0:  # a log file: a line now and then instead of the bar
                bar.console.print(f"step {t.step}/{t.steps}  {line}", highlight=False)

        r = run_training(G, info, perceptual, out=out_path, steps=steps, batch=batch, config=config,
                         train_config=train_config, seed=seed, device=dev, resume=resume, init=init,
                         checkpoint_every=snap,
                         progress=on_tick, should_stop=should_stop)
    out.print(f"{'interrupted' if r.event == 'interrupted' else 'finished'} at step {r.step} "
              f"({num_parameters(r.encoder):,} parameters); encoder: {r.path}", highlight=False)
    if r.event == "interrupted":
        raise typer.Exit(130)
