"""`sgproject detect`, through typer's CliRunner (and torchrun in a subprocess), with the `tiny` model on the CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import projector.video
from detectors import batch
from detectors.calibration import fit_calibration
from detectors.results import read_results
from generator import load_generator
from generator.data.portraits import render_portrait
from generator.metrics.lpips import ENV_WEIGHTS, load_perceptual
from projector.project import ProjectorConfig
from tests.cli.helpers import assert_clean_failure, clean_lines, run
from tests.projector.videos import decode, pix_fmt, stream_line

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("SGPROJECT_OFFLINE", "1")
    monkeypatch.setenv("SGPROJECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)


def _detect(*args):
    return run("detect", *args, "--device", "cpu")


def _images(folder: Path, n: int, size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        p = folder / f"img{i}.png"
        small.resize((size, size), Image.Resampling.BICUBIC).save(p)
        out.append(p)
    return out


def test_detect_writes_everything(tmp_path):
    paths = _images(tmp_path / "in", 2)
    (tmp_path / "in" / "bad.png").write_bytes(b"")
    rep = tmp_path / "rep"
    r = _detect(tmp_path / "in", "--model", "tiny", "--steps", "5", "--report", rep, "--no-calibration")
    assert r.exit_code == 2, r.output  # one file could not be judged, nothing flagged
    for name in ("results.jsonl", "run.json", "report.html", "report.json", "report.csv"):
        assert (rep / name).is_file(), name
    assert any((rep / "assets").iterdir())
    rows = read_results(rep / "results.jsonl")
    assert sorted(r_["path"] for r_ in rows) == sorted([str(p) for p in paths] + [str(tmp_path / "in" / "bad.png")])
    lines = clean_lines(r.output)
    for p in [*paths, tmp_path / "in" / "bad.png"]:
        assert sum(str(p) in line for line in lines) == 1, (p, r.output)
    assert json.loads((rep / "run.json").read_text())["partial"] is False


def test_json_lines_and_csv_only(tmp_path):
    paths = _images(tmp_path / "in", 2)
    rep = tmp_path / "rep"
    r = _detect(tmp_path / "in", "--model", "tiny", "--steps", "5", "--report", rep, "--no-calibration",
                "--json", "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in clean_lines(r.stdout)]
    assert sorted(row["path"] for row in rows) == sorted(map(str, paths))
    assert all(row["status"] == "ok" and row["features"]["lpips"] > 0 for row in rows)
    assert (rep / "report.csv").is_file()
    assert not (rep / "report.html").exists() and not (rep / "report.json").exists()


def test_bad_format_and_missing_path_exit_2(tmp_path):
    _images(tmp_path / "in", 1)
    r = _detect(tmp_path / "in", "--model", "tiny", "--steps", "2", "--report", tmp_path / "rep",
                "--no-calibration", "--format", "pdf")
    assert_clean_failure(r, "--format")
    r = _detect(tmp_path / "nope", "--model", "tiny", "--steps", "2", "--report", tmp_path / "rep",
                "--no-calibration")
    assert_clean_failure(r, "nope")
    assert not (tmp_path / "rep" / "results.jsonl").exists()


def test_resume_skips_judged_images(tmp_path):
    _images(tmp_path / "in", 2)
    rep = tmp_path / "rep"
    args = (tmp_path / "in", "--model", "tiny", "--steps", "5", "--report", rep, "--no-calibration")
    assert _detect(*args).exit_code == 0
    before = (rep / "results.jsonl").read_text()
    r = _detect(*args, "--resume", "--json")
    assert r.exit_code == 0, r.output
    assert clean_lines(r.stdout) == []  # nothing new judged
    assert (rep / "results.jsonl").read_text() == before
    assert "2 files" in r.stderr


def _csp(html: str) -> str:
    return re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html).group(1)


def test_video_only_on_request_and_resume_adds_the_missing_ones(tmp_path, monkeypatch):
    paths = _images(tmp_path / "in", 2)
    rep = tmp_path / "rep"
    args = (tmp_path / "in", "--model", "tiny", "--steps", "10", "--report", rep, "--no-calibration")
    assert _detect(*args).exit_code == 0
    # Without --video, nothing about videos anywhere.
    assert all("video" not in row for row in read_results(rep / "results.jsonl"))
    assert not list((rep / "assets").glob("*.mp4")) and "video" not in json.loads((rep / "run.json").read_text())
    html = (rep / "report.html").read_text(encoding="utf-8")
    assert "<video" not in html and "media-src" not in _csp(html)

    # --video --resume: the rows judged without a video are judged again, with one. At most 4 frames per video
    # here (the real bound is ~100): steps 3, 6, 9 and the last.
    monkeypatch.setattr(batch, "frame_stride", lambda steps, shape: projector.video.frame_stride(
        steps, shape, max_frames=4))
    r = _detect(*args, "--video", "--resume", "--json")
    assert r.exit_code == 0, r.output
    rows = read_results(rep / "results.jsonl")
    assert sorted(row["path"] for row in rows) == sorted(map(str, paths))
    assert len(clean_lines(r.stdout)) == 2  # both judged again
    run_json = json.loads((rep / "run.json").read_text())
    assert run_json["video"] == {"codec": "h264", "fps": batch.VIDEO_FPS, "frame_every": 3}
    html = (rep / "report.html").read_text(encoding="utf-8")
    assert "media-src 'self'" in _csp(html)
    for row in rows:
        video = rep / row["video"]
        assert row["video"] == f"assets/{row['sha256'][:16]}-projection.mp4" and video.is_file()
        stream = stream_line(video)
        assert "Video: h264" in stream and pix_fmt(stream) == "yuv420p" and "512x256" in stream, stream
        frames = decode(video)
        assert len(frames) == 4 and frames[0].shape == (256, 512, 3)
        target = np.asarray(Image.open(rep / row["target"]))
        recon = np.asarray(Image.open(rep / row["reconstruction"]))
        assert np.abs(frames[0][4::8, 4:256:8].astype(int) - target).mean() < 6  # left: the target
        assert np.abs(frames[-1][4::8, 260::8].astype(int) - recon).mean() < 12  # right: close to the result
        assert f'<video src="{row["video"]}"' in html
    with open(rep / "report.csv", encoding="utf-8-sig") as f:
        assert "video" in f.readline().split(",")

    # Once they have their videos, --resume --video skips them.
    r = _detect(*args, "--video", "--resume", "--json")
    assert r.exit_code == 0 and clean_lines(r.stdout) == [], r.output


def test_video_without_the_extra_warns_and_links_the_mpeg4_files(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # the `video` extra is not installed
    monkeypatch.setattr(projector.video, "_warned", False)
    _images(tmp_path / "in", 1)
    rep = tmp_path / "rep"
    r = _detect(tmp_path / "in", "--model", "tiny", "--steps", "3", "--report", rep, "--no-calibration", "--video")
    assert r.exit_code == 0, r.output
    assert "sgproject[video]" in r.stderr and "browsers do not play" in r.stderr, r.stderr
    assert json.loads((rep / "run.json").read_text())["video"]["codec"] == "mpeg4"
    (row,) = read_results(rep / "results.jsonl")
    assert "Video: mpeg4" in stream_line(rep / row["video"])
    html = (rep / "report.html").read_text(encoding="utf-8")
    assert "<video" not in html and f'<a href="{row["video"]}">' in html and "browsers do not play it" in html


def _calibration_file(path: Path, steps: int, t_generated: float, t_real: float, encoder=None) -> Path:
    """A calibration of `steps` from w_avg (from `encoder`'s guess, given one), its bands set by hand."""
    G, info = load_generator("tiny", "cpu")
    perceptual = load_perceptual(device="cpu")
    cfg = ProjectorConfig(num_steps=steps)
    if encoder is not None:
        cfg = cfg.using_encoder(encoder)
    cal = fit_calibration([{"lpips": 0.01 * (1 + 0.1 * i)} for i in range(4)],
                          [{"lpips": 0.1 * (1 + 0.1 * i)} for i in range(4)], kind="threshold",
                          model_sha256=info.sha256, model_name=info.name, projector=cfg.to_dict(),
                          projector_fingerprint=cfg.fingerprint(), perceptual=perceptual.identity)
    cal.t_generated, cal.t_real = t_generated, t_real
    return cal.save(path)


def test_exit_codes_with_calibration(tmp_path):
    _images(tmp_path / "in", 1)
    flag = _calibration_file(tmp_path / "flag.json", 5, 0.0, -1.0)
    clear = _calibration_file(tmp_path / "clear.json", 5, 2.0, 1.0)
    base = ("--model", "tiny", "--steps", "5", "--batch-size", "1")
    r = _detect(tmp_path / "in", *base, "--report", tmp_path / "r1", "--calibration", flag, "--json")
    assert r.exit_code == 1, r.output
    assert json.loads(clean_lines(r.stdout)[0])["verdict"] == "generated"
    r = _detect(tmp_path / "in", *base, "--report", tmp_path / "r0", "--calibration", clear)
    assert r.exit_code == 0, r.output
    (tmp_path / "in" / "bad.png").write_bytes(b"")
    r = _detect(tmp_path / "in", *base, "--report", tmp_path / "r3", "--calibration", flag)
    assert r.exit_code == 1, r.output  # flagged and errors: 1 wins
    r = _detect(tmp_path / "in" / "bad.png", *base, "--report", tmp_path / "r2", "--calibration", flag)
    assert r.exit_code == 2, r.output
    # a calibration made with other settings is refused
    r = _detect(tmp_path / "in", "--model", "tiny", "--steps", "6", "--report", tmp_path / "r4",
                "--calibration", flag)
    assert r.exit_code == 2 and "num_steps" in r.stderr, r.output


def test_second_look_for_what_stays_uncertain(tmp_path):
    """With an escalation calibration, images the calibration leaves uncertain are projected again, longer, and
    judged by it (here: called generated, exit 1); --no-escalate leaves them uncertain (exit 0)."""
    from projector.encoder import Encoder, EncoderConfig, save_encoder
    from projector.project import w_statistics

    _images(tmp_path / "in", 2)
    G, info = load_generator("tiny", "cpu")
    E = Encoder(EncoderConfig(channel_base=256, channel_max=32, hidden=32), resolution=32, w_dim=G.w_dim,
                num_ws=G.num_ws)
    E.set_w_statistics(*w_statistics(G))
    enc = save_encoder(E, tmp_path / "tiny.encoder.safetensors", info)
    unsure = _calibration_file(tmp_path / "unsure.json", 2, 2.0, -1.0, encoder=E)
    deep = _calibration_file(tmp_path / "deep.json", 3, 0.0, -1.0, encoder=E)
    base = (tmp_path / "in", "--model", "tiny", "--encoder", enc, "--calibration", unsure, "--no-cascade")
    r = _detect(*base, "--escalation", deep, "--report", tmp_path / "r1")
    assert r.exit_code == 1, r.output
    assert "second look (3 steps)" in " ".join(clean_lines(r.stderr))
    rows = list(read_results(tmp_path / "r1" / "results.jsonl"))
    assert [(row["verdict"], row["steps"]) for row in rows] == [("generated", 3)] * 2
    r = _detect(*base, "--escalation", deep, "--no-escalate", "--report", tmp_path / "r0")
    assert_clean_failure(r, "--escalation needs")
    r = _detect(*base, "--no-escalate", "--report", tmp_path / "r0")
    assert r.exit_code == 0, r.output
    assert [row["verdict"] for row in read_results(tmp_path / "r0" / "results.jsonl")] == ["uncertain"] * 2


def test_align_records_the_alignment(tmp_path):
    img = tmp_path / "in" / "face.png"
    img.parent.mkdir()
    Image.fromarray(render_portrait(0, 0, 128)[0]).save(img)
    rep = tmp_path / "rep"
    r = _detect(img, "--model", "tiny", "--steps", "5", "--report", rep, "--no-calibration", "--align")
    assert r.exit_code == 0, r.output
    (row,) = read_results(rep / "results.jsonl")
    assert row["status"] == "ok" and row["alignment"] is not None
    assert row["alignment"]["resolution"] == 32 and "aligned" in row["alignment"]
    assert json.loads((rep / "run.json").read_text())["align"] is True


def test_torchrun_two_processes(tmp_path):
    paths = _images(tmp_path / "in", 4)
    rep = tmp_path / "rep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SGPROJECT_OFFLINE": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    p = subprocess.run([str(torchrun), "--nproc_per_node=2", "--standalone", "-m", "sgproject", "detect",
                        str(tmp_path / "in"), "--model", "tiny", "--steps", "3", "--report", str(rep),
                        "--no-calibration", "--device", "cpu"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = read_results(rep / "results.jsonl")
    assert sorted(r["path"] for r in rows) == sorted(map(str, paths))
    assert {r["rank"] for r in rows} == {0, 1}
    assert not list(rep.glob("results.rank*.jsonl"))
    for name in ("report.html", "report.json", "report.csv", "run.json"):
        assert (rep / name).is_file(), name
    assert json.loads((rep / "run.json").read_text())["world_size"] == 2
