"""`sgproject calibrate` through typer's CliRunner: one small end-to-end run on the tiny model, and its errors."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from detectors.calibration import Calibration
from generator import load_generator
from generator.data.portraits import render_portrait
from generator.metrics.lpips import random_identity
from projector.project import ProjectorConfig
from tests.cli.helpers import ANSI, assert_clean_failure, run
from tests.detectors.helpers import offline_environment

N_GENERATED, N_REAL, STEPS = 6, 4, 20


@pytest.fixture(autouse=True, scope="module")
def _environment(tmp_path_factory):
    """Offline LPIPS, a private cache, one torch thread (two fight each other on a shared 2-core machine)."""
    with offline_environment(tmp_path_factory.mktemp("cache")):
        yield


def _real_folder(folder):
    """Images the tiny model never made: portraits (one larger than 32 px, one JPEG) and smooth colour fields, in
    a nested folder, plus a file that only looks like an image."""
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(render_portrait(3, 0, 64, supersample=2)[0]).save(folder / "portrait0.png")
    Image.fromarray(render_portrait(3, 1, 48, supersample=2)[0]).save(folder / "sub" / "portrait1.jpg", quality=95)
    rng = np.random.default_rng(0)
    for i in range(N_REAL - 2):
        small = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
        Image.fromarray(cv2.resize(small, (32, 32), interpolation=cv2.INTER_CUBIC)).save(folder / f"smooth{i}.png")
    (folder / "notes.png").write_text("not really a picture")
    return folder


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One calibration run shared by the tests below (projection is the expensive part)."""
    tmp = tmp_path_factory.mktemp("calibrate")
    real = _real_folder(tmp / "real")
    out = tmp / "c.json"
    result = run("calibrate", "--model", "tiny", "--real", real, "--n-generated", N_GENERATED,
                 "--steps", STEPS, "--out", out, "--device", "cpu")
    return result, out


def test_calibrate_writes_json_png_csv(calibrated):
    result, out = calibrated
    assert result.exit_code == 0, result.output
    for path in (out, out.with_suffix(".png"), out.with_name("c.features.csv")):
        assert path.is_file(), path
        assert str(path) in result.stdout
    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG"
    stderr = ANSI.sub("", result.stderr)
    assert "notes.png: not an image" in stderr  # skipped files are listed
    assert "lpips-vgg16:random-seed0" in stderr


def test_calibration_file_records_its_validity(calibrated):
    _, out = calibrated
    cal = Calibration.load(out)
    _, info = load_generator("tiny")
    cfg = ProjectorConfig(num_steps=STEPS)
    assert (cal.model_name, cal.model_sha256) == ("tiny", info.sha256)
    assert cal.projector == cfg.to_dict() and cal.projector_fingerprint == cfg.fingerprint()
    assert cal.perceptual == random_identity() and cal.align is False
    assert (cal.n_generated, cal.n_real) == (N_GENERATED, N_REAL)
    assert cal.generated_seeds == "1000000-1000005"
    cal.check_compatible(model_sha256=info.sha256, projector_fingerprint=cfg.fingerprint(),
                         perceptual=random_identity(), align=False)


def test_calibration_separates_tiny_from_unrelated(calibrated):
    _, out = calibrated
    m = json.loads(out.read_text())["metrics"]
    print(f"CLI, {STEPS} steps: AUC in-sample {m['train']['auc']:.3f}, {m['estimate']} {m['auc']:.3f}")
    assert m["train"]["auc"] >= 0.9 and m["auc"] >= 0.8


def test_features_csv_and_summary(calibrated):
    result, out = calibrated
    with open(out.with_name("c.features.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == ["generated"] * N_GENERATED + ["real"] * N_REAL
    assert rows[0]["source"] == "seed 1000000"
    assert {r["source"].rsplit("/", 1)[-1].split(" (")[0] for r in rows[N_GENERATED:]} == {
        "portrait0.png", "portrait1.jpg", "smooth0.png", "smooth1.png"}
    # hard negatives (the default): image k of a class is variant k in turn; a subfolder is a group of its own
    assert [r["group"] for r in rows[:3]] == ["clean", "jpeg75", "jpeg90"]
    assert sorted(r["group"].split(":")[0] for r in rows[N_GENERATED:]) == [".", ".", ".", "sub"]
    for r in rows:
        assert 0.0 <= float(r["probability"]) <= 1.0 and r["verdict"] in ("generated", "real", "uncertain")
        assert float(r["lpips"]) > 0
    gen_lpips = [float(r["lpips"]) for r in rows[:N_GENERATED]]
    real_lpips = [float(r["lpips"]) for r in rows[N_GENERATED:]]
    assert np.median(gen_lpips) < np.median(real_lpips)
    text = ANSI.sub("", result.stdout)
    for needle in ("AUC", "TPR at 1% FPR", "TPR at 5% FPR", "cross-validation", "verdicts: generated if P >="):
        assert needle in text, needle


def test_missing_real_folder_exits_2(tmp_path):
    r = run("calibrate", "--model", "tiny", "--real", tmp_path / "nope", "--out", tmp_path / "c.json")
    assert_clean_failure(r, "no such folder")
    assert not (tmp_path / "c.json").exists()


def test_empty_real_folder_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("calibrate", "--model", "tiny", "--real", tmp_path / "empty", "--out", tmp_path / "c.json")
    assert_clean_failure(r, "no images found")


def test_bad_kind_exits_2(tmp_path):
    r = run("calibrate", "--real", tmp_path, "--out", tmp_path / "c.json", "--kind", "forest")
    assert_clean_failure(r, "--kind")


def test_fast_calibration_then_fast_detection(tmp_path):
    """`calibrate --fast --encoder E` records the encoder and 0 steps; `detect --fast` with it judges; it refuses
    a detection without an encoder, and --fast without one fails before any work."""
    from projector.encoder import Encoder, EncoderConfig, save_encoder
    from projector.project import w_statistics

    G, info = load_generator("tiny", "cpu")
    E = Encoder(EncoderConfig(channel_base=256, channel_max=32, hidden=32), resolution=32, w_dim=G.w_dim,
                num_ws=G.num_ws)
    E.set_w_statistics(*w_statistics(G))
    enc = save_encoder(E, tmp_path / "tiny.encoder.safetensors", info)
    real = _real_folder(tmp_path / "real")
    out = tmp_path / "fast.json"
    r = run("calibrate", "--model", "tiny", "--real", real, "--n-generated", 4, "--fast", "--encoder", enc,
            "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "0 steps from encoder" in ANSI.sub("", r.stderr)
    cal = Calibration.load(out)
    assert cal.projector["num_steps"] == 0 and cal.projector["encoder_sha256"] == E.identity()

    rep = tmp_path / "rep"
    r = run("detect", real, "--model", "tiny", "--calibration", out, "--fast", "--encoder", enc, "--report", rep,
            "--device", "cpu")
    assert r.exit_code in (0, 1, 2), r.output  # notes.png cannot be judged: 2 unless something is flagged
    assert "no steps (fast triage" in ANSI.sub("", r.stderr)
    rows = [json.loads(line) for line in (rep / "results.jsonl").read_text().splitlines()]
    assert sum(row["status"] == "ok" for row in rows) == N_REAL and all(
        row["verdict"] in ("generated", "real", "uncertain") for row in rows if row["status"] == "ok")
    assert_clean_failure(run("detect", real, "--model", "tiny", "--calibration", out, "--report", rep,
                             "--device", "cpu"), "no bundled encoder", "--encoder")
    assert_clean_failure(run("calibrate", "--model", "tiny", "--real", real, "--fast", "--out", tmp_path / "x.json",
                             "--device", "cpu"), "--fast needs an encoder")
    assert not (tmp_path / "x.json").exists()


def test_refit_fits_again_without_projecting(calibrated, tmp_path):
    _, out = calibrated
    r = run("calibrate", "--refit", out, "--features", "lpips,psnr", "--out", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    new = json.loads((tmp_path / "r.json").read_text())
    old = json.loads(out.read_text())
    assert new["features"] == ["lpips", "psnr"] and new["projector_fingerprint"] == old["projector_fingerprint"]
    assert (tmp_path / "r.features.csv").is_file() and "refit of" in ANSI.sub("", r.stdout)
    assert run("calibrate", "--refit", out, "--out", out).exit_code == 2  # never over its own source
    bad = run("calibrate", "--refit", out, "--features", "lpips,colour", "--out", tmp_path / "b.json")
    assert bad.exit_code == 2 and "colour" in bad.output
    # the 'real' band's share of generated images: recorded, kept by a later refit, and looser means a wider band
    assert old["metrics"]["max_miss"] == 0.0025 and old["metrics"]["max_fpr"] == 0.01
    assert run("calibrate", "--refit", out, "--max-miss", "0.05", "--out", tmp_path / "m.json").exit_code == 0
    loose = json.loads((tmp_path / "m.json").read_text())
    assert loose["metrics"]["max_miss"] == 0.05 and loose["t_real"] >= old["t_real"]
    assert loose["t_generated"] == old["t_generated"]
    assert run("calibrate", "--refit", tmp_path / "m.json", "--out", tmp_path / "m2.json").exit_code == 0
    assert json.loads((tmp_path / "m2.json").read_text())["t_real"] == loose["t_real"]
    assert run("calibrate", "--refit", out, "--max-miss", "0.7", "--out", tmp_path / "x.json").exit_code == 2
