"""generator/layers.py: FIR resampling, resampling convolutions, equalised-lr layers, modulated convolution.

References are computed a different way from the library (explicit zero insertion and full convolutions,
pooling, nearest-neighbour interpolation), in float64 where exactness is the point.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from generator.layers import (
    Conv2dLayer,
    FullyConnected,
    bias_act,
    conv2d_resample,
    demodulation_coefficients,
    downsample2d,
    fir_filter,
    modulated_conv2d,
    upfirdn2d,
    upsample2d,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _zero_insert(x: torch.Tensor, up: int = 2) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, up*(H-1)+1, up*(W-1)+1] with x on the even grid and zeros between."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, up * (h - 1) + 1, up * (w - 1) + 1)
    out[:, :, ::up, ::up] = x
    return out


def _full_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Full (zero-padded, 'convolution' not correlation) 2D convolution of every channel with k [O, I, kh, kw]."""
    return F.conv2d(x, k.flip([2, 3]), padding=(k.shape[2] - 1, k.shape[3] - 1))


def _full_fir(x: torch.Tensor, f: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Full depthwise convolution with the 2D filter f [k, k] times gain."""
    c = x.shape[1]
    k = (f * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k.flip([2, 3]), padding=f.shape[0] - 1, groups=c)


def _crop_centre(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dy, dx = x.shape[2] - h, x.shape[3] - w
    assert dy % 2 == 0 and dx % 2 == 0, "a centred crop must remove the same amount on both sides"
    return x[:, :, dy // 2 : dy // 2 + h, dx // 2 : dx // 2 + w]


# ------------------------------------------------------------------------------------------------- FIR filters


def test_fir_filter_is_normalised_outer_product():
    f = fir_filter()
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert f.sum().item() == pytest.approx(1.0)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    torch.testing.assert_close(f, torch.outer(taps, taps))


@pytest.mark.parametrize("h,w", [(8, 8), (5, 7)])
def test_upsample2d_size_and_constant_interior(h, w):
    x = torch.full((2, 3, h, w), 0.7)
    y = upsample2d(x, fir_filter())
    assert y.shape == (2, 3, 2 * h, 2 * w)
    # The border sees zero padding; away from it the mean is preserved (gain up**2 undoes the zero insertion).
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], 0.7))


@pytest.mark.parametrize("h,w", [(8, 8), (16, 12)])
def test_downsample2d_size_and_constant_interior(h, w):
    x = torch.full((2, 3, h, w), -1.3)
    y = downsample2d(x, fir_filter())
    assert y.shape == (2, 3, h // 2, w // 2)
    torch.testing.assert_close(y[:, :, 1:-1, 1:-1], torch.full_like(y[:, :, 1:-1, 1:-1], -1.3))


@pytest.mark.parametrize(
    "up,down,pad,gain",
    [(1, 1, (1, 2, 1, 2), 1.0), (1, 1, (0, 0, 0, 0), 3.0), (2, 1, (2, 1, 2, 1), 4.0), (1, 2, (1, 1, 1, 1), 1.0),
     (2, 2, (2, 1, 2, 1), 4.0)],
)
def test_upfirdn2d_size_and_gain(up, down, pad, gain):
    h, w, k = 10, 12, 4
    x = torch.full((1, 2, h, w), 2.0)
    y = upfirdn2d(x, fir_filter(), up=up, down=down, padding=pad, gain=gain)
    px0, px1, py0, py1 = pad
    eh = (h * up + py0 + py1 - k) // down + 1
    ew = (w * up + px0 + px1 - k) // down + 1
    assert y.shape == (1, 2, eh, ew)
    # A constant image times the filter's DC gain (gain / up**2 after zero insertion), away from the border.
    inner = y[:, :, 2:-2, 2:-2]
    torch.testing.assert_close(inner, torch.full_like(inner, 2.0 * gain / up**2))


def test_upfirdn2d_negative_padding_crops():
    x = torch.randn(1, 1, 9, 9, generator=_gen(0))
    delta = torch.zeros(1, 1)
    delta[0, 0] = 1.0  # 1x1 identity filter
    y = upfirdn2d(x, delta, padding=(-1, -2, -3, 0))
    torch.testing.assert_close(y, x[:, :, 3:, 1:-2])


def test_upfirdn2d_is_a_true_convolution():
    """An asymmetric filter must be applied flipped (convolution), as the official upfirdn2d does."""
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1.0  # impulse: the output is the filter itself
    f = torch.arange(1.0, 10.0).reshape(3, 3)
    y = upfirdn2d(x, f, padding=(1, 1, 1, 1))
    torch.testing.assert_close(y[0, 0, 2:5, 2:5], f)


def test_upsample2d_matches_zero_insertion_reference():
    x = torch.randn(2, 3, 5, 6, generator=_gen(1), dtype=torch.float64)
    f = fir_filter().double()
    ref = _crop_centre(_full_fir(_zero_insert(x), f, gain=4.0), 10, 12)
    torch.testing.assert_close(upsample2d(x, f), ref, rtol=0, atol=1e-12)


def test_box_filter_resampling_is_pooling_and_nearest():
    """With the 2-tap box filter, downsampling is 2x2 average pooling and upsampling is nearest neighbour."""
    box = fir_filter((1, 1))
    x = torch.randn(2, 3, 8, 6, generator=_gen(2))
    torch.testing.assert_close(downsample2d(x, box), F.avg_pool2d(x, 2))
    torch.testing.assert_close(upsample2d(x, box), F.interpolate(x, scale_factor=2, mode="nearest"))


def test_downsample2d_matches_full_convolution_reference():
    x = torch.randn(2, 3, 8, 10, generator=_gen(3), dtype=torch.float64)
    f = fir_filter().double()
    full = _full_fir(x, f)  # [.., H+3, W+3]; full[m] is centred on x[m - 1.5]
    ref = full[:, :, 2::2, 2::2][:, :, :4, :5]  # centred between pixels 2i and 2i+1
    torch.testing.assert_close(downsample2d(x, f), ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------- resampling convs


@pytest.mark.parametrize("k,padding", [(3, 1), (1, 0)])
def test_conv2d_resample_up2_matches_reference(k, padding):
    """Transposed conv + FIR == zero insertion, full convolution with the kernel and then the filter, centred crop.

    (Full convolution of the zero-inserted input with w is what a stride-2 transposed convolution computes; the
    FIR filter at gain 4 then interpolates. The library's padding arithmetic must land on the centred window.)
    """
    x = torch.randn(2, 3, 6, 7, generator=_gen(4), dtype=torch.float64)
    w = torch.randn(4, 3, k, k, generator=_gen(5), dtype=torch.float64)
    f = fir_filter().double()
    y = conv2d_resample(x, w, f, up=2, padding=padding)
    assert y.shape == (2, 4, 12, 14)
    ref = _crop_centre(_full_fir(_full_conv(_zero_insert(x), w), f, gain=4.0), 12, 14)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5)
    # float32 too, the dtype the network runs in
    y32 = conv2d_resample(x.float(), w.float(), f.float(), up=2, padding=padding)
    torch.testing.assert_close(y32, ref.float(), rtol=0, atol=1e-5)


def test_conv2d_resample_up2_grouped_equals_per_group():
    x = torch.randn(1, 6, 5, 5, generator=_gen(6))
    w = torch.randn(8, 3, 3, 3, generator=_gen(7))  # 2 groups: 3 in, 4 out each
    f = fir_filter()
    y = conv2d_resample(x, w, f, up=2, padding=1, groups=2)
    parts = [conv2d_resample(x[:, 3 * g : 3 * g + 3], w[4 * g : 4 * g + 4], f, up=2, padding=1) for g in range(2)]
    torch.testing.assert_close(y, torch.cat(parts, dim=1), rtol=0, atol=1e-5)


def test_conv2d_resample_plain_is_correlation():
    x = torch.randn(2, 3, 6, 6, generator=_gen(8))
    w = torch.randn(5, 3, 3, 3, generator=_gen(9))
    torch.testing.assert_close(conv2d_resample(x, w, padding=1), F.conv2d(x, w, padding=1))


@pytest.mark.parametrize("k,padding", [(3, 1), (1, 0)])
def test_conv2d_resample_down2_size_and_constant(k, padding):
    x = torch.ones(1, 2, 16, 16)
    w = torch.full((3, 2, k, k), 1.0 / (2 * k * k))  # averages: a constant input stays constant
    y = conv2d_resample(x, w, fir_filter(), down=2, padding=padding)
    assert y.shape == (1, 3, 8, 8)
    torch.testing.assert_close(y[:, :, 1:-1, 1:-1], torch.ones_like(y[:, :, 1:-1, 1:-1]))


# --------------------------------------------------------------------------------------------- bias and acts


def test_bias_act_lrelu_gain_and_clamp():
    x = torch.tensor([[-2.0, 1.0], [3.0, -0.5]]).reshape(2, 2, 1, 1)
    b = torch.tensor([1.0, -1.0])
    y = bias_act(x, b, act="lrelu")
    pre = x + b.reshape(1, 2, 1, 1)
    torch.testing.assert_close(y, F.leaky_relu(pre, 0.2) * math.sqrt(2))
    torch.testing.assert_close(bias_act(x, b, act="lrelu", clamp=1.0), y.clamp(-1, 1))
    torch.testing.assert_close(bias_act(x, None), x)
    with pytest.raises(ValueError):
        bias_act(x, act="tanh")


def test_fully_connected_equalised_lr():
    torch.manual_seed(0)
    fc = FullyConnected(256, 128, lr_mul=0.01, bias_init=1.0)
    assert fc.weight.std().item() == pytest.approx(100.0, rel=0.05)  # stored as randn / lr_mul
    x = torch.randn(4, 256, generator=_gen(10))
    ref = x @ (fc.weight * 0.01 / 16).t() + fc.bias * 0.01
    torch.testing.assert_close(fc(x), ref)
    torch.testing.assert_close(fc.bias, torch.ones(128))


def test_conv2d_layer_shapes():
    x = torch.randn(2, 4, 8, 8, generator=_gen(11))
    assert Conv2dLayer(4, 6, 3)(x).shape == (2, 6, 8, 8)
    assert Conv2dLayer(4, 6, 3, down=2, activation="lrelu")(x).shape == (2, 6, 4, 4)
    assert Conv2dLayer(4, 6, 1, up=2, bias=False)(x).shape == (2, 6, 16, 16)


# ------------------------------------------------------------------------------------------------ modulated conv


def test_demodulation_coefficients_formula():
    w = torch.randn(5, 3, 3, 3, generator=_gen(12))
    s = torch.rand(2, 3, generator=_gen(13)) + 0.5
    d = demodulation_coefficients(w, s)
    assert d.shape == (2, 5)
    for n in range(2):
        for o in range(5):
            ref = 1 / math.sqrt(float((w[o] * s[n][:, None, None]).square().sum()) + 1e-8)
            assert d[n, o].item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_demodulated_conv_keeps_unit_variance(fused):
    """For i.i.d. unit-variance inputs, out = sum_{i,k} W''_{oik} x_{ik} has variance sum W''^2 = 1 exactly:
    demodulation divides by that norm. So whatever the weights and styles, the output std is ~1."""
    g = _gen(14)
    n, i, o, hw = 4, 64, 48, 24
    x = torch.randn(n, i, hw, hw, generator=g)
    w = torch.randn(o, i, 3, 3, generator=g) * 5.0  # any scale: demodulation cancels it
    s = torch.randn(n, i, generator=g) * 3.0 + 1.0  # styles of mixed sign and size
    y = modulated_conv2d(x, w, s, padding=0, fused=fused)  # no padding: every output sees 9*I inputs
    assert y.shape == (n, o, hw - 2, hw - 2)
    assert y.std().item() == pytest.approx(1.0, rel=0.10)
    # every (sample, channel) individually, which is what the demodulation guarantees
    per = y.std(dim=[2, 3])
    assert per.min().item() > 0.8 and per.max().item() < 1.2
    # without demodulation the same weights blow the variance up, so the test above has teeth
    assert modulated_conv2d(x, w, s, padding=0, demodulate=False, fused=fused).std().item() > 10


@pytest.mark.parametrize("up,demodulate,k", [(1, True, 3), (2, True, 3), (1, False, 1), (2, False, 3)])
def test_fused_and_non_fused_agree(up, demodulate, k):
    g = _gen(15)
    n, i, o = 3, 8, 6
    x = torch.randn(n, i, 8, 8, generator=g)
    w = torch.randn(o, i, k, k, generator=g)
    s = torch.randn(n, i, generator=g) + 1.0
    noise = torch.randn(n, 1, 8 * up, 8 * up, generator=g) * 0.1
    kw = dict(up=up, padding=k // 2, resample_filter=fir_filter(), demodulate=demodulate, noise=noise)
    a = modulated_conv2d(x, w, s, fused=False, **kw)
    b = modulated_conv2d(x, w, s, fused=True, **kw)
    assert a.shape == b.shape == (n, o, 8 * up, 8 * up)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_modulated_conv_equals_explicit_per_sample_conv():
    """Each sample is an ordinary conv with its own weight W * s, demodulated per output channel."""
    g = _gen(16)
    x = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64)
    s = torch.randn(2, 4, generator=g, dtype=torch.float64)
    y = modulated_conv2d(x, w, s, padding=1)
    for n in range(2):
        wn = w * s[n][None, :, None, None]
        wn = wn / wn.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        torch.testing.assert_close(y[n : n + 1], F.conv2d(x[n : n + 1], wn, padding=1))


def test_modulated_conv_rejects_mismatched_styles():
    with pytest.raises(AssertionError):
        modulated_conv2d(torch.zeros(2, 4, 4, 4), torch.zeros(3, 4, 3, 3), torch.ones(2, 5))
