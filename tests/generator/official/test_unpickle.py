"""generator/unpickle.py: files from strangers are read as data; anything that would run code is refused.

Each attack below would run `touch <marker>` (or import a module that creates the marker) under an ordinary
unpickler. The restricted one must refuse it with UnsafePickleError naming the global, and the marker must not
appear. Damaged files (truncated, corrupted, foreign zips) must give a one-line CheckpointError, never a raw
exception. Nothing in the test suite ever reads these pickles with a general unpickler.
"""

import io
import pickle
import random
import sys
import zipfile

import numpy as np
import pytest
import torch

from generator.util.errors import CheckpointError, SGProjectError, UnsafePickleError
from generator.networks import Generator, GeneratorConfig
from generator.official.load import load_official
from generator.official.unpickle import (
    LEGACY_MAGIC,
    StorageRef,
    TensorRef,
    load_file,
    restricted_load,
    to_tensor,
)
from tests.generator.official.official_writer import GlobalRef, Pickler, dumps, randomize, write_ada_pkl, write_rosinality_pt
from tests.generator.helpers import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread():
    """These networks are tiny: intra-op threads only add overhead, and on a busy 2-core machine their spin-waits
    make each forward pass 10-30x slower. Restored after each test."""
    with one_torch_thread():
        yield


class Call:
    """Pickles as `module.name(*args)`: the shape of every code-execution attack on pickle."""

    def __init__(self, func, *args):
        self.func = func if not isinstance(func, str) else GlobalRef(*func.rsplit(".", 1))
        self.args = args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # the pickler insists that a REDUCE target be callable; never called
        raise AssertionError


class Gadget:
    """A class of this test module: unknown to the allow-list, like any class an attacker might name."""

    def __reduce__(self):
        return Gadget, ()


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "code from a pickle was executed"


def _write(tmp_path, data: bytes, name="evil.pkl"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _refused(path, *needles):
    """load_file refuses the file with UnsafePickleError naming the global (one line)."""
    with pytest.raises(UnsafePickleError) as e:
        load_file(path)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def _refused_anyhow(tmp_path, data: bytes, *needles):
    """Protocol 0/1 pickles have no header: load_file rejects them as foreign before unpickling, and the
    restricted unpickler itself would still refuse their globals."""
    if data.startswith(b"\x80"):
        return _refused(_write(tmp_path, data), *needles)
    with pytest.raises(CheckpointError, match="neither a pickle nor a torch checkpoint"):
        load_file(_write(tmp_path, data))
    with pytest.raises(UnsafePickleError) as e:
        restricted_load(io.BytesIO(data))
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def _tiny_generator(seed=0):
    cfg = GeneratorConfig(z_dim=16, w_dim=16, mapping_layers=2, resolution=8, channel_base=64, channel_max=8)
    return randomize(Generator(cfg, seed=seed), seed + 1)


# ------------------------------------------------------------------------------------- code-execution attacks


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize(
    "target",
    ["os.system", "posix.system", "nt.system", "subprocess.Popen", "subprocess.check_output", "subprocess.run"],
)
def test_command_execution_is_refused(tmp_path, marker, protocol, target):
    args = (f"touch {marker}",) if target.endswith("system") else (["touch", str(marker)],)
    _refused_anyhow(tmp_path, dumps(Call(target, *args), protocol=protocol), target)


@pytest.mark.parametrize("name", ["eval", "exec", "__import__", "getattr", "compile", "open"])
def test_dangerous_builtins_are_refused(tmp_path, marker, name):
    code = f"open({str(marker)!r}, 'w').write('x')"
    for data in (
        dumps(Call(f"builtins.{name}", code), protocol=4),
        f"c__builtin__\n{name}\n(V{code}\ntR.".encode(),  # protocol 0, Python 2 module name
    ):
        _refused_anyhow(tmp_path, data, f"builtins.{name}")


def test_getattr_chain_to_os_is_refused(tmp_path, marker):
    """getattr(__import__('os'), 'system')('touch ...'): refused at the first global it needs."""
    chain = Call(Call("builtins.getattr", Call("builtins.__import__", "os"), "system"), f"touch {marker}")
    msg = _refused(_write(tmp_path, dumps(chain)), "builtins.")
    assert "getattr" in msg or "__import__" in msg


def test_reduce_of_an_unknown_class_is_refused(tmp_path):
    data = pickle.dumps({"G_ema": Gadget()}, protocol=4)
    _refused(_write(tmp_path, data), "Gadget")


def test_unexpected_module_is_never_imported(tmp_path, marker, monkeypatch):
    """A global in a module that would do harm at import time: refused before any import happens."""
    moddir = tmp_path / "mods"
    moddir.mkdir()
    (moddir / "sgp_evil_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nthing = 1\n")
    monkeypatch.syspath_prepend(str(moddir))
    _refused(_write(tmp_path, dumps(Call("sgp_evil_module.thing"))), "sgp_evil_module.thing")
    assert "sgp_evil_module" not in sys.modules


def test_attack_inside_an_embedded_storage_stream(tmp_path, marker):
    """`_load_from_bytes` holds a whole torch.save stream; torch would load it with its general unpickler."""
    stream = (
        pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
        + dumps(Call("os.system", f"touch {marker}"), protocol=2)
    )
    data = dumps({"G_ema": Call("torch.storage._load_from_bytes", stream)})
    _refused(_write(tmp_path, data), "os.system")


def test_attack_inside_a_torch_zip(tmp_path, marker):
    good = write_rosinality_pt(tmp_path / "good.pt", _tiny_generator())
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data.pkl"):
                data = dumps(Call("os.system", f"touch {marker}"), protocol=2)
            zout.writestr(item, data)
    _refused(evil, "os.system")


def test_module_src_is_never_executed(tmp_path, marker):
    """NVIDIA's loader executes each network's `module_src`; here it stays a string and the network loads."""
    src = f"import os\nos.system('touch {marker}')\nopen({str(marker)!r}, 'w').write('x')\n"
    G = _tiny_generator()
    p = write_ada_pkl(tmp_path / "net.pkl", G, module_src=src)
    G2, _ = load_official(p)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(G2(z), G(z), rtol=0, atol=1e-6)


def test_legacy_rosinality_checkpoint_goes_through_the_restricted_reader(tmp_path, marker):
    """Old (pre-zip) torch.save files are parsed by our own legacy-stream reader, attacks included."""
    stream = (
        pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
        + dumps(Call("subprocess.check_output", ["touch", str(marker)]), protocol=2)
    )
    _refused(_write(tmp_path, stream, "old.pt"), "subprocess.check_output")


# ------------------------------------------------------------------------------------------ stand-in misuse


def test_build_on_a_tensor_record_is_refused(tmp_path):
    """BUILD would call torch.Tensor.__setstate__ on a real tensor; our records refuse any state."""
    buf = io.BytesIO()
    p = Pickler(buf, protocol=2)  # no framing: opcodes can be appended
    p.dump(torch.zeros(3))
    data = buf.getvalue()[:-1]  # drop STOP: push a state and BUILD onto the tensor
    data += pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP
    with pytest.raises(UnsafePickleError, match="unexpected object state"):
        load_file(_write(tmp_path, data))


def test_numpy_object_arrays_are_refused(tmp_path):
    """An object array's 'data' is a list of pickled objects; only numeric arrays are read."""
    data = dumps(_Reconstructed((1, (3,), GlobalRefDtype("O"), False, [1, "text", None])), protocol=2)
    with pytest.raises(UnsafePickleError, match="numpy dtype 'O'"):
        load_file(_write(tmp_path, data))


class GlobalRefDtype:
    def __init__(self, spec):
        self.spec = spec

    def __reduce__(self):
        return GlobalRef("numpy", "dtype"), (self.spec, False, True), (3, "|", None, None, None, -1, -1, 63)


class _Reconstructed:
    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (GlobalRef("numpy.core.multiarray", "_reconstruct"), (GlobalRef("numpy", "ndarray"), (0,), b"b"),
                self.state)


@pytest.mark.parametrize(
    "payload, needle",
    [
        (Call("_codecs.encode", "x", "rot13"), "_codecs.encode"),
        (Call("torch.FloatStorage", 5), "torch.FloatStorage"),
        (Call("torch._utils._rebuild_tensor_v2", "not a storage", 0, (2,), (1,), False, None), "not to a storage"),
        (Call("torch._utils._rebuild_parameter", 3, False, None), "without tensor data"),
        (Call("torch_utils.persistence._reconstruct_persistent_obj", {"type": "module", "state": {}}), "type"),
        (Call("torch.storage._load_from_bytes", b"\x80\x02garbage"), ""),
    ],
)
def test_allowed_globals_reject_bad_arguments(tmp_path, payload, needle):
    with pytest.raises(CheckpointError) as e:
        load_file(_write(tmp_path, dumps(payload)))
    assert needle in str(e.value)


def test_newobj_on_a_function_is_an_error(tmp_path):
    data = (pickle.PROTO + b"\x02" + b"ctorch._utils\n_rebuild_tensor_v2\n" + pickle.EMPTY_TUPLE + pickle.NEWOBJ
            + pickle.STOP)
    with pytest.raises(CheckpointError):
        load_file(_write(tmp_path, data))


def test_persistent_id_outside_torch_files_is_an_error(tmp_path):
    data = pickle.PROTO + b"\x02" + b"X\x03\x00\x00\x00abc" + pickle.BINPERSID + pickle.STOP
    with pytest.raises(CheckpointError, match="persistent id"):
        load_file(_write(tmp_path, data))


def test_tensor_outside_its_storage_is_refused():
    ref = StorageRef(torch.float32, 4)
    ref.set_data(bytes(16))
    assert to_tensor(TensorRef(ref, 0, (2, 2), (2, 1))).shape == (2, 2)
    for offset, size, stride in [(3, (2,), (1,)), (0, (5,), (1,)), (0, (2, 2), (3, 1))]:
        with pytest.raises(CheckpointError, match="outside its storage"):
            TensorRef(ref, offset, size, stride)


# ---------------------------------------------------------------------------------------- formats, read right


def test_torch_pickled_tensors_are_rebuilt_exactly(tmp_path):
    """Tensors pickled by torch itself (parameters, views with offsets and strides, half precision)."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    data = {
        "p": torch.nn.Parameter(torch.randn(3, 5)),
        "view": base[1:, ::2],  # offset and strides
        "t": base.t(),
        "half": torch.randn(7).half(),
        "long": torch.arange(5),
        "empty": torch.zeros(0, 3),
    }
    for protocol in (2, 3, 4):
        got = load_file(_write(tmp_path, dumps(data, protocol=protocol)))
        for k, v in data.items():
            t = to_tensor(got[k])
            expected = v.detach().float() if v.is_floating_point() else v
            assert t.shape == v.shape and torch.equal(t, expected), k


@pytest.mark.parametrize("numpy_core", ["numpy.core", "numpy._core"])
@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_numpy_arrays_and_scalars(tmp_path, numpy_core, protocol):
    data = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "be": np.arange(4, dtype=">f4"),
        "s": np.float32(0.25),
        "i": np.int64(7),
    }
    got = load_file(_write(tmp_path, dumps(data, protocol=protocol, numpy_core=numpy_core)))
    for k in ("a", "f", "be"):
        np.testing.assert_array_equal(got[k].to_array(), data[k])
    assert got["s"] == 0.25 and got["i"] == 7


def test_legacy_torch_save_is_read(tmp_path):
    obj = {"w": torch.randn(3, 4), "shared": None, "n": 3}
    obj["shared"] = obj["w"][1]  # shares the storage of w
    path = tmp_path / "old.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    got = load_file(path)
    torch.testing.assert_close(to_tensor(got["w"]), obj["w"], rtol=0, atol=0)
    torch.testing.assert_close(to_tensor(got["shared"]), obj["shared"], rtol=0, atol=0)
    assert got["shared"].storage is got["w"].storage and got["n"] == 3


# ------------------------------------------------------------------------------------------ damaged files


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    G = _tiny_generator()
    return {
        "ada": write_ada_pkl(d / "ada.pkl", G),
        "zip": write_rosinality_pt(d / "ros.pt", G),
        "legacy": write_rosinality_pt(d / "ros-old.pt", G, legacy=True),
    }


@pytest.mark.parametrize("kind", ["ada", "zip", "legacy"])
@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.25, 0.5, 0.75, 0.999])
def test_truncated_files(tmp_path, good_files, kind, fraction):
    data = good_files[kind].read_bytes()
    p = _write(tmp_path, data[: max(3, int(len(data) * fraction))], "cut.bin")
    with pytest.raises(CheckpointError) as e:
        load_official(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("head", [b"\x80\x04", b"\x80\x02", b"PK\x03\x04", b""])
def test_random_bytes(tmp_path, head):
    rng = np.random.default_rng(len(head))
    p = _write(tmp_path, head + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "random.bin")
    with pytest.raises(CheckpointError):
        load_official(p)


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x96", b"\x8d", b"\x95"])  # BINBYTES8 BYTEARRAY8 BINUNICODE8 FRAME
def test_forged_lengths_are_refused_before_any_allocation(tmp_path, opcode):
    """A length field claiming 7 EB: refused by the length check, never handed to the unpickler's allocator."""
    data = b"\x80\x05" + opcode + (7 << 60).to_bytes(8, "little") + b"xx."
    with pytest.raises(CheckpointError, match="declares"):
        load_file(_write(tmp_path, data))


def test_zip_that_is_not_a_torch_file(tmp_path):
    p = tmp_path / "photos.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_official(p)


def test_zip_with_corrupted_storage(tmp_path, good_files):
    data = bytearray(good_files["zip"].read_bytes())
    with zipfile.ZipFile(good_files["zip"]) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64)
    # the stored (uncompressed) bytes start after the local header: name and extra field lengths at 26..29
    start = info.header_offset + 30 + int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    start += int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    data[start + 5] ^= 0xFF
    p = _write(tmp_path, bytes(data), "crc.pt")
    with pytest.raises(CheckpointError, match="damaged|CRC"):
        load_official(p)


@pytest.mark.parametrize("kind", ["ada", "legacy"])
def test_fuzzed_files_load_or_fail_cleanly(tmp_path, good_files, kind):
    """Flipped bytes anywhere: either a valid network or an SGProjectError; never another exception."""
    data = good_files[kind].read_bytes()
    rng = random.Random(kind)
    p = tmp_path / "fuzz.bin"
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        p.write_bytes(bytes(mutated))
        try:
            load_official(p)
        except SGProjectError as e:
            assert "\n" not in str(e)


def test_restricted_load_reads_plain_data():
    data = pickle.dumps({"a": [1, 2.5, "x", None, True], "b": (b"raw", {3})}, protocol=4)
    assert restricted_load(io.BytesIO(data)) == {"a": [1, 2.5, "x", None, True], "b": (b"raw", {3})}
