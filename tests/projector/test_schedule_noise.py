"""The projector's small pure functions: the learning-rate and w-noise schedules, the noise regulariser and the
renormalisation of the noise maps (Karras et al. 2020, appendix D)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from projector.noise import gaussianity, noise_regularization, normalize_noise_
from projector.schedule import learning_rate, w_noise_scale

SHAPES = [(4, 4), (8, 8), (8, 8), (16, 16), (16, 16), (32, 32), (32, 32)]  # the tiny model's noise maps
LARGE = [(64, 64), (128, 128)]  # big enough that white noise's sampling error is small


def _white(n: int, seed: int = 0, shapes=SHAPES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((n, 1, *s), generator=g) for s in shapes]


def _white_floor(shapes) -> float:
    """E[regulariser] for white noise: each autocorrelation is a mean of r*r unit products, so E[square] = 1/r^2;
    two directions per level, levels r, r/2, ... 8."""
    total = 0.0
    for r, _ in shapes:
        while True:
            total += 2 / r**2
            if r <= 8:
                break
            r //= 2
    return total


def _smooth(n: int, seed: int = 0, shapes=SHAPES) -> list[torch.Tensor]:
    """White noise blurred with a 5x5 box filter (circular padding), renormalised: strongly correlated neighbours."""
    maps = []
    for m in _white(n, seed, shapes):
        k = torch.full((1, 1, 5, 5), 1 / 25)
        maps.append(F.conv2d(F.pad(m, (2, 2, 2, 2), mode="circular"), k))
    normalize_noise_(maps)
    return maps


# -------------------------------------------------------------------------------------------------- schedules


def test_learning_rate_endpoints_and_plateau():
    lr0, up, down = 0.1, 0.05, 0.25
    assert learning_rate(0.0, lr0, rampup=up, rampdown=down) == 0.0
    assert learning_rate(1.0, lr0, rampup=up, rampdown=down) == pytest.approx(0.0, abs=1e-15)
    for t in np.linspace(up, 1 - down, 23):  # the whole plateau, both ends included
        assert learning_rate(float(t), lr0, rampup=up, rampdown=down) == pytest.approx(lr0, rel=1e-12)
    # Halfway up the linear ramp is half the rate; halfway down the cosine is half the rate too.
    assert learning_rate(up / 2, lr0, rampup=up, rampdown=down) == pytest.approx(lr0 / 2)
    assert learning_rate(1 - down / 2, lr0, rampup=up, rampdown=down) == pytest.approx(lr0 / 2)
    # The defaults are the paper's.
    assert learning_rate(0.5) == pytest.approx(0.1)
    assert learning_rate(0.025) == pytest.approx(0.05)


def test_learning_rate_is_monotone_in_the_ramps():
    ts_up = np.linspace(0, 0.05, 51)
    ts_down = np.linspace(0.75, 1.0, 51)
    up = [learning_rate(float(t)) for t in ts_up]
    down = [learning_rate(float(t)) for t in ts_down]
    assert all(b > a for a, b in zip(up, up[1:])), "the ramp-up must rise strictly"
    assert all(b < a for a, b in zip(down, down[1:])), "the ramp-down must fall strictly"
    assert all(0 <= learning_rate(float(t)) <= 0.1 + 1e-12 for t in np.linspace(0, 1, 1001))


def test_learning_rate_without_ramps():
    assert learning_rate(0.0, 0.3, rampup=0, rampdown=0) == pytest.approx(0.3)
    assert learning_rate(1.0, 0.3, rampup=0, rampdown=0) == pytest.approx(0.3)
    assert learning_rate(0.0, 0.3, rampup=0, rampdown=0.25) == pytest.approx(0.3)  # starts at full rate


def test_w_noise_scale():
    w_std, factor, ramp = 7.0, 0.05, 0.75
    assert w_noise_scale(0.0, w_std, factor=factor, ramp_length=ramp) == pytest.approx(w_std * factor)
    for t in (ramp, 0.8, 0.99, 1.0):
        assert w_noise_scale(t, w_std, factor=factor, ramp_length=ramp) == 0.0
    # Quadratic decay: at half the ramp, a quarter of the initial scale.
    assert w_noise_scale(ramp / 2, w_std, factor=factor, ramp_length=ramp) == pytest.approx(w_std * factor / 4)
    values = [w_noise_scale(float(t), w_std) for t in np.linspace(0, ramp, 40)]
    assert all(b < a for a, b in zip(values, values[1:]))
    assert w_noise_scale(0.0, 2.0) == pytest.approx(0.1)  # default factor 0.05


# ------------------------------------------------------------------------------------------------------- noise


def test_noise_regularization_small_for_white_large_for_smooth():
    white, smooth = _white(16, shapes=LARGE), _smooth(16, shapes=LARGE)
    normalize_noise_(white)
    reg_white, reg_smooth = noise_regularization(white), noise_regularization(smooth)
    assert reg_white.shape == reg_smooth.shape == (16,)
    floor = _white_floor(LARGE)  # 0.0645: what pure sampling error gives
    assert reg_white.mean() < 2 * floor, (reg_white.mean(), floor)
    # Box-blurred noise: neighbour correlation ~0.8 at the top levels; squared and summed, far above the floor.
    assert (reg_smooth > 1.0).all(), reg_smooth
    assert reg_smooth.min() > 10 * reg_white.max()
    # On the tiny model's own map sizes (4x4 .. 32x32) the floor is higher, but smooth maps still stand out.
    tw, ts = _white(8), _smooth(8)
    normalize_noise_(tw)
    assert noise_regularization(tw).mean() < 2 * _white_floor(SHAPES)
    assert noise_regularization(ts).min() > 5 * noise_regularization(tw).max()
    # Exact values: a checkerboard has neighbour correlation -1 and a constant map +1, in both directions.
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    assert noise_regularization([checker[None, None]]).item() == pytest.approx(2.0)
    assert noise_regularization([torch.ones(1, 1, 8, 8)]).item() == pytest.approx(2.0)


def test_noise_regularization_uses_the_pyramid_and_is_per_sample():
    def level(n):  # the paper's two squared autocorrelations at one level
        return (n * torch.roll(n, 1, 3)).mean().square() + (n * torch.roll(n, 1, 2)).mean().square()

    m = _white(1, seed=1, shapes=[(32, 32)])[0]
    expected = level(m) + level(F.avg_pool2d(m, 2)) + level(F.avg_pool2d(m, 4))  # 32, 16, 8: stops at 8x8
    assert noise_regularization([m]).item() == pytest.approx(expected.item(), rel=1e-6)
    assert noise_regularization([m[..., :8, :8]]).item() == pytest.approx(level(m[..., :8, :8]).item(), rel=1e-6)
    # Per sample: the batch result is the stack of single results.
    maps = _white(3, seed=2)
    batch = noise_regularization(maps)
    singles = torch.cat([noise_regularization([m[i : i + 1] for m in maps]) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-12)


def test_normalize_noise_zero_mean_unit_rms_per_sample():
    g = torch.Generator().manual_seed(3)
    scales = torch.tensor([0.1, 1.0, 25.0]).reshape(3, 1, 1, 1)
    offsets = torch.tensor([-4.0, 0.0, 7.5]).reshape(3, 1, 1, 1)
    maps = [torch.randn((3, 1, *s), generator=g) * scales + offsets for s in SHAPES]
    ids = [m.data_ptr() for m in maps]
    normalize_noise_(maps)
    assert [m.data_ptr() for m in maps] == ids, "must work in place"
    for m in maps:
        mean = m.mean(dim=[1, 2, 3])
        rms = m.square().mean(dim=[1, 2, 3]).sqrt()
        torch.testing.assert_close(mean, torch.zeros(3), rtol=0, atol=1e-5)
        torch.testing.assert_close(rms, torch.ones(3), rtol=0, atol=1e-5)


def test_normalize_noise_works_on_leaves_that_require_grad():
    maps = [t.requires_grad_(True) for t in _white(2)]
    normalize_noise_(maps)  # under no_grad inside: no "leaf variable used in an in-place operation" error
    assert all(m.requires_grad and m.grad_fn is None for m in maps)


def test_gaussianity_small_for_white_noise():
    white, smooth = _white(2, shapes=LARGE), _smooth(2, shapes=LARGE)
    normalize_noise_(white)
    gw, gs = gaussianity(white), gaussianity(smooth)
    assert gw.shape == (2,)
    assert (gw < 0.25).all(), gw  # |excess kurtosis| of 4096+ Gaussian samples (~0.04) plus the ~0.06 floor
    assert (gs > gw).all()
    assert math.isfinite(float(gs.max()))
