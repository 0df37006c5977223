"""FID (Heusel et al. 2017): the Fréchet distance between Gaussian fits of features of real and generated images.

The features come from a `generator.metrics.features.FeatureNetwork`; every result names it (`feature_net`), and
FIDs are comparable only between equal names. The statistics of the real images are cached by content under
$SGPROJECT_CACHE/metrics (docs/ARCHITECTURE.md, "Metrics").
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from generator.data.datasets import ImageDataset, cache_root
from generator.metrics.common import (
    MetricError, MetricProgress, check_data_resolution, generated_uint8_batches, real_uint8_batches,
)
from generator.metrics.features import FeatureNetwork, load_inception
from generator.networks import Generator
from generator.util.files import atomic_path

log = logging.getLogger(__name__)


class FeatureStats:
    """Running mean and covariance of features (float64 sums, so no feature matrix is kept)."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)  # [dim]
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)  # [dim, dim]: sum of x x^T

    def add(self, feats: torch.Tensor) -> None:  # [B, dim]
        x = feats.detach().to("cpu", torch.float64)
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:  # [dim], [dim, dim]; unbiased, as np.cov
        if self.n < 2:
            raise MetricError(f"FID needs at least 2 images per set, got {self.n}")
        mu = self.sum / self.n
        sigma = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), sigma.numpy()


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)): the Fréchet distance of two Gaussians."""
    from scipy import linalg  # local: scipy is slow to import and only FID needs it

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == (mu1.size, mu1.size), "mismatched statistics"
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # a singular product (fewer samples than dimensions): regularise
        offset = np.eye(mu1.size) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # the true root of a product of PSD matrices has a real trace; small imaginary parts are rounding noise
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            worst = float(np.max(np.abs(covmean.imag)))
            raise MetricError(
                f"the covariance square root is far from real (imaginary part {worst:.3g}): too few images for "
                f"{mu1.size}-d features; use more"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ------------------------------------------------------------------------------------------ real statistics


def _dataset_fingerprint(data: ImageDataset, n: int, k: int = 64) -> str:
    """A hash of up to k evenly spaced images of the first n: cheap, and catches a changed folder of the same size."""
    h = hashlib.sha256(str(tuple(data.images.shape)).encode())
    for i in np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int)):
        h.update(np.ascontiguousarray(data.images[i]).tobytes())
    return h.hexdigest()[:16]


def _real_stats_path(data: ImageDataset, n_real: int, identity: str) -> Path:
    key = json.dumps(
        {"v": 1, "source": data.source, "n": n_real, "len": len(data), "resolution": data.resolution,
         "features": identity, "content": _dataset_fingerprint(data, n_real)},
        sort_keys=True,
    )
    return cache_root() / "metrics" / f"fid-real-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _save_stats(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma)


@torch.no_grad()
def real_statistics(
    data: ImageDataset,
    feature_net: FeatureNetwork,
    *,
    n_real: int | None = None,  # the first n images; None: all
    batch: int = 64,
    device: torch.device | str = "cpu",
    cache: bool = True,  # read/write $SGPROJECT_CACHE/metrics
    progress: MetricProgress | None = None,
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(mu, sigma, n, from_cache) of the features of the dataset's images."""
    n = len(data) if n_real is None else min(n_real, len(data))
    path = _real_stats_path(data, n, feature_net.identity) if cache else None
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["mu"], z["sigma"], n, True
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring the unreadable cached statistics %s: %s", path, e)
    stats = FeatureStats(feature_net.dim)
    for x in real_uint8_batches(data, n, batch=batch, device=device, progress=progress):  # uint8 [B, C, R, R]
        stats.add(feature_net(x))
    mu, sigma = stats.mean_cov()
    if path is not None:
        _save_stats(path, mu, sigma)
    return mu, sigma, n, False


# ------------------------------------------------------------------------------------------------------ FID


@torch.no_grad()
def compute_fid(
    G: Generator,
    data: ImageDataset,
    *,
    n_gen: int = 10_000,  # generated images (the paper's FID uses 50,000)
    n_real: int | None = None,  # real images; None: the whole dataset (as fid50k_full)
    batch: int = 64,
    device: torch.device | str = "cpu",  # where G and feature_net live
    feature_net: FeatureNetwork | None = None,  # None: Inception-v3 (raises without its weights)
    truncation_psi: float = 1.0,
    noise_mode: str = "random",  # the official metric renders with random noise
    seed: int = 0,
    cache: bool = True,  # cache the real statistics under $SGPROJECT_CACHE/metrics
    progress: MetricProgress | None = None,
) -> dict:
    """FID between `data` and `n_gen` images of G (quantised to uint8 like saved images, as the official code does)."""
    if feature_net is None:
        feature_net = load_inception(device=device)
    check_data_resolution(G, data)
    if n_gen < 2:
        raise MetricError(f"FID needs at least 2 generated images, got {n_gen}")
    mu_r, sigma_r, n_r, cached = real_statistics(
        data, feature_net, n_real=n_real, batch=batch, device=device, cache=cache, progress=progress
    )
    stats = FeatureStats(feature_net.dim)
    for img in generated_uint8_batches(G, n_gen, batch=batch, device=device, truncation_psi=truncation_psi,
                                       noise_mode=noise_mode, seed=seed, progress=progress):
        stats.add(feature_net(img))  # img: uint8 [B, C, R, R]
    mu_g, sigma_g = stats.mean_cov()
    return {
        "metric": "fid",
        "fid": frechet_distance(mu_r, sigma_r, mu_g, sigma_g),
        "n_real": n_r,
        "n_gen": n_gen,
        "feature_net": feature_net.identity,
        "truncation_psi": truncation_psi,
        "noise_mode": noise_mode,
        "seed": seed,
        "real_stats_cached": cached,
    }
