"""Batch detection: judge every image under the given paths, writing each result the moment it is known.

    report_dir/
      results.jsonl        one row per image (detectors/results.py), appended and flushed as each image finishes
      results.rank{r}.jsonl  per-process rows under torchrun, merged into results.jsonl by rank 0
      run.json             settings, model, calibration, versions; 'partial' until the run completes
      assets/              target, reconstruction and heat-map PNGs per image (named by content hash); with
                           video, the projection video too (HASH-projection.mp4, at most ~100 frames)
      report.html|json|csv written at the end (and, marked partial, when the run is interrupted)

Resume (`resume=True`) skips every image whose content hash was already judged with the same settings; an image
with the same content under another name gets a copy of the earlier row without new work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from detectors.align import align_face
from detectors.calibration import Calibration, CalibrationError, calibration_for
from detectors.content import content_measures, insufficient_reason
from detectors.degrade import Degradation, degradation_of
from detectors.domain import DomainCheck, domain_check_for, embed
from detectors.images import ImageLoadError, RGBImage, find_images, read_rgb
from detectors.report import write_reports
from detectors.results import ResultRow, ResultsWriter, now_iso, read_results, sgproject_version
from detectors.scoring import ImageScore, score_batch
from generator import load_generator
from generator.checkpoint import ModelInfo
from generator.metrics.lpips import PerceptualDistance, load_perceptual
from generator.networks import Generator
from generator.util.distributed import Dist, barrier, init_distributed
from generator.util.files import atomic_path, file_sha256, write_json_atomic
from generator.util.imaging import centre_crop_resize, save_png, to_tensor
from projector.encoder import Encoder, encoder_for
from projector.project import ProjectorConfig, auto_batch_size, projector_config
from projector.video import VideoError, frame_stride, video_codec, write_projection_video

TIME_STAGES = ("prepare", "projection", "scoring", "assets", "reports")  # run.json 'time_s', this process's
RESULTS = "results.jsonl"
RUN = "run.json"
ASSETS = "assets"
DEFAULT_STEPS = 300  # projection steps without a calibration (a calibration brings its own projector settings)
DEFAULT_STEPS_PAPER = 1000  # `calibrate` from w_avg (the paper's count)
ENCODER_STEPS = 25  # the same from an encoder's guess (chosen from bench/detect.py's steps curve)
# ... searching a zoom and shift of up to 10% of the half-width beside w (ProjectorConfig.geometry): a 95% crop of a
# generated image is then reproduced as well as the image itself (on 24 + 24 dev images, median LPIPS 0.0080 against
# 0.0130 without; the same images clean 0.0082 either way)
DEFAULT_GEOMETRY = 0.1
VIDEO_FPS = 20  # frames per second of the report's projection videos (about 100 frames: 5 s)


@dataclass
class DetectSettings:
    config: ProjectorConfig  # the W projection's settings (W+ too with wplus)
    seed: int = 0
    batch_size: int = 8
    align: bool = False
    wplus: bool = False
    video: bool = False  # also write each image's projection video (not part of key(): it changes no score)
    references: tuple[str, ...] = ()  # detectors.scoring.REFERENCES to record (lpips_ref_<name>; need the encoder)

    def key(self, model_sha256: str, perceptual: str, calibration_id: str | None) -> str:
        """Everything that changes a row: resume reuses rows only when this matches."""
        parts = [model_sha256, perceptual, self.config.fingerprint(), str(self.seed), str(self.align),
                 str(self.wplus), calibration_id or "uncalibrated"] + ([",".join(self.references)]
                                                                       if self.references else [])
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class Prepared:
    """An image ready for projection."""

    path: Path
    image: RGBImage
    pixels: np.ndarray  # uint8 [R, R, 3]: what is projected
    alignment: dict | None = None  # Alignment.to_json() with align, else None
    notes: list[str] = field(default_factory=list)  # what loading, cropping or alignment did
    degradation: Degradation | None = None  # the target's path, re-applied to the reconstruction


def prepare_image(path: Path, resolution: int, *, align: bool = False) -> Prepared:
    """Read, orient and convert one image, then align it (FFHQ-style) or centre-crop and resize it to resolution,
    with the record of the source's degradation path. ImageLoadError when it cannot be judged.

    The one preparation of an input for projection: detection and calibration both use it, so that a feature
    means the same thing in both (batch them with generator.util.imaging.to_tensor)."""
    img = read_rgb(path)
    res = resolution
    if align:
        a = align_face(img.pixels, res)
        notes = list(img.notes) + a.notes  # which aligner ran, then its warning
        return Prepared(path, img, a.image, a.to_json(), notes, degradation_of(img, res, aligned=True))
    notes = list(img.notes)
    h, w = img.pixels.shape[:2]
    if (h, w) != (res, res):
        notes.append(f"centre-cropped and resized {w}x{h} -> {res}x{res}")
    deg = degradation_of(img, res)
    if deg is not None and not deg.is_identity:
        notes.append(f"compared after re-applying the source's path: {deg.describe()}")
    return Prepared(path, img, centre_crop_resize(img.pixels, res), None, notes, deg)


def versions() -> dict:
    return {"sgproject": sgproject_version(), "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform()}


class Detector:
    """Holds what a run needs; `run()` judges a list of files."""

    def __init__(
        self,
        G: Generator,
        model: ModelInfo,
        perceptual: PerceptualDistance,
        settings: DetectSettings,
        *,
        calibration: Calibration | None = None,  # None: scores only
        device: torch.device | str = "cpu",
        warn: Callable[[str], None] | None = None,  # warnings for the user (video fallback); default: logging
        encoder: Encoder | None = None,  # the start of every projection when settings.config.init == 'encoder'
        triage: Calibration | None = None,  # the cascade's first stage: a calibration of the encoder's guess alone
        domain: DomainCheck | None = None,  # with a calibration: images outside it are 'out-of-domain'
        escalation: Calibration | None = None,  # the cascade's last stage: a calibration of a longer projection from
        # the same guess, which judges the images the calibration leaves 'uncertain'
    ):
        self.G, self.model, self.perceptual, self.settings = G, model, perceptual, settings
        self.encoder, self.triage, self.escalation = encoder, triage, escalation
        self.domain = domain if calibration is not None else None  # verdicts need a calibration
        self._domain_net = self.domain.network(device) if self.domain is not None else None
        if triage is not None:
            _check_triage(triage, settings.config, encoder, calibration)
        if escalation is not None:
            _check_escalation(escalation, settings.config, encoder, calibration, perceptual.identity, settings.align)
        self.timings: dict[str, float] = {}  # seconds per stage of the last run() (run.json 'time_s')
        self.calibration, self.device, self.warn = calibration, torch.device(device), warn
        self._video: dict | None = None  # with settings.video, during run(): codec, frame_every, fps (run.json)
        cal_id = None
        if calibration is not None:
            # the calibration alone (ids of runs without a cascade are what they were), else both
            what = calibration.to_dict() if triage is None else [calibration.to_dict(), triage.to_dict()]
            if escalation is not None:  # ids of runs without the last stage are what they were
                what = [what, escalation.to_dict()]
            if self.domain is not None:  # ids of runs without a domain check are what they were
                what = [what, self.domain.fingerprint()]
            cal_id = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
        self.calibration_id = cal_id
        self.settings_key = settings.key(model.sha256, perceptual.identity, cal_id)

    @classmethod
    def from_options(
        cls,
        model: str | None,  # a model name or file (generator.load_generator); None: the default model
        device: torch.device | str,
        *,
        calibration: str | Path | None = None,  # a calibration file; None: the model's bundled one, if any
        use_calibration: bool = True,  # False: scores only, no probabilities or verdicts
        steps: int | None = None,  # projection steps; None: the calibration's, else DEFAULT_STEPS / ENCODER_STEPS
        fast: bool = False,  # triage: the encoder's guess alone (0 steps), with the model's fast calibration
        encoder: str | Path | None = None,  # an encoder file; None: the model's bundled one, if any
        use_encoder: bool = True,  # False (uncalibrated only): start at w_avg even when the model has an encoder
        cascade: bool = True,  # clear first, by the encoder's guess alone, what the triage calibration calls real
        triage: str | Path | None = None,  # the cascade's calibration file; None: the model's bundled fast one
        escalate: bool = True,  # judge what the calibration leaves uncertain again on a longer projection
        escalation: str | Path | None = None,  # that stage's calibration file; None: the model's bundled deep one
        domain: str | Path | None = None,  # a domain check file (detectors/domain.py); None: the model's bundled one
        use_domain: bool = True,  # False: judge images outside the model's domain too
        seed: int = 0,
        align: bool = False,
        wplus: bool = False,  # also project into W+ (on anyway when the calibration uses lpips_wplus)
        batch_size: int | None = None,  # None: auto_batch_size for the device
        vgg_weights: str | Path | None = None,
        video: bool = False,  # also write each image's projection video into the report's assets
        references: tuple[str, ...] = (),  # also record these complexity references (on anyway where the
        # calibration uses them)
        warn: Callable[[str], None] | None = None,  # the random-LPIPS-backbone and video-fallback warnings
    ) -> "Detector":
        """Load the model, its calibration, its encoder and the perceptual network, and settle the settings. A
        calibration brings its projector settings (`steps` overrides its step count) and refuses a model, projector,
        encoder, perceptual network or alignment other than its own (CalibrationError)."""
        G, info = load_generator(model, device)
        if fast:
            if steps not in (None, 0):
                raise CalibrationError(f"fast triage projects no steps; it cannot be combined with {steps} steps")
            steps = 0
        cal = calibration_for(info.name, calibration, variant="fast" if fast else "") if use_calibration else None
        if cal is not None:
            cfg = ProjectorConfig(**cal.projector)
            if steps is not None:
                cfg.num_steps = steps
            E = None
            if cfg.init == "encoder":
                E = encoder_for(info, encoder, device)
                _check_calibration_encoder(cal, E, encoder)
            elif encoder is not None:
                raise CalibrationError(f"the calibration{f' {cal.source_path}' if cal.source_path else ''} starts "
                                       "projections at w_avg, not at an encoder's guess: drop --encoder")
            perceptual = load_perceptual(vgg_weights, device, require=cal.perceptual)
            cal.check_compatible(model_sha256=info.sha256, projector_fingerprint=cfg.fingerprint(),
                                 perceptual=perceptual.identity, align=align, projector=cfg.to_dict())
        else:
            E = encoder_for(info, encoder, device) if (use_encoder or encoder is not None) else None
            if steps == 0 and E is None:
                raise CalibrationError(f"0 projection steps (fast triage) need an encoder, and {info.name} has none: "
                                       "pass --encoder FILE (make one with `sgproject train-encoder`)")
            n = steps if steps is not None else ENCODER_STEPS if E else DEFAULT_STEPS
            cfg = projector_config(E, num_steps=n, geometry=DEFAULT_GEOMETRY if E is not None and n > 0 else 0.0)
            perceptual = load_perceptual(vgg_weights, device, warn=warn)
        tri = None
        if cascade and cal is not None and cfg.init == "encoder" and cfg.num_steps > 0:
            tri = calibration_for(info.name, triage, variant="fast")
            if tri is not None and triage is None:  # the bundled one, where it fits
                try:
                    _check_triage(tri, cfg, E, cal)
                except CalibrationError:
                    tri = None
        elif triage is not None:
            raise CalibrationError("--triage needs a calibrated projection of at least one step from an encoder's "
                                   "guess, with the cascade on")
        if tri is not None and tri.perceptual != perceptual.identity:
            raise CalibrationError(f"the triage calibration was made with {tri.perceptual}, not {perceptual.identity}")
        deep = None
        if escalate and cal is not None and cfg.init == "encoder" and cfg.num_steps > 0:
            deep = calibration_for(info.name, escalation, variant="deep")
            if deep is not None and escalation is None:  # the bundled one, where it fits
                try:
                    _check_escalation(deep, cfg, E, cal, perceptual.identity, align)
                except CalibrationError:
                    deep = None
        elif escalation is not None:
            raise CalibrationError("--escalation needs a calibrated projection of at least one step from an "
                                   "encoder's guess, with escalation on")
        refs = tuple(dict.fromkeys([*references, *(cal.references() if cal is not None else ())]))
        if refs and E is None:
            raise CalibrationError(f"complexity references ({', '.join(refs)}) are measured with an encoder, and "
                                   f"{info.name} has none: pass --encoder FILE")
        settings = DetectSettings(config=cfg, seed=seed, align=align,
                                  wplus=wplus or any("lpips_wplus" in c.features for c in (cal, deep) if c),
                                  batch_size=batch_size or auto_batch_size(G, torch.device(device), 64),
                                  video=video, references=refs)
        dom = None
        if cal is not None and use_domain:
            dom = domain_check_for(info.name, domain)
        elif domain is not None:
            raise CalibrationError("--domain needs a calibration (without one there are no verdicts) and the domain "
                                   "check on")
        return cls(G, info, perceptual, settings, calibration=cal, device=device, warn=warn, encoder=E, triage=tri,
                   domain=dom, escalation=deep)

    # ------------------------------------------------------------------------------------------------- rows

    def error_row(self, path: Path, reason: str, d: Dist) -> dict:
        size = path.stat().st_size if path.exists() and path.is_file() else None
        try:
            sha256 = file_sha256(path) if size is not None else None
        except OSError:  # unreadable: the row says why in `error`
            sha256 = None
        return ResultRow(path=str(path), sha256=sha256, size=size, status="error", error=reason,
                         settings_key=self.settings_key, rank=d.rank).to_json()

    def set_aside_row(self, p: Prepared, verdict: str, measures: dict, reason: str, report_dir: Path, d: Dist) -> dict:
        """The row of an image that is not projected: `verdict` 'insufficient' (too flat to judge,
        detectors/content.py) or 'out-of-domain' (detectors/domain.py), with the measures that decided it."""
        name = f"{p.image.sha256[:16]}-target.png"
        save_png(p.pixels, report_dir / ASSETS / name)
        w, h = p.image.original_size
        return ResultRow(
            path=str(p.path), sha256=p.image.sha256, size=p.path.stat().st_size, width=w, height=h,
            format=p.image.format, status="ok", verdict=verdict, probability=None,
            features={k: _finite(v) for k, v in measures.items()}, steps=0, seconds=0.0,
            notes=[*p.notes, reason], alignment=p.alignment, settings_key=self.settings_key, rank=d.rank,
            target=f"{ASSETS}/{name}",
        ).to_json()

    def ok_row(self, p: Prepared, s: ImageScore, report_dir: Path, d: Dist, *, stage: str = "main",
               first_p: float | None = None) -> dict:
        """The row of a judged image. `stage`: which of the cascade's calibrations judges it: 'triage' (the guess
        alone cleared it), 'main', or 'escalated' (the main calibration left it uncertain at P `first_p`; `s` is the
        longer projection's score)."""
        stem = p.image.sha256[:16]
        assets = report_dir / ASSETS
        rel = {}
        for kind, pixels in (("target", p.pixels), ("reconstruction", s.reconstruction), ("heatmap", s.heatmap)):
            name = f"{stem}-{kind}.png"
            save_png(pixels, assets / name)
            rel[kind] = f"{ASSETS}/{name}"
        notes = list(p.notes)
        if self.settings.video and s.projection.frames:
            name = f"{stem}-projection.mp4"
            try:
                write_projection_video(p.pixels, s.projection.frames, assets / name, fps=VIDEO_FPS,
                                       codec=self._video["codec"])
                rel["video"] = f"{ASSETS}/{name}"
            except VideoError as e:  # the judgement stands without its video
                notes.append(f"no projection video: {e}")
        probability = verdict = None
        cal = {"triage": self.triage, "main": self.calibration, "escalated": self.escalation}[stage]
        if cal is not None:
            probability = float(cal.probability(s.features))
            verdict = cal.verdict(probability)
        if "lpips" not in s.features:
            notes.append("judged without LPIPS (its calibration uses none): the heat map shows pixel differences")
        if stage == "triage":
            notes.append("cleared by the encoder's guess alone (cascade: its fast calibration already says "
                         "'real'); not optimised")
        if stage == "escalated" and first_p is not None:
            notes.append(f"uncertain after {self.settings.config.num_steps} steps (P {first_p:.3f}): judged on a "
                         f"longer projection ({s.projection.steps} steps from the same guess) with its own calibration")
        w, h = p.image.original_size
        return ResultRow(
            path=str(p.path), sha256=p.image.sha256, size=p.path.stat().st_size, width=w, height=h,
            format=p.image.format, status="ok", verdict=verdict, probability=probability,
            features={k: _finite(v) for k, v in s.features.items()}, steps=s.projection.steps,
            seconds=round(s.projection.seconds, 3), notes=notes, alignment=p.alignment,
            settings_key=self.settings_key, rank=d.rank, **rel,
        ).to_json()

    # -------------------------------------------------------------------------------------------------- run

    def run(
        self,
        inputs: Iterable[str | Path],
        report_dir: str | Path,
        *,
        resume: bool = False,
        formats: Iterable[str] = ("html", "json", "csv"),
        command: str | None = None,
        on_result: Callable[[dict], None] | None = None,  # each finished row (this process)
        on_total: Callable[[int], None] | None = None,  # number of files this process will look at
        on_step: Callable[[int, int, int], None] | None = None,  # projection progress of the current batch
    ) -> "RunResult":
        d = init_distributed()
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        files, skipped = find_images([Path(p) for p in inputs])
        mine = files[d.rank :: d.world]
        mine_skipped = skipped[d.rank :: d.world]
        results_path = report_dir / (RESULTS if d.world == 1 else f"results.rank{d.rank}.jsonl")
        self._video = None
        if self.settings.video:
            res = self.G.img_resolution
            self._video = {"codec": video_codec(self.warn if d.main else lambda m: None), "fps": VIDEO_FPS,
                           "frame_every": frame_stride(self.settings.config.num_steps, (res, res, 3))}

        done: dict[str, dict] = {}
        self._judged: set[tuple[str, str]] = set()  # (path, sha256) that already have a row: not repeated
        if resume:
            for f in [report_dir / RESULTS, *sorted(report_dir.glob("results.rank*.jsonl"))]:
                for row in read_results(f):
                    if (row["settings_key"] == self.settings_key and row["sha256"] and row["status"] == "ok"
                            and (row.get("video") or not self.settings.video)):  # --video redoes rows without one
                        done.setdefault(row["sha256"], row)
                        self._judged.add((row["path"], row["sha256"]))
        elif d.main:
            for f in [report_dir / RESULTS, *report_dir.glob("results.rank*.jsonl")]:
                f.unlink(missing_ok=True)
        barrier(d)

        run_info = self.run_info(command, started, d, partial=True)
        if d.main:
            write_json_atomic(report_dir / RUN, run_info)
        if on_total:
            on_total(len(mine) + len(mine_skipped))

        rows: list[dict] = []
        interrupted = False
        self.timings = {k: 0.0 for k in TIME_STAGES}
        try:
            with ResultsWriter(results_path) as writer:
                def emit(row: dict) -> None:
                    writer.write(row)
                    rows.append(row)
                    if on_result:
                        on_result(row)

                for path, reason in mine_skipped:
                    emit(self.error_row(Path(path), _load_error(Path(path), reason), d))
                for batch in self._batches(mine, done, emit, d):
                    batch = self._set_aside(batch, report_dir, d, done, emit)
                    if self.triage is not None and batch:
                        batch = self._triage(batch, report_dir, d, done, emit)
                    if not batch:
                        continue
                    scores = self._score(batch, self.settings.config, self.settings.references, on_step)
                    uncertain = []  # (image, P) of those the second look judges again
                    for p, s in zip(batch, scores):
                        p1 = self.calibration.probability(s.features) if self.escalation is not None else None
                        if p1 is not None and self.calibration.verdict(p1) == "uncertain":
                            uncertain.append((p, p1))
                        else:
                            self._emit_ok(p, s, report_dir, d, done, emit)
                    if uncertain:
                        self._escalate(uncertain, report_dir, d, done, emit, on_step)
        except KeyboardInterrupt:
            interrupted = True
        return self._finish(report_dir, rows, started, d, command, formats, interrupted)

    def _set_aside(self, batch: list[Prepared], report_dir: Path, d: Dist, done: dict, emit) -> list[Prepared]:
        """Emit the 'insufficient' rows of the images too flat to judge under the calibration's content check, then
        the 'out-of-domain' rows of those outside the domain check (neither without a calibration); return the
        others."""
        check = self.calibration.content if self.calibration is not None else None
        measures = [content_measures(p.pixels) for p in batch] if check or self.domain is not None else None
        rest, rest_measures = [], []
        for p, m in zip(batch, measures or [None] * len(batch)):
            reason = insufficient_reason(m, check) if check else None
            if reason is None:
                rest.append(p)
                rest_measures.append(m)
            else:
                self._emit_aside(done, emit, p, "insufficient", m, reason, report_dir, d)
        if self.domain is None or not rest:
            return rest
        t0 = time.perf_counter()
        distances = self.domain.distances(embed(self._domain_net, [p.pixels for p in rest], self.device))
        self.timings["prepare"] += time.perf_counter() - t0
        inside = []
        for p, m, dist in zip(rest, rest_measures, distances):
            reason = self.domain.reason(float(dist))
            if reason is None:
                inside.append(p)
            else:
                features = {**m, "domain_distance": float(dist)}
                self._emit_aside(done, emit, p, "out-of-domain", features, reason, report_dir, d)
        return inside

    def _emit_aside(self, done: dict, emit, *args) -> None:
        """Make a set-aside row, set_aside_row(*args) (its target PNG written: timed as 'assets'), remember it for
        duplicates, emit it."""
        t0 = time.perf_counter()
        row = self.set_aside_row(*args)
        self.timings["assets"] += time.perf_counter() - t0
        done[row["sha256"]] = row
        emit(row)

    def _triage(self, batch: list[Prepared], report_dir: Path, d: Dist, done: dict, emit) -> list[Prepared]:
        """The cascade's first stage: score the encoder's guess of every image; emit the rows whose verdict under
        the triage calibration is already 'real'; return the others, for the full projection. A `generated` verdict
        always rests on the optimised projection: the guess alone is weaker evidence, and on held-out reals its
        calibration accused more than its 1% (README, Benchmarks)."""
        cfg = dataclasses.replace(self.settings.config, num_steps=0, geometry=0.0)  # no steps: nothing to search
        refs = self.triage.references()
        scores = score_batch(self.G, to_tensor([p.pixels for p in batch]), config=cfg, perceptual=self.perceptual,
                             seed=self.settings.seed, device=self.device, degradations=[p.degradation for p in batch],
                             encoder=self.encoder, timings=self.timings, references=refs,
                             perceptual_features=_needs_lpips(self.triage, cfg, False, refs))
        rest = []
        for p, s in zip(batch, scores):
            if self.triage.verdict(self.triage.probability(s.features)) != "real":
                rest.append(p)
            else:
                self._emit_ok(p, s, report_dir, d, done, emit, stage="triage")
        return rest

    def _score(self, batch: list[Prepared], config: ProjectorConfig, references: tuple[str, ...],
               on_step=None) -> list[ImageScore]:
        """Project and score a batch with `config` (the run's projection, or the last stage's longer one)."""
        res = self.G.img_resolution
        frame_every = frame_stride(config.num_steps, (res, res, 3)) if self._video else None
        return score_batch(
            self.G, to_tensor([p.pixels for p in batch]), config=config, perceptual=self.perceptual,
            seed=self.settings.seed, device=self.device, wplus=self.settings.wplus,
            degradations=[p.degradation for p in batch], callback=on_step, frame_every=frame_every,
            encoder=self.encoder, timings=self.timings, references=references,
            perceptual_features=_needs_lpips(self.calibration, config, self.settings.wplus, references),
        )

    def _escalate(self, uncertain: list[tuple[Prepared, float]], report_dir: Path, d: Dist, done: dict, emit,
                  on_step=None) -> None:
        """The cascade's last stage: project the images the calibration left uncertain again, longer (the escalation
        calibration's settings, from the same guess), and judge them with that calibration. A longer projection
        reproduces more of the model's own images (bench/stress.py), so fewer of them stay uncertain."""
        config = ProjectorConfig(**self.escalation.projector)
        refs = tuple(dict.fromkeys([*self.settings.references, *self.escalation.references()]))
        scores = self._score([p for p, _ in uncertain], config, refs, on_step)
        for (p, p1), s in zip(uncertain, scores):
            self._emit_ok(p, s, report_dir, d, done, emit, stage="escalated", first_p=p1)

    def _emit_ok(self, p: Prepared, s: ImageScore, report_dir: Path, d: Dist, done: dict, emit, *,
                 stage: str = "main", first_p: float | None = None) -> None:
        """The row of a judged image (its assets written: timed as 'assets'), remembered for duplicates, emitted."""
        t0 = time.perf_counter()
        row = self.ok_row(p, s, report_dir, d, stage=stage, first_p=first_p)
        self.timings["assets"] += time.perf_counter() - t0
        done[p.image.sha256] = row
        emit(row)

    def _batches(self, files: list[Path], done: dict[str, dict], emit, d: Dist) -> Iterator[list[Prepared]]:
        """Prepared images in batches; errors and already-judged content are emitted on the way."""
        batch: list[Prepared] = []
        pending: set[str] = set()
        for path in files:
            t0 = time.perf_counter()
            try:
                p = prepare_image(path, self.G.img_resolution, align=self.settings.align)
            except ImageLoadError as e:
                emit(self.error_row(path, str(e), d))
                continue
            finally:
                self.timings["prepare"] += time.perf_counter() - t0
            sha = p.image.sha256
            if sha in done:
                prev = done[sha]
                if (str(path), sha) not in self._judged:  # same content under another name: reuse the judgement
                    emit(_copy_row(prev, path, list(prev.get("notes") or []), rank=d.rank))
                continue
            if sha in pending:  # a duplicate inside the current batch: judged once, its row copied after
                batch.append(p)
                continue
            pending.add(sha)
            batch.append(p)
            if len(pending) >= self.settings.batch_size:
                yield from self._dedupe(batch, done, emit)
                batch, pending = [], set()
        if batch:
            yield from self._dedupe(batch, done, emit)

    def _dedupe(self, batch: list[Prepared], done: dict, emit) -> Iterator[list[Prepared]]:
        """Project each content once; rows for duplicates are copied after the batch is judged."""
        unique, dupes, seen = [], [], set()
        for p in batch:
            (dupes if p.image.sha256 in seen else unique).append(p)
            seen.add(p.image.sha256)
        yield unique
        for p in dupes:
            prev = done[p.image.sha256]
            emit(_copy_row(prev, p.path, p.notes))

    # ----------------------------------------------------------------------------------------------- finish

    def run_info(self, command: str | None, started: float, d: Dist, *, partial: bool) -> dict:
        cal = None
        if self.calibration is not None:
            c = self.calibration
            cal = {"path": getattr(c, "source_path", None), "kind": c.kind, "t_generated": c.t_generated,
                   "t_real": c.t_real, "threshold": c.threshold, "features": c.features,
                   **{k: c.metrics.get(k) for k in ("auc", "tpr_at_1fpr", "tpr_at_5fpr")},
                   "n_generated": c.n_generated, "n_real": c.n_real, "id": self.calibration_id}
            if self.triage is not None:  # the cascade's first stage
                t = self.triage
                cal["triage"] = {"path": t.source_path, "t_generated": t.t_generated, "t_real": t.t_real,
                                 "auc": t.metrics.get("auc"), "n_generated": t.n_generated, "n_real": t.n_real}
            if self.escalation is not None:  # the cascade's last stage
                e = self.escalation
                cal["escalation"] = {"path": e.source_path, "steps": e.projector.get("num_steps"),
                                     "t_generated": e.t_generated, "t_real": e.t_real, "auc": e.metrics.get("auc"),
                                     "n_generated": e.n_generated, "n_real": e.n_real}
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "finished": None if partial else now_iso(), "duration_s": round(time.time() - started, 1),
            "partial": partial, "command": command,
            "model": {"name": self.model.name, "sha256": self.model.sha256, "resolution": self.G.img_resolution,
                      "path": str(self.model.path) if self.model.path else None},
            "perceptual": self.perceptual.identity, "projector": self.settings.config.to_dict(),
            "projector_fingerprint": self.settings.config.fingerprint(), "seed": self.settings.seed,
            "align": self.settings.align, "wplus": self.settings.wplus, "calibration": cal,
            "encoder": None if self.encoder is None else {
                "identity": self.encoder.identity(), "trained": self.encoder.info.get("training", {}).get("steps")},
            "settings_key": self.settings_key, "device": str(self.device), "world_size": d.world,
            "versions": versions(), **({"video": self._video} if self._video else {}),
            # where this process's time went, in seconds (rank 0's alone under torchrun)
            "time_s": {k: round(v, 2) for k, v in self.timings.items()},
        }

    def _finish(self, report_dir, rows, started, d, command, formats, interrupted) -> "RunResult":
        if d.world > 1 and not interrupted:
            barrier(d)
        all_rows = rows
        if d.main:
            # One row per path, latest wins (also for one process: a resumed run appends retried errors and
            # rows made with other settings after the old ones).
            t0 = time.perf_counter()
            all_rows = _merge_rank_files(report_dir)
            run_info = self.run_info(command, started, d, partial=interrupted)
            reports = _write_reports(report_dir, all_rows, run_info, formats, interrupted)
            if self.timings:
                self.timings["reports"] = time.perf_counter() - t0
            write_json_atomic(report_dir / RUN, self.run_info(command, started, d, partial=interrupted))
        else:
            reports = {}
        return RunResult(rows=rows, all_rows=all_rows, reports=reports, interrupted=interrupted,
                         report_dir=report_dir, rank=d.rank)


def _merge_rank_files(report_dir: Path) -> list[dict]:
    """Rank 0: fold every results.rank*.jsonl into results.jsonl (atomic), one row per path, latest wins."""
    merged: dict[str, dict] = {}
    for f in [report_dir / RESULTS, *sorted(report_dir.glob("results.rank*.jsonl"))]:
        for row in read_results(f):
            merged[row["path"]] = row
    rows = sorted(merged.values(), key=lambda r: r["path"])
    with atomic_path(report_dir / RESULTS) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    for f in report_dir.glob("results.rank*.jsonl"):
        f.unlink()
    return rows


def _load_error(path: Path, reason: str) -> str:
    """The loader's own reason for a file the folder walk found unloadable ('empty file', 'looks like HTML'),
    else the walk's."""
    try:
        read_rgb(path)
    except ImageLoadError as e:
        return str(e)
    except Exception:
        pass
    return reason


def _check_calibration_encoder(cal: Calibration, E: Encoder | None, explicit: str | Path | None) -> None:
    """CalibrationError unless E is the encoder whose guesses the calibration's projections started from."""
    want = cal.projector.get("encoder_sha256")
    where = f"the calibration{f' {cal.source_path}' if cal.source_path else ''}"
    if E is None:
        raise CalibrationError(f"{where} starts each projection at the guess of encoder {want}, and the model has no "
                               "bundled encoder: pass that encoder with --encoder FILE")
    if E.identity() != want:
        src = explicit or "the bundled encoder"
        raise CalibrationError(f"{where} was made with encoder {want}, but {src} is {E.identity()}: use the "
                               "calibration's encoder, or recalibrate with this one (`sgproject calibrate --encoder`)")


def _needs_lpips(cal: Calibration | None, config: ProjectorConfig, wplus: bool, references) -> bool:
    """Whether scoring must measure LPIPS: always, unless a calibration that uses no LPIPS feature judges the guess
    alone (0 steps; detectors.scoring.score_batch's `perceptual_features`)."""
    if cal is None or config.num_steps or wplus or references or config.init_samples:
        return True
    return any(f.startswith("lpips") for f in cal.features)


def _check_triage(triage: Calibration, config: ProjectorConfig, encoder: Encoder | None,
                  calibration: Calibration | None) -> None:
    """CalibrationError unless `triage` calibrates the encoder's guess alone (0 steps) of the very projection that
    `config` continues, and there is a calibration for that continuation."""
    fast = (dataclasses.replace(config, num_steps=0, geometry=0.0)  # no step: no geometry either
            if config.init == "encoder" and config.num_steps > 0 else None)
    if calibration is None or encoder is None or fast is None:
        raise CalibrationError("a cascade needs a calibration, an encoder and a projection of at least one step from "
                               "its guess")
    if triage.projector_fingerprint != fast.fingerprint() or triage.model_sha256 != calibration.model_sha256:
        raise CalibrationError(f"the triage calibration{f' {triage.source_path}' if triage.source_path else ''} is not "
                               "of this model's encoder guess alone (0 steps from the same encoder)")


def _check_escalation(deep: Calibration, config: ProjectorConfig, encoder: Encoder | None,
                      calibration: Calibration | None, perceptual: str, align: bool) -> None:
    """CalibrationError unless `deep` calibrates a longer projection of this model from the same encoder's guess
    as `config`, with the same perceptual network and alignment, and there is a calibration for `config` itself."""
    where = f"the escalation calibration{f' {deep.source_path}' if deep.source_path else ''}"
    if calibration is None or encoder is None or config.init != "encoder" or config.num_steps < 1:
        raise CalibrationError("escalation needs a calibration, an encoder and a projection of at least one step "
                               "from its guess")
    steps = deep.projector.get("num_steps", 0)
    if (deep.projector.get("init") != "encoder" or deep.projector.get("encoder_sha256") != encoder.identity()
            or steps <= config.num_steps):
        raise CalibrationError(f"{where} is not of a longer projection from encoder {encoder.identity()}'s guess "
                               f"(it has {steps} steps from {deep.projector.get('init', 'w_avg')}; this run "
                               f"{config.num_steps})")
    deep.check_compatible(model_sha256=calibration.model_sha256,
                          projector_fingerprint=ProjectorConfig(**deep.projector).fingerprint(),
                          perceptual=perceptual, align=align, projector=deep.projector)


def _write_reports(report_dir: Path, rows: list[dict], run_info: dict, formats, partial: bool) -> dict:
    written = write_reports(report_dir, rows, run_info, formats=tuple(formats), partial=partial)
    return {k: str(v) for k, v in written.items()}


def _copy_row(prev: dict, path: Path, notes: list, **changes) -> dict:
    """The row of an image already judged, for the same content under another path (now, with a note saying so)."""
    row = dataclasses.replace(ResultRow.from_json(prev), path=str(path), time=now_iso(),
                              notes=notes + [f"same content as {prev['path']}"], **changes)
    return row.to_json()


def _finite(v: float) -> float | None:
    """JSON has no inf/NaN: a perfect reconstruction's PSNR (inf) is stored as a large number."""
    if v is None:
        return None
    if np.isnan(v):
        return None
    return float(np.clip(v, -1e6, 1e6))


@dataclass
class RunResult:
    rows: list[dict]  # this process's rows
    all_rows: list[dict]  # every row of the run (rank 0), including resumed ones
    reports: dict[str, str]
    interrupted: bool
    report_dir: Path
    rank: int

    def counts(self) -> dict[str, int]:
        c = {"total": len(self.all_rows), "error": 0, "generated": 0, "real": 0, "uncertain": 0, "insufficient": 0,
             "out-of-domain": 0, "unscored": 0}
        for r in self.all_rows:
            if r["status"] == "error":
                c["error"] += 1
            else:
                c[r["verdict"] or "unscored"] += 1
        return c

    def exit_code(self) -> int:
        """Virus-scanner convention: 1 when anything was flagged generated, else 2 when any file could not be
        judged (an error, too little information: 'insufficient', or outside the model's domain: 'out-of-domain'),
        else 0. (A flagged image is the more important news, so 1 wins over 2.)"""
        c = self.counts()
        if c["generated"]:
            return 1
        if c["error"] or c["insufficient"] or c["out-of-domain"]:
            return 2
        return 0
