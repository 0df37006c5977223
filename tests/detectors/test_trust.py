"""Verdicts that never accuse without evidence: the content check ('insufficient'), hard-negative calibration with
groups, the variants it is made of, and the complexity references (detectors/content.py, detectors/variants.py,
detectors/calibration.py, detectors/calibrate.py, detectors/scoring.py, detectors/batch.py), on the `tiny` model.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from tests.detectors.helpers import assert_set_aside_in_reports, count_projected
from detectors.batch import Detector, DetectSettings, RunResult
from detectors.calibrate import CalibrateSettings, calibrate, refit
from detectors.calibration import Calibration, fit_calibration, grouped_thresholds, verdict_thresholds
from detectors.content import content_measures, fit_content_check, insufficient_reason
from detectors.images import read_rgb
from detectors.scoring import score_batch
from detectors.variants import (GENERATED_HARD, PHOTOS_HELD_OUT, REAL_HARD, SIMPLE_KINDS, VARIANTS, apply_variant,
                                photograph_crops, simple_image, write_variant)
from generator.util.imaging import to_tensor
from projector.project import ProjectorConfig
from tests.detectors.test_batch import _calibration, _environment, parts  # noqa: F401  (the same setting, model)
from tests.detectors.test_encoder_detection import encoders  # noqa: F401


def _textured(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ content


def test_content_measures_tell_flat_from_detailed():
    rng = np.random.default_rng(0)
    uniform = content_measures(simple_image("uniform", 64, rng))
    assert uniform["contrast"] < 1e-9 and uniform["detail"] < 1e-9
    gradient = content_measures(simple_image("gradient", 64, rng))
    noise = content_measures(_textured(0, 64))
    assert gradient["detail"] < 0.5 < noise["detail"] and noise["detail"] > 30
    blurred = content_measures(apply_variant(_textured(0, 64), "blur6", rng)[0])
    assert blurred["detail"] < noise["detail"] / 20


def test_content_check_thresholds_are_quantiles_and_reasons_name_the_measure():
    measures = [{"contrast": float(i), "detail": float(2 * i)} for i in range(1, 201)]
    check = fit_content_check(measures, quantile=0.01)
    assert check["thresholds"] == {"contrast": 2.0, "detail": 4.0}  # the 1% quantile: 2 of 200 below it
    assert insufficient_reason({"contrast": 50.0, "detail": 100.0}, check) is None
    why = insufficient_reason({"contrast": 50.0, "detail": 0.5}, check)
    assert why is not None and "detail 0.50" in why and "contrast" not in why.split("(")[1].split(":")[0]
    assert insufficient_reason({"contrast": 0.0, "detail": 0.0}, None) is None
    with pytest.raises(ValueError):
        fit_content_check(measures[:5])


# ------------------------------------------------------------------------------------------------ variants


def test_every_variant_gives_an_rgb_image_and_jpeg_variants_are_jpeg_files(tmp_path):
    px = _textured(1, 64)
    rng = np.random.default_rng(0)
    for name in VARIANTS:
        out, quality = apply_variant(px, name, rng)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, name
        path = write_variant(px, name, tmp_path / name, np.random.default_rng(0))
        img = read_rgb(path)
        assert (img.format == "jpeg") == (quality is not None) == name.startswith("jpeg"), name
    assert apply_variant(px, "resize4", rng)[0].shape == (256, 256, 3)
    assert apply_variant(px, "crop95", rng)[0].shape == (61, 61, 3)
    assert np.array_equal(apply_variant(px, "clean", rng)[0], px)
    assert set(REAL_HARD) | set(GENERATED_HARD) <= set(VARIANTS)
    with pytest.raises(KeyError):
        apply_variant(px, "sepia", rng)


def test_simple_images_and_photograph_crops():
    rng = np.random.default_rng(3)
    for kind in SIMPLE_KINDS:
        img = simple_image(kind, 48, rng)
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    crops = photograph_crops(PHOTOS_HELD_OUT[:2], 4, seed=0)
    assert len(crops) == 4 and all(c.ndim == 3 and c.shape[0] == c.shape[1] >= 8 for _, c in crops)
    assert crops[0][0].startswith(PHOTOS_HELD_OUT[0]) and crops[1][0].startswith(PHOTOS_HELD_OUT[1])


# ------------------------------------------------------------------------------------------ grouped bands


def test_grouped_bands_hold_in_every_group():
    rng = np.random.default_rng(0)
    p_gen = np.clip(rng.normal(0.95, 0.02, 200), 0, 1)
    p_real_easy = np.clip(rng.normal(0.05, 0.01, 500), 0, 1)
    p_real_hard = np.clip(rng.normal(0.9, 0.01, 5), 0, 1)  # e.g. blurred reals: a small group, near the top
    p_real = np.r_[p_real_easy, p_real_hard]
    groups = ["clean"] * 500 + ["blur"] * 5
    pooled = verdict_thresholds(p_gen, p_real)
    t_gen, t_real = grouped_thresholds(p_gen, p_real, ["clean"] * 200, groups)
    assert t_gen >= pooled[0] and t_gen > p_real_hard.max()  # no blurred real is called generated
    assert (p_real_hard >= pooled[0]).sum() > 0  # ... which the pooled bands allowed
    assert grouped_thresholds(p_gen, p_real, None, None) == pooled


def test_calibration_records_groups_and_content_check(tmp_path):
    gen = [{"lpips": 0.01 * (1 + 0.1 * i)} for i in range(8)]
    real = [{"lpips": 0.1 * (1 + 0.1 * i)} for i in range(8)]
    check = fit_content_check([{"contrast": 10.0 + i, "detail": 3.0 + i} for i in range(16)])
    cal = fit_calibration(gen, real, kind="threshold", gen_groups=["clean", "jpeg75"] * 4,
                          real_groups=["clean"] * 4 + ["blur1"] * 4, content=check)
    assert cal.groups == {"generated": {"clean": 4, "jpeg75": 4}, "real": {"blur1": 4, "clean": 4}}
    assert set(cal.metrics["groups"]["real"]) == {"blur1", "clean"}
    again = Calibration.load(cal.save(tmp_path / "c.json"))
    assert again.content == check and again.groups == cal.groups
    with pytest.raises(Exception, match="group names"):
        fit_calibration(gen, real, kind="threshold", gen_groups=["clean"] * 3)


# ------------------------------------------------------------------------------------------------ detection


def test_flat_images_are_insufficient_and_never_projected(parts, tmp_path, monkeypatch):
    G, info, perceptual = parts
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(simple_image("uniform", 32, rng)).save(folder / "flat.png")
    Image.fromarray(simple_image("gradient", 32, rng)).save(folder / "gradient.png")
    Image.fromarray(_textured(2)).save(folder / "textured.png")
    cal = _calibration(parts, 0.0, -1.0)  # would call everything it scores 'generated'
    cal.content = fit_content_check([content_measures(_textured(s)) for s in range(20)], quantile=0.0)
    seen = count_projected(monkeypatch)
    det = Detector(G, info, perceptual, DetectSettings(config=ProjectorConfig(num_steps=2), batch_size=4),
                   calibration=cal)
    res = det.run([folder], tmp_path / "report")
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in res.all_rows}
    assert rows["flat.png"]["verdict"] == rows["gradient.png"]["verdict"] == "insufficient"
    assert rows["flat.png"]["probability"] is None and rows["flat.png"]["steps"] == 0
    assert "too little information" in rows["flat.png"]["notes"][-1]
    assert rows["flat.png"]["features"]["detail"] < 1e-9
    assert rows["textured.png"]["verdict"] == "generated"
    assert seen == [1]  # only the textured image was projected
    assert res.counts()["insufficient"] == 2 and res.exit_code() == 1
    assert_set_aside_in_reports(tmp_path / "report", "insufficient", "Insufficient", "too little information", 2)

    only_flat = Detector(G, info, perceptual, DetectSettings(config=ProjectorConfig(num_steps=2)),
                         calibration=cal).run([folder / "flat.png"], tmp_path / "r2")
    assert only_flat.exit_code() == 2  # nothing flagged, something not judged


def test_exit_code_counts_insufficient_as_not_judged(tmp_path):
    def rr(*verdicts):
        rows = [{"status": "ok", "verdict": v} for v in verdicts]
        return RunResult(rows=rows, all_rows=rows, reports={}, interrupted=False, report_dir=tmp_path, rank=0)

    assert rr("real", "insufficient").exit_code() == 2
    assert rr("generated", "insufficient").exit_code() == 1
    assert rr("real").exit_code() == 0


# ------------------------------------------------------------------------------------------------ references


def test_complexity_references(parts, encoders):
    G, info, perceptual = parts
    (E, _), _ = encoders
    cfg = ProjectorConfig(num_steps=2).using_encoder(E)
    up_down = _textured(5)
    up_down[16:] = up_down[:16][::-1]  # symmetric top to bottom: its flip is itself
    targets = to_tensor([_textured(4), up_down])
    scores = score_batch(G, targets, config=cfg, perceptual=perceptual, encoder=E, references=("flip", "guess"))
    for s in scores:
        assert s.features["lpips_ref_flip"] > 0 and s.features["lpips_ref_guess"] > 0
        assert {"contrast", "detail"} <= set(s.features)
    sym = scores[1].features
    assert sym["lpips_ref_flip"] == pytest.approx(sym["lpips_ref_guess"], rel=1e-5)
    assert scores[0].features["lpips_ref_flip"] != pytest.approx(scores[0].features["lpips_ref_guess"], rel=1e-3)
    with pytest.raises(ValueError, match="encoder"):
        score_batch(G, targets, config=ProjectorConfig(num_steps=1), perceptual=perceptual, references=("flip",))


# ------------------------------------------------------------------------------------------- calibrate


def test_hard_negative_calibration_groups_every_image(parts, tmp_path):
    G, info, perceptual = parts
    real = tmp_path / "real"
    for sub, seeds in (("portraits", range(8)), ("ood", range(8, 12))):
        (real / sub).mkdir(parents=True)
        for s in seeds:
            Image.fromarray(_textured(s)).save(real / sub / f"{s}.png")
    settings = CalibrateSettings(config=ProjectorConfig(num_steps=1), n_generated=16)
    run = calibrate(G, info, perceptual, sorted(real.rglob("*.png")), tmp_path / "cal.json", settings=settings,
                    real_source=str(real))
    cal = run.calibration
    assert cal.content is not None and set(cal.content["thresholds"]) == {"contrast", "detail"}
    assert set(cal.groups["generated"]) == {"clean", *GENERATED_HARD}
    assert {g.split(":")[0] for g in cal.groups["real"]} == {"portraits", "ood"}
    assert "portraits:clean" in cal.groups["real"] and "portraits:blur1" in cal.groups["real"]
    with open(run.csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(run.images) and {"group", "contrast", "detail"} <= set(rows[0])
    jpeg = [r for r in rows if r["group"] == "jpeg75"]
    assert jpeg and "(jpeg75)" in jpeg[0]["source"]
    assert any("noise const" in r["source"] for r in rows if r["class"] == "generated")  # renders in turn too

    # a refit: other features, the same images, groups and identity, nothing projected
    new, json_path, _, csv_path = refit(run.json_path, tmp_path / "refit.json", features=["lpips", "detail"])
    assert new.features == ["lpips", "detail"] and new.groups == cal.groups and new.content == cal.content
    assert (new.model_sha256, new.projector_fingerprint) == (cal.model_sha256, cal.projector_fingerprint)
    assert new.metrics["refit_of"]["features"] == cal.features and Calibration.load(json_path) == new
    with open(csv_path, newline="", encoding="utf-8") as f:
        again = list(csv.DictReader(f))
    assert [r["source"] for r in again] == [r["source"] for r in rows]
    assert [r["lpips"] for r in again] == [r["lpips"] for r in rows]

    plain = calibrate(G, info, perceptual, sorted(real.rglob("*.png")), tmp_path / "plain.json",
                      settings=CalibrateSettings(config=ProjectorConfig(num_steps=1), n_generated=4,
                                                 hard_negatives=False), real_source=str(real))
    assert plain.calibration.groups is None and all(im.group.endswith("clean") for im in plain.images)
