"""The residual discriminator and its minibatch standard-deviation layer, on the tiny (32 px) configuration."""

import pytest
import torch

from generator.registry import tiny_config
from generator.training.discriminator import Discriminator, DiscriminatorConfig, minibatch_stddev
from tests.generator.helpers import one_torch_thread


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, oversubscribed OpenMP threads make small ops many times slower."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def D():
    return Discriminator(DiscriminatorConfig.like(tiny_config()), seed=1)


def _images(n, seed=0, res=32):
    return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


def test_config_like_the_generator():
    g = tiny_config()
    cfg = DiscriminatorConfig.like(g, mbstd_group=2)
    assert (cfg.resolution, cfg.channel_base, cfg.channel_max, cfg.img_channels) == (32, 1024, 32, 3)
    assert cfg.mbstd_group == 2
    assert cfg.channels(32) == 32 and cfg.channels(4) == 32


@pytest.mark.parametrize("n", [1, 3, 6, 8])
def test_output_is_one_logit_per_image(D, n):
    with torch.no_grad():
        out = D(_images(n))
    assert out.shape == (n, 1)
    assert torch.isfinite(out).all()


def test_wrong_input_size_is_refused(D):
    with pytest.raises(AssertionError):
        D(_images(2, res=16))


def test_seeded_initialisation():
    cfg = DiscriminatorConfig.like(tiny_config())
    a, b, c = Discriminator(cfg, seed=3), Discriminator(cfg, seed=3), Discriminator(cfg, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_gradients_reach_every_parameter(D):
    D.zero_grad(set_to_none=True)
    D(_images(4)).square().sum().backward()
    for name, p in D.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    D.zero_grad(set_to_none=True)


def test_minibatch_stddev_couples_the_samples_of_a_group(D):
    """Through the stddev layer, the logit of one image depends on the other images of its group."""
    x = _images(4).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x)[0, 0], x)
    assert grad[0].abs().sum() > 0
    assert grad[1:].abs().sum() > 0  # group of 4: samples 0..3 are one group


# ----------------------------------------------------------------------------------------- minibatch stddev


def _reference_stddev(x: torch.Tensor, group: int, num_channels: int) -> torch.Tensor:
    """The layer written out sample by sample: group g = the largest divisor of N up to `group`; sample n is in
    the group {m : m = n mod N/g}; its feature f is the mean over channels of chunk f and pixels of the population
    standard deviation over the group (+1e-8 inside the root)."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    m = n // g
    feats = torch.empty(n, num_channels, h, w, dtype=x.dtype)
    for i in range(n):
        members = x[[i % m + k * m for k in range(g)]]  # [g, C, H, W]
        var = members.var(dim=0, unbiased=False)  # [C, H, W]
        std = (var + 1e-8).sqrt()
        for f, chunk in enumerate(std.chunk(num_channels, dim=0)):
            feats[i, f] = chunk.mean()
    return torch.cat([x, feats], dim=1)


@pytest.mark.parametrize(
    "n, group, num_channels",
    [(8, 4, 1), (6, 4, 1), (5, 4, 1), (1, 4, 1), (4, 4, 2), (12, 4, 2), (6, 2, 1), (3, 8, 1)],
)
def test_minibatch_stddev_matches_direct_computation(n, group, num_channels):
    x = torch.randn(n, 6, 4, 4, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    y = minibatch_stddev(x, group, num_channels)
    assert y.shape == (n, 6 + num_channels, 4, 4)
    assert torch.equal(y[:, :6], x)  # the input channels pass through unchanged
    torch.testing.assert_close(y, _reference_stddev(x, group, num_channels))
    # the feature is constant over the spatial positions
    assert (y[:, 6:] == y[:, 6:, :1, :1]).all()


def test_minibatch_stddev_of_a_single_sample_is_the_epsilon_floor():
    y = minibatch_stddev(torch.randn(1, 4, 2, 2), 4)
    torch.testing.assert_close(y[:, 4], torch.full((1, 2, 2), 1e-4))


def test_minibatch_stddev_of_identical_samples_is_zero_and_grows_with_spread():
    x = torch.randn(1, 4, 3, 3).repeat(4, 1, 1, 1)
    assert minibatch_stddev(x, 4)[:, 4].max() < 1e-3
    spread = x + torch.arange(4.0)[:, None, None, None]  # values k + const: population std sqrt(1.25)
    torch.testing.assert_close(minibatch_stddev(spread, 4)[:, 4], torch.full((4, 3, 3), 1.25**0.5))
