"""Generator checkpoints (safetensors + a JSON config) and the registry of named models.

A checkpoint is one `.safetensors` file whose metadata holds, under the key `sgproject`, a JSON object:
`{"format": "sgproject-generator", "format_version": 1, "config": {...GeneratorConfig...}, "info": {...}}`.
`save_generator` also writes that JSON beside the weights (`NAME.json`) for people to read.

`load_generator(spec)` takes a registered name (`tiny`, `portraits-64`), a `.safetensors` path, or an official
NVIDIA / rosinality file (converted once, cached by content hash; see `generator.official`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from generator.errors import CheckpointError, ModelNotFoundError
from generator.networks import Generator, GeneratorConfig

FORMAT = "sgproject-generator"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "portraits-64"


@dataclass
class ModelInfo:
    """What is known about a loaded generator besides its weights."""

    name: str  # registered name or file name
    path: Path | None  # where the weights came from (None for built-in models)
    sha256: str  # of the weights file, or of the canonical tensors for built-in models
    info: dict = field(default_factory=dict)  # free-form metadata from the checkpoint (training, card, ...)


# -------------------------------------------------------------------------------------------------------- saving


def save_generator(G: Generator, path: str | Path, *, info: dict | None = None, sidecar: bool = True) -> Path:
    """Write G's weights and config atomically (temp file + rename); also NAME.json beside when `sidecar`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": G.cfg.to_dict(), "info": info or {}}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"sgproject": json.dumps(header)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a model must be readable like any other file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if sidecar:
        _write_text_atomic(path.with_suffix(".json"), json.dumps(header, indent=2) + "\n")
    return path


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------- loading


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, shapes, float32 bytes), independent of how it was stored."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode())
        h.update(str(list(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def read_header(path: str | Path) -> dict:
    """The JSON header of an sgproject safetensors file; CheckpointError when it is not one."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(e)})") from None
    if "sgproject" not in meta:
        raise CheckpointError(f"{path}: a safetensors file, but not an sgproject generator (no 'sgproject' header)")
    try:
        header = json.loads(meta["sgproject"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: the sgproject header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the sgproject header is not a JSON object")
    if not isinstance(header.get("info", {}), dict):
        raise CheckpointError(f"{path}: the 'info' of the sgproject header is not a JSON object")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {header.get('format')!r} is not {FORMAT!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r} is newer than this sgproject understands ({FORMAT_VERSION}); "
            "upgrade sgproject"
        )
    return header


def load_safetensors_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, ModelInfo]:
    """Load an sgproject checkpoint. Every tensor is checked against the config before any is used."""
    from safetensors.torch import load_file

    path = Path(path)
    header = read_header(path)
    try:
        cfg = GeneratorConfig.from_dict(header["config"])
        with torch.device("meta"):  # shapes only: a crafted config cannot make us allocate before the check
            shapes = {k: tuple(v.shape) for k, v in Generator(cfg, seed=None).state_dict().items()}
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: invalid generator config ({_one_line(e)})") from None
    _check_shapes(shapes, _file_shapes(path), str(path))
    G = Generator(cfg, seed=None)
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: the weights cannot be read, the file may be truncated ({_one_line(e)})") from None
    _load_state_checked(G, tensors, str(path))
    G.eval().requires_grad_(False).to(device)
    return G, ModelInfo(name=path.stem, path=path, sha256=file_sha256(path), info=header.get("info", {}))


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors file's header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: the weights cannot be read, the file may be truncated ({_one_line(e)})") from None


def _check_shapes(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise CheckpointError(f"{where}: weights do not match the config: " + ", ".join(parts))
    for k, v in expected.items():
        if tuple(found[k]) != tuple(v):
            raise CheckpointError(f"{where}: {k} has shape {list(found[k])}, the config needs {list(v)}")


def _load_state_checked(G: Generator, tensors: dict[str, torch.Tensor], where: str) -> None:
    _check_shapes({k: tuple(v.shape) for k, v in G.state_dict().items()},
                  {k: tuple(v.shape) for k, v in tensors.items()}, where)
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{where}: {k} contains NaN or infinite values")
    G.load_state_dict(tensors, strict=True)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ------------------------------------------------------------------------------------------------------ registry


def tiny_config() -> GeneratorConfig:
    """A 32 px, 32-channel generator with a 2-layer mapping: seconds on a CPU; for tests and development."""
    return GeneratorConfig(
        z_dim=64, w_dim=64, mapping_layers=2, resolution=32, channel_base=1024, channel_max=32
    )


def _build_tiny(device) -> tuple[Generator, ModelInfo]:
    G = Generator(tiny_config(), seed=0)
    # A random mapping's w_avg starts at zero; estimate it so that truncation pulls towards the real average.
    G.mapping.w_avg.copy_(G.estimate_w_stats(2000, seed=1)[0])
    G.eval().requires_grad_(False).to(device)
    info = {"description": "seeded random initialisation (seed 0), untrained; for tests and development"}
    return G, ModelInfo(name="tiny", path=None, sha256=tensors_sha256(G.state_dict()), info=info)


def _bundled(filename: str) -> Callable:
    def build(device):
        path = WEIGHTS_DIR / filename
        if not path.exists():
            raise ModelNotFoundError(f"the bundled model file {path} is missing; reinstall sgproject")
        G, info = load_safetensors_generator(path, device)
        info.name = Path(filename).stem
        return G, info

    return build


REGISTRY: dict[str, Callable] = {
    "tiny": _build_tiny,
    "portraits-64": _bundled("portraits-64.safetensors"),
}


def available_models() -> list[str]:
    return sorted(REGISTRY)


def load_generator(spec: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[Generator, ModelInfo]:
    """A generator from a registered name or a file, in eval mode without gradients, on `device`.

    Raises ModelNotFoundError for an unknown name or missing file, CheckpointError for a bad file.
    """
    spec = DEFAULT_MODEL if spec is None else spec
    if isinstance(spec, str) and spec in REGISTRY:
        return REGISTRY[spec](device)
    path = Path(spec)
    if not path.exists():
        raise ModelNotFoundError(
            f"no model named {str(spec)!r}: not a registered name ({', '.join(available_models())}) nor a file"
        )
    if path.is_dir():
        raise ModelNotFoundError(f"{path} is a folder; give a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if _looks_like_safetensors(path):
        return load_safetensors_generator(path, device)
    try:
        from generator import official
    except ImportError:  # pragma: no cover - the module ships with the package
        official = None
    if official is not None and official.is_official_file(path):
        return official.load_official_cached(path, device)
    raise CheckpointError(
        f"{path}: unrecognised model file (expected sgproject .safetensors, an NVIDIA .pkl or a rosinality .pt)"
    )


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length followed by '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 28)
