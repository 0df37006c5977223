"""Tests for detectors/images.py: safe decoding of bad and odd files, geometry, tensors and folder discovery."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from detectors import images
from detectors.images import (
    MIN_SIDE,
    ImageLoadError,
    find_images,
    load_image,
    read_rgb,
    scale_16_to_8,
    sniff_format,
)
from generator.util.errors import SGProjectError
from generator.util.imaging import centre_crop_resize, save_png, to_tensor, to_uint8
from tests.detectors import badfiles


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("bad")
    return folder, badfiles.make_bad_files(folder)


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- bad files


def test_every_bad_file_behaves_as_declared(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, expected = bad
    assert len(expected) >= 25
    for name, message in expected.items():
        path = folder / name
        assert path.stat().st_size < 100_000, name
        if message is None:
            img = read_rgb(path)
            assert img.pixels.dtype == np.uint8 and img.pixels.ndim == 3 and img.pixels.shape[2] == 3, name
            assert min(img.pixels.shape[:2]) >= MIN_SIDE, name
            assert img.format in images.SUPPORTED and len(img.sha256) == 64, name
        else:
            with pytest.raises(ImageLoadError) as info:
                read_rgb(path)
            assert message in str(info.value), (name, str(info.value))
            assert "\n" not in str(info.value)


def test_errors_are_project_errors() -> None:
    assert issubclass(ImageLoadError, SGProjectError)


def test_notes_and_modes(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = bad
    expectations = {
        "gray16.png": ("I;16", "16-bit scaled to 8-bit"),
        "cmyk.jpg": ("CMYK", "CMYK converted"),
        "rgba.png": ("RGBA", "alpha composited on white"),
        "palette_transparent.png": ("P", "alpha composited on white"),
        "gray_alpha.png": ("LA", "alpha composited on white"),
        "animated.gif": ("P", "animated GIF: first frame of 3"),
        "animated.png": ("RGB", "animated PNG: first frame of 3"),
        "animated.webp": ("RGB", "animated WebP: first frame of 3"),
        "float.tiff": ("F", "floating-point [0, 1] scaled"),
        badfiles.EXIF_ROTATED: ("RGB", "EXIF orientation 6 applied"),
    }
    for name, (mode, note) in expectations.items():
        img = read_rgb(folder / name)
        assert img.original_mode == mode, name
        assert any(note in n for n in img.notes), (name, img.notes)
    plain = read_rgb(folder / "palette.png")
    assert plain.original_mode == "P" and plain.notes == []


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 200  # red 200 everywhere
    rgba[:, :8, 3] = 0  # left half transparent -> white
    rgba[:, 8:, 3] = 255  # right half opaque -> as is
    img = read_rgb(_png(tmp_path / "a.png", rgba))
    assert (img.pixels[:, :8] == 255).all()
    assert (img.pixels[:, 8:] == [200, 0, 0]).all()


def test_bilevel_palette_and_gif_first_frame_colours(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = bad
    assert set(np.unique(read_rgb(folder / "bilevel.png").pixels)) <= {0, 255}
    first = read_rgb(folder / "animated.gif").pixels
    assert (first == [255, 0, 0]).all()  # frame 0 is red, not the later green or blue


def test_sixteen_bit_scaling_is_exact(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = bad
    grey = read_rgb(folder / badfiles.GRAY16).pixels[..., 0]  # [16, 256]
    assert (grey[0] == np.arange(256)).all()  # 257 k -> k
    assert list(grey[-1, :4]) == [255, 0, 1, 0]  # 65535 -> 255, rounding at 128 / 129
    k = np.arange(256, dtype=np.uint32)
    assert (scale_16_to_8((k * 257).astype(np.uint16)) == k).all()
    v = np.arange(65536, dtype=np.uint32)
    assert (scale_16_to_8(v.astype(np.uint16)) == np.floor(v / 257 + 0.5)).all()


def test_sixteen_bit_rgb_png_is_noted(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")  # Pillow cannot write 16-bit RGB
    v = np.tile(np.arange(0, 65536, 4096, dtype=np.uint16), (16, 1))  # [16, 16]
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), np.dstack([v, v, v]))
    img = read_rgb(path)
    assert "16-bit RGB reduced to 8-bit" in img.notes
    assert np.abs(img.pixels[..., 0].astype(int) - scale_16_to_8(v)).max() <= 1  # Pillow keeps the high byte


def test_big_endian_16_bit_and_32_bit_int_modes() -> None:
    v = badfiles.gray16_values(32, 16)
    big = Image.frombytes("I;16B", (32, 16), v.astype(">u2").tobytes())
    pixels, notes = images._to_rgb(big)
    assert (pixels[..., 0] == scale_16_to_8(v)).all() and notes == ["16-bit scaled to 8-bit"]
    as_int = Image.fromarray(v.astype(np.int32))  # mode "I", how older Pillows read 16-bit PNGs
    assert as_int.mode == "I"
    assert (images._to_rgb(as_int)[0][..., 0] == scale_16_to_8(v)).all()


def test_exif_rotation_changes_shape(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = bad
    img = read_rgb(folder / badfiles.EXIF_ROTATED)
    w, h = badfiles.EXIF_STORED_SIZE
    assert img.original_size == (w, h)
    assert img.pixels.shape == (w, h, 3)  # orientation 6 is a quarter turn: stored width becomes height


def test_exif_rotation_direction(tmp_path: Path) -> None:
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:, :16] = 255  # white left half, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored turned 90 degrees clockwise: the left half goes on top
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, format="PNG", exif=exif.tobytes())
    shown = read_rgb(path).pixels
    assert shown.shape == (32, 16, 3)
    assert (shown[:16] == 255).all() and (shown[16:] == 0).all()


def test_non_ascii_name(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = bad
    img = read_rgb(str(folder / badfiles.NON_ASCII_NAME))
    assert img.path.name == badfiles.NON_ASCII_NAME and img.pixels.shape == (48, 64, 3)


def test_missing_folder_and_special_files(tmp_path: Path) -> None:
    cases = {"no such file": tmp_path / "missing.png", "is a folder": tmp_path}
    link = tmp_path / "dangling.png"
    link.symlink_to(tmp_path / "nowhere.png")
    cases["broken symbolic link"] = link
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    cases["not a regular file"] = fifo  # must not block
    for message, path in cases.items():
        with pytest.raises(ImageLoadError, match=message):
            read_rgb(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = _png(tmp_path / "locked.png", _rgb(16, 16))
    path.chmod(0)
    with pytest.raises(ImageLoadError, match="permission denied"):
        read_rgb(path)


def test_bomb_refused_by_us_even_when_pillow_check_is_off(
    bad: tuple[Path, dict[str, str | None]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = bad
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageLoadError, match="decompression bomb: 30000x30000 = 900 MP exceeds the 179 MP limit"):
        read_rgb(folder / "bomb.png")
    # Just above our own limit (and below Pillow's default error threshold when it is on).
    monkeypatch.setattr(images, "MAX_PIXELS", 600 * 600)
    (tmp_path / "over.png").write_bytes(badfiles.bomb_png(601, 600))
    with pytest.raises(ImageLoadError, match="601x600"):
        read_rgb(tmp_path / "over.png")


def test_bomb_message_uses_a_lowered_pillow_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # someone lowered Pillow's global: Pillow now refuses
    with pytest.raises(ImageLoadError, match=r"decompression bomb: 64x64 = 0.0041 MP exceeds the 0.002 MP limit"):
        read_rgb(_png(tmp_path / "a.png", _rgb(64, 64)))


def test_truncation_is_never_filled_in(
    bad: tuple[Path, dict[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = bad
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # some other library turned it on
    with pytest.raises(ImageLoadError, match="truncated PNG"):
        read_rgb(folder / "truncated.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_damaged_files_raise_only_image_load_errors(bad: tuple[Path, dict[str, str | None]], tmp_path: Path) -> None:
    """Cut short or with a few bytes changed, every good file either loads or raises ImageLoadError, nothing else
    (a batch run must never die on one user's broken file)."""
    folder, expected = bad
    rng = np.random.default_rng(0)
    case = tmp_path / "case"
    for name in (n for n, m in expected.items() if m is None):
        data = (folder / name).read_bytes()
        for i in range(24):
            damaged = bytearray(data[: rng.integers(1, len(data))] if i % 3 == 0 else data)
            if i % 3:
                for at in rng.integers(8, len(damaged), size=rng.integers(1, 6)):
                    damaged[at] = rng.integers(0, 256)
            case.write_bytes(bytes(damaged))
            try:
                img = read_rgb(case)
            except ImageLoadError as e:
                assert str(e) and "\n" not in str(e)
            else:
                assert img.pixels.dtype == np.uint8 and img.pixels.shape[2] == 3


def test_bomb_message_without_dimensions() -> None:
    assert str(images._bomb_error(432_014_336, 178_956_970)) == "decompression bomb: 432 MP exceeds the 179 MP limit"


def test_hash_is_of_the_file_bytes(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, _ = bad
    path = folder / "image.bmp"
    assert read_rgb(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- sniffing


def test_sniffing_ignores_extensions(bad: tuple[Path, dict[str, str | None]], tmp_path: Path) -> None:
    folder, _ = bad
    assert sniff_format(folder / "png_named.jpg") == "png"
    assert read_rgb(folder / "png_named.jpg").format == "png"
    found = {name: sniff_format(folder / name) for name in
             ["image.webp", "image.bmp", "image.tiff", "animated.gif", "cmyk.jpg", "text.png", "empty.png"]}
    assert found == {"image.webp": "webp", "image.bmp": "bmp", "image.tiff": "tiff", "animated.gif": "gif",
                     "cmyk.jpg": "jpeg", "text.png": None, "empty.png": None}
    (tmp_path / "noext").write_bytes((folder / "image.webp").read_bytes())
    assert sniff_format(tmp_path / "noext") == "webp"
    (tmp_path / "bm.txt").write_bytes(b"BM is how this text starts, but it is still text\n")
    assert sniff_format(tmp_path / "bm.txt") is None
    assert sniff_format(tmp_path / "missing") is None and sniff_format(tmp_path) is None


# ----------------------------------------------------------------------------------------------- geometry


def test_centre_crop_resize_crops_the_centre() -> None:
    wide = np.zeros((48, 64, 3), np.uint8)
    wide[:, 8:56] = 255  # the centre 48 columns are white, 8 black columns each side
    out = centre_crop_resize(wide, 48)
    assert out.shape == (48, 48, 3) and (out == 255).all()  # pure crop, no resize
    tall = np.zeros((64, 48, 3), np.uint8)
    tall[8:56] = 255
    small = centre_crop_resize(tall, 16)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8 and (small == 255).all()
    assert centre_crop_resize(_rgb(10, 10), 32).shape == (32, 32, 3)  # upscaling works too


def test_load_image_notes(tmp_path: Path) -> None:
    img = load_image(_png(tmp_path / "a.png", _rgb(48, 64)), 16)
    assert img.pixels.shape == (16, 16, 3)
    assert img.original_size == (64, 48)
    assert img.notes == ["centre-cropped 64x48 -> 48x48, resized to 16"]
    assert load_image(tmp_path / "a.png", 48).notes == ["centre-cropped 64x48 -> 48x48"]
    square = _png(tmp_path / "s.png", _rgb(32, 32))
    assert load_image(square, 32).notes == []
    assert load_image(square, 16).notes == ["resized 32x32 -> 16x16"]
    assert load_image(square, 64).notes == ["upscaled 32x32 -> 64x64"]


# ----------------------------------------------------------------------------------------------- tensors


def test_tensor_round_trip_is_exact() -> None:
    batch = [_rgb(8, 8, seed) for seed in range(3)]
    batch[0][0, 0] = [0, 255, 128]
    x = to_tensor(batch)
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, :, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
    back = to_uint8(x)
    assert back.shape == (3, 8, 8, 3) and back.dtype == np.uint8
    assert (back == np.stack(batch)).all()
    assert (to_uint8(x[1]) == batch[1]).all()  # unbatched [3, H, W]


def test_to_uint8_clamps_and_rounds() -> None:
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0, 1 / 127.5 - 1 + 0.003]).reshape(1, 1, 6).expand(3, 1, 6)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 128, 255, 255, 1]  # 0 -> 127.5 rounds to even: 128


def test_to_tensor_rejects_mixed_sizes() -> None:
    with pytest.raises(AssertionError):
        to_tensor([_rgb(8, 8), _rgb(8, 9)])
    with pytest.raises(ValueError):
        to_tensor([])


def test_save_png_is_atomic_and_lossless(tmp_path: Path) -> None:
    pixels = _rgb(20, 30)
    path = tmp_path / "out" / "x.png"
    save_png(pixels, path)
    save_png(pixels, path)  # replacing an existing file
    assert (read_rgb(path).pixels == pixels).all()
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.png"]  # no temp file left behind
    with pytest.raises(AssertionError):
        save_png(pixels.astype(np.float32), tmp_path / "bad.png")


# ----------------------------------------------------------------------------------------------- discovery


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """root/ a.png  b/c.jpg (a PNG)  b/d/e.png  .hid/x.png  .h.png  notes.txt  fake.png (text)  up -> root (loop)
    outside/o.png  root/ext -> outside (a link to a folder elsewhere)  root/dup.png -> a.png"""
    root = tmp_path / "root"
    for rel in ["a.png", "b/c.jpg", "b/d/e.png", ".hid/x.png", ".h.png", "../outside/o.png"]:
        _png(root / rel, _rgb(16, 16))
    (root / "notes.txt").write_text("hello")
    (root / "fake.png").write_text("not really a png")
    (root / "up").symlink_to(root, target_is_directory=True)
    (root / "b" / "d" / "loop").symlink_to(root / "b", target_is_directory=True)
    (root / "ext").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "dup.png").symlink_to(root / "a.png")
    return root


def test_find_images_walks_safely(tree: Path) -> None:
    found, skipped = find_images([tree])
    rel = [p.relative_to(tree).as_posix() for p in found]
    assert rel == ["a.png", "b/c.jpg", "b/d/e.png", "ext/o.png"]  # sorted; loops ended; hidden skipped; dup once
    assert [(p.relative_to(tree).as_posix(), r) for p, r in skipped] == [("fake.png", "not an image")]
    assert find_images([tree]) == (found, skipped)  # stable
    assert find_images([tree / "b", tree]) == (found, skipped)  # order of arguments does not matter


def test_find_images_not_recursive(tree: Path) -> None:
    found, _ = find_images([tree], recursive=False)
    assert [p.name for p in found] == ["a.png"]


def test_find_images_explicit_files_are_always_candidates(tree: Path) -> None:
    named = [tree / "fake.png", tree / "notes.txt", tree / ".h.png", tree / "missing.png", tree / "a.png"]
    found, skipped = find_images(named + [tree / "a.png"])
    assert sorted(found, key=lambda p: p.parts) == found
    assert {p.name for p in found} == {"fake.png", "notes.txt", ".h.png", "missing.png", "a.png"}
    assert skipped == []
    # Named and also walked: reported once, as a candidate.
    found, skipped = find_images([tree, tree / "fake.png"])
    assert tree / "fake.png" in found and skipped == []


def test_find_images_on_bad_files(bad: tuple[Path, dict[str, str | None]]) -> None:
    folder, expected = bad
    found, skipped = find_images([folder])
    names = {p.relative_to(folder).as_posix() for p in found}
    assert ".hidden.png" not in names and "loop/inner.png" in names
    assert not any("parent" in p.parts for p in found)  # the loop link was not walked again
    # photo.heic cannot be decoded, but it is a photo a user expects to see judged: reported, not ignored
    assert {p.name for p, _ in skipped} == {"empty.png", "text.png", "webpage.jpg", "photo.heic"}
    assert "photo.heic" not in names
    loadable = {n for n, m in expected.items() if m is None and not n.startswith(".")}
    assert loadable <= names


def test_float_images_without_finite_values_are_refused(tmp_path: Path) -> None:
    """A float TIFF of NaNs (or infinities) is an error with its reason, not a black picture; a few non-finite
    pixels take the lowest finite value, with a note."""
    for name, fill in (("nan.tiff", np.nan), ("inf.tiff", np.inf)):
        Image.fromarray(np.full((64, 64), fill, np.float32), mode="F").save(tmp_path / name)
        with pytest.raises(ImageLoadError, match="without a single finite pixel value"):
            read_rgb(tmp_path / name)
    v = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    v[0, :3] = [np.nan, np.inf, -np.inf]
    Image.fromarray(v, mode="F").save(tmp_path / "some.tiff")
    img = read_rgb(tmp_path / "some.tiff")
    assert (img.pixels[0, :3] == img.pixels[..., 0].min()).all()
    assert any("3 non-finite pixel values" in n for n in img.notes), img.notes
