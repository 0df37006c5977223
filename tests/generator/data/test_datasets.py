"""Training data: image folders (formats, nesting, crops, corrupt files), the decode cache, procedural portraits,
the data order and minibatches."""

import os

import numpy as np
import pytest
from PIL import Image

import generator.data.datasets as datasets
from generator.data.datasets import DatasetError, ImageDataset, list_image_files, load_image_folder, open_dataset
from generator.training.loop import sample_indices

RES = 16  # smaller than every test image, so each one is resized

COLOURS = {
    "a/b/green.jpg": (0, 200, 0),
    "a/red.png": (220, 30, 30),
    "blue.webp": (20, 40, 230),
    "c/magenta.tif": (200, 0, 200),
    "c/yellow.bmp": (230, 230, 20),
    "tall.png": (250, 250, 250),  # 32x64: the central 32x32 is white, top and bottom strips black
    "wide.png": (0, 210, 210),  # 48x32: the central 32x32 is cyan, left and right strips black
}
CORRUPT = ["bad/empty.png", "bad/text.png", "bad/truncated.jpg", "bad/truncated.png"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A private dataset cache for every test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SGPROJECT_CACHE", str(path))
    return path / "datasets"


def _solid(colour, size=(40, 40)):
    return Image.new("RGB", size, colour)


def _noise(seed, size=64):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _write_truncated(path, img, fmt):
    img.save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_folder(root):
    """Every format, nested folders, non-square images, hidden files, non-images and corrupt files."""
    for rel in ["a/b", "c", "bad", ".hidden_dir"]:
        (root / rel).mkdir(parents=True, exist_ok=True)
    _solid(COLOURS["a/b/green.jpg"]).save(root / "a/b/green.jpg", quality=95)
    _solid(COLOURS["a/red.png"], (20, 20)).save(root / "a/red.png")  # smaller than 32: upscaled to RES anyway
    _solid(COLOURS["blue.webp"]).save(root / "blue.webp", quality=90)
    _solid(COLOURS["c/magenta.tif"]).save(root / "c/magenta.tif")
    _solid(COLOURS["c/yellow.bmp"]).save(root / "c/yellow.bmp")
    tall = Image.new("RGB", (32, 64), (0, 0, 0))
    tall.paste(_solid(COLOURS["tall.png"], (32, 32)), (0, 16))
    tall.save(root / "tall.png")
    wide = Image.new("RGB", (48, 32), (0, 0, 0))
    wide.paste(_solid(COLOURS["wide.png"], (32, 32)), (8, 0))
    wide.save(root / "wide.png")
    # ignored: hidden files and folders, other extensions
    _solid((1, 2, 3)).save(root / ".hidden.png")
    _solid((1, 2, 3)).save(root / ".hidden_dir/inside.png")
    (root / "notes.txt").write_text("not an image")
    # corrupt
    (root / "bad/empty.png").write_bytes(b"")
    (root / "bad/text.png").write_text("hello, I am text with a .png name\n")
    _write_truncated(root / "bad/truncated.jpg", _noise(0), "JPEG")
    _write_truncated(root / "bad/truncated.png", _noise(1), "PNG")
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images")


# ------------------------------------------------------------------------------------------------ image folders


def test_list_image_files_recursive_sorted_without_hidden(folder):
    files = [f.relative_to(folder).as_posix() for f in list_image_files(folder)]
    assert files == sorted(list(COLOURS) + CORRUPT, key=lambda r: str(folder / r))
    assert not any(part.startswith(".") for f in files for part in f.split("/"))


def test_folder_decodes_every_format_crops_and_skips_corrupt_files(folder):
    calls = []
    ds = load_image_folder(folder, RES, progress=lambda done, total: calls.append((done, total)))
    good = [r for r in (f.relative_to(folder).as_posix() for f in list_image_files(folder)) if r in COLOURS]
    assert len(ds) == len(COLOURS) == 7
    assert ds.images.dtype == np.uint8 and ds.images.shape == (7, 3, RES, RES)
    assert ds.resolution == RES and ds.source == str(folder)
    for img, rel in zip(ds.images, good):  # in sorted file order
        diff = np.abs(img.astype(int) - np.array(COLOURS[rel])[:, None, None])
        # lossy formats are close; the centre crop removes the black strips of the non-square ones entirely
        assert diff.max() <= 12, (rel, diff.max())
    # corrupt files: skipped, each with a reason, never fatal
    reasons = dict(ds.skipped)
    assert sorted(reasons) == CORRUPT
    assert all(isinstance(reason, str) and reason for reason in reasons.values())
    assert "truncated" in reasons["bad/truncated.jpg"] and "truncated" in reasons["bad/truncated.png"]
    assert calls[-1] == (11, 11) and len(calls) == 11  # progress over every candidate file


def test_centre_crop_of_a_non_square_image(tmp_path):
    """Left half red, right half blue, 64x32 with a green 16 px strip on each side: the crop keeps the middle."""
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :16] = img[:, 48:] = (0, 255, 0)
    img[:, 16:32] = (255, 0, 0)
    img[:, 32:48] = (0, 0, 255)
    (tmp_path / "f").mkdir()
    Image.fromarray(img).save(tmp_path / "f/x.png")
    out = load_image_folder(tmp_path / "f", 32).images[0]  # [3, 32, 32], no resize needed
    assert (out[:, :, :16] == np.array([255, 0, 0])[:, None, None]).all()
    assert (out[:, :, 16:] == np.array([0, 0, 255])[:, None, None]).all()


def test_grey_and_alpha_images_become_rgb(tmp_path):
    (tmp_path / "f").mkdir()
    Image.new("L", (20, 20), 128).save(tmp_path / "f/grey.png")
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(tmp_path / "f/alpha.png")
    Image.new("P", (20, 20), 3).save(tmp_path / "f/palette.gif")  # .gif is not a training extension
    ds = load_image_folder(tmp_path / "f", 8)
    assert ds.images.shape == (2, 3, 8, 8)
    assert (ds.images[0] == np.array([10, 20, 30])[:, None, None]).all()  # alpha.png first (sorted)
    assert (ds.images[1] == 128).all()


def test_cache_is_reused_on_the_second_load(folder, cache, monkeypatch):
    first = load_image_folder(folder, RES)
    assert len(list(cache.glob("folder-*.npy"))) == 1 and len(list(cache.glob("folder-*.json"))) == 1

    def no_decoding(path, resolution):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(datasets, "decode_file", no_decoding)
    second = load_image_folder(folder, RES)
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert second.skipped == first.skipped  # the skipped list and reasons come from the cache too
    assert isinstance(second.images, np.memmap)  # memory-mapped, not read into memory


def test_cache_is_invalidated_when_a_file_changes_or_appears(folder, cache, monkeypatch):
    load_image_folder(folder, RES)
    decoded = []
    real_decode = datasets.decode_file

    def counting(path, resolution):
        decoded.append(path)
        return real_decode(path, resolution)

    monkeypatch.setattr(datasets, "decode_file", counting)
    # same name, new content (and a different mtime, as an edit gives)
    red = folder / "a/red.png"
    _solid((0, 0, 255), (20, 20)).save(red)
    st = red.stat()
    os.utime(red, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    ds = load_image_folder(folder, RES)
    assert len(decoded) == 11
    good = [r for r in (f.relative_to(folder).as_posix() for f in list_image_files(folder)) if r in COLOURS]
    assert (ds.images[good.index("a/red.png")] == np.array([0, 0, 255])[:, None, None]).all()
    # a new file
    decoded.clear()
    _solid((9, 9, 9)).save(folder / "c/new.png")
    assert len(load_image_folder(folder, RES)) == 8
    assert len(decoded) == 12
    # another resolution is another cache entry
    decoded.clear()
    assert load_image_folder(folder, 8).resolution == 8
    assert len(decoded) == 12
    assert len(list(cache.glob("folder-*.npy"))) == 4


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        load_image_folder(tmp_path / "missing", RES)
    (tmp_path / "empty/sub").mkdir(parents=True)
    (tmp_path / "empty/readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path / "empty", RES)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt/a.png").write_bytes(b"")
    (tmp_path / "corrupt/b.jpg").write_text("text")
    with pytest.raises(DatasetError, match="none of the 2 image files"):
        load_image_folder(tmp_path / "corrupt", RES)


def test_open_dataset_with_a_path(folder):
    assert len(open_dataset(str(folder), RES)) == 7
    assert len(open_dataset(folder, RES)) == 7


# ------------------------------------------------------------------------------------------------- portraits


def test_portraits_spec_renders_the_procedural_set_once(monkeypatch):
    portraits = pytest.importorskip("generator.data.portraits")
    calls = []
    ds = open_dataset("portraits:3:7", 32, progress=lambda done, total: calls.append((done, total)))
    assert len(ds) == 3 and ds.images.shape == (3, 3, 32, 32) and ds.images.dtype == np.uint8
    assert ds.source == "portraits:3:7" and ds.skipped == []
    assert calls[-1] == (3, 3)
    for i in range(3):
        expected, _ = portraits.render_portrait(7, i, 32)  # [H, W, 3]
        assert np.array_equal(ds.images[i], expected.transpose(2, 0, 1))

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(portraits, "render_portrait", no_rendering)
    again = open_dataset("portraits:3:7", 32)
    assert np.array_equal(np.asarray(again.images), np.asarray(ds.images))


def test_portraits_spec_default_set_is_zero():
    portraits = pytest.importorskip("generator.data.portraits")
    ds = open_dataset("portraits:1", 32)
    assert ds.source == "portraits:1:0"
    assert np.array_equal(ds.images[0], portraits.render_portrait(0, 0, 32)[0].transpose(2, 0, 1))


def test_a_malformed_portraits_spec_is_a_path():
    with pytest.raises(DatasetError, match="not a folder"):
        open_dataset("portraits:x", 32)


# ------------------------------------------------------------------------------------------------ data order


def test_sample_indices_every_epoch_is_a_permutation():
    n = 7
    stream = sample_indices(n, 0, 5 * n, seed=3)
    assert stream.dtype == np.int64 and stream.shape == (5 * n,)
    epochs = stream.reshape(5, n)
    for e in epochs:
        assert sorted(e) == list(range(n))
    assert len({tuple(e) for e in epochs}) > 1  # a fresh order every epoch


def test_sample_indices_deterministic_and_seeded():
    a = sample_indices(10, 0, 30, seed=1)
    assert np.array_equal(a, sample_indices(10, 0, 30, seed=1))
    assert not np.array_equal(a, sample_indices(10, 0, 30, seed=2))


@pytest.mark.parametrize("start, count", [(0, 1), (3, 4), (5, 10), (9, 12), (20, 3)])
def test_sample_indices_is_a_window_on_one_stream(start, count):
    """Any window (across epoch boundaries too) equals the same positions of the whole stream: a resumed run or
    another process's shard reads exactly what an uninterrupted single process would."""
    full = sample_indices(6, 0, 30, seed=5)
    assert np.array_equal(sample_indices(6, start, count, seed=5), full[start : start + count])


# ------------------------------------------------------------------------------------------------ minibatches


def test_batch_is_float_in_minus_one_one_in_the_given_order():
    images = np.stack([np.full((3, 4, 4), v, np.uint8) for v in (0, 255, 51, 204)])
    ds = ImageDataset(images, "test")
    x = ds.batch(np.array([2, 0, 1, 2, 3]))
    assert x.dtype.is_floating_point and str(x.dtype) == "torch.float32"
    assert tuple(x.shape) == (5, 3, 4, 4) and x.device.type == "cpu"
    values = x[:, 0, 0, 0].tolist()
    assert values == pytest.approx([51 / 127.5 - 1, -1.0, 1.0, 51 / 127.5 - 1, 204 / 127.5 - 1])
    assert x.min() >= -1 and x.max() <= 1
    assert len(ds) == 4 and ds.resolution == 4
