"""Improved precision and recall (Kynkäänniemi et al. 2019): FID's second opinion, which tells low fidelity apart
from mode dropping.

Each set of features is turned into a manifold estimate: the union of balls around its samples, each ball's radius
the distance to that sample's k-th nearest neighbour in its own set. Precision is the fraction of generated samples
that fall inside the real manifold (are the images realistic?); recall the fraction of real samples inside the
generated manifold (does the generator cover the data?). A generator that draws realistic faces of one kind only has
high precision and low recall; one that covers everything badly has the opposite. Both are in [0, 1], and two sets
from the same distribution score close to 1 on both (docs/ARCHITECTURE.md, "Metrics").
"""

from __future__ import annotations

import torch

from generator.data.datasets import ImageDataset
from generator.metrics.common import (
    MetricError, MetricProgress, check_data_resolution, generated_uint8_batches, real_uint8_batches,
)
from generator.metrics.features import FeatureNetwork
from generator.networks import Generator

DEFAULT_K = 3  # the paper's choice: a compromise between a noisy (k=1) and a bloated (large k) manifold
CHUNK = 1024  # rows of the pairwise distance matrix computed at once (memory: CHUNK x N floats)


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows: [M, D] x [N, D] -> [M, N] (float64, so ties of nearby points are exact)."""
    return torch.cdist(a.double(), b.double())


def knn_radii(feats: torch.Tensor, k: int = DEFAULT_K, chunk: int = CHUNK) -> torch.Tensor:
    """[N, D] -> [N]: each sample's distance to its k-th nearest neighbour among the others."""
    n = feats.shape[0]
    if not 1 <= k < n:
        raise MetricError(f"precision/recall with k={k} needs more than {k} samples per set, got {n}")
    radii = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, chunk):
        d = _pairwise(feats[i : i + chunk], feats)  # [c, N]; each row holds its own 0 distance
        radii[i : i + chunk] = d.kthvalue(k + 1, dim=1).values  # k + 1: the sample itself is the first
    return radii


def inside_manifold(
    query: torch.Tensor, ref: torch.Tensor, ref_radii: torch.Tensor, chunk: int = CHUNK
) -> torch.Tensor:
    """[M, D], [N, D], [N] -> bool [M]: whether each query lies in some ball (ref_j, ref_radii_j)."""
    inside = torch.zeros(query.shape[0], dtype=torch.bool)
    for i in range(0, query.shape[0], chunk):
        d = _pairwise(query[i : i + chunk], ref)  # [c, N]
        inside[i : i + chunk] = (d <= ref_radii[None, :]).any(dim=1)
    return inside


def precision_recall(
    real: torch.Tensor, generated: torch.Tensor, *, k: int = DEFAULT_K, chunk: int = CHUNK
) -> tuple[float, float]:
    """(precision, recall) of generated features [M, D] against real features [N, D]."""
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise MetricError(f"feature sets must be [N, D] with one D, got {list(real.shape)} and {list(generated.shape)}")
    real, generated = real.detach().cpu(), generated.detach().cpu()
    precision = inside_manifold(generated, real, knn_radii(real, k, chunk), chunk).double().mean().item()
    recall = inside_manifold(real, generated, knn_radii(generated, k, chunk), chunk).double().mean().item()
    return precision, recall


@torch.no_grad()
def compute_precision_recall(
    G: Generator,
    data: ImageDataset,
    *,
    n: int = 10_000,  # images per set (the paper uses 50,000; the real set is the data's first n)
    k: int = DEFAULT_K,  # nearest neighbour that sets each ball's radius
    batch: int = 64,
    device: torch.device | str = "cpu",  # where G and feature_net live
    feature_net: FeatureNetwork,
    truncation_psi: float = 1.0,
    noise_mode: str = "random",  # as FID
    seed: int = 0,  # of the sampled latents: with the same seed, FID and precision/recall see the same images
    progress: MetricProgress | None = None,
) -> dict:
    """Precision and recall of G against `data` in the feature space of `feature_net`."""
    check_data_resolution(G, data)
    n_real = min(n, len(data))
    if n_real <= k or n <= k:
        raise MetricError(f"precision/recall with k={k} needs more than {k} images per set")
    real = [feature_net(x).cpu() for x in real_uint8_batches(data, n_real, batch=batch, device=device,
                                                            progress=progress)]
    gen = [feature_net(x).cpu() for x in generated_uint8_batches(
        G, n, batch=batch, device=device, truncation_psi=truncation_psi, noise_mode=noise_mode, seed=seed,
        progress=progress)]
    precision, recall = precision_recall(torch.cat(real), torch.cat(gen), k=k)
    return {
        "metric": "pr",
        "precision": precision,
        "recall": recall,
        "k": k,
        "n_real": n_real,
        "n_gen": n,
        "feature_net": feature_net.identity,
        "truncation_psi": truncation_psi,
        "noise_mode": noise_mode,
        "seed": seed,
    }

