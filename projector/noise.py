"""Noise maps of the projection: the regulariser that keeps them noise-like, and their renormalisation."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def noise_regularization(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over maps and pyramid levels of the squared autocorrelation at a shift of one pixel. [N]

    Each map is [N, 1, r, r]. White noise has (nearly) zero autocorrelation, so the penalty is ~0 for it and large
    for smooth maps that could smuggle image content into the noise inputs. Levels: the map, then average-pooled
    by 2 until 8x8.
    """
    total = 0
    for n in maps:
        while True:
            total = total + (n * torch.roll(n, shifts=1, dims=3)).mean(dim=[1, 2, 3]).square()
            total = total + (n * torch.roll(n, shifts=1, dims=2)).mean(dim=[1, 2, 3]).square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return total


@torch.no_grad()
def normalize_noise_(maps: Sequence[torch.Tensor]) -> None:
    """In place: zero mean and unit RMS per sample and map (after every optimiser step)."""
    for n in maps:
        n -= n.mean(dim=[1, 2, 3], keepdim=True)
        n *= n.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()


def gaussianity(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """How far the maps drifted from white Gaussian noise: mean |excess kurtosis| plus the regulariser. [N]

    A detector feature: a projection that hid structure in the noise inputs leaves them non-Gaussian.
    """
    dev = 0
    for n in maps:
        x = n.flatten(1)
        x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-8)
        dev = dev + ((x**4).mean(1) - 3).abs()
    return dev / len(maps) + noise_regularization(maps)
