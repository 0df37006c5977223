"""The training losses against values worked out by hand: logistic losses, R1, path length, lazy Adam, mixing."""

import math

import pytest
import torch

from generator.registry import tiny_config
from generator.training.losses import (
    d_logistic_loss,
    g_nonsaturating_loss,
    lazy_adam_params,
    path_length,
    path_length_penalty,
    r1_gamma_heuristic,
    r1_penalty,
    sample_ws,
)
from generator.networks import Generator
from tests.generator.helpers import one_torch_thread


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared CPU, oversubscribed OpenMP threads make small ops many times slower."""
    with one_torch_thread():
        yield


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ------------------------------------------------------------------------------------------ logistic losses


def test_g_nonsaturating_loss_is_mean_of_minus_log_sigmoid():
    logits = torch.tensor([[0.0], [2.0], [-3.0]])
    expected = sum(-math.log(1 / (1 + math.exp(-x))) for x in (0.0, 2.0, -3.0)) / 3
    assert g_nonsaturating_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    assert g_nonsaturating_loss(torch.zeros(4, 1)).item() == pytest.approx(math.log(2), rel=1e-6)
    # non-saturating: a confidently rejected fake still gives G a gradient of about -1 per sample
    x = torch.tensor([[-30.0]], requires_grad=True)
    g_nonsaturating_loss(x).backward()
    assert x.grad.item() == pytest.approx(-1.0, abs=1e-6)


def test_d_logistic_loss_values():
    real = torch.tensor([[1.0], [-0.5]])
    fake = torch.tensor([[0.25], [-2.0]])
    expected = (softplus(-1.0) + softplus(0.5)) / 2 + (softplus(0.25) + softplus(-2.0)) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    # an undecided D (all logits 0) pays log 2 for each side
    assert d_logistic_loss(torch.zeros(3, 1), torch.zeros(3, 1)).item() == pytest.approx(2 * math.log(2), rel=1e-6)
    # a perfect D pays (almost) nothing, a perfectly fooled one a lot
    assert d_logistic_loss(torch.full((2, 1), 20.0), torch.full((2, 1), -20.0)).item() < 1e-8
    assert d_logistic_loss(torch.full((2, 1), -20.0), torch.full((2, 1), 20.0)).item() == pytest.approx(40, rel=1e-6)


# ------------------------------------------------------------------------------------------------------- R1


def test_r1_penalty_linear_discriminator():
    """D(x) = sum(a * x): dD/dx = a for every sample, so the penalty is sum(a^2) per sample."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 4, generator=gen)
    x = torch.randn(5, 3, 4, 4, generator=gen).requires_grad_(True)
    logits = (x * a).sum(dim=[1, 2, 3])[:, None]  # [N, 1]
    pen = r1_penalty(logits, x)
    assert pen.shape == (5,)
    torch.testing.assert_close(pen, a.square().sum().expand(5), rtol=1e-6, atol=0)


def test_r1_penalty_quadratic_discriminator_and_its_gradient():
    """D(x) = sum(a * x^2): dD/dx = 2 a x, penalty = sum(4 a^2 x^2), and the penalty is differentiable in a."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    logits = (a * x.square()).sum(dim=[1, 2, 3])[:, None]
    pen = r1_penalty(logits, x)
    expected = (4 * a.detach().square() * x.detach().square()).sum(dim=[1, 2, 3])
    torch.testing.assert_close(pen.detach(), expected)
    # create_graph=True: the penalty trains D. d/da sum_n pen_n = sum_n 8 a x_n^2
    pen.sum().backward()
    torch.testing.assert_close(a.grad, (8 * a.detach() * x.detach().square()).sum(dim=0))


def test_r1_gamma_heuristic():
    assert r1_gamma_heuristic(64, 32) == pytest.approx(0.0002 * 64**2 / 32)  # 0.0256
    assert r1_gamma_heuristic(256, 32) == pytest.approx(0.4096)
    assert r1_gamma_heuristic(1024, 32) == pytest.approx(6.5536)  # the official 'auto' value at 1024, batch 32
    assert r1_gamma_heuristic(32, 8) == pytest.approx(0.0256)


# ------------------------------------------------------------------------------------------------ path length


def _linear_synthesis(seed=0, n=3, num_ws=4, w_dim=5, c=3, h=8, w=8):
    """img[n] = sum_k M_k ws[n, k]: a synthesis whose Jacobian is known. Returns (ws, img, M)."""
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(num_ws, w_dim, c, h, w, generator=gen, dtype=torch.float64).requires_grad_(True)  # "weights"
    ws = torch.randn(n, num_ws, w_dim, generator=gen, dtype=torch.float64).requires_grad_(True)
    img = torch.einsum("nkd,kdchw->nchw", ws, M)
    return ws, img, M


def test_path_length_on_a_linear_synthesis():
    ws, img, M = _linear_synthesis()
    lengths = path_length(img, ws, gen=torch.Generator().manual_seed(7))
    # the same y the function draws (same seeded generator, same shape), then J^T y = M_k . y for every layer k
    y = torch.randn(img.shape, generator=torch.Generator().manual_seed(7)).double() / math.sqrt(8 * 8)
    jty = torch.einsum("kdchw,nchw->nkd", M.detach(), y)  # [N, num_ws, w_dim]
    expected = jty.square().sum(dim=2).mean(dim=1).sqrt()
    assert lengths.shape == (3,)
    torch.testing.assert_close(lengths.detach(), expected)
    # create_graph: the lengths are differentiable in the weights, so the penalty trains G
    (grad_m,) = torch.autograd.grad(lengths.sum(), M)
    assert grad_m.abs().sum() > 0


def test_path_length_expectation_on_an_orthonormal_synthesis():
    """With every M_k an orthonormal map and y ~ N(0, I) / sqrt(HW), E|J_k^T y|^2 = w_dim / (H W)."""
    torch.manual_seed(0)
    n, num_ws, w_dim, c, h, w = 2000, 2, 4, 1, 4, 4
    q, _ = torch.linalg.qr(torch.randn(c * h * w, w_dim, dtype=torch.float64))  # orthonormal columns
    M = q.T.reshape(1, w_dim, c, h, w).expand(num_ws, w_dim, c, h, w)
    ws = torch.randn(n, num_ws, w_dim, dtype=torch.float64).requires_grad_(True)
    img = torch.einsum("nkd,kdchw->nchw", ws, M)
    lengths = path_length(img, ws, gen=torch.Generator().manual_seed(3))
    assert lengths.square().mean().item() == pytest.approx(w_dim / (h * w), rel=0.05)


def test_path_length_penalty_ema():
    lengths = torch.tensor([2.0, 4.0], requires_grad=True)
    pl_mean = torch.tensor(1.0)
    penalty, new_mean = path_length_penalty(lengths, pl_mean, decay=0.01)
    assert new_mean.item() == pytest.approx(1 + 0.01 * (3 - 1))  # lerp towards the batch mean 3
    assert not new_mean.requires_grad
    torch.testing.assert_close(penalty.detach(), (torch.tensor([2.0, 4.0]) - 1.02).square())
    penalty.sum().backward()  # the target is a constant: d/dl (l - a)^2 = 2 (l - a)
    torch.testing.assert_close(lengths.grad, 2 * (torch.tensor([2.0, 4.0]) - 1.02))
    assert pl_mean.item() == 1.0  # the input is not modified
    # repeated updates converge to the mean length
    m = torch.tensor(0.0)
    for _ in range(2000):
        _, m = path_length_penalty(torch.tensor([3.0, 5.0]), m, decay=0.01)
    assert m.item() == pytest.approx(4.0, rel=1e-5)


# ------------------------------------------------------------------------------------------------- lazy Adam


@pytest.mark.parametrize("interval", [4, 16])
def test_lazy_adam_params(interval):
    ratio = interval / (interval + 1)
    lr, betas = lazy_adam_params(0.002, (0.0, 0.99), interval)
    assert lr == pytest.approx(0.002 * ratio)
    assert betas == pytest.approx((0.0, 0.99**ratio))
    lr, betas = lazy_adam_params(0.002, (0.5, 0.9), interval)
    assert betas == pytest.approx((0.5**ratio, 0.9**ratio))


def test_lazy_adam_params_without_lazy_regularisation():
    assert lazy_adam_params(0.0025, (0.0, 0.99), 0) == (0.0025, (0.0, 0.99))


# ------------------------------------------------------------------------------------------------ style mixing


@pytest.fixture(scope="module")
def G():
    """A fresh tiny generator (sample_ws may update w_avg, so not the shared one)."""
    return Generator(tiny_config(), seed=0).eval().requires_grad_(False)


def _z(n, seed):
    return torch.randn(n, 64, generator=torch.Generator().manual_seed(seed))


def test_sample_ws_without_mixing_broadcasts_one_w(G):
    z = _z(16, 0)
    ws = sample_ws(G, z, mixing_prob=0.0, gen=torch.Generator().manual_seed(1), update_w_avg=False)
    assert ws.shape == (16, G.num_ws, G.w_dim)
    torch.testing.assert_close(ws, G.mapping(z))
    assert (ws == ws[:, :1]).all()


def test_sample_ws_always_mixing_has_one_crossover_per_sample(G):
    n = 64
    z = _z(n, 2)
    w1 = G.mapping(z)[:, 0]  # [N, w_dim]
    ws = sample_ws(G, z, mixing_prob=1.0, gen=torch.Generator().manual_seed(3), update_w_avg=False)
    crossovers = []
    for i in range(n):
        from_w1 = (ws[i] == w1[i]).all(dim=1)  # [num_ws]
        c = int(from_w1.sum())
        assert 1 <= c < G.num_ws, f"sample {i}: {c} layers from w1"
        assert from_w1[:c].all() and not from_w1[c:].any(), f"sample {i}: w1 layers not a prefix"
        assert (ws[i, c:] == ws[i, c]).all()  # the rest is one second w
        crossovers.append(c)
    assert len(set(crossovers)) > 3  # the crossover is drawn per sample, over [1, num_ws)


def test_sample_ws_mixing_probability_is_per_sample(G):
    z = _z(400, 4)
    ws = sample_ws(G, z, mixing_prob=0.5, gen=torch.Generator().manual_seed(5), update_w_avg=False)
    mixed = (ws != ws[:, :1]).any(dim=2).any(dim=1).float().mean().item()
    assert 0.4 < mixed < 0.6


def test_sample_ws_is_seeded(G):
    z = _z(8, 6)
    a = sample_ws(G, z, mixing_prob=0.9, gen=torch.Generator().manual_seed(11), update_w_avg=False)
    b = sample_ws(G, z, mixing_prob=0.9, gen=torch.Generator().manual_seed(11), update_w_avg=False)
    c = sample_ws(G, z, mixing_prob=0.9, gen=torch.Generator().manual_seed(12), update_w_avg=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_ws_updates_w_avg_only_when_asked():
    G = Generator(tiny_config(), seed=0)
    z = _z(8, 7)
    before = G.mapping.w_avg.clone()
    sample_ws(G, z, mixing_prob=0.9, gen=torch.Generator().manual_seed(0), update_w_avg=False)
    assert torch.equal(G.mapping.w_avg, before)
    sample_ws(G, z, mixing_prob=0.9, gen=torch.Generator().manual_seed(0), update_w_avg=True)
    # one EMA step towards the batch mean of the first latents' w (not the mixing partners')
    expected = G.mapping(z)[:, 0].mean(0).lerp(before, G.cfg.w_avg_beta)
    torch.testing.assert_close(G.mapping.w_avg, expected)
