"""What the metrics share: their error, the progress callback they report through, and the image streams they read
(real images from a data set, generated ones from seeded latents), so that FID and precision/recall with the same
seed measure the same images."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from generator.data.datasets import ImageDataset
from generator.networks import Generator
from generator.util.errors import SGProjectError

MetricProgress = Callable[[str, int, int], None]  # (stage, done, total)


class MetricError(SGProjectError):
    """A metric cannot be computed as asked (too few samples, mismatched data, ...)."""


def check_data_resolution(G: Generator, data: ImageDataset) -> None:
    if data.resolution != G.img_resolution or data.images.shape[1] != G.img_channels:
        raise MetricError(
            f"the data are {data.images.shape[1]}x{data.resolution}px but the model makes "
            f"{G.img_channels}x{G.img_resolution}px images; open the data at the model's resolution"
        )


def real_uint8_batches(
    data: ImageDataset, n: int, *, batch: int, device: torch.device | str, progress: MetricProgress | None = None
) -> Iterator[torch.Tensor]:
    """The data's first n images as uint8 [B, C, R, R] batches on `device`."""
    for i in range(0, n, batch):
        idx = np.arange(i, min(i + batch, n))
        yield torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(device)
        if progress:
            progress("real images", int(idx[-1]) + 1, n)


@torch.no_grad()
def generated_uint8_batches(
    G: Generator,
    n: int,
    *,
    batch: int,
    device: torch.device | str,
    truncation_psi: float = 1.0,
    noise_mode: str = "random",  # the official metrics render with random noise
    seed: int = 0,
    progress: MetricProgress | None = None,
) -> Iterator[torch.Tensor]:
    """n images of G as uint8 [B, C, R, R] batches, quantised like saved images (x * 127.5 + 128, clamped, truncated:
    the official metric code's convention). z is drawn in order from one seeded stream, so the images do not depend
    on the batch size."""
    rs = np.random.RandomState(seed)
    noise_gen = torch.Generator(device=torch.device(device)).manual_seed(seed)
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.from_numpy(rs.standard_normal((b, G.z_dim))).to(device=device, dtype=torch.float32)
        img = G(z, truncation_psi, noise_mode=noise_mode, gen=noise_gen)  # [b, C, R, R] in [-1, 1]
        yield (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        if progress:
            progress("generated images", i + b, n)
