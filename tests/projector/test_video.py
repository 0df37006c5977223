"""Projection videos (projector/video.py): H.264 through the `video` extra's ffmpeg, the OpenCV MPEG-4 Part 2
fallback without it, even frame sizes, atomic writes, ffmpeg's failures, and how many frames a projection keeps."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch

import projector.video as video
from generator.util.imaging import to_uint8
from projector.outputs import save_projection
from projector.project import project
from projector.video import (
    FALLBACK_WARNING,
    H264,
    MPEG4,
    VideoError,
    frame_stride,
    side_by_side,
    video_codec,
    write_projection_video,
)
from tests.projector.videos import avc1_codecs, decode, pix_fmt, stream_line, top_level_boxes


def _frames(size: tuple[int, int], n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A flat-coloured target and n frames fading from black to grey: easy to check after lossy coding."""
    h, w = size
    target = np.empty((h, w, 3), np.uint8)
    target[:] = (200, 40, 90)
    frames = [np.full((h, w, 3), round(200 * k / max(n - 1, 1)), np.uint8) for k in range(n)]
    return target, frames


@pytest.fixture
def no_extra(monkeypatch):
    """The `video` extra hidden: `import imageio_ffmpeg` fails, and the one-time warning is due again."""
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    monkeypatch.setattr(video, "_warned", False)


def _no_temporaries(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


# ------------------------------------------------------------------------------------------------------- H.264


def test_h264_yuv420p_faststart_and_the_frames_decode_back(tmp_path):
    target, frames = _frames((32, 32), 12)
    info = write_projection_video(target, frames, tmp_path / "proj.mp4", fps=30)
    assert info.codec == H264 and (info.width, info.height, info.frames) == (512, 256, 12)
    assert info.to_json() == {"file": "proj.mp4", "codec": "h264", "pix_fmt": "yuv420p", "width": 512, "height": 256,
                              "frames": 12, "fps": 30.0, "browsers_play": True}
    stream = stream_line(tmp_path / "proj.mp4")
    assert "Video: h264" in stream and pix_fmt(stream) == "yuv420p" and "512x256" in stream, stream
    assert "bt709" in stream, stream  # the colour matrix is tagged, so players convert back with the same one
    assert avc1_codecs(tmp_path / "proj.mp4").startswith("avc1.64")  # High profile (8-bit 4:2:0)
    boxes = top_level_boxes(tmp_path / "proj.mp4")
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart: the index first, playable while loading

    back = decode(tmp_path / "proj.mp4")
    assert len(back) == 12 and back[0].shape == (256, 512, 3)
    for k in (0, 6, 11):  # left: the target, enlarged 8x; right: frame k
        assert np.abs(back[k][:, :256].astype(int) - (200, 40, 90)).max() <= 3, k
        assert np.abs(back[k][:, 256:].astype(int) - int(frames[k][0, 0, 0])).max() <= 3, k
    _no_temporaries(tmp_path)


@pytest.mark.parametrize("size, min_size, expect", [((31, 31), 256, (558, 280)), ((7, 5), 1, (10, 8)),
                                                    ((9, 9), 1, (18, 10))])
def test_odd_sizes_are_padded_to_even(tmp_path, size, min_size, expect):
    # 31 px: enlarged 9x to 279 rows, padded to 280; 7x5 and 9x9 at scale 1: 7 and 9 rows padded to 8 and 10.
    target, frames = _frames(size, 3)
    info = write_projection_video(target, frames, tmp_path / "odd.mp4", min_size=min_size)
    assert (info.width, info.height) == expect
    stream = stream_line(tmp_path / "odd.mp4")
    assert "Video: h264" in stream and pix_fmt(stream) == "yuv420p" and f"{expect[0]}x{expect[1]}" in stream
    back = decode(tmp_path / "odd.mp4")
    assert len(back) == 3 and back[0].shape == (expect[1], expect[0], 3)


def test_side_by_side_pads_the_last_row_and_enlarges_by_nearest_neighbour():
    target = np.arange(3 * 2 * 3, dtype=np.uint8).reshape(3, 2, 3)
    frame = target[::-1].copy()
    pair = side_by_side(target, frame, 1)
    assert pair.shape == (4, 4, 3)
    assert np.array_equal(pair[:3, :2], target) and np.array_equal(pair[:3, 2:], frame)
    assert np.array_equal(pair[3], pair[2])  # the padding repeats the edge row
    big = side_by_side(target, frame, 2)
    assert big.shape == (6, 8, 3) and np.array_equal(big[::2, ::2], side_by_side(target, frame, 1)[:3])


def test_ffmpeg_failure_is_a_clear_error_with_its_messages_and_leaves_no_file(tmp_path):
    target, frames = _frames((16, 16), 30)
    with pytest.raises(VideoError) as e:
        write_projection_video(target, frames, tmp_path / "bad.mp4", crf=-10)  # libx264 refuses a negative CRF
    msg = str(e.value)
    assert "ffmpeg could not write" in msg and "bad.mp4" in msg and "exit code" in msg, msg
    assert "crf" in msg.lower() and "\n" not in msg, msg  # ffmpeg's own words, on one line
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_a_missing_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "ffmpeg_exe", lambda: str(tmp_path / "no-such-ffmpeg"))
    target, frames = _frames((16, 16), 2)
    with pytest.raises(VideoError, match="cannot run ffmpeg"):
        write_projection_video(target, frames, tmp_path / "x.mp4", codec=H264)
    assert list(tmp_path.iterdir()) == []


def test_a_previous_file_survives_a_failed_write(tmp_path):
    target, frames = _frames((16, 16), 4)
    write_projection_video(target, frames, tmp_path / "proj.mp4")
    before = (tmp_path / "proj.mp4").read_bytes()
    with pytest.raises(VideoError):
        write_projection_video(target, frames, tmp_path / "proj.mp4", crf=-10)
    assert (tmp_path / "proj.mp4").read_bytes() == before


def test_no_frames_is_an_error(tmp_path):
    target, _ = _frames((16, 16), 1)
    with pytest.raises(VideoError, match="no frames"):
        write_projection_video(target, [], tmp_path / "x.mp4")


# ---------------------------------------------------------------------------------------- without the extra


def test_without_the_extra_mpeg4_with_one_warning_naming_the_extra(tmp_path, no_extra, caplog):
    assert video.ffmpeg_exe() is None
    with caplog.at_level(logging.WARNING, logger="projector.video"):
        assert video_codec() == MPEG4
        assert video_codec() == MPEG4  # once per process
    warnings = [r.getMessage() for r in caplog.records if r.name == "projector.video"]
    assert warnings == [FALLBACK_WARNING]
    assert "sgproject[video]" in FALLBACK_WARNING and "browsers do not play" in FALLBACK_WARNING

    target, frames = _frames((31, 31), 5)  # odd: padded for the fallback too (279 rows -> 280)
    info = write_projection_video(target, frames, tmp_path / "proj.mp4")
    assert info.codec == MPEG4 and (info.width, info.height) == (558, 280)
    assert info.to_json()["browsers_play"] is False and info.to_json()["pix_fmt"] is None
    stream = stream_line(tmp_path / "proj.mp4")
    assert "Video: mpeg4" in stream and "558x280" in stream, stream
    assert len(decode(tmp_path / "proj.mp4")) == 5
    _no_temporaries(tmp_path)


def test_warn_callback_gets_the_fallback_warning(no_extra):
    got = []
    assert video_codec(got.append) == MPEG4 and video_codec(got.append) == MPEG4
    assert got == [FALLBACK_WARNING]


def test_asking_for_h264_without_the_extra_names_it(tmp_path, no_extra):
    target, frames = _frames((16, 16), 2)
    with pytest.raises(VideoError, match=r"sgproject\[video\]"):
        write_projection_video(target, frames, tmp_path / "x.mp4", codec=H264)


# -------------------------------------------------------------------------------------------- frames to keep


def test_frame_stride_keeps_about_100_frames_and_bounds_the_bytes():
    assert frame_stride(200, (64, 64, 3)) == 2  # 100 frames of 12 KiB
    assert frame_stride(1000, (64, 64, 3)) == 10
    assert frame_stride(50, (64, 64, 3)) == 1
    big = frame_stride(200, (1024, 1024, 3))  # 3 MiB a frame: 21 frames fit 64 MiB
    assert big == 10 and -(-200 // big) * 1024 * 1024 * 3 <= 64 << 20
    assert frame_stride(1000, (4096, 4096, 3)) == 500  # huge frames: still a first and a last one


def test_project_keeps_every_kth_frame_and_the_last(tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("SGPROJECT_OFFLINE", "1")
    monkeypatch.setenv("SGPROJECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from generator.metrics.lpips import ENV_WEIGHTS, load_perceptual

    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    perceptual = load_perceptual(None, "cpu", allow_download=False)
    target = tiny.synthesis(tiny.mapping(torch.randn(1, tiny.z_dim, generator=torch.Generator().manual_seed(3))))
    kw = dict(num_steps=10, seed=0, perceptual=perceptual, record_frames=True)
    every = project(tiny, target.detach(), **kw)[0]
    third = project(tiny, target.detach(), frame_every=3, **kw)[0]
    assert len(every.frames) == 10
    assert len(third.frames) == 4  # steps 3, 6, 9 and the last, 10
    for k, step in enumerate((2, 5, 8, 9)):
        assert np.array_equal(third.frames[k], every.frames[step]), step
    with pytest.raises(ValueError, match="frame_every"):
        project(tiny, target.detach(), frame_every=0, **kw)

    # save_projection records the codec in summary.json
    files = save_projection(third, tmp_path / "out", target=to_uint8(target[0]), meta={}, video=True)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["files"]["video"] == "proj.mp4" and files["video"].endswith("proj.mp4")
    assert summary["video"]["codec"] == "h264" and summary["video"]["frames"] == 4
    assert summary["video"]["pix_fmt"] == "yuv420p"
