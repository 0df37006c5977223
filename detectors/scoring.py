"""Forensic features of an image, from its projection into the generator.

The paper's score is the LPIPS distance between an image and its W-space projection: the generator reproduces its
own outputs almost exactly and cannot reproduce real photographs. Beside it:

- `psnr`: pixel fidelity of the reconstruction (dB);
- `w_typicality`: distance of the projected w from the mapping's average, in units of its RMS spread (~1 for
  the model's own images; real images often push w to atypical places);
- `noise_gaussianity`: how far the optimised noise maps drifted from white Gaussian noise;
- `lpips_wplus` (optional): the distance of a W+ projection. W+ fits almost anything, so it is evidence only beside
  the W distance (their gap is the telling part).

`lpips` and `psnr` compare the target with the reconstruction *after* the reconstruction went through the target's
own degradation (JPEG tables, resize; see detectors/degrade.py), so that re-saved generated images are still caught;
`lpips_raw` and `psnr_raw` compare it before (`lpips_raw` on the reconstruction as saved, uint8; `psnr_raw` on the
projection's float image). Each distance costs one VGG pass per image, so `lpips_raw` is measured again only where a
degradation was re-applied; elsewhere it is `lpips`.

A spatial LPIPS map shows *where* the reconstruction fails: evidence for partly generated or edited images.

Without `perceptual_features` (only for a guess alone, 0 steps: `detect --fast` and the cascade's first stage when
their calibration uses no LPIPS feature) no VGG pass is made at all: no `lpips`, `lpips_raw`, and the heat map
shows the absolute pixel difference instead (full heat at PIXEL_HEAT_VMAX). The two VGG passes are most of the
cost of a guess alone at 64 px.

Complexity references (`lpips_ref_<name>`, REFERENCES; only with an encoder): the distance between a transformed
copy of the image and the encoder's one-pass reconstruction of that copy. `flip` turns the image upside down, which
keeps how complex it is but takes it out of what the generator makes, so the distance measures how easy the image
is to reproduce whoever made it; beside `lpips` (a logistic model on log distances can form their ratio) it corrects
the bias of every reconstruction score towards calling simple images generated (the idea of "A Debiased
Reconstruction-based Framework for Training-Free Detection", CVPR 2026). `guess` is the image itself: the distance
before any optimisation. `content_measures` (detectors/content.py: contrast, detail) are recorded for every image
too, as covariates. One encoder pass, one synthesis and one VGG pass per reference and image.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from detectors.calibration import REF_PREFIX
from detectors.content import content_measures
from detectors.degrade import Degradation
from generator.metrics.lpips import PerceptualDistance
from generator.networks import Generator
from generator.util.imaging import to_tensor, to_uint8
from projector.encoder import Encoder
from projector.project import Projection, ProjectorConfig, mse_psnr, project, uses_amp, w_statistics

FEATURES = ("lpips", "psnr", "w_typicality", "noise_gaussianity")
REFERENCES = {  # name -> the transform of an [N, C, H, W] batch that keeps its complexity, not its origin
    "flip": lambda x: torch.flip(x, dims=[2]),  # upside down
    "guess": lambda x: x,  # the image itself: the encoder's guess before any optimisation
}
HEAT_VMAX = 0.5  # LPIPS map value shown at full heat (fixed, so maps are comparable across images)
PIXEL_HEAT_VMAX = 0.25  # without LPIPS: the mean absolute pixel difference (of 1) shown at full heat


@dataclass
class ImageScore:
    features: dict[str, float]  # FEATURES (+ lpips_wplus when asked for)
    projection: Projection  # the W projection (reconstruction, w, noise, trace)
    heatmap: np.ndarray  # uint8 [R, R, 3] RGB: where the reconstruction differs perceptually
    reconstruction: np.ndarray  # uint8 [R, R, 3]: the W projection's image as saved


def w_typicality(w: torch.Tensor, w_avg: torch.Tensor, w_std: float) -> float:
    """||w - w_avg|| / w_std for the first w of a projection ([num_ws, w_dim] or [w_dim])."""
    w0 = w[0] if w.ndim == 2 else w
    return float((w0.float().cpu() - w_avg.float().cpu()).norm() / max(w_std, 1e-8))


def heatmap_rgb(spatial: torch.Tensor, size: int, vmax: float = HEAT_VMAX) -> np.ndarray:
    """[1, h, w] LPIPS map -> uint8 [size, size, 3] RGB with the inferno colour map, 0..vmax; [N, 1, h, w] maps ->
    [N, size, size, 3] (one resize for the batch)."""
    batch = spatial.ndim == 4
    m = F.interpolate(spatial.float() if batch else spatial[None].float(), size=(size, size), mode="bilinear",
                      align_corners=False)[:, 0]
    u8 = (m / vmax).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()  # [N, size, size]
    rgb = np.stack([cv2.cvtColor(cv2.applyColorMap(x, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB) for x in u8])
    return rgb if batch else rgb[0]


def score_batch(
    G: Generator,
    targets: torch.Tensor,  # [N, C, R, R] in [-1, 1]
    *,
    config: ProjectorConfig,
    perceptual: PerceptualDistance,
    seed: int = 0,
    device: torch.device | str = "cpu",
    wplus: bool = False,  # also project into W+ and record its distance
    degradations: Sequence[Degradation | None] | None = None,  # per image; None: compare as is
    callback: Callable[[int, int, int], None] | None = None,
    frame_every: int | None = None,  # keep the W projection's image every k steps (Projection.frames); None: none
    encoder: Encoder | None = None,  # with config.init='encoder': each projection starts at its guess
    timings: dict[str, float] | None = None,  # seconds are added here under 'projection' and 'scoring'
    references: Sequence[str] = (),  # REFERENCES names: also record lpips_ref_<name> (needs the encoder)
    perceptual_features: bool = True,  # False (0 steps only): no VGG pass, no lpips (module docstring)
) -> list[ImageScore]:
    """Project a batch into W (and W+ when asked) and compute every feature and the heat maps."""
    if not perceptual_features and (config.num_steps or wplus or references or config.init_samples):
        raise ValueError("only a guess alone (0 steps, no W+, no references, no start search) can be scored "
                         "without LPIPS")
    t0 = time.perf_counter()
    cfg_w = dataclasses.replace(config, space="w")
    result = project(G, targets, config=cfg_w, seed=seed, device=device, perceptual=perceptual, callback=callback,
                     return_target_features=perceptual_features, encoder=encoder,
                     record_frames=frame_every is not None, frame_every=frame_every or 1,
                     measure=False)  # measured below, on what is compared
    projections, target_feats = result if perceptual_features else (result, None)
    if uses_amp(cfg_w, device):
        target_feats = None  # bfloat16 numbers: the comparison below is in float32
    w_avg, w_std = w_statistics(G, cfg_w.w_avg_samples)
    wplus_dist = None
    if wplus:
        cfg_p = dataclasses.replace(config, space="w+")
        wplus_dist = [p.lpips for p in project(G, targets, config=cfg_p, seed=seed, device=device,
                                               perceptual=perceptual, callback=callback, encoder=encoder)]
    t1 = time.perf_counter()
    degradations = list(degradations) if degradations is not None else [None] * len(projections)
    raw = list(to_uint8(torch.stack([p.image for p in projections])))  # uint8 [R, R, 3]: the reconstruction as saved
    raw_targets = to_uint8(targets.float().cpu())  # [N, R, R, 3]: the targets' pixels, for their content measures
    degraded = [i for i, deg in enumerate(degradations) if deg is not None and not deg.is_identity]
    matched = list(raw)  # the reconstruction after the target's degradation: what is compared
    for i in degraded:
        matched[i] = degradations[i].apply(raw[i])
    recon = to_tensor(matched, device=device)
    tgt = targets.to(device, torch.float32)
    _, psnr = mse_psnr(recon.cpu(), tgt.cpu())
    if perceptual_features:
        dist, dist_raw, spatial = _perceptual(perceptual, recon, tgt, target_feats, raw, degraded, device)
        heatmaps = heatmap_rgb(spatial, G.img_resolution)  # [N, R, R, 3]
    else:  # where the pixels differ, mean over channels, in units of the full range
        dist = dist_raw = None
        pixel_map = (recon.cpu() - tgt.cpu()).abs().mean(dim=1, keepdim=True) / 2  # [N, 1, R, R] in [0, 1]
        heatmaps = heatmap_rgb(pixel_map, G.img_resolution, vmax=PIXEL_HEAT_VMAX)
    refs = reference_distances(G, targets, references, config=cfg_w, perceptual=perceptual, encoder=encoder,
                               device=device, seed=seed) if references else {}
    out = []
    for i, p in enumerate(projections):
        feats = {
            **({"lpips": float(dist[i])} if dist is not None else {}),
            "psnr": float(psnr[i]),
            "w_typicality": w_typicality(p.w, w_avg, w_std),
            "noise_gaussianity": p.noise_gaussianity,
            **({"lpips_raw": float(dist_raw[i])} if dist_raw is not None else {}),
            "psnr_raw": p.psnr,
        }
        if wplus_dist is not None:
            feats["lpips_wplus"] = wplus_dist[i]
        for name, d in refs.items():
            feats[REF_PREFIX + name] = d[i]
        feats.update(content_measures(raw_targets[i]))
        out.append(ImageScore(feats, p, heatmaps[i], raw[i]))
    if timings is not None:
        timings["projection"] = timings.get("projection", 0.0) + t1 - t0
        timings["scoring"] = timings.get("scoring", 0.0) + time.perf_counter() - t1
    return out


def _perceptual(perceptual: PerceptualDistance, recon: torch.Tensor, tgt: torch.Tensor, target_feats, raw,
                degraded: list[int], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lpips [N], lpips_raw [N], the spatial LPIPS map [N, 1, h, w]) of the reconstructions against the targets;
    lpips_raw is measured again only for the `degraded` images (elsewhere it is lpips)."""
    with torch.no_grad():
        if target_feats is None:
            target_feats = perceptual.features(tgt)
        recon_feats = perceptual.features(recon)  # once, for both the map and the distance
        dist, spatial = perceptual.distance_and_map(recon_feats, target_feats)  # [N], [N, 1, h, w]
        dist, spatial = dist.cpu(), spatial.cpu()
        dist_raw = dist.clone()  # the same images where nothing was re-applied; else measured again
        if degraded:
            raw_feats = perceptual.features(to_tensor([raw[i] for i in degraded], device=device))
            dist_raw[degraded] = perceptual.distance_between(raw_feats, [f[degraded] for f in target_feats]).cpu()
    return dist, dist_raw, spatial


def reference_distances(G: Generator, targets: torch.Tensor, names: Sequence[str], *, config: ProjectorConfig,
                        perceptual: PerceptualDistance, encoder: Encoder | None, device: torch.device | str,
                        seed: int = 0) -> dict[str, list[float]]:
    """{name: [N] LPIPS between REFERENCES[name](targets) and the encoder's one-pass reconstruction of it}."""
    unknown = [n for n in names if n not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference(s) {', '.join(unknown)}; known: {', '.join(REFERENCES)}")
    if encoder is None:
        raise ValueError("complexity references are the encoder's reconstructions: they need an encoder")
    cfg0 = dataclasses.replace(config, space="w", num_steps=0, init="encoder", encoder_sha256=encoder.identity())
    out = {}
    for name in names:
        ps = project(G, REFERENCES[name](targets), config=cfg0, seed=seed, device=device, perceptual=perceptual,
                     encoder=encoder)
        out[name] = [float(p.lpips) for p in ps]
    return out
