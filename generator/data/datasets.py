"""Training data: an image folder (or the procedural portraits) decoded once into a cached uint8 array.

Every image is centre-cropped and resized to the training resolution once; the result is kept as an `.npy` file in
the cache (`$SGPROJECT_CACHE/datasets`, default `~/.cache/sgproject/datasets`), keyed by the file list, sizes,
modification times and resolution, so later runs and later epochs never decode again. Unreadable or corrupt files
are skipped, counted and reported, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from generator.util.errors import SGProjectError
from generator.util.files import atomic_path, write_json_atomic
from generator.util.imaging import centre_crop_resize, unit_range

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
Progress = Callable[[int, int], None]  # (done, total)


class DatasetError(SGProjectError):
    """The training data cannot be used (no images, a bad spec, ...)."""


def cache_root() -> Path:
    return Path(os.environ.get("SGPROJECT_CACHE", Path.home() / ".cache" / "sgproject"))


@dataclass
class ImageDataset:
    """All training images as uint8 [N, C, R, R] (possibly memory-mapped), with what was skipped on the way."""

    images: np.ndarray  # uint8 [N, C, R, R]
    source: str  # the folder or spec it came from
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images at `indices` as float32 [B, C, R, R] in [-1, 1] on `device`."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[indices]))  # uint8 [B, C, R, R]
        return unit_range(x.to(device))


def decode_file(path: str, resolution: int) -> tuple[np.ndarray | None, str | None]:
    """(uint8 [3, R, R] RGB: the central square, Lanczos-resized; None) or (None, reason). Never raises for a bad
    file."""
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))  # [H, W, 3]
        return centre_crop_resize(pixels, resolution).transpose(2, 0, 1), None
    except UnidentifiedImageError:
        return None, "not a readable image"
    except (OSError, ValueError, SyntaxError) as e:  # truncated, corrupt, bombs (DecompressionBombError is OSError-like)
        return None, " ".join(str(e).split())[:200] or type(e).__name__
    except Exception as e:  # a decoder bug on a hostile file must not stop training
        return None, f"{type(e).__name__}: {e}"[:200]


def list_image_files(folder: Path) -> list[Path]:
    """Image files below `folder` (recursive, by extension, hidden files and folders skipped), sorted."""
    files = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files)


def _cache_key(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def load_image_folder(
    folder: str | Path, resolution: int, *, progress: Progress | None = None, cache_dir: Path | None = None,
) -> ImageDataset:
    """Decode every image below `folder` once (cached); corrupt files are skipped and listed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of images")
    files = list_image_files(folder)
    if not files:
        raise DatasetError(f"no images (png, jpg, webp, bmp, tif) found below {folder}")
    parts = [f"folder v1 res={resolution}"]
    for f in files:
        st = f.stat()
        parts.append(f"{f.relative_to(folder)}\t{st.st_size}\t{st.st_mtime_ns}")
    key = "folder-" + _cache_key(parts)
    cache_dir = cache_dir or cache_root() / "datasets"
    path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        return ImageDataset(np.load(path, mmap_mode="r"), str(folder), [tuple(s) for s in meta["skipped"]])
    cache_dir.mkdir(parents=True, exist_ok=True)
    good: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for i, f in enumerate(files):
        img, reason = decode_file(str(f), resolution)
        if img is None:
            skipped.append((str(f.relative_to(folder)), reason or "unreadable"))
        else:
            good.append(img)
        if progress:
            progress(i + 1, len(files))
    if not good:
        raise DatasetError(f"none of the {len(files)} image files below {folder} could be read")
    _save_cache(path, meta_path, np.stack(good), skipped)
    return ImageDataset(np.load(path, mmap_mode="r"), str(folder), skipped)


def _save_cache(path: Path, meta_path: Path, arr: np.ndarray, skipped: list) -> None:
    """The array, then its metadata, each atomically: another process (torchrun starts one per GPU) may read them
    as soon as they exist, and the array is only used once the metadata is there too."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    write_json_atomic(meta_path, {"n": len(arr), "skipped": skipped})


def load_portraits(
    n: int, resolution: int, *, seed: int = 0, progress: Progress | None = None, cache_dir: Path | None = None,
) -> ImageDataset:
    """The first n procedural portraits of set `seed`, rendered once (cached)."""
    from generator.data.portraits import RENDERER_VERSION, render_portrait  # local: OpenCV loads only for portraits

    cache_dir = cache_dir or cache_root() / "datasets"
    key = f"portraits-{_cache_key([f'portraits v{RENDERER_VERSION} n={n} res={resolution} seed={seed}'])}"
    path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not (path.exists() and meta_path.exists()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        arr = np.empty((n, 3, resolution, resolution), np.uint8)
        for i in range(n):
            arr[i] = render_portrait(seed, i, resolution)[0].transpose(2, 0, 1)
            if progress:
                progress(i + 1, n)
        _save_cache(path, meta_path, arr, [])
    return ImageDataset(np.load(path, mmap_mode="r"), f"portraits:{n}:{seed}")


def open_dataset(spec: str | Path, resolution: int, **kw) -> ImageDataset:
    """A folder path, or `portraits:N[:SEED]` for N procedural portraits of set SEED (default 0)."""
    m = re.fullmatch(r"portraits:(\d+)(?::(\d+))?", str(spec))
    if m:
        return load_portraits(int(m.group(1)), resolution, seed=int(m.group(2) or 0), **kw)
    return load_image_folder(spec, resolution, **kw)
