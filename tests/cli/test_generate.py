"""`sgproject generate` and `sgproject info`, through typer's CliRunner on temporary folders.

The installed typer vendors click 8.2+ semantics: `result.stdout` and `result.stderr` are separate and
`result.output` is both interleaved. Results go to stdout, progress and errors to stderr.
"""

import json

import numpy as np
import pytest
from PIL import Image

from generator.checkpoint import save_generator
from tests.cli.helpers import ANSI, assert_clean_failure, run


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_generate_seeds_and_grid(tmp_path):
    out = tmp_path / "out"
    r = run("generate", "--model", "tiny", "--seeds", "0-3", "--grid", "--outdir", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png"]
    singles = [_png(out / f"seed{s:04d}.png") for s in range(4)]
    assert all(im.shape == (32, 32, 3) for im in singles)
    assert not np.array_equal(singles[0], singles[1])
    grid = _png(out / "grid.png")
    assert grid.shape == (64, 64, 3)  # 4 images: 2 x 2
    assert np.array_equal(grid[:32, 32:], singles[1]) and np.array_equal(grid[32:, :32], singles[2])
    # every written path is printed on stdout (one per line); the model line goes to stderr
    printed = [line.rsplit("/", 1)[-1] for line in ANSI.sub("", r.stdout).split()]
    assert printed == [f"seed{s:04d}.png" for s in range(4)] + ["grid.png"]
    assert "tiny" in r.stderr


def test_generate_is_deterministic_and_batch_independent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("generate", "-m", "tiny", "-s", "5,9", "-o", a).exit_code == 0
    assert run("generate", "-m", "tiny", "-s", "9,5", "-o", b, "--batch-size", "1").exit_code == 0
    for name in ("seed0005.png", "seed0009.png"):
        diff = np.abs(_png(a / name).astype(int) - _png(b / name).astype(int))
        assert diff.max() <= 1, name  # batch size may move a value across a rounding boundary, no more


def test_generate_trunc_zero_gives_one_image(tmp_path):
    r = run("generate", "-m", "tiny", "-s", "0-2", "--trunc", "0", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    ims = [_png(tmp_path / f"seed{s:04d}.png").astype(int) for s in range(3)]
    assert np.abs(ims[0] - ims[1]).max() <= 1 and np.abs(ims[0] - ims[2]).max() <= 1


def test_generate_random_noise_mode(tmp_path):
    r = run("generate", "-m", "tiny", "-s", "0-1", "--noise-mode", "random", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "seed0001.png").exists()


def test_generate_style_mixing(tmp_path):
    r = run("generate", "--model", "tiny", "--mix", "1-2", "3-5", "--outdir", tmp_path)
    assert r.exit_code == 0, r.output
    # tiny is 32 px: coarse (4-8 px) and middle (16-32 px) styles exist, fine (64 px and up) does not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix-coarse.png", "mix-middle.png"]
    assert "skipped fine" in r.stderr
    for name in ("mix-coarse.png", "mix-middle.png"):
        fig = _png(tmp_path / name)
        assert fig.shape == ((2 + 1) * 32, (3 + 1) * 32, 3)  # header row + 2 row seeds; header col + 3 cols
        assert (fig[:32, :32] == 255).all(), "the top-left cell is blank"
    # the top row holds the column sources: the same images `generate` writes for seeds 3-5
    single = tmp_path / "single"
    assert run("generate", "-m", "tiny", "-s", "3-5", "-o", single).exit_code == 0
    fig = _png(tmp_path / "mix-coarse.png").astype(int)
    for c, seed in enumerate((3, 4, 5), start=1):
        cell = fig[:32, 32 * c : 32 * (c + 1)]
        assert np.abs(cell - _png(single / f"seed{seed:04d}.png").astype(int)).max() <= 1
    # and the mixed cells differ from their column source (the row seed's styles were taken)
    assert np.abs(fig[32:64, 32:64] - fig[:32, 32:64]).max() > 0


def test_info_json():
    r = run("info", "tiny", "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["name"] == "tiny"
    assert record["parameters"] == 96851  # tiny's parameter count (z/w 64, 2 mapping layers, 32 channels, 32 px)
    assert record["num_ws"] == 8 and record["noise_maps"] == 7
    assert record["config"]["resolution"] == 32
    assert len(record["sha256"]) == 64


def test_info_table():
    r = run("info", "tiny")
    assert r.exit_code == 0, r.output
    assert "parameters" in r.stdout and "96,851" in r.stdout


def test_info_of_a_saved_checkpoint(tmp_path):
    from generator import load_generator

    G, _ = load_generator("tiny")
    path = save_generator(G, tmp_path / "mine.safetensors")
    r = run("info", path, "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["name"] == "mine" and record["path"] == str(path)


@pytest.mark.parametrize("seeds", ["x", "3-1", "1,,2", "-5"])
def test_bad_seeds_exit_2(tmp_path, seeds):
    r = run("generate", "--model", "tiny", f"--seeds={seeds}", "-o", tmp_path)
    assert_clean_failure(r, "seed")
    assert not any(tmp_path.iterdir())


def test_bad_mix_seeds_exit_2(tmp_path):
    assert_clean_failure(run("generate", "-m", "tiny", "--mix", "1-2", "b", "-o", tmp_path), "seed")


def test_bad_noise_mode_exit_2(tmp_path):
    assert_clean_failure(run("generate", "-m", "tiny", "--noise-mode", "loud", "-o", tmp_path), "noise-mode")


@pytest.mark.parametrize("command", ["generate", "info"])
def test_unknown_model_exit_2(tmp_path, command):
    args = ["info", "no-such-model"] if command == "info" else ["generate", "--model", "no-such-model", "-o", tmp_path]
    assert_clean_failure(run(*args), "no-such-model")


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 50, (64).to_bytes(8, "little") + b"{" + b"\xff" * 100])
@pytest.mark.parametrize("command", ["generate", "info"])
def test_corrupt_checkpoint_exit_2(tmp_path, content, command):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    outdir = tmp_path / "out"
    args = ["generate", "--model", p, "-o", outdir] if command == "generate" else ["info", p]
    assert_clean_failure(run(*args), str(p))
    assert not outdir.exists()


def test_truncated_checkpoint_exit_2(tmp_path):
    from generator import load_generator

    G, _ = load_generator("tiny")
    path = save_generator(G, tmp_path / "g.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_clean_failure(run("generate", "-m", path, "-o", tmp_path / "out"), "g.safetensors")
