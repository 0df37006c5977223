"""The StyleGAN2 generator: mapping network, modulated synthesis network with noise inputs, and `Generator`.

One class per level (FullyConnected -> MappingNetwork; SynthesisLayer/ToRGBLayer -> SynthesisBlock ->
SynthesisNetwork -> Generator). Parameter names follow the official layout (`mapping.fc0.weight`,
`synthesis.b8.conv0.affine.bias`, ...) so that official weights map onto them one to one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from generator.layers import (
    Conv2dLayer,
    FullyConnected,
    LRELU_GAIN,
    bias_act,
    fir_filter,
    modulated_conv2d,
    upsample2d,
)

NOISE_MODES = ("const", "random", "none")
ARCHITECTURES = ("skip", "orig", "resnet")


@dataclass
class GeneratorConfig:
    z_dim: int = 512  # input latent size
    w_dim: int = 512  # intermediate latent (W) size
    mapping_layers: int = 8  # fully connected layers in the mapping network
    mapping_lr_mul: float = 0.01  # learning-rate multiplier of the mapping network
    resolution: int = 1024  # output size in pixels (a power of 2, >= 4)
    img_channels: int = 3  # 3 for RGB
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512  # upper bound on channels
    conv_clamp: float | None = None  # clamp conv outputs to +-conv_clamp; None: off (official ada: None or 256)
    architecture: str = "skip"  # 'skip' (StyleGAN2 default), 'orig' or 'resnet'
    w_avg_beta: float = 0.995  # EMA decay of the tracked average w during training

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if self.resolution < 4 or log2 != int(log2):
            raise ValueError(f"resolution must be a power of 2 >= 4, got {self.resolution}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """How many w vectors synthesis consumes: two per block except the first (one), plus the last toRGB."""
        return 2 * int(math.log2(self.resolution)) - 2

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generator config fields: {sorted(unknown)}")
        return cls(**d)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square (z is normalised before mapping)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """The truncation trick: pull the first `cutoff` ws (all when None) towards w_avg. ws: [N, num_ws, w_dim]"""
    if psi == 1:
        return ws
    cutoff = ws.shape[1] if cutoff is None else cutoff
    ws = ws.clone()
    ws[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return ws


def mix_styles(ws_a: torch.Tensor, ws_b: torch.Tensor, crossover: int | torch.Tensor) -> torch.Tensor:
    """Style mixing: layers [0, crossover) from ws_a, layers [crossover, num_ws) from ws_b. [N, num_ws, w_dim]

    `crossover` may be an int or a [N] tensor (one crossover per sample, as in mixing regularisation).
    """
    assert ws_a.shape == ws_b.shape
    layer = torch.arange(ws_a.shape[1], device=ws_a.device)
    if isinstance(crossover, int):
        take_b = layer >= crossover  # [num_ws]
        return torch.where(take_b[None, :, None], ws_b, ws_a)
    take_b = layer[None, :] >= crossover.to(ws_a.device)[:, None]  # [N, num_ws]
    return torch.where(take_b[:, :, None], ws_b, ws_a)


# ------------------------------------------------------------------------------------------------------ mapping


class MappingNetwork(nn.Module):
    """z -> w: normalise z, `num_layers` dense layers with leaky ReLU, broadcast to num_ws, optional truncation."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = cfg.z_dim, cfg.w_dim, cfg.num_ws
        self.num_layers, self.w_avg_beta = cfg.mapping_layers, cfg.w_avg_beta
        features = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            layer = FullyConnected(features[i], features[i + 1], activation="lrelu", lr_mul=cfg.mapping_lr_mul)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim]
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        *,
        update_w_avg: bool = False,  # training only: track the EMA of w
    ) -> torch.Tensor:  # [N, num_ws, w_dim]
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {list(z.shape)}"
        x = normalize_2nd_moment(z.to(torch.float32))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        return truncate(ws, self.w_avg, truncation_psi, truncation_cutoff)


# ---------------------------------------------------------------------------------------------------- synthesis


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling), noise injection, bias, leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,  # output resolution (size of the noise map)
        *,
        up: int = 1,  # 2 for the first conv of every block from 8x8 on
        conv_clamp: float | None = None,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.conv_clamp, self.padding = conv_clamp, kernel_size // 2
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.empty(resolution, resolution))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, gen: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            self.noise_const.copy_(torch.randn(self.noise_const.shape, generator=gen))
            self.bias.zero_()
            self.noise_strength.zero_()

    def forward(
        self,
        x: torch.Tensor,  # [N, in_channels, r/up, r/up]
        w: torch.Tensor,  # [N, w_dim]
        *,
        noise_mode: str = "const",
        noise: torch.Tensor | None = None,  # [N or 1, 1, r, r]: overrides noise_mode when given
        fused: bool = False,
        gain: float = 1.0,
        gen: torch.Generator | None = None,  # for noise_mode='random'
    ) -> torch.Tensor:  # [N, out_channels, r, r]
        styles = self.affine(w)  # [N, I]
        if noise is None:
            if noise_mode == "random":
                shape = (x.shape[0], 1, self.resolution, self.resolution)
                noise = torch.randn(shape, device=x.device, generator=gen)
            elif noise_mode == "const":
                noise = self.noise_const[None, None]
        else:
            assert noise.shape[-2:] == (self.resolution, self.resolution), (noise.shape, self.resolution)
        if noise is not None:
            noise = noise * self.noise_strength
        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, fused=fused,
        )
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act="lrelu", gain=LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, without demodulation; style scaled by 1/sqrt(fan_in)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.reset_parameters()

    def reset_parameters(self, gen: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            self.bias.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, fused: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const input | conv0 with upsampling) -> conv1 -> toRGB, plus the skip/residual path."""

    def __init__(self, cfg: GeneratorConfig, resolution: int):
        super().__init__()
        self.resolution, self.architecture = resolution, cfg.architecture
        in_channels = 0 if resolution == 4 else cfg.channels(resolution // 2)
        out_channels = cfg.channels(resolution)
        self.is_last = resolution == cfg.resolution
        self.in_channels = in_channels
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        if in_channels == 0:
            self.const = nn.Parameter(torch.empty(out_channels, 4, 4))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, cfg.w_dim, resolution, up=2, conv_clamp=cfg.conv_clamp
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, cfg.w_dim, resolution, conv_clamp=cfg.conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1 if (self.is_last or cfg.architecture == "skip") else 0
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_channels, cfg.img_channels, cfg.w_dim, conv_clamp=cfg.conv_clamp)
        if in_channels != 0 and cfg.architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, up=2)
        self.reset_parameters()

    def reset_parameters(self, gen: torch.Generator | None = None) -> None:
        if hasattr(self, "const"):
            with torch.no_grad():
                self.const.copy_(torch.randn(self.const.shape, generator=gen))

    @property
    def noise_layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(
        self,
        x: torch.Tensor | None,  # [N, in_channels, r/2, r/2] or None for the first block
        img: torch.Tensor | None,  # [N, img_channels, r/2, r/2] or None
        ws: torch.Tensor,  # [N, num_conv + num_torgb, w_dim]
        *,
        noise_mode: str,
        noise: Sequence[torch.Tensor | None],  # one entry per conv layer of this block
        fused: bool,
        gen: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        kw = dict(noise_mode=noise_mode, fused=fused, gen=gen)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise=noise[0], **kw)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], noise=noise[0], **kw)
            x = self.conv1(x, ws[:, 1], noise=noise[1], gain=math.sqrt(0.5), **kw)
            x = y + x
        else:
            x = self.conv0(x, ws[:, 0], noise=noise[0], **kw)
            x = self.conv1(x, ws[:, 1], noise=noise[1], **kw)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, ws[:, self.num_conv], fused=fused).to(torch.float32)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, R, R], roughly in [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.w_dim, self.num_ws, self.resolution = cfg.w_dim, cfg.num_ws, cfg.resolution
        self.block_resolutions = cfg.block_resolutions
        for res in self.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(cfg, res))

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        """Every layer that takes a noise map, in the order `noise=` lists them (b4.conv1, b8.conv0, ...)."""
        return [layer for block in self.blocks() for layer in block.noise_layers]

    def noise_shapes(self) -> list[tuple[int, int]]:
        return [(layer.resolution, layer.resolution) for layer in self.noise_layers()]

    def forward(
        self,
        ws: torch.Tensor,  # [N, num_ws, w_dim]
        noise_mode: str = "const",  # 'const' (stored maps), 'random' (fresh each call) or 'none'
        *,
        noise: Sequence[torch.Tensor] | None = None,  # explicit maps [N or 1, 1, r, r], one per noise layer
        fused: bool = False,  # per-sample weights and grouped convs instead of one dense conv per layer
        gen: torch.Generator | None = None,  # randomness for noise_mode='random'
    ) -> torch.Tensor:  # [N, img_channels, R, R]
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), (
            f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
        )
        n_noise = len(self.noise_layers())
        if noise is not None and len(noise) != n_noise:
            raise ValueError(f"expected {n_noise} noise maps, got {len(noise)}")
        noise_iter = iter(noise if noise is not None else [None] * n_noise)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            block_noise = [next(noise_iter) for _ in range(block.num_conv)]
            x, img = block(x, img, block_ws, noise_mode=noise_mode, noise=block_noise, fused=fused, gen=gen)
            w_idx += block.num_conv
        return img


# ---------------------------------------------------------------------------------------------------- generator


class Generator(nn.Module):
    """z -> image. `G(z, truncation_psi, truncation_cutoff, noise_mode)`; `G.mapping` and `G.synthesis` apart."""

    def __init__(self, cfg: GeneratorConfig, *, seed: int | None = 0):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.w_dim, self.img_resolution = cfg.z_dim, cfg.w_dim, cfg.resolution
        self.img_channels, self.num_ws = cfg.img_channels, cfg.num_ws
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)
        if seed is not None:
            init_parameters(self, torch.Generator().manual_seed(seed))

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim]
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        *,
        fused: bool = False,
        gen: torch.Generator | None = None,
    ) -> torch.Tensor:  # [N, C, R, R]
        ws = self.mapping(z, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode, fused=fused, gen=gen)

    @property
    def device(self) -> torch.device:
        return self.mapping.w_avg.device

    def z_from_seed(self, seed: int) -> torch.Tensor:
        """The z for a seed, as the official tools draw it (numpy RandomState). [1, z_dim] on G's device."""
        z = np.random.RandomState(seed).randn(1, self.z_dim)
        return torch.from_numpy(z).to(device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def estimate_w_stats(self, n: int = 10_000, *, seed: int = 123, batch: int = 1000) -> tuple[torch.Tensor, float]:
        """Mean of n mapped w (untruncated) and the RMS distance of those w to it. ([w_dim], scalar)"""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        ws = []
        for i in range(0, n, batch):
            z = torch.randn(min(batch, n - i), self.z_dim, generator=gen).to(self.device)
            ws.append(self.mapping(z)[:, 0])
        w = torch.cat(ws)  # [n, w_dim]
        w_mean = w.mean(0)
        w_std = float(((w - w_mean).square().sum(dim=1).mean()) ** 0.5)
        return w_mean, w_std


def init_parameters(module: nn.Module, gen: torch.Generator) -> None:
    """(Re)initialise every layer from one seeded generator, in a fixed order: the same seed, the same weights."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters(gen)
