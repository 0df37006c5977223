"""`sgproject invert`: project images into the generator's latent space and save what was found."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from sgproject.app import app, err, fail, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar


def unique_folder(outdir: Path, stem: str, taken: set[str]) -> Path:
    """outdir/stem, or outdir/stem-2, -3... when two inputs share a name."""
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}-{k}", k + 1
    taken.add(name)
    return outdir / name


@app.command(rich_help_panel="Forensics")
@handle_errors
def invert(
    images: list[Path] = typer.Argument(..., help="Image files to project (png, jpg, webp, bmp, tif, gif)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Optimisation steps (the paper: 1000)."),
    space: str = typer.Option("w", "--space", help="w (one latent, the paper's) or w+ (one per layer: fits more)."),
    outdir: Path = typer.Option(Path("out/invert"), "--outdir", "-o", help="One folder per image is made here."),
    video: bool = typer.Option(False, "--video", help="Also write proj.mp4: target | projection at every step."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial noise maps and the noise on w."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images optimised at once (default: auto)."),
    early_stop: int = typer.Option(0, "--early-stop", min=0, help="Stop an image after N steps without improvement (0: off)."),
    init_samples: int = typer.Option(0, "--init-samples", min=0, help="Start each image at the closest (LPIPS) of "
                                     "w_avg and N sampled w instead of w_avg (the paper); 64 is a good value."),
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
    """
    import torch

    from detectors.images import ImageLoadError, fit_to_resolution, read_rgb, to_tensor
    from generator import load_generator
    from projector.outputs import save_projection
    from projector.perceptual import load_perceptual
    from projector.project import ProjectorConfig, auto_batch_size, project

    if space not in ("w", "w+"):
        fail(f"--space must be w or w+, got {space!r}")
    dev = pick_device(device)
    G, info = load_generator(model, dev)
    res = G.img_resolution
    perceptual = load_perceptual(vgg_weights, dev, warn=lambda m: err.print(f"[bold yellow]warning:[/] {m}"))
    cfg = ProjectorConfig(space=space, num_steps=steps, early_stop=early_stop, amp=amp, init_samples=init_samples)
    err.print(f"model [bold]{info.name}[/] ({res}px, sha256 {info.sha256[:12]}), {perceptual.identity}, on {dev}")

    # Load everything first: a bad file is reported at once, before minutes of optimisation.
    loaded, failed, taken = [], 0, set()
    for path in images:
        try:
            rgb = read_rgb(path)
        except ImageLoadError as e:
            err.print(f"[red]skipped[/] {path}: {e}")
            failed += 1
            continue
        extra = {"source": str(path), "source_sha256": rgb.sha256, "load_notes": rgb.notes}
        if align:
            from detectors.align import align_face

            a = align_face(rgb.pixels, res)
            pixels = a.image
            extra["alignment"] = a.to_json()
            if a.warning:
                err.print(f"[yellow]{path}: {a.warning}[/]")
        else:
            pixels = fit_to_resolution(rgb.pixels, res)
        loaded.append((path, pixels, extra, unique_folder(outdir, path.stem, taken)))
    if not loaded:
        fail("no image could be read")

    bs = batch_size or auto_batch_size(G, dev, len(loaded))
    meta = {
        "model": info.name, "model_sha256": info.sha256, "perceptual": perceptual.identity,
        "projector": cfg.to_dict(), "projector_fingerprint": cfg.fingerprint(), "seed": seed, "device": str(dev),
    }
    logging.getLogger("projector").setLevel(logging.WARNING)
    with progress_bar() as bar:
        task = bar.add_task("projecting", total=len(loaded) * steps)
        for start in range(0, len(loaded), bs):
            chunk = loaded[start : start + bs]
            targets = to_tensor([c[1] for c in chunk])
            done_before = bar.tasks[task].completed

            def on_step(step, total, active, base=done_before, k=len(chunk)):
                bar.update(task, completed=base + step * k, description=f"projecting ({active} optimising)")

            results = project(G, targets, config=cfg, seed=seed, device=dev, perceptual=perceptual,
                              callback=on_step, record_frames=video)
            bar.update(task, completed=done_before + len(chunk) * steps)
            for (path, pixels, extra, folder), p in zip(chunk, results):
                if align:
                    from detectors.images import save_png

                    save_png(pixels, folder / "aligned.png")
                files = save_projection(p, folder, target=pixels, meta={**meta, **extra}, video=video)
                summary = {"image": str(path), "folder": str(folder), **p.summary(), "files": files}
                if as_json:
                    # One line per image (JSON Lines): each line parses on its own, as soon as it arrives.
                    out.print_json(json.dumps(summary), indent=None, highlight=False)
                else:
                    bar.console.print(
                        f"{path}: LPIPS {p.lpips:.4f}  PSNR {p.psnr:.2f} dB  ({p.steps} steps) -> {folder}",
                        highlight=False,
                    )
    if failed:
        raise typer.Exit(2)
