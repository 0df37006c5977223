"""tools/reship.py: the release runner's bookkeeping (what counts as done, which snapshot a release is of) and its
plan, without running the hours of steps themselves."""

import json

import pytest

from tools import reship


@pytest.fixture
def run(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    for name in ("network-000950.safetensors", "network-000960.safetensors"):
        (d / name).write_bytes(b"")
    return d


def test_list_prints_every_step_in_order_with_its_command(run, tmp_path, capsys):
    reship.main([str(run), "--network", "network-000950.safetensors", "--work", str(tmp_path / "w"), "--list"])
    out = capsys.readouterr().out
    names = [line.split("] ")[1] for line in out.splitlines() if line.startswith("[")]
    assert names == ["keep-encoder", "bundle", "encoder", "reals", "calibrate", "calibrate-deep", "calibrate-fast", "calibrate-domain",
                     "calibrate-paper", "fid", "bench-detect", "stress", "card"]
    assert all(line.startswith("[todo]") for line in out.splitlines() if line.startswith("["))
    assert "--init" in out and str(tmp_path / "w" / "start.encoder.safetensors") in out  # the new encoder's start
    assert "--refit" in out and f"--features {reship.FAST_FEATURES}" in out
    assert "--gen-start 30000000" in out  # the stress benchmark's fresh seeds


def test_a_cut_encoder_run_is_resumed_not_restarted(run, tmp_path, capsys):
    w = tmp_path / "w"
    w.mkdir()
    (w / "encoder.state.pt").write_bytes(b"")
    reship.main([str(run), "--network", "network-000950.safetensors", "--work", str(w), "--list"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "train-encoder" in x)
    assert "--resume" in line and "--init" not in line


def test_steps_count_as_done_only_for_the_weights_of_this_release(run, tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    progress = {"run_dir": str(run), "network": "network-000950.safetensors", "sha256": "aa",
                "done": {"bundle": {"sha256": "aa"}, "encoder": {"sha256": "aa"}, "calibrate": {"sha256": "bb"}}}
    (w / "reship.json").write_text(json.dumps(progress))
    args = reship.argparse.Namespace(run_dir=run, network="network-000950.safetensors", work=w, restart=False)
    p = reship.load_progress(args)
    assert [s for s in ("keep-encoder", "bundle", "encoder", "calibrate") if reship.is_done(p, s)] == ["bundle",
                                                                                                       "encoder"]
    args.network = "network-000960.safetensors"  # another snapshot: refused unless started over
    with pytest.raises(SystemExit, match="--restart"):
        reship.load_progress(args)
    args.restart = True
    assert reship.load_progress(args)["done"] == {}


def test_refuses_a_missing_snapshot_and_an_unknown_step(run, tmp_path):
    with pytest.raises(SystemExit, match="no snapshot"):
        reship.main([str(run), "--network", "network-000970.safetensors", "--work", str(tmp_path / "w")])
    with pytest.raises(SystemExit, match="no step 'calibrated'"):
        reship.main([str(run), "--network", "network-000950.safetensors", "--work", str(tmp_path / "w"),
                     "--until", "calibrated"])
