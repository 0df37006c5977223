"""Looking inside mp4 files with the `video` extra's ffmpeg binary (ffprobe is not shipped with it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()  # taken at import, before any test hides the extra


def stream_line(path: Path) -> str:
    """The 'Stream #0:0 ... Video: ...' line that `ffmpeg -i FILE` prints (it exits 1: no output file named)."""
    r = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True, timeout=60)
    lines = [line.strip() for line in r.stderr.splitlines() if "Video:" in line]
    assert len(lines) == 1, r.stderr
    return lines[0]


def decode(path: Path) -> list[np.ndarray]:
    """Every frame of a video, as uint8 [H, W, 3] RGB, through imageio-ffmpeg's reader."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    w, h = meta["size"]
    try:
        return [np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy() for buf in reader]
    finally:
        reader.close()


def top_level_boxes(path: Path) -> list[str]:
    """The mp4's top-level box types in file order (ftyp, moov, mdat, ...)."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 8].decode("latin-1"))
        if size == 1:  # 64-bit size
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return out


def avc1_codecs(path: Path) -> str:
    """The RFC 6381 codecs string of an H.264 mp4 (e.g. 'avc1.64001f'), from its avcC box: profile, constraint
    flags, level."""
    data = Path(path).read_bytes()
    i = data.index(b"avcC") + 4  # configurationVersion, AVCProfileIndication, profile_compatibility, level
    return "avc1." + data[i + 1 : i + 4].hex()


def pix_fmt(stream: str) -> str:
    """'yuv420p' from a stream line such as '... Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, ...'."""
    m = re.search(r"Video: [^,]+, (\w+)", stream)
    assert m, stream
    return m.group(1)
