"""Degraded, post-processed and simple images with known truth: the hard cases of calibration and of bench/stress.py.

A reconstruction detector's score tracks how easy an image is to reproduce as much as who made it (docs/
ARCHITECTURE.md, "Detection and calibration"), so a calibration fitted on clean images alone promises rates that
degraded real images (blurred, softened, denoised, re-compressed) and post-processed generated ones (JPEG, resize,
crops, brightness, noise) do not keep. Each variant here is one named operation on a uint8 RGB image; `write_variant`
saves the result as a user would have it on disk (a JPEG variant is a .jpg file, so detection re-applies its
quantisation tables to the reconstruction exactly as it does for any JPEG).

    REAL_HARD         the degradations a real photograph meets (the hard negatives of the real class)
    GENERATED_HARD    the post-processing a generated image meets before it is shared
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from generator.util.files import atomic_path

JPEG_SUBSAMPLING = 2  # PIL: 4:2:0, what cameras and most web encoders write


def _blur(sigma: float) -> Callable:
    def op(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return cv2.GaussianBlur(px, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return op


def _soft(factor: int) -> Callable:
    """Down by `factor` (area averaging) and back up (bicubic): a low-resolution source shown at full size."""
    def op(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = px.shape[:2]
        small = cv2.resize(px, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return op


def _denoise(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Non-local means (what phone pipelines and editors apply): flat skin, kept edges."""
    return cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(px), None, 7, 7, 5, 15)


def _resize(scale: float) -> Callable:
    """Lanczos to `scale` times the size (the file is saved at that size; detection resizes it back)."""
    def op(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = px.shape[:2]
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        return np.asarray(Image.fromarray(px).resize(size, Image.LANCZOS))
    return op


def _crop(keep: float) -> Callable:
    """Keep `keep` of each side, at a random offset (the file is saved cropped)."""
    def op(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = px.shape[:2]
        ch, cw = max(8, round(h * keep)), max(8, round(w * keep))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return px[y : y + ch, x : x + cw].copy()
    return op


def _brightness(factor: float) -> Callable:
    def op(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(np.rint(px.astype(np.float32) * factor), 0, 255).astype(np.uint8)
    return op


def _noise(sigma: float) -> Callable:
    """Gaussian noise of `sigma` grey levels (of 255) per channel, rounded."""
    def op(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = px.astype(np.float32) + rng.normal(0.0, sigma, px.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return op


def _identity(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return px


# name -> (pixel operation, JPEG quality of the saved file or None for PNG)
VARIANTS: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], int | None]] = {
    "clean": (_identity, None),
    "blur1": (_blur(1.0), None),
    "blur2": (_blur(2.0), None),
    "blur6": (_blur(6.0), None),
    "soft": (_soft(2), None),
    "denoise": (_denoise, None),
    "jpeg50": (_identity, 50),
    "jpeg75": (_identity, 75),
    "jpeg90": (_identity, 90),
    "resize0.75": (_resize(0.75), None),
    "resize0.9": (_resize(0.9), None),
    "resize4": (_resize(4.0), None),
    "crop95": (_crop(0.95), None),
    "bright1.1": (_brightness(1.1), None),
    "noise2": (_noise(2.0), None),
}
REAL_HARD = ("blur1", "blur2", "soft", "denoise", "jpeg50", "jpeg75", "jpeg90")
GENERATED_HARD = ("jpeg75", "jpeg90", "resize0.75", "resize4", "crop95", "bright1.1", "noise2")


def apply_variant(pixels: np.ndarray, name: str, rng: np.random.Generator) -> tuple[np.ndarray, int | None]:
    """(pixels after the variant's operation, JPEG quality to save with or None). KeyError for an unknown name."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    op, quality = VARIANTS[name]
    out = op(np.ascontiguousarray(pixels), rng)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, (out.dtype, out.shape)
    return out, quality


def write_variant(pixels: np.ndarray, name: str, stem: str | Path, rng: np.random.Generator) -> Path:
    """Apply variant `name` and save it as `stem`.png (or `stem`.jpg for a JPEG variant), atomically."""
    out, quality = apply_variant(pixels, name, rng)
    path = Path(stem).with_suffix(".jpg" if quality is not None else ".png")
    with atomic_path(path) as tmp:
        if quality is not None:
            Image.fromarray(out).save(tmp, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING)
        else:
            Image.fromarray(out).save(tmp, format="PNG")
    return path


# ------------------------------------------------------------------------------------------- simple images

SIMPLE_KINDS = ("uniform", "gradient", "blurred-noise")


def simple_image(kind: str, res: int, rng: np.random.Generator) -> np.ndarray:
    """An image without the information a verdict needs: one colour, a linear two-colour gradient at a random
    angle, or coarse random blobs blurred away (sigma res/8). uint8 [res, res, 3]."""
    c0 = rng.integers(0, 256, 3).astype(np.float32)
    if kind == "uniform":
        return np.broadcast_to(c0.astype(np.uint8), (res, res, 3)).copy()
    if kind == "gradient":
        c1 = rng.integers(0, 256, 3).astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:res, 0:res].astype(np.float32) / max(res - 1, 1)
        t = (np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5)) / np.sqrt(0.5) + 0.5
        t = np.clip(t, 0, 1)[..., None]
        return np.clip(np.rint(c0 * (1 - t) + c1 * t), 0, 255).astype(np.uint8)
    if kind == "blurred-noise":
        coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        up = cv2.resize(coarse, (res, res), interpolation=cv2.INTER_NEAREST)
        return cv2.GaussianBlur(up, (0, 0), sigmaX=res / 8, borderType=cv2.BORDER_REFLECT)
    raise KeyError(f"unknown simple image kind {kind!r}; known: {', '.join(SIMPLE_KINDS)}")


# ------------------------------------------------------------------------------------------ photographs

# scikit-image's bundled photographs, split so that a calibration and a benchmark never share a photograph
PHOTOS_CALIBRATION = ("astronaut", "coffee", "hubble_deep_field", "retina", "camera", "grass", "brick")
PHOTOS_HELD_OUT = ("chelsea", "rocket", "immunohistochemistry", "coins", "moon", "gravel", "clock", "cell")


def photograph_crops(names: tuple[str, ...], n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """n random square crops (a quarter to all of the short side, anywhere) of scikit-image's bundled photographs
    `names`, in turn: [(description, uint8 [S, S, 3])]. Images far outside a portrait model's domain."""
    import skimage.data  # local: scikit-image is only needed to make these test images (the `test` extra)

    rng = np.random.default_rng(seed)
    photos = []
    for name in names:
        a = np.asarray(getattr(skimage.data, name)())
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        a = np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
        photos.append((name, np.ascontiguousarray(a.astype(np.uint8))))
    out = []
    for k in range(n):
        name, a = photos[k % len(photos)]
        h, w = a.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append((f"{name} crop {side}px at ({x}, {y})", a[y : y + side, x : x + side].copy()))
    return out
