"""`sgproject calibrate`: fit the decision 'generated or real' for one model, projector setting and LPIPS network.

The work (fresh generated images, real ones prepared as `detect` prepares them, projection, fit, plot, features CSV)
is detectors.calibrate's; this command parses, loads the model and renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from sgproject.app import app, err, fail, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


@app.command(rich_help_panel="Forensics")
@handle_errors
def calibrate(
    real: Optional[Path] = typer.Option(None, "--real", help="Folder of real images (searched recursively; "
                                        "subfolders are groups of their own)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Calibration JSON to write; the plot (.png) and the "
                                  "per-image features (.features.csv) are written beside it."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    n_generated: int = typer.Option(200, "--n-generated", min=2, help="Generated images (fresh seeds)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Projection steps; detection must use the "
                                        "same (default: 25 from an encoder's guess, 1000 from w_avg)."),
    fast: bool = typer.Option(False, "--fast", help="Calibrate fast triage (`detect --fast`): the encoder's guess "
                              "alone, no steps."),
    encoder: Optional[Path] = typer.Option(None, "--encoder", help="Start each projection at this encoder's guess "
                                           "(default: the model's bundled encoder, if it has one)."),
    no_encoder: bool = typer.Option(False, "--no-encoder", help="Start at w_avg (the paper) even when the model "
                                    "has an encoder."),
    seed: int = typer.Option(0, "--seed", min=0, help="Projection seed; also offsets the generated seeds."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images optimised at once (default: auto)."),
    early_stop: int = typer.Option(0, "--early-stop", min=0, help="Stop an image after N steps without improvement (0: off)."),
    geometry: Optional[float] = typer.Option(None, "--geometry", min=0.0, max=0.49, help="Also search a zoom and "
                                             "shift of the rendering, each at most this fraction of the half-width, "
                                             "so that crops of generated images are reproduced (default: 0.1 "
                                             "from an encoder's guess with steps, else 0)."),
    align: bool = typer.Option(False, "--align", help="Align faces FFHQ-style, generated and real alike "
                               "(detection must align too)."),
    wplus: bool = typer.Option(False, "--wplus", help="Also project into W+ and use its distance as a feature."),
    kind: str = typer.Option("logistic", "--kind", help="logistic (all features) or threshold (on LPIPS alone)."),
    hard_negatives: bool = typer.Option(True, "--hard-negatives/--clean-only", help="Also calibrate on degraded "
                                        "real images (blur, soft, denoised, JPEG 50-90) and post-processed "
                                        "generated ones (JPEG, resize, crop, brightness, noise, truncation, stored "
                                        "noise), one variant per image in turn; the verdict bands hold in every such "
                                        "group. Subfolders of --real are groups too."),
    features: Optional[str] = typer.Option(None, "--features", help="Comma-separated features of the logistic "
                                           "model (default: lpips,psnr,w_typicality,noise_gaussianity). Also: "
                                           "lpips_ref_flip, lpips_ref_guess (complexity references; need an "
                                           "encoder), contrast, detail, lpips_wplus (with --wplus)."),
    refit: Optional[Path] = typer.Option(None, "--refit", help="Fit again, without projecting, on the features "
                                         "measured for this earlier calibration (its .features.csv): with other "
                                         "--features or --kind. Everything else is the earlier calibration's."),
    max_miss: Optional[float] = typer.Option(None, "--max-miss", min=0.0001, max=0.1, help="The share of the "
                                             "generated images the 'real' band may take (out of fold, in every "
                                             "group; default 0.0025: a quarter of a 1% target, since `detect`'s "
                                             "cascade has three stages that can say 'real'). With --refit: "
                                             "default the earlier calibration's."),
    amp: bool = typer.Option(False, "--amp", help="bfloat16 autocast on CUDA (detection must use it too)."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights for LPIPS (torchvision .pth)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
) -> None:
    """Calibrate detection for a model: project generated images (fresh seeds) and real ones, fit P(generated).

    Writes OUT (JSON), OUT's stem + .png (ROC and histograms) and + .features.csv (every image's features), and
    prints AUC and true-positive rates at 1 % and 5 % false positives, on the calibration data and
    cross-validated, and the verdicts per group of hard cases. By default image k of each class is one of its hard
    cases in turn (real: blurred, softened, denoised, JPEG; generated: JPEG, resized, cropped, brighter, noisy,
    truncated), and the verdict bands are chosen to hold in every group; images flatter than nearly all of them
    will be 'insufficient'. --refit fits again on an earlier run's features, without projecting.

    Examples:

      sgproject calibrate --real photos/ --out calib/portraits-64.json

      sgproject calibrate --real photos/ --fast --out calib/portraits-64.fast.json

      sgproject calibrate --model ffhq.pkl --real ffhq-real/ --align --steps 500 --out ffhq-calib.json

      sgproject calibrate --refit calib/portraits-64.json --features lpips,psnr,lpips_ref_flip,detail --out b.json

      sgproject calibrate --refit calib/portraits-64.deep.json --max-miss 0.0002 --out calib/deep-strict.json
    """
    # local: keeps --help fast
    from detectors.batch import DEFAULT_GEOMETRY, DEFAULT_STEPS_PAPER, ENCODER_STEPS
    from detectors.calibrate import CalibrateSettings, calibrate as run_calibration
    from detectors.calibration import REF_PREFIX
    from detectors.content import MEASURES
    from detectors.scoring import FEATURES, REFERENCES
    from detectors.report import projection_start
    from generator import load_generator
    from generator.metrics.lpips import load_perceptual
    from projector.encoder import encoder_for
    from projector.project import projector_config

    if kind not in ("logistic", "threshold"):
        fail(f"--kind must be logistic or threshold, got {kind!r}")
    if out_path.suffix.lower() in (".png", ".csv"):
        fail(f"--out names the calibration JSON, not {out_path.suffix}: e.g. {out_path.with_suffix('.json')}")
    feats = tuple(f.strip() for f in features.split(",") if f.strip()) if features is not None else None
    known = set(FEATURES) | {REF_PREFIX + r for r in REFERENCES} | set(MEASURES) | {"lpips_wplus"}
    if feats is not None and (not feats or set(feats) - known):
        fail(f"--features: unknown {', '.join(sorted(set(feats) - known)) or '(none given)'}; known: "
             f"{', '.join(sorted(known))}")
    if refit is not None:
        if real is not None:
            fail("--refit fits on the features of an earlier run: it takes no --real")
        if refit.resolve() == out_path.resolve():
            fail("--refit and --out name the same file: write the refit beside it")
        from detectors.calibrate import refit as refit_calibration

        cal, *paths = refit_calibration(refit, out_path, features=feats, kind=kind, max_miss=max_miss)
        _print_calibration(cal, f"refit of {refit}")
        for p in paths:
            out.print(str(p), highlight=False)
        return
    if real is None:
        fail("--real FOLDER is required (or --refit an earlier calibration)")
    candidates = _real_images(real)

    if no_encoder and (encoder or fast):
        fail(f"--no-encoder contradicts {'--fast' if fast else '--encoder'}")
    if fast and steps not in (None, 0):
        fail(f"--fast projects no steps; it cannot be combined with --steps {steps}")

    dev = pick_device(device)
    G, info = load_generator(model, dev)
    E = None if no_encoder else encoder_for(info, encoder, dev)
    if E is None and (fast or steps == 0):
        fail(f"{'--fast' if fast else '--steps 0'} needs an encoder, and {info.name} has none: pass --encoder FILE "
             "(make one with `sgproject train-encoder`)")
    steps = 0 if fast else steps if steps is not None else ENCODER_STEPS if E is not None else DEFAULT_STEPS_PAPER
    if geometry is None:
        geometry = DEFAULT_GEOMETRY if E is not None and steps > 0 else 0.0
    elif geometry and steps == 0:
        fail("--geometry is searched by the projection's steps; with no steps it cannot be used")
    perceptual = load_perceptual(vgg_weights, dev, warn=lambda m: err.print(f"[bold yellow]warning:[/] {m}"))
    if feats and "lpips_wplus" in feats and not wplus:
        fail("--features lpips_wplus needs --wplus")
    if feats and any(f.startswith(REF_PREFIX) for f in feats) and E is None:
        fail("the complexity references (lpips_ref_*) are the encoder's reconstructions: they need an encoder")
    settings = CalibrateSettings(config=projector_config(E, num_steps=steps, early_stop=early_stop, amp=amp,
                                                          geometry=geometry),
                                 n_generated=n_generated, seed=seed, batch_size=batch_size, align=align,
                                 wplus=wplus, kind=kind, encoder=E, hard_negatives=hard_negatives, features=feats,
                                 references=tuple(REFERENCES) if E is not None else (),
                                 **({"max_miss": max_miss} if max_miss is not None else {}))
    err.print(f"model [bold]{info.name}[/] ({G.img_resolution}px, sha256 {info.sha256[:12]}), "
              f"{perceptual.identity}, {steps} steps {projection_start(settings.config.to_dict())}, on {dev}",
              highlight=False)
    with progress_bar() as bar:
        run = run_calibration(
            G, info, perceptual, candidates, out_path, settings=settings, device=dev, real_source=str(real),
            on_skipped=lambda path, why: err.print(f"[red]skipped[/] {path}: {why}", highlight=False),
            on_note=lambda m: err.print(f"[yellow]{escape(m)}[/]", highlight=False), progress=_progress(bar),
        )
    _print_summary(run, real)


def _real_images(real: Path) -> list[Path]:
    """The image files under --real (the skipped ones reported); a clear failure when there are none."""
    from detectors.images import find_images

    if not real.is_dir():
        fail(f"--real {real}: no such folder" if not real.exists() else f"--real {real}: not a folder")
    candidates, skipped = find_images([real])
    for path, reason in skipped:
        err.print(f"[yellow]skipped[/] {path}: {reason}", highlight=False)
    if not candidates:
        fail(f"no images found under {real}")
    return candidates


def _progress(bar: Progress):
    """detectors.calibrate's progress callback, drawn as one bar per stage."""
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int, detail: str | None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total, **({"description": detail} if detail else {}))

    return progress


def _print_summary(run, real: Path) -> None:
    """The fitted decision's figures on the calibration data and held out, its verdict bands, the files written."""
    _print_calibration(run.calibration, str(real))
    for p in (run.json_path, run.plot_path, run.csv_path):
        out.print(str(p), highlight=False)


def _print_calibration(cal, real: str) -> None:
    m, tr = cal.metrics, cal.metrics["train"]
    table = Table(show_header=True, box=None, header_style="bold")
    table.add_column("")
    table.add_column("calibration data", justify="right")
    table.add_column(m["estimate"], justify="right")
    table.add_row("AUC", _fmt(tr["auc"]), _fmt(m["auc"]))
    table.add_row("TPR at 1% FPR", _fmt(tr["tpr_at_1fpr"]), _fmt(m["tpr_at_1fpr"]))
    table.add_row("TPR at 5% FPR", _fmt(tr["tpr_at_5fpr"]), _fmt(m["tpr_at_5fpr"]))
    rates = m["verdict_rates"]
    table.add_row("real called generated", _fmt(tr["verdict_rates"]["real"]["generated"]),
                  _fmt(rates["real"]["generated"]))
    table.add_row("generated called real", _fmt(tr["verdict_rates"]["generated"]["real"]),
                  _fmt(rates["generated"]["real"]))
    out.print(f"calibration: {cal.kind} on {', '.join(cal.features)}; {cal.n_generated} generated "
              f"(seeds {cal.generated_seeds}), {cal.n_real} real ({real})", highlight=False)
    out.print(table)
    line = f"verdicts: generated if P >= {cal.t_generated:.4g}, real if P <= {cal.t_real:.4g}, else uncertain"
    if cal.threshold is not None:
        line += f" (generated if LPIPS <= {cal.threshold:.4g})"
    out.print(line, highlight=False)
    groups = m.get("groups")
    if groups:  # held out, per group: what a desk meets
        gt = Table(show_header=True, box=None, header_style="bold", title=f"per group ({m['estimate']})")
        for col in ("class", "group", "n", "generated", "uncertain", "real"):
            gt.add_column(col, justify="left" if col in ("class", "group") else "right")
        for cls in ("real", "generated"):
            for g, r in groups[cls].items():
                gt.add_row(cls, g, str(r["n"]), f"{r['generated']:.0%}", f"{r['uncertain']:.0%}", f"{r['real']:.0%}")
        out.print(gt)
    if cal.content:
        th = cal.content["thresholds"]
        out.print("content check: 'insufficient' below " + " or ".join(f"{k} {v:.3g}" for k, v in th.items()),
                  highlight=False)


@app.command("calibrate-domain", rich_help_panel="Forensics")
@handle_errors
def calibrate_domain(
    real: Path = typer.Option(..., "--real", help="Folder of real images of the model's domain (searched "
                              "recursively): what the model is meant to judge, e.g. held-out training images."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Domain check to write (.safetensors)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    n_generated: int = typer.Option(600, "--n-generated", min=10, help="The model's own samples to fit on too."),
    feature_net: Optional[str] = typer.Option(None, "--feature-net", help="inception (needs its weights), "
                                              "portraits or random (default: the one known for the model)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
) -> None:
    """Fit where the model's domain ends: images far outside it get the verdict 'out-of-domain' from `detect`.

    Embeds the real images (each, in turn, clean or blurred, softened, denoised, JPEG) and the model's own samples
    (clean, JPEG, resized, cropped, brighter, noisy) with a feature network, fits a Gaussian and sets the threshold
    on the Mahalanobis distance at the 99.5th percentile of held-out (cross-validated) distances: about 1 in 200
    new in-domain images is set aside. Prints each group's median and 99th percentile distance.

    Examples:

      sgproject calibrate-domain --real portraits/ --out checks/portraits-64.domain.safetensors

      sgproject detect photos/ --domain checks/portraits-64.domain.safetensors
    """
    from detectors.calibrate import calibrate_domain as run_domain
    from generator import load_generator

    candidates = _real_images(real)
    dev = pick_device(device)
    G, info = load_generator(model, dev)
    with progress_bar() as bar:
        check = run_domain(G, info, candidates, out_path, feature_net=feature_net, n_generated=n_generated,
                           device=dev, progress=_progress(bar),
                           on_skipped=lambda path, why: err.print(f"[red]skipped[/] {path}: {why}", highlight=False))
    table = Table(title=f"held-out distances ({check.identity}); threshold {check.threshold:.2f}")
    for col in ("group", "n", "median", "99%", "over"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for g, v in check.groups.items():
        table.add_row(g, str(v["n"]), f"{v['median']:.2f}", f"{v['q99']:.2f}", str(v["over"]))
    out.print(table)
    out.print(f"fitted on {check.fitted_on}")
    out.print(str(out_path), highlight=False)
