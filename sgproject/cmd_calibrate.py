"""`sgproject calibrate`: fit the decision 'generated or real' for one model, projector setting and LPIPS network.

Generated images come from fresh seeds, starting at GENERATED_SEED_BASE (+ --seed): far from the seeds that
`generate`, the samples and the tests use. They are rendered with per-seed random noise (as
generator.render.generate_images does): generators in the wild are run with random noise as often as with their
stored maps, and the projector knows neither (it starts from fresh noise), so the stored maps are no easier a case.
They are quantised to uint8 exactly as a saved PNG is, so they match what a user has on disk.

Real images are prepared as `detect` prepares its inputs (read_rgb, then fit_to_resolution or align_face, and the
source's degradation re-applied to the reconstruction); with --align the generated images are aligned too, as
`detect --align` would align them. Both classes are projected with one ProjectorConfig and one seed, in shared
batches (an image's result does not depend on its batch), and the calibration is fitted by detectors.calibration.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from sgproject.app import app, err, fail, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar

GENERATED_SEED_BASE = 1_000_000  # first seed of the generated images (plus --seed)


def _write_csv_atomic(path: Path, header: list[str], rows: list[list]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


@app.command(rich_help_panel="Forensics")
@handle_errors
def calibrate(
    real: Path = typer.Option(..., "--real", help="Folder of real images (searched recursively)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Calibration JSON to write; the plot (.png) and the "
                                  "per-image features (.features.csv) are written beside it."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    n_generated: int = typer.Option(200, "--n-generated", min=2, help="Generated images (fresh seeds)."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Projection steps; detection must use the same."),
    seed: int = typer.Option(0, "--seed", min=0, help="Projection seed; also offsets the generated seeds."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images optimised at once (default: auto)."),
    early_stop: int = typer.Option(0, "--early-stop", min=0, help="Stop an image after N steps without improvement (0: off)."),
    align: bool = typer.Option(False, "--align", help="Align faces FFHQ-style, generated and real alike "
                               "(detection must align too)."),
    wplus: bool = typer.Option(False, "--wplus", help="Also project into W+ and use its distance as a feature."),
    kind: str = typer.Option("logistic", "--kind", help="logistic (all features) or threshold (on LPIPS alone)."),
    amp: bool = typer.Option(False, "--amp", help="bfloat16 autocast on CUDA (detection must use it too)."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="VGG16 weights for LPIPS (torchvision .pth)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
) -> None:
    """Calibrate detection for a model: project generated images (fresh seeds) and real ones, fit P(generated).

    Writes OUT (JSON), OUT's stem + .png (ROC and histograms) and + .features.csv (every image's features), and
    prints AUC and true-positive rates at 1 % and 5 % false positives, on the calibration data and
    cross-validated.

    Examples:

      sgproject calibrate --real photos/ --out calib/portraits-64.json

      sgproject calibrate --model ffhq.pkl --real ffhq-real/ --align --steps 500 --out ffhq-calib.json
    """
    from detectors.align import align_face
    from detectors.calibration import fit_calibration, plot_calibration
    from detectors.degrade import degradation_of
    from detectors.images import ImageLoadError, find_images, fit_to_resolution, read_rgb, to_tensor
    from detectors.scoring import FEATURES, score_batch
    from generator import load_generator
    from generator.render import generate_images
    from projector.perceptual import load_perceptual
    from projector.project import ProjectorConfig, auto_batch_size

    if kind not in ("logistic", "threshold"):
        fail(f"--kind must be logistic or threshold, got {kind!r}")
    if out_path.suffix.lower() in (".png", ".csv"):
        fail(f"--out names the calibration JSON, not {out_path.suffix}: e.g. {out_path.with_suffix('.json')}")
    if not real.is_dir():
        fail(f"--real {real}: no such folder" if not real.exists() else f"--real {real}: not a folder")
    candidates, skipped = find_images([real])
    for path, reason in skipped:
        err.print(f"[yellow]skipped[/] {path}: {reason}", highlight=False)
    if not candidates:
        fail(f"no images found under {real}")
    plot_path = out_path.with_suffix(".png")
    csv_path = out_path.with_name(out_path.stem + ".features.csv")

    dev = pick_device(device)
    G, info = load_generator(model, dev)
    res = G.img_resolution
    perceptual = load_perceptual(vgg_weights, dev, warn=lambda m: err.print(f"[bold yellow]warning:[/] {m}"))
    cfg = ProjectorConfig(num_steps=steps, early_stop=early_stop, amp=amp)
    err.print(f"model [bold]{info.name}[/] ({res}px, sha256 {info.sha256[:12]}), {perceptual.identity}, "
              f"{steps} steps, on {dev}", highlight=False)

    # Real images first: a bad file is reported before minutes of optimisation. They are prepared exactly as
    # `detect` prepares its inputs (detectors.batch.Detector.prepare), so the features mean the same thing.
    reals: list[tuple[str, object, object]] = []  # (source, uint8 [R, R, 3], Degradation or None)
    for path in candidates:
        try:
            rgb = read_rgb(path)
        except ImageLoadError as e:
            err.print(f"[red]skipped[/] {path}: {e}", highlight=False)
            continue
        if align:
            a = align_face(rgb.pixels, res)
            if a.warning:
                err.print(f"[yellow]{path}: {a.warning}[/]", highlight=False)
            reals.append((str(path), a.image, degradation_of(rgb, res, aligned=True)))
        else:
            reals.append((str(path), fit_to_resolution(rgb.pixels, res), degradation_of(rgb, res)))
    if len(reals) < 2:
        fail(f"{len(reals)} readable image(s) under {real}: a calibration needs at least 2 real images")
    if len(reals) < 100:
        err.print(f"[yellow]note:[/] {len(reals)} real images: a false-positive rate below {1 / len(reals):.1%} "
                  "cannot be measured; use 100 or more for a calibration you will rely on", highlight=False)

    seeds = list(range(GENERATED_SEED_BASE + seed, GENERATED_SEED_BASE + seed + n_generated))
    with progress_bar() as bar:
        task = bar.add_task("generating", total=len(seeds))
        gens = []  # (source, uint8 [R, R, 3], None: a PNG at the model's size has no path to re-apply)
        for s, arr in generate_images(G, seeds, noise_mode="random", callback=lambda k: bar.advance(task, k)):
            gens.append((f"seed {s}", align_face(arr, res).image if align else arr, None))

    items = gens + reals  # [(source, uint8 [R, R, 3], Degradation or None)]
    bs = batch_size or auto_batch_size(G, dev, len(items))
    passes = 2 if wplus else 1
    scores = []
    logging.getLogger("projector").setLevel(logging.WARNING)
    with progress_bar() as bar:
        task = bar.add_task("projecting", total=len(items) * steps * passes)
        for start in range(0, len(items), bs):
            chunk = items[start : start + bs]
            base = bar.tasks[task].completed
            state = {"pass": 0, "last": 0}

            def on_step(step, total, active, base=base, k=len(chunk), state=state):
                if step < state["last"]:  # the W+ projection started
                    state["pass"] += 1
                state["last"] = step
                bar.update(task, completed=base + (state["pass"] * total + step) * k,
                           description=f"projecting ({active} optimising)")

            scores += score_batch(G, to_tensor([c[1] for c in chunk]), config=cfg, perceptual=perceptual,
                                  seed=seed, device=dev, wplus=wplus, degradations=[c[2] for c in chunk],
                                  callback=on_step)
            bar.update(task, completed=base + len(chunk) * steps * passes)

    feats = [s.features for s in scores]
    gen_feats, real_feats = feats[: len(gens)], feats[len(gens) :]
    features = FEATURES + (("lpips_wplus",) if wplus else ())
    cal = fit_calibration(
        gen_feats, real_feats, kind=kind, features=features, model_sha256=info.sha256, model_name=info.name,
        projector=cfg.to_dict(), projector_fingerprint=cfg.fingerprint(), perceptual=perceptual.identity,
        align=align, real_source=str(real), generated_seeds=f"{seeds[0]}-{seeds[-1]}", seed=seed,
    )
    cal.save(out_path)
    plot_calibration(cal, gen_feats, real_feats, plot_path)
    probs = cal.probabilities(feats)
    header = ["class", "source", *cal.features, *[f for f in features if f not in cal.features],
              "probability", "verdict"]
    rows = []
    for i, ((source, _, _), f) in enumerate(zip(items, feats)):
        cls = "generated" if i < len(gens) else "real"
        rows.append([cls, source, *[f.get(k) for k in header[2:-2]], float(probs[i]), cal.verdict(float(probs[i]))])
    _write_csv_atomic(csv_path, header, rows)

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
    for p in (out_path, plot_path, csv_path):
        out.print(str(p), highlight=False)
