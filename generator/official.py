"""Official StyleGAN2 weights, converted to this project's Generator without running code from the file.

Three layouts are read (the facts about each are in DESIGN.md, "Official weights"):

- `stylegan2-ada-pytorch`: NVIDIA's PyTorch `.pkl` (stylegan2-ada-pytorch, and stylegan3 trained with the
  StyleGAN2 config): a dict of persistent-object records; `G_ema` by default, `key="G"` for the raw generator.
  Parameter names are already ours; the architecture comes from the records' state (effective per-layer values
  such as `conv_clamp` first, then `_init_kwargs`, then the class's defaults) and from the tensor shapes.
- `stylegan2-tf`: NVIDIA's original TF `.pkl`, a `(G, D, Gs)` tuple of Network states holding numpy variables in
  TF layout; `Gs` by default.
- `rosinality`: a `torch.save` checkpoint of rosinality/stylegan2-pytorch (`g_ema` by default, or `g`).

The file is parsed by `generator.unpickle` (an allow-list of harmless stand-ins; no `module_src` is executed).
Conversions are pure functions from the file's tensors to ours, named after the fact they apply. Whatever cannot
be represented exactly (StyleGAN1, StyleGAN3 alias-free, conditional models, unusual layouts) is refused with
UnsupportedNetworkError saying what the file is.

`load_official_cached` converts a file once and keeps the result as an sgproject safetensors file keyed by the
source file's sha256; `ModelInfo.sha256` is always the source file's hash, so calibrations match the user's file.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from generator.checkpoint import (
    ModelInfo,
    _load_state_checked,
    file_sha256,
    load_safetensors_generator,
    save_generator,
)
from generator.errors import CheckpointError, ModelNotFoundError, SGProjectError, UnsupportedNetworkError
from generator.layers import fir_filter
from generator.networks import Generator, GeneratorConfig
from generator.unpickle import (
    Namespace,
    PersistentObject,
    TFNetwork,
    load_file,
    shape_of,
    to_tensor,
)

CONVERTER_VERSION = 1  # bump when a conversion changes: cached conversions of older versions are redone
ADA, TF, ROSINALITY = "stylegan2-ada-pytorch", "stylegan2-tf", "rosinality"
DEFAULT_KEY = {ADA: "G_ema", TF: "Gs", ROSINALITY: "g_ema"}
KEYS = {ADA: ("G_ema", "G"), TF: ("Gs", "G"), ROSINALITY: ("g_ema", "g")}
KNOWN_KEYS = ("G_ema", "G", "Gs", "g_ema", "g")
W_AVG_SAMPLES, W_AVG_SEED = 10_000, 0  # w_avg estimate when a file has none (rosinality without latent_avg)
DEFAULT_MAPPING_LR_MUL = 0.01  # every official StyleGAN2 mapping network uses it


@dataclass
class Converted:
    """A network in our names, ready for `Generator(cfg).load_state_dict(state)`."""

    cfg: GeneratorConfig
    state: dict[str, torch.Tensor]  # sgproject parameter and buffer names
    info: dict = field(default_factory=dict)  # source format, key, class, notes
    has_w_avg: bool = True  # False: mapping.w_avg must be estimated by sampling


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
        raise UnsupportedNetworkError(f"an unknown model file (a dict with keys {_preview(keys)})")
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


# ---------------------------------------------------------------------------------------- shared arithmetic


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


def _block_resolutions(found: set[int], where: str) -> list[int]:
    """4, 8, ..., R with none missing; R is the output resolution."""
    if not found:
        raise UnsupportedNetworkError(f"{where}: no synthesis blocks found")
    top = max(found)
    expected = [2**i for i in range(2, int(math.log2(top)) + 1)]
    if top < 4 or 2 ** int(math.log2(top)) != top or sorted(found) != expected:
        raise UnsupportedNetworkError(f"{where}: synthesis blocks {sorted(found)} are not 4, 8, ..., {top}")
    return expected


def _infer_architecture(blocks: list[int], has_torgb: Callable[[int], bool], has_skip: Callable[[int], bool]) -> str:
    """skip: a toRGB in every block; resnet: 1x1 skip convolutions; orig: neither (toRGB only in the last)."""
    if any(has_skip(r) for r in blocks[1:]):
        return "resnet"
    return "skip" if all(has_torgb(r) for r in blocks) else "orig"


def _agree(values: list, what: str) -> Any:
    """The one value every layer records (None when none does); per-layer differences cannot be represented."""
    distinct: list = []
    for v in values:
        v = _number(v) if _number(v) is not None else v  # 256 and 256.0 are the same clamp
        if v not in distinct:
            distinct.append(v)
    if len(distinct) > 1:
        raise UnsupportedNetworkError(f"layers record different values of {what}: {distinct}")
    return distinct[0] if distinct else None


def _check_filter(name: str, value: Any, gain: float = 1.0) -> None:
    """Resampling filters are constants in our networks: refuse a file whose filter is not [1,3,3,1]."""
    t = to_tensor(value)
    f = fir_filter() * gain
    if t.shape != f.shape or not torch.allclose(t, f, atol=1e-6):
        raise UnsupportedNetworkError(f"{name} is not the [1,3,3,1] low-pass filter this project implements")


def _preview(keys: list, n: int = 6) -> str:
    keys = [str(k) for k in keys]
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


# ------------------------------------------------------------------------------------ stylegan2-ada-pytorch


def _ada_modules(root: PersistentObject) -> dict[str, PersistentObject]:
    """Every module of a persistent-object tree by dotted name ('' is the root)."""
    modules: dict[str, PersistentObject] = {}
    seen: set[int] = set()
    stack = [("", root)]
    while stack:
        name, m = stack.pop()
        if not isinstance(m, PersistentObject):
            raise UnsupportedNetworkError(f"module {name or '(root)'} is {type(m).__name__}, not a network record")
        if id(m) in seen or len(modules) > 100_000:
            raise CheckpointError("the module tree refers to itself")
        seen.add(id(m))
        modules[name] = m
        for child, sub in _dict(m.state.get("_modules")).items():
            if sub is not None:
                stack.append((f"{name}.{child}" if name else str(child), sub))
    return modules


def _ada_tensors(modules: dict[str, PersistentObject]) -> dict[str, Any]:
    """Parameters and buffers of every module, by full dotted name (our names, by design)."""
    tensors = {}
    for name, m in modules.items():
        for kind in ("_parameters", "_buffers"):
            for k, v in _dict(m.state.get(kind)).items():
                if v is not None:
                    tensors[f"{name}.{k}" if name else str(k)] = v
    return tensors


def _ada_refuse_unsupported(root: PersistentObject, modules: dict[str, PersistentObject]) -> None:
    names = set(modules)
    if (
        "networks_stylegan3" in root.class_name
        or "synthesis.input" in names
        or any(re.fullmatch(r"synthesis\.L\d+_.*", n) for n in names)
    ):
        raise UnsupportedNetworkError(
            f"a StyleGAN3 alias-free generator ({root.class_name}: synthesis has input and L0_... layers); "
            "only StyleGAN2 networks can be converted"
        )
    c_dim = _number(_dict(modules.get("mapping", root).state).get("c_dim")) or _number(root.state.get("c_dim")) or 0
    if "mapping.embed" in names or c_dim > 0:
        raise UnsupportedNetworkError(
            f"a conditional generator (c_dim={int(c_dim)}: its mapping embeds class labels); "
            "only unconditional generators can be converted"
        )
    if "mapping" not in names or "synthesis" not in names:
        raise UnsupportedNetworkError(
            f"an unknown network {root.class_name} (no mapping and synthesis sub-networks)"
        )


def _ada_init_kwargs(modules: dict[str, PersistentObject], sub: str) -> dict:
    """What was passed to a sub-network: its own `_init_kwargs`, then the generator's `<sub>_kwargs`."""
    own = _dict(modules[sub].state.get("_init_kwargs"))
    top = _dict(_dict(modules[""].state.get("_init_kwargs")).get(f"{sub}_kwargs"))
    return {**top, **own}


def _ada_default_clamp(class_name: str) -> float | None:
    """conv_clamp when neither the layers nor `_init_kwargs` record it: stylegan3's StyleGAN2 code defaults to
    256 (with num_fp16_res 4); stylegan2-ada-pytorch's to None."""
    return 256.0 if "networks_stylegan2" in class_name else None


def convert_ada(data: Any, key: str) -> Converted:
    """NVIDIA PyTorch pickle -> our names (identical by design) and a config read from the records."""
    if isinstance(data, PersistentObject):
        root = data
    else:
        root = data.get(key)
        if not isinstance(root, PersistentObject):
            found = [k for k, v in data.items() if isinstance(v, PersistentObject)]
            raise CheckpointError(f"the file has no network {key!r} (it has {_preview(found)})")
    modules = _ada_modules(root)
    _ada_refuse_unsupported(root, modules)
    tensors = _ada_tensors(modules)

    blocks = _block_resolutions(
        {int(m.group(1)) for n in modules if (m := re.fullmatch(r"synthesis\.b(\d+)", n))}, "synthesis"
    )
    top = blocks[-1]
    fcs = sorted(int(m.group(1)) for n in modules if (m := re.fullmatch(r"mapping\.fc(\d+)", n)))
    if not fcs or fcs != list(range(len(fcs))):
        raise UnsupportedNetworkError(f"mapping layers {fcs} are not fc0..fcN")
    syn_kwargs, map_kwargs = _ada_init_kwargs(modules, "synthesis"), _ada_init_kwargs(modules, "mapping")

    def shape(name: str) -> tuple[int, ...]:
        s = shape_of(tensors.get(name))
        if s is None:
            raise CheckpointError(f"the network has no tensor {name}")
        return s

    # Effective values, most specific first: layer state, then _init_kwargs, then the class default.
    layer_states = [
        modules[f"synthesis.b{r}.{layer}"].state
        for r in blocks for layer in ("conv0", "conv1", "torgb") if f"synthesis.b{r}.{layer}" in modules
    ]
    clamps = [s["conv_clamp"] for s in layer_states if "conv_clamp" in s]
    if clamps:
        conv_clamp = _agree(clamps, "conv_clamp")
    elif "conv_clamp" in syn_kwargs:
        conv_clamp = syn_kwargs["conv_clamp"]
    else:
        conv_clamp = _ada_default_clamp(root.class_name)
    if conv_clamp is not None and _number(conv_clamp) is None:
        raise CheckpointError(f"invalid conv_clamp {conv_clamp!r}")

    structural = _infer_architecture(
        blocks, lambda r: f"synthesis.b{r}.torgb" in modules, lambda r: f"synthesis.b{r}.skip" in modules
    )
    archs = [modules[f"synthesis.b{r}"].state["architecture"] for r in blocks
             if "architecture" in modules[f"synthesis.b{r}"].state]
    recorded = _agree(archs, "architecture") if archs else syn_kwargs.get("architecture")
    if recorded is not None and recorded != structural:
        raise UnsupportedNetworkError(
            f"architecture {recorded!r} recorded, but the blocks are laid out as {structural!r}"
        )

    gains = [_number(modules[f"mapping.fc{i}"].state.get("bias_gain")) for i in fcs]
    lr_mul = _agree([g for g in gains if g is not None], "the mapping learning-rate multiplier")
    if lr_mul is None:
        lr_mul = _number(map_kwargs.get("lr_multiplier")) or DEFAULT_MAPPING_LR_MUL
    for name, m in modules.items():  # our style affines always have lr_mul 1
        if name.endswith(".affine") and _number(m.state.get("bias_gain")) not in (None, 1.0):
            raise UnsupportedNetworkError(f"{name} has a learning-rate multiplier other than 1")

    channels = {4: shape("synthesis.b4.const")[0]}
    channels.update({r: shape(f"synthesis.b{r}.conv1.weight")[0] for r in blocks[1:]})
    base, cmax = solve_channels(channels)
    beta = _number(_dict(modules["mapping"].state).get("w_avg_beta"))
    cfg = GeneratorConfig(
        z_dim=shape("mapping.fc0.weight")[1],
        w_dim=shape(f"mapping.fc{fcs[-1]}.weight")[0],
        mapping_layers=len(fcs),
        mapping_lr_mul=float(lr_mul),
        resolution=top,
        img_channels=shape(f"synthesis.b{top}.torgb.weight")[0],
        channel_base=base,
        channel_max=cmax,
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
        architecture=structural,
        w_avg_beta=0.995 if beta is None else beta,
    )
    for name in (n for n in tensors if n.endswith(".resample_filter")):
        _check_filter(name, tensors[name])  # constants of the architecture, not weights
    state = {n: to_tensor(v) for n, v in tensors.items() if not n.endswith(".resample_filter")}
    return Converted(cfg, state, {"source_class": root.class_name}, has_w_avg="mapping.w_avg" in tensors)


# --------------------------------------------------------------------------------------------- TF StyleGAN2


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
    version = _number(net.state.get("version"))
    if (
        funcs & {"G_style", "G_synthesis"}
        or any("StyleMod" in v or "ToRGB_lod" in v or "/Noise/" in v for v in syn_vars)
        or (version is not None and version < 4)
    ):
        raise UnsupportedNetworkError(
            "a StyleGAN1 network (TF G_style / G_synthesis, Network version "
            f"{net.state.get('version')}); only StyleGAN2 networks can be converted"
        )
    label = _number(kwargs.get("label_size")) or 0
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
    comps = _dict(net.state.get("components"))
    mapping, synthesis = comps.get("mapping"), comps.get("synthesis")
    if not isinstance(mapping, TFNetwork) or not isinstance(synthesis, TFNetwork):
        raise UnsupportedNetworkError(f"TF network {net.state.get('name')!r} has no mapping and synthesis components")
    kwargs = {**_dict(net.state.get("static_kwargs")), **_dict(mapping.state.get("static_kwargs")),
              **_dict(synthesis.state.get("static_kwargs"))}
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

    blocks = _block_resolutions(
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
    structural = _infer_architecture(
        blocks, lambda r: f"synthesis.b{r}.torgb.weight" in state, lambda r: f"synthesis.b{r}.skip.weight" in state
    )
    if "architecture" in kwargs and kwargs["architecture"] != structural:
        raise UnsupportedNetworkError(
            f"architecture {kwargs['architecture']!r} recorded, but the blocks are laid out as {structural!r}"
        )
    channels = {4: state["synthesis.b4.const"].shape[0]}
    channels.update({r: _need(state, f"synthesis.b{r}.conv1.weight").shape[0] for r in blocks[1:]})
    base, cmax = solve_channels(channels)
    clamp = _number(kwargs.get("conv_clamp"))
    cfg = GeneratorConfig(
        z_dim=_need(state, "mapping.fc0.weight").shape[1],
        w_dim=_need(state, f"mapping.fc{fcs[-1]}.weight").shape[0],
        mapping_layers=len(fcs),
        mapping_lr_mul=_number(kwargs.get("mapping_lrmul")) or DEFAULT_MAPPING_LR_MUL,
        resolution=top,
        img_channels=_need(state, f"synthesis.b{top}.torgb.weight").shape[0],
        channel_base=base,
        channel_max=cmax,
        conv_clamp=clamp,
        architecture=structural,
        w_avg_beta=_number(kwargs.get("dlatent_avg_beta")) or 0.995,
    )
    if unused:
        raise UnsupportedNetworkError(f"TF variables this architecture has no place for: {_preview(unused)}")
    info = {"source_class": str(net.state.get("build_func_name"))}
    return Converted(cfg, state, info, has_w_avg="mapping.w_avg" in state)


def _need(state: dict, name: str) -> torch.Tensor:
    if name not in state:
        raise CheckpointError(f"the network has no tensor for {name}")
    return state[name]


# ------------------------------------------------------------------------------------------------ rosinality


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
        raise CheckpointError(f"the checkpoint has no generator {key!r} (it has {_preview(list(data))})")
    blur_names = re.compile(r"convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel")
    blurs = {k: v for k, v in sd.items() if blur_names.fullmatch(str(k))}
    for k, v in blurs.items():
        _check_filter(k, v, gain=4.0)  # rosinality folds the upsampling gain (factor**2) into its kernels
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
        raise UnsupportedNetworkError(f"state-dict keys this architecture has no place for: {_preview(unused)}")
    blocks = _block_resolutions({int(m.group(1)) for n in state if (m := re.match(r"synthesis\.b(\d+)\.", n))},
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
    channels = {4: _need(state, "synthesis.b4.const").shape[0]}
    channels.update({r: _need(state, f"synthesis.b{r}.conv1.weight").shape[0] for r in blocks[1:]})
    base, cmax = solve_channels(channels)
    args = data.get("args")
    lr_mlp = _number(args.state.get("lr_mlp")) if isinstance(args, Namespace) else None
    top = blocks[-1]
    cfg = GeneratorConfig(
        z_dim=state["mapping.fc0.weight"].shape[1],
        w_dim=state[f"mapping.fc{fcs[-1]}.weight"].shape[0],
        mapping_layers=len(fcs),
        mapping_lr_mul=lr_mlp or DEFAULT_MAPPING_LR_MUL,
        resolution=top,
        img_channels=_need(state, f"synthesis.b{top}.torgb.weight").shape[0],
        channel_base=base,
        channel_max=cmax,
        conv_clamp=None,
        architecture="skip",
    )
    info = {"source_class": "rosinality Generator"}
    if data.get("latent_avg") is not None and key == "g_ema":  # latent_avg is g_ema's (convert_weight.py)
        state["mapping.w_avg"] = to_tensor(data["latent_avg"]).reshape(-1)
    return Converted(cfg, state, info, has_w_avg="mapping.w_avg" in state)


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
                f"the network has tensors this architecture has no place for: {_preview(extra)}"
            )
        state = dict(conv.state)
        if not conv.has_w_avg:
            state["mapping.w_avg"] = torch.zeros(conv.cfg.w_dim)  # placeholder, estimated below
        _load_state_checked(G, state, str(path))
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


__all__ = [
    "ADA", "ROSINALITY", "TF", "Converted", "cache_dir", "convert", "detect_format", "is_official_file",
    "load_official", "load_official_cached", "noise_index", "solve_channels", "summary", "tf_conv_weight",
    "tf_dense_weight", "tf_mod_bias",
]
