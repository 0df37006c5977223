"""Files of a projection: what `sgproject invert` writes per image, and how to read it back.

    target.png        the image that was projected (after loading, cropping, resizing, optional alignment)
    proj.png          the reconstruction, rendered with the optimised noise
    projected_w.npz   w as [1, num_ws, w_dim] (key 'w')
    noise.npz         the optimised noise maps, keys noise_00, noise_01, ... each [1, 1, r, r]
    trace.json        the loss trace: one entry per step
    summary.json      distances, settings, model and perceptual-network identity; with a video, its codec
    proj.mp4          (optional) target | projection, one frame per step: H.264 with the `video` extra (browsers
                      play it), else MPEG-4 Part 2 (projector/video.py)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from generator.util.files import write_bytes_atomic, write_text_atomic
from generator.util.imaging import save_png, to_uint8
from projector.project import Projection
from projector.video import write_projection_video


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_projection(
    p: Projection, folder: str | Path, *, target: np.ndarray, meta: dict, video: bool = False, fps: int = 30,
    codec: str | None = None,  # the video's codec, 'h264' or 'mpeg4'; None: the best available (video_codec)
) -> dict[str, str]:
    """Write every file of one projection into `folder` (each atomically); returns {kind: path}. With `video` (and
    frames recorded), summary.json's 'video' records the codec, size and frame count of proj.mp4."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "target": save_png(target, folder / "target.png"),
        "projection": save_png(to_uint8(p.image), folder / "proj.png"),
    }
    paths["w"] = write_bytes_atomic(folder / "projected_w.npz", _npz_bytes(w=p.w[None].numpy().astype(np.float32)))
    noise = {f"noise_{k:02d}": m.numpy().astype(np.float32) for k, m in enumerate(p.noise)}
    paths["noise"] = write_bytes_atomic(folder / "noise.npz", _npz_bytes(**noise))
    paths["trace"] = write_text_atomic(folder / "trace.json", json.dumps(p.trace))
    video_info = None
    if video and p.frames:
        video_info = write_projection_video(target, p.frames, folder / "proj.mp4", fps=fps, codec=codec)
        paths["video"] = video_info.path
    summary = {**meta, **p.summary(), "files": {k: Path(v).name for k, v in paths.items()}}
    if video_info is not None:
        summary["video"] = video_info.to_json()
    # ASCII JSON (non-ASCII characters escaped), as this file has always been written.
    paths["summary"] = write_text_atomic(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    return {k: str(v) for k, v in paths.items()}


def load_projection(folder: str | Path) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(w [num_ws, w_dim], noise maps [1, 1, r, r]) from a folder written by `save_projection`."""
    folder = Path(folder)
    with np.load(folder / "projected_w.npz", allow_pickle=False) as f:
        w = torch.from_numpy(f["w"][0])
    with np.load(folder / "noise.npz", allow_pickle=False) as f:
        noise = [torch.from_numpy(f[k]) for k in sorted(f.files)]
    return w, noise
