"""The one image loader every command shares: safe decoding, RGB conversion, cropping, tensors, file discovery.

Everything a user hands us goes through `read_rgb`, which either returns a uint8 RGB array with a record of what
was done to it (`RGBImage.notes`) or raises `ImageLoadError` with a one-line reason the user can act on. It never
guesses: the type is sniffed from the file's first bytes (not its extension), the pixel count is checked against
`MAX_PIXELS` before anything is decoded, and a truncated file is an error, never a grey-filled picture (a detector
must not judge pixels the file does not contain).

    read_rgb(path)            -> RGBImage (full size)
    load_image(path, R)       -> read_rgb, then generator.util.imaging.centre_crop_resize to R x R, with a note
    find_images(paths)        -> expand files and folders into candidate image files

Pixels to tensors and back, cropping and PNG writing are generator.util.imaging's (to_tensor, to_uint8,
centre_crop_resize, save_png).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin

from generator.util.errors import SGProjectError
from generator.util.imaging import centre_crop_resize

log = logging.getLogger(__name__)

SUPPORTED = ("png", "jpeg", "webp", "bmp", "tiff", "gif")

# Decompression-bomb limit, in pixels (width * height of the stored image). 178,956,970 px (~179 MP) is twice
# Pillow's default warning threshold and exactly the point where Pillow itself refuses to open a file. It admits
# every real camera photo up to 108 MP phone and 150 MP medium-format sensors, and bounds one decoded RGB frame to
# ~0.5 GB. A file whose header claims more is refused before a single pixel is decoded. It is a literal, not
# `2 * Image.MAX_IMAGE_PIXELS`, so a library that changes Pillow's global does not change what we accept.
MAX_PIXELS = 178_956_970
MIN_SIDE = 16  # smallest side, in pixels, worth judging: below this there is nothing for a projector to fit

# Extensions that make a non-image file found in a folder worth reporting rather than silently ignoring.
# Extensions of files a user expects to be judged. HEIC/HEIF and AVIF (phone photos) cannot be decoded here, but a
# folder walk must report them (with the loader's "convert it" message) rather than pass over them in silence.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"})

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF"}
_DISPLAY = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF"}
_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)  # the DIB header versions that exist
_SNIFF_BYTES = 32  # enough for every signature in `_sniff_bytes`
_DESCRIBE_BYTES = 1024  # enough to tell text, HTML, SVG from binary junk
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_MODES_16BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class ImageLoadError(SGProjectError):
    """A file could not be turned into pixels: missing, unreadable, not an image, corrupt, truncated, too large or
    too small. `str(err)` is the reason, without the path (the caller prints that)."""


@dataclass
class RGBImage:
    """A decoded image and what was done to it on the way."""

    pixels: np.ndarray  # uint8 [H, W, 3] RGB, EXIF orientation applied
    path: Path  # the path as given (not resolved), so messages show the user's own name
    format: str  # sniffed from the content, one of SUPPORTED
    original_size: tuple[int, int]  # (width, height) as stored in the file, before orientation or cropping
    original_mode: str  # Pillow mode before conversion: "RGB", "I;16", "CMYK", "P", "RGBA", ...
    notes: list[str] = field(default_factory=list)  # conversions a user may want to know about
    sha256: str = ""  # hex digest of the file's bytes, exactly the bytes that were decoded
    jpeg: dict | None = None  # JPEG files: {"qtables": {id: [64 ints]}, "subsampling": 0|1|2} (re-encoding the
    #                           reconstruction with them lets a detector compare like with like)


# --------------------------------------------------------------------------------------------------- sniffing


def _sniff_bytes(head: bytes) -> str | None:
    """Image type from magic numbers, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic TIFF and BigTIFF
        return "tiff"
    # "BM" alone is too weak (a text file may start with it): also require a known DIB header size.
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    return None


def sniff_format(path: Path) -> str | None:
    """Image type from the file's first bytes (magic numbers), never from its extension; None when not an image
    (including when the path cannot be read: `read_rgb` says why)."""
    try:
        with open(path, "rb") as f:
            return _sniff_bytes(f.read(_SNIFF_BYTES))
    except OSError:
        return None


def _describe_non_image(head: bytes) -> str:
    """Why a file with no image signature was refused, as specifically as its first bytes allow."""
    if head.startswith(b"%PDF"):
        return "not an image (a PDF document)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (a ZIP archive)"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        kind = "AVIF" if brand.startswith("avi") else "HEIC/HEIF" if brand.startswith(("hei", "hev", "mif")) else None
        if kind:
            return f"unsupported image format {kind}: convert it to PNG or JPEG"
        return f"not an image (an ISO media file, brand '{brand}')"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut at the end of `head` is still text.
        text = head[: e.start].decode("utf-8") if e.start >= len(head) - 3 else ""
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    if text and printable >= 0.95 * len(text):
        lower = text.lstrip("\ufeff \r\n\t").lower()
        if "<svg" in lower[:_DESCRIBE_BYTES]:
            return "unsupported image format SVG: render it to PNG first"
        if lower.startswith(("<!doctype html", "<html")):
            return "not an image (looks like HTML, e.g. a web page saved under an image name)"
        return "not an image (looks like text)"
    return f"not an image (unrecognised content starting {head[:8].hex(' ')})"


# --------------------------------------------------------------------------------------------------- decoding


def _read_bytes(path: Path) -> bytes:
    """The whole file, or ImageLoadError saying why not. Read once, so the hash matches what is decoded."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageLoadError("broken symbolic link" if os.path.islink(path) else "no such file") from None
    except OSError as e:
        raise ImageLoadError(f"cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError("is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise ImageLoadError("not a regular file")
    if st.st_size == 0:
        raise ImageLoadError("empty file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except PermissionError:
        raise ImageLoadError("cannot read: permission denied") from None
    except OSError as e:
        raise ImageLoadError(f"cannot read: {e.strerror or e}") from None
    if not data:  # the file was emptied between stat and read
        raise ImageLoadError("empty file")
    return data


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.0f}" if n >= 10e6 else f"{n / 1e6:.2g}"


def _bomb_error(size: tuple[int, int] | int | None, limit: int) -> ImageLoadError:
    """The message for a file claiming too many pixels: (width, height) when known, else a pixel count."""
    limit_mp = _megapixels(limit)
    if isinstance(size, tuple):
        w, h = size
        return ImageLoadError(f"decompression bomb: {w}x{h} = {_megapixels(w * h)} MP exceeds the {limit_mp} MP limit")
    if isinstance(size, int):
        return ImageLoadError(f"decompression bomb: {_megapixels(size)} MP exceeds the {limit_mp} MP limit")
    return ImageLoadError(f"decompression bomb: more than the {limit_mp} MP limit")


def _pillow_bomb_size(data: bytes, fmt: str, err: Exception) -> tuple[int, int] | int | None:
    """What Pillow refused, for the message only: (width, height) read from the header without Pillow's check
    (its plugin factory), else the pixel count in its message (WebP checks inside its plugin), else None."""
    try:
        factory, _ = Image.OPEN[_PIL_FORMAT[fmt]]
        with factory(io.BytesIO(data), "") as im:
            return im.size
    except Exception:  # any failure just makes the message less specific
        found = re.search(r"\((\d+) pixels\)", str(err))
        return int(found.group(1)) if found else None


def _open(data: bytes, fmt: str) -> ImageFile.ImageFile:
    """Parse the header (Pillow's open is lazy: no pixel is decoded here)."""
    try:
        # formats=[...]: only the sniffed decoder may look at the bytes, so a file is never read as something else.
        return Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[fmt]])
    except Image.DecompressionBombError as e:
        # Pillow refuses above 2 * its global limit; that global may be lower than ours if someone changed it.
        pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
        raise _bomb_error(_pillow_bomb_size(data, fmt, e), min(MAX_PIXELS, pil_limit)) from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(f"corrupt or truncated {_DISPLAY[fmt]}: header unreadable") from None
    except Exception as e:  # a malformed header can make a plugin raise almost anything
        raise _decode_error(data, fmt, e) from None


def _check_size(size: tuple[int, int]) -> None:
    """Refuse bombs and slivers from the header, before decoding."""
    w, h = size
    if w * h > MAX_PIXELS:
        raise _bomb_error(size, MAX_PIXELS)
    if min(w, h) < MIN_SIDE:
        raise ImageLoadError(f"too small: {w}x{h} px (need at least {MIN_SIDE}x{MIN_SIDE})")


def _first_frame(im: ImageFile.ImageFile, data: bytes, fmt: str) -> list[str]:
    """Select frame 0 of an animation / page 0 of a multi-page file; a note when there were more."""
    try:
        n = getattr(im, "n_frames", 1)  # GIF: walks every frame header, so a damaged later frame shows up here
        if n > 1:
            im.seek(0)
    except Exception as e:
        raise _decode_error(data, fmt, e) from None
    if n <= 1:
        return []
    if fmt == "tiff":
        return [f"multi-page TIFF: first page of {n}"]
    if fmt == "jpeg":  # MPO: phones and 3D cameras append extra pictures (depth maps, previews)
        return [f"multi-picture JPEG: first image of {n}"]
    return [f"animated {_DISPLAY[fmt]}: first frame of {n}"]


def _is_truncated(data: bytes, fmt: str, err: BaseException) -> bool:
    text = str(err).lower()
    if isinstance(err, EOFError) or "truncated" in text or "broken data stream" in text:
        return True
    # WebP's decoder says only "could not create decoder object"; the RIFF header knows the intended length.
    return fmt == "webp" and len(data) < int.from_bytes(data[4:8], "little") + 8


def _decode_error(data: bytes, fmt: str, err: BaseException) -> ImageLoadError:
    """A decoder's exception, translated: truncation (the common case, e.g. an interrupted download) or damage."""
    if _is_truncated(data, fmt, err):
        return ImageLoadError(f"truncated {_DISPLAY[fmt]} (the file ends before the image data does)")
    return ImageLoadError(f"corrupt {_DISPLAY[fmt]}: {err}")


def _decode(im: ImageFile.ImageFile, data: bytes, fmt: str) -> None:
    """Decode the pixels; a short or damaged file raises instead of being filled in."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some library turned on Pillow's "fill missing data with grey" mode. A forensic score on invented pixels
        # is worthless, so we turn it back off rather than silently judge them.
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; resetting it to False")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im.load()
    except MemoryError:
        raise ImageLoadError(f"not enough memory to decode {im.size[0]}x{im.size[1]} px") from None
    except Exception as e:
        raise _decode_error(data, fmt, e) from None


def _apply_orientation(im: Image.Image) -> tuple[Image.Image, list[str]]:
    """Rotate / mirror as the EXIF orientation tag says, so pixels are as the camera's user saw them."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # corrupt EXIF must not cost us an otherwise fine picture
        return im, ["EXIF unreadable: orientation not applied"]
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return im, []
    try:
        return ImageOps.exif_transpose(im), [f"EXIF orientation {orientation} applied"]
    except Exception:
        return im, [f"EXIF orientation {orientation} could not be applied"]


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit to 8-bit by v / 257, rounded half up (65535 -> 255, 257 k -> k). Pillow's convert clips instead."""
    v = values.astype(np.uint32)
    return ((2 * v + 257) // 514).astype(np.uint8)


def _float_to_8(values: np.ndarray, kind: str = "floating-point") -> tuple[np.ndarray, str]:
    """Values of unknown range to 8-bit: [0, 1] is scaled by 255, anything else stretched from its min to max.
    Non-finite values (NaN, inf) take the lowest finite value, with a note; an image without a single finite value
    is an ImageLoadError (there is nothing to judge, and zeros would make a black picture of it)."""
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        raise ImageLoadError(f"{kind} image without a single finite pixel value (all NaN or infinite): nothing to "
                             "judge")
    lo, hi = float(v[finite].min()), float(v[finite].max())
    bad = int((~finite).sum())
    v = np.where(finite, v, lo)
    extra = f"; {bad} non-finite pixel values (NaN or inf) set to the lowest" if bad else ""
    if lo >= 0.0 and hi <= 1.0:
        return np.rint(v * 255.0).astype(np.uint8), f"{kind} [0, 1] scaled to 8-bit{extra}"
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.rint((v - lo) * scale).astype(np.uint8), f"{kind} range [{lo:g}, {hi:g}] stretched to 8-bit{extra}"


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """out = a * rgb + (1 - a) * 255, in integers, rounded."""
    rgb = rgba[..., :3].astype(np.uint32)  # [H, W, 3]
    a = rgba[..., 3:].astype(np.uint32)  # [H, W, 1]
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _has_alpha(im: Image.Image) -> bool:
    # Like Pillow's has_transparency_data (>= 10.1), spelled out so older Pillows behave the same.
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _to_rgb(im: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Any Pillow mode to uint8 [H, W, 3] RGB, with notes for conversions that lose or invent information."""
    mode = im.mode
    if mode in _MODES_16BIT:
        grey, notes = scale_16_to_8(np.asarray(im)), ["16-bit scaled to 8-bit"]
    elif mode == "I":  # 32-bit signed: what 16-bit PNGs became in older Pillows, or a scientific TIFF
        v = np.asarray(im)
        if v.min() >= 0 and v.max() <= 65535:
            grey, notes = scale_16_to_8(v), ["16-bit scaled to 8-bit"]
        else:
            grey, note = _float_to_8(v, "32-bit integer")
            notes = [note]
    elif mode == "F":
        grey, note = _float_to_8(np.asarray(im))
        notes = [note]
    elif _has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"))
        if rgba[..., 3].min() == 255:
            return np.ascontiguousarray(rgba[..., :3]), []
        return _composite_on_white(rgba), ["alpha composited on white"]
    else:
        try:
            rgb = np.asarray(im.convert("RGB"))
        except ValueError:
            raise ImageLoadError(f"unsupported colour mode {mode}") from None
        return rgb, ["CMYK converted to RGB (no colour profile applied)"] if mode == "CMYK" else []
    return np.repeat(grey[..., None], 3, axis=2), notes


def _png_16bit_rgb(data: bytes) -> bool:
    # IHDR is always first: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA).
    return len(data) > 25 and data[24] == 16 and data[25] in (2, 6)


def _warnings_as_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """Pillow's decoder warnings (corrupt EXIF, odd palettes) are worth a note; its bomb warning is ours to judge."""
    notes = []
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            continue
        text = f"decoder warning: {w.message}"
        if text not in notes:
            notes.append(text)
    return notes


def read_rgb(path: str | Path) -> RGBImage:
    """Decode one image file to uint8 RGB at its full size, EXIF orientation applied. Raises ImageLoadError."""
    path = Path(path)
    data = _read_bytes(path)
    fmt = _sniff_bytes(data[:_SNIFF_BYTES])
    if fmt is None:
        raise ImageLoadError(_describe_non_image(data[:_DESCRIBE_BYTES]))
    # Record, rather than print, what Pillow warns about; `catch_warnings` keeps the filter change local.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _open(data, fmt) as im:
            original_size = im.size
            _check_size(original_size)
            notes = _first_frame(im, data, fmt)
            original_mode = im.mode  # frame 0's (later GIF frames may differ)
            _decode(im, data, fmt)
            jpeg = _jpeg_settings(im) if fmt == "jpeg" else None
            oriented, orientation_notes = _apply_orientation(im)
            pixels, mode_notes = _to_rgb(oriented)
    if fmt == "png" and _png_16bit_rgb(data):
        mode_notes.append("16-bit RGB reduced to 8-bit")
    notes += orientation_notes + mode_notes + _warnings_as_notes(caught)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, pixels.shape
    return RGBImage(
        pixels=np.ascontiguousarray(pixels),
        path=path,
        format=fmt,
        original_size=original_size,
        original_mode=original_mode,
        notes=notes,
        sha256=hashlib.sha256(data).hexdigest(),
        jpeg=jpeg,
    )


def _jpeg_settings(im: Image.Image) -> dict | None:
    """The quantisation tables and chroma subsampling of a decoded JPEG, or None when Pillow does not expose them."""
    try:
        tables = {int(k): [int(v) for v in t] for k, t in (getattr(im, "quantization", None) or {}).items()}
        sampling = JpegImagePlugin.get_sampling(im)
    except Exception:
        return None
    if not tables or sampling < 0:
        return None
    return {"qtables": tables, "subsampling": int(sampling)}


# --------------------------------------------------------------------------------------------------- geometry


def _fit_note(height: int, width: int, resolution: int) -> str | None:
    side = min(height, width)
    parts = []
    if height != width:
        parts.append(f"centre-cropped {width}x{height} -> {side}x{side}")
    if side != resolution:
        # Upscaling is worth flagging: a smoothed-up image is not what the generator would have made.
        verb = "upscaled" if side < resolution else "resized"
        parts.append(f"{verb} to {resolution}" if parts else f"{verb} {side}x{side} -> {resolution}x{resolution}")
    return ", ".join(parts) or None


def load_image(path: str | Path, resolution: int) -> RGBImage:
    """`read_rgb` then `centre_crop_resize`: pixels are uint8 [R, R, 3], with a note when cropped or resized."""
    image = read_rgb(path)
    h, w = image.pixels.shape[:2]
    note = _fit_note(h, w, resolution)
    return replace(
        image,
        pixels=centre_crop_resize(image.pixels, resolution),
        notes=image.notes + ([note] if note else []),
    )


# --------------------------------------------------------------------------------------------------- discovery


def _walk(folder: Path, seen_dirs: set[tuple[int, int]], recursive: bool) -> Iterator[Path]:
    """Non-hidden entries below `folder` that are (or link to) files, in sorted order, depth first.
    Links are followed; a folder already entered (same st_dev, st_ino) is not entered again, so loops end.
    Unreadable folders are passed over quietly: what cannot be listed cannot be judged or named."""
    try:
        key = (st := os.stat(folder)).st_dev, st.st_ino
        if key in seen_dirs:
            return
        seen_dirs.add(key)
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        log.warning("cannot list %s: %s", folder, e.strerror or e)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        child = folder / entry.name
        try:
            is_dir = entry.is_dir()  # follows links
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                yield from _walk(child, seen_dirs, recursive)
        else:
            yield child  # a file, a link to one, or a broken link: `_classify` decides


def _classify(path: Path) -> str | None:
    """None when a walked file is a candidate image; otherwise why it is not."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "no such file"
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    return None if _sniff_bytes(head) else "not an image"


def _sort_key(path: Path) -> tuple[str, ...]:
    return path.parts  # by components, so "a/b" sorts with "a/" rather than between "a-" and "a0"


def find_images(
    paths: Sequence[str | Path], *, recursive: bool = True
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders into (candidate image files in a stable sorted order, skipped [(path, reason)]).

    Folders are walked (recursively unless `recursive=False`); hidden files and folders (name starts with '.')
    are skipped; symbolic links are followed, but a folder already visited (same (st_dev, st_ino)) is not entered
    again, so link loops end. Files found in folders are selected by CONTENT (`sniff_format`), not extension: a
    non-image whose extension looks like an image's (IMAGE_SUFFIXES) is reported in `skipped` as 'not an image';
    a file that could not be read is reported whatever its name; other non-images (README.txt) are ignored.
    A path named explicitly that is not a folder is always a candidate, even if missing or not an image, so that
    `read_rgb` reports its error. Each file (by resolved path) appears once.
    """
    candidates: dict[Path, Path] = {}  # resolved -> as found
    skipped: dict[Path, tuple[Path, str]] = {}
    seen_dirs: set[tuple[int, int]] = set()
    for given in map(Path, paths):
        if given.is_dir():
            for found in _walk(given, seen_dirs, recursive):
                reason = _classify(found)
                if reason is None:
                    candidates.setdefault(found.resolve(), found)
                elif reason != "not an image" or found.suffix.lower() in IMAGE_SUFFIXES:
                    skipped.setdefault(found.resolve(), (found, reason))
        else:
            candidates.setdefault(given.resolve(), given)
    # A file found both ways (say a link and its target) is a candidate, not also skipped.
    for key in candidates.keys() & skipped.keys():
        del skipped[key]
    return (
        sorted(candidates.values(), key=_sort_key),
        sorted(skipped.values(), key=lambda item: _sort_key(item[0])),
    )
