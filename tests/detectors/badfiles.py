"""A factory of bad and odd image files, shared by the loader's tests and the `detect` command's tests.

`make_bad_files(folder)` writes every file into `folder` and returns {relative name: expectation}, where the
expectation is None when `read_rgb` must load the file, else a substring of the `ImageLoadError` message.
Everything is made from code (no binary fixtures), deterministically, each file well under 100 KB.
Besides the files it makes `loop/parent`, a symbolic link back to `folder` (a link loop for folder walkers),
which is not in the returned mapping because it is not a file.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Names shared with the tests that use them.
NON_ASCII_NAME = "héllo wörld 画像.png"
EXIF_ROTATED = "exif_rotated.jpg"
EXIF_STORED_SIZE = (40, 24)  # (width, height) as stored; orientation 6 turns it into 24 wide, 40 high
GRAY16 = "gray16.png"
BOMB_SIZE = (30000, 30000)
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # an ISO-BMFF header, HEIC brand
TEXT = b"This is a text file that someone named .png.\nIt has two lines.\n"


def _pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with a little noise: compresses well, but is not flat. uint8 [H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width]
    ramp_x, ramp_y = x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1)
    rgb = np.stack([ramp_x, ramp_y, (ramp_x + ramp_y) // 2], -1)
    noise = np.random.default_rng(seed).integers(0, 16, (height, width, 3))
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking 1-bit greyscale PNG whose header claims width x height; its data holds a single row, so the
    file is tiny and decoding it (if a loader forgot to check the size first) fails fast instead of eating RAM."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale, deflate, no filter, no interlace
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + one row of black
    chunks = [(b"IHDR", ihdr), (b"IDAT", zlib.compress(row, 9)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(kind, data) for kind, data in chunks)


def gray16_values(width: int = 256, height: int = 16) -> np.ndarray:
    """uint16 [H, W]: column x holds 257 * x (exactly x in 8 bits); the last row holds odd values that test rounding."""
    v = np.tile(np.arange(width, dtype=np.uint32) * 257, (height, 1))
    v[-1, :4] = [65535, 128, 129, 0]  # -> 255, 0 (128/257 = 0.498), 1 (129/257 = 0.502), 0
    return v.astype(np.uint16)


def _frames(n: int, size: int = 32) -> list[Image.Image]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    return [Image.new("RGB", (size, size), colours[i % len(colours)]) for i in range(n)]


def _good_files() -> dict[str, bytes]:
    rgb = Image.fromarray(_pattern(64, 48))
    alpha = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))  # transparent left, opaque right
    palette = Image.fromarray(_pattern(32, 32)).quantize(colors=16)
    frames = _frames(3)
    stored = Image.fromarray(_pattern(*EXIF_STORED_SIZE))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    cmyk = Image.fromarray(_pattern(32, 32)).convert("CMYK")
    return {
        GRAY16: _encode(Image.fromarray(gray16_values()), "PNG"),
        "cmyk.jpg": _encode(cmyk, "JPEG", quality=90),
        "rgba.png": _encode(Image.fromarray(np.dstack([_pattern(64, 48), alpha])), "PNG"),
        "palette.png": _encode(palette, "PNG"),
        "palette_transparent.png": _encode(palette, "PNG", transparency=0),
        "gray_alpha.png": _encode(Image.fromarray(np.dstack([_pattern(32, 32)[..., 0], alpha[:32, :32]])), "PNG"),
        "bilevel.png": _encode(Image.fromarray(_pattern(32, 32)[..., 0]).convert("1"), "PNG"),
        "float.tiff": _encode(Image.fromarray(_pattern(32, 32)[..., 0].astype(np.float32) / 255.0), "TIFF"),
        "animated.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "animated.png": _encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100),
        "animated.webp": _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
        NON_ASCII_NAME: _encode(rgb, "PNG"),
        EXIF_ROTATED: _encode(stored, "JPEG", exif=exif.tobytes(), quality=90),
        "image.webp": _encode(rgb, "WEBP", quality=90),
        "image.bmp": _encode(rgb, "BMP"),
        "image.tiff": _encode(rgb, "TIFF"),
        "png_named.jpg": _encode(rgb, "PNG"),  # content decides, not the extension
        ".hidden.png": _encode(rgb, "PNG"),  # loads when named; folder walks skip it
        "loop/inner.png": _encode(rgb, "PNG"),
    }


def _bad_files() -> dict[str, tuple[bytes, str]]:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    png, jpeg, webp = _encode(noise, "PNG"), _encode(noise, "JPEG", quality=90), _encode(noise, "WEBP", quality=90)
    return {
        "empty.png": (b"", "empty file"),
        "truncated.png": (png[: len(png) // 2], "truncated PNG"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "truncated.webp": (webp[: len(webp) // 2], "truncated WebP"),
        "corrupt.png": (png[:8] + bytes(range(256)) * 4, "corrupt or truncated PNG"),
        "text.png": (TEXT, "not an image (looks like text)"),
        "webpage.jpg": (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", "looks like HTML"),
        "photo.heic": (HEIC, "unsupported image format HEIC"),
        "bomb.png": (bomb_png(*BOMB_SIZE), "decompression bomb: 30000x30000 = 900 MP"),
        "one_pixel.png": (_encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"), "too small: 1x1 px"),
        "sliver.png": (_encode(Image.new("RGB", (200, 8), (0, 0, 255)), "PNG"), "too small: 200x8 px"),
    }


def make_bad_files(folder: Path) -> dict[str, str | None]:
    """Write the files into `folder` (created if needed); return {relative name: None if it must load, else a
    substring of the expected error}. Also makes `loop/parent`, a symbolic link to `folder` itself."""
    folder = Path(folder)
    expected: dict[str, str | None] = {}
    contents: dict[str, bytes] = {}
    for name, data in _good_files().items():
        contents[name], expected[name] = data, None
    for name, (data, message) in _bad_files().items():
        contents[name], expected[name] = data, message
    for name, data in contents.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        assert len(data) < 100_000, (name, len(data))
    os.symlink("..", folder / "loop" / "parent", target_is_directory=True)
    return expected
