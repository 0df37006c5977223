"""Building blocks shared by the generator and the discriminator.

FIR resampling (`upfirdn2d`), resampling convolutions, equalised-learning-rate layers and the modulated
convolution of StyleGAN2 (Karras et al. 2020, section 2.2). Plain torch: runs on CPU and GPU, no extensions.

Padding conventions follow the official implementation exactly, so that official weights give the same
images (docs/ARCHITECTURE.md, "Generator").
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activation's second moment after leaky ReLU


# --------------------------------------------------------------------------------------------------- FIR filters


def fir_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """2D low-pass filter, the outer product of `taps` with itself, normalised to sum 1. [k, k]"""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,  # [N, C, H, W]
    f: torch.Tensor,  # [k, k] filter
    *,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),  # x0, x1, y0, y1; negative values crop
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by inserting zeros, pad, convolve with the FIR filter, downsample by dropping pixels."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # A true convolution flips the filter; the filters used here are symmetric, but keep it correct.
    k = (f * gain).to(x.dtype).flip([0, 1])
    k = k[None, None].repeat(c, 1, 1, 1)  # [C, 1, k, k] depthwise
    x = F.conv2d(x, k, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H*up, W*up], low-pass filtered; preserves the mean (gain up**2)."""
    k = f.shape[-1]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up**2)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H/down, W/down], low-pass filtered."""
    k = f.shape[-1]
    p0, p1 = (k - down + 1) // 2, (k - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def conv2d_resample(
    x: torch.Tensor,  # [N, C_in*groups?, H, W]
    w: torch.Tensor,  # [O, I, kh, kw]
    f: torch.Tensor | None = None,  # FIR filter for up/downsampling
    *,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """Convolution (correlation, like torch) fused with FIR up- or downsampling by 2.

    Upsampling is a transposed convolution with stride `up` followed by the low-pass filter; downsampling is
    the filter followed by a strided convolution. The padding arithmetic is the official one.
    """
    assert not (up > 1 and down > 1), "up and down at once is not needed here"
    out_c, in_c_per_group, kh, kw = w.shape
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    assert f is not None and kh == kw
    fk = f.shape[-1]
    if down > 1:
        p0 = padding + (fk - down + 1) // 2
        p1 = padding + (fk - down) // 2
        if kw == 1:  # 1x1: filter and drop pixels first, then the (cheap) conv
            x = upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))
            return F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w, stride=down, groups=groups)
    # up > 1: transposed convolution. torch wants the weight as [I*groups, O/groups, k, k].
    p0 = padding + (fk + up - 1) // 2 - (kw - 1)
    p1 = padding + (fk - up) // 2 - (kw - up)
    pt = max(min(-p0, -p1), 0)
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_c // groups, in_c_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_c_per_group, out_c // groups, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=up, padding=pt, groups=groups)
    return upfirdn2d(x, f, padding=(p0 + pt, p1 + pt, p0 + pt, p1 + pt), gain=up**2)


# ------------------------------------------------------------------------------------------ activation and bias


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    act: str = "linear",  # 'linear' or 'lrelu'
    gain: float | None = None,  # None: the activation's default gain (sqrt 2 for lrelu, 1 for linear)
    clamp: float | None = None,  # clamp the output to [-clamp, clamp]; None: no clamping
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by the gain, clamp."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        g = LRELU_GAIN if gain is None else gain
    elif act == "linear":
        g = 1.0 if gain is None else gain
    else:
        raise ValueError(f"unknown activation {act!r}")
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ----------------------------------------------------------------------------------------- equalised-lr layers


class FullyConnected(nn.Module):
    """Dense layer with equalised learning rate: weights stored as N(0, 1/lr_mul^2), scaled at run time."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        *,
        bias: bool = True,  # learn a bias
        activation: str = "linear",  # 'linear' or 'lrelu'
        lr_mul: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        bias_init: float = 0.0,  # initial bias value (1 for the style affines)
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.lr_mul, self.bias_init = activation, lr_mul, bias_init
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.reset_parameters()

    def reset_parameters(self, gen: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen) / self.lr_mul)
            if self.bias is not None:
                self.bias.fill_(self.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in] -> [N, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.lr_mul
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, act={self.activation}, lr_mul={self.lr_mul}"


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling by 2, bias, activation, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,  # learn a per-channel bias
        activation: str = "linear",  # 'linear' or 'lrelu'
        up: int = 1,  # 2: upsample (transposed conv + FIR)
        down: int = 1,  # 2: downsample (FIR + strided conv)
        conv_clamp: float | None = None,  # clamp outputs to +-conv_clamp (times the gain); None: off
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, gen: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        act_gain = (LRELU_GAIN if self.activation == "lrelu" else 1.0) * gain
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, up={self.up}, down={self.down}, "
            f"act={self.activation}"
        )


# ------------------------------------------------------------------------------------------- modulated conv


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / ||W * s||, the per-sample, per-output-channel scale that restores unit variance. [N, O]

    weight: [O, I, k, k]; styles: [N, I].
    """
    w = weight.unsqueeze(0) * styles.reshape(styles.shape[0], 1, -1, 1, 1)  # [N, O, I, k, k]
    return (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,  # [N, I, H, W] input activations
    weight: torch.Tensor,  # [O, I, k, k] shared weight
    styles: torch.Tensor,  # [N, I] per-sample scale of each input channel
    *,
    noise: torch.Tensor | None = None,  # [N or 1, 1, H', W'] added after demodulation, before the bias
    up: int = 1,  # 2: upsample by 2 (transposed conv + FIR filter)
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused: bool = False,  # True: per-sample weights, one grouped conv. False: scale activations, one plain conv
) -> torch.Tensor:
    """StyleGAN2's modulated convolution. The two execution paths agree to about 1e-5.

    The non-fused path scales the input channels by s, runs one ordinary convolution with the shared weight and
    scales the output channels by the demodulation coefficients; for batches it is a single dense convolution,
    which is what makes batched training and projection fast.
    """
    n, in_c, h, w_ = x.shape
    out_c, in_c_w, kh, kw = weight.shape
    assert in_c == in_c_w and styles.shape == (n, in_c), (x.shape, weight.shape, styles.shape)
    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None  # [N, O]

    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    if dcoefs is not None:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, n * in_c, h, w_)
    w = w.reshape(n * out_c, in_c, kh, kw).to(x.dtype)
    x = conv2d_resample(x, w, resample_filter, up=up, padding=padding, groups=n)
    x = x.reshape(n, out_c, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
