"""NVIDIA's original TF pickles -> Converted.

The file is a `(G, D, Gs)` tuple of Network states holding numpy variables in TF layout (`Gs` by default). The
conversion transposes dense and conv weights, flips the upsampling convs' kernels, folds TF's `+ 1` into the style
bias, and gives each constant noise input to its layer by index (docs/ARCHITECTURE.md, "Official weights").
"""

from __future__ import annotations

import re
from typing import Any

import torch

from generator.networks import GeneratorConfig
from generator.official.common import (
    DEFAULT_MAPPING_LR_MUL,
    Converted,
    as_dict,
    block_resolutions,
    infer_architecture,
    need,
    noise_index,
    number,
    preview,
    solve_channels,
)
from generator.official.unpickle import TFNetwork, to_tensor
from generator.util.errors import CheckpointError, UnsupportedNetworkError


def tf_dense_weight(w: torch.Tensor) -> torch.Tensor:
    """TF dense weights are [in, out]; ours [out, in]."""
    return w.t()


def tf_conv_weight(w: torch.Tensor, *, up: bool = False) -> torch.Tensor:
    """TF conv weights are [kh, kw, in, out]; ours [out, in, kh, kw]. TF's upsampling conv flips the kernel before
    its transposed convolution and ours does not, so upsampling weights are flipped here once."""
    w = w.permute(3, 2, 0, 1)
    return w.flip([2, 3]) if up else w


def tf_mod_bias(b: torch.Tensor) -> torch.Tensor:
    """TF adds 1 to the style after the bias (`apply_bias_act(s) + 1`); our affine's bias holds the 1 itself."""
    return b + 1


def _tf_vars(net: TFNetwork) -> dict[str, Any]:
    pairs = net.state.get("variables")
    if not isinstance(pairs, (list, tuple)):
        raise CheckpointError(f"TF network {net.state.get('name')!r} has no variable list")
    out = {}
    for p in pairs:
        if not (isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str)):
            raise CheckpointError("a TF variable entry that is not (name, value)")
        out[p[0]] = p[1]
    return out


def _tf_refuse_unsupported(net: TFNetwork, mapping: TFNetwork, synthesis: TFNetwork, kwargs: dict) -> None:
    syn_vars = set(_tf_vars(synthesis))
    funcs = {str(n.state.get("build_func_name")) for n in (net, mapping, synthesis)}
    version = number(net.state.get("version"))
    if (
        funcs & {"G_style", "G_synthesis"}
        or any("StyleMod" in v or "ToRGB_lod" in v or "/Noise/" in v for v in syn_vars)
        or (version is not None and version < 4)
    ):
        raise UnsupportedNetworkError(
            "a StyleGAN1 network (TF G_style / G_synthesis, Network version "
            f"{net.state.get('version')}); only StyleGAN2 networks can be converted"
        )
    label = number(kwargs.get("label_size")) or 0
    if label > 0 or any(v.startswith(("LabelConcat", "LabelEmbed")) for v in _tf_vars(mapping)):
        raise UnsupportedNetworkError(
            f"a conditional generator (label_size={int(label)}); only unconditional generators can be converted"
        )
    if "G_synthesis_stylegan2" not in funcs and not any(re.fullmatch(r"\d+x\d+/Conv0_up/weight", v) for v in syn_vars):
        raise UnsupportedNetworkError(f"an unknown TF network ({', '.join(sorted(funcs))})")
    for k, ok in (("nonlinearity", "lrelu"), ("mapping_nonlinearity", "lrelu"), ("normalize_latents", True)):
        if k in kwargs and kwargs[k] != ok:
            raise UnsupportedNetworkError(f"{k}={kwargs[k]!r}: only {ok!r} is implemented")
    kernel = kwargs.get("resample_kernel")
    if kernel is not None and list(kernel) != [1, 3, 3, 1]:
        raise UnsupportedNetworkError(f"resample_kernel={list(kernel)}: only [1, 3, 3, 1] is implemented")


def _tf_layer(scope: str, res: int) -> str | None:
    """Our layer name for a TF layer scope within block `res`."""
    return {"Conv": "conv1" if res == 4 else None, "Conv0_up": "conv0", "Conv1": "conv1", "ToRGB": "torgb",
            "Skip": "skip"}.get(scope)


def convert_tf(data: Any, key: str) -> Converted:
    """TF `(G, D, Gs)` pickle -> our names: transposes, the up-conv flip, `mod_bias + 1`, noise by layer index."""
    nets = [data] if isinstance(data, TFNetwork) else list(data)
    if isinstance(data, TFNetwork):
        net = data
    else:
        if len(nets) != 3:
            raise CheckpointError(f"a TF pickle with {len(nets)} networks; expected (G, D, Gs)")
        net = nets[{"G": 0, "Gs": 2}[key]]
    comps = as_dict(net.state.get("components"))
    mapping, synthesis = comps.get("mapping"), comps.get("synthesis")
    if not isinstance(mapping, TFNetwork) or not isinstance(synthesis, TFNetwork):
        raise UnsupportedNetworkError(f"TF network {net.state.get('name')!r} has no mapping and synthesis components")
    kwargs = {**as_dict(net.state.get("static_kwargs")), **as_dict(mapping.state.get("static_kwargs")),
              **as_dict(synthesis.state.get("static_kwargs"))}
    _tf_refuse_unsupported(net, mapping, synthesis, kwargs)
    mvars, svars, own = _tf_vars(mapping), _tf_vars(synthesis), _tf_vars(net)

    state: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    fcs = sorted(int(m.group(1)) for v in mvars if (m := re.fullmatch(r"Dense(\d+)/weight", v)))
    if not fcs or fcs != list(range(len(fcs))):
        raise UnsupportedNetworkError(f"TF mapping layers {fcs} are not Dense0..DenseN")
    for v, value in mvars.items():
        m = re.fullmatch(r"Dense(\d+)/(weight|bias)", v)
        if m is None:
            unused.append(f"mapping/{v}")
            continue
        t = to_tensor(value)
        state[f"mapping.fc{m.group(1)}.{m.group(2)}"] = tf_dense_weight(t) if m.group(2) == "weight" else t

    blocks = block_resolutions(
        {int(m.group(1)) for v in svars if (m := re.fullmatch(r"(\d+)x\1/.*", v))}, "TF synthesis"
    )
    noise_owner = {noise_index(r, layer): f"synthesis.b{r}.{layer}" for r in blocks
                   for layer in (("conv1",) if r == 4 else ("conv0", "conv1"))}
    for v, value in svars.items():
        if v == "4x4/Const/const":
            state["synthesis.b4.const"] = to_tensor(value)[0]  # [1, C, 4, 4] -> [C, 4, 4]
        elif m := re.fullmatch(r"(\d+)x\1/(\w+)/(weight|bias|mod_weight|mod_bias|noise_strength)", v):
            res, layer, var = int(m.group(1)), _tf_layer(m.group(2), int(m.group(1))), m.group(3)
            if layer is None:
                unused.append(v)
                continue
            t, name = to_tensor(value), f"synthesis.b{res}.{layer}"
            if var == "weight":
                state[f"{name}.weight"] = tf_conv_weight(t, up=layer in ("conv0", "skip"))
            elif var == "mod_weight":
                state[f"{name}.affine.weight"] = tf_dense_weight(t)
            elif var == "mod_bias":
                state[f"{name}.affine.bias"] = tf_mod_bias(t)
            else:
                state[f"{name}.{var}"] = t.reshape([]) if var == "noise_strength" else t
        elif (m := re.fullmatch(r"noise(\d+)", v)) and int(m.group(1)) in noise_owner:
            t = to_tensor(value)
            state[f"{noise_owner[int(m.group(1))]}.noise_const"] = t.reshape(t.shape[-2:])  # [1, 1, r, r] -> [r, r]
        elif v == "lod" or re.fullmatch(r"noise\d+", v):
            continue  # progressive-growing level (always 0) / an extra noise input no layer uses
        else:
            unused.append(v)
    if "dlatent_avg" in own:
        state["mapping.w_avg"] = to_tensor(own["dlatent_avg"])

    top = blocks[-1]
    structural = infer_architecture(
        blocks, lambda r: f"synthesis.b{r}.torgb.weight" in state, lambda r: f"synthesis.b{r}.skip.weight" in state
    )
    if "architecture" in kwargs and kwargs["architecture"] != structural:
        raise UnsupportedNetworkError(
            f"architecture {kwargs['architecture']!r} recorded, but the blocks are laid out as {structural!r}"
        )
    channels = {4: state["synthesis.b4.const"].shape[0]}
    channels.update({r: need(state, f"synthesis.b{r}.conv1.weight").shape[0] for r in blocks[1:]})
    base, cmax = solve_channels(channels)
    clamp = number(kwargs.get("conv_clamp"))
    cfg = GeneratorConfig(
        z_dim=need(state, "mapping.fc0.weight").shape[1],
        w_dim=need(state, f"mapping.fc{fcs[-1]}.weight").shape[0],
        mapping_layers=len(fcs),
        mapping_lr_mul=number(kwargs.get("mapping_lrmul")) or DEFAULT_MAPPING_LR_MUL,
        resolution=top,
        img_channels=need(state, f"synthesis.b{top}.torgb.weight").shape[0],
        channel_base=base,
        channel_max=cmax,
        conv_clamp=clamp,
        architecture=structural,
        w_avg_beta=number(kwargs.get("dlatent_avg_beta")) or 0.995,
    )
    if unused:
        raise UnsupportedNetworkError(f"TF variables this architecture has no place for: {preview(unused)}")
    info = {"source_class": str(net.state.get("build_func_name"))}
    return Converted(cfg, state, info, has_w_avg="mapping.w_avg" in state)
