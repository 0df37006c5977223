"""Pixel conversions used on every floor: uint8 images <-> [-1, 1] tensors, centre crop and resize, PNG files.

Conventions (docs/ARCHITECTURE.md, "Conventions"): an image array is uint8 [H, W, 3] (RGB); a tensor batch is
float32 [N, 3, H, W] with pixel values in [-1, 1], v / 127.5 - 1, as the generator produces them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from generator.util.files import atomic_path


def to_tensor(images: Sequence[np.ndarray], *, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 [H, W, 3] images, all the same size -> float32 [N, 3, H, W] in [-1, 1] (v / 127.5 - 1)."""
    if len(images) == 0:
        raise ValueError("to_tensor needs at least one image")
    shape = images[0].shape
    for img in images:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, (img.dtype, img.shape)
        assert img.shape == shape, f"images differ in size: {img.shape} vs {shape}"
    x = torch.from_numpy(np.stack(images))  # [N, H, W, 3] uint8
    x = x.to(device=device).permute(0, 3, 1, 2).to(torch.float32)  # [N, 3, H, W]
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, C, H, W] or [C, H, W] in [-1, 1] -> uint8 [N, H, W, C] or [H, W, C], rounded to nearest, clamped.

    The exact inverse of `to_tensor` on its outputs.
    """
    assert x.ndim in (3, 4), tuple(x.shape)
    u8 = ((x.detach().to(torch.float32) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u8.movedim(-3, -1).cpu().numpy()  # [..., H, W, C]


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] uint8 in [0, 255] or float in [-1, 1] -> float32 RGB in [-1, 1] (grey repeated to 3 channels)."""
    x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    assert x.ndim == 4 and x.shape[1] == 3, f"images must be [N, 3, H, W], got {list(images.shape)}"
    return x


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to [N, C, size, size] (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def downsample_to(img: torch.Tensor, size: int) -> torch.Tensor:
    """Area-downsample [N, C, H, W] so that neither side exceeds `size`; smaller images are left alone."""
    h, w = img.shape[-2:]
    if max(h, w) <= size:
        return img
    s = size / max(h, w)
    return F.interpolate(img, size=(round(h * s), round(w * s)), mode="area")


def centre_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the largest centred square of a height x width image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def centre_crop_resize(pixels: np.ndarray, resolution: int) -> np.ndarray:
    """Centre crop to a square (the shorter side), then Lanczos resize to resolution x resolution.

    uint8 [H, W, 3] -> uint8 [R, R, 3]. A copy, unchanged in value, when the input is already R x R.
    """
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, (pixels.dtype, pixels.shape)
    assert resolution > 0, resolution
    top, left, side = centre_square(*pixels.shape[:2])
    square = np.ascontiguousarray(pixels[top : top + side, left : left + side])  # [S, S, 3]
    if side == resolution:
        return square
    resized = Image.fromarray(square).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(resized)  # [R, R, 3]


def save_png(pixels: np.ndarray, path: str | Path) -> Path:
    """Write uint8 [H, W, 3], [H, W, 1] or [H, W] as PNG atomically (see `generator.util.files.atomic_path`)."""
    assert pixels.dtype == np.uint8 and pixels.ndim in (2, 3), (pixels.dtype, pixels.shape)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    assert pixels.ndim == 2 or pixels.shape[2] == 3, pixels.shape
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
    return path
