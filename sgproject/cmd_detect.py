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
from rich.markup import escape

from sgproject.app import app, err, fail, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar

VERDICT_STYLE = {"generated": "bold red", "real": "green", "uncertain": "yellow", "insufficient": "magenta",
                 "out-of-domain": "magenta", None: "dim"}


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
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Projection steps (default: the calibration's)."),
    fast: bool = typer.Option(False, "--fast", help="Triage: judge by the encoder's one-pass guess alone (no "
                              "optimisation), with the model's fast calibration. Many images per second; weaker "
                              "evidence than the default."),
    no_cascade: bool = typer.Option(False, "--no-cascade", help="Optimise every image, also those that the "
                                    "encoder's guess alone already shows to be real (the cascade's first stage)."),
    triage: Optional[Path] = typer.Option(None, "--triage", help="The cascade's calibration of the encoder's guess "
                                          "alone (default: the model's bundled fast calibration)."),
    no_escalate: bool = typer.Option(False, "--no-escalate", help="Leave an image 'uncertain' when the projection "
                                     "leaves it so, instead of projecting it again, longer (the cascade's second "
                                     "look)."),
    escalation: Optional[Path] = typer.Option(None, "--escalation", help="Calibration of the second look: a longer "
                                              "projection from the same guess (default: the model's bundled deep "
                                              "calibration)."),
    encoder: Optional[Path] = typer.Option(None, "--encoder", help="Encoder whose guess starts each projection "
                                           "(default: the model's bundled one, when its calibration uses one)."),
    domain: Optional[Path] = typer.Option(None, "--domain", help="Domain check from `sgproject calibrate-domain` "
                                          "(default: the model's bundled one, if any)."),
    no_domain_check: bool = typer.Option(False, "--no-domain-check", help="Judge images outside the model's domain "
                                         "too (the verdict 'out-of-domain' is then never given)."),
    align: bool = typer.Option(False, "--align", help="Align faces FFHQ-style before projecting."),
    wplus: bool = typer.Option(False, "--wplus", help="Also project into W+ and record its distance."),
    video: bool = typer.Option(False, "--video", help="Show each image's projection as a video in report.html "
                               "(target | reconstruction, ~100 frames; H.264 with the `video` extra)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the projection's random initialisation."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights for LPIPS (torchvision .pth)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON result per image on stdout instead of text."),
) -> None:
    """Decide, image by image, whether pictures were made by the generator; write forensic reports.

    Each image is projected into the generator; a picture the generator reproduces almost exactly was probably
    made by it. With a calibration that starts each projection at the model's encoder's guess (the bundled model's
    default), an image that the guess alone already shows to be real is not optimised at all (the cascade; a
    'generated' verdict always rests on the optimised projection; --no-cascade optimises every image, --fast
    none). An image the projection leaves uncertain gets a second look: a longer projection from the same guess,
    judged by its own calibration (the model's deep calibration; --no-escalate skips it). Results are appended to
    REPORT/results.jsonl as each image finishes (nothing is lost on Ctrl-C; --resume continues), and
    REPORT/report.html, report.json and report.csv show the evidence side by side.

    Verdicts: generated, real (not made by this model), uncertain; insufficient: an image too flat to be
    evidence (nearly uniform, a plain gradient, heavily blurred); out-of-domain: not the kind of image the model
    makes (a landscape for a portrait model), which it cannot vouch for either way. The last two are not projected.

    Exit codes, as virus scanners use them: 0 nothing flagged, 1 at least one image flagged as generated,
    2 some files could not be judged (unreadable, insufficient or out-of-domain; or bad usage). 1 wins over 2.

    Examples:

      sgproject detect samples/

      sgproject detect photos/ --fast --report out/triage

      sgproject detect photos/ --report out/photos --resume

      sgproject detect suspect.jpg --model ffhq.pkl --calibration ffhq-calib.json --align

      sgproject detect suspect.png --video --report out/suspect

      torchrun --nproc_per_node=2 -m sgproject detect photos/ --report out/photos
    """
    from detectors.batch import Detector  # local: keeps --help fast

    fmts = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmts if f not in ("html", "json", "csv")]
    if bad or not fmts:
        fail(f"--format takes html, json and csv, got {formats!r}")
    for p in paths:
        if not p.exists() and not p.is_symlink():
            fail(f"{p}: no such file or folder")

    rank = int(os.environ.get("RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        dev = pick_device(f"cuda:{os.environ['LOCAL_RANK']}")
    say = (lambda m: err.print(m, highlight=False)) if rank == 0 else (lambda m: None)
    warn = (lambda m: err.print(f"[bold yellow]warning:[/] {escape(m)}")) if rank == 0 else (lambda m: None)
    detector = Detector.from_options(model, dev, calibration=calibration, use_calibration=not no_calibration,
                                     steps=steps, fast=fast, encoder=encoder, cascade=not no_cascade,
                                     triage=triage, escalate=not no_escalate, escalation=escalation,
                                     domain=domain, use_domain=not no_domain_check, seed=seed, align=align, wplus=wplus,
                                     batch_size=batch_size, vgg_weights=vgg_weights, video=video, warn=warn)
    cal, info = detector.calibration, detector.model
    if cal is None and not no_calibration:
        say(f"[yellow]no calibration for {info.name}: scores only, no verdicts "
            "(make one with `sgproject calibrate`)[/]")
    from detectors.report import projection_start

    n_steps, start = detector.settings.config.num_steps, projection_start(detector.settings.config.to_dict())
    say(f"model [bold]{info.name}[/] ({detector.G.img_resolution}px, sha256 {info.sha256[:12]}), "
        f"{detector.perceptual.identity}, "
        f"{'no steps (fast triage: ' + start + ')' if n_steps == 0 else f'{n_steps} steps {start}'}, "
        f"{'calibrated' if cal else 'uncalibrated'}"
        f"{', cascade (the guess alone clears what it shows to be real)' if detector.triage else ''}"
        f"{_second_look(detector.escalation)}"
        f"{', domain check' if detector.domain else ''}, on {dev}")

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
    if rank == 0:
        _conclude(result, calibrated=cal is not None, report=report)


def _conclude(result, *, calibrated: bool, report: Path) -> None:
    """Rank 0's last word: the counts and where the report is; exit with the run's code (130 when interrupted)."""
    c = result.counts()
    where = result.reports.get("html") or next(iter(result.reports.values()), str(report))
    if result.interrupted:
        err.print(f"[yellow]interrupted:[/] {c['total']} judged so far; partial report {where}; "
                  "run again with --resume to continue")
        raise typer.Exit(130)
    judged = c["total"] - c["error"]
    summary = (f"{c['generated']} generated, {c['real']} real, {c['uncertain']} uncertain"
               + (f", {c['insufficient']} insufficient (too little information)" if c["insufficient"] else "")
               + (f", {c['out-of-domain']} out-of-domain" if c["out-of-domain"] else "")
               if calibrated else f"{judged} scored (no calibration)")
    err.print(f"{c['total']} files: {summary}, {c['error']} could not be judged. Report: {where}", highlight=False)
    raise typer.Exit(result.exit_code())


def _second_look(escalation) -> str:
    """The status line's words for the cascade's last stage (none without one)."""
    if escalation is None:
        return ""
    return f", second look ({escalation.projector.get('num_steps')} steps) for what stays uncertain"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _line(row: dict) -> str:
    path = escape(row["path"])
    if row["status"] == "error":
        return f"[red]error[/]      {path}: {escape(row['error'] or '')}"
    v = row["verdict"]
    if v in ("insufficient", "out-of-domain"):
        return f"[{VERDICT_STYLE[v]}]{v}[/] {path}: {escape((row.get('notes') or ['?'])[-1])}"
    f = row["features"] or {}
    p = "" if row["probability"] is None else f"p={row['probability']:.3f}  "
    style = VERDICT_STYLE.get(v, "dim")
    how = "  (encoder's guess)" if row.get("steps") == 0 else ""
    score = f"LPIPS {f['lpips']:.4f}" if "lpips" in f else f"PSNR {f.get('psnr', float('nan')):.1f} dB"
    return f"[{style}]{(v or 'scored'):<10}[/] {p}{score}  {path}{how}"
