"""Generator checkpoints: safetensors + a JSON config, saved atomically and loaded with every shape checked.

A checkpoint is one `.safetensors` file whose metadata holds, under the key `sgproject`, a JSON object:
`{"format": "sgproject-generator", "format_version": 1, "config": {...GeneratorConfig...}, "info": {...}}`.
`save_generator` also writes that JSON beside the weights (`NAME.json`) for people to read.

Named models and the dispatch between this format and the official ones live in `generator.registry`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from generator.networks import Generator, GeneratorConfig
from generator.util.errors import CheckpointError
from generator.util.files import atomic_path, file_sha256, write_json_atomic

FORMAT = "sgproject-generator"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """What is known about a loaded generator besides its weights."""

    name: str  # registered name or file name
    path: Path | None  # where the weights came from (None for built-in models)
    sha256: str  # of the weights file, or of the canonical tensors for built-in models
    info: dict = field(default_factory=dict)  # free-form metadata from the checkpoint (training, card, ...)


# -------------------------------------------------------------------------------------------------------- saving


def save_generator(G: Generator, path: str | Path, *, info: dict | None = None, sidecar: bool = True) -> Path:
    """Write G's weights and config atomically; also NAME.json beside when `sidecar` (atomically too)."""
    path = Path(path)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": G.cfg.to_dict(), "info": info or {}}
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"sgproject": json.dumps(header)})
    if sidecar:
        write_json_atomic(path.with_suffix(".json"), header)
    return path


# ------------------------------------------------------------------------------------------------------- loading


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
    load_state_checked(G, tensors, str(path))
    G.eval().requires_grad_(False).to(device)
    return G, ModelInfo(name=path.stem, path=path, sha256=file_sha256(path), info=header.get("info", {}))


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors file's header, without reading the tensors."""
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


def load_state_checked(G: Generator, tensors: dict[str, torch.Tensor], where: str) -> None:
    _check_shapes({k: tuple(v.shape) for k, v in G.state_dict().items()},
                  {k: tuple(v.shape) for k, v in tensors.items()}, where)
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{where}: {k} contains NaN or infinite values")
    G.load_state_dict(tensors, strict=True)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
