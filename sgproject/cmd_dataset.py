"""`sgproject make-dataset ...`: render training sets to a folder. One sub-command per kind of data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sgproject.app import app, err, handle_errors, out

make_dataset = typer.Typer(
    help="Render a training dataset (PNG files plus a params.jsonl) into a folder.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(make_dataset, name="make-dataset", rich_help_panel="Generator")


@make_dataset.command("portraits")
@handle_errors
def portraits(
    outdir: Path = typer.Argument(..., metavar="OUT", help="Folder for the images (created; resumed if it exists)."),
    n: int = typer.Option(50_000, "--n", min=1, help="Number of images."),
    res: int = typer.Option(64, "--res", min=32, help="Image size in pixels (square)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Which set: image i of a set is always the same picture."),
    start: int = typer.Option(0, "--start", min=0, help="First image index (to write a shard of a set)."),
    workers: int = typer.Option(0, "--workers", "-j", min=0, help="Render in N processes (0: in this process)."),
) -> None:
    """Render procedural stylised portraits: the training data of the bundled portraits-64 generator.

    Writes 000000.png, 000001.png, ... and params.jsonl: one JSON object per image, in index order.

    Each object holds every drawn parameter and the left_eye, right_eye and mouth landmarks in pixels.

    Interrupted? Run the same command again: images already written are kept, the rest are rendered.

    Examples:

      sgproject make-dataset portraits data/portraits64 --n 50000 --res 64 --workers 2

      sgproject make-dataset portraits /tmp/faces --n 16 --res 256
    """
    from generator.data.portraits import write_portraits  # local: keeps --help fast

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err) as bar:
        task = bar.add_task("portraits", total=n)
        params = write_portraits(outdir, n=n, res=res, seed=seed, start=start, workers=workers,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
    err.print(f"params: {params}", highlight=False)
    out.print(f"{outdir}\t{n} portraits ({res}x{res}, seed {seed})", highlight=False, soft_wrap=True)
