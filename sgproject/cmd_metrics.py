"""`sgproject metrics`: FID, precision/recall and PPL of a generator (the library is `generator.metrics.evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from sgproject.app import app, err, fail, handle_errors, out, pick_device
from sgproject.cmd_generate import MODEL_HELP, progress_bar

# How the library's notices are shown on stderr, by kind (generator.metrics.evaluate.MetricNotice)
NOTICE = {"warning": "[yellow]warning:[/] {}", "note": "note: {}", "skipped": "[yellow]{}[/]"}


def parse_metrics(text: str) -> list[str]:
    """'fid,ppl' -> ['fid', 'ppl'] (order kept, duplicates dropped); exits 2 on an unknown name."""
    from generator.metrics.evaluate import METRICS  # local: keeps --help fast

    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names:
        fail(f"--metrics is empty: give one or more of {', '.join(METRICS)}")
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        fail(f"unknown metric {unknown[0]!r} in --metrics (choose from {', '.join(METRICS)})")
    return list(dict.fromkeys(names))


@app.command(rich_help_panel="Generator")
@handle_errors
def metrics(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Default: portraits-64."),
    data: Optional[str] = typer.Option(
        None, "--data", "-d", help="Real images for FID: a folder, or portraits:N[:SEED]. Not needed for PPL alone."
    ),
    metric_names: str = typer.Option(
        "fid,ppl", "--metrics", help="Comma-separated: fid, pr (precision and recall, in FID's feature space), ppl."
    ),
    n_gen: int = typer.Option(10_000, "--n-gen", min=2, help="Generated images for FID and pr (papers: 50000)."),
    k: int = typer.Option(3, "--k", min=1, help="pr: the nearest neighbour that sets each sample's radius (paper: 3)."),
    n_real: Optional[int] = typer.Option(None, "--n-real", min=2, help="Use the first N real images (default: all)."),
    n_ppl: int = typer.Option(2_000, "--n-ppl", min=1, help="Path samples for PPL (papers: 50000; 10000 is common)."),
    crop: bool = typer.Option(
        False, "--crop/--no-crop", help="PPL on the face region only, as the StyleGAN2 paper does for FFHQ."
    ),
    sampling: str = typer.Option("end", "--sampling", help="PPL paths: end (t=0, StyleGAN2's) or full (t~U(0,1))."),
    trunc: float = typer.Option(1.0, "--trunc", help="Truncation psi for both metrics (1: none, as the papers)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the sampled latents."),
    feature_net: str = typer.Option(
        "inception", "--feature-net",
        help="FID features: inception (torchvision Inception-v3; needs its weights), portraits (the shipped portrait "
        "attribute network: works offline, meaningful for portrait models only) or random (a smoke test, not FID).",
    ),
    inception_weights: Optional[Path] = typer.Option(
        None, "--inception-weights", help="inception_v3_google-0cc3c7bd.pth (default: $SGPROJECT_INCEPTION, then "
        "torchvision's cache, then a download).",
    ),
    vgg_weights: Optional[Path] = typer.Option(
        None, "--vgg-weights", help="VGG16 weights for PPL's LPIPS (default: $SGPROJECT_VGG16, cache, download)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N (default: cuda if available)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Measure a generator: FID and precision/recall against real images, perceptual path length (PPL) in W.

    Precision (are the images realistic?) and recall (is the data covered?) tell low fidelity apart from mode
    dropping, which FID mixes (Kynkaanniemi et al. 2019).

    FID uses torchvision's Inception-v3, not the TF-Inception of the official FID code.

    So FIDs from here are comparable with each other, not with published ones; every result names its network.

    Examples:

      sgproject metrics --model portraits-64 --data portraits:10000 --metrics fid

      sgproject metrics --model ffhq.pkl --metrics ppl --crop --n-ppl 10000

      sgproject metrics --data portraits:5000:1 --feature-net portraits --n-gen 5000 --metrics fid,pr

      sgproject metrics --model tiny --data imgs/ --feature-net random --n-gen 256 --json
    """
    from generator import load_generator  # local: keeps --help fast
    from generator.metrics.evaluate import evaluate
    from generator.metrics.features import FEATURE_NETS
    from generator.metrics.ppl import PPL_SAMPLING

    names = parse_metrics(metric_names)
    if feature_net not in FEATURE_NETS:
        fail(f"--feature-net must be one of {', '.join(FEATURE_NETS)}, got {feature_net!r}")
    if sampling not in PPL_SAMPLING:
        fail(f"--sampling must be one of {', '.join(PPL_SAMPLING)}, got {sampling!r}")
    if data is None and ("fid" in names or "pr" in names):
        fail("FID and pr need real images: give --data FOLDER (or portraits:N), or use --metrics ppl")
    dev = pick_device(device)
    G, info = load_generator(model, dev)
    err.print(f"model [bold]{info.name}[/] ({G.img_resolution}px, sha256 {info.sha256[:12]}) on {dev}", highlight=False)

    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = evaluate(
            G, info, metrics=names, data=data, feature_net=feature_net, inception_weights=inception_weights,
            vgg_weights=vgg_weights, n_gen=n_gen, n_real=n_real, n_ppl=n_ppl, k=k, crop=crop, sampling=sampling,
            truncation_psi=trunc, seed=seed, batch=batch_size, device=dev, progress=on_progress,
            notify=lambda kind, message: err.print(NOTICE[kind].format(message), highlight=False),
        )

    if as_json:
        out.print_json(report.to_json(), highlight=False)  # machine-readable: never colour codes
        return
    table = Table(title=f"{info.name} ({G.img_resolution}px)")
    for col in ("metric", "value", "samples"):
        table.add_column(col)
    table.add_column("network", no_wrap=True)
    notes = []
    if "fid" in report.metrics:
        r = report.metrics["fid"]
        table.add_row("FID", f"{r['fid']:.3f}", f"{r['n_real']} real, {r['n_gen']} gen", r["feature_net"])
        notes.append(f"FID: data {r['data']}, psi {r['truncation_psi']}, noise {r['noise_mode']}, seed {r['seed']}")
    if "pr" in report.metrics:
        r = report.metrics["pr"]
        table.add_row("precision / recall", f"{r['precision']:.3f} / {r['recall']:.3f}",
                      f"{r['n_real']} real, {r['n_gen']} gen, k {r['k']}", r["feature_net"])
    if "ppl" in report.metrics:
        r = report.metrics["ppl"]
        table.add_row("PPL", f"{r['ppl']:.2f}", str(r["n"]), r["perceptual"])
        crop_note = "face crop" if r["crop"] else "no crop"
        notes.append(f"PPL: W, {r['sampling']} sampling, eps {r['epsilon']:g}, {crop_note}, "
                     f"psi {r['truncation_psi']}, seed {r['seed']}")
    out.print(table)
    for note in notes:
        out.print(note, highlight=False)
