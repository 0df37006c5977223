"""`sgproject generate` and `sgproject info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sgproject.app import app, err, fail, handle_errors, out, pick_device

MODEL_HELP = "Registered name (portraits-64, tiny), an sgproject .safetensors file, or an NVIDIA/rosinality file."


def progress_bar(*, disable: bool = False) -> Progress:
    """The progress bar every long command uses (on stderr)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
        disable=disable,
    )


@app.command(rich_help_panel="Generator")
@handle_errors
def generate(
    seeds: str = typer.Option("0-7", "--seeds", "-s", help="Seeds and ranges, e.g. 0-7,12. One image per seed."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    trunc: float = typer.Option(1.0, "--trunc", help="Truncation psi: 1 = no truncation, 0 = the average image."),
    trunc_cutoff: Optional[int] = typer.Option(None, "--trunc-cutoff", help="Truncate only the first N ws."),
    noise_mode: str = typer.Option("const", "--noise-mode", help="const (stored noise), random or none."),
    outdir: Path = typer.Option(Path("out"), "--outdir", "-o", help="Folder for the PNGs (created)."),
    grid: bool = typer.Option(False, "--grid", help="Also write all seeds as one grid.png."),
    mix: Optional[tuple[str, str]] = typer.Option(
        None, "--mix", metavar="ROWSEEDS COLSEEDS",
        help="Write style-mixing figures (coarse, middle, fine) for two seed lists instead of single images.",
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
) -> None:
    """Generate images from seeds, a grid, or the style-mixing figure of the StyleGAN paper.

    Examples:

      sgproject generate --seeds 0-15 --grid

      sgproject generate --model tiny --seeds 0-7,12 --trunc 0.7 --outdir out/

      sgproject generate --mix 1-4 10-15 --outdir mixing/
    """
    from generator import load_generator  # local: keeps --help fast
    from generator.networks import NOISE_MODES
    from generator.render import (
        STYLE_RANGES, generate_images, make_grid, parse_seeds, style_mixing_figure, style_range_layers,
    )
    from generator.util.imaging import save_png

    if noise_mode not in NOISE_MODES:
        fail(f"--noise-mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    seed_list = parse_seeds(seeds)
    dev = pick_device(device)
    G, info = load_generator(model, dev)
    err.print(f"model [bold]{info.name}[/] ({G.img_resolution}px, sha256 {info.sha256[:12]}) on {dev}")

    if mix is not None:
        rows, cols = parse_seeds(mix[0]), parse_seeds(mix[1])
        for name in STYLE_RANGES:
            layers = style_range_layers(G, name)
            if not layers:
                err.print(f"[yellow]skipped {name} styles: none at {G.img_resolution}px[/]")
                continue
            fig = style_mixing_figure(G, rows, cols, layers, truncation_psi=trunc, noise_mode=noise_mode)
            path = save_png(fig, outdir / f"mix-{name}.png")
            out.print(str(path))
        return

    images = []
    with progress_bar() as bar:
        task = bar.add_task("generating", total=len(seed_list))
        for seed, arr in generate_images(
            G, seed_list, truncation_psi=trunc, truncation_cutoff=trunc_cutoff, noise_mode=noise_mode,
            batch_size=batch_size, callback=lambda k: bar.advance(task, k),
        ):
            out.print(str(save_png(arr, outdir / f"seed{seed:04d}.png")))
            if grid:
                images.append(arr)
    if grid:
        out.print(str(save_png(make_grid(images), outdir / "grid.png")))


@app.command(rich_help_panel="Generator")
@handle_errors
def info(
    model: str = typer.Argument("portraits-64", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show a model's configuration, parameter count and sha256.

    Example: sgproject info tiny
    """
    from generator import load_generator  # local: keeps --help fast

    G, mi = load_generator(model, "cpu")
    record = {
        "name": mi.name,
        "path": str(mi.path) if mi.path else None,
        "sha256": mi.sha256,
        "parameters": sum(p.numel() for p in G.parameters()),
        "num_ws": G.num_ws,
        "noise_maps": len(G.synthesis.noise_layers()),
        "config": G.cfg.to_dict(),
        "info": mi.info,
    }
    if as_json:
        out.print_json(json.dumps(record), highlight=False)  # machine-readable: never colour codes (FORCE_COLOR)
        return
    table = Table(show_header=False, box=None)
    for k in ("name", "path", "sha256", "parameters", "num_ws", "noise_maps"):
        v = record[k]
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    for k, v in record["config"].items():
        table.add_row(f"config.{k}", str(v))
    for k, v in record["info"].items():
        table.add_row(f"info.{k}", json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    out.print(table)
