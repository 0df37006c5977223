"""Calibrating detection for one model, projector setting and LPIPS network: project images the model generated
and real ones, fit P(generated), write the calibration, its plot and every image's features
(docs/ARCHITECTURE.md, "Detection and calibration").

Generated images come from fresh seeds, starting at GENERATED_SEED_BASE (+ the seed): far from the seeds that
`generate`, the samples and the tests use. They are rendered with per-seed random noise (as
generator.render.generate_images does): generators in the wild are run with random noise as often as with their
stored maps, and the projector knows neither (it starts from fresh noise), so the stored maps are no easier a case.
They are quantised to uint8 exactly as a saved PNG is, so they match what a user has on disk.

Real images are prepared as detection prepares its inputs (detectors.batch.prepare_image: read, then centre crop
and resize or face alignment, and the source's degradation re-applied to the reconstruction); with `align` the
generated images are aligned too, as detection with alignment would align them. Both classes are projected with
one ProjectorConfig and one seed, in shared batches (an image's result does not depend on its batch), and the
calibration is fitted by detectors.calibration.

    <out>.json           the calibration (Calibration.save)
    <out>.png            ROC curves and histograms (plot_calibration)
    <out>.features.csv   class, source, every feature, probability and verdict of each image
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from detectors.align import align_face
from detectors.batch import prepare_image
from detectors.calibration import Calibration, CalibrationError, fit_calibration, plot_calibration
from detectors.degrade import Degradation
from detectors.images import ImageLoadError
from detectors.scoring import FEATURES, ImageScore, score_batch
from generator.checkpoint import ModelInfo
from generator.metrics.lpips import PerceptualDistance
from generator.networks import Generator
from generator.render import generate_images
from generator.util.files import atomic_path
from generator.util.imaging import to_tensor
from projector.encoder import Encoder
from projector.project import ProjectorConfig, auto_batch_size

GENERATED_SEED_BASE = 1_000_000  # first seed of the generated images (plus the seed)
MIN_REAL = 2  # real images a calibration needs at all
ADVISED_REAL = 100  # below this, a false-positive rate under 1% cannot be measured

# progress(stage, done, total, detail): stage 'generating' (images) or 'projecting' (image-steps, both passes with
# W+); detail is a description of the moment ('projecting (3 optimising)') or None.
ProgressFn = Callable[[str, int, int, str | None], None]


@dataclass
class CalibrateSettings:
    config: ProjectorConfig  # the projector's settings; detection must use the same
    n_generated: int = 200  # generated images, from fresh seeds
    seed: int = 0  # the projection's seed; also offsets the generated seeds
    batch_size: int | None = None  # images optimised at once; None: auto_batch_size for the device
    align: bool = False  # align faces FFHQ-style, generated and real alike (detection must align too)
    wplus: bool = False  # also project into W+ and use its distance as a feature
    kind: str = "logistic"  # 'logistic' (all features) or 'threshold' (LPIPS alone)
    encoder: Encoder | None = None  # with config.init='encoder' (ProjectorConfig.using_encoder): the start's guesser

    def seeds(self) -> list[int]:
        start = GENERATED_SEED_BASE + self.seed
        return list(range(start, start + self.n_generated))


@dataclass
class CalibrationImage:
    source: str  # 'seed N' for a generated image, else the real file's path
    generated: bool  # the class
    pixels: np.ndarray  # uint8 [R, R, 3]: what is projected
    degradation: Degradation | None  # the source's path, re-applied to the reconstruction (None for generated)


@dataclass
class CalibrationRun:
    calibration: Calibration  # the fitted calibration, as saved to json_path
    images: list[CalibrationImage]  # generated images first, then the real ones
    features: list[dict]  # each image's features (detectors.scoring), in the order of `images`
    probabilities: np.ndarray  # [N] P(generated) of each image under the calibration
    json_path: Path  # the calibration
    plot_path: Path  # ROC curves and histograms (PNG)
    csv_path: Path  # every image's features, probability and verdict

    @property
    def n_generated(self) -> int:
        return sum(im.generated for im in self.images)


def output_paths(out_path: Path) -> tuple[Path, Path, Path]:
    """(calibration JSON, plot PNG, features CSV) of the calibration file `out_path`."""
    out_path = Path(out_path)
    return out_path, out_path.with_suffix(".png"), out_path.with_name(out_path.stem + ".features.csv")


def calibrate(
    G: Generator,
    info: ModelInfo,
    perceptual: PerceptualDistance,
    real_paths: Sequence[Path],  # candidate real image files (detectors.images.find_images)
    out_path: str | Path,  # the calibration JSON; the plot and the features CSV are written beside it
    *,
    settings: CalibrateSettings,
    device: torch.device | str = "cpu",
    real_source: str = "",  # where the real images came from, as recorded in the calibration
    on_skipped: Callable[[Path, str], None] | None = None,  # a real file that could not be loaded, and why
    on_note: Callable[[str], None] | None = None,  # an alignment warning, or advice on the number of reals
    progress: ProgressFn | None = None,
) -> CalibrationRun:
    """Load the real images, generate the others, project and score both, fit the calibration and write it, its
    plot and the features CSV. CalibrationError when fewer than 2 real images can be loaded."""
    note = on_note or (lambda _m: None)
    report = progress or (lambda *_a: None)
    res = G.img_resolution
    # Real images first: a bad file is reported before minutes of optimisation.
    reals = []
    for path in real_paths:
        try:
            p = prepare_image(path, res, align=settings.align)
        except ImageLoadError as e:
            if on_skipped:
                on_skipped(path, str(e))
            continue
        if p.alignment is not None and p.alignment.get("warning"):
            note(f"{path}: {p.alignment['warning']}")
        reals.append(CalibrationImage(str(path), False, p.pixels, p.degradation))
    if len(reals) < MIN_REAL:
        raise CalibrationError(f"{len(reals)} readable image(s) under {real_source}: a calibration needs at least "
                               f"{MIN_REAL} real images")
    if len(reals) < ADVISED_REAL:
        note(f"note: {len(reals)} real images: a false-positive rate below {1 / len(reals):.1%} cannot be measured; "
             f"use {ADVISED_REAL} or more for a calibration you will rely on")

    seeds = settings.seeds()
    gens, done = [], 0
    report("generating", 0, len(seeds), None)

    def generated(k: int) -> None:
        nonlocal done
        done += k
        report("generating", done, len(seeds), None)

    for s, arr in generate_images(G, seeds, noise_mode="random", callback=generated):
        # no degradation: a PNG at the model's size has no path to re-apply
        gens.append(CalibrationImage(f"seed {s}", True, align_face(arr, res).image if settings.align else arr, None))

    images = gens + reals
    features = [s.features for s in _score_all(G, perceptual, images, settings, torch.device(device), report)]
    gen_feats, real_feats = features[: len(gens)], features[len(gens) :]
    cal = fit_calibration(
        gen_feats, real_feats, kind=settings.kind, features=_features(settings), model_sha256=info.sha256,
        model_name=info.name, projector=settings.config.to_dict(), projector_fingerprint=settings.config.fingerprint(),
        perceptual=perceptual.identity, align=settings.align, real_source=real_source,
        generated_seeds=f"{seeds[0]}-{seeds[-1]}", seed=settings.seed,
    )
    json_path, plot_path, csv_path = output_paths(Path(out_path))
    cal.save(json_path)
    plot_calibration(cal, gen_feats, real_feats, plot_path)
    probabilities = cal.probabilities(features)
    run = CalibrationRun(cal, images, features, probabilities, json_path, plot_path, csv_path)
    write_features_csv(run, _features(settings))
    return run


def _features(settings: CalibrateSettings) -> tuple[str, ...]:
    return FEATURES + (("lpips_wplus",) if settings.wplus else ())


def _score_all(G: Generator, perceptual: PerceptualDistance, images: list[CalibrationImage],
               settings: CalibrateSettings, device: torch.device, report: ProgressFn) -> list[ImageScore]:
    """detectors.scoring.score_batch over every image in batches, reporting image-steps done."""
    cfg, steps = settings.config, settings.config.num_steps
    bs = settings.batch_size or auto_batch_size(G, device, len(images))
    passes = 2 if settings.wplus else 1
    total = len(images) * steps * passes
    scores, base = [], 0
    report("projecting", 0, total, None)
    for start in range(0, len(images), bs):
        chunk = images[start : start + bs]
        state = {"pass": 0, "last": 0}

        def on_step(step, num_steps, active, base=base, k=len(chunk), state=state):
            if step < state["last"]:  # the W+ projection started
                state["pass"] += 1
            state["last"] = step
            report("projecting", base + (state["pass"] * num_steps + step) * k, total,
                   f"projecting ({active} optimising)")

        scores += score_batch(G, to_tensor([c.pixels for c in chunk]), config=cfg, perceptual=perceptual,
                              seed=settings.seed, device=device, wplus=settings.wplus,
                              degradations=[c.degradation for c in chunk], callback=on_step,
                              encoder=settings.encoder)
        base += len(chunk) * steps * passes
        report("projecting", base, total, None)
    return scores


def write_features_csv(run: CalibrationRun, features: Sequence[str]) -> Path:
    """class, source, the calibration's features, the other features, probability, verdict: one row per image."""
    cal = run.calibration
    header = ["class", "source", *cal.features, *[f for f in features if f not in cal.features],
              "probability", "verdict"]
    with atomic_path(run.csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for im, feats, p in zip(run.images, run.features, run.probabilities):
            w.writerow(["generated" if im.generated else "real", im.source, *[feats.get(k) for k in header[2:-2]],
                        float(p), cal.verdict(float(p))])
    return run.csv_path
