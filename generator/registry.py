"""The registry of named models, and `load_generator`, which opens any model a user can name.

`load_generator(spec)` takes a registered name (`tiny`, `portraits-64`), a `.safetensors` path, or an official
NVIDIA / rosinality file (converted once, cached by content hash; see `generator.official.load`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from generator.checkpoint import ModelInfo, load_safetensors_generator, tensors_sha256
from generator.networks import Generator, GeneratorConfig
from generator.official.load import is_official_file, load_official_cached
from generator.training.config import preset_generator_config
from generator.util.errors import CheckpointError, ModelNotFoundError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "portraits-64"


def tiny_config() -> GeneratorConfig:
    """The `tiny` training preset's generator (32 px, 32 channels, a 2-layer mapping): seconds on a CPU; for tests
    and development."""
    return preset_generator_config("tiny")


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
    if is_official_file(path):
        return load_official_cached(path, device)
    raise CheckpointError(
        f"{path}: unrecognised model file (expected sgproject .safetensors, an NVIDIA .pkl or a rosinality .pt)"
    )


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length followed by '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 28)
