"""The domain check (detectors/domain.py): the fit and its held-out threshold, its file, and detection's
'out-of-domain' verdict (not projected, exit code 2, in the reports); `sgproject calibrate-domain` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.detectors.helpers import assert_set_aside_in_reports, count_projected
from detectors.batch import Detector, DetectSettings, RunResult
from detectors.domain import RIDGE, DomainCheck, DomainError, domain_check_for, embed, fit_domain_check
from generator.metrics.features import load_feature_network
from projector.project import ProjectorConfig
from tests.cli.helpers import run
from tests.detectors.test_batch import _calibration, _environment, _smooth, parts  # noqa: F401


def _noise_image(seed: int, size: int = 32) -> np.ndarray:
    """Pixel noise: nothing like the smooth colour fields the checks below are fitted on."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _gaussian_check(n=400, d=6, seed=0, **kw) -> tuple[DomainCheck, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, d)) * np.arange(1, d + 1)
    return fit_domain_check(x, ["a"] * (n // 2) + ["b"] * (n - n // 2), feature_net="random", identity="x", **kw), x


def test_threshold_is_a_held_out_quantile_and_far_points_are_out():
    check, x = _gaussian_check()
    assert check.n == 400 and set(check.groups) == {"a", "b"} and sum(g["n"] for g in check.groups.values()) == 400
    # about 0.5% of the fitting images were over the threshold when held out: a few, not none, not many
    assert 0 < sum(g["over"] for g in check.groups.values()) <= 6
    # in-sample distances are smaller than held-out ones, so fewer than 0.5% of them are over it
    assert np.mean(check.distances(x) > check.threshold) <= 0.005
    # new points of the same distribution: about 0.5% out; far points: all out
    new = np.random.default_rng(1).normal(size=(4000, 6)) * np.arange(1, 7)
    assert np.mean(check.distances(new) > check.threshold) < 0.02
    assert np.all(check.distances(new[:50] * 4 + 20) > check.threshold)
    # the distance is the Mahalanobis distance of the fitted Gaussian (with its ridge)
    z = x[:3] - x.mean(0)
    cov = np.cov(x, rowvar=False)
    cov += RIDGE * np.mean(np.diag(cov)) * np.eye(6)
    want = np.sqrt(np.einsum("nd,de,ne->n", z, np.linalg.inv(cov), z))
    assert np.allclose(check.distances(x[:3]), want, rtol=1e-6)
    assert check.reason(check.threshold - 1e-9) is None
    assert "outside the model's domain" in check.reason(check.threshold + 1)
    # a larger quantile puts the threshold further out
    assert _gaussian_check(quantile=0.9)[0].threshold < check.threshold


def test_domain_file_round_trip_and_refusals(tmp_path):
    check, x = _gaussian_check()
    path = check.save(tmp_path / "m.domain.safetensors")
    back = DomainCheck.load(path)
    assert back.threshold == check.threshold and back.groups == check.groups and back.identity == "x"
    assert np.array_equal(back.distances(x), check.distances(x))
    assert domain_check_for("no-such-model") is None
    assert domain_check_for("no-such-model", path).n == 400
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DomainError, match="cannot read"):
        DomainCheck.load(tmp_path / "bad.safetensors")
    with pytest.raises(DomainError, match="at least"):
        fit_domain_check(x[:20], ["a"] * 20, feature_net="random", identity="x")
    with pytest.raises(DomainError, match="fit it again"):  # another feature network than the one it was fitted with
        check.network()


def _fitted_on_smooth_images() -> DomainCheck:
    net = load_feature_network("random")
    pixels = [_smooth(1000 + i) for i in range(200)]
    return fit_domain_check(embed(net, pixels), ["smooth"] * 200, feature_net="random", identity=net.identity)


def test_outside_the_domain_is_out_of_domain_and_never_projected(parts, tmp_path, monkeypatch):
    G, info, perceptual = parts
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_noise_image(0)).save(folder / "noise.png")
    Image.fromarray(_smooth(3)).save(folder / "smooth.png")
    seen = count_projected(monkeypatch)
    cal = _calibration(parts, 0.0, -1.0)  # would call everything it scores 'generated'
    settings = DetectSettings(config=ProjectorConfig(num_steps=2), batch_size=4)
    det = Detector(G, info, perceptual, settings, calibration=cal, domain=_fitted_on_smooth_images())
    res = det.run([folder], tmp_path / "report")
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in res.all_rows}
    assert rows["noise.png"]["verdict"] == "out-of-domain" and rows["noise.png"]["probability"] is None
    assert rows["noise.png"]["features"]["domain_distance"] > det.domain.threshold
    assert "outside the model's domain" in rows["noise.png"]["notes"][-1]
    assert rows["smooth.png"]["verdict"] == "generated"
    assert seen == [1]  # only the smooth image was projected
    assert res.counts()["out-of-domain"] == 1 and res.exit_code() == 1
    assert_set_aside_in_reports(tmp_path / "report", "out-of-domain", "Out of domain", "outside the model's domain", 1)
    # without a calibration there are no verdicts, and no domain check either
    assert Detector(G, info, perceptual, settings, domain=det.domain).domain is None
    # the domain check is part of the settings: rows made without it are not resumed with it
    plain = Detector(G, info, perceptual, settings, calibration=cal)
    assert plain.settings_key != det.settings_key


def test_exit_code_counts_out_of_domain_as_not_judged(tmp_path):
    def rr(*verdicts):
        rows = [{"status": "ok", "verdict": v} for v in verdicts]
        return RunResult(rows=rows, all_rows=rows, reports={}, interrupted=False, report_dir=tmp_path, rank=0)

    assert rr("real", "out-of-domain").exit_code() == 2
    assert rr("generated", "out-of-domain").exit_code() == 1


def test_calibrate_domain_cli_then_detect_with_it(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for i in range(90):
        Image.fromarray(_smooth(i)).save(real / f"{i}.png")
    out = tmp_path / "tiny.domain.safetensors"
    r = run("calibrate-domain", "--model", "tiny", "--real", real, "--n-generated", 20, "--feature-net", "random",
            "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    check = DomainCheck.load(out)
    assert check.n == 110 and check.feature_net == "random"
    assert {"real:clean", "real:blur1", "generated:clean", "generated:crop95"} <= set(check.groups)
    assert "threshold" in r.stdout and "real:clean" in r.stdout
    # without a calibration a domain check has nothing to guard
    r = run("detect", real / "0.png", "--model", "tiny", "--no-calibration", "--domain", out, "--report",
            tmp_path / "rep")
    assert r.exit_code == 2 and "--domain needs a calibration" in r.stderr, r.output
    r = run("calibrate-domain", "--model", "tiny", "--real", tmp_path / "nothing", "--out", out)
    assert r.exit_code == 2 and "no such folder" in r.stderr, r.output
