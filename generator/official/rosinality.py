"""rosinality/stylegan2-pytorch checkpoints (`torch.save`, `g_ema` by default, or `g`) -> Converted.

Names are mapped key by key; rosinality's blur kernels must be the [1,3,3,1] filter (with the upsampling gain folded
in); the architecture is always `skip`, with no clamp (docs/ARCHITECTURE.md, "Official weights").
"""

from __future__ import annotations

import re
from typing import Callable

import torch

from generator.networks import GeneratorConfig
from generator.official.common import (
    DEFAULT_MAPPING_LR_MUL,
    Converted,
    block_resolutions,
    check_filter,
    need,
    noise_index,
    number,
    preview,
    solve_channels,
)
from generator.official.unpickle import Namespace, to_tensor
from generator.util.errors import CheckpointError, UnsupportedNetworkError


def _rosinality_name(key: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None:
    """Our name for a rosinality state-dict key and how to reshape its tensor; None for constants to skip."""
    m = re.fullmatch(r"style\.(\d+)\.(weight|bias)", key)
    if m and int(m.group(1)) >= 1:  # style.0 is PixelNorm
        return f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}", _same
    if key == "input.input":
        return "synthesis.b4.const", _first  # [1, C, 4, 4]
    if m := re.fullmatch(r"(conv1|convs\.(\d+))\.(.+)", key):
        if m.group(2) is None:
            name = "synthesis.b4.conv1"
        else:
            i = int(m.group(2))  # convs.{2k} / convs.{2k+1}: conv0 / conv1 of resolution 2**(k+3)
            name = f"synthesis.b{2 ** (i // 2 + 3)}.{'conv0' if i % 2 == 0 else 'conv1'}"
        return _rosinality_layer(name, m.group(3))
    if m := re.fullmatch(r"(to_rgb1|to_rgbs\.(\d+))\.(.+)", key):
        res = 4 if m.group(2) is None else 2 ** (int(m.group(2)) + 3)
        return _rosinality_layer(f"synthesis.b{res}.torgb", m.group(3))
    if m := re.fullmatch(r"noises\.noise_(\d+)", key):
        return f"noise:{m.group(1)}", _last2  # resolved by index below
    return None


def _rosinality_layer(name: str, rest: str) -> tuple[str, Callable] | None:
    table = {
        "conv.weight": ("weight", _first),  # [1, O, I, k, k]
        "conv.modulation.weight": ("affine.weight", _same),
        "conv.modulation.bias": ("affine.bias", _same),
        "noise.weight": ("noise_strength", lambda t: t.reshape([])),  # [1]
        "activate.bias": ("bias", _flat),
        "bias": ("bias", _flat),  # toRGB: [1, C, 1, 1]
    }
    if rest in table:
        return f"{name}.{table[rest][0]}", table[rest][1]
    return None


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _first(t: torch.Tensor) -> torch.Tensor:
    return t[0]


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _last2(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[-2:])


def convert_rosinality(data: dict, key: str) -> Converted:
    """rosinality/stylegan2-pytorch checkpoint -> our names; skip architecture, no clamp, lr_mul 0.01."""
    sd = data.get(key) if key in data else (data if any(str(k).startswith("style.1.") for k in data) else None)
    if not isinstance(sd, dict):
        raise CheckpointError(f"the checkpoint has no generator {key!r} (it has {preview(list(data))})")
    blur_names = re.compile(r"convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel")
    blurs = {k: v for k, v in sd.items() if blur_names.fullmatch(str(k))}
    for k, v in blurs.items():
        check_filter(k, v, gain=4.0)  # rosinality folds the upsampling gain (factor**2) into its kernels
    state: dict[str, torch.Tensor] = {}
    noises: dict[int, torch.Tensor] = {}
    unused = []
    for k, v in sd.items():
        if k in blurs:
            continue
        target = _rosinality_name(str(k))
        if target is None:
            unused.append(str(k))
            continue
        name, fn = target
        t = fn(to_tensor(v))
        if name.startswith("noise:"):
            noises[int(name[6:])] = t
        else:
            state[name] = t
    if unused:
        raise UnsupportedNetworkError(f"state-dict keys this architecture has no place for: {preview(unused)}")
    blocks = block_resolutions({int(m.group(1)) for n in state if (m := re.match(r"synthesis\.b(\d+)\.", n))},
                                "rosinality generator")
    for r in blocks:
        for layer in ("conv1",) if r == 4 else ("conv0", "conv1"):
            i = noise_index(r, layer)
            if i in noises:
                state[f"synthesis.b{r}.{layer}.noise_const"] = noises.pop(i)
    if noises:
        raise UnsupportedNetworkError(f"noise inputs {sorted(noises)} belong to no layer")
    fcs = sorted(int(m.group(1)) for n in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", n)))
    if not fcs or fcs != list(range(len(fcs))):
        raise UnsupportedNetworkError(f"rosinality mapping layers {fcs} are not style.1..style.N")
    channels = {4: need(state, "synthesis.b4.const").shape[0]}
    channels.update({r: need(state, f"synthesis.b{r}.conv1.weight").shape[0] for r in blocks[1:]})
    base, cmax = solve_channels(channels)
    args = data.get("args")
    lr_mlp = number(args.state.get("lr_mlp")) if isinstance(args, Namespace) else None
    top = blocks[-1]
    cfg = GeneratorConfig(
        z_dim=state["mapping.fc0.weight"].shape[1],
        w_dim=state[f"mapping.fc{fcs[-1]}.weight"].shape[0],
        mapping_layers=len(fcs),
        mapping_lr_mul=lr_mlp or DEFAULT_MAPPING_LR_MUL,
        resolution=top,
        img_channels=need(state, f"synthesis.b{top}.torgb.weight").shape[0],
        channel_base=base,
        channel_max=cmax,
        conv_clamp=None,
        architecture="skip",
    )
    info = {"source_class": "rosinality Generator"}
    if data.get("latent_avg") is not None and key == "g_ema":  # latent_avg is g_ema's (convert_weight.py)
        state["mapping.w_avg"] = to_tensor(data["latent_avg"]).reshape(-1)
    return Converted(cfg, state, info, has_w_avg="mapping.w_avg" in state)
