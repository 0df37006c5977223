"""Compare like with like: put the reconstruction through what the target went through.

A generator cannot reproduce JPEG blocking or the blur of a resize, so a generated image that was re-saved as JPEG
or rescaled looks "real" to a naive reconstruction detector. Here the reconstruction is sent down the target's
own path before the two are compared: scaled to the size of the source's crop, padded to the source's full size so
that JPEG blocks fall on the same grid, re-encoded with the source file's own quantisation tables and chroma
subsampling, then loaded exactly as the target was (crop, Lanczos resize). For a generated image the result is
nearly the target itself; a real image stays as far away as it was.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detectors.images import RGBImage
from generator.util.imaging import centre_crop_resize


@dataclass(frozen=True)
class Degradation:
    source_size: tuple[int, int]  # (width, height) of the oriented source image
    resolution: int  # the model's resolution (what the target was resized to)
    jpeg: dict | None = None  # {"qtables": {id: [64]}, "subsampling": 0|1|2} of the source file

    @property
    def crop_side(self) -> int:
        return min(self.source_size)

    @property
    def is_identity(self) -> bool:
        return self.jpeg is None and self.crop_side == self.resolution and self.source_size[0] == self.source_size[1]

    def describe(self) -> str:
        parts = []
        if self.crop_side != self.resolution:
            parts.append(f"resized {self.resolution}->{self.crop_side}->{self.resolution}")
        if self.jpeg is not None:
            parts.append(f"JPEG re-encoded with the source's tables (subsampling {self.jpeg['subsampling']})")
        return "; ".join(parts) or "none"

    def apply(self, recon: np.ndarray) -> np.ndarray:
        """uint8 [R, R, 3] reconstruction -> uint8 [R, R, 3] as the target's path would have made it."""
        if self.is_identity:
            return recon
        w, h = self.source_size
        side = self.crop_side
        x = recon
        if side != self.resolution:
            x = np.asarray(Image.fromarray(x).resize((side, side), Image.Resampling.LANCZOS))
        if self.jpeg is not None:
            top, left = (h - side) // 2, (w - side) // 2
            canvas = np.pad(x, ((top, h - side - top), (left, w - side - left), (0, 0)), mode="edge")
            canvas = jpeg_roundtrip(canvas, self.jpeg)
            x = canvas[top : top + side, left : left + side]
        return centre_crop_resize(np.ascontiguousarray(x), self.resolution)


def jpeg_roundtrip(pixels: np.ndarray, jpeg: dict) -> np.ndarray:
    """Encode uint8 [H, W, 3] with the given quantisation tables and subsampling, decode again."""
    buf = io.BytesIO()
    tables = [jpeg["qtables"][k] for k in sorted(jpeg["qtables"], key=int)]
    Image.fromarray(pixels).save(buf, format="JPEG", qtables=tables, subsampling=int(jpeg["subsampling"]))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def degradation_of(image: RGBImage, resolution: int, *, aligned: bool = False) -> Degradation | None:
    """The path from the source file to the projected target; None when it cannot be modelled (alignment warps
    the geometry, so only JPEG matching would be partial: then nothing is matched)."""
    if aligned:
        return None
    h, w = image.pixels.shape[:2]
    return Degradation(source_size=(w, h), resolution=resolution, jpeg=image.jpeg)
