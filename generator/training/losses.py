"""StyleGAN2 training losses, each a small function named after the paper's term.

- non-saturating logistic loss for G and D (Goodfellow et al. 2014);
- R1 gradient penalty on reals (Mescheder et al. 2018), applied lazily;
- path-length regularisation (Karras et al. 2020, section 3.2), applied lazily;
- style-mixing regularisation: a random crossover between two ws with probability `prob`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from generator.networks import Generator, mix_styles


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))), averaged."""
    return F.softplus(-fake_logits).mean()


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), averaged."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """Squared norm of dD/dx on real images, per sample. [N]  (`real_img` must require grad.)"""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3])


def path_length(img: torch.Tensor, ws: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """|J_w^T y| for a random image-space direction y ~ N(0, I) / sqrt(H*W), averaged over ws. [N]

    `ws` [N, num_ws, w_dim] must be the (grad-requiring) input of synthesis that produced `img` [N, C, H, W].
    """
    h, w = img.shape[2:]
    y = torch.randn(img.shape, device=img.device, generator=gen) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: torch.Tensor, pl_mean: torch.Tensor, decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(lengths - a)^2 with a the EMA of the mean path length. Returns (penalty [N], the new EMA [])."""
    new_mean = pl_mean.lerp(lengths.detach().mean(), decay)
    return (lengths - new_mean).square(), new_mean


def r1_gamma_heuristic(resolution: int, batch: int) -> float:
    """The usual starting point for the R1 weight: 0.0002 * res^2 / batch."""
    return 0.0002 * resolution**2 / batch


def lazy_adam_params(lr: float, betas: tuple[float, float], interval: int) -> tuple[float, tuple[float, float]]:
    """Lazy regularisation runs every `interval` minibatches; rescale Adam so the dynamics match (ratio k/(k+1))."""
    if interval <= 0:
        return lr, betas
    ratio = interval / (interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def sample_ws(
    G: Generator,
    z: torch.Tensor,  # [N, z_dim]
    *,
    mixing_prob: float = 0.9,
    gen: torch.Generator | None = None,
    update_w_avg: bool = True,
) -> torch.Tensor:  # [N, num_ws, w_dim]
    """Map z to ws with style-mixing regularisation: with probability `mixing_prob` per sample, the layers from a
    random crossover on take a second latent's w."""
    ws = G.mapping(z, update_w_avg=update_w_avg)
    if mixing_prob <= 0:
        return ws
    n, num_ws = ws.shape[:2]
    dev = z.device
    crossover = torch.randint(1, num_ws, (n,), device=dev, generator=gen)
    use = torch.rand((n,), device=dev, generator=gen) < mixing_prob
    crossover = torch.where(use, crossover, torch.full_like(crossover, num_ws))
    z2 = torch.randn(z.shape, device=dev, generator=gen)
    ws2 = G.mapping(z2, update_w_avg=False)
    return mix_styles(ws, ws2, crossover)
