"""Feature networks for FID: images -> feature vectors, each with an identity recorded in every result.

- `inception`: torchvision's Inception-v3 up to its 2048-d pool features, the real measurement. torchvision's
  weights (`inception_v3_google-0cc3c7bd.pth`) are not the TF-Inception graph of the official FID code, so FIDs from
  here are comparable with each other, never with published FIDs. Identity `inception-v3-torchvision:0cc3c7bd`
  (other weights: `inception-v3:sha256-<prefix>`).
- `portraits`: the shipped portrait attribute network (`generator.metrics.attrnet`): 256-d, trained by this project
  on the procedural portraits' ground truth; meaningful for portrait models, works offline.
- `random`: a small deterministic random conv net (`random-conv64-seed0`) for smoke tests.

The Inception weights are found like the LPIPS backbone (`generator.util.weights.resolve_weights`): an explicit file
(`inception_weights`, CLI `--inception-weights`, or `$SGPROJECT_INCEPTION`), torchvision's cache, a download when
online; unlike LPIPS there is no silent random fallback: without weights FID raises `InceptionWeightsError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator.metrics.attrnet import load_attribute_net
from generator.metrics.common import MetricError
from generator.util.files import file_sha256
from generator.util.imaging import resize_square, unit_range
from generator.util.weights import WeightsSource, hub_cache_path, read_weights_file, resolve_weights

INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"
INCEPTION_SHA_PREFIX = "0cc3c7bd"  # torchvision names its weight files by the first 8 hex digits of their sha256
ENV_INCEPTION = "SGPROJECT_INCEPTION"
FEATURE_NETS = ("inception", "portraits", "random")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InceptionWeightsError(MetricError):
    """The Inception-v3 weights FID needs are missing or unusable."""


class FeatureNetwork(Protocol):
    """Images -> features. uint8 tensors are read as [0, 255], float tensors as [-1, 1]; [N, C, H, W] -> [N, dim]."""

    identity: str  # recorded in every result; FIDs are only comparable between equal identities
    dim: int  # feature size

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 up to the 2048-d average pool: the FID feature extractor."""

    def __init__(self, state: dict[str, torch.Tensor], identity: str, path: str | None = None):
        super().__init__()
        from torchvision.models import inception_v3  # local: heavy, and only the Inception network needs it

        # transform_input=True is what torchvision sets for its pretrained weights: the input is ImageNet-normalised
        # and the model maps it back to the [-1, 1] range the Google weights were trained on.
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:  # right names, wrong shapes
            reason = " ".join(str(e).split())[:160]
            raise InceptionWeightsError(
                f"not torchvision Inception-v3 weights ({path or 'weights'}): {reason}"
            ) from None
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
        x = resize_square(unit_range(images), 299)  # [N, 3, 299, 299]
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
        x = resize_square(unit_range(images), 64)
        for i in range(self.num_layers):
            x = F.conv2d(x, getattr(self, f"w{i}"), stride=2, padding=1)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x.mean(dim=[2, 3])


# ------------------------------------------------------------------------------------------------ Inception weights


def inception_cache_path() -> Path:
    """Where torchvision keeps (and downloads) its Inception-v3 weights: $TORCH_HOME/hub/checkpoints/."""
    return hub_cache_path(INCEPTION_FILE)


def _identity_of_file(path: Path) -> str:
    sha = file_sha256(path)[:8]
    if sha == INCEPTION_SHA_PREFIX:
        return f"inception-v3-torchvision:{sha}"
    return f"inception-v3:sha256-{sha}"  # other weights (a conversion, a fine-tune, random): named by content


def _read_identified(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    state = read_weights_file(path, what="Inception-v3", error=InceptionWeightsError)
    return _identity_of_file(path), state


def _no_weights(why: str) -> tuple[WeightsSource, dict]:
    raise InceptionWeightsError(
        f"FID needs the Inception-v3 weights and none were found ({why}): download {INCEPTION_URL} and pass "
        f"--inception-weights FILE (or set ${ENV_INCEPTION}, or put it in {inception_cache_path().parent}); "
        "for portrait models, --feature-net portraits works offline (FIDs in its own feature space); "
        "for a smoke test that is not a real FID use --feature-net random"
    )


def resolve_inception(
    inception_weights: str | Path | None = None, *, allow_download: bool | None = None
) -> tuple[WeightsSource, dict[str, torch.Tensor]]:
    """Find the Inception-v3 weights: explicit file, torchvision's cache, download; else InceptionWeightsError."""
    return resolve_weights(
        what="Inception-v3", file_name=INCEPTION_FILE, url=INCEPTION_URL, explicit=inception_weights,
        env_var=ENV_INCEPTION, read=_read_identified,
        from_download=lambda state: (f"inception-v3-torchvision:{INCEPTION_SHA_PREFIX}", state),
        error=InceptionWeightsError, fallback=_no_weights, allow_download=allow_download,
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
    generator.metrics.attrnet: meaningful for portrait models, offline) or `random` (a labelled smoke-test network)."""
    if name == "inception":
        return load_inception(inception_weights, device, allow_download=allow_download)
    if name == "portraits":
        return load_attribute_net(device=device)
    if name == "random":
        return RandomConvFeatures().to(device)
    raise MetricError(f"unknown feature network {name!r} (use {', '.join(FEATURE_NETS)})")
