"""`sgproject detect`: judge images and folders, with forensic reports."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from sgproject.app import app, err, fail, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar

DEFAULT_STEPS = 300  # used without a calibration; a calibration brings its own projector settings

VERDICT_STYLE = {"generated": "bold red", "real": "green", "uncertain": "yellow", None: "dim"}


@app.command(rich_help_panel="Forensics")
@handle_errors
def detect(
    paths: list[Path] = typer.Argument(..., help="Image files and folders (walked recursively; hidden files skipped)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", "-c", help="Calibration JSON from `sgproject calibrate` (default: the model's bundled one)."
    ),
    no_calibration: bool = typer.Option(False, "--no-calibration", help="Scores only: no probabilities or verdicts."),
    report: Path = typer.Option(Path("out/detect"), "--report", "-r", help="Folder for results.jsonl, reports, assets."),
    formats: str = typer.Option("html,json,csv", "--format", help="Reports to write: any of html, json, csv."),
    resume: bool = typer.Option(False, "--resume", help="Skip images already judged with the same settings."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images projected at once (default: auto)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Projection steps (default: the calibration's)."),
    align: bool = typer.Option(False, "--align", help="Align faces FFHQ-style before projecting."),
    wplus: bool = typer.Option(False, "--wplus", help="Also project into W+ and record its distance."),
    seed: int = typer.Option(0, "--seed", help="Seed of the projection's random initialisation."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights for LPIPS (torchvision .pth)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON result per image on stdout instead of text."),
) -> None:
    """Decide, image by image, whether pictures were made by the generator; write forensic reports.

    Each image is projected into the generator; a picture the generator reproduces almost exactly was probably
    made by it. Results are appended to REPORT/results.jsonl as each image finishes (nothing is lost on Ctrl-C;
    --resume continues), and REPORT/report.html, report.json and report.csv show the evidence side by side.

    Exit codes, as virus scanners use them: 0 nothing flagged, 1 at least one image flagged as generated,
    2 some files could not be judged (or bad usage). 1 wins over 2.

    Examples:

      sgproject detect samples/

      sgproject detect photos/ --report out/photos --resume

      sgproject detect suspect.jpg --model ffhq.pkl --calibration ffhq-calib.json --align

      torchrun --nproc_per_node=2 -m sgproject detect photos/ --report out/photos
    """
    import torch

    from detectors.batch import DetectSettings, Detector
    from generator import load_generator
    from projector.perceptual import load_perceptual
    from projector.project import ProjectorConfig, auto_batch_size

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmts if f not in ("html", "json", "csv")]
    if bad or not fmts:
        fail(f"--format takes html, json and csv, got {formats!r}")
    for p in paths:
        if not p.exists() and not p.is_symlink():
            fail(f"{p}: no such file or folder")

    rank = int(os.environ.get("RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    G, info = load_generator(model, dev)
    say = (lambda m: err.print(m, highlight=False)) if rank == 0 else (lambda m: None)

    cal = None
    if not no_calibration:
        from detectors.calibration import calibration_for

        cal = calibration_for(info.name, calibration)
    if cal is not None:
        cfg = ProjectorConfig(**cal.projector)
        if steps is not None:
            cfg.num_steps = steps
        perceptual = load_perceptual(vgg_weights, dev, require=cal.perceptual)
        cal.check_compatible(model_sha256=info.sha256, projector_fingerprint=cfg.fingerprint(),
                             perceptual=perceptual.identity, align=align)
    else:
        cfg = ProjectorConfig(num_steps=steps or DEFAULT_STEPS)
        warn = (lambda m: err.print(f"[bold yellow]warning:[/] {m}")) if rank == 0 else (lambda m: None)
        perceptual = load_perceptual(vgg_weights, dev, warn=warn)
        if not no_calibration:
            say(f"[yellow]no calibration for {info.name}: scores only, no verdicts "
                "(make one with `sgproject calibrate`)[/]")
    settings = DetectSettings(config=cfg, seed=seed, align=align,
                              wplus=wplus or (cal is not None and "lpips_wplus" in cal.features),
                              batch_size=batch_size or auto_batch_size(G, dev, 64))
    say(f"model [bold]{info.name}[/] ({G.img_resolution}px, sha256 {info.sha256[:12]}), {perceptual.identity}, "
        f"{cfg.num_steps} steps, {'calibrated' if cal else 'uncalibrated'}, on {dev}")

    detector = Detector(G, info, perceptual, settings, calibration=cal, device=dev)
    old_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    command = " ".join(shlex.quote(a) for a in ["sgproject", *sys.argv[1:]])
    try:
        with progress_bar(disable=rank != 0) as bar:
            task = bar.add_task("judging", total=None)

            def on_total(n: int) -> None:
                bar.update(task, total=n)

            def on_step(step: int, total: int, active: int) -> None:
                bar.update(task, description=f"judging (step {step}/{total}, {active} optimising)")

            def on_result(row: dict) -> None:
                bar.advance(task)
                if as_json:
                    out.print_json(json.dumps(row, ensure_ascii=False), indent=None, highlight=False)  # JSON Lines
                else:
                    bar.console.print(_line(row), highlight=False, markup=True, soft_wrap=True)

            result = detector.run(paths, report, resume=resume, formats=fmts, command=command,
                                  on_result=on_result, on_total=on_total, on_step=on_step)
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if rank != 0:
        return
    c = result.counts()
    where = result.reports.get("html") or next(iter(result.reports.values()), str(report))
    if result.interrupted:
        err.print(f"[yellow]interrupted:[/] {c['total']} judged so far; partial report {where}; "
                  "run again with --resume to continue")
        raise typer.Exit(130)
    judged = c["total"] - c["error"]
    summary = (f"{c['generated']} generated, {c['real']} real, {c['uncertain']} uncertain"
               if cal is not None else f"{judged} scored (no calibration)")
    err.print(f"{c['total']} files: {summary}, {c['error']} could not be judged. Report: {where}", highlight=False)
    raise typer.Exit(result.exit_code())


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _line(row: dict) -> str:
    from rich.markup import escape

    path = escape(row["path"])
    if row["status"] == "error":
        return f"[red]error[/]      {path}: {escape(row['error'] or '')}"
    v = row["verdict"]
    f = row["features"] or {}
    p = "" if row["probability"] is None else f"p={row['probability']:.3f}  "
    style = VERDICT_STYLE.get(v, "dim")
    return f"[{style}]{(v or 'scored'):<10}[/] {p}LPIPS {f.get('lpips', float('nan')):.4f}  {path}"
