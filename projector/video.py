"""Projection videos: target | projection side by side, one frame per recorded optimisation step.

Two encoders (docs/ARCHITECTURE.md, "File formats"):

- H.264 ('h264'): libx264 through the ffmpeg binary that the `video` extra (imageio-ffmpeg) ships; yuv420p,
  BT.709, CRF `DEFAULT_CRF`, preset `PRESET`, the index at the front of the file (`+faststart`) so that a browser starts playing
  before the whole file has arrived. Browsers play it, so the HTML report can show it.
- MPEG-4 Part 2 ('mpeg4'): OpenCV's 'mp4v', the only mp4 encoder in OpenCV's wheels; the fallback without the
  extra (warned about once per process). Players such as VLC or ffplay show it; browsers do not.

Frames are enlarged (nearest neighbour) to at least `min_size` px high, so that players show small models' images at a
useful size, and padded by one edge row to an even height (yuv420p needs even sizes; the width is even already).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from generator.util.errors import SGProjectError
from generator.util.files import atomic_path

log = logging.getLogger(__name__)

H264 = "h264"  # libx264 via the video extra's ffmpeg: browsers play it
MPEG4 = "mpeg4"  # MPEG-4 Part 2 via OpenCV: the fallback, browsers do not play it
CODECS = (H264, MPEG4)
DEFAULT_CRF = 18  # libx264 constant rate factor: 0 lossless .. 51 worst; 18 looks lossless on these frames
PRESET = "veryfast"  # libx264 speed: twice as fast as 'medium' here, files within 10% of its size
MAX_FRAMES = 100  # frames per video that `frame_stride` aims at (detect --video)
FRAME_BUDGET = 64 << 20  # bytes of recorded frames per image that `frame_stride` keeps within
FALLBACK_WARNING = (
    "the `video` extra (imageio-ffmpeg) is not installed: projection videos are written as MPEG-4 Part 2 with "
    "OpenCV, which browsers do not play (VLC and ffplay do). Install `sgproject[video]` for H.264 videos."
)
_warned = False  # the fallback warning was given in this process


class VideoError(SGProjectError):
    """A projection video could not be written (the encoder failed or is missing)."""


@dataclass(frozen=True)
class VideoInfo:
    """What was written: summary.json's and run.json's record of a video."""

    path: Path
    codec: str  # 'h264' or 'mpeg4' (see CODECS)
    width: int  # pixels, even
    height: int  # pixels, even
    frames: int  # frames in the file
    fps: float  # frames per second

    def to_json(self) -> dict:
        return {"file": self.path.name, "codec": self.codec,
                "pix_fmt": "yuv420p" if self.codec == H264 else None, "width": self.width,
                "height": self.height, "frames": self.frames, "fps": self.fps,
                "browsers_play": self.codec == H264}


def ffmpeg_exe() -> str | None:
    """The path of the video extra's ffmpeg binary, or None without the extra (or with a wheel lacking it)."""
    try:
        import imageio_ffmpeg  # local: optional extra 'video'

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:  # RuntimeError: the package is there, its binary is not
        log.debug("no ffmpeg from imageio-ffmpeg: %s", e)
        return None


def video_codec(warn: Callable[[str], None] | None = None) -> str:
    """The codec videos get here: 'h264' with the video extra, else 'mpeg4' with a warning (once per process)
    through `warn` (default: logging)."""
    global _warned
    if ffmpeg_exe() is not None:
        return H264
    if not _warned:
        _warned = True
        (warn or log.warning)(FALLBACK_WARNING)
    return MPEG4


def frame_stride(num_steps: int, frame_shape: Sequence[int], *, max_frames: int = MAX_FRAMES,
                 max_bytes: int = FRAME_BUDGET) -> int:
    """Record every k-th step (project's `frame_every`) so that one image's frames stay within about `max_frames`
    frames and `max_bytes` bytes: a 64 px model keeps 100 frames, a 1024 px one about 21."""
    per_frame = max(1, int(np.prod(frame_shape)))
    keep = max(2, min(max_frames, max_bytes // per_frame))
    return max(1, math.ceil(num_steps / keep))


def side_by_side(target: np.ndarray, frame: np.ndarray, scale: int) -> np.ndarray:
    """target | frame, enlarged `scale` times (nearest neighbour), padded to an even height. uint8 [H', W', 3]"""
    pair = np.concatenate([target, frame], axis=1)  # [H, 2W, 3]
    if scale > 1:
        pair = pair.repeat(scale, axis=0).repeat(scale, axis=1)
    if pair.shape[0] % 2:
        pair = np.pad(pair, ((0, 1), (0, 0), (0, 0)), mode="edge")
    return np.ascontiguousarray(pair)


def write_projection_video(
    target: np.ndarray,  # uint8 [H, W, 3] RGB
    frames: Sequence[np.ndarray],  # uint8 [H, W, 3] RGB, one per recorded step
    path: str | Path,
    *,
    fps: float = 30,
    min_size: int = 256,  # small images are enlarged (nearest neighbour) so players show them at a useful size
    crf: int = DEFAULT_CRF,  # H.264 quality (lower is better and larger)
    codec: str | None = None,  # 'h264' or 'mpeg4'; None: the best available here (video_codec)
) -> VideoInfo:
    """Write target | frame for every frame as an mp4, atomically (a failure leaves no file); VideoError when the
    encoder fails."""
    if not frames:
        raise VideoError("no frames to write (was the projection run with record_frames?)")
    if target.dtype != np.uint8 or target.ndim != 3 or target.shape[2] != 3:
        raise ValueError(f"target must be uint8 [H, W, 3], got {target.dtype} {target.shape}")
    for f in frames:
        assert f.shape == target.shape and f.dtype == np.uint8, (f.shape, f.dtype, target.shape)
    codec = codec or video_codec()
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = max(1, -(-min_size // target.shape[0]))
    pairs = (side_by_side(target, f, scale) for f in frames)
    height = target.shape[0] * scale + (target.shape[0] * scale) % 2  # padded to even
    width = 2 * target.shape[1] * scale
    if codec == H264:
        exe = ffmpeg_exe()
        if exe is None:
            raise VideoError("H.264 videos need the `video` extra: install `sgproject[video]` (imageio-ffmpeg)")
        _write_h264(exe, pairs, (width, height), path, fps=fps, crf=crf)
    else:
        _write_mpeg4(pairs, (width, height), path, fps=fps)
    return VideoInfo(path, codec, width, height, len(frames), float(fps))


def _write_h264(exe: str, pairs: Iterable[np.ndarray], size: tuple[int, int], path: Path, *, fps: float,
                crf: int) -> None:
    """Pipe raw RGB frames to ffmpeg (no shell), which writes H.264 yuv420p into a temporary file, renamed at the end."""
    width, height = size
    with atomic_path(path) as tmp, tempfile.TemporaryFile() as errors:
        cmd = [
            exe, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", f"{fps:g}",
            "-i", "pipe:0", "-an",
            # RGB -> BT.709 limited-range YUV, tagged as such (players then convert back with the same matrix)
            "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
                   "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv",
            "-c:v", "libx264", "-preset", PRESET, "-crf", str(int(crf)), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(tmp),
        ]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        except OSError as e:
            raise VideoError(f"cannot run ffmpeg ({exe}): {e}") from None
        broken = False
        try:
            for pair in pairs:
                assert pair.shape == (height, width, 3), (pair.shape, size)
                proc.stdin.write(pair.tobytes())
        except BrokenPipeError:  # ffmpeg stopped reading: its exit code and messages say why
            broken = True
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        rc = proc.wait()
        if rc != 0 or broken:
            errors.seek(0)
            raise VideoError(f"ffmpeg could not write {path} (exit code {rc}): {_tail(errors.read())}")


def _tail(stderr: bytes, lines: int = 4, chars: int = 600) -> str:
    """The last lines of ffmpeg's messages, on one line."""
    text = stderr.decode("utf-8", "replace").strip()
    if not text:
        return "no message"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())[-chars:]


def _write_mpeg4(pairs: Iterable[np.ndarray], size: tuple[int, int], path: Path, *, fps: float) -> None:
    """OpenCV's MPEG-4 Part 2 writer. Not generator.util.files.atomic_path: OpenCV picks the container from the file
    name's extension, so the temporary name must end in '.mp4'."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not writer.isOpened():
            raise VideoError("OpenCV cannot write mp4 files on this machine (no mp4v encoder); "
                             "install `sgproject[video]` for H.264 through ffmpeg")
        try:
            for pair in pairs:
                writer.write(cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

