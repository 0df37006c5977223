"""Perceptual distance: LPIPS (Zhang et al. 2018) with the VGG16 backbone, resolved without surprises offline.

The `lpips` package ships its linear heads but takes the VGG16 backbone from torchvision, which downloads it. The
backbone is found by `generator.util.weights.resolve_weights` (docs/ARCHITECTURE.md, "Metrics"):

1. an explicit file: the `vgg_weights` argument (CLI `--vgg-weights`) or `$SGPROJECT_VGG16`;
2. torchvision's cache (`$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`);
3. a download through torchvision, when online and allowed;
4. a deterministic random backbone (He-initialised from numpy's legacy RandomState, seed 0): the same on every
   machine and every version, with a loud warning. Scores made with it are only comparable with each other.

`PerceptualDistance.identity` names what is in use (`lpips-vgg16:<digest of the weights>` however they were found,
or `lpips-vgg16:random-seed0`); every output records it, and calibrations refuse scores made with another one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from generator.util.errors import SGProjectError
from generator.util.imaging import downsample_to as _downsample_to
from generator.util.weights import WeightsSource, hub_cache_path, read_weights_file, resolve_weights

log = logging.getLogger(__name__)

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILE = "vgg16-397923af.pth"
ENV_WEIGHTS = "SGPROJECT_VGG16"
RANDOM_SEED = 0
MAX_SIZE = 256  # images larger than this are area-downsampled before LPIPS, as the paper's projector does


class PerceptualWeightsError(SGProjectError):
    """An explicitly named VGG16 weights file is missing or unusable."""


def torchvision_cache_path() -> Path:
    return hub_cache_path(VGG16_FILE)


def _features_state(state: dict) -> dict[str, torch.Tensor]:
    """The conv weights of `features.*` from a torchvision VGG16 state dict (or one holding only features)."""
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not feats:
        feats = {k: v for k, v in state.items() if k.split(".")[0].isdigit()}
    needed = {f"{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) for p in ("weight", "bias")}
    if not needed <= set(feats):
        raise PerceptualWeightsError(
            f"not a torchvision VGG16 state dict (missing {sorted(needed - set(feats))[:2]}...)"
        )
    return {k: feats[k] for k in needed}


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    return _features_state(read_weights_file(path, what="VGG16", error=PerceptualWeightsError))


def _digest(feats: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(feats):
        h.update(k.encode())
        h.update(feats[k].detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def random_vgg16_features(seed: int = RANDOM_SEED) -> dict[str, torch.Tensor]:
    """He-initialised VGG16 conv weights from numpy's legacy RandomState: identical everywhere, forever."""
    rs = np.random.RandomState(seed)
    chans = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    idx = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    out = {}
    for i, (cin, cout) in zip(idx, chans):
        w = (rs.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        out[f"{i}.weight"] = torch.from_numpy(w)
        out[f"{i}.bias"] = torch.zeros(cout)
    return out


def resolve_backbone(
    vgg_weights: str | Path | None = None, *, allow_download: bool | None = None, require: str | None = None,
) -> tuple[WeightsSource, dict]:
    """Find the VGG16 backbone weights (see the module docstring for the order).

    `require`: the identity a calibration was made with. The deterministic random backbone can be rebuilt
    anywhere, so it is used directly; for any other identity the usual order is followed and the result must match.
    """
    if require is not None and require == random_identity():
        feats = random_vgg16_features()
        return WeightsSource("random", None, require), feats
    source, feats = _resolve(vgg_weights, allow_download)
    if require is not None and source.identity != require:
        raise PerceptualWeightsError(
            f"the calibration was made with {require}, but {source.identity} is what is available here; "
            "give the matching VGG16 weights with --vgg-weights (or $SGPROJECT_VGG16)"
        )
    return source, feats


def random_identity() -> str:
    return f"lpips-vgg16:random-seed{RANDOM_SEED}"


def _resolve(vgg_weights: str | Path | None, allow_download: bool | None) -> tuple[WeightsSource, dict]:
    def identified(feats: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
        return f"lpips-vgg16:{_digest(feats)}", feats

    def random_backbone(why: str) -> tuple[WeightsSource, dict]:
        return WeightsSource("random", None, random_identity()), random_vgg16_features()

    return resolve_weights(
        what="VGG16", file_name=VGG16_FILE, url=VGG16_URL, explicit=vgg_weights, env_var=ENV_WEIGHTS,
        read=lambda path: identified(_load_weights_file(path)),
        from_download=lambda state: identified(_features_state(state)),
        error=PerceptualWeightsError, fallback=random_backbone, allow_download=allow_download,
    )


def _normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit length along channels (LPIPS' normalize_tensor)."""
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + eps)


def downsample_to(img: torch.Tensor, size: int = MAX_SIZE) -> torch.Tensor:
    """LPIPS' input size: `generator.util.imaging.downsample_to` with the default MAX_SIZE."""
    return _downsample_to(img, size)


# torchvision's VGG16 `features`: 3x3 convolutions (channels) and 2x2 max-pools ("M"). LPIPS reads the ReLU after
# conv1_2, conv2_2, conv3_3, conv4_3 and conv5_3: the modules before index 4, 9, 16, 23 and 30.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = (4, 9, 16, 23, 30)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class _VGG16Taps(nn.Module):
    """VGG16's convolutional part up to relu5_3, returning the five tapped activations; the module names are the
    lpips package's (`slice{k}.{index in torchvision's features}`). Built without initialising its weights (they are
    always loaded): torchvision's whole VGG16, classifier included, takes seconds to initialise on a CPU."""

    def __init__(self):
        super().__init__()
        mods: list[nn.Module] = []
        c = 3
        for v in VGG16_LAYOUT:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        start = 0
        for k, end in enumerate(VGG16_TAPS, 1):
            block = nn.Sequential()
            for i in range(start, end):
                block.add_module(str(i), mods[i])
            self.add_module(f"slice{k}", block)
            start = end

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k in range(1, len(VGG16_TAPS) + 1):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)
        return out


class _Head(nn.Module):
    """LPIPS' linear head of one layer: a weighted sum over channels (1x1 convolution, no bias; dropout in training,
    as the package's, so that its weight file's keys fit)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Scaling(nn.Module):
    """LPIPS' input scaling: images in [-1, 1] to the ImageNet normalisation VGG was trained with."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def lpips_heads_file() -> Path:
    """The lpips package's linear heads for VGG (v0.1), found without importing the package (importing it imports
    torchvision's model zoo: seconds on a CPU)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise PerceptualWeightsError("the lpips package is not installed (pip install lpips)")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "vgg.pth"


class PerceptualDistance(nn.Module):
    """LPIPS-VGG between images in [-1, 1]. Target features can be computed once and reused (projection)."""

    def __init__(self, source: WeightsSource, features: dict[str, torch.Tensor]):
        super().__init__()
        with torch.device("meta"):  # shapes only: every weight is loaded below
            net = _VGG16Taps()
            lins = nn.ModuleList(_Head(c) for c in LPIPS_CHANNELS)
        net.to_empty(device="cpu")
        lins.to_empty(device="cpu")
        net.load_state_dict({name: features[name.split(".", 1)[1]] for name, _ in net.named_parameters()},
                            strict=True)
        heads = torch.load(lpips_heads_file(), map_location="cpu", weights_only=True)
        lins.load_state_dict({f"{i}.model.1.weight": heads[f"lin{i}.model.1.weight"]
                              for i in range(len(LPIPS_CHANNELS))}, strict=True)
        self.scaling, self.net, self.lins = _Scaling(), net, lins
        self.source = source
        self.identity = source.identity
        self.eval().requires_grad_(False)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised VGG features of [N, 3, H, W] images in [-1, 1] (downsampled to 256 when larger)."""
        x = self.scaling(downsample_to(img.float()))
        return [_normalize(f) for f in self.net(x)]

    def distance_to(self, img: torch.Tensor, target_feats: list[torch.Tensor], *, spatial: bool = False) -> torch.Tensor:
        """LPIPS between `img` and precomputed target features: [N], or [N, 1, h, w] maps when `spatial`."""
        feats = self.features(img)
        if not spatial:
            return self.distance_between(feats, target_feats)
        return self.map_between(feats, target_feats)

    def _layer_distances(self, feats: list[torch.Tensor], target_feats: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Each layer's weighted squared difference, pairwise by index: [N, 1, h_l, w_l] per layer."""
        for lin, a, b in zip(self.lins, feats, target_feats):
            yield lin((a - b).square())

    def map_between(self, feats: list[torch.Tensor], target_feats: list[torch.Tensor]) -> torch.Tensor:
        """The spatial LPIPS map between two sets of precomputed features, pairwise by index: each layer's map
        resized to the first layer's size, then summed. [N, 1, h, w]"""
        return self.distance_and_map(feats, target_feats)[1]

    def distance_and_map(self, feats: list[torch.Tensor], target_feats: list[torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """`distance_between` and `map_between` at once (each layer's difference is computed once).
        ([N], [N, 1, h, w])"""
        dist, total = 0, 0
        size = target_feats[0].shape[-2:]
        for d in self._layer_distances(feats, target_feats):
            dist = dist + d.mean(dim=[2, 3])
            total = total + F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        return dist[:, 0], total

    def distance_between(self, feats: list[torch.Tensor], target_feats: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between two sets of precomputed features (from `features`), pairwise by index: [N]. (No maps: this
        is the projection's loss, every step.)"""
        return sum(d.mean(dim=[2, 3]) for d in self._layer_distances(feats, target_feats))[:, 0]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # [N]
        return self.distance_to(a, self.features(b))

    def spatial_map(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Where the two images differ perceptually: [N, 1, h, w] at the (downsampled) input size."""
        return self.distance_to(a, self.features(b), spatial=True)


_CACHE: dict[tuple, PerceptualDistance] = {}


def load_perceptual(
    vgg_weights: str | Path | None = None,
    device: torch.device | str = "cpu",
    *,
    allow_download: bool | None = None,
    require: str | None = None,  # an identity the result must have (from a calibration)
    warn=None,  # callable(str) for the loud warning; default: logging.warning
) -> PerceptualDistance:
    """The LPIPS-VGG distance on `device`, built once per (weights, device) and shared."""
    source, feats = resolve_backbone(vgg_weights, allow_download=allow_download, require=require)
    key = (source.identity, str(device))
    # A caller that passes `warn` is told on every call (its user must see it even when an earlier call in this
    # process built the network); the default log warning is given once, when the network is built.
    if source.is_random and require is None and (warn is not None or key not in _CACHE):
        msg = (
            "VGG16 ImageNet weights not found (no --vgg-weights, $SGPROJECT_VGG16 or torchvision cache, and no "
            "download): LPIPS uses a DETERMINISTIC RANDOM backbone. Distances are only comparable with others "
            f"made the same way ({source.identity}). Put {VGG16_FILE} in {torchvision_cache_path().parent} "
            "for real LPIPS."
        )
        (warn or log.warning)(msg)
    if key not in _CACHE:
        _CACHE[key] = PerceptualDistance(source, feats).to(device)
    return _CACHE[key]
