"""`sgproject invert`: project images into the generator's latent space and save what was found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from sgproject.app import app, err, fail, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar


@app.command(rich_help_panel="Forensics")
@handle_errors
def invert(
    images: list[Path] = typer.Argument(..., help="Image files to project (png, jpg, webp, bmp, tif, gif)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimisation steps (the paper: 1000)."),
    space: str = typer.Option("w", "--space", help="w (one latent, the paper's) or w+ (one per layer: fits more)."),
    outdir: Path = typer.Option(Path("out/invert"), "--outdir", "-o", help="One folder per image is made here."),
    video: bool = typer.Option(False, "--video", help="Also write proj.mp4: target | projection at every step "
                               "(H.264 with the `video` extra, else MPEG-4 Part 2, which browsers do not play)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial noise maps and the noise on w."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images optimised at once (default: auto)."),
    early_stop: int = typer.Option(0, "--early-stop", min=0, help="Stop an image after N steps without improvement (0: off)."),
    init_samples: int = typer.Option(0, "--init-samples", min=0, help="Start each image at the closest (LPIPS) of "
                                     "w_avg and N sampled w instead of w_avg (the paper); 64 is a good value."),
    encoder: Optional[Path] = typer.Option(None, "--encoder", help="Start each image at this encoder's guess "
                                           "(from `sgproject train-encoder` for the same model; default: the "
                                           "model's bundled encoder, if it has one): far fewer steps."),
    no_encoder: bool = typer.Option(False, "--no-encoder", help="Start at w_avg (the paper) even when the model "
                                    "has an encoder."),
    align: bool = typer.Option(False, "--align", help="Align faces FFHQ-style before projecting (writes aligned.png)."),
    amp: bool = typer.Option(False, "--amp", help="bfloat16 autocast on CUDA (faster, slightly different numbers)."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights for LPIPS (torchvision .pth)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary per image on stdout."),
) -> None:
    """Find the latent (and noise) that reproduces each image: the projection behind every verdict.

    Per image, OUTDIR/NAME/ gets target.png, proj.png, projected_w.npz (w as [1, num_ws, w_dim]), noise.npz,
    trace.json, summary.json and with --video proj.mp4.

    Examples:

      sgproject invert samples/face.png

      sgproject invert photo.jpg --align --space w+ --steps 500 --video --outdir out/photo

      sgproject invert samples/face.png --steps 50

      sgproject invert samples/face.png --model mine.safetensors --encoder out/mine.encoder.safetensors
    """
    # local: keeps --help fast
    from detectors.batch import prepare_image
    from detectors.images import ImageLoadError
    from generator import load_generator
    from generator.metrics.lpips import load_perceptual
    from projector.encoder import encoder_for
    from projector.invert import InvertTarget, invert_images
    from projector.project import SPACES, projector_config

    if space not in SPACES:
        fail(f"--space must be w or w+, got {space!r}")
    dev = pick_device(device)
    G, info = load_generator(model, dev)
    res = G.img_resolution
    warn = lambda m: err.print(f"[bold yellow]warning:[/] {escape(m)}")  # noqa: E731
    perceptual = load_perceptual(vgg_weights, dev, warn=warn)
    if no_encoder and encoder:
        fail("--encoder and --no-encoder contradict each other")
    E = None if no_encoder else encoder_for(info, encoder, dev)
    cfg = projector_config(E, space=space, num_steps=steps, early_stop=early_stop, amp=amp, init_samples=init_samples)
    err.print(f"model [bold]{info.name}[/] ({res}px, sha256 {info.sha256[:12]}), {perceptual.identity}, on {dev}"
              + (f"; start: encoder {encoder or '(bundled)'} ({E.identity()})" if E else "; start: w_avg"))

    # Load everything first: a bad file is reported at once, before minutes of optimisation.
    targets, failed = [], 0
    for path in images:
        try:
            p = prepare_image(path, res, align=align)
        except ImageLoadError as e:
            err.print(f"[red]skipped[/] {path}: {e}")
            failed += 1
            continue
        meta = {"source": str(path), "source_sha256": p.image.sha256, "load_notes": p.image.notes}
        if align:
            meta["alignment"] = p.alignment
            if p.alignment["warning"]:
                err.print(f"[yellow]{path}: {p.alignment['warning']}[/]")
        targets.append(InvertTarget(str(path), path.stem, p.pixels, meta, aligned=align))
    if not targets:
        fail("no image could be read")

    with progress_bar() as bar:
        task = bar.add_task("projecting", total=len(targets) * steps)
        on_step = lambda done, total, active: bar.update(  # noqa: E731
            task, completed=done, description=f"projecting ({active} optimising)")
        for r in invert_images(G, perceptual, targets, config=cfg, outdir=outdir, model=info, seed=seed, device=dev,
                               batch_size=batch_size, video=video, progress=on_step, warn=warn,
                               encoder=E):
            p = r.projection
            if as_json:
                # One line per image (JSON Lines): each line parses on its own, as soon as it arrives.
                out.print_json(json.dumps(r.summary()), indent=None, highlight=False)
            else:
                bar.console.print(f"{r.source}: LPIPS {p.lpips:.4f}  PSNR {p.psnr:.2f} dB  ({p.steps} steps) -> "
                                  f"{r.folder}", highlight=False)
    if failed:
        raise typer.Exit(2)
