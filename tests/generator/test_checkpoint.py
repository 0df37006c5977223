"""generator/checkpoint.py: save/load round trip, sidecar JSON, registry, and refusal of bad checkpoint files.

Every bad file must give a CheckpointError (or ModelNotFoundError) whose one-line message names the problem;
never a raw exception from safetensors or torch, and never a model.
"""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from generator.checkpoint import FORMAT, FORMAT_VERSION, read_header, save_generator, tensors_sha256
from generator.util.files import file_sha256
from generator.registry import available_models, load_generator
from generator.util.errors import CheckpointError, ModelNotFoundError, SGProjectError


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """tiny saved once as an sgproject checkpoint; tests copy or rewrite it, never change it."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_generator(tiny, path, info={"note": "test"})
    return path


def _read(path):
    """(tensors, metadata) of a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 (safe_open is no dict)


def _rewrite(src, dst, *, tensors=None, header=None, metadata=None):
    """Write a variant of `src`: replaced tensors, a modified sgproject header, or raw metadata."""
    t, meta = _read(src)
    if tensors is not None:
        t = tensors(t)
    if header is not None:
        meta = {"sgproject": json.dumps(header(json.loads(meta["sgproject"])))}
    if metadata is not None:
        meta = metadata
    save_file(t, str(dst), metadata=meta)
    return dst


def _assert_refused(path, *needles, exc=CheckpointError):
    with pytest.raises(exc) as e:
        load_generator(path)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# -------------------------------------------------------------------------------------------------- round trip


def test_round_trip_is_bit_exact(tiny, saved):
    G, info = load_generator(saved)
    a, b = tiny.state_dict(), G.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert G.cfg == tiny.cfg
    z = torch.randn(3, tiny.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G(z), tiny(z))
        assert torch.equal(G(z, truncation_psi=0.5), tiny(z, truncation_psi=0.5))
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert info.name == "tiny" and info.path == saved
    assert info.sha256 == file_sha256(saved)
    assert info.info == {"note": "test"}
    assert tensors_sha256(G.state_dict()) == tensors_sha256(tiny.state_dict())


def test_sidecar_json_is_written(tiny, saved):
    side = saved.with_suffix(".json")
    assert side.exists()
    header = json.loads(side.read_text())
    assert header["format"] == FORMAT and header["format_version"] == FORMAT_VERSION
    assert header["config"] == tiny.cfg.to_dict()
    assert header["info"] == {"note": "test"}
    assert read_header(saved) == header  # the same header is embedded in the weights file


def test_save_is_atomic_and_sidecar_optional(tiny, tmp_path):
    path = save_generator(tiny, tmp_path / "sub" / "g.safetensors", sidecar=False)
    assert path.exists() and not path.with_suffix(".json").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["g.safetensors"], "no temp files left behind"


def test_registry_and_tiny_is_reproducible(tiny):
    assert {"tiny", "portraits-64"} <= set(available_models())
    _, info = load_generator("tiny")
    assert info.name == "tiny" and info.path is None
    assert info.sha256 == tensors_sha256(tiny.state_dict())


# ---------------------------------------------------------------------------------------------- not found


@pytest.mark.parametrize("spec", ["no-such-model", "missing/file.safetensors"])
def test_unknown_model_name(spec):
    msg = _assert_refused(spec, spec, exc=ModelNotFoundError)
    assert "tiny" in msg, "the message lists the registered names"


def test_folder_is_not_a_model(tmp_path):
    _assert_refused(tmp_path, "folder", exc=ModelNotFoundError)


def test_errors_are_sgproject_errors():
    assert issubclass(CheckpointError, SGProjectError) and issubclass(ModelNotFoundError, SGProjectError)


# ---------------------------------------------------------------------------------------------- bad files


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    _assert_refused(p, "empty")


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_in_the_weights(saved, tmp_path, fraction):
    data = saved.read_bytes()
    p = tmp_path / "trunc.safetensors"
    p.write_bytes(data[: int(len(data) * fraction)])
    msg = _assert_refused(p, str(p))
    assert "truncated" in msg or "not a readable safetensors" in msg


def test_truncated_in_the_header(saved, tmp_path):
    p = tmp_path / "trunc.safetensors"
    p.write_bytes(saved.read_bytes()[:40])  # the length prefix and a piece of the JSON header
    _assert_refused(p, str(p), "not a readable safetensors")


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.safetensors"
    p.write_bytes(np.random.RandomState(0).bytes(5000))
    _assert_refused(p, "unrecognised model file")


def test_random_bytes_behind_a_safetensors_prefix(tmp_path):
    p = tmp_path / "fake.safetensors"
    p.write_bytes((100).to_bytes(8, "little") + b"{" + np.random.RandomState(1).bytes(300))
    _assert_refused(p, "not a readable safetensors")


def test_safetensors_without_sgproject_header(tmp_path):
    p = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(p), metadata={"format": "pt"})
    _assert_refused(p, "not an sgproject generator")
    save_file({"weight": torch.zeros(3)}, str(p))  # no metadata at all
    _assert_refused(p, "not an sgproject generator")


def test_header_not_json(saved, tmp_path):
    p = _rewrite(saved, tmp_path / "x.safetensors", metadata={"sgproject": "{not json"})
    _assert_refused(p, "not valid JSON")


def test_wrong_format_name(saved, tmp_path):
    p = _rewrite(saved, tmp_path / "x.safetensors", header=lambda h: {**h, "format": "sgproject-discriminator"})
    _assert_refused(p, "sgproject-discriminator")


def test_newer_format_version(saved, tmp_path):
    p = _rewrite(saved, tmp_path / "x.safetensors", header=lambda h: {**h, "format_version": FORMAT_VERSION + 1})
    _assert_refused(p, "format version 2", "newer", "upgrade")


def test_invalid_config(saved, tmp_path):
    bad = lambda h: {**h, "config": {**h["config"], "resolution": 48}}  # noqa: E731
    _assert_refused(_rewrite(saved, tmp_path / "a.safetensors", header=bad), "invalid generator config", "48")
    extra = lambda h: {**h, "config": {**h["config"], "bogus": 1}}  # noqa: E731
    _assert_refused(_rewrite(saved, tmp_path / "b.safetensors", header=extra), "invalid generator config", "bogus")
    missing = lambda h: {k: v for k, v in h.items() if k != "config"}  # noqa: E731
    _assert_refused(_rewrite(saved, tmp_path / "c.safetensors", header=missing), "invalid generator config")


def test_huge_config_is_refused_before_anything_is_allocated(saved, tmp_path, monkeypatch):
    # A 65536 px, 512-channel config would need gigabytes; the shapes are compared on the meta device first.
    huge = lambda h: {**h, "config": {**h["config"], "resolution": 65536, "channel_base": 1 << 30,  # noqa: E731
                                      "channel_max": 512}}
    p = _rewrite(saved, tmp_path / "huge.safetensors", header=huge)
    import generator.checkpoint as ckpt

    built = []
    real_generator = ckpt.Generator
    monkeypatch.setattr(ckpt, "Generator", lambda *a, **k: built.append(torch.get_default_device()) or
                        real_generator(*a, **k))
    _assert_refused(p, "weights do not match the config")
    assert built and all(d.type == "meta" for d in built)  # never built for real


def test_missing_tensor(saved, tmp_path):
    key = "synthesis.b16.conv0.affine.weight"
    p = _rewrite(saved, tmp_path / "x.safetensors", tensors=lambda t: {k: v for k, v in t.items() if k != key})
    _assert_refused(p, "missing 1 tensors", key)


def test_unexpected_tensor(saved, tmp_path):
    p = _rewrite(saved, tmp_path / "x.safetensors", tensors=lambda t: {**t, "synthesis.b64.const": torch.zeros(1)})
    _assert_refused(p, "unexpected", "synthesis.b64.const")


def test_wrong_shape(saved, tmp_path):
    key = "synthesis.b8.conv1.weight"
    p = _rewrite(saved, tmp_path / "x.safetensors", tensors=lambda t: {**t, key: torch.zeros(32, 16, 3, 3)})
    _assert_refused(p, key, "[32, 16, 3, 3]", "[32, 32, 3, 3]")


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights(saved, tmp_path, value):
    key = "mapping.fc1.weight"

    def poison(t):
        w = t[key].clone()
        w[3, 5] = value
        return {**t, key: w}

    p = _rewrite(saved, tmp_path / "x.safetensors", tensors=poison)
    _assert_refused(p, key, "NaN or infinite")


def test_text_file_with_a_pickle_extension(tmp_path):
    p = tmp_path / "weights.pkl"
    p.write_bytes(b"just some text, not a network\n" * 10)
    _assert_refused(p, "unrecognised model file")


@pytest.mark.parametrize("raw", ["[1, 2]", "null", '"text"'])
def test_header_not_an_object(saved, tmp_path, raw):
    _assert_refused(_rewrite(saved, tmp_path / "x.safetensors", metadata={"sgproject": raw}), "not a JSON object")


def test_header_info_not_an_object(saved, tmp_path):
    p = _rewrite(saved, tmp_path / "x.safetensors", header=lambda h: {**h, "info": [1]})
    _assert_refused(p, "'info'", "not a JSON object")


@pytest.mark.parametrize("field,value", [("channel_base", 1024.5), ("z_dim", -1), ("mapping_layers", "2")])
def test_config_with_impossible_sizes(saved, tmp_path, field, value):
    """Values that pass the dataclass but cannot build layers are still a CheckpointError, not a torch error."""
    p = _rewrite(saved, tmp_path / "x.safetensors", header=lambda h: {**h, "config": {**h["config"], field: value}})
    _assert_refused(p, "invalid generator config")
