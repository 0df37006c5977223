"""PPL (Karras et al. 2019, 2020): perceptual path length in W.

The mean perceptual (LPIPS, `generator.metrics.lpips`) distance between images at w(t) and w(t + epsilon) on lerp
paths in W, divided by epsilon^2, after discarding the lowest and highest 1% of samples. "end" sampling (the
StyleGAN2 paper's `ppl_wend`) measures at the path's start, t = 0; "full" sampling (the StyleGAN paper's) draws
t ~ U(0, 1) (docs/ARCHITECTURE.md, "Metrics").
"""

from __future__ import annotations

import numpy as np
import torch

from generator.metrics.common import MetricError, MetricProgress
from generator.metrics.lpips import load_perceptual
from generator.networks import Generator
from generator.util.imaging import downsample_to

PPL_SAMPLING = ("end", "full")


def face_crop(img: torch.Tensor) -> torch.Tensor:
    """The official PPL crop for aligned faces: the central half, shifted up. [N, C, H, H] -> [N, C, H/2, H/2]"""
    assert img.shape[-1] == img.shape[-2], f"the face crop needs square images, got {list(img.shape)}"
    c = img.shape[-2] // 8
    return img[:, :, c * 3 : c * 7, c * 2 : c * 6]


def ppl_preprocess(img: torch.Tensor, *, crop: bool) -> torch.Tensor:
    """Optionally crop to the face, then area-downsample to 256 when larger (VGG was built for ~224 px)."""
    if img.shape[1] == 1:
        img = img.repeat(1, 3, 1, 1)
    return downsample_to(face_crop(img) if crop else img, 256)


def filtered_mean(dist: np.ndarray, lo: float = 1, hi: float = 99) -> float:
    """Mean of the samples between the lo-th and hi-th percentiles (inclusive): PPL's outlier rejection."""
    dist = np.asarray(dist, dtype=np.float64)
    lo_v = np.percentile(dist, lo, method="lower")
    hi_v = np.percentile(dist, hi, method="higher")
    return float(dist[(dist >= lo_v) & (dist <= hi_v)].mean())


@torch.no_grad()
def compute_ppl(
    G: Generator,
    *,
    n: int = 2000,  # path samples (the papers use 50,000; 10,000 is common)
    epsilon: float = 1e-4,  # step along the path
    crop: bool = False,  # the face crop (StyleGAN2 paper's FFHQ PPL); off for other data, as stylegan2-ada's ppl2_wend
    sampling: str = "end",  # 'end': t = 0 (StyleGAN2's ppl_wend); 'full': t ~ U(0, 1)
    truncation_psi: float = 1.0,  # < 1 shortens every path (0: all images equal, PPL 0)
    batch: int = 16,  # paths per step (each renders two images)
    device: torch.device | str = "cpu",  # where G and perceptual live
    perceptual=None,  # a generator.metrics.lpips.PerceptualDistance; None: load_perceptual(device=device)
    seed: int = 0,
    progress: MetricProgress | None = None,
) -> dict:
    """Perceptual path length in W: mean over paths of LPIPS(img(t), img(t + eps)) / eps^2, 1% tails discarded."""
    if perceptual is None:
        perceptual = load_perceptual(device=device)
    if sampling not in PPL_SAMPLING:
        raise MetricError(f"PPL sampling must be one of {', '.join(PPL_SAMPLING)}, got {sampling!r}")
    if n < 1:
        raise MetricError(f"PPL needs at least 1 sample, got {n}")
    rs_z = np.random.RandomState(seed)  # drawn in order: the same paths whatever the batch size
    rs_t = np.random.RandomState([seed, 1])
    dists = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.from_numpy(rs_z.standard_normal((b, 2, G.z_dim))).to(device=device, dtype=torch.float32)
        t = rs_t.uniform(size=b) if sampling == "full" else np.zeros(b)
        t = torch.from_numpy(t).to(device=device, dtype=torch.float32)[:, None, None]  # [b, 1, 1]
        ws = G.mapping(z.reshape(2 * b, G.z_dim), truncation_psi)  # [2b, num_ws, w_dim]
        w0, w1 = ws[0::2], ws[1::2]  # pairs (z0, z1) were drawn side by side
        wt = torch.cat([w0.lerp(w1, t), w0.lerp(w1, t + epsilon)])  # [2b, num_ws, w_dim]
        img = ppl_preprocess(G.synthesis(wt, noise_mode="const"), crop=crop)  # [2b, 3, h, w]
        d = perceptual(img[:b], img[b:]) / epsilon**2  # [b]
        dists.append(d.double().cpu().numpy())
        if progress:
            progress("path lengths", i + b, n)
    dist = np.concatenate(dists)
    return {
        "metric": "ppl",
        "ppl": filtered_mean(dist),
        "n": n,
        "epsilon": epsilon,
        "space": "w",
        "sampling": sampling,
        "crop": crop,
        "truncation_psi": truncation_psi,
        "seed": seed,
        "perceptual": perceptual.identity,
    }
