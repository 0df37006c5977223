"""Generator quality metrics: FID (Heusel et al. 2017) and PPL (Karras et al. 2019, 2020).

FID is the Fréchet distance between Gaussian fits of image features of real and generated images. The features come
from a `FeatureNetwork`: torchvision's Inception-v3 (2048-d pool features) for real measurements, the shipped
portrait attribute network (generator/attrnet.py, `--feature-net portraits`: 256-d, trained by this project on the
procedural portraits' ground truth; meaningful for portrait models, works offline), or a small deterministic random
conv net (`--feature-net random`) for smoke tests. torchvision's Inception weights
(`inception_v3_google-0cc3c7bd.pth`) are not the TF-Inception graph of the official FID code, so FIDs from here are
comparable with each other, never with published FIDs. Every result names its feature network (`feature_net`,
e.g. `inception-v3-torchvision:0cc3c7bd` or `random-conv64-seed0`).

The Inception weights are resolved like the LPIPS backbone (projector/perceptual.py): an explicit file
(`inception_weights`, CLI `--inception-weights`, or `$SGPROJECT_INCEPTION`), torchvision's cache, a download when
online; unlike LPIPS there is no silent random fallback: without weights FID raises `InceptionWeightsError`.

PPL is the mean perceptual (LPIPS) distance between images at w(t) and w(t + epsilon) on lerp paths in W, divided by
epsilon^2, after discarding the lowest and highest 1% of samples. "end" sampling (the StyleGAN2 paper's `ppl_wend`)
measures at the path's start, t = 0; "full" sampling (the StyleGAN paper's) draws t ~ U(0, 1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator.datasets import ImageDataset, cache_root
from generator.errors import SGProjectError
from generator.networks import Generator

log = logging.getLogger(__name__)

INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
INCEPTION_SHA_PREFIX = "0cc3c7bd"  # torchvision names its weight files by the first 8 hex digits of their sha256
ENV_INCEPTION = "SGPROJECT_INCEPTION"
ENV_OFFLINE = "SGPROJECT_OFFLINE"  # "1": never try to download (shared with projector/perceptual.py)
FEATURE_NETS = ("inception", "portraits", "random")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MetricProgress = Callable[[str, int, int], None]  # (stage, done, total)


class MetricError(SGProjectError):
    """A metric cannot be computed as asked (too few samples, mismatched data, ...)."""


class InceptionWeightsError(MetricError):
    """The Inception-v3 weights FID needs are missing or unusable."""


# ------------------------------------------------------------------------------------------------ feature networks


class FeatureNetwork(Protocol):
    """Images -> features. uint8 tensors are read as [0, 255], float tensors as [-1, 1]; [N, C, H, W] -> [N, dim]."""

    identity: str  # recorded in every result; FIDs are only comparable between equal identities
    dim: int  # feature size

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] uint8 in [0, 255] or float in [-1, 1] -> float32 RGB in [-1, 1] (grey repeated to 3 channels)."""
    x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    assert x.ndim == 4 and x.shape[1] == 3, f"images must be [N, 3, H, W], got {list(images.shape)}"
    return x


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to [N, C, size, size] (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 up to the 2048-d average pool: the FID feature extractor."""

    def __init__(self, state: dict[str, torch.Tensor], identity: str, path: str | None = None):
        super().__init__()
        from torchvision.models import inception_v3

        # transform_input=True is what torchvision sets for its pretrained weights: the input is ImageNet-normalised
        # and the model maps it back to the [-1, 1] range the Google weights were trained on.
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:  # right names, wrong shapes
            reason = " ".join(str(e).split())[:160]
            raise InceptionWeightsError(f"not torchvision Inception-v3 weights ({path or 'weights'}): {reason}") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # absent from old files; unused
        if missing or unexpected:
            bad = (missing or unexpected)[0]
            raise InceptionWeightsError(
                f"not a torchvision Inception-v3 state dict ({len(missing)} missing, {len(unexpected)} unexpected "
                f"tensors, e.g. {bad}) in {path or 'the weights'}"
            )
        net.fc = nn.Identity()  # keep the pool features
        net.AuxLogits = None  # only used in training mode
        self.net = net
        self.identity, self.path, self.dim = identity, path, 2048
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, 2048]
        x = resize(to_unit_range(images), 299)  # [N, 3, 299, 299]
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.net(x)


class RandomConvFeatures(nn.Module):
    """A deterministic random conv net (He init from numpy's legacy RandomState): FID smoke tests only.

    Four stride-2 3x3 convs with ReLU on a 64x64 resize, then a global average pool. The same on every machine and
    every version, so its "FID" is reproducible, but it measures nothing a paper would call FID.
    """

    def __init__(self, *, seed: int = 0, dim: int = 64):
        super().__init__()
        rs = np.random.RandomState(seed)
        chans = [3, 16, 32, 64, dim]
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            w = (rs.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
            self.register_buffer(f"w{i}", torch.from_numpy(w))
        self.num_layers, self.dim = len(chans) - 1, dim
        self.identity = f"random-conv{dim}-seed{seed}"
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, dim]
        x = resize(to_unit_range(images), 64)
        for i in range(self.num_layers):
            x = F.conv2d(x, getattr(self, f"w{i}"), stride=2, padding=1)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x.mean(dim=[2, 3])


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # 'explicit', 'cache' or 'download'
    path: str  # the weights file
    identity: str  # recorded in every result


def inception_cache_path() -> Path:
    """Where torchvision keeps (and downloads) its Inception-v3 weights: $TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _identity_of_file(path: Path) -> str:
    sha = _file_sha256(path)[:8]
    if sha == INCEPTION_SHA_PREFIX:
        return f"inception-v3-torchvision:{sha}"
    return f"inception-v3:sha256-{sha}"  # other weights (a conversion, a fine-tune, random): named by content


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InceptionWeightsError(f"Inception-v3 weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no code
    except Exception as e:
        reason = " ".join(str(e).split())[:160]
        raise InceptionWeightsError(f"cannot read Inception-v3 weights {path}: {reason}") from None


def resolve_inception(
    inception_weights: str | Path | None = None, *, allow_download: bool | None = None
) -> tuple[WeightsSource, dict[str, torch.Tensor]]:
    """Find the Inception-v3 weights: explicit file, torchvision's cache, download; else InceptionWeightsError."""
    explicit = inception_weights or os.environ.get(ENV_INCEPTION)
    if explicit:
        path = Path(explicit).expanduser()
        state = _read_state(path)
        return WeightsSource("explicit", str(path), _identity_of_file(path)), state
    cached = inception_cache_path()
    if cached.is_file():
        try:
            return WeightsSource("cache", str(cached), _identity_of_file(cached)), _read_state(cached)
        except InceptionWeightsError as e:
            log.warning("ignoring the torchvision cache: %s", e)
    if allow_download is None:
        allow_download = os.environ.get(ENV_OFFLINE, "") not in ("1", "true", "yes")
    why = f"downloads are off: ${ENV_OFFLINE} is set"
    if allow_download:
        try:
            # check_hash: torchvision's file name carries its sha256 prefix, so a partial download is refused
            state = torch.hub.load_state_dict_from_url(
                INCEPTION_URL, map_location="cpu", progress=False, check_hash=True
            )
            return WeightsSource("download", str(cached), f"inception-v3-torchvision:{INCEPTION_SHA_PREFIX}"), state
        except Exception as e:  # offline, proxy, partial download
            why = f"the download failed: {' '.join(str(e).split())[:120]}"
    raise InceptionWeightsError(
        f"FID needs the Inception-v3 weights and none were found ({why}): download {INCEPTION_URL} and pass "
        f"--inception-weights FILE (or set ${ENV_INCEPTION}, or put it in {cached.parent}); "
        "for portrait models, --feature-net portraits works offline (FIDs in its own feature space); "
        "for a smoke test that is not a real FID use --feature-net random"
    )


_CACHE: dict[tuple, nn.Module] = {}


def load_inception(
    inception_weights: str | Path | None = None,
    device: torch.device | str = "cpu",
    *,
    allow_download: bool | None = None,
) -> InceptionFeatures:
    """The Inception-v3 feature extractor on `device`, built once per (weights, device) and shared."""
    source, state = resolve_inception(inception_weights, allow_download=allow_download)
    key = (source.identity, str(device))
    if key not in _CACHE:
        _CACHE[key] = InceptionFeatures(state, source.identity, source.path).to(device)
    return _CACHE[key]  # type: ignore[return-value]


def load_feature_network(
    name: str = "inception",
    *,
    inception_weights: str | Path | None = None,
    device: torch.device | str = "cpu",
    allow_download: bool | None = None,
) -> FeatureNetwork:
    """`inception` (the real thing; raises without weights), `portraits` (the shipped portrait attribute network,
    generator/attrnet.py: meaningful for portrait models, offline) or `random` (a labelled smoke-test network)."""
    if name == "inception":
        return load_inception(inception_weights, device, allow_download=allow_download)
    if name == "portraits":
        from generator.attrnet import load_attribute_net

        return load_attribute_net(device=device)
    if name == "random":
        return RandomConvFeatures().to(device)
    raise MetricError(f"unknown feature network {name!r} (use {', '.join(FEATURE_NETS)})")


# --------------------------------------------------------------------------------------------------------------- FID


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
    from scipy import linalg

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma)
    os.replace(tmp, path)


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
    for i in range(0, n, batch):
        idx = np.arange(i, min(i + batch, n))
        x = torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(device)  # uint8 [B, C, R, R]
        stats.add(feature_net(x))
        if progress:
            progress("real images", idx[-1] + 1, n)
    mu, sigma = stats.mean_cov()
    if path is not None:
        _save_stats(path, mu, sigma)
    return mu, sigma, n, False


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
    if data.resolution != G.img_resolution or data.images.shape[1] != G.img_channels:
        raise MetricError(
            f"the data are {data.images.shape[1]}x{data.resolution}px but the model makes "
            f"{G.img_channels}x{G.img_resolution}px images; open the data at the model's resolution"
        )
    if n_gen < 2:
        raise MetricError(f"FID needs at least 2 generated images, got {n_gen}")
    mu_r, sigma_r, n_r, cached = real_statistics(
        data, feature_net, n_real=n_real, batch=batch, device=device, cache=cache, progress=progress
    )
    rs = np.random.RandomState(seed)  # z drawn in order: the same images whatever the batch size
    noise_gen = torch.Generator(device=torch.device(device)).manual_seed(seed)
    stats = FeatureStats(feature_net.dim)
    for i in range(0, n_gen, batch):
        b = min(batch, n_gen - i)
        z = torch.from_numpy(rs.standard_normal((b, G.z_dim))).to(device=device, dtype=torch.float32)
        img = G(z, truncation_psi, noise_mode=noise_mode, gen=noise_gen)  # [b, C, R, R] in [-1, 1]
        img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        stats.add(feature_net(img))
        if progress:
            progress("generated images", i + b, n_gen)
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


# --------------------------------------------------------------------------------------------------------------- PPL

PPL_SAMPLING = ("end", "full")


def face_crop(img: torch.Tensor) -> torch.Tensor:
    """The official PPL crop for aligned faces: the central half, shifted up. [N, C, H, H] -> [N, C, H/2, H/2]"""
    assert img.shape[-1] == img.shape[-2], f"the face crop needs square images, got {list(img.shape)}"
    c = img.shape[-2] // 8
    return img[:, :, c * 3 : c * 7, c * 2 : c * 6]


def ppl_preprocess(img: torch.Tensor, *, crop: bool) -> torch.Tensor:
    """Optionally crop to the face, then area-downsample to 256 when larger (VGG was built for ~224 px)."""
    from projector.perceptual import downsample_to

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
    perceptual=None,  # a projector.perceptual.PerceptualDistance; None: load_perceptual(device=device)
    seed: int = 0,
    progress: MetricProgress | None = None,
) -> dict:
    """Perceptual path length in W: mean over paths of LPIPS(img(t), img(t + eps)) / eps^2, 1% tails discarded."""
    if perceptual is None:
        from projector.perceptual import load_perceptual

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
