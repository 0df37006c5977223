"""generator/util/files.py: atomic writes leave either the old file or the new one, with ordinary permissions."""

import os

import pytest
from safetensors.torch import save_file

from generator import save_generator
from generator.util.files import atomic_path, file_sha256, write_json_atomic, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.txt"
    write_text_atomic(p, "one")
    write_text_atomic(p, "two")
    assert p.read_text() == "two" and sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "f.json"
    write_json_atomic(p, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert p.read_text() == '{\n  "v": 1\n}\n' and sorted(x.name for x in tmp_path.iterdir()) == ["f.json"]


def test_files_from_private_writers_get_the_umask_mode(tmp_path, umask_022):
    # safetensors writes 0600 files; a model or report must be readable like any file the user makes
    import torch

    p = tmp_path / "w.safetensors"
    with atomic_path(p) as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    assert oct(os.stat(p).st_mode & 0o777) == oct(0o644)


def test_saved_generators_are_readable_by_others(tiny, tmp_path, umask_022):
    p = save_generator(tiny, tmp_path / "g.safetensors")
    assert oct(os.stat(p).st_mode & 0o777) == oct(0o644)
    assert oct(os.stat(p.with_suffix(".json")).st_mode & 0o777) == oct(0o644)


def test_file_sha256_of_a_known_text(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
