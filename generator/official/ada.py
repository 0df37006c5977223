"""NVIDIA's PyTorch pickles (stylegan2-ada-pytorch, and stylegan3 trained with the StyleGAN2 config) -> Converted.

The file is a dict of persistent-object records (`G_ema` by default, `G` for the raw generator). Parameter names are
already ours; the architecture comes from the records' state (effective per-layer values such as `conv_clamp`
first, then `_init_kwargs`, then the class's defaults) and from the tensor shapes (docs/ARCHITECTURE.md,
"Official weights").
"""

from __future__ import annotations

import re
from typing import Any

from generator.networks import GeneratorConfig
from generator.official.common import (
    DEFAULT_MAPPING_LR_MUL,
    Converted,
    agree,
    as_dict,
    block_resolutions,
    check_filter,
    infer_architecture,
    number,
    preview,
    solve_channels,
)
from generator.official.unpickle import PersistentObject, shape_of, to_tensor
from generator.util.errors import CheckpointError, UnsupportedNetworkError


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
        for child, sub in as_dict(m.state.get("_modules")).items():
            if sub is not None:
                stack.append((f"{name}.{child}" if name else str(child), sub))
    return modules


def _ada_tensors(modules: dict[str, PersistentObject]) -> dict[str, Any]:
    """Parameters and buffers of every module, by full dotted name (our names, by design)."""
    tensors = {}
    for name, m in modules.items():
        for kind in ("_parameters", "_buffers"):
            for k, v in as_dict(m.state.get(kind)).items():
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
    c_dim = number(as_dict(modules.get("mapping", root).state).get("c_dim")) or number(root.state.get("c_dim")) or 0
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
    own = as_dict(modules[sub].state.get("_init_kwargs"))
    top = as_dict(as_dict(modules[""].state.get("_init_kwargs")).get(f"{sub}_kwargs"))
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
            raise CheckpointError(f"the file has no network {key!r} (it has {preview(found)})")
    modules = _ada_modules(root)
    _ada_refuse_unsupported(root, modules)
    tensors = _ada_tensors(modules)

    blocks = block_resolutions(
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
        conv_clamp = agree(clamps, "conv_clamp")
    elif "conv_clamp" in syn_kwargs:
        conv_clamp = syn_kwargs["conv_clamp"]
    else:
        conv_clamp = _ada_default_clamp(root.class_name)
    if conv_clamp is not None and number(conv_clamp) is None:
        raise CheckpointError(f"invalid conv_clamp {conv_clamp!r}")

    structural = infer_architecture(
        blocks, lambda r: f"synthesis.b{r}.torgb" in modules, lambda r: f"synthesis.b{r}.skip" in modules
    )
    archs = [modules[f"synthesis.b{r}"].state["architecture"] for r in blocks
             if "architecture" in modules[f"synthesis.b{r}"].state]
    recorded = agree(archs, "architecture") if archs else syn_kwargs.get("architecture")
    if recorded is not None and recorded != structural:
        raise UnsupportedNetworkError(
            f"architecture {recorded!r} recorded, but the blocks are laid out as {structural!r}"
        )

    gains = [number(modules[f"mapping.fc{i}"].state.get("bias_gain")) for i in fcs]
    lr_mul = agree([g for g in gains if g is not None], "the mapping learning-rate multiplier")
    if lr_mul is None:
        lr_mul = number(map_kwargs.get("lr_multiplier")) or DEFAULT_MAPPING_LR_MUL
    for name, m in modules.items():  # our style affines always have lr_mul 1
        if name.endswith(".affine") and number(m.state.get("bias_gain")) not in (None, 1.0):
            raise UnsupportedNetworkError(f"{name} has a learning-rate multiplier other than 1")

    channels = {4: shape("synthesis.b4.const")[0]}
    channels.update({r: shape(f"synthesis.b{r}.conv1.weight")[0] for r in blocks[1:]})
    base, cmax = solve_channels(channels)
    beta = number(as_dict(modules["mapping"].state).get("w_avg_beta"))
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
        check_filter(name, tensors[name])  # constants of the architecture, not weights
    state = {n: to_tensor(v) for n, v in tensors.items() if not n.endswith(".resample_filter")}
    return Converted(cfg, state, {"source_class": root.class_name}, has_w_avg="mapping.w_avg" in tensors)
