"""Official StyleGAN2 weights: which format a file is in, its conversion, and a cache of converted files.

`load_official` parses a file with `generator.official.unpickle` (nothing from it runs), `detect_format` names its
layout, and `convert` hands it to that layout's converter (`ada`, `tf`, `rosinality`); the result is checked
against a fresh Generator and loaded into it. `load_official_cached` converts a file once and keeps the result as
an sgproject safetensors file keyed by the source file's sha256; `ModelInfo.sha256` is always the source file's
hash, so calibrations match the user's file (docs/ARCHITECTURE.md, "Official weights").
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from generator.checkpoint import ModelInfo, load_safetensors_generator, load_state_checked, save_generator
from generator.networks import Generator
from generator.official.ada import convert_ada
from generator.official.common import ADA, ROSINALITY, TF, Converted, preview
from generator.official.rosinality import convert_rosinality
from generator.official.tf import convert_tf
from generator.official.unpickle import PersistentObject, TFNetwork, load_file
from generator.util.errors import CheckpointError, ModelNotFoundError, SGProjectError, UnsupportedNetworkError
from generator.util.files import file_sha256

CONVERTER_VERSION = 1  # bump when a conversion changes: cached conversions of older versions are redone
DEFAULT_KEY = {ADA: "G_ema", TF: "Gs", ROSINALITY: "g_ema"}
KEYS = {ADA: ("G_ema", "G"), TF: ("Gs", "G"), ROSINALITY: ("g_ema", "g")}
KNOWN_KEYS = ("G_ema", "G", "Gs", "g_ema", "g")
W_AVG_SAMPLES, W_AVG_SEED = 10_000, 0  # w_avg estimate when a file has none (rosinality without latent_avg)


# ------------------------------------------------------------------------------------------------- detection


def is_official_file(path: str | Path) -> bool:
    """By content: a pickle (protocol 2-5 header) or a zip archive (torch.save); never by file extension."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:2] == b"PK"


def detect_format(data: Any) -> str:
    """Which layout the unpickled object is in; UnsupportedNetworkError naming what it is otherwise."""
    if isinstance(data, PersistentObject):
        return ADA
    if isinstance(data, dict) and any(isinstance(v, PersistentObject) for v in data.values()):
        return ADA
    if isinstance(data, TFNetwork) or (
        isinstance(data, (tuple, list)) and data and all(isinstance(v, TFNetwork) for v in data)
    ):
        return TF
    if isinstance(data, dict):
        keys = [k for k in data if isinstance(k, str)]
        if "g_running" in keys or "generator" in keys:
            raise UnsupportedNetworkError(
                "a StyleGAN1 checkpoint (rosinality style-based-gan-pytorch: 'generator'/'g_running'); "
                "only StyleGAN2 networks can be converted"
            )
        if "g_ema" in keys or "g" in keys or any(k.startswith("style.1.") for k in keys):
            return ROSINALITY
        if any(k.startswith("mapping.fc0.") for k in keys):
            raise UnsupportedNetworkError(
                "a bare state dict in NVIDIA's names: its architecture (conv_clamp, resolution, ...) is not "
                "recorded; give the original .pkl"
            )
        raise UnsupportedNetworkError(f"an unknown model file (a dict with keys {preview(keys)})")
    raise UnsupportedNetworkError(f"an unknown model file (it holds {type(data).__name__})")


def convert(data: Any, *, key: str | None = None) -> tuple[str, Converted]:
    """(format, conversion) of an unpickled official file."""
    fmt = detect_format(data)
    if key is not None and key not in KEYS[fmt]:
        raise CheckpointError(
            f"network key {key!r} does not apply to a {fmt} file (use one of {', '.join(KEYS[fmt])})"
        )
    key = key or DEFAULT_KEY[fmt]
    converter = {ADA: convert_ada, TF: convert_tf, ROSINALITY: convert_rosinality}[fmt]
    conv = converter(data, key)
    conv.info = {"source_format": fmt, "source_key": key, **conv.info}
    return fmt, conv


# -------------------------------------------------------------------------------------------------- loading


def load_official(
    path: str | Path, device: str | torch.device = "cpu", *, key: str | None = None
) -> tuple[Generator, ModelInfo]:
    """Convert an official file (NVIDIA .pkl or rosinality .pt) into a Generator, without running its code.

    Raises UnsafePickleError for a file that asks for anything beyond weights, UnsupportedNetworkError for a
    network this project cannot represent, CheckpointError for a damaged file.
    """
    path = Path(path)
    return _load_official(path, device, key, _source_sha256(path))


def _source_sha256(path: Path) -> str:
    """The identity of the user's file (what calibrations and caches are keyed by)."""
    if not path.is_file():
        raise ModelNotFoundError(f"no such file: {path}")
    try:
        return file_sha256(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None


def _load_official(path: Path, device, key: str | None, sha: str) -> tuple[Generator, ModelInfo]:
    if key is not None and key not in KNOWN_KEYS:
        raise CheckpointError(f"unknown network key {key!r} (use one of {', '.join(KNOWN_KEYS)})")
    data = load_file(path)
    try:
        fmt, conv = convert(data, key=key)
        G = Generator(conv.cfg, seed=None)
        extra = sorted(set(conv.state) - set(G.state_dict()))
        if extra:
            raise UnsupportedNetworkError(
                f"the network has tensors this architecture has no place for: {preview(extra)}"
            )
        state = dict(conv.state)
        if not conv.has_w_avg:
            state["mapping.w_avg"] = torch.zeros(conv.cfg.w_dim)  # placeholder, estimated below
        load_state_checked(G, state, str(path))
    except SGProjectError as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except Exception as e:  # content no converter expected (the file is a stranger's): one line, no traceback
        detail = " ".join(str(e).split())[:160]
        raise CheckpointError(f"{path}: unexpected content ({type(e).__name__}: {detail})") from None
    info = {**conv.info, "source_file": path.name, "source_sha256": sha, "converter_version": CONVERTER_VERSION}
    if conv.has_w_avg:
        info["w_avg"] = "from the file"
    else:  # the truncation trick needs the average w; sample it, reproducibly
        G.mapping.w_avg.copy_(G.estimate_w_stats(W_AVG_SAMPLES, seed=W_AVG_SEED)[0])
        info["w_avg"] = f"estimated from {W_AVG_SAMPLES} mapped z (seed {W_AVG_SEED}); the file has none"
    G.eval().requires_grad_(False).to(device)
    return G, ModelInfo(name=path.stem, path=path, sha256=sha, info=info)


def cache_dir() -> Path:
    """Where conversions are kept: $SGPROJECT_CACHE/converted, else ~/.cache/sgproject/converted."""
    root = os.environ.get("SGPROJECT_CACHE")
    if root:
        return Path(root).expanduser() / "converted"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sgproject" / "converted"


def cache_path(sha256: str, key: str | None = None) -> Path:
    return cache_dir() / (f"{sha256}.safetensors" if key is None else f"{sha256}-{key}.safetensors")


def load_official_cached(
    path: str | Path, device: str | torch.device = "cpu", *, key: str | None = None
) -> tuple[Generator, ModelInfo]:
    """`load_official`, converting each distinct file (by sha256) only once; later loads read the cache."""
    path = Path(path)
    if key is not None and key not in KNOWN_KEYS:
        raise CheckpointError(f"unknown network key {key!r} (use one of {', '.join(KNOWN_KEYS)})")
    sha = _source_sha256(path)
    cached = cache_path(sha, key)
    if cached.exists():
        try:
            G, mi = load_safetensors_generator(cached, device)
            if mi.info.get("source_sha256") == sha and mi.info.get("converter_version") == CONVERTER_VERSION:
                info = {**mi.info, "source_file": path.name}  # the same content may have been converted by another name
                return G, ModelInfo(name=path.stem, path=path, sha256=sha, info=info)
        except CheckpointError:
            pass  # a damaged or foreign cache entry is simply converted again
    G, mi = _load_official(path, "cpu", key, sha)
    try:
        save_generator(G, cached, info=mi.info, sidecar=False)
    except OSError as e:  # a read-only cache costs time, not correctness
        warnings.warn(f"could not cache the converted model in {cached.parent}: {e}", stacklevel=2)
    return G.to(device), mi


def summary(G: Generator, info: dict) -> dict:
    """What `sgproject convert` prints: format, resolution, channels, mapping, parameter count."""
    cfg = G.cfg
    return {
        "format": info.get("source_format"),
        "key": info.get("source_key"),
        "resolution": cfg.resolution,
        "channels": {r: cfg.channels(r) for r in cfg.block_resolutions},
        "architecture": cfg.architecture,
        "z_dim": cfg.z_dim,
        "w_dim": cfg.w_dim,
        "mapping_layers": cfg.mapping_layers,
        "mapping_lr_mul": cfg.mapping_lr_mul,
        "conv_clamp": cfg.conv_clamp,
        "parameters": sum(p.numel() for p in G.parameters()),
        "w_avg": info.get("w_avg"),
        "source_sha256": info.get("source_sha256"),
    }


def convert_file(src: str | Path, dst: str | Path, *, key: str | None = None) -> dict:
    """`sgproject convert`: an official file to an sgproject checkpoint (with its JSON sidecar); returns `summary`."""
    G, mi = load_official(src, "cpu", key=key)
    try:
        save_generator(G, dst, info=mi.info)
    except OSError as e:
        raise SGProjectError(f"cannot write {dst}: {e.strerror or e}") from None
    return summary(G, mi.info)


__all__ = [
    "ADA", "CONVERTER_VERSION", "ROSINALITY", "TF", "Converted", "cache_dir", "cache_path", "convert", "convert_file",
    "detect_format", "is_official_file", "load_official", "load_official_cached", "summary",
]
