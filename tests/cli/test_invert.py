"""`sgproject invert`, through typer's CliRunner on temporary folders, with the `tiny` model on the CPU.

Results (with --json, one JSON object per line) go to stdout; progress, warnings and skipped files to stderr.
LPIPS runs offline with the deterministic random backbone (SGPROJECT_OFFLINE=1, an empty TORCH_HOME).
"""

import json
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from generator import load_generator
from generator.data.portraits import render_portrait
from generator.metrics.lpips import ENV_WEIGHTS
import projector.video
from generator.util.imaging import to_tensor
from projector.project import ENCODER_SCHEDULE, ProjectorConfig, projector_config
from tests.cli.helpers import assert_clean_failure, clean_lines, run
from tests.projector.videos import decode, pix_fmt, stream_line

FILES = ["noise.npz", "proj.png", "projected_w.npz", "summary.json", "target.png", "trace.json"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("SGPROJECT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)


def _run(*args):
    return run("invert", *args, "--device", "cpu")


def _portrait_png(path, seed=0, res=48):
    """A 48 px procedural portrait: the command crops and resizes it to the model's 32 px."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_portrait(seed, 0, 64)[0]).resize((res, res)).save(path)
    return path


def test_invert_writes_every_file(tmp_path):
    img = _portrait_png(tmp_path / "in" / "face.png")
    out = tmp_path / "out"
    r = _run(img, "--model", "tiny", "--steps", "10", "--outdir", out)
    assert r.exit_code == 0, r.output
    folder = out / "face"
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert "RANDOM backbone" in r.stderr  # said loudly
    assert any("LPIPS" in line and "10 steps" in line for line in clean_lines(r.output))

    G, info = load_generator("tiny", "cpu")
    with np.load(folder / "projected_w.npz") as f:
        assert f["w"].shape == (1, G.num_ws, G.w_dim)
    with np.load(folder / "noise.npz") as f:
        assert [f[k].shape for k in sorted(f.files)] == [(1, 1, *s) for s in G.synthesis.noise_shapes()]
    assert len(json.loads((folder / "trace.json").read_text())) == 10
    with Image.open(folder / "target.png") as im:
        assert im.size == (32, 32)
    with Image.open(folder / "proj.png") as im:
        assert im.size == (32, 32)

    s = json.loads((folder / "summary.json").read_text())
    assert s["model"] == "tiny" and s["model_sha256"] == info.sha256
    assert s["perceptual"] == "lpips-vgg16:random-seed0"
    assert s["projector_fingerprint"] == ProjectorConfig(num_steps=10).fingerprint()
    assert s["projector"]["num_steps"] == 10 and s["projector"]["space"] == "w"
    assert s["seed"] == 0 and s["device"] == "cpu"
    assert s["source"] == str(img) and len(s["source_sha256"]) == 64
    assert s["steps"] == 10 and s["stopped_early"] is False and s["lpips"] > 0
    assert set(s["files"]) == {"target", "projection", "w", "noise", "trace"}


def test_json_lines_bad_image_and_duplicate_names(tmp_path):
    a = _portrait_png(tmp_path / "a" / "face.png", seed=1)
    b = _portrait_png(tmp_path / "b" / "face.png", seed=2)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image, whatever the name says\n")
    out = tmp_path / "out"
    r = _run(a, bad, b, "--model", "tiny", "--steps", "5", "--outdir", out, "--json", "--space", "w+")
    assert r.exit_code == 2, r.output  # some files could not be judged
    # The bad file: exactly one line on stderr, naming it and why.
    skipped = [line for line in clean_lines(r.stderr) if "notes.png" in line]
    assert len(skipped) == 1 and "not an image" in skipped[0], r.stderr
    # The good ones: one JSON object per line on stdout, in input order, each in its own folder.
    lines = clean_lines(r.stdout)
    assert len(lines) == 2, r.stdout
    records = [json.loads(line) for line in lines]
    assert [rec["image"] for rec in records] == [str(a), str(b)]
    assert [rec["folder"] for rec in records] == [str(out / "face"), str(out / "face-2")]
    for rec in records:
        assert rec["steps"] == 5 and rec["lpips"] > 0 and "psnr" in rec
        assert sorted(p.name for p in (out / rec["folder"].rsplit("/", 1)[-1]).iterdir()) == FILES
    assert sorted(p.name for p in out.iterdir()) == ["face", "face-2"]
    s2 = json.loads((out / "face-2" / "summary.json").read_text())
    assert s2["source"] == str(b) and s2["projector"]["space"] == "w+"
    with np.load(out / "face-2" / "projected_w.npz") as f:
        w = f["w"][0]
    assert not np.allclose(w, w[:1]), "w+: one w per layer"
    # Different inputs, different targets (the second did not overwrite the first).
    t1, t2 = (np.asarray(Image.open(out / d / "target.png")) for d in ("face", "face-2"))
    assert not np.array_equal(t1, t2)


def test_video(tmp_path):
    img = _portrait_png(tmp_path / "face.png")
    out = tmp_path / "out"
    r = _run(img, "--model", "tiny", "--steps", "12", "--outdir", out, "--video", "--json")
    assert r.exit_code == 0, r.output
    video = out / "face" / "proj.mp4"
    assert video.is_file()
    line = json.loads(clean_lines(r.stdout)[0])
    assert line["files"]["video"] == str(video) and line["video_codec"] == "h264"
    summary = json.loads((out / "face" / "summary.json").read_text())
    assert summary["files"]["video"] == "proj.mp4"
    assert {k: summary["video"][k] for k in ("codec", "pix_fmt", "frames", "browsers_play")} == {
        "codec": "h264", "pix_fmt": "yuv420p", "frames": 12, "browsers_play": True}
    stream = stream_line(video)
    assert "Video: h264" in stream and pix_fmt(stream) == "yuv420p", stream
    frames = decode(video)
    assert len(frames) == 12  # one frame per step
    # target | projection side by side, each 32 px enlarged 8x (nearest) to 256
    assert frames[0].shape == (256, 512, 3)
    target = np.asarray(Image.open(out / "face" / "target.png"))
    left = frames[-1][4::8, 4:256:8].astype(int)  # block centres, away from codec ringing at the edges
    assert np.abs(left - target.astype(int)).mean() < 6  # lossy H.264 at CRF 18: close, not equal
    assert not any(p.name.startswith(".") for p in (out / "face").iterdir()), "no temporary files left"


def test_video_without_the_extra_is_mpeg4_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # the `video` extra is not installed
    monkeypatch.setattr(projector.video, "_warned", False)
    img = _portrait_png(tmp_path / "face.png")
    out = tmp_path / "out"
    r = _run(img, "--model", "tiny", "--steps", "4", "--outdir", out, "--video", "--json")
    assert r.exit_code == 0, r.output
    assert "sgproject[video]" in r.stderr and "browsers do not play" in r.stderr, r.stderr
    assert json.loads(clean_lines(r.stdout)[0])["video_codec"] == "mpeg4"
    summary = json.loads((out / "face" / "summary.json").read_text())
    assert summary["video"]["codec"] == "mpeg4" and summary["video"]["browsers_play"] is False
    cap = cv2.VideoCapture(str(out / "face" / "proj.mp4"))  # OpenCV reads its own MPEG-4 Part 2
    try:
        assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    finally:
        cap.release()
    assert "Video: mpeg4" in stream_line(out / "face" / "proj.mp4")


def test_bad_space_exits_2(tmp_path):
    img = _portrait_png(tmp_path / "face.png")
    r = _run(img, "--model", "tiny", "--steps", "2", "--space", "z", "--outdir", tmp_path / "out")
    assert_clean_failure(r, "--space")
    assert not (tmp_path / "out").exists()


def test_nothing_readable_exits_2(tmp_path):
    missing = tmp_path / "missing.png"
    r = _run(missing, "--model", "tiny", "--steps", "2", "--outdir", tmp_path / "out")
    assert r.exit_code == 2
    assert "missing.png" in r.stderr and "no image could be read" in r.stderr
    assert not (tmp_path / "out").exists()


def test_early_stop_and_seed_reach_the_projector(tmp_path):
    img = _portrait_png(tmp_path / "face.png")
    out = tmp_path / "out"
    r = _run(img, "--model", "tiny", "--steps", "30", "--early-stop", "1", "--seed", "3", "--batch-size", "1",
             "--outdir", out, "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(clean_lines(r.stdout)[0])
    s = json.loads((out / "face" / "summary.json").read_text())
    assert s["seed"] == 3 and s["projector"]["early_stop"] == 1
    assert rec["steps"] == len(json.loads((out / "face" / "trace.json").read_text()))
    assert rec["stopped_early"] == (rec["steps"] < 30)


def test_init_samples_reaches_the_projector(tmp_path):
    img = _portrait_png(tmp_path / "face.png")
    r = _run(img, "--model", "tiny", "--steps", "2", "--init-samples", "8", "--outdir", tmp_path / "out")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "out" / "face" / "summary.json").read_text())
    assert s["projector"]["init_samples"] == 8


def test_align_writes_aligned_png_and_records_it(tmp_path):
    img = tmp_path / "face.png"
    Image.fromarray(render_portrait(0, 0, 128)[0]).save(img)
    out = tmp_path / "out"
    r = _run(img, "--model", "tiny", "--steps", "5", "--outdir", out, "--align")
    assert r.exit_code == 0, r.output
    with Image.open(out / "face" / "aligned.png") as im:
        assert im.size == (32, 32)
    s = json.loads((out / "face" / "summary.json").read_text())
    assert s["alignment"]["resolution"] == 32 and "aligned" in s["alignment"]
    assert np.array_equal(np.asarray(Image.open(out / "face" / "aligned.png")),
                          np.asarray(Image.open(out / "face" / "target.png")))


def _tiny_encoder(path):
    """A small encoder for `tiny` (untrained but for a non-zero output layer), saved where `--encoder` can read it."""
    from projector.encoder import Encoder, EncoderConfig, save_encoder
    from projector.project import w_statistics

    G, info = load_generator("tiny", "cpu")
    E = Encoder(EncoderConfig(channel_base=256, channel_max=64, hidden=64), resolution=32, w_dim=G.w_dim,
                num_ws=G.num_ws)
    E.set_w_statistics(*w_statistics(G))
    with torch.no_grad():
        E.out.weight.copy_(torch.randn(E.out.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    save_encoder(E, path, info)
    return E


def test_encoder_starts_the_projection_and_is_recorded(tmp_path):
    img = _portrait_png(tmp_path / "face.png")
    enc = tmp_path / "tiny.encoder.safetensors"
    E = _tiny_encoder(enc)
    out = tmp_path / "out"
    r = _run(img, "--model", "tiny", "--steps", "1", "--outdir", out, "--encoder", enc, "--json")
    assert r.exit_code == 0, r.output
    assert "start: encoder" in r.stderr and E.identity() in r.stderr
    s = json.loads((out / "face" / "summary.json").read_text())
    assert s["projector"]["init"] == "encoder" and s["projector"]["encoder_sha256"] == E.identity()
    cfg = ProjectorConfig(num_steps=1)
    assert s["projector_fingerprint"] == projector_config(E, num_steps=1).fingerprint() != cfg.fingerprint()
    assert s["projector"]["lr"] == ENCODER_SCHEDULE["lr"]  # the gentler schedule from a guess
    # One step at learning rate 0 (the ramp-up starts there): w is still the encoder's guess of the target.
    with np.load(out / "face" / "projected_w.npz") as f:
        w = torch.from_numpy(f["w"][0])
    target = to_tensor([np.asarray(Image.open(out / "face" / "target.png"))])
    torch.testing.assert_close(w, E.guess(target).expand_as(w))


def test_encoder_for_another_model_is_refused(tmp_path):
    img = _portrait_png(tmp_path / "face.png")
    enc = tmp_path / "tiny.encoder.safetensors"
    _tiny_encoder(enc)
    r = _run(img, "--model", "portraits-64", "--steps", "1", "--outdir", tmp_path / "out", "--encoder", enc)
    _, tiny_info = load_generator("tiny", "cpu")
    _, p64_info = load_generator("portraits-64", "cpu")
    assert_clean_failure(r, tiny_info.sha256, p64_info.sha256, "train-encoder")
    assert not (tmp_path / "out").exists()
    assert_clean_failure(_run(img, "--model", "tiny", "--outdir", tmp_path / "out", "--encoder", tmp_path / "no.st"),
                         "no such encoder file")
