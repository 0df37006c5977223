"""Tests for detectors/calibration.py: ROC metrics, the logistic fit, verdict bands, files, compatibility, and an
end-to-end calibration of the `tiny` model against unrelated images."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from detectors import calibration as calmod
from detectors.calibration import (
    Calibration,
    CalibrationError,
    calibration_for,
    fit_calibration,
    plot_calibration,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
    verdict_thresholds,
)
from detectors.scoring import FEATURES, score_batch
from generator.data.portraits import render_portrait
from generator.metrics.lpips import load_perceptual
from generator.render import generate_images
from generator.util.errors import SGProjectError
from generator.util.imaging import centre_crop_resize, to_tensor
from projector.project import ProjectorConfig
from tests.detectors.helpers import offline_environment

IDENTITY = dict(model_sha256="a" * 64, model_name="tiny", projector={"space": "w", "num_steps": 30},
                projector_fingerprint="f" * 16, perceptual="lpips-vgg16:random-seed0", align=False)


@pytest.fixture(autouse=True, scope="module")
def _environment(tmp_path_factory):
    """Offline LPIPS, a private cache, and one torch thread."""
    with offline_environment(tmp_path_factory.mktemp("cache")):
        yield


def _synthetic(n: int, lpips: float, rng: np.random.Generator, spread: float = 0.2) -> list[dict]:
    return [{"lpips": float(rng.lognormal(math.log(lpips), spread)), "psnr": float(rng.normal(20, 2)),
             "w_typicality": float(rng.normal(1, 0.1)),
             "noise_gaussianity": 0.36 + float(rng.normal(0, 1e-8))} for _ in range(n)]  # constant up to rounding


@pytest.fixture(scope="module")
def separable() -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(1)
    return _synthetic(40, 0.02, rng), _synthetic(40, 0.1, rng)


@pytest.fixture(scope="module")
def separable_cal(separable) -> Calibration:
    return fit_calibration(*separable, **IDENTITY)


# ------------------------------------------------------------------------------------------------------ ROC


def test_roc_auc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(5):
        scores = rng.integers(0, 6, 60).astype(float)  # many ties
        labels = rng.integers(0, 2, 60)
        pos, neg = scores[labels == 1], scores[labels == 0]
        brute = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
        assert roc_auc(scores, labels) == pytest.approx(brute, abs=1e-12)
    assert roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0


def test_roc_curve_shape():
    fpr, tpr, thr = roc_curve([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0])
    assert (fpr[0], tpr[0], thr[0]) == (0.0, 0.0, math.inf)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert list(thr[1:]) == [0.9, 0.8, 0.1]  # one point per distinct score
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2], [1, 1])


def test_tpr_at_fpr_constructed():
    # 100 reals scored 0..99 / 100; 10 generated: 5 above every real, 5 in the middle of the reals.
    reals = np.arange(100) / 100
    gens = np.r_[np.full(5, 2.0), np.full(5, 0.555)]
    scores, labels = np.r_[gens, reals], np.r_[np.ones(10), np.zeros(100)]
    assert tpr_at_fpr(scores, labels, 0.0) == 0.5
    assert tpr_at_fpr(scores, labels, 0.01) == 0.5  # one real (0.99) above 0.555 would not buy anything
    assert tpr_at_fpr(scores, labels, 0.43) == 0.5  # 0.555 is beaten by 44 reals (0.56 .. 0.99)
    assert tpr_at_fpr(scores, labels, 0.44) == 1.0
    assert tpr_at_fpr(scores, labels, 1.0) == 1.0


# ------------------------------------------------------------------------------------------------- fitting


def test_default_features_are_the_scores_features():
    assert calmod.DEFAULT_FEATURES == FEATURES  # a literal there, so fitting does not import the projector


def test_logistic_separates_separable_data(separable, separable_cal):
    cal = separable_cal
    assert cal.kind == "logistic" and cal.features == ["lpips", "psnr", "w_typicality"]
    # constant up to float rounding: left out, so rounding noise cannot become a fake signal
    assert list(cal.metrics["dropped_constant_features"]) == ["noise_gaussianity"]
    assert cal.metrics["train"]["auc"] == 1.0
    assert cal.metrics["auc"] == 1.0 and cal.metrics["estimate"] == "5-fold cross-validation"
    assert cal.metrics["tpr_at_1fpr"] == 1.0
    assert all(math.isfinite(c) for c in cal.coef) and cal.coef[0] < 0  # L2 keeps it finite; low lpips = generated
    gen, real = separable
    assert all(cal.verdict(cal.probability(f)) == "generated" for f in gen)
    assert all(cal.verdict(cal.probability(f)) == "real" for f in real)


def test_logistic_is_near_chance_on_identical_distributions():
    rng = np.random.default_rng(2)
    cal = fit_calibration(_synthetic(150, 0.05, rng), _synthetic(150, 0.05, rng))
    assert abs(cal.metrics["auc"] - 0.5) < 0.1  # cross-validated: no skill
    p = cal.probabilities(_synthetic(50, 0.05, rng))
    assert np.all(np.abs(p - 0.5) < 0.2)  # and it knows it: probabilities stay near even odds
    # with overlapping classes, most images land in the honest middle
    assert cal.t_generated > 0.5 and cal.t_real < 0.5
    assert np.mean([cal.verdict(x) == "uncertain" for x in p]) > 0.8


def test_fit_is_deterministic(separable):
    a, b = fit_calibration(*separable), fit_calibration(*separable)
    assert a.coef == b.coef and a.intercept == b.intercept and a.metrics["roc"] == b.metrics["roc"]


def test_threshold_kind_is_decreasing_in_lpips(separable):
    cal = fit_calibration(*separable, kind="threshold", **IDENTITY)
    assert cal.kind == "threshold" and cal.features == ["lpips"]
    lp = np.geomspace(0.005, 0.5, 60)
    p = cal.probabilities([{"lpips": float(x)} for x in lp])
    assert np.all(np.diff(p) <= 0) and p[0] > 0.9 and p[-1] < 0.1
    assert 0.02 < cal.threshold < 0.1
    # the threshold is the lpips at which the verdict turns 'generated'
    assert cal.verdict(cal.probability({"lpips": cal.threshold * 0.99})) == "generated"
    assert cal.verdict(cal.probability({"lpips": cal.threshold * 1.01})) != "generated"


def test_threshold_kind_refuses_inverted_data(separable):
    gen, real = separable
    with pytest.raises(CalibrationError, match="do not project better"):
        fit_calibration(real, gen, kind="threshold")


def test_verdict_bands():
    cal = fit_calibration(*_fixed_overlap())
    cal.t_generated, cal.t_real = 0.8, 0.3
    assert cal.verdict(0.8) == "generated" and cal.verdict(0.99) == "generated"
    assert cal.verdict(0.3) == "real" and cal.verdict(0.0) == "real"
    assert cal.verdict(0.5) == "uncertain" and cal.verdict(0.79) == "uncertain"


def _fixed_overlap():
    rng = np.random.default_rng(3)
    return _synthetic(300, 0.04, rng, spread=0.5), _synthetic(300, 0.08, rng, spread=0.5)


def test_threshold_rule_limits_false_positives():
    # 1% of 300 reals: at most 3 reals at or above t_generated (on the cross-validated probabilities it was chosen on)
    p_real = np.linspace(0, 0.9, 300)
    p_gen = np.linspace(0.2, 1.0, 300)
    t_gen, t_real = verdict_thresholds(p_gen, p_real)
    assert (p_real >= t_gen).sum() <= 3  # the empirical 1%, or stricter (uniform p: the logit fit is wider)
    assert (p_gen <= t_real).sum() <= 3
    # a real far above 0.5 pushes t_generated above it; separable data leave the balanced 0.5
    assert verdict_thresholds(np.array([0.9, 0.95]), np.array([0.1, 0.7]))[0] > 0.7
    assert verdict_thresholds(np.array([0.9, 0.95]), np.array([0.1, 0.2])) == (0.5, np.nextafter(0.5, 0))
    # and on a fitted overlapping set, the verdict rates on its reals honour it
    cal = fit_calibration(*_fixed_overlap())
    assert cal.metrics["verdict_rates"]["real"]["generated"] <= 0.01 + 1e-9
    assert cal.metrics["verdict_rates"]["generated"]["real"] <= 0.01 + 1e-9
    assert 0.6 < cal.metrics["auc"] < 0.95  # overlapping: the estimate says so


def test_real_band_is_stricter_than_the_generated_band():
    # overlapping logit-normal classes: 'generated' may take 1% of the reals, 'real' only 0.25% of the generated
    # images (three stages of the cascade can each say 'real'); each rate is its own parameter
    rng = np.random.default_rng(5)
    p_real = 1 / (1 + np.exp(-rng.normal(-3, 1.5, 2000)))
    p_gen = 1 / (1 + np.exp(-rng.normal(3, 1.5, 2000)))
    t_gen, t_real = verdict_thresholds(p_gen, p_real)
    assert 10 <= (p_real >= t_gen).sum() <= 20
    assert 1 <= (p_gen <= t_real).sum() <= 5
    loose = verdict_thresholds(p_gen, p_real, max_miss=0.01)
    assert loose[0] == t_gen  # the rates do not interact
    assert (p_gen <= loose[1]).sum() >= 3 * (p_gen <= t_real).sum()


def test_threshold_rule_extrapolates_the_tail_of_a_small_sample():
    # 100 reals whose logit(P) is N(-5, 3): the empirical 1% quantile is the second-highest of them and jumps with
    # every draw; the 99th percentile of the fitted normal is stable and lies near the true one (sigmoid(1.98)).
    rng = np.random.default_rng(0)
    ts = []
    for _ in range(20):
        p_real = 1 / (1 + np.exp(-rng.normal(-5, 3, 100)))
        ts.append(verdict_thresholds(np.full(100, 0.999), p_real)[0])
    truth = 1 / (1 + np.exp(-(-5 + 2.326 * 3)))
    assert all(t >= 0.5 for t in ts)
    assert abs(np.median(ts) - truth) < 0.05, (np.median(ts), truth)


def test_nonfinite_features_are_clipped(separable):
    gen, real = [dict(f) for f in separable[0]], [dict(f) for f in separable[1]]
    gen[0]["psnr"] = math.inf  # a perfect reconstruction
    real[0]["w_typicality"] = math.nan
    cal = fit_calibration(gen, real)
    assert all(math.isfinite(v) for v in cal.mean + cal.std + cal.coef)
    assert cal.metrics["nonfinite"]["w_typicality"] == 1
    p = cal.probability({"lpips": 0.0, "psnr": math.inf, "w_typicality": math.nan, "noise_gaussianity": 0.36})
    assert 0.5 < p <= 1.0
    json.dumps(cal.to_dict(), allow_nan=False)  # strict JSON


def test_missing_feature_is_an_error(separable_cal):
    with pytest.raises(CalibrationError, match="psnr"):
        separable_cal.probability({"lpips": 0.02, "w_typicality": 1.0, "noise_gaussianity": 0.36})
    with pytest.raises(CalibrationError, match="--wplus"):
        fit_calibration(*_fixed_overlap(), features=("lpips", "lpips_wplus"))
    with pytest.raises(CalibrationError, match="at least 2"):
        fit_calibration([{"lpips": 0.1}], [{"lpips": 0.2}, {"lpips": 0.3}], kind="threshold")
    assert issubclass(CalibrationError, SGProjectError)


# --------------------------------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path, separable, separable_cal):
    path = separable_cal.save(tmp_path / "sub" / "c.json")
    assert not list(path.parent.glob(".*.tmp"))
    loaded = Calibration.load(path)
    assert loaded == separable_cal  # every field but source_path
    assert loaded.source_path == str(path)
    for f in separable[0][:5] + separable[1][:5]:
        assert loaded.probability(f) == separable_cal.probability(f)
    d = json.loads(path.read_text())
    assert d["format"] == "sgproject-calibration" and d["version"] == 1 and "source_path" not in d
    for key in ("auc", "tpr_at_1fpr", "tpr_at_5fpr", "roc", "n_generated", "n_real", "histograms", "train"):
        assert key in d["metrics"], key
    assert sum(d["metrics"]["histograms"]["lpips"]["generated"]) == 40


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ('{"format": "something else"}', "not an sgproject calibration"),
    ('{"format": "sgproject-calibration", "version": 99}', "version 99"),
    ('{"format": "sgproject-calibration", "version": 1, "kind": "logistic"}', "missing"),
])
def test_load_errors(tmp_path, content, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CalibrationError, match=message) as e:
        Calibration.load(path)
    assert "\n" not in str(e.value)


def test_calibration_for(tmp_path, monkeypatch, separable_cal):
    monkeypatch.setattr(calmod, "CALIBRATIONS_DIR", tmp_path / "bundled")
    assert calibration_for("tiny") is None
    explicit = separable_cal.save(tmp_path / "mine.json")
    assert calibration_for("tiny", explicit) == separable_cal
    bundled = separable_cal.save(tmp_path / "bundled" / "tiny.json")
    assert calmod.bundled_calibration_path("tiny") == bundled
    assert calibration_for("tiny").source_path == str(bundled)
    with pytest.raises(CalibrationError):
        calibration_for("tiny", tmp_path / "missing.json")  # an explicit file must exist


# ---------------------------------------------------------------------------------------------- validity


def test_check_compatible_accepts_the_same_settings(separable_cal):
    separable_cal.check_compatible(model_sha256="a" * 64, projector_fingerprint="f" * 16,
                                   perceptual="lpips-vgg16:random-seed0", align=False)


@pytest.mark.parametrize("field, value, needle", [
    ("model_sha256", "b" * 64, "model sha256"),
    ("projector_fingerprint", "0" * 16, "projector settings"),
    ("perceptual", "lpips-vgg16:imagenet:397923af", "perceptual network"),
    ("align", True, "align"),
])
def test_check_compatible_refuses(separable_cal, field, value, needle):
    args = dict(model_sha256="a" * 64, projector_fingerprint="f" * 16, perceptual="lpips-vgg16:random-seed0",
                align=False)
    args[field] = value
    with pytest.raises(CalibrationError) as e:
        separable_cal.check_compatible(**args)
    msg = str(e.value)
    assert needle in msg and "sgproject calibrate" in msg and "\n" not in msg
    others = {"model sha256", "projector settings", "perceptual network", "align"} - {needle}
    assert not any(o in msg for o in others), msg  # only what differs is named


def test_check_compatible_names_projector_fields(separable_cal):
    with pytest.raises(CalibrationError, match=r"num_steps=100 \(calibration: 30\)"):
        separable_cal.check_compatible(model_sha256="a" * 64, projector_fingerprint="0" * 16,
                                       perceptual="lpips-vgg16:random-seed0", align=False,
                                       projector={"space": "w", "num_steps": 100})


# -------------------------------------------------------------------------------------------------- plot


def test_plot_writes_png(tmp_path, separable, separable_cal):
    path = plot_calibration(separable_cal, *separable, tmp_path / "c.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 600
    thr = fit_calibration(*separable, kind="threshold")
    assert plot_calibration(thr, *separable, tmp_path / "t.png").stat().st_size > 1000


# ------------------------------------------------------------------------------------------ end to end


def _unrelated(n: int, res: int) -> list[np.ndarray]:
    """Images the tiny model never made: procedural portraits and smooth random colour fields."""
    out = [centre_crop_resize(render_portrait(7, i, 64, supersample=2)[0], res) for i in range(n // 2)]
    rng = np.random.default_rng(0)
    for _ in range(n - len(out)):
        small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        out.append(cv2.resize(small, (res, res), interpolation=cv2.INTER_CUBIC))
    return out


def test_calibration_separates_tiny_images_from_unrelated_ones(tiny, tmp_path):
    """The paper's claim on the tiny model: its own (uint8-quantised) images project better than other images."""
    n = 6
    gen = [a for _, a in generate_images(tiny, list(range(1_000_000, 1_000_000 + n)), noise_mode="random")]
    real = _unrelated(n, tiny.img_resolution)
    perceptual = load_perceptual(device="cpu")
    cfg = ProjectorConfig(num_steps=30)
    scores = score_batch(tiny, to_tensor(gen + real), config=cfg, perceptual=perceptual, seed=0)
    feats = [s.features for s in scores]
    cal = fit_calibration(feats[:n], feats[n:], model_name="tiny", projector=cfg.to_dict(),
                          projector_fingerprint=cfg.fingerprint(), perceptual=perceptual.identity)
    lp_gen, lp_real = [f["lpips"] for f in feats[:n]], [f["lpips"] for f in feats[n:]]
    print(f"tiny vs unrelated, 30 steps: lpips generated {np.round(lp_gen, 3)}, unrelated {np.round(lp_real, 3)}; "
          f"AUC lpips alone {roc_auc(-np.r_[lp_gen, lp_real], np.r_[np.ones(n), np.zeros(n)]):.3f}, "
          f"calibrated in-sample {cal.metrics['train']['auc']:.3f}, {cal.metrics['estimate']} {cal.metrics['auc']:.3f}")
    assert roc_auc(-np.r_[lp_gen, lp_real], np.r_[np.ones(n), np.zeros(n)]) >= 0.9
    assert cal.metrics["train"]["auc"] >= 0.9 and cal.metrics["auc"] >= 0.8
    assert plot_calibration(cal, feats[:n], feats[n:], tmp_path / "e2e.png").exists()


def test_a_feature_that_varies_is_kept_and_all_constant_is_an_error():
    rng = np.random.default_rng(5)
    gen, real = _synthetic(20, 0.02, rng), _synthetic(20, 0.1, rng)
    for f in gen + real:
        f["noise_gaussianity"] = float(rng.normal(0.36, 0.01))
    cal = fit_calibration(gen, real)
    assert cal.features == ["lpips", "psnr", "w_typicality", "noise_gaussianity"]
    assert cal.metrics["dropped_constant_features"] == {}
    with pytest.raises(CalibrationError, match="constant"):
        fit_calibration([{"lpips": 0.1}] * 3, [{"lpips": 0.1}] * 3, features=("lpips",))
