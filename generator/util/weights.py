"""Pretrained weights (Inception-v3 for FID, VGG16 for LPIPS) found the same way everywhere, without surprises offline.

`resolve_weights` looks in this order (docs/ARCHITECTURE.md, "Metrics"):

1. an explicit file: the caller's argument (a CLI option), else the named environment variable;
2. torchvision's cache, `$TORCH_HOME/hub/checkpoints/<file name>` (an unusable file there is skipped with a warning);
3. a download through torchvision, when allowed and `$SGPROJECT_OFFLINE` is not set;
4. the caller's fallback, told why nothing was found: LPIPS builds a seeded random backbone, FID raises.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors.torch import load_file

log = logging.getLogger(__name__)

ENV_OFFLINE = "SGPROJECT_OFFLINE"  # "1", "true" or "yes": never try to download weights
T = TypeVar("T")  # the weights in the form a caller uses them (a state dict, the conv layers of one, ...)


@dataclass(frozen=True)
class WeightsSource:
    """Where weights came from; `identity` is recorded in every result made with them."""

    kind: str  # 'explicit', 'cache', 'download', or the fallback's own ('random')
    path: str | None  # the weights file, when there is one
    identity: str  # e.g. 'lpips-vgg16:<digest>', 'inception-v3-torchvision:0cc3c7bd'

    @property
    def is_random(self) -> bool:
        return self.kind == "random"


def hub_cache_path(file_name: str) -> Path:
    """Where torchvision keeps (and downloads) a weights file: $TORCH_HOME/hub/checkpoints/<file_name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """`allow_download` when given; else True unless $SGPROJECT_OFFLINE says otherwise."""
    if allow_download is not None:
        return allow_download
    return os.environ.get(ENV_OFFLINE, "") not in ("1", "true", "yes")


def read_weights_file(path: Path, *, what: str, error: type[Exception]) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or of a torch file read with `weights_only` (tensors only, no code).

    Raises `error` with a one-line message when the file is missing or cannot be read.
    """
    if not path.is_file():
        raise error(f"{what} weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise error(f"cannot read {what} weights {path}: {' '.join(str(e).split())[:160]}") from None


def resolve_weights(
    *,
    what: str,  # the network's name in messages, e.g. 'VGG16'
    file_name: str,  # torchvision's file name (its cache's, and the download's)
    url: str,  # where torchvision downloads it from
    explicit: str | Path | None,  # the caller's file (a CLI option); None: the environment variable
    env_var: str,  # the environment variable naming a file
    read: Callable[[Path], tuple[str, T]],  # a file -> (identity, weights); raises `error` when unusable
    from_download: Callable[[dict[str, Any]], tuple[str, T]],  # a downloaded state dict -> (identity, weights)
    error: type[Exception],  # what `read` raises for a missing or unusable file
    fallback: Callable[[str], tuple[WeightsSource, T]],  # told why nothing was found: returns weights or raises
    allow_download: bool | None = None,  # None: unless $SGPROJECT_OFFLINE is set
) -> tuple[WeightsSource, T]:
    """Find weights in the order of the module docstring. An explicit file that cannot be used raises `error`."""
    given = explicit or os.environ.get(env_var)
    if given:
        path = Path(given).expanduser()
        identity, weights = read(path)
        return WeightsSource("explicit", str(path), identity), weights
    cached = hub_cache_path(file_name)
    if cached.is_file():
        try:
            identity, weights = read(cached)
            return WeightsSource("cache", str(cached), identity), weights
        except error as e:
            log.warning("ignoring the torchvision cache: %s", e)
    why = f"downloads are off: ${ENV_OFFLINE} is set"
    if downloads_allowed(allow_download):
        try:
            # check_hash: torchvision's file names carry their sha256 prefix, so a partial download is refused
            state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
            identity, weights = from_download(state)
            return WeightsSource("download", str(cached), identity), weights
        except Exception as e:  # offline, proxy, partial download, a file of the wrong kind
            log.debug("%s download failed: %s", what, e)
            why = f"the download failed: {' '.join(str(e).split())[:120]}"
    return fallback(why)
