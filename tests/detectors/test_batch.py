"""Tests for detectors/batch.py (the Detector engine) and detectors/degrade.py, with the `tiny` model on the CPU.

What the engine promises: every file ends in results.jsonl with the right status, a kill loses and repeats nothing
(resume), settings changes are not mixed up with old rows, duplicate content is projected once, and the exit code
follows the virus-scanner convention.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import detectors.batch as batch
from detectors.batch import Detector, DetectSettings, RunResult
from detectors.calibration import fit_calibration
from detectors.degrade import degradation_of
from detectors.images import read_rgb
from detectors.results import read_results
from generator import load_generator
from generator.metrics.lpips import ENV_WEIGHTS, load_perceptual
from generator.util.imaging import centre_crop_resize
from projector.project import ProjectorConfig
from tests.detectors.badfiles import make_bad_files
from tests.detectors.helpers import offline_environment

STEPS = 4


@pytest.fixture(autouse=True, scope="module")
def _environment(tmp_path_factory):
    """Offline LPIPS (random backbone), private cache and TORCH_HOME, one torch thread."""
    cache = tmp_path_factory.mktemp("cache")
    with offline_environment(cache), pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(cache / "torch_home"))
        mp.delenv(ENV_WEIGHTS, raising=False)
        yield


@pytest.fixture(scope="module")
def parts():
    G, info = load_generator("tiny", "cpu")
    return G, info, load_perceptual(device="cpu")


def _detector(parts, *, steps=STEPS, batch_size=2, calibration=None, **kw) -> Detector:
    G, info, perceptual = parts
    settings = DetectSettings(config=ProjectorConfig(num_steps=steps), batch_size=batch_size, **kw)
    return Detector(G, info, perceptual, settings, calibration=calibration)


def _smooth(seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return np.asarray(small.resize((size, size), Image.Resampling.BICUBIC))


def _images(folder, n, start=0, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        p = folder / f"img{i}.png"
        Image.fromarray(_smooth(i, size)).save(p)
        paths.append(p)
    return paths


class Counting:
    """Wraps score_batch: counts the images it is given; raises KeyboardInterrupt on call number `die_on`."""

    def __init__(self, die_on: int | None = None):
        self.calls: list[int] = []
        self.die_on = die_on

    def __call__(self, G, targets, **kw):
        self.calls.append(len(targets))
        if self.die_on is not None and len(self.calls) == self.die_on:
            raise KeyboardInterrupt
        return _real_score_batch(G, targets, **kw)

    @property
    def images(self) -> int:
        return sum(self.calls[: self.die_on - 1] if self.die_on else self.calls)


_real_score_batch = batch.score_batch


def _by_path(rows):
    out = {}
    for r in rows:
        assert r["path"] not in out, f"two rows for {r['path']}"
        out[r["path"]] = r
    return out


# ------------------------------------------------------------------------------------------------ bad files


def test_every_bad_file_gets_the_right_status(parts, tmp_path):
    folder = tmp_path / "in"
    expected = make_bad_files(folder)
    # a 'good' animated gif, RGBA, CMYK, 16-bit and non-ASCII name are among the loadable ones
    res = _detector(parts, steps=2, batch_size=8).run([folder], tmp_path / "report")
    assert not res.interrupted
    rows = _by_path(read_results(tmp_path / "report" / "results.jsonl"))
    # photo.heic cannot be decoded, but a walked phone photo must get its error row, not vanish from the report
    want = {str(folder / name): exp for name, exp in expected.items() if not name.startswith(".")}
    assert set(rows) == set(want)  # hidden files absent, loop/inner.png once (the link loop ended)
    for path, exp in want.items():
        row = rows[path]
        if exp is None:
            assert row["status"] == "ok", (path, row["error"])
            assert row["features"]["lpips"] > 0 and row["error"] is None
            assert (tmp_path / "report" / row["reconstruction"]).is_file()
        else:
            assert row["status"] == "error", path
            assert exp in row["error"], (path, row["error"], exp)
            assert row["features"] is None and row["verdict"] is None
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["partial"] is False
    assert sorted(r["status"] for r in doc["rows"]) == sorted(r["status"] for r in rows.values())
    assert res.exit_code() == 2  # errors, nothing flagged (no calibration)

    heic = _detector(parts).run([folder / "photo.heic", folder / ".hidden.png"], tmp_path / "named", formats=("json",))
    rows = _by_path(heic.all_rows)
    assert rows[str(folder / "photo.heic")]["status"] == "error"
    assert expected["photo.heic"] in rows[str(folder / "photo.heic")]["error"]
    assert rows[str(folder / ".hidden.png")]["status"] == "ok"  # hidden files load when named


# ---------------------------------------------------------------------------------------------------- resume


def test_resume_after_kill_loses_and_repeats_nothing(parts, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    paths = _images(folder, 5)
    (folder / "bad.png").write_bytes(b"")  # an error row must not be repeated either
    shutil.copy(paths[0], folder / "img0_copy.png")  # duplicate content: its copied row must not repeat
    report = tmp_path / "report"

    dying = Counting(die_on=3)  # batches of 2: two batches written, killed in the third
    monkeypatch.setattr(batch, "score_batch", dying)
    res = _detector(parts).run([folder], report)
    assert res.interrupted
    assert json.loads((report / "run.json").read_text())["partial"] is True
    assert json.loads((report / "report.json").read_text())["partial"] is True
    first = _by_path(read_results(report / "results.jsonl"))
    ok_first = {p for p, r in first.items() if r["status"] == "ok"}
    assert len(ok_first) == 5  # img0, its copy, img1, img2, img3
    assert str(folder / "img0_copy.png") in ok_first
    # the kill tore the next line in half: resume must tolerate it
    with open(report / "results.jsonl", "a", encoding="utf-8") as f:
        f.write('{"path": "' + str(folder / "img4.png") + '", "status": "o')

    again = Counting()
    monkeypatch.setattr(batch, "score_batch", again)
    res2 = _detector(parts).run([folder], report, resume=True)
    assert not res2.interrupted
    assert again.calls == [1]  # only img4 projected
    final = _by_path(read_results(report / "results.jsonl"))
    assert set(final) == {str(p) for p in paths} | {str(folder / "bad.png"), str(folder / "img0_copy.png")}
    for p in ok_first:
        assert final[p] == first[p]  # unchanged, time stamps included
    assert final[str(folder / "img4.png")]["status"] == "ok"
    assert json.loads((report / "run.json").read_text())["partial"] is False
    doc = json.loads((report / "report.json").read_text())
    assert doc["partial"] is False and len(doc["rows"]) == 7
    assert len(res2.all_rows) == 7


def test_rerun_without_resume_starts_fresh(parts, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    _images(folder, 2)
    report = tmp_path / "report"
    _detector(parts).run([folder], report)
    first = read_results(report / "results.jsonl")
    counter = Counting()
    monkeypatch.setattr(batch, "score_batch", counter)
    _detector(parts).run([folder], report)
    assert counter.calls == [2]
    rows = read_results(report / "results.jsonl")
    assert len(rows) == 2 and len(first) == 2


def test_resume_with_other_settings_reuses_nothing(parts, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    _images(folder, 2)
    report = tmp_path / "report"
    d1, d2 = _detector(parts, steps=STEPS), _detector(parts, steps=STEPS + 1)
    assert d1.settings_key != d2.settings_key
    d1.run([folder], report)
    counter = Counting()
    monkeypatch.setattr(batch, "score_batch", counter)
    res = d2.run([folder], report, resume=True)
    assert counter.calls == [2]  # both projected again
    rows = read_results(report / "results.jsonl")
    assert len(rows) == 2 and {r["settings_key"] for r in rows} == {d2.settings_key}
    assert {r["steps"] for r in rows} == {STEPS + 1}
    assert len(res.all_rows) == 2


# ------------------------------------------------------------------------------------------ duplicate content


def test_duplicate_content_is_projected_once(parts, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    (a,) = _images(folder, 1)
    b = folder / "zz_same.png"
    b.write_bytes(a.read_bytes())
    counter = Counting()
    monkeypatch.setattr(batch, "score_batch", counter)
    res = _detector(parts, batch_size=4).run([folder], tmp_path / "report")
    assert counter.calls == [1]
    rows = _by_path(read_results(tmp_path / "report" / "results.jsonl"))
    ra, rb = rows[str(a)], rows[str(b)]
    assert ra["status"] == rb["status"] == "ok"
    assert ra["features"] == rb["features"] and ra["sha256"] == rb["sha256"]
    assert any(f"same content as {a}" in n for n in rb["notes"])
    assert not any("same content" in n for n in ra["notes"])
    assert len(res.all_rows) == 2


# ------------------------------------------------------------------------------------------------ exit codes


def _calibration(parts, t_generated: float, t_real: float, config: ProjectorConfig | None = None):
    """A calibration with the identity of the tiny model and `config` (default: STEPS from w_avg), fitted on
    synthetic features, its verdict bands then set by hand (p >= t_generated: 'generated', p <= t_real: 'real')."""
    G, info, perceptual = parts
    cfg = config or ProjectorConfig(num_steps=STEPS)
    gen = [{"lpips": 0.01 * (1 + 0.1 * i)} for i in range(4)]
    real = [{"lpips": 0.1 * (1 + 0.1 * i)} for i in range(4)]
    cal = fit_calibration(gen, real, kind="threshold", model_sha256=info.sha256, model_name=info.name,
                          projector=cfg.to_dict(), projector_fingerprint=cfg.fingerprint(),
                          perceptual=perceptual.identity)
    cal.t_generated, cal.t_real = t_generated, t_real
    return cal


def flags_everything(parts):
    return _calibration(parts, 0.0, -1.0)


def flags_nothing(parts):
    return _calibration(parts, 2.0, 1.0)


def test_exit_codes(parts, tmp_path):
    (good,) = _images(tmp_path / "in", 1)
    bad = tmp_path / "in" / "bad.png"
    bad.write_bytes(b"")

    r = _detector(parts, calibration=flags_nothing(parts)).run([good], tmp_path / "r0")
    assert r.all_rows[0]["verdict"] == "real" and r.exit_code() == 0

    r = _detector(parts, calibration=flags_everything(parts)).run([good], tmp_path / "r1")
    row = r.all_rows[0]
    assert row["verdict"] == "generated" and 0 <= row["probability"] <= 1 and r.exit_code() == 1

    r = _detector(parts).run([bad], tmp_path / "r2")
    assert r.counts()["error"] == 1 and r.exit_code() == 2

    r = _detector(parts, calibration=flags_everything(parts)).run([good, bad], tmp_path / "r3")
    assert r.counts()["generated"] == 1 and r.counts()["error"] == 1 and r.exit_code() == 1
    assert r.exit_code() == 1

    uncal = _detector(parts).run([good], tmp_path / "r4")
    assert uncal.all_rows[0]["verdict"] is None and uncal.exit_code() == 0


def test_exit_code_from_counts_alone(tmp_path):
    def rr(*statuses):
        rows = [{"status": s if s == "error" else "ok", "verdict": None if s in ("error", "unscored") else s}
                for s in statuses]
        return RunResult(rows=rows, all_rows=rows, reports={}, interrupted=False, report_dir=tmp_path, rank=0)

    assert rr().exit_code() == 0
    assert rr("real", "uncertain", "unscored").exit_code() == 0
    assert rr("real", "generated").exit_code() == 1
    assert rr("error", "real").exit_code() == 2
    assert rr("error", "generated").exit_code() == 1


# ---------------------------------------------------------------------------------------------- degradation


def test_png_at_model_size_is_the_identity(tmp_path):
    clean = _smooth(0)
    Image.fromarray(clean).save(tmp_path / "a.png")
    deg = degradation_of(read_rgb(tmp_path / "a.png"), 32)
    assert deg.is_identity and deg.describe() == "none"
    other = _smooth(1)
    assert deg.apply(other) is other


def test_jpeg_tables_reproduce_the_files_pixels(tmp_path):
    clean = _smooth(2, 32)
    buf = io.BytesIO()
    Image.fromarray(clean).save(buf, format="JPEG", quality=90)
    (tmp_path / "a.jpg").write_bytes(buf.getvalue())
    img = read_rgb(tmp_path / "a.jpg")
    deg = degradation_of(img, 32)
    assert deg.jpeg is not None and not deg.is_identity and "JPEG" in deg.describe()
    target = centre_crop_resize(img.pixels, 32)
    # the generator's output would be the clean image at the model's size: the chain gives the file back
    recon = centre_crop_resize(clean, 32)
    diff = np.abs(deg.apply(recon).astype(int) - target.astype(int)).max()
    assert diff <= 1, diff
    assert np.abs(recon.astype(int) - target.astype(int)).max() > 1  # the JPEG did change something


def test_resized_source_chain_matches_the_loader(tmp_path):
    recon = _smooth(3)  # what the generator would make at 32 px
    up = np.asarray(Image.fromarray(recon).resize((48, 48), Image.Resampling.LANCZOS))
    canvas = np.zeros((48, 64, 3), np.uint8)
    canvas[:, 8:56] = up  # a 64x48 source whose centre crop is the upscaled image
    Image.fromarray(canvas).save(tmp_path / "big.png")
    img = read_rgb(tmp_path / "big.png")
    deg = degradation_of(img, 32)
    assert not deg.is_identity and deg.crop_side == 48 and "resized 32->48->32" in deg.describe()
    target = centre_crop_resize(img.pixels, 32)
    np.testing.assert_array_equal(deg.apply(recon), target)
    assert not np.array_equal(recon, target)  # the resize path is not a no-op
