"""The training loop on the tiny preset (CPU, batch 4, a few minibatches): losses, lazy regularisation, snapshots,
exact resume, interruption, crash safety, refusals, and a two-process torchrun run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import generator.training.loop as train_mod
from generator.registry import load_generator
from generator.data.datasets import ImageDataset
from generator.training.config import STATE_FILE, TrainConfig, TrainingError
from generator.training.loop import Dist, build_state, load_state, train, train_step, update_ema
from tests.generator.helpers import one_torch_thread

BATCH = 4
ROOT = Path(__file__).resolve().parents[3]  # the repository root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, oversubscribed OpenMP threads make these tiny steps 10-20x slower."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """A private dataset cache for the whole module (the reference run is module-scoped)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGPROJECT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Eight random 32x32 PNGs."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def make_cfg(data, outdir, steps: int, **overrides) -> TrainConfig:
    """The tiny preset, batch 4, `steps` minibatches; R1 every 2 and path length every 3 minibatches so that a short
    run crosses both; x-flips on so that every random stream is exercised; a tick per minibatch; snapshots only at
    the end unless asked."""
    kw = dict(
        batch=BATCH, kimg=steps * BATCH / 1000, snap_kimg=1.0, tick_kimg=BATCH / 1000,
        r1_interval=2, pl_interval=3, xflip=True, sample_grid=4,
    )
    kw.update(overrides)
    return TrainConfig.from_preset(str(data), str(outdir), "tiny", **kw)


def read_log(outdir) -> list[dict]:
    return [json.loads(line) for line in (Path(outdir) / "stats.jsonl").read_text().splitlines()]


def load_snapshot(outdir) -> dict:
    return torch.load(Path(outdir) / STATE_FILE, map_location="cpu", weights_only=True)


def assert_same(a, b, where="state", atol=0.0):
    """Recursive equality of snapshots: dicts, lists, tensors (exact unless atol), numbers."""
    if isinstance(a, dict):
        assert set(a) == set(b), (where, sorted(set(a) ^ set(b)))
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}", atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if atol:
            torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=where)
        else:
            assert torch.equal(a, b), f"{where}: max diff {(a.double() - b.double()).abs().max().item():.3g}"
    else:
        assert a == b, (where, a, b)


def assert_same_training(a: dict, b: dict):
    """Everything but the wall-clock time and the run folder."""

    def strip(s):
        return {k: v for k, v in s.items() if k != "wall"} | {"config": s["config"] | {"outdir": None}}

    assert_same(strip(a), strip(b))


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted 4-minibatch run (module-scoped: several tests read its outputs; none may modify them)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    ticks = []
    st = train(make_cfg(data_dir, out, 4), callback=ticks.append)
    return SimpleNamespace(out=out, state=st, ticks=ticks, snapshot=load_snapshot(out))


# --------------------------------------------------------------------------------------------- a short run


def test_tiny_run_trains_a_few_steps_with_finite_losses(reference):
    st = reference.state
    assert (st.step, st.nimg) == (4, 16)
    assert st.last_event == "done"
    log = read_log(reference.out)
    assert log[0]["event"] == "start" and log[0]["images"] == 8 and log[0]["world"] == 1
    assert log[0]["resume"] is False and log[0]["skipped"] == 0
    ticks = log[1:]
    assert [t["event"] for t in ticks] == ["tick", "tick", "tick", "done"]
    assert [t["step"] for t in ticks] == [1, 2, 3, 4]
    for t in ticks:
        for key in ("G_loss", "D_loss", "D_real", "D_fake"):
            assert math.isfinite(t["stats"][key]), (t["step"], key)
        assert t["sec_per_kimg"] > 0
    assert [t.step for t in reference.ticks] == [1, 2, 3, 4]  # the callback saw every tick
    assert reference.ticks[-1].snapshot is not None
    # the weights moved away from their initialisation
    fresh = build_state(make_cfg("unused", "unused", 4), torch.device("cpu"))
    assert any(not torch.equal(p, q) for p, q in zip(st.G.parameters(), fresh.G.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(st.D.parameters(), fresh.D.parameters()))
    assert all(torch.isfinite(p).all() for p in st.G.parameters())


def test_regularisation_fires_on_its_intervals_in_the_log(reference):
    """Tick k is written after minibatch k-1: R1 ran on minibatches 0 and 2, path length on 0 and 3."""
    ticks = read_log(reference.out)[1:]
    with_r1 = [t["step"] - 1 for t in ticks if "r1_penalty" in t["stats"]]
    with_pl = [t["step"] - 1 for t in ticks if "pl_length" in t["stats"]]
    assert with_r1 == [0, 2]
    assert with_pl == [0, 3]
    for t in ticks:
        for key in ("r1_penalty", "pl_length", "pl_penalty"):
            if key in t["stats"]:
                assert math.isfinite(t["stats"][key])
    assert reference.snapshot["pl_mean"].item() > 0  # the path-length target moved from 0


def _random_data(n=8, res=32, seed=0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    return ImageDataset(rng.integers(0, 256, (n, 3, res, res), dtype=np.uint8), "random")


@pytest.mark.parametrize(
    "overrides, r1_steps, pl_steps",
    [
        (dict(r1_interval=3, pl_interval=2), [0, 3, 6], [0, 2, 4, 6]),
        (dict(r1_interval=0, pl_interval=4), [], [0, 4]),
        (dict(r1_interval=16, pl_weight=0.0), [0], []),
    ],
)
def test_regularisation_fires_exactly_on_its_intervals(monkeypatch, overrides, r1_steps, pl_steps):
    calls = {"r1": [], "pl": []}
    real_r1, real_pl = train_mod.d_r1, train_mod.g_path_length

    def spy_r1(st, *args, **kwargs):
        calls["r1"].append(st.step)
        return real_r1(st, *args, **kwargs)

    def spy_pl(st, *args, **kwargs):
        calls["pl"].append(st.step)
        return real_pl(st, *args, **kwargs)

    monkeypatch.setattr(train_mod, "d_r1", spy_r1)
    monkeypatch.setattr(train_mod, "g_path_length", spy_pl)
    cfg = make_cfg("unused", "unused", 7, **overrides)
    st = build_state(cfg, torch.device("cpu"))
    data = _random_data()
    for _ in range(7):
        stats = train_step(st, cfg, data, torch.device("cpu"), Dist())
        assert ("r1_penalty" in stats) == (st.step - 1 in r1_steps)
        assert ("pl_length" in stats) == (st.step - 1 in pl_steps)
    assert calls == {"r1": r1_steps, "pl": pl_steps}


def test_channels_last_trains_the_same_numbers_as_contiguous_memory():
    """The memory format is a speed choice only: three minibatches (R1 and path length included) from the same start
    give the same losses and weights in both layouts, up to float rounding; and the layout is really used."""
    states, logs = {}, {}
    for cl in (False, True):
        cfg = make_cfg("unused", "unused", 3, r1_interval=2, pl_interval=2, channels_last=cl)
        st = build_state(cfg, torch.device("cpu"))
        convs = [p for p in [*st.G.parameters(), *st.D.parameters()] if p.ndim == 4 and min(p.shape[2:]) > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) == cl and
                              p.is_contiguous() == (not cl) for p in convs)
        logs[cl] = [train_step(st, cfg, _random_data(), torch.device("cpu"), Dist()) for _ in range(3)]
        states[cl] = st.to_dict(cfg)
    assert {"r1_penalty", "pl_length"} <= set(logs[True][0])
    for a, b in zip(logs[False], logs[True]):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)
    for net in ("G", "D", "G_ema"):
        assert states[False][net].keys() == states[True][net].keys()
        for k, a in states[False][net].items():
            torch.testing.assert_close(a, states[True][net][k], rtol=1e-4, atol=1e-5, msg=f"{net}.{k}")


def test_a_resumed_state_keeps_the_channels_last_layout(tmp_path):
    cfg = make_cfg("unused", str(tmp_path), 1)
    st = build_state(cfg, torch.device("cpu"))
    path = tmp_path / "state.pt"
    train_mod.save_state(st, cfg, path)
    again = load_state(path, cfg, torch.device("cpu"))
    weights = [p for p in again.D.parameters() if p.ndim == 4 and min(p.shape[2:]) > 1]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert_same(st.to_dict(cfg)["D"], again.to_dict(cfg)["D"])


def test_lazy_regularisation_rescales_adam():
    cfg = make_cfg("unused", "unused", 1, r1_interval=16, pl_interval=4)
    st = build_state(cfg, torch.device("cpu"))
    g, d = st.G_opt.param_groups[0], st.D_opt.param_groups[0]
    assert g["lr"] == pytest.approx(cfg.g_lr * 4 / 5) and g["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))
    assert d["lr"] == pytest.approx(cfg.d_lr * 16 / 17) and d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert g["eps"] == d["eps"] == 1e-8
    # without path length, G's optimiser is not rescaled
    st = build_state(make_cfg("unused", "unused", 1, pl_weight=0.0), torch.device("cpu"))
    assert st.G_opt.param_groups[0]["lr"] == pytest.approx(cfg.g_lr)


def test_g_ema_half_life():
    """With G fixed, the distance between G_ema and G halves every `ema_kimg` thousand images."""
    # 40 images = 10 minibatches of 4. (from_preset reads None as "the default": set ema_rampup afterwards.)
    cfg = dataclasses.replace(make_cfg("unused", "unused", 1, ema_kimg=0.04), ema_rampup=None)
    st = build_state(cfg, torch.device("cpu"))
    with torch.no_grad():
        for p in st.G_ema.parameters():
            p.add_(1.0)
    start = [(pe - p).clone() for pe, p in zip(st.G_ema.parameters(), st.G.parameters())]
    for _ in range(10):
        st.nimg += cfg.batch
        update_ema(st, cfg)
    for s, pe, p in zip(start, st.G_ema.parameters(), st.G.parameters()):
        torch.testing.assert_close(pe - p, s * 0.5, rtol=1e-4, atol=1e-4)  # float32 on weights of size ~100
    # buffers (w_avg, noise maps) are copied, not averaged
    assert all(torch.equal(be, b) for be, b in zip(st.G_ema.buffers(), st.G.buffers()))


# ----------------------------------------------------------------------------------------------- snapshots


def test_snapshot_is_complete_and_loads_without_running_code(reference):
    snap = reference.snapshot  # read with weights_only=True
    for key in ("G", "D", "G_ema", "G_opt", "D_opt", "pl_mean", "step", "nimg", "config", "format", "version"):
        assert key in snap, key
    assert snap["format"] == "sgproject-training"
    assert (snap["step"], snap["nimg"]) == (4, 16)
    assert snap["config"] == make_cfg("unused", "unused", 4).to_dict() | {
        "data": snap["config"]["data"], "outdir": snap["config"]["outdir"]
    }
    assert snap["config"]["preset"] == "tiny"
    st = reference.state
    assert_same(snap["G"], st.G.state_dict(), "G")
    assert_same(snap["D"], st.D.state_dict(), "D")
    assert_same(snap["G_ema"], st.G_ema.state_dict(), "G_ema")
    # both optimisers carry their moments for every parameter
    assert len(snap["G_opt"]["state"]) == len(list(st.G.parameters()))
    assert len(snap["D_opt"]["state"]) == len(list(st.D.parameters()))
    assert snap["pl_mean"].shape == () and torch.isfinite(snap["pl_mean"])
    # and it restores into a state equal to the one that wrote it
    restored = load_state(reference.out / STATE_FILE, make_cfg(reference.out, reference.out, 4), torch.device("cpu"))
    assert_same(restored.G_opt.state_dict(), st.G_opt.state_dict(), "G_opt")
    assert (restored.step, restored.nimg) == (4, 16)
    assert json.loads((reference.out / "config.json").read_text()) == snap["config"]


def test_g_ema_is_exported_as_a_generator_checkpoint(reference):
    G, info = load_generator(reference.out / "network-latest.safetensors")
    assert_same(G.state_dict(), reference.snapshot["G_ema"], "G_ema")
    assert info.info["step"] == 4 and info.info["kimg"] == pytest.approx(0.016) and info.info["preset"] == "tiny"
    assert (reference.out / "network-000000.safetensors").exists()  # named by whole kimg, as the official code
    assert (reference.out / "network-latest.json").exists()
    # G_ema is an average: not G itself
    assert any(not torch.equal(a, b) for a, b in zip(G.parameters(), reference.state.G.parameters()))
    with torch.no_grad():
        img = G(torch.randn(2, G.z_dim))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_sample_grid_is_written(reference):
    path = reference.out / "samples-000000.png"
    with Image.open(path) as im:
        assert im.size == (64, 64)  # sample_grid=4: 2 x 2 images of 32 px
        assert np.asarray(im.convert("RGB")).std() > 0


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_samples_latest_is_the_grid_of_the_newest_snapshot(data_dir, reference, tmp_path):
    assert np.array_equal(_png(reference.out / "samples-latest.png"), _png(reference.out / "samples-000000.png"))
    out = tmp_path / "run"
    seen = []

    def on_tick(t):  # at each snapshot: samples-latest.png against the grid of the exported G_ema
        if t.snapshot:
            G, _ = load_generator(out / "network-latest.safetensors")
            seen.append((_png(out / "samples-latest.png"), train_mod.sample_grid_image(G, 4)))

    train(make_cfg(data_dir, out, 2, snap_kimg=BATCH / 1000), callback=on_tick)  # a snapshot after each minibatch
    assert len(seen) == 2
    for png, grid in seen:
        assert np.array_equal(png, grid)
    assert not np.array_equal(seen[0][0], seen[1][0])  # it follows the training


# ------------------------------------------------------------------------------------------ resume, stop, crash


def test_resume_equals_an_uninterrupted_run(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    first = train(make_cfg(data_dir, out, 2))
    assert (first.step, first.last_event) == (2, "done")
    resumed = train(make_cfg(data_dir, out, 4), resume=True)
    assert (resumed.step, resumed.nimg) == (4, 16)
    assert_same_training(load_snapshot(out), reference.snapshot)  # G, D, G_ema, both Adam states, pl_mean, ...
    log = read_log(out)
    starts = [r for r in log if r["event"] == "start"]
    assert [s["resume"] for s in starts] == [False, True] and starts[1]["kimg"] == pytest.approx(0.008)
    assert [r["step"] for r in log if r["event"] != "start"] == [1, 2, 3, 4]  # nothing repeated or lost


def test_should_stop_snapshots_after_the_current_step_and_resume_continues(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    polls = []

    def should_stop():
        polls.append(1)
        return len(polls) == 3  # asked after minibatch 3 of 4

    st = train(make_cfg(data_dir, out, 4), should_stop=should_stop)
    assert (st.step, st.nimg, st.last_event) == (3, 12, "interrupted")
    log = read_log(out)
    assert log[-1]["event"] == "interrupted" and log[-1]["step"] == 3 and log[-1]["snapshot"]
    assert load_snapshot(out)["step"] == 3
    resumed = train(make_cfg(data_dir, out, 4), resume=True)
    assert (resumed.step, resumed.last_event) == (4, "done")
    assert_same_training(load_snapshot(out), reference.snapshot)


def test_stop_requested_on_the_last_step_is_done(data_dir, tmp_path):
    st = train(make_cfg(data_dir, tmp_path / "run", 1), should_stop=lambda: True)
    assert (st.step, st.last_event) == (1, "done")
    assert read_log(tmp_path / "run")[-1]["event"] == "done"


def test_a_crash_while_saving_leaves_the_last_snapshot_intact(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    state_path = out / STATE_FILE
    real_save = torch.save
    seen = {"calls": 0, "before": None}

    def dying_save(obj, f, *args, **kwargs):
        seen["calls"] += 1
        if seen["calls"] == 2:  # the second snapshot: half a file, then the process "dies"
            seen["before"] = state_path.read_bytes()
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half a snapshot")
            raise RuntimeError("killed while saving")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(RuntimeError, match="killed while saving"):
        train(make_cfg(data_dir, out, 3, snap_kimg=BATCH / 1000))  # a snapshot after every minibatch
    monkeypatch.setattr(torch, "save", real_save)
    assert state_path.read_bytes() == seen["before"]  # untouched
    snap = load_snapshot(out)
    assert snap["step"] == 1
    st = train(make_cfg(data_dir, out, 3, snap_kimg=BATCH / 1000), resume=True)  # and the run goes on from it
    assert (st.step, st.last_event) == (3, "done")
    assert load_snapshot(out)["step"] == 3
    assert not list(out.glob(".*.tmp"))  # the half-written temporary file was replaced


# ------------------------------------------------------------------------------------------------- refusals


def test_a_new_run_in_a_used_folder_is_refused(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(TrainingError, match="already holds a run.*--resume"):
        train(make_cfg(data_dir, out, 4))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written


def test_resume_with_a_new_learning_rate_applies_it_from_there_on(data_dir, reference, tmp_path):
    """--resume --lr: the optimisers keep their moments but take the new rate (loading alone would restore the
    saved one), rescaled for lazy regularisation as at the start; config.json and the log record it."""
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    cfg = TrainConfig.for_resume(out, kimg=0.020, snap_kimg=1.0, tick_kimg=BATCH / 1000, g_lr=0.001, d_lr=0.0005)
    assert (cfg.g_lr, cfg.d_lr) == (0.001, 0.0005)
    st = train_mod.load_state(out / STATE_FILE, cfg, torch.device("cpu"))
    (g_lr, g_betas), (d_lr, d_betas) = train_mod.adam_settings(cfg)
    assert g_lr == pytest.approx(0.001 * 3 / 4) and d_lr == pytest.approx(0.0005 * 2 / 3)  # pl every 3, R1 every 2
    assert [(g["lr"], tuple(g["betas"])) for g in st.G_opt.param_groups] == [(g_lr, g_betas)]
    assert [(g["lr"], tuple(g["betas"])) for g in st.D_opt.param_groups] == [(d_lr, d_betas)]
    saved = reference.snapshot["G_opt"]["state"]
    assert all(torch.equal(st.G_opt.state_dict()["state"][k]["exp_avg"], v["exp_avg"]) for k, v in saved.items())
    train(dataclasses.replace(cfg, kimg=0.024), resume=True)
    assert json.loads((out / "config.json").read_text())["g_lr"] == 0.001
    assert read_log(out)[-1]["event"] != "start" and [r for r in read_log(out) if r["event"] == "start"][-1][
        "g_lr"] == 0.001
    same = TrainConfig.for_resume(reference.out, kimg=0.016, snap_kimg=1.0, tick_kimg=BATCH / 1000)
    assert same.g_lr == reference.snapshot["config"]["g_lr"]  # not given: the run's own


def test_resume_with_another_preset_is_refused(data_dir, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    other = TrainConfig.from_preset(str(data_dir), str(out), "portraits64", batch=BATCH, kimg=0.008)
    with pytest.raises(TrainingError, match="networks differ"):
        train(other, resume=True)
    # a resolution override is another network too
    with pytest.raises(TrainingError, match="networks differ"):
        train(make_cfg(data_dir, out, 8, resolution=64), resume=True)


def test_resume_refuses_missing_and_foreign_snapshots(data_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="no snapshot"):
        train(make_cfg(data_dir, out, 1), resume=True)
    out.mkdir(exist_ok=True)
    (out / STATE_FILE).write_bytes(b"not a snapshot")
    with pytest.raises(TrainingError, match="cannot read the training snapshot"):
        train(make_cfg(data_dir, out, 1), resume=True)
    torch.save({"format": "something-else"}, out / STATE_FILE)
    with pytest.raises(TrainingError, match="not an sgproject training snapshot"):
        train(make_cfg(data_dir, out, 1), resume=True)


def test_config_from_preset_and_validation():
    cfg = TrainConfig.from_preset("d", "o", "portraits64", batch=None, resolution=32, gamma=None)
    assert cfg.g["resolution"] == 32 and cfg.batch == 32  # None means "the preset's"
    assert cfg.r1_gamma == pytest.approx(0.0002 * 32**2 / 32)
    assert cfg.d_config().resolution == 32
    assert TrainConfig.from_preset("d", "o", "tiny", gamma=3.0).r1_gamma == 3.0
    with pytest.raises(TrainingError, match="unknown preset"):
        TrainConfig.from_preset("d", "o", "huge")
    with pytest.raises(TrainingError, match="unknown preset"):
        TrainConfig("d", "o", preset="huge")
    for bad in (dict(snap_kimg=0), dict(tick_kimg=0.0001), dict(kimg=0), dict(batch=0), dict(snap_kimg=float("nan"))):
        with pytest.raises(TrainingError, match="must be at least"):
            TrainConfig.from_preset("d", "o", "tiny", **bad)
    # the saved form round-trips (what --resume reads from config.json)
    assert TrainConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg


# -------------------------------------------------------------------------------------------------- torchrun


def test_torchrun_two_processes_on_cpu(data_dir, tmp_path, cache_dir):
    """Two gloo processes, each half of the global batch of 4; rank 0 writes."""
    out = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), "--nproc_per_node=2", "--standalone", "-m", "sgproject", "train", str(data_dir),
        "--outdir", str(out), "--cfg", "tiny", "--batch", "4", "--kimg", "0.008", "--snap", "0.004",
        "--tick", "0.004", "--threads", "1",
    ]
    env = dict(os.environ, SGPROJECT_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "finished at" in proc.stdout
    log = read_log(out)
    assert log[0]["event"] == "start" and log[0]["world"] == 2
    assert len([r for r in log if r["event"] == "start"]) == 1  # only rank 0 writes
    assert [r["event"] for r in log[1:]] == ["snapshot", "done"]
    snap = load_snapshot(out)
    assert (snap["step"], snap["nimg"]) == (2, 8)
    assert all(torch.isfinite(t).all() for t in snap["G"].values())
    G, _ = load_generator(out / "network-latest.safetensors")
    assert_same(G.state_dict(), snap["G_ema"], "G_ema")
