"""One call that measures a generator: FID, precision/recall and/or PPL with their networks, data and settings
(`sgproject metrics`).

Networks are loaded first, so that missing weights fail before any data are decoded or images rendered. Progress
and notices (e.g. "this FID uses a random feature network") reach the caller through callbacks; the caller decides
how to show them (docs/ARCHITECTURE.md, "Metrics").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from generator.checkpoint import ModelInfo
from generator.data.datasets import open_dataset
from generator.metrics.common import MetricError, MetricProgress
from generator.metrics.features import load_feature_network
from generator.metrics.fid import compute_fid
from generator.metrics.lpips import load_perceptual
from generator.metrics.precision_recall import DEFAULT_K, compute_precision_recall
from generator.metrics.ppl import PPL_SAMPLING, compute_ppl
from generator.networks import Generator

log = logging.getLogger(__name__)

METRICS = ("fid", "pr", "ppl")  # pr: improved precision and recall, in the feature space of FID
# (kind, message): kind 'warning' (results not comparable with the usual ones), 'note', or 'skipped' (data files
# that could not be read)
MetricNotice = Callable[[str, str], None]


@dataclass
class MetricsReport:
    """What `evaluate` measured; `to_json` is the record `sgproject metrics --json` prints."""

    model: str  # the model's name
    model_sha256: str  # of its weights
    resolution: int  # of its images, px
    metrics: dict[str, dict] = field(default_factory=dict)  # 'fid' / 'pr' / 'ppl' -> the record of compute_*

    def to_json(self) -> str:
        record = {"model": self.model, "model_sha256": self.model_sha256, "resolution": self.resolution,
                  "metrics": self.metrics}
        return json.dumps(record)


def _log_notice(kind: str, message: str) -> None:
    (log.info if kind == "note" else log.warning)(message)


def evaluate(
    G: Generator,
    info: ModelInfo,
    *,
    metrics: Sequence[str] = ("fid", "ppl"),  # any of METRICS; always computed in METRICS' order
    data: str | Path | None = None,  # real images for FID: a folder or portraits:N[:SEED]
    feature_net: str = "inception",  # FID features: inception, portraits or random (generator.metrics.features)
    inception_weights: str | Path | None = None,  # None: $SGPROJECT_INCEPTION, torchvision's cache, a download
    vgg_weights: str | Path | None = None,  # LPIPS backbone for PPL; None: $SGPROJECT_VGG16, cache, download
    n_gen: int = 10_000,  # generated images for FID and precision/recall
    n_real: int | None = None,  # the first N real images; None: all
    n_ppl: int = 2_000,  # path samples for PPL
    k: int = DEFAULT_K,  # precision/recall: the nearest neighbour that sets each ball's radius
    crop: bool = False,  # PPL on the face region only
    sampling: str = "end",  # PPL paths: 'end' (t = 0) or 'full' (t ~ U(0, 1))
    truncation_psi: float = 1.0,  # for both metrics
    seed: int = 0,  # of the sampled latents
    batch: int = 32,  # images per forward pass
    device: torch.device | str = "cpu",  # where G lives
    progress: MetricProgress | None = None,  # (stage, done, total)
    notify: MetricNotice | None = None,  # (kind, message); None: notices are logged
) -> MetricsReport:
    """FID and precision/recall against `data` and/or PPL in W of G, in one report."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise MetricError(f"unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    needs_data = [m for m in ("fid", "pr") if m in metrics]
    if needs_data and data is None:
        name = {"fid": "FID", "pr": "precision/recall"}[needs_data[0]]
        raise MetricError(f"{name} needs real images: give the data (a folder, or portraits:N)")
    if "ppl" in metrics and sampling not in PPL_SAMPLING:
        raise MetricError(f"PPL sampling must be one of {', '.join(PPL_SAMPLING)}, got {sampling!r}")
    tell = notify or _log_notice

    # Networks first: a missing weights file fails before any data are decoded or images rendered.
    net = lpips = None
    if needs_data:
        net = load_feature_network(feature_net, inception_weights=inception_weights, device=device)
        if feature_net == "random":
            tell("warning", f"FID with a RANDOM feature network ({net.identity}): a smoke test, comparable only "
                 "with runs made the same way, never with published FIDs")
        elif feature_net == "portraits":
            tell("note", f"FID in the feature space of the portrait attribute network ({net.identity}): comparable "
                 "with FIDs in that space only, never with published (Inception) FIDs")
    if "ppl" in metrics:
        warn = (lambda message: notify("warning", message)) if notify else None
        lpips = load_perceptual(vgg_weights, device, warn=warn)

    report = MetricsReport(info.name, info.sha256, G.img_resolution)
    if net is not None:
        decoding = (lambda done, total: progress("decoding data", done, total)) if progress else None
        dataset = open_dataset(data, G.img_resolution, progress=decoding)
        if dataset.skipped:
            tell("skipped", f"skipped {len(dataset.skipped)} unreadable files in {data}")
        if "fid" in metrics:
            report.metrics["fid"] = compute_fid(
                G, dataset, n_gen=n_gen, n_real=n_real, batch=batch, device=device, feature_net=net,
                truncation_psi=truncation_psi, seed=seed, progress=progress,
            )
            report.metrics["fid"]["data"] = dataset.source
        if "pr" in metrics:
            report.metrics["pr"] = compute_precision_recall(
                G, dataset, n=min(n_gen, n_real or n_gen), k=k, batch=batch, device=device, feature_net=net,
                truncation_psi=truncation_psi, seed=seed, progress=progress,
            )
            report.metrics["pr"]["data"] = dataset.source
    if lpips is not None:
        report.metrics["ppl"] = compute_ppl(
            G, n=n_ppl, crop=crop, sampling=sampling, truncation_psi=truncation_psi, batch=batch, device=device,
            perceptual=lpips, seed=seed, progress=progress,
        )
    return report
