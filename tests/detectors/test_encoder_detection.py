"""Detection and calibration that start each projection at an encoder's guess (detectors/batch.py,
detectors/calibrate.py), and fast triage (the guess alone, 0 steps), on the `tiny` model (CPU, random LPIPS
backbone).

What is promised: the settings name the encoder (a calibration refuses another encoder, or none); 0 steps are
only allowed from an encoder and score the guess itself; a run records its encoder and where its time went.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.batch import ENCODER_STEPS, TIME_STAGES, Detector
from detectors.calibrate import CalibrateSettings, calibrate
from detectors.calibration import CalibrationError
from generator.render import generate_images
from generator.util.imaging import to_tensor, to_uint8
from projector.encoder import Encoder, EncoderConfig, save_encoder
from projector.project import ProjectionError, ProjectorConfig, project, w_statistics
from tests.detectors.test_batch import _calibration, _environment, parts  # noqa: F401  (the same setting, model)


def _encoder(G, info, path, seed=0) -> tuple[Encoder, str]:
    """A small encoder for `tiny` (untrained but for a random output layer: its guesses differ per image), saved."""
    E = Encoder(EncoderConfig(channel_base=256, channel_max=32, hidden=32), resolution=G.img_resolution,
                w_dim=G.w_dim, num_ws=G.num_ws)
    E.set_w_statistics(*w_statistics(G))
    with torch.no_grad():
        E.out.weight.copy_(torch.randn(E.out.weight.shape, generator=torch.Generator().manual_seed(seed)) * 0.05)
    save_encoder(E, path, info)
    return E.eval(), str(path)


@pytest.fixture(scope="module")
def encoders(parts, tmp_path_factory):
    G, info, _ = parts
    d = tmp_path_factory.mktemp("enc")
    return _encoder(G, info, d / "a.safetensors", 0), _encoder(G, info, d / "b.safetensors", 1)


def _images(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        p = folder / f"img{i}.png"
        small.resize((32, 32), Image.Resampling.BICUBIC).save(p)
        paths.append(p)
    return paths


def test_zero_steps_only_from_an_encoder():
    with pytest.raises(ProjectionError, match="0 only with init='encoder'"):
        ProjectorConfig(num_steps=0)
    with pytest.raises(ProjectionError, match="at least 0"):
        ProjectorConfig(num_steps=-1, init="encoder", encoder_sha256="x")
    assert ProjectorConfig(num_steps=0, init="encoder", encoder_sha256="x").num_steps == 0


def test_zero_steps_is_the_guess_itself(parts, encoders):
    G, _, perceptual = parts
    (E, _), _ = encoders
    x = to_tensor([to_uint8(img)[0] for img in [G.synthesis(G.mapping(G.z_from_seed(7)))]])
    cfg = ProjectorConfig(num_steps=0, init="encoder", encoder_sha256=E.identity())
    (p,) = project(G, x, config=cfg, perceptual=perceptual, encoder=E)
    assert p.steps == 0 and p.trace == []
    torch.testing.assert_close(p.w, E.guess(x)[0].expand_as(p.w))
    # rendered with the projection's initial noise maps: the same image project() would start from
    assert p.image.shape == x.shape[1:] and np.isfinite(p.lpips)


def test_uncalibrated_detection_from_an_encoder_records_it(parts, encoders, tmp_path):
    (E, path), _ = encoders
    det = Detector.from_options("tiny", "cpu", encoder=path, batch_size=2)
    cfg = det.settings.config
    assert (cfg.init, cfg.encoder_sha256, cfg.num_steps) == ("encoder", E.identity(), ENCODER_STEPS)
    fast = Detector.from_options("tiny", "cpu", encoder=path, fast=True, batch_size=2)
    assert fast.settings.config.num_steps == 0 and fast.settings_key != det.settings_key
    res = fast.run(_images(tmp_path / "in"), tmp_path / "r")
    assert [r["status"] for r in res.all_rows] == ["ok"] * 3 and all(r["steps"] == 0 for r in res.all_rows)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["encoder"]["identity"] == E.identity() and run["projector"]["num_steps"] == 0
    assert set(run["time_s"]) == set(TIME_STAGES) and run["time_s"]["projection"] > 0
    # without an encoder, 0 steps cannot run; the paper's start is the default then
    with pytest.raises(CalibrationError, match="need an encoder"):
        Detector.from_options("tiny", "cpu", fast=True)
    assert Detector.from_options("tiny", "cpu").settings.config.init == "w_avg"


def test_a_calibration_names_its_encoder(parts, encoders, tmp_path):
    G, info, perceptual = parts
    (E, path), (E2, path2) = encoders
    reals = _images(tmp_path / "real", 4)
    cfg = ProjectorConfig(num_steps=0, init="encoder", encoder_sha256=E.identity())
    run = calibrate(G, info, perceptual, reals, tmp_path / "cal.json", real_source="test",
                    settings=CalibrateSettings(config=cfg, n_generated=4, batch_size=4, encoder=E,
                                               hard_negatives=False))  # the files as they are, below
    cal = run.calibration
    assert cal.projector["init"] == "encoder" and cal.projector["encoder_sha256"] == E.identity()

    det = Detector.from_options("tiny", "cpu", calibration=tmp_path / "cal.json", encoder=path, fast=True)
    res = det.run([tmp_path / "real"], tmp_path / "r")
    assert all(r["verdict"] in ("real", "generated", "uncertain") for r in res.all_rows)
    # the same features as the calibration's own for the same images: the encoder's guess, scored alike
    by_source = {str(im.source): f for im, f in zip(run.images, run.features)}
    for r in res.all_rows:
        assert r["features"]["lpips"] == pytest.approx(by_source[r["path"]]["lpips"], rel=1e-5)

    with pytest.raises(CalibrationError, match=f"{E.identity()}.*{E2.identity()}"):  # another encoder
        Detector.from_options("tiny", "cpu", calibration=tmp_path / "cal.json", encoder=path2)
    with pytest.raises(CalibrationError, match="has no bundled encoder"):  # tiny has none
        Detector.from_options("tiny", "cpu", calibration=tmp_path / "cal.json")
    with pytest.raises(CalibrationError, match="num_steps"):  # the calibration's steps, not others
        Detector.from_options("tiny", "cpu", calibration=tmp_path / "cal.json", encoder=path, steps=3)


def test_generated_images_are_easier_from_their_encoders_guess(parts, encoders):
    """The guess of an encoder is a real start: fed the image of a w, a projection of 0 steps from an encoder that
    guesses that very w reproduces the image better than from w_avg (the guess is used, not ignored)."""
    G, _, perceptual = parts
    (E, _), _ = encoders
    (_, img), = generate_images(G, [11], noise_mode="const")
    x = to_tensor([img])
    w_true = G.mapping(G.z_from_seed(11))[:, 0]
    oracle = Encoder(E.config, resolution=E.resolution, w_dim=E.w_dim, num_ws=E.num_ws)
    oracle.guess = lambda t: w_true.expand(len(t), -1)  # an encoder that knows the answer
    oracle.identity = lambda: "oracle"
    start = project(G, x, perceptual=perceptual, num_steps=0, init="encoder", encoder_sha256="oracle",
                    encoder=oracle)[0]
    avg = project(G, x, perceptual=perceptual, num_steps=1, lr=0.0)[0]
    assert start.lpips < avg.lpips


@pytest.fixture
def steps_seen(monkeypatch) -> list[tuple[int, int]]:
    """(steps, images) of every score_batch call that detection makes, in order."""
    import detectors.batch as batch

    seen = []
    real_score_batch = batch.score_batch

    def spy(G_, targets, *, config, **kw):
        seen.append((config.num_steps, len(targets)))
        return real_score_batch(G_, targets, config=config, **kw)

    monkeypatch.setattr(batch, "score_batch", spy)
    return seen


def _cal(parts, E, steps, t_generated, t_real):
    """A calibration of `steps` from E's guess, its bands set by hand (test_batch._calibration)."""
    cfg = ProjectorConfig(num_steps=steps, init="encoder", encoder_sha256=E.identity())
    return _calibration(parts, t_generated, t_real, cfg)


@pytest.mark.parametrize("guess_says", ["real", "uncertain", "generated"])
def test_cascade_clears_only_what_the_guess_shows_real(parts, encoders, tmp_path, steps_seen, guess_says):
    """Where the triage calibration says 'real' an image gets that verdict from the guess (0 steps, a note says so)
    and is never optimised; where it says 'uncertain' or 'generated' the image goes on to the full projection and
    its calibration (an accusation always rests on the optimised projection)."""
    from detectors.batch import DetectSettings

    G, info, perceptual = parts
    (E, _), _ = encoders
    full = _cal(parts, E, 2, 2.0, 1.0)  # calls everything real
    bands = {"real": (2.0, 1.0), "uncertain": (2.0, -1.0), "generated": (0.0, -1.0)}[guess_says]
    triage = _cal(parts, E, 0, *bands)
    settings = DetectSettings(config=ProjectorConfig(num_steps=2, init="encoder", encoder_sha256=E.identity()),
                              batch_size=3)
    det = Detector(G, info, perceptual, settings, calibration=full, encoder=E, triage=triage)
    res = det.run(_images(tmp_path / "in"), tmp_path / "r")
    rows = res.all_rows
    assert all(r["verdict"] == "real" for r in rows)
    if guess_says == "real":
        assert steps_seen == [(0, 3)]
        assert all(r["steps"] == 0 and any("encoder's guess alone" in n for n in r["notes"]) for r in rows)
    else:
        assert steps_seen == [(0, 3), (2, 3)]
        assert all(r["steps"] == 2 for r in rows)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["calibration"]["triage"]["t_real"] == triage.t_real
    assert "first the encoder&#39;s guess alone" in (tmp_path / "r" / "report.html").read_text()
    # a triage calibration of anything but the guess alone of the same encoder is refused
    with pytest.raises(CalibrationError, match="guess alone"):
        Detector(G, info, perceptual, settings, calibration=full, encoder=E, triage=_cal(parts, E, 1, 2.0, 1.0))


def test_a_guess_judged_without_lpips_makes_no_vgg_pass(parts, encoders, tmp_path, monkeypatch):
    """A calibration of the guess alone that uses no LPIPS feature (the bundled fast one) is scored without any VGG
    pass: the same PSNR, w and reconstruction, no lpips, a pixel-difference heat map; with steps it is refused."""
    import dataclasses

    from detectors.batch import DetectSettings
    from detectors.calibration import fit_calibration
    from detectors.scoring import score_batch

    G, info, perceptual = parts
    (E, _), _ = encoders
    cfg = ProjectorConfig(num_steps=0, init="encoder", encoder_sha256=E.identity())
    x = to_tensor([img for _, img in generate_images(G, [3, 4, 5])])
    with_lpips = score_batch(G, x, config=cfg, perceptual=perceptual, encoder=E)
    calls = []
    vgg = perceptual.features
    monkeypatch.setattr(perceptual, "features", lambda t: calls.append(len(t)) or vgg(t))
    without = score_batch(G, x, config=cfg, perceptual=perceptual, encoder=E, perceptual_features=False)
    assert calls == []
    for a, b in zip(with_lpips, without):
        assert "lpips" in a.features and "lpips" not in b.features and "lpips_raw" not in b.features
        for k in ("psnr", "w_typicality", "detail"):
            assert b.features[k] == pytest.approx(a.features[k])
        np.testing.assert_array_equal(b.reconstruction, a.reconstruction)
        assert b.heatmap.shape == a.heatmap.shape and b.heatmap.dtype == np.uint8
    with pytest.raises(ValueError, match="guess alone"):
        score_batch(G, x, config=dataclasses.replace(cfg, num_steps=1), perceptual=perceptual, encoder=E,
                    perceptual_features=False)

    # detection with such a calibration: no VGG pass, verdicts from the other features
    gen = [{"psnr": 30.0 + i} for i in range(4)]
    real = [{"psnr": 15.0 + i} for i in range(4)]
    cal = fit_calibration(gen, real, features=["psnr"], model_sha256=info.sha256, model_name=info.name,
                          projector=cfg.to_dict(), projector_fingerprint=cfg.fingerprint(),
                          perceptual=perceptual.identity)
    det = Detector(G, info, perceptual, DetectSettings(config=cfg, batch_size=3), calibration=cal, encoder=E)
    rows = det.run(_images(tmp_path / "in"), tmp_path / "r").all_rows
    assert calls == [] and len(rows) == 3
    assert all(r["verdict"] in ("generated", "uncertain", "real") and "lpips" not in r["features"] for r in rows)
    assert all("pixel differences" in r["notes"][-1] for r in rows)


@pytest.mark.parametrize("first_says", ["real", "uncertain", "generated"])
def test_a_second_look_judges_only_what_stays_uncertain(parts, encoders, tmp_path, steps_seen, first_says):
    """The cascade's last stage: an image the calibration leaves 'uncertain' is projected again with the escalation
    calibration's longer settings from the same guess and judged by that calibration (its row says so, with the
    first probability); an image the calibration decides keeps that verdict and is projected once."""
    from detectors.batch import DetectSettings

    G, info, perceptual = parts
    (E, _), _ = encoders
    bands = {"real": (2.0, 1.0), "uncertain": (2.0, -1.0), "generated": (0.0, -1.0)}[first_says]
    main = _cal(parts, E, 2, *bands)
    deep = _cal(parts, E, 3, 0.0, -1.0)  # calls everything generated
    settings = DetectSettings(config=ProjectorConfig(**main.projector), batch_size=3)
    det = Detector(G, info, perceptual, settings, calibration=main, encoder=E, escalation=deep)
    rows = det.run(_images(tmp_path / "in"), tmp_path / "r").all_rows
    if first_says == "uncertain":
        assert steps_seen == [(2, 3), (3, 3)]
        assert all(r["verdict"] == "generated" and r["steps"] == 3 for r in rows)
        assert all(any("uncertain after 2 steps (P " in n and "3 steps" in n for n in r["notes"]) for r in rows)
    else:
        assert steps_seen == [(2, 3)]
        assert all(r["verdict"] == first_says and r["steps"] == 2 for r in rows)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["calibration"]["escalation"]["steps"] == 3
    assert "Second look" in (tmp_path / "r" / "report.html").read_text()
    # a run with the last stage is another setting than one without (resume does not mix their rows)
    assert det.settings_key != Detector(G, info, perceptual, settings, calibration=main, encoder=E).settings_key


def test_an_escalation_must_be_a_longer_projection_from_the_same_guess(parts, encoders):
    from detectors.batch import DetectSettings

    G, info, perceptual = parts
    (E, _), (E2, _) = encoders
    main = _cal(parts, E, 2, 2.0, -1.0)
    settings = DetectSettings(config=ProjectorConfig(**main.projector), batch_size=3)
    for deep, why in ((_cal(parts, E, 2, 0.0, -1.0), "longer projection"),  # not longer
                      (_cal(parts, E2, 3, 0.0, -1.0), "longer projection"),  # another encoder
                      (_calibration(parts, 0.0, -1.0), "longer projection")):  # from w_avg
        with pytest.raises(CalibrationError, match=why):
            Detector(G, info, perceptual, settings, calibration=main, encoder=E, escalation=deep)
    other = _cal(parts, E, 3, 0.0, -1.0)
    other.model_sha256 = "0" * 64
    with pytest.raises(CalibrationError, match="model sha256"):
        Detector(G, info, perceptual, settings, calibration=main, encoder=E, escalation=other)
