"""Procedural stylised portraits: the project's own training data, since no dataset can be downloaded here.

`render_portrait(seed, index, res)` draws image `index` of the set `seed`. Every image is a pure function of
`(seed, index)`: its parameters come from `np.random.default_rng([seed, index])`, so any image can be rendered
alone, in any order, on any machine. The parameters (and the landmarks) are returned beside the pixels.

How an image is made:

1. `sample_params` (`params.py`) draws every choice (head shape, skin, hair, eyes, mouth, accessories, clothing,
   background, light, pose, camera) as a `PortraitParams` in resolution-free units, so one (seed, index) is the
   same portrait at every `res`.
2. The person is painted (`paint.py`) with OpenCV's anti-aliased polygons on a canvas `supersample` times larger
   than the output, together with a coverage mask. All shapes are described in *canonical* coordinates
   (`geometry.py`: 0..1, the FFHQ crop) and pass through one pose transform on their way to the canvas, so the
   landmarks move exactly with the face.
3. The canvas and mask are area-downsampled to `res`; the low-frequency parts (background, light shading, drop
   shadow) are computed directly at `res`, where they are cheap; the person is composited over the background
   (premultiplied alpha); a mild blur and sensor noise finish it (`scene.py`).

Landmarks are in output pixel coordinates with pixel centres at integers (pixel (0, 0) covers -0.5..0.5), the
convention of dlib landmarks and of `img[round(y), round(x)]`.

The labels of an image (`portrait_labels`, the second value of `render_portrait`, one line of params.jsonl) are
`PortraitParams.to_dict()` plus `res` and the landmarks `left_eye`, `right_eye`, `mouth`.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch

from generator.data.portraits.geometry import LEFT_EYE, MOUTH, RIGHT_EYE, to_pixels
from generator.data.portraits.params import LABEL_KEYS, PortraitParams, sample_params
from generator.data.portraits.scene import MIN_RES, render_params
from generator.util.errors import SGProjectError
from generator.util.files import write_bytes_atomic, write_text_atomic

RENDERER_VERSION = 1  # bump whenever the pixels or params of a given (seed, index) change: caches key on it

__all__ = [
    "LABEL_KEYS", "LEFT_EYE", "MIN_RES", "MOUTH", "PARAMS_FILE", "RENDERER_VERSION", "RIGHT_EYE", "PortraitParams",
    "PortraitsDataset", "landmarks", "portrait_labels", "render_params", "render_portrait", "sample_params",
    "to_pixels", "write_portraits",
]


def landmarks(P: PortraitParams, res: int) -> dict[str, list[float]]:
    """Eye and mouth centres in output pixel coordinates, after the pose jitter."""
    le, re, mo = to_pixels([LEFT_EYE, RIGHT_EYE, MOUTH], P.pose, res).tolist()
    return {"left_eye": le, "right_eye": re, "mouth": mo}


def portrait_labels(P: PortraitParams, res: int) -> dict:
    """The JSON-serialisable labels of a portrait rendered at `res`: every parameter (`P.to_dict()`), then `res`
    and the landmarks `left_eye`, `right_eye`, `mouth` ([x, y] in output pixels, rounded to 0.001)."""
    labels = P.to_dict()
    labels["res"] = int(res)
    labels.update({k: [round(c, 3) for c in xy] for k, xy in landmarks(P, res).items()})
    return labels


def render_portrait(seed: int, index: int, res: int = 64, *, supersample: int = 4) -> tuple[np.ndarray, dict]:
    """Image `index` of the set `seed`: uint8 RGB array [res, res, 3] and its labels (`portrait_labels`).

    The labels hold every choice drawn, `seed`, `index`, `res` and the landmarks `left_eye`, `right_eye`, `mouth`
    ([x, y] in output pixels, pixel centres at integers, after pose jitter).
    """
    P = sample_params(seed, index)
    img = render_params(P, res, supersample=supersample)
    return img, portrait_labels(P, res)


# --------------------------------------------------------------------------------------------------------------
# Dataset and writer


class PortraitsDataset(torch.utils.data.Dataset):
    """`n` portraits of set `seed`, rendered on the fly: item i is uint8 RGB [3, res, res]."""

    def __init__(self, n: int, *, res: int = 64, seed: int = 0):
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        if res < MIN_RES:
            raise ValueError(f"res must be at least {MIN_RES}, got {res}")
        self.n, self.res, self.seed = int(n), int(res), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i) -> torch.Tensor:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} portraits")
        img, _ = render_portrait(self.seed, i, self.res)
        return torch.from_numpy(img).permute(2, 0, 1).contiguous()  # [3, res, res]


PARAMS_FILE = "params.jsonl"


def _png_name(index: int) -> str:
    return f"{index:06d}.png"


def _params_line(labels: dict) -> str:
    return json.dumps(labels, separators=(",", ":")) + "\n"


def _render_and_write(job: tuple[str, int, int, int]) -> dict:
    """Worker: render one portrait and write its PNG atomically; return its labels."""
    outdir, seed, index, res = job
    img, labels = render_portrait(seed, index, res)
    # OpenCV's encoder at compression 3: several times faster than PIL's default, for the same pixels.
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise SGProjectError(f"could not encode portrait {index} as PNG")
    write_bytes_atomic(Path(outdir) / _png_name(index), buf.tobytes())
    return labels


def _read_params(path: Path, seed: int, res: int) -> dict[int, dict]:
    """Params lines already written, by index; a torn last line (interrupted run) is ignored."""
    found: dict[int, dict] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        try:
            p = json.loads(line)
        except json.JSONDecodeError:
            continue
        if p.get("seed") != seed or p.get("res") != res:
            raise SGProjectError(
                f"{path.parent} already holds portraits of another set (seed {p.get('seed')}, res {p.get('res')}); "
                f"asked for seed {seed}, res {res}: use an empty folder")
        found[int(p["index"])] = p
    return found


def _worker_init():
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend


def write_portraits(outdir: Path, *, n: int, res: int = 64, seed: int = 0, start: int = 0, workers: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Write portraits `start .. start+n-1` as {index:06d}.png and `params.jsonl` (one JSON object per image,
    in index order) into outdir; return the params path.

    Resumable: images already present (and their params line) are not rendered again; a PNG present without its
    params line gets its line back without being drawn. `progress(done, total)` is called as images complete.
    `workers` > 0 renders in that many processes.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be non-negative, got n={n}, start={start}")
    if res < MIN_RES:
        raise ValueError(f"res must be at least {MIN_RES}, got {res}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # Temporary files left by a killed run: .NAME.PID-XXXX.tmp (atomic_path), .tmp-PID-NAME (older versions).
    for junk in [*outdir.glob(".*.tmp"), *outdir.glob(".tmp-*")]:
        junk.unlink(missing_ok=True)
    params_path = outdir / PARAMS_FILE
    have = _read_params(params_path, seed, res)
    indices = range(start, start + n)
    todo, done = [], 0
    for i in indices:
        if (outdir / _png_name(i)).exists():
            if i not in have:
                have[i] = portrait_labels(sample_params(seed, i), res)  # without drawing it again
            done += 1
        else:
            todo.append(i)
    # Rewrite the params file with what is on disk, then append as images finish, so an interruption loses nothing.
    _write_params(params_path, [have[i] for i in sorted(have)])
    if progress:
        progress(done, n)
    if todo:
        jobs = [(str(outdir), seed, i, res) for i in todo]
        with open(params_path, "a") as f:
            for params in _run(jobs, workers):
                f.write(_params_line(params))
                f.flush()
                have[params["index"]] = params
                done += 1
                if progress:
                    progress(done, n)
        _write_params(params_path, [have[i] for i in sorted(have)])  # back in index order
    return params_path


def _run(jobs: list, workers: int) -> Iterable[dict]:
    if workers <= 0:
        yield from map(_render_and_write, jobs)
        return
    # 'spawn', not fork: forking a process whose torch/OpenMP thread pools are running deadlocks the children.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap_unordered(_render_and_write, jobs, chunksize=16)


def _write_params(path: Path, rows: list[dict]):
    write_text_atomic(path, "".join(_params_line(p) for p in rows))
