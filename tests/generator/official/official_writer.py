"""Test writer: small files in each official layout, built from a reference sgproject Generator.

The real files cannot be downloaded here, so this module writes files structured the way the real ones are:

- `write_ada_pkl`: NVIDIA stylegan2-ada-pytorch / stylegan3 `.pkl`: a dict (G, D, G_ema, augment_pipe,
  training_set_kwargs) whose networks are `torch_utils.persistence._reconstruct_persistent_obj(meta)` calls with
  `module_src`, `class_name` and `state` (the module's `__dict__`: `_parameters`, `_buffers`, `_modules`,
  `_init_kwargs`, attributes such as `conv_clamp`). Tensors are pickled by torch itself, as in the real files:
  `_rebuild_parameter` / `_rebuild_tensor_v2` around `torch.storage._load_from_bytes(<legacy torch.save stream>)`.
- `write_tf_pkl`: NVIDIA TF StyleGAN2 `.pkl`: a `(G, D, Gs)` tuple of `dnnlib.tflib.network.Network` objects
  (NEWOBJ + BUILD with the state dict) whose variables are numpy arrays in TF layout (the inverse of the
  converter's transposes, flip and `+ 1`), numpy scalars for `noise_strength`.
- `write_rosinality_pt`: `torch.save` (zip, or the legacy stream) of rosinality's key names.

Globals under names that do not exist here (`torch_utils...`, `dnnlib...`, `numpy.core...` under numpy 2) are
written with `GlobalRef`, through a subclass of the pure-Python pickler. Nothing here reads pickles.
"""

from __future__ import annotations

import argparse
import io
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from generator.layers import Conv2dLayer, FullyConnected
from generator.networks import (
    Generator,
    MappingNetwork,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)

ADA_MODULE_SRC = "# the network's source code; NVIDIA's loader executes this, sgproject must not\n"


# ---------------------------------------------------------------------------------------- pickling helpers


class GlobalRef:
    """A global `module.name` to write into a pickle, whether or not it can be imported here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # save_reduce requires a callable; never called
        raise AssertionError("GlobalRef is only written, never called")


class Persistent:
    """A network the way `torch_utils.persistence` pickles it."""

    def __init__(self, class_name: str, state: dict, module_src: str = ADA_MODULE_SRC, version: int = 6):
        self.meta = dict(type="class", version=version, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj"), (self.meta,)


class FakeEasyDict(dict):
    """`dnnlib.util.EasyDict`: pickled as NEWOBJ then SETITEMS, like a dict subclass."""


class FakeTFNetwork:
    """`dnnlib.tflib.network.Network`: pickled as NEWOBJ then BUILD(state)."""

    def __init__(self, state: dict):
        self.state = state


class Pickler(pickle._Pickler):
    """The pure-Python pickler, able to write GlobalRefs and the numpy spelling of a chosen numpy version."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, protocol: int = 4, numpy_core: str = "numpy.core"):
        super().__init__(file, protocol=protocol)
        self.numpy_core = numpy_core

    def save_global_ref(self, obj: GlobalRef) -> None:
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_easydict(self, obj: FakeEasyDict) -> None:
        self.save(GlobalRef("dnnlib.util", "EasyDict"))
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self._batch_setitems(iter(obj.items()))

    def save_tf_network(self, obj: FakeTFNetwork) -> None:
        self.save(GlobalRef("dnnlib.tflib.network", "Network"))
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(pickle.BUILD)

    dispatch[GlobalRef] = save_global_ref
    dispatch[FakeEasyDict] = save_easydict
    dispatch[FakeTFNetwork] = save_tf_network

    def reducer_override(self, obj):
        """numpy objects as numpy < 2 (or numpy 2, by `numpy_core`) pickles them with protocols 2-4."""
        core = self.numpy_core
        if isinstance(obj, np.ndarray):
            state = (1, obj.shape, obj.dtype, not obj.flags.c_contiguous and obj.flags.f_contiguous, obj.tobytes("A"))
            return GlobalRef(f"{core}.multiarray", "_reconstruct"), (GlobalRef("numpy", "ndarray"), (0,), b"b"), state
        if isinstance(obj, np.dtype):
            order = obj.byteorder if obj.byteorder in "<>|" else ("<" if obj.itemsize > 1 else "|")
            return GlobalRef("numpy", "dtype"), (obj.str[1:], False, True), (3, order, None, None, None, -1, -1, 0)
        if isinstance(obj, np.generic):
            return GlobalRef(f"{core}.multiarray", "scalar"), (obj.dtype, obj.tobytes())
        return NotImplemented


def dumps(obj, *, protocol: int = 4, numpy_core: str = "numpy.core") -> bytes:
    buf = io.BytesIO()
    Pickler(buf, protocol=protocol, numpy_core=numpy_core).dump(obj)
    return buf.getvalue()


# --------------------------------------------------------------------------------------- reference networks


@torch.no_grad()
def randomize(G: Generator, seed: int) -> Generator:
    """Give every parameter that starts at a constant (biases, noise strengths, w_avg) a random value, so that a
    wrong mapping of any of them shows in the images."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in G.named_parameters():
        if name.endswith("noise_strength"):
            p.copy_(0.5 + torch.rand((), generator=gen))
        elif name.endswith("affine.bias"):
            p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
        elif name.endswith(".bias"):
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    G.mapping.w_avg.copy_(torch.randn(G.w_dim, generator=gen))
    return G.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ ada .pkl

_ADA_CLASSES = {  # our class -> NVIDIA's class name (module file chosen by the caller)
    Generator: "Generator", MappingNetwork: "MappingNetwork", SynthesisNetwork: "SynthesisNetwork",
    SynthesisBlock: "SynthesisBlock", SynthesisLayer: "SynthesisLayer", ToRGBLayer: "ToRGBLayer",
    FullyConnected: "FullyConnectedLayer", Conv2dLayer: "Conv2dLayer",
}


def _ada_attrs(m: torch.nn.Module, G: Generator) -> dict:
    """The attributes NVIDIA's constructors store on each module (what the converter may read)."""
    cfg = G.cfg
    if isinstance(m, Generator):
        return dict(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                    img_channels=cfg.img_channels, num_ws=cfg.num_ws)
    if isinstance(m, MappingNetwork):
        return dict(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, num_ws=cfg.num_ws, num_layers=cfg.mapping_layers,
                    w_avg_beta=cfg.w_avg_beta)
    if isinstance(m, FullyConnected):  # numpy float64, as `lr_multiplier / np.sqrt(in_features)` makes it
        return dict(activation=m.activation, weight_gain=np.float64(m.lr_mul / np.sqrt(m.in_features)),
                    bias_gain=m.lr_mul)
    if isinstance(m, SynthesisNetwork):
        return dict(w_dim=cfg.w_dim, img_resolution=cfg.resolution, img_resolution_log2=int(math.log2(cfg.resolution)),
                    img_channels=cfg.img_channels, block_resolutions=cfg.block_resolutions, num_ws=cfg.num_ws)
    if isinstance(m, SynthesisBlock):
        return dict(in_channels=m.in_channels, w_dim=cfg.w_dim, resolution=m.resolution, img_channels=cfg.img_channels,
                    is_last=m.is_last, architecture=m.architecture, use_fp16=False, channels_last=False,
                    num_conv=m.num_conv, num_torgb=m.num_torgb)
    if isinstance(m, SynthesisLayer):
        return dict(resolution=m.resolution, up=m.up, use_noise=True, activation="lrelu", conv_clamp=m.conv_clamp,
                    padding=m.padding, act_gain=math.sqrt(2), w_dim=cfg.w_dim)
    if isinstance(m, ToRGBLayer):
        return dict(conv_clamp=m.conv_clamp, weight_gain=np.float64(m.weight_gain))
    if isinstance(m, Conv2dLayer):
        return dict(activation=m.activation, up=m.up, down=m.down, conv_clamp=m.conv_clamp, padding=m.padding,
                    weight_gain=np.float64(m.weight_gain), act_gain=1.0, channels_last=False)
    raise TypeError(type(m))


def ada_record(
    G: Generator,
    *,
    module: str = "training.networks",  # 'training.networks_stylegan2' for stylegan3's StyleGAN2 config
    init_kwargs: dict | None = None,  # the Generator's _init_kwargs (default: what ada's train.py passes)
    layer_attrs: bool = True,  # False: drop conv_clamp / architecture / bias_gain from the layers' state
    module_src: str = ADA_MODULE_SRC,
    m: torch.nn.Module | None = None,
) -> Persistent:
    """The persistent-object record of G (recursively), with the state NVIDIA's modules carry."""
    m = G if m is None else m
    params = OrderedDict((k, torch.nn.Parameter(v.detach().clone(), requires_grad=False))
                         for k, v in m.named_parameters(recurse=False))
    buffers = OrderedDict((k, v.detach().clone()) for k, v in m.named_buffers(recurse=False))  # incl. filters
    children = OrderedDict(
        (k, ada_record(G, module=module, init_kwargs=init_kwargs, layer_attrs=layer_attrs, module_src=module_src, m=c))
        for k, c in m.named_children()
    )
    attrs = _ada_attrs(m, G)
    if not layer_attrs:
        for k in ("conv_clamp", "architecture", "bias_gain", "weight_gain"):
            attrs.pop(k, None)
    kwargs = FakeEasyDict()
    if m is G:
        cfg = G.cfg
        kwargs = FakeEasyDict(
            z_dim=cfg.z_dim, w_dim=cfg.w_dim,
            mapping_kwargs=FakeEasyDict(num_layers=cfg.mapping_layers),
            synthesis_kwargs=FakeEasyDict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                          num_fp16_res=0, conv_clamp=cfg.conv_clamp, architecture=cfg.architecture),
            c_dim=0, img_resolution=cfg.resolution, img_channels=cfg.img_channels,
        ) if init_kwargs is None else FakeEasyDict(init_kwargs)
    state = dict(
        training=False, _parameters=params, _buffers=buffers, _non_persistent_buffers_set=set(),
        _backward_hooks=OrderedDict(), _forward_hooks=OrderedDict(), _forward_pre_hooks=OrderedDict(),
        _state_dict_hooks=OrderedDict(), _load_state_dict_pre_hooks=OrderedDict(), _modules=children,
        _init_args=(), _init_kwargs=kwargs, **attrs,
    )
    return Persistent(f"{module}.{_ADA_CLASSES[type(m)]}", state, module_src=module_src)


def fake_discriminator(module: str = "training.networks", seed: int = 0) -> Persistent:
    """A stand-in D with a couple of tensors: real files carry D and the reader must skip it."""
    gen = torch.Generator().manual_seed(seed)
    params = OrderedDict(weight=torch.nn.Parameter(torch.randn(8, 3, 1, 1, generator=gen)))
    state = dict(training=False, _parameters=params, _buffers=OrderedDict(), _modules=OrderedDict(),
                 _init_kwargs=FakeEasyDict(c_dim=0, img_resolution=32, img_channels=3))
    return Persistent(f"{module}.Discriminator", state)


def write_ada_pkl(
    path: str | Path,
    G_ema: Generator,
    G: Generator | None = None,
    *,
    protocol: int = 4,
    numpy_core: str = "numpy.core",
    **record_kwargs,
) -> Path:
    """An NVIDIA PyTorch .pkl with G_ema (and G, when given; else G_ema again) plus a fake D."""
    module = record_kwargs.get("module", "training.networks")
    data = dict(
        G=ada_record(G if G is not None else G_ema, **record_kwargs),
        D=fake_discriminator(module),
        G_ema=ada_record(G_ema, **record_kwargs),
        augment_pipe=None,
        training_set_kwargs=FakeEasyDict(class_name="training.dataset.ImageFolderDataset", path="~/faces.zip",
                                         use_labels=False, max_size=np.int64(70000), xflip=False,
                                         resolution=G_ema.img_resolution),
    )
    path = Path(path)
    path.write_bytes(dumps(data, protocol=protocol, numpy_core=numpy_core))
    return path


# ------------------------------------------------------------------------------------------------- TF .pkl


def tf_conv(w: torch.Tensor, *, up: bool = False) -> np.ndarray:
    """Ours [O, I, kh, kw] -> TF [kh, kw, I, O]; TF's upsampling convs hold the kernel flipped."""
    w = w.flip([2, 3]) if up else w
    return w.permute(2, 3, 1, 0).contiguous().numpy()


def tf_variables(G: Generator) -> tuple[list, list, list]:
    """(mapping, synthesis, Gs-own) variables in TF names and layout."""
    f32 = lambda t: t.detach().to(torch.float32).contiguous().numpy()  # noqa: E731
    mapping = []
    for i in range(G.cfg.mapping_layers):
        fc = getattr(G.mapping, f"fc{i}")
        mapping += [(f"Dense{i}/weight", f32(fc.weight.t())), (f"Dense{i}/bias", f32(fc.bias))]
    syn: list = [("lod", np.float32(0))]
    noises = []
    k = 0
    for block in G.synthesis.blocks():
        r = block.resolution
        scope = f"{r}x{r}"
        if r == 4:
            syn.append(("4x4/Const/const", f32(block.const[None])))
        layers = [("Conv", block.conv1)] if r == 4 else [("Conv0_up", block.conv0), ("Conv1", block.conv1)]
        if block.num_torgb:
            layers.append(("ToRGB", block.torgb))
        for name, layer in layers:
            up = name == "Conv0_up"
            syn.append((f"{scope}/{name}/weight", tf_conv(layer.weight.detach(), up=up)))
            syn.append((f"{scope}/{name}/mod_weight", f32(layer.affine.weight.t())))
            syn.append((f"{scope}/{name}/mod_bias", f32(layer.affine.bias - 1)))
            if isinstance(layer, SynthesisLayer):
                syn.append((f"{scope}/{name}/noise_strength", np.float32(layer.noise_strength.item())))
                noises.append((f"noise{k}", f32(layer.noise_const[None, None])))
                k += 1
            syn.append((f"{scope}/{name}/bias", f32(layer.bias)))
        if hasattr(block, "skip"):
            syn.append((f"{scope}/Skip/weight", tf_conv(block.skip.weight.detach(), up=True)))
    own = [("dlatent_avg", f32(G.mapping.w_avg))]
    return mapping, noises + syn, own


def tf_network(G: Generator, name: str = "Gs", *, version: int = 4, extra_kwargs: dict | None = None,
               drop_dlatent_avg: bool = False) -> FakeTFNetwork:
    cfg = G.cfg
    mapping, syn, own = tf_variables(G)
    if drop_dlatent_avg:
        own = []
    kw = dict(num_channels=cfg.img_channels, resolution=cfg.resolution, label_size=0, architecture=cfg.architecture,
              fmap_base=cfg.channel_base // 2, fmap_max=cfg.channel_max, mapping_layers=cfg.mapping_layers,
              latent_size=cfg.z_dim, dlatent_size=cfg.w_dim)
    kw.update(extra_kwargs or {})
    src = "# TF network source; the TF loader executes this\n"

    def net(n, func, variables, components):
        return FakeTFNetwork(dict(version=version, name=n, static_kwargs=dict(kw), components=components,
                                  build_module_src=src, build_func_name=func, variables=variables))

    comps = dict(synthesis=net("G_synthesis", "training.networks_stylegan2.G_synthesis_stylegan2", syn, {}),
                 mapping=net("G_mapping", "training.networks_stylegan2.G_mapping", mapping, {}))
    return net(name, "training.networks_stylegan2.G_main", own, comps)


def write_tf_pkl(path: str | Path, Gs: Generator, G: Generator | None = None, *, protocol: int = 3,
                 numpy_core: str = "numpy.core", **net_kwargs) -> Path:
    """An NVIDIA TF StyleGAN2 .pkl: (G, D, Gs)."""
    D = FakeTFNetwork(dict(version=4, name="D", static_kwargs={}, components={}, build_module_src="",
                           build_func_name="training.networks_stylegan2.D_stylegan2",
                           variables=[("Output/weight", np.ones((4, 1), np.float32))]))
    data = (tf_network(G if G is not None else Gs, "G", **net_kwargs), D, tf_network(Gs, "Gs", **net_kwargs))
    path = Path(path)
    path.write_bytes(dumps(data, protocol=protocol, numpy_core=numpy_core))
    return path


# --------------------------------------------------------------------------------------------- rosinality .pt


def rosinality_state_dict(G: Generator) -> OrderedDict:
    """G in rosinality/stylegan2-pytorch's names and shapes."""
    t = lambda x: x.detach().clone()  # noqa: E731
    fir4 = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    fir4 = fir4 / fir4.sum() * 4  # rosinality folds the upsampling gain into its kernels
    sd: OrderedDict = OrderedDict()
    for i in range(G.cfg.mapping_layers):
        fc = getattr(G.mapping, f"fc{i}")
        sd[f"style.{i + 1}.weight"], sd[f"style.{i + 1}.bias"] = t(fc.weight), t(fc.bias)
    blocks = G.synthesis.blocks()
    sd["input.input"] = t(blocks[0].const[None])

    def conv(prefix, layer, up=False):
        sd[f"{prefix}.conv.weight"] = t(layer.weight[None])
        sd[f"{prefix}.conv.modulation.weight"] = t(layer.affine.weight)
        sd[f"{prefix}.conv.modulation.bias"] = t(layer.affine.bias)
        if up:
            sd[f"{prefix}.conv.blur.kernel"] = fir4.clone()
        sd[f"{prefix}.noise.weight"] = t(layer.noise_strength.reshape(1))
        sd[f"{prefix}.activate.bias"] = t(layer.bias)

    def torgb(prefix, layer, up):
        if up:
            sd[f"{prefix}.upsample.kernel"] = fir4.clone()
        sd[f"{prefix}.bias"] = t(layer.bias.reshape(1, -1, 1, 1))
        sd[f"{prefix}.conv.weight"] = t(layer.weight[None])
        sd[f"{prefix}.conv.modulation.weight"] = t(layer.affine.weight)
        sd[f"{prefix}.conv.modulation.bias"] = t(layer.affine.bias)

    conv("conv1", blocks[0].conv1)
    torgb("to_rgb1", blocks[0].torgb, up=False)
    for k, block in enumerate(blocks[1:]):
        conv(f"convs.{2 * k}", block.conv0, up=True)
        conv(f"convs.{2 * k + 1}", block.conv1)
    for k, block in enumerate(blocks[1:]):
        torgb(f"to_rgbs.{k}", block.torgb, up=True)
    for i, layer in enumerate(G.synthesis.noise_layers()):
        sd[f"noises.noise_{i}"] = t(layer.noise_const[None, None])
    return sd


def write_rosinality_pt(path: str | Path, g_ema: Generator, g: Generator | None = None, *, latent_avg: bool = True,
                        legacy: bool = False, args: bool = True) -> Path:
    """A rosinality training checkpoint (g, d, g_ema, args) or converted file (g_ema, latent_avg)."""
    ckpt: dict = {"g_ema": rosinality_state_dict(g_ema)}
    if g is not None:
        ckpt["g"] = rosinality_state_dict(g)
        ckpt["d"] = OrderedDict(weight=torch.ones(2, 2))
    if latent_avg:
        ckpt["latent_avg"] = g_ema.mapping.w_avg.detach().clone()
    if args:
        ckpt["args"] = argparse.Namespace(size=g_ema.img_resolution, latent=g_ema.w_dim, n_mlp=g_ema.cfg.mapping_layers)
    path = Path(path)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path
