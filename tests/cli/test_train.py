"""`sgproject train` through typer's CliRunner on temporary folders (tiny preset, a minibatch or two)."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import generator.training.loop as train_mod
from generator.registry import load_generator
from tests.cli.helpers import ANSI, assert_clean_failure, run

QUICK = ["--cfg", "tiny", "--kimg", "0.008", "--snap", "0.004", "--tick", "0.004", "--threads", "1"]


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    """A private dataset cache; the torch thread count restored after `--threads 1`."""
    monkeypatch.setenv("SGPROJECT_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _run(*args):
    return run("train", *args)


def _log(outdir):
    return [json.loads(line) for line in (outdir / "stats.jsonl").read_text().splitlines()]


def _snapshot(outdir):
    return torch.load(outdir / "training-state.pt", map_location="cpu", weights_only=True)


def test_train_writes_a_generator_and_resumes(data, tmp_path):
    out = tmp_path / "run"
    r = _run(data, "--outdir", out, *QUICK)  # the preset's batch 8: one minibatch
    assert r.exit_code == 0, r.output
    assert "finished at" in r.stdout and "network-latest.safetensors" in r.stdout
    assert "training tiny" in ANSI.sub("", r.stderr)
    G, info = load_generator(out / "network-latest.safetensors")
    assert G.img_resolution == 32 and info.info["preset"] == "tiny"
    for name in ("training-state.pt", "config.json", "stats.jsonl", "samples-000000.png"):
        assert (out / name).exists(), name
    assert _snapshot(out)["step"] == 1
    # continue the same run to 0.016 kimg
    r = _run(data, "--outdir", out, "--resume", "--kimg", "0.016", "--snap", "0.004", "--tick", "0.004")
    assert r.exit_code == 0, r.output
    assert (_snapshot(out)["step"], _snapshot(out)["nimg"]) == (2, 16)
    assert [rec["resume"] for rec in _log(out) if rec["event"] == "start"] == [False, True]


def test_options_reach_the_config(data, tmp_path):
    out = tmp_path / "run"
    r = _run(data, "--outdir", out, *QUICK, "--batch", "4", "--gamma", "0.5", "--seed", "3", "--lr", "0.001",
             "--pl-weight", "0", "--mixing", "0.5", "--xflip")
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["batch"], cfg["gamma"], cfg["seed"], cfg["g_lr"], cfg["d_lr"]) == (4, 0.5, 3, 0.001, 0.001)
    assert (cfg["pl_weight"], cfg["mixing_prob"], cfg["xflip"], cfg["preset"]) == (0.0, 0.5, True, "tiny")
    assert _snapshot(out)["step"] == 2


def test_ctrl_c_snapshots_and_exits_130(data, tmp_path, monkeypatch):
    """SIGINT during a minibatch: the loop finishes it, writes a snapshot, and the command exits 130."""
    real_step = train_mod.train_step
    steps = []

    def step_then_interrupt(st, *args, **kwargs):
        stats = real_step(st, *args, **kwargs)
        steps.append(st.step)
        if len(steps) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # the CLI's handler only sets a flag
        return stats

    monkeypatch.setattr(train_mod, "train_step", step_then_interrupt)
    out = tmp_path / "run"
    r = _run(data, "--outdir", out, "--cfg", "tiny", "--batch", "4", "--kimg", "0.016", "--threads", "1")
    assert r.exit_code == 130, r.output
    assert steps == [1]
    assert "interrupted at" in r.stdout
    assert _snapshot(out)["step"] == 1
    assert _log(out)[-1]["event"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_resume_without_a_run_fails_cleanly(data, tmp_path):
    assert_clean_failure(_run(data, "--outdir", tmp_path / "nothing", "--resume", *QUICK), "no run to resume")


def test_resume_with_another_cfg_or_res_fails_cleanly(data, tmp_path):
    out = tmp_path / "run"
    assert _run(data, "--outdir", out, *QUICK).exit_code == 0
    assert_clean_failure(_run(data, "--outdir", out, "--resume", "--cfg", "portraits64"), "--cfg tiny")
    assert_clean_failure(_run(data, "--outdir", out, "--resume", "--res", "64"), "--res 32")


def test_a_used_outdir_without_resume_fails_cleanly(data, tmp_path):
    out = tmp_path / "run"
    assert _run(data, "--outdir", out, *QUICK).exit_code == 0
    assert_clean_failure(_run(data, "--outdir", out, *QUICK), "already holds a run")


def test_bad_cfg_fails_cleanly(data, tmp_path):
    assert_clean_failure(_run(data, "--outdir", tmp_path / "run", "--cfg", "huge"), "unknown preset")


@pytest.mark.parametrize("flag, value", [("--snap", "0"), ("--tick", "0"), ("--kimg", "0"), ("--batch", "0")])
def test_bad_intervals_fail_cleanly(data, tmp_path, flag, value):
    args = [data, "--outdir", tmp_path / "run", "--cfg", "tiny", flag, value]
    assert_clean_failure(_run(*args), "must be at least")


def test_empty_data_folder_fails_cleanly(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_failure(_run(tmp_path / "empty", "--outdir", tmp_path / "run", *QUICK), "no images")
    assert_clean_failure(_run(tmp_path / "missing", "--outdir", tmp_path / "run2", *QUICK), "not a folder")
