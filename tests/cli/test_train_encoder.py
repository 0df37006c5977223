"""`sgproject train-encoder`, through typer's CliRunner on temporary folders, with the `tiny` model on the CPU.

The result line goes to stdout; progress, checkpoints and errors to stderr. LPIPS runs offline with the
deterministic random backbone (SGPROJECT_OFFLINE=1, an empty TORCH_HOME).
"""

import json

import torch

from generator import load_generator
from projector.encoder import load_encoder
from tests.cli.helpers import assert_clean_failure, clean_lines, run
from tests.cli.test_invert import offline  # noqa: F401  (autouse: offline LPIPS, an empty TORCH_HOME)


def _run(*args):
    return run("train-encoder", "--model", "tiny", *args, "--device", "cpu", "--threads", "1")


def test_train_resume_and_refusals(tmp_path):
    enc = tmp_path / "models" / "tiny.encoder.safetensors"
    r = _run("--out", enc, "--steps", "3", "--batch", "4", "--lpips-batch", "2", "--snap", "2")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in enc.parent.iterdir()) == [
        "tiny.encoder.json", "tiny.encoder.safetensors", "tiny.encoder.state.pt"]
    assert clean_lines(r.stdout) == [clean_lines(r.stdout)[0]] and "finished at step 3" in r.stdout
    assert str(enc) in r.stdout
    assert "checkpoint at step 2" in r.stderr and "done at step 3" in r.stderr
    header = json.loads(enc.with_suffix(".json").read_text())
    G, info = load_generator("tiny", "cpu")
    assert header["generator"]["sha256"] == info.sha256
    assert header["training"]["steps"] == 3 and header["training"]["batch"] == 4
    assert header["training"]["train_config"]["lpips_batch"] == 2
    E = load_encoder(enc, info)
    assert E.guess(torch.zeros(1, 3, 32, 32)).shape == (1, G.w_dim)

    # Again without --resume: refused, nothing overwritten.
    before = enc.read_bytes()
    assert_clean_failure(_run("--out", enc, "--steps", "3"), "already exists", "--resume")
    assert enc.read_bytes() == before
    # --resume continues with the run's own settings (batch 4, LPIPS on 2) up to the new --steps.
    r = _run("--out", enc, "--steps", "5", "--resume")
    assert r.exit_code == 0, r.output
    assert "finished at step 5" in r.stdout and "resuming" in r.stderr
    header = json.loads(enc.with_suffix(".json").read_text())
    assert header["training"]["steps"] == 5 and header["training"]["images"] == 20
    # ... and refuses settings that differ from the run's.
    assert_clean_failure(_run("--out", enc, "--steps", "6", "--resume", "--batch", "8"), "batch")


def test_clear_errors(tmp_path):
    assert_clean_failure(_run("--out", tmp_path / "e.safetensors", "--resume"), "no training state")
    assert_clean_failure(run("train-encoder", "--model", "no-such-model", "--out", tmp_path / "e.safetensors",
                             "--device", "cpu"), "no-such-model")
    assert not (tmp_path / "e.safetensors").exists()


def test_help_has_examples():
    r = run("train-encoder", "--help")
    assert r.exit_code == 0
    assert "sgproject train-encoder --model portraits-64" in r.stdout
