"""Is the image from the model's domain: the check behind the verdict 'out-of-domain'.

A projection detector can only vouch for the kind of image its generator makes. A landscape, a microscope slide or
the output of another generator is not reproduced by a portrait model whoever made it, so 'real' would be a claim
the method cannot back (the picture may well come from another generator). Such an image gets the verdict
`out-of-domain`, with the distance that decided it in the row, and is not projected.

The measure: the Mahalanobis distance of the image's embedding in a feature network (for portrait models the
shipped portrait attribute network, generator.metrics.attrnet, 256-d) from a Gaussian fitted to in-domain images:
held-out real images of the domain and the model's own samples, clean and degraded the ways calibration degrades
them (detectors/variants.py: blurred, softened, denoised, re-compressed; resized, cropped, brightened, noisy).

    d(x) = sqrt((f(x) - mean)^T P (f(x) - mean)),   P = (C + RIDGE * mean(diag C) * I)^-1

The threshold is not chosen by hand: `fit_domain_check` puts it at the DOMAIN_QUANTILE-quantile of the
*out-of-fold* distances of the fitting images (each image measured against a Gaussian fitted without it, in FOLDS
folds), so that about 1 - DOMAIN_QUANTILE of new in-domain images are set aside; distances of the images a Gaussian
was fitted on are smaller than those of new ones, and a threshold from them would flag too many. The check is
stored as safetensors beside the model's calibrations (`detectors/calibrations/<model>.domain.safetensors`), with
the feature network's identity, and refused with another network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from detectors.calibration import CALIBRATIONS_DIR
from generator.metrics.features import load_feature_network
from generator.util.errors import SGProjectError
from generator.util.files import atomic_path
from generator.util.imaging import to_tensor

FORMAT = "sgproject-domain"
DOMAIN_QUANTILE = 0.995  # share of new in-domain images the check lets through
FOLDS = 5
RIDGE = 1e-4  # covariance shrinkage toward the identity, in units of the mean variance (chosen on a dev set:
# 1e-5 to 1e-3 flag the same share of held-out reals, 1e-4 a few more photographs than 1e-3; 1e-2 and up far fewer)
MIN_IMAGES = 100  # fewer fitting images than this cannot place a 99.5% quantile
FEATURE_NET_OF = {"portraits-64": "portraits"}  # the feature network that knows a bundled model's domain


class DomainError(SGProjectError):
    """A domain check that cannot be made or used."""


@dataclass
class DomainCheck:
    feature_net: str  # generator.metrics.features name ('portraits')
    identity: str  # the feature network's identity: distances are only valid with it
    mean: np.ndarray  # [D]
    precision: np.ndarray  # [D, D]
    threshold: float  # distances above it are out of the domain
    quantile: float  # of the out-of-fold distances of the fitting images
    n: int  # fitting images
    groups: dict = field(default_factory=dict)  # {group: {'n', 'median', 'q99', 'over'}}: out-of-fold, per group
    fitted_on: str = ""  # what the fitting images were
    model_sha256: str = ""  # the model whose samples it was fitted on too (fit again when the weights change)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distances of [N, D] embeddings. [N]"""
        return _mahalanobis(np.asarray(features, np.float64), self.mean, self.precision)

    def fingerprint(self) -> str:
        """What the check decides with (network, threshold, Gaussian), as a short digest."""
        h = hashlib.sha256(f"{self.identity}|{self.threshold!r}".encode())
        h.update(np.ascontiguousarray(self.mean, np.float64).tobytes())
        h.update(np.ascontiguousarray(self.precision, np.float64).tobytes())
        return h.hexdigest()[:16]

    def reason(self, distance: float) -> str | None:
        """Why an image at `distance` is outside the domain, or None when it is not."""
        if distance <= self.threshold:
            return None
        return (f"outside the model's domain (distance {distance:.1f} > {self.threshold:.1f} in the {self.identity} "
                f"embedding; {self.quantile:.1%} of new in-domain images stay below): the model cannot vouch for it "
                "either way, and another generator may have made it")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        header = {"format": FORMAT, "feature_net": self.feature_net, "identity": self.identity,
                  "threshold": self.threshold, "quantile": self.quantile, "n": self.n, "groups": self.groups,
                  "fitted_on": self.fitted_on, "model_sha256": self.model_sha256}
        tensors = {"mean": self.mean.astype(np.float64), "precision": self.precision.astype(np.float64)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"sgproject": json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DomainCheck":
        path = Path(path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                header = json.loads((f.metadata() or {}).get("sgproject", "{}"))
                if header.get("format") != FORMAT:
                    raise DomainError(f"{path} is not a domain check (format {header.get('format')!r})")
                mean, precision = f.get_tensor("mean"), f.get_tensor("precision")
        except (OSError, ValueError, SafetensorError) as e:  # JSONDecodeError is a ValueError
            raise DomainError(f"cannot read the domain check {path}: {e}") from None
        if precision.shape != (len(mean), len(mean)):
            raise DomainError(f"{path}: precision {precision.shape} does not fit a mean of {len(mean)}")
        return cls(header["feature_net"], header["identity"], mean, precision, float(header["threshold"]),
                   float(header["quantile"]), int(header["n"]), header.get("groups", {}), header.get("fitted_on", ""),
                   header.get("model_sha256", ""))

    def network(self, device: torch.device | str = "cpu"):
        """The feature network, checked to be the one the check was fitted with."""
        net = load_feature_network(self.feature_net, device=device)
        if net.identity != self.identity:
            raise DomainError(f"the domain check was fitted with {self.identity}, and {self.feature_net} is now "
                              f"{net.identity}: fit it again (sgproject calibrate-domain)")
        return net


def _mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    z = x - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", z, precision, z), 0.0))


def _gaussian(x: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    cov = np.cov(x, rowvar=False)
    cov = cov + ridge * float(np.mean(np.diag(cov))) * np.eye(len(mean))
    return mean, np.linalg.inv(cov)


def embed(net, pixels: Sequence[np.ndarray], device: torch.device | str = "cpu", batch: int = 256) -> np.ndarray:
    """Embeddings [N, D] (float64) of uint8 [R, R, 3] images."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            out.append(net(to_tensor(list(pixels[i : i + batch])).to(device)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.dim))


def fit_domain_check(features: np.ndarray, groups: Sequence[str], *, feature_net: str, identity: str,
                     quantile: float = DOMAIN_QUANTILE, folds: int = FOLDS, ridge: float = RIDGE,
                     fitted_on: str = "", seed: int = 0) -> DomainCheck:
    """The Gaussian of all `features` [N, D], with the threshold at `quantile` of the out-of-fold distances."""
    x = np.asarray(features, np.float64)
    if len(x) < MIN_IMAGES:
        raise DomainError(f"a domain check needs at least {MIN_IMAGES} images, got {len(x)}")
    order = np.random.default_rng(seed).permutation(len(x))
    oof = np.zeros(len(x))
    for k in range(folds):
        held = order[k::folds]
        rest = np.setdiff1d(order, held)
        mean, precision = _gaussian(x[rest], ridge)
        oof[held] = _mahalanobis(x[held], mean, precision)
    threshold = float(np.quantile(oof, quantile))
    mean, precision = _gaussian(x, ridge)
    per = {}
    g = np.asarray(groups)
    for name in dict.fromkeys(groups):
        d = oof[g == name]
        per[name] = {"n": int(len(d)), "median": round(float(np.median(d)), 3),
                     "q99": round(float(np.quantile(d, 0.99)), 3), "over": int((d > threshold).sum())}
    return DomainCheck(feature_net, identity, mean, precision, threshold, quantile, len(x), per, fitted_on)


def bundled_domain_path(model_name: str) -> Path | None:
    path = CALIBRATIONS_DIR / f"{model_name}.domain.safetensors"
    return path if path.is_file() else None


def domain_check_for(model_name: str, explicit_path: str | Path | None = None) -> DomainCheck | None:
    """The explicit file when given, else the model's bundled domain check, else None."""
    if explicit_path is not None:
        return DomainCheck.load(explicit_path)
    path = bundled_domain_path(model_name)
    return DomainCheck.load(path) if path is not None else None
