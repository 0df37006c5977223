"""Reading pickled model files from strangers without running anything from them.

A pickle is a small program: each global it names is imported and called. `RestrictedUnpickler.find_class` allows
only the globals that NVIDIA's and rosinality's StyleGAN2 files use, and maps each one to a harmless local stand-in
that records data (see `ALLOWED`). Anything else raises UnsafePickleError naming the global; nothing is imported.

What the stand-ins build is plain data, read later by the converters (`generator.official.ada`, `.tf`, `.rosinality`):

- `PersistentObject`: a `torch_utils.persistence` record (class name, `state` = the module's `__dict__`). Its
  `module_src` is source code that NVIDIA's loader executes; here it is a string that is never executed.
- `TensorRef` / `StorageRef`: a tensor's view (offset, size, stride) of raw storage bytes; `to_tensor` copies it
  into a torch tensor after bounds checks.
- `ArrayBuilder` / `DTypeBuilder`: numpy arrays and dtypes rebuilt from raw bytes (numeric dtypes only; object
  arrays, which would hold pickled objects, are refused).
- `TFNetwork`, `EasyDict`, `Namespace`: records of `dnnlib.tflib.network.Network` state, of `dnnlib.EasyDict`
  and of `argparse.Namespace`.

Three containers are understood: a plain pickle (NVIDIA `.pkl`), a legacy `torch.save` stream (a sequence of
pickles, then the raw storages; also what `torch.storage._load_from_bytes` holds inside NVIDIA pickles) and a
`torch.save` zip archive (`*/data.pkl` plus one file per storage). All three are parsed here, with the same
restricted unpickler; no general unpickler and no `torch.load` is ever used. Before a pickle is unpickled, its
opcodes are walked once (`check_lengths`) so that a forged length cannot make the unpickler allocate absurd
amounts of memory.

Every failure is a CheckpointError (UnsafePickleError for a refused global) with a one-line message.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from generator.util.errors import CheckpointError, SGProjectError, UnsafePickleError

# A legacy torch.save stream starts with this number, pickled (protocol 2), then the format version.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
LEGACY_HEADER = pickle.dumps(LEGACY_MAGIC, protocol=2)
ZIP_MAGIC = b"PK\x03\x04"

MAX_PICKLE_BYTES = 1 << 30  # a data.pkl larger than this inside a zip is not a model file


# --------------------------------------------------------------------------------------------------- records


class Record:
    """Base of every stand-in object. Pickle's BUILD opcode calls `__setstate__`: refuse it unless overridden,
    so that a file cannot push arbitrary state into an object it did not create the normal way."""

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"unexpected object state for {type(self).__name__} in the pickle")


@dataclass(eq=False)
class StorageType(Record):
    """Marker for `torch.FloatStorage` and friends: only says which dtype a storage holds."""

    name: str
    dtype: torch.dtype

    def __call__(self, *args: Any) -> Any:  # a pickle could try to call the marker as if it were the class
        raise UnsafePickleError(f"refused call of torch.{self.name} in the pickle")


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
STORAGE_TYPES = {name: StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()}


class StorageRef(Record):
    """Raw bytes of one torch storage: `numel` elements of `dtype`. `data` may arrive after the tensors that use
    it (legacy streams put the storages last); `tensor()` is the flat storage as a torch tensor, made once."""

    def __init__(self, dtype: torch.dtype, numel: int):
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"invalid storage size {numel!r}")
        self.dtype, self.numel = dtype, numel
        self.data: bytes | memoryview | None = None
        self._tensor: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * _element_size(self.dtype)

    def set_data(self, data: bytes | memoryview) -> None:
        if len(data) != self.nbytes:
            raise CheckpointError(f"storage holds {len(data)} bytes, expected {self.nbytes}; the file is damaged")
        self.data = data

    def tensor(self) -> torch.Tensor:
        if self._tensor is None:
            if self.data is None:
                raise CheckpointError("a tensor's storage data is missing from the file")
            # Copy the raw bytes into a fresh tensor through a uint8 view. (Not torch.frombuffer: it shares memory
            # with the bytes, and releasing that share has shown interpreter errors.)
            t = torch.empty(self.numel, dtype=self.dtype)
            if self.numel:
                t.view(torch.uint8).numpy()[:] = np.frombuffer(self.data, dtype=np.uint8)
            self._tensor, self.data = t, None
        return self._tensor


class TensorRef(Record):
    """A strided view of a storage, as `torch._utils._rebuild_tensor_v2` describes it."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        if not isinstance(storage, StorageRef):
            raise CheckpointError(f"a tensor refers to {type(storage).__name__}, not to a storage")
        self.storage = storage
        self.offset = _check_int(offset, "tensor offset")
        self.size = tuple(_check_int(s, "tensor size") for s in _check_seq(size, "tensor size"))
        self.stride = tuple(_check_int(s, "tensor stride") for s in _check_seq(stride, "tensor stride"))
        if len(self.size) != len(self.stride):
            raise CheckpointError(f"tensor size {self.size} and stride {self.stride} disagree")
        # Bounds, checked before any copy: the last element the view touches must lie inside the storage, and a
        # view with zero strides may not ask for vastly more elements than the storage holds (a memory bomb).
        numel = math.prod(self.size)
        if numel > 0:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= storage.numel or numel > max(storage.numel, 1) * 64:
                raise CheckpointError(
                    f"tensor of size {list(self.size)} reaches outside its storage of {storage.numel} elements"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    def to_tensor(self) -> torch.Tensor:
        flat = self.storage.tensor()
        if math.prod(self.size) == 0:
            return torch.empty(self.size, dtype=flat.dtype)
        return torch.as_strided(flat, self.size, self.stride, self.offset).clone()


class PersistentObject(Record):
    """`torch_utils.persistence._reconstruct_persistent_obj(meta)`: a network saved with its source code.

    `module_src` is kept only as text (its length is useful in messages); it is never compiled or executed.
    """

    def __init__(self, meta: Any):
        if not isinstance(meta, dict):
            raise CheckpointError("a persistent-object record without its meta dict")
        if meta.get("type") != "class":
            raise CheckpointError(f"unknown persistent-object type {meta.get('type')!r}")
        self.class_name = meta.get("class_name")
        self.version = meta.get("version")
        self.module_src = meta.get("module_src")
        state = meta.get("state")
        if not isinstance(self.class_name, str) or not isinstance(state, dict):
            raise CheckpointError("a persistent-object record without class_name or state")
        self.state: dict = state

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


class EasyDict(dict):
    """`dnnlib.util.EasyDict`: a dict (pickled as NEWOBJ + SETITEMS). Attribute state, if any, is ignored."""

    def __setstate__(self, state: Any) -> None:
        if state is not None and not isinstance(state, dict):
            raise UnsafePickleError("unexpected object state for EasyDict in the pickle")


class _StateRecord(Record):
    """A plain object pickled as NEWOBJ + BUILD(dict): keep the dict."""

    def __init__(self, *args: Any):
        if args:
            raise CheckpointError(f"unexpected arguments for {type(self).__name__}")
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafePickleError(f"unexpected object state for {type(self).__name__} in the pickle")
        self.state = state


class TFNetwork(_StateRecord):
    """`dnnlib.tflib.network.Network`: state holds version, name, static_kwargs, components, variables, and
    `build_module_src` (source code the TF loader executes; here never executed)."""

    def __repr__(self) -> str:
        return f"TFNetwork({self.state.get('name')!r})"


class Namespace(_StateRecord):
    """`argparse.Namespace` (rosinality training checkpoints store their command-line arguments)."""


# ----------------------------------------------------------------------------------------------------- numpy


class DTypeBuilder(Record):
    """`numpy.dtype(spec, align, copy)` followed by BUILD(state); only plain numeric dtypes are accepted."""

    def __init__(self, spec: Any, *args: Any):
        if not isinstance(spec, str):
            raise CheckpointError(f"unsupported numpy dtype spec {spec!r}")
        self.spec, self.byteorder = spec, "="

    def __setstate__(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise CheckpointError(f"unsupported numpy dtype state for {self.spec!r} (structured or sub-array)")
        if state[1] not in ("<", ">", "|", "="):
            raise CheckpointError(f"invalid numpy byte order {state[1]!r}")
        self.byteorder = state[1]

    def dtype(self) -> np.dtype:
        try:
            dt = np.dtype(self.spec)
        except TypeError:
            raise CheckpointError(f"unknown numpy dtype {self.spec!r}") from None
        if dt.kind not in "biufc" or dt.fields is not None or dt.subdtype is not None:
            raise UnsafePickleError(f"refused numpy dtype {self.spec!r}: only numeric arrays are read")
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class _NDArrayClass(Record):
    """Marker for `numpy.ndarray`, only valid as the first argument of `_reconstruct`."""


NDARRAY = _NDArrayClass()


class ArrayBuilder(Record):
    """`numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed by BUILD(state) with the raw bytes."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw bytes)
        if not isinstance(state, tuple) or len(state) != 5:
            raise CheckpointError("unsupported numpy array state")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")

    def to_array(self) -> np.ndarray:
        if self.array is None:
            raise CheckpointError("a numpy array without data")
        return self.array


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if not isinstance(dtype, DTypeBuilder):
        raise CheckpointError("a numpy array without a valid dtype")
    dt = dtype.dtype()  # refuses object and structured dtypes
    if isinstance(raw, str):  # protocol 2 writes the data as latin-1 text
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise UnsafePickleError("refused numpy array data that is not raw bytes (object arrays are not read)")
    shape = tuple(_check_int(s, "array shape") for s in _check_seq(shape, "array shape"))
    if math.prod(shape) * dt.itemsize != len(raw):
        raise CheckpointError(f"numpy array of shape {list(shape)} does not match its {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dt).reshape(shape, order=order).astype(dt.newbyteorder("="), copy=True)


def _np_reconstruct(cls: Any, shape: Any, code: Any) -> ArrayBuilder:
    if cls is not NDARRAY:
        raise UnsafePickleError("refused numpy _reconstruct of anything but a plain ndarray")
    return ArrayBuilder()


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> ArrayBuilder:
    """numpy's protocol-5 form: `_frombuffer(buffer, dtype, shape, order)`."""
    b = ArrayBuilder()
    b.array = _array_from_bytes(buf, dtype, shape, "F" if order == "F" else "C")
    return b


def _np_scalar(dtype: Any, raw: Any = None) -> int | float | complex | bool:
    """`numpy.core.multiarray.scalar(dtype, bytes)`: returned as a Python number."""
    if not isinstance(dtype, DTypeBuilder):
        raise CheckpointError("a numpy scalar without a valid dtype")
    arr = _array_from_bytes(raw if raw is not None else b"", dtype, (), "C")
    return arr.item()


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """`_codecs.encode(str, 'latin1')`: how protocol-2 pickles written by Python 3 store bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refused _codecs.encode other than of text to latin-1")
    return text.encode("latin-1")


# ----------------------------------------------------------------------------------------------------- torch


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> TensorRef:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`."""
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *rest: Any) -> TensorRef:
    """`torch._utils._rebuild_parameter(data, requires_grad, hooks[, state])`: a Parameter is its data."""
    if not isinstance(data, TensorRef):
        raise CheckpointError("a parameter without tensor data")
    return data


def _load_from_bytes(data: Any) -> StorageRef:
    """`torch.storage._load_from_bytes(b)`: a storage pickled as a complete legacy torch.save stream."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError("an embedded storage that is not bytes")
    obj = load_legacy_stream(io.BytesIO(data))
    if not isinstance(obj, StorageRef):
        raise CheckpointError(f"an embedded storage stream holds {type(obj).__name__}, not a storage")
    return obj


# ---------------------------------------------------------------------------------------------- the allow-list

ALLOWED: dict[tuple[str, str], Any] = {
    # NVIDIA stylegan2-ada-pytorch / stylegan3
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    # NVIDIA TF StyleGAN2
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    # rosinality training checkpoints
    ("argparse", "Namespace"): Namespace,
    # containers
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("_codecs", "encode"): _latin1_encode,
    # tensors
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    **{("torch", name): marker for name, marker in STORAGE_TYPES.items()},
    # numpy 1 and numpy 2 spell their modules differently
    **{
        (f"numpy.{core}.{mod}", name): fn
        for core in ("core", "_core")
        for mod, name, fn in (
            ("multiarray", "_reconstruct", _np_reconstruct),
            ("multiarray", "scalar", _np_scalar),
            ("numeric", "_frombuffer", _np_frombuffer),
        )
    },
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): DTypeBuilder,
}

# Protocol 0-2 pickles written by Python 2 (or by Python 3 for Python 2) use the old module names.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only reach the stand-ins in `ALLOWED`.

    `persistent_load` (torch files refer to storages by persistent id) is a callback; without one, a persistent
    id in the stream is an error.
    """

    def __init__(self, file: BinaryIO, *, persistent_load: Callable[[Any], Any] | None = None):
        super().__init__(file)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        try:
            return ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                f"refused to load {module}.{name}: the file asks to import or call something that model weights "
                "never need, so nothing from it was run"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise CheckpointError("unexpected persistent id in the pickle")
        return self._persistent(pid)


def restricted_load(f: BinaryIO, *, persistent_load: Callable[[Any], Any] | None = None) -> Any:
    """One pickle from `f` (seekable), through the restricted unpickler, after its lengths have been checked."""
    check_lengths(f)
    return RestrictedUnpickler(f, persistent_load=persistent_load).load()


# Width in bytes of the length prefix of each variable-length argument (pickletools' markers).
_LENGTH_WIDTH = {
    pickletools.TAKEN_FROM_ARGUMENT1: 1,
    pickletools.TAKEN_FROM_ARGUMENT4: 4,
    pickletools.TAKEN_FROM_ARGUMENT4U: 4,
    pickletools.TAKEN_FROM_ARGUMENT8U: 8,
}


def check_lengths(f: BinaryIO) -> None:
    """Walk one pickle's opcodes, without running any, and check every length field against what is left of the
    file; then rewind. The C unpickler allocates a declared length before reading it, so a forged length (a
    damaged or hostile file) would otherwise ask for absurd amounts of memory. Data is skipped, not read."""
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    while True:
        code = f.read(1)
        op = pickletools.code2op.get(code.decode("latin-1")) if code else None
        if op is None:
            raise CheckpointError("truncated pickle" if not code else f"invalid pickle opcode {code!r}")
        if op.name == "STOP":
            break
        arg = op.arg
        if arg is None:
            continue
        if arg.n == pickletools.UP_TO_NEWLINE:
            arg.reader(f)  # short text arguments of the old protocols (global names, numbers)
            continue
        if arg.n >= 0:  # fixed width; only a frame's is a length
            raw, skip = f.read(arg.n), 0
            size = int.from_bytes(raw, "little") if op.name == "FRAME" else 0
            complete = len(raw) == arg.n
        else:  # a length prefix, then that many bytes
            width = _LENGTH_WIDTH[arg.n]
            raw = f.read(width)
            size = skip = int.from_bytes(raw, "little", signed=arg.n == pickletools.TAKEN_FROM_ARGUMENT4)
            complete = len(raw) == width and size >= 0
        if not complete or size > end - f.tell():
            raise CheckpointError(f"the pickle is truncated or damaged ({op.name} declares {size} bytes)")
        f.seek(skip, io.SEEK_CUR)
    f.seek(start)


# ---------------------------------------------------------------------------------------- torch.save streams


def _storage_from_pid(pid: Any) -> tuple[str, StorageRef]:
    """('storage', storage_type, key, location, numel[, view_metadata]) -> (key, a new StorageRef)."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
        raise CheckpointError(f"unknown persistent id {str(pid)[:80]!r}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, StorageType):
        raise CheckpointError("a storage of unknown type")
    if not isinstance(key, str):
        raise CheckpointError("a storage with an invalid key")
    if len(pid) == 6 and pid[5] is not None:
        raise CheckpointError("storage views (written by very old torch versions) are not supported")
    return key, StorageRef(storage_type.dtype, numel)


def load_legacy_stream(f: BinaryIO) -> Any:
    """A legacy (pre-1.6, or `_use_new_zipfile_serialization=False`) torch.save stream.

    Layout: pickle(magic) pickle(protocol version) pickle(sys_info) pickle(object, storages as persistent ids)
    pickle(sorted storage keys), then per key: int64 little-endian element count and the raw elements.
    """
    if restricted_load(f) != LEGACY_MAGIC:
        raise CheckpointError("not a torch.save stream (wrong magic number)")
    version = restricted_load(f)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"unsupported torch.save protocol version {version!r}")
    sys_info = restricted_load(f)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError("the torch.save stream was written on a big-endian machine; not supported")
    storages: dict[str, StorageRef] = {}

    def persistent_load(pid: Any) -> StorageRef:
        key, ref = _storage_from_pid(pid)
        return storages.setdefault(key, ref)  # one storage per key, shared by every tensor that names it

    obj = restricted_load(f, persistent_load=persistent_load)
    keys = restricted_load(f)
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise CheckpointError("the storage list of the torch.save stream does not match its tensors")
    for key in keys:
        ref = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError("the file is truncated (storage data missing)")
        (numel,) = struct.unpack("<q", header)
        if numel != ref.numel:
            raise CheckpointError(f"storage {key} says {numel} elements, its tensors expect {ref.numel}")
        if ref.nbytes > _remaining(f):  # checked before reading: a forged size must not allocate memory
            raise CheckpointError("the file is truncated (storage data missing)")
        data = f.read(ref.nbytes)
        ref.set_data(data)
    return obj


def load_torch_zip(path: str | Path) -> Any:
    """A torch.save zip archive: `<folder>/data.pkl` and `<folder>/data/<key>` per storage."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"a damaged zip archive ({_one_line(e)})") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError("a zip archive, but not a torch checkpoint (no data.pkl inside)")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in zf.namelist():
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder != "little":
            raise CheckpointError(f"the checkpoint was written with {byteorder!r} byte order; not supported")
        storages: dict[str, StorageRef] = {}

        def persistent_load(pid: Any) -> StorageRef:
            key, ref = _storage_from_pid(pid)
            if key in storages:
                return storages[key]
            name = f"{prefix}data/{key}"
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise CheckpointError(f"storage {key} is missing from the archive") from None
            if info.file_size != ref.nbytes:  # checked before reading: no zip bombs
                raise CheckpointError(f"storage {key} holds {info.file_size} bytes, expected {ref.nbytes}")
            ref.set_data(zf.read(name))
            storages[key] = ref
            return ref

        info = zf.getinfo(pkls[0])
        if info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError("data.pkl is implausibly large")
        return restricted_load(io.BytesIO(zf.read(pkls[0])), persistent_load=persistent_load)


def load_file(path: str | Path) -> Any:
    """The object in a pickle, legacy torch.save or torch zip file, as records; CheckpointError otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(LEGACY_HEADER))
            if head.startswith(ZIP_MAGIC):
                kind = "zip"
            elif head == LEGACY_HEADER:
                kind = "legacy"
            elif len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
                kind = "pickle"
            else:
                raise CheckpointError(f"{path}: neither a pickle nor a torch checkpoint")
            f.seek(0)
            if kind == "zip":
                return load_torch_zip(f)
            if kind == "legacy":
                return load_legacy_stream(f)
            obj = restricted_load(f)
            return obj
    except SGProjectError as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or _one_line(e)})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the pickle is nested too deeply") from None
    except MemoryError:
        raise CheckpointError(f"{path}: the file asks for more memory than is available; it is damaged") from None
    except Exception as e:  # anything else from a damaged stream: one clear line, never a traceback
        raise CheckpointError(f"{path}: damaged or truncated file ({_one_line(e)})") from None


# --------------------------------------------------------------------------------------------------- helpers


def to_tensor(x: Any) -> torch.Tensor:
    """A torch tensor (float32 for floating dtypes) from a TensorRef, numpy array record or Python number."""
    if isinstance(x, TensorRef):
        t = x.to_tensor()
    elif isinstance(x, ArrayBuilder):
        t = torch.from_numpy(x.to_array())
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        t = torch.tensor(float(x))
    else:
        raise CheckpointError(f"expected a tensor, found {type(x).__name__}")
    return t.to(torch.float32) if t.is_floating_point() else t


def shape_of(x: Any) -> tuple[int, ...] | None:
    """The shape of a tensor-like record without copying it; None for anything else."""
    if isinstance(x, TensorRef):
        return x.size
    if isinstance(x, ArrayBuilder) and x.array is not None:
        return tuple(x.array.shape)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ()
    return None


def _remaining(f: BinaryIO) -> int:
    """Bytes left in a seekable file."""
    pos = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(pos)
    return end - pos


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _check_int(x: Any, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0 or x > 1 << 48:
        raise CheckpointError(f"invalid {what} {x!r}")
    return x


def _check_seq(x: Any, what: str) -> tuple | list:
    if not isinstance(x, (tuple, list)) or len(x) > 16:
        raise CheckpointError(f"invalid {what} {str(x)[:40]!r}")
    return x


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
