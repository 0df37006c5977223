"""`sgproject align`: cut FFHQ-style aligned face crops out of photos (detectors/align does the work)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from sgproject.app import EXIT_USAGE, app, err, fail, handle_errors


@app.command(rich_help_panel="Images")
@handle_errors
def align(
    inputs: list[Path] = typer.Argument(..., metavar="IN", help="Image files, or folders to search for images."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Folder for <stem>.png and <stem>.json (created)."),
    res: int = typer.Option(64, "--res", "-r", min=8, help="Output size in pixels (square): the model's resolution."),
    aligner: str = typer.Option("auto", "--aligner", help="auto (dlib-68 with the faces extra installed, else "
                                "haar), dlib-68 or haar."),
) -> None:
    """Align faces the way StyleGAN2's training faces were aligned (the FFHQ recipe): one square crop per image.

    Writes OUTDIR/<stem>.png (the crop) and OUTDIR/<stem>.json (aligner, landmarks, face box, crop corners,
    warnings).

    Eyes and mouth come from dlib's 68 face landmarks, as FFHQ's did, with the faces extra
    (pip install "sgproject[faces]"; its landmark model is for non-commercial use); without it from OpenCV's Haar
    cascades, which are coarser. With several faces the largest is used.

    An image without a detectable face gets its centre crop instead, and a warning.

    Exit status: 0 when every image was processed, 2 when some could not be read.

    Examples:

      sgproject align photo.jpg --outdir aligned/

      sgproject align photos/ --outdir aligned/ --res 256

      sgproject align photo.jpg --outdir aligned/ --aligner haar
    """
    # local: keeps --help fast
    from detectors.align import ALIGNERS, align_face
    from detectors.images import ImageLoadError, find_images, read_rgb
    from generator.util.files import write_text_atomic
    from generator.util.imaging import save_png

    if aligner not in ALIGNERS:
        fail(f"--aligner must be one of {', '.join(ALIGNERS)}, got {aligner!r}")
    paths, skipped = find_images(inputs)
    if not paths and not skipped:
        fail(f"no images found in {', '.join(map(str, inputs))}")
    outdir.mkdir(parents=True, exist_ok=True)

    used: set[str] = set()
    counts = {"aligned": 0, "centre crop": 0, "unreadable": 0}
    for path, reason in skipped:
        err.print(f"[red]unreadable[/] {path}: {reason}", highlight=False)
        counts["unreadable"] += 1
    for path in paths:
        try:
            image = read_rgb(path)
        except ImageLoadError as e:
            err.print(f"[red]unreadable[/] {path}: {e}", highlight=False)
            counts["unreadable"] += 1
            continue
        result = align_face(image.pixels, res, aligner=aligner)
        stem = _unique_stem(path.stem, used)
        save_png(result.image, outdir / f"{stem}.png")
        record = {"source": str(path), "source_sha256": image.sha256, **result.to_json()}
        write_text_atomic(outdir / f"{stem}.json", _dumps(record) + "\n")

        kind = "aligned" if result.aligned else "centre crop"
        counts[kind] += 1
        tag = f"[green]aligned ({result.aligner})[/]" if result.aligned else "[yellow]centre crop[/]"
        note = f" [yellow]({result.warning})[/]" if result.warning else ""
        err.print(f"{tag} {path} -> {outdir / stem}.png{note}", highlight=False)

    err.print(", ".join(f"{n} {k}" for k, n in counts.items() if n) + f"; written to {outdir}", highlight=False)
    if counts["unreadable"]:
        raise typer.Exit(EXIT_USAGE)


def _unique_stem(stem: str, used: set[str]) -> str:
    """`stem`, or `stem-2`, `stem-3`, ... when two inputs share a name (a/x.jpg and b/x.png)."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name


def _dumps(obj: dict) -> str:
    """Indented JSON with short lists of numbers (points, boxes) kept on one line."""
    text = json.dumps(obj, indent=2)
    inline = lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]"  # noqa: E731
    return re.sub(r"\[\s+([-+.eE0-9,\s]+?)\s+\]", inline, text)
