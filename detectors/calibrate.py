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

Hard negatives (`hard_negatives`, on by default; detectors/variants.py): the real class also holds degraded real
images and the generated class post-processed generated ones, so that the verdict bands hold for what a desk
meets, not only for clean files. Image k of a class gets variant k of a cycle (the clean image first, then
`REAL_HARD` or `GENERATED_HARD`), saved as a file (a JPEG variant as a .jpg) and prepared exactly as detection
prepares a file; the generated images are also rendered in turn with random and stored noise maps and at
truncation 1, 0.75 and 0.5 (`GENERATED_RENDERS`). Each image's group is its variant (with the first-level
subfolder of the real folder, when there are subfolders: `ood:blur1`), and the bands are chosen so that they
hold in every group (detectors.calibration.grouped_thresholds). The same images also set the content check
(detectors/content.py): images flatter than nearly all of them are 'insufficient'.

`calibrate_domain` makes the other check detection applies before projecting (detectors/domain.py): in-domain
real images and the model's samples, degraded in the same cycles, set where the model's domain ends.

    <out>.json           the calibration (Calibration.save)
    <out>.png            ROC curves and histograms (plot_calibration)
    <out>.features.csv   class, group, source, every feature, probability and verdict of each image
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from detectors.align import align_face
from detectors.batch import prepare_image
from detectors.calibration import (MAX_MISS, REF_PREFIX, Calibration, CalibrationError, fit_calibration,
                                   plot_calibration)
from detectors.content import MIN_IMAGES, content_measures, fit_content_check, insufficient_reason
from detectors.degrade import Degradation
from detectors.domain import FEATURE_NET_OF, DomainCheck, DomainError, embed, fit_domain_check
from detectors.images import ImageLoadError
from detectors.scoring import FEATURES, ImageScore, score_batch
from detectors.variants import GENERATED_HARD, REAL_HARD, write_variant
from generator.checkpoint import ModelInfo
from generator.metrics.features import load_feature_network
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
REAL_CYCLE = ("clean", *REAL_HARD)  # hard negatives: real image k gets variant k % len
GENERATED_CYCLE = ("clean", *GENERATED_HARD)  # ... generated image k
DOMAIN_SEED_BASE = 20_000_000  # first seed of the generated images of a domain check (calibrate_domain)
GENERATED_RENDERS = (("random", 1.0), ("const", 1.0), ("random", 0.75), ("random", 0.5), ("const", 0.5))

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
    hard_negatives: bool = True  # degraded reals and post-processed generated images too (module docstring)
    features: tuple[str, ...] | None = None  # the logistic model's features; None: FEATURES (+ lpips_wplus)
    references: tuple[str, ...] = ()  # complexity references to measure (detectors.scoring.REFERENCES); those
    # named in `features` are measured anyway
    max_miss: float = MAX_MISS  # the share of generated images the 'real' band may take (detectors.calibration)

    def seeds(self) -> list[int]:
        start = GENERATED_SEED_BASE + self.seed
        return list(range(start, start + self.n_generated))


@dataclass
class CalibrationImage:
    source: str  # 'seed N' for a generated image, else the real file's path
    generated: bool  # the class
    pixels: np.ndarray  # uint8 [R, R, 3]: what is projected
    degradation: Degradation | None  # the source's path, re-applied to the reconstruction (None for generated)
    group: str = "clean"  # the variant ('clean', 'blur1', ...), after the real folder's subfolder when it has them


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
    with tempfile.TemporaryDirectory(prefix="sgproject-calibrate-") as tmp:
        return _calibrate(G, info, perceptual, real_paths, out_path, settings=settings, device=device,
                          real_source=real_source, on_skipped=on_skipped, on_note=on_note, progress=progress,
                          tmp=Path(tmp))


def _calibrate(G, info, perceptual, real_paths, out_path, *, settings, device, real_source, on_skipped, on_note,
               progress, tmp: Path) -> CalibrationRun:
    note = on_note or (lambda _m: None)
    report = progress or (lambda *_a: None)
    res = G.img_resolution
    root = Path(real_source) if real_source and Path(real_source).is_dir() else None
    subfolders = root is not None and any(len(Path(p).relative_to(root).parts) > 1 for p in real_paths
                                          if Path(p).is_relative_to(root))
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
        folder = ""
        if subfolders and Path(path).is_relative_to(root):
            parts = Path(path).relative_to(root).parts
            folder = (parts[0] if len(parts) > 1 else ".") + ":"
        k = len(reals)
        name = REAL_CYCLE[k % len(REAL_CYCLE)] if settings.hard_negatives else "clean"
        if name != "clean":
            p = _variant_of(p.pixels, name, tmp / f"real-{k}", k, res, settings.align)
        reals.append(CalibrationImage(str(path) + ("" if name == "clean" else f" ({name})"), False, p.pixels,
                                      p.degradation, folder + name))
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

    renders = GENERATED_RENDERS if settings.hard_negatives else (("random", 1.0),)
    cycle = GENERATED_CYCLE if settings.hard_negatives else ("clean",)
    rendered: dict[int, tuple[np.ndarray, str]] = {}
    for r, (noise_mode, psi) in enumerate(renders):  # seed k: render k // len(cycle) % len(renders)
        mine = [s for k, s in enumerate(seeds) if (k // len(cycle)) % len(renders) == r]
        for s, arr in generate_images(G, mine, noise_mode=noise_mode, truncation_psi=psi, callback=generated):
            rendered[s] = arr, "" if (noise_mode, psi) == ("random", 1.0) else f", noise {noise_mode}, psi {psi}"
    for k, s in enumerate(seeds):
        arr, how = rendered[s]
        name = cycle[k % len(cycle)]
        if name == "clean":
            # no degradation: a PNG at the model's size has no path to re-apply
            p_px, deg = (align_face(arr, res).image if settings.align else arr), None
        else:
            p = _variant_of(arr, name, tmp / f"generated-{k}", k, res, settings.align)
            p_px, deg = p.pixels, p.degradation
        gens.append(CalibrationImage(f"seed {s}{how}" + ("" if name == "clean" else f" ({name})"), True, p_px, deg,
                                     name))

    # the content check: set by every image, applied to every image (those it sets aside are never scored)
    measures = [content_measures(im.pixels) for im in gens + reals]
    content = fit_content_check(measures) if len(measures) >= MIN_IMAGES else None
    if content is None:
        note(f"fewer than {MIN_IMAGES} images: no content check (flat images will not be set aside as "
             "'insufficient')")
    keep = [insufficient_reason(m, content) is None for m in measures]
    flat = len(keep) - sum(keep)
    if flat:
        note(f"{flat} image(s) are flatter than the content check allows (they would be 'insufficient'): "
             "left out of the fit")
    gens = [im for im, k in zip(gens, keep[: len(gens)]) if k]
    reals = [im for im, k in zip(reals, keep[len(keep) - len(reals) :]) if k]

    images = gens + reals
    features = [s.features for s in _score_all(G, perceptual, images, settings, torch.device(device), report)]
    gen_feats, real_feats = features[: len(gens)], features[len(gens) :]
    cal = fit_calibration(
        gen_feats, real_feats, kind=settings.kind, features=_features(settings), model_sha256=info.sha256,
        model_name=info.name, projector=settings.config.to_dict(), projector_fingerprint=settings.config.fingerprint(),
        perceptual=perceptual.identity, align=settings.align, real_source=real_source,
        generated_seeds=f"{seeds[0]}-{seeds[-1]}", seed=settings.seed,
        gen_groups=[im.group for im in gens] if settings.hard_negatives else None,
        real_groups=[im.group for im in reals] if settings.hard_negatives else None, content=content,
        max_miss=settings.max_miss,
    )
    json_path, plot_path, csv_path = output_paths(Path(out_path))
    cal.save(json_path)
    plot_calibration(cal, gen_feats, real_feats, plot_path)
    probabilities = cal.probabilities(features)
    run = CalibrationRun(cal, images, features, probabilities, json_path, plot_path, csv_path)
    write_features_csv(run, list(dict.fromkeys(k for f in features for k in f)))  # every feature measured
    return run


def _features(settings: CalibrateSettings) -> tuple[str, ...]:
    if settings.features is not None:
        return tuple(settings.features)
    return FEATURES + (("lpips_wplus",) if settings.wplus else ())


def _references(settings: CalibrateSettings) -> tuple[str, ...]:
    named = [f[len(REF_PREFIX):] for f in _features(settings) if f.startswith(REF_PREFIX)]
    return tuple(dict.fromkeys([*settings.references, *named]))


def _variant_of(pixels: np.ndarray, name: str, stem: Path, k: int, res: int, align: bool):
    """Variant `name` of an image, saved as a file and prepared as detection prepares a file (Prepared)."""
    path = write_variant(pixels, name, stem, np.random.default_rng(k))
    return prepare_image(path, res, align=align)


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
                              encoder=settings.encoder, references=_references(settings))
        base += len(chunk) * steps * passes
        report("projecting", base, total, None)
    return scores


def refit(calibration_path: str | Path, out_path: str | Path, *, features: Sequence[str] | None = None,
          kind: str | None = None, max_miss: float | None = None) -> tuple[Calibration, Path, Path, Path]:
    """Fit a calibration again on the features an earlier run measured (its .features.csv beside it), without
    projecting anything: other features, another kind, or another share of generated images for the 'real' band
    (None: the earlier calibration's, or today's default if it recorded none). Model, projector, perceptual
    network, alignment, groups, seeds and content check are the earlier calibration's; `refit_of` records its file
    and creation time.
    Returns (calibration, JSON, plot, features CSV) as written."""
    old = Calibration.load(calibration_path)
    old_csv = output_paths(Path(calibration_path))[2]
    if not old_csv.is_file():
        raise CalibrationError(f"{old_csv}: no such file; a refit needs the features the calibration was made from")
    records = []
    with open(old_csv, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            feats = {k: float(v) for k, v in rec.items() if k not in CSV_META and v not in ("", None)}
            records.append((rec["class"] == "generated", rec.get("group") or "clean", rec["source"], feats))
    gen = [r for r in records if r[0]]
    real = [r for r in records if not r[0]]
    grouped = old.groups is not None
    cal = fit_calibration(
        [r[3] for r in gen], [r[3] for r in real], kind=kind or old.kind, features=features or old.features,
        model_sha256=old.model_sha256, model_name=old.model_name, projector=old.projector,
        projector_fingerprint=old.projector_fingerprint, perceptual=old.perceptual, align=old.align,
        real_source=old.real_source, generated_seeds=old.generated_seeds, seed=old.seed,
        gen_groups=[r[1] for r in gen] if grouped else None, real_groups=[r[1] for r in real] if grouped else None,
        content=old.content, max_miss=max_miss if max_miss is not None else old.metrics.get("max_miss", MAX_MISS),
    )
    cal.metrics["refit_of"] = {"path": str(calibration_path), "created": old.created, "features": old.features}
    json_path, plot_path, csv_path = output_paths(Path(out_path))
    cal.save(json_path)
    plot_calibration(cal, [r[3] for r in gen], [r[3] for r in real], plot_path)
    rows = gen + real
    _write_csv(csv_path, cal, [("generated" if g else "real", grp, src) for g, grp, src, _ in rows],
               [r[3] for r in rows], cal.probabilities([r[3] for r in rows]),
               list(dict.fromkeys(k for r in rows for k in r[3])))
    return cal, json_path, plot_path, csv_path


CSV_META = ("class", "group", "source", "probability", "verdict")  # the features CSV's columns that are no feature


def write_features_csv(run: CalibrationRun, features: Sequence[str]) -> Path:
    """class, group, source, the calibration's features, the other features, probability, verdict: one row per
    image."""
    return _write_csv(run.csv_path, run.calibration,
                      [("generated" if im.generated else "real", im.group, im.source) for im in run.images],
                      run.features, run.probabilities, features)


def _write_csv(path: Path, cal: Calibration, ids: Sequence[tuple[str, str, str]], features: Sequence[dict],
               probabilities: np.ndarray, names: Sequence[str]) -> Path:
    header = [*CSV_META[:3], *cal.features, *[f for f in names if f not in cal.features], *CSV_META[3:]]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for (cls, group, source), feats, p in zip(ids, features, probabilities):
            w.writerow([cls, group, source, *[feats.get(k) for k in header[3:-2]], float(p), cal.verdict(float(p))])
    return path


# ------------------------------------------------------------------------------------------ the domain check


def calibrate_domain(
    G: Generator,
    info: ModelInfo,
    real_paths: Sequence[Path],
    out_path: str | Path,
    *,
    feature_net: str | None = None,  # None: FEATURE_NET_OF[info.name]
    n_generated: int = 600,
    seed_base: int = DOMAIN_SEED_BASE,
    device: torch.device | str = "cpu",
    on_skipped: Callable[[Path, str], None] | None = None,
    progress: ProgressFn | None = None,  # stages 'real' and 'generated' (images)
) -> DomainCheck:
    """Fit and save a domain check from in-domain real images (each given one of REAL_CYCLE's variants in turn) and
    n_generated of the model's samples (GENERATED_CYCLE's), all prepared as detection prepares a file."""
    name = feature_net or FEATURE_NET_OF.get(info.name)
    if name is None:
        raise DomainError(f"no feature network is known to describe the domain of {info.name}: pass --feature-net "
                          "(inception needs its weights; portraits is for portrait models)")
    net = load_feature_network(name, device=device)
    res = G.img_resolution
    report = progress or (lambda *_a: None)
    pixels, groups = [], []
    with tempfile.TemporaryDirectory(prefix="sgproject-domain-") as tmp:
        for k, path in enumerate(real_paths):
            try:
                p = prepare_image(Path(path), res)
            except ImageLoadError as e:
                if on_skipped:
                    on_skipped(Path(path), str(e))
                continue
            variant = REAL_CYCLE[len(pixels) % len(REAL_CYCLE)]
            if variant != "clean":
                p = prepare_image(write_variant(p.pixels, variant, Path(tmp) / f"real-{k}",
                                                np.random.default_rng(k)), res)
            pixels.append(p.pixels)
            groups.append(f"real:{variant}")
            report("real", k + 1, len(real_paths), None)
        n_real = len(pixels)
        if n_real == 0:
            raise DomainError("no readable in-domain real image: a domain check needs the domain's own images")
        seeds = list(range(seed_base, seed_base + n_generated))
        for k, (s, arr) in enumerate(generate_images(G, seeds, noise_mode="random")):
            variant = GENERATED_CYCLE[k % len(GENERATED_CYCLE)]
            if variant != "clean":
                arr = prepare_image(write_variant(arr, variant, Path(tmp) / f"gen-{k}", np.random.default_rng(s)),
                                    res).pixels
            pixels.append(arr)
            groups.append(f"generated:{variant}")
            report("generated", k + 1, len(seeds), None)
    check = fit_domain_check(
        embed(net, pixels, device), groups, feature_net=name, identity=net.identity,
        fitted_on=f"{n_real} real images (clean, {', '.join(REAL_HARD)} in turn) and {n_generated} samples of "
                  f"{info.name} (seeds {seeds[0]}-{seeds[-1]}; clean, {', '.join(GENERATED_HARD)} in turn)")
    check.model_sha256 = info.sha256
    check.save(out_path)
    return check
