"""What the three converters share: the conversion result, the format names, and checks on network layouts.

Every converter returns a `Converted` (a config and a state dict in this project's names); the helpers here read a
layout's facts (channels per resolution, block resolutions, architecture) and refuse what GeneratorConfig cannot
represent with UnsupportedNetworkError (docs/ARCHITECTURE.md, "Official weights").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from generator.layers import fir_filter
from generator.networks import GeneratorConfig
from generator.official.unpickle import to_tensor
from generator.util.errors import CheckpointError, UnsupportedNetworkError

ADA, TF, ROSINALITY = "stylegan2-ada-pytorch", "stylegan2-tf", "rosinality"
DEFAULT_MAPPING_LR_MUL = 0.01  # every official StyleGAN2 mapping network uses it


@dataclass
class Converted:
    """A network in our names, ready for `Generator(cfg).load_state_dict(state)`."""

    cfg: GeneratorConfig
    state: dict[str, torch.Tensor]  # sgproject parameter and buffer names
    info: dict = field(default_factory=dict)  # source format, key, class, notes
    has_w_avg: bool = True  # False: mapping.w_avg must be estimated by sampling


def solve_channels(channels: dict[int, int]) -> tuple[int, int]:
    """(channel_base, channel_max) with min(base // r, max) == channels[r] for every resolution r.

    Official networks follow this rule; a file that does not cannot be represented by GeneratorConfig.
    """
    res = sorted(channels)
    cmax = max(channels.values())
    below = [r for r in res if channels[r] < cmax]
    base = channels[below[0]] * below[0] if below else cmax * res[-1]
    if any(min(base // r, cmax) != channels[r] for r in res):
        raise UnsupportedNetworkError(
            f"channels per resolution {channels} do not follow min(channel_base / r, channel_max)"
        )
    return base, cmax


def noise_index(res: int, layer: str) -> int:
    """Where TF and rosinality keep a layer's constant noise: 0 for b4.conv1, 2*log2(R)-5 / -4 for conv0 / conv1."""
    if res == 4:
        return 0
    return 2 * int(math.log2(res)) - (5 if layer == "conv0" else 4)


def block_resolutions(found: set[int], where: str) -> list[int]:
    """4, 8, ..., R with none missing; R is the output resolution."""
    if not found:
        raise UnsupportedNetworkError(f"{where}: no synthesis blocks found")
    top = max(found)
    expected = [2**i for i in range(2, int(math.log2(top)) + 1)]
    if top < 4 or 2 ** int(math.log2(top)) != top or sorted(found) != expected:
        raise UnsupportedNetworkError(f"{where}: synthesis blocks {sorted(found)} are not 4, 8, ..., {top}")
    return expected


def infer_architecture(blocks: list[int], has_torgb: Callable[[int], bool], has_skip: Callable[[int], bool]) -> str:
    """skip: a toRGB in every block; resnet: 1x1 skip convolutions; orig: neither (toRGB only in the last)."""
    if any(has_skip(r) for r in blocks[1:]):
        return "resnet"
    return "skip" if all(has_torgb(r) for r in blocks) else "orig"


def agree(values: list, what: str) -> Any:
    """The one value every layer records (None when none does); per-layer differences cannot be represented."""
    distinct: list = []
    for v in values:
        v = number(v) if number(v) is not None else v  # 256 and 256.0 are the same clamp
        if v not in distinct:
            distinct.append(v)
    if len(distinct) > 1:
        raise UnsupportedNetworkError(f"layers record different values of {what}: {distinct}")
    return distinct[0] if distinct else None


def check_filter(name: str, value: Any, gain: float = 1.0) -> None:
    """Resampling filters are constants in our networks: refuse a file whose filter is not [1,3,3,1]."""
    t = to_tensor(value)
    f = fir_filter() * gain
    if t.shape != f.shape or not torch.allclose(t, f, atol=1e-6):
        raise UnsupportedNetworkError(f"{name} is not the [1,3,3,1] low-pass filter this project implements")


def preview(keys: list, n: int = 6) -> str:
    """The first n keys for a message: '[a, b, ...]'."""
    keys = [str(k) for k in keys]
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"


def as_dict(x: Any) -> dict:
    """x when it is a dict, else an empty one (a record's state may hold anything)."""
    return x if isinstance(x, dict) else {}


def number(x: Any) -> float | None:
    """x as a float when it is an int or a float (not a bool), else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def need(state: dict, name: str) -> torch.Tensor:
    """state[name], or CheckpointError saying which tensor the network lacks."""
    if name not in state:
        raise CheckpointError(f"the network has no tensor for {name}")
    return state[name]
