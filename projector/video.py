"""The projection video: target | projection side by side, one frame per optimisation step (OpenCV, MPEG-4)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from generator.util.errors import SGProjectError


def write_projection_video(
    target: np.ndarray,  # uint8 [H, W, 3] RGB
    frames: Sequence[np.ndarray],  # uint8 [H, W, 3] RGB, one per step
    path: str | Path,
    *,
    fps: int = 30,
    min_size: int = 256,  # small images are enlarged (nearest neighbour) so players show them at a useful size
) -> Path:
    """Write an mp4 (MPEG-4 Part 2, 'mp4v': the encoder OpenCV's wheels carry) atomically; returns the path."""
    if not frames:
        raise SGProjectError("no frames to write (was the projection run with record_frames?)")
    path = Path(path)
    h, w = target.shape[:2]
    scale = max(1, -(-min_size // h))
    size = (2 * w * scale, h * scale)
    # Not generator.util.files.atomic_path: OpenCV picks the container from the file name's extension, so the
    # temporary name must keep '.mp4' at its end.
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise SGProjectError("OpenCV cannot write mp4 files on this machine (no mp4v encoder)")
    try:
        left = cv2.cvtColor(target, cv2.COLOR_RGB2BGR)
        for f in frames:
            frame = np.concatenate([left, cv2.cvtColor(f, cv2.COLOR_RGB2BGR)], axis=1)
            if scale > 1:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
            writer.write(frame)
    finally:
        writer.release()
    os.replace(tmp, path)
    return path
