"""The StyleGAN2 residual discriminator with a minibatch standard-deviation layer."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from generator.layers import Conv2dLayer, FullyConnected
from generator.networks import GeneratorConfig, init_parameters


@dataclass
class DiscriminatorConfig:
    resolution: int = 1024  # input size in pixels (a power of 2)
    img_channels: int = 3
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    mbstd_group: int = 4  # minibatch-stddev group size (the largest divisor of the batch up to this is used)
    mbstd_channels: int = 1  # features computed by the minibatch-stddev layer
    conv_clamp: float | None = None  # clamp conv outputs; None: off

    @classmethod
    def like(cls, g: GeneratorConfig, **overrides) -> "DiscriminatorConfig":
        """The usual pairing: the same resolution and channel schedule as the generator."""
        d = dict(
            resolution=g.resolution, img_channels=g.img_channels, channel_base=g.channel_base,
            channel_max=g.channel_max, conv_clamp=g.conv_clamp,
        )
        d.update(overrides)
        return cls(**d)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class DiscriminatorBlock(nn.Module):
    """Residual block at one resolution: (fromRGB on the first) conv0 -> conv1 (down 2), plus a 1x1 skip."""

    def __init__(self, cfg: DiscriminatorConfig, resolution: int, first: bool):
        super().__init__()
        tmp, out = cfg.channels(resolution), cfg.channels(resolution // 2)
        self.first = first
        if first:
            self.fromrgb = Conv2dLayer(cfg.img_channels, tmp, 1, activation="lrelu", conv_clamp=cfg.conv_clamp)
        self.conv0 = Conv2dLayer(tmp, tmp, 3, activation="lrelu", conv_clamp=cfg.conv_clamp)
        self.conv1 = Conv2dLayer(tmp, out, 3, activation="lrelu", down=2, conv_clamp=cfg.conv_clamp)
        self.skip = Conv2dLayer(tmp, out, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, r, r] -> [N, C', r/2, r/2]
        if self.first:
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the standard deviation of features across groups of samples as extra channels. [N, C+F, H, W]

    It lets the discriminator see the variety within a batch, which discourages mode collapse.
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)  # a group size that divides the batch
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w)  # [G, M, F, c, H, W]
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance over the group
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [M, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """image [N, C, R, R] -> realness logit [N, 1]."""

    def __init__(self, cfg: DiscriminatorConfig, *, seed: int | None = 0):
        super().__init__()
        self.cfg = cfg
        resolutions = [2**i for i in range(int(math.log2(cfg.resolution)), 2, -1)]  # R, R/2, ..., 8
        for i, res in enumerate(resolutions):
            setattr(self, f"b{res}", DiscriminatorBlock(cfg, res, first=(i == 0)))
        self.block_resolutions = resolutions
        c4 = cfg.channels(4)
        self.conv = Conv2dLayer(c4 + cfg.mbstd_channels, c4, 3, activation="lrelu", conv_clamp=cfg.conv_clamp)
        self.fc = FullyConnected(c4 * 4 * 4, c4, activation="lrelu")
        self.out = FullyConnected(c4, 1)
        if seed is not None:
            init_parameters(self, torch.Generator().manual_seed(seed))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        assert img.shape[1:] == (self.cfg.img_channels, r, r), f"expected [N, {self.cfg.img_channels}, {r}, {r}]"
        x = img
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        x = minibatch_stddev(x, self.cfg.mbstd_group, self.cfg.mbstd_channels)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)
