"""`project()`: find the latent (W or W+) and noise maps that make the generator reproduce each target image.

The paper's projector (Karras et al. 2020, appendix D) on a batch: every image has its own w and its own noise
maps, optimised independently in one batched computation. Losses are summed over images (not averaged), and Adam
is elementwise, so an image's result does not depend on which other images share its batch. An image that stops
early leaves the batch: its parameters get no gradient, and Adam leaves parameters without one untouched.

The reconstruction that is reported is rendered with the optimised noise (the official PyTorch projector re-renders
with the model's stored noise, a known flaw).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from generator.metrics.lpips import PerceptualDistance, load_perceptual
from generator.networks import Generator
from generator.util.errors import SGProjectError
from generator.util.imaging import to_uint8
from projector.encoder import Encoder
from projector.noise import gaussianity, noise_regularization, normalize_noise_
from projector.schedule import learning_rate, w_noise_scale

SPACES = ("w", "w+")


class ProjectionError(SGProjectError):
    """Projection cannot run with these inputs (wrong image size, bad settings, ...)."""


@dataclass
class ProjectorConfig:
    space: str = "w"  # 'w': one w broadcast to all layers (the paper); 'w+': one w per layer
    num_steps: int = 1000  # optimisation steps (0 only with init='encoder': the guess itself, with the initial noise)
    lr: float = 0.1  # peak Adam learning rate
    lr_rampup: float = 0.05  # fraction of the run with a linear ramp-up
    lr_rampdown: float = 0.25  # fraction of the run with a cosine ramp-down
    initial_noise_factor: float = 0.05  # noise on w at the start, times w_std
    noise_ramp_length: float = 0.75  # fraction of the run after which w gets no noise
    noise_weight: float = 1e5  # weight of the noise regulariser
    w_avg_samples: int = 10_000  # mapped z used to estimate w_avg and w_std
    early_stop: int = 0  # stop an image after this many steps without improving by early_stop_delta (0: off)
    early_stop_delta: float = 1e-4  # improvement of the LPIPS distance that counts
    amp: bool = False  # bfloat16 autocast for synthesis and LPIPS (CUDA only)
    init_samples: int = 0  # >0: start each image at the closest (LPIPS) of its start (init) and this many sampled w
    init: str = "w_avg"  # each image's start: 'w_avg' (the paper) or 'encoder' (its guess; project(encoder=...))
    encoder_sha256: str = ""  # init='encoder': the encoder's identity (Encoder.identity()); fingerprints need it
    mse_weight: float = 0.0  # a pixel term beside LPIPS: weight of the mean squared error (pixels in [-1, 1])
    geometry: float = 0.0  # >0: also search a zoom and shift of the rendering, each at most this (of the half-width)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ProjectionError(f"space must be 'w' or 'w+', got {self.space!r}")
        least = 0 if self.init == "encoder" else 1  # 0 steps: the encoder's guess is the projection
        if self.num_steps < least:
            why = "" if least == 0 else " (0 only with init='encoder': its guess, not optimised)"
            raise ProjectionError(f"num_steps must be at least {least}{why}, got {self.num_steps}")
        if self.init_samples < 0:
            raise ProjectionError(f"init_samples must be >= 0, got {self.init_samples}")
        if not self.mse_weight >= 0:
            raise ProjectionError(f"mse_weight must be >= 0, got {self.mse_weight}")
        if not 0 <= self.geometry < 0.5:
            raise ProjectionError(f"geometry must be in [0, 0.5), got {self.geometry}")
        if self.init not in INITS:
            raise ProjectionError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.encoder_sha256 and self.init != "encoder":
            raise ProjectionError(f"encoder_sha256 is set but init is {self.init!r}, not 'encoder'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def using_encoder(self, encoder: Encoder) -> ProjectorConfig:
        """This config with each image starting at `encoder`'s guess (a projector.encoder.Encoder), its identity
        recorded so that the fingerprint tells encoders apart."""
        return dataclasses.replace(self, init="encoder", encoder_sha256=encoder.identity())

    def fingerprint(self) -> str:
        """A short hash of every setting that changes a score (calibrations and resumed runs compare it).

        Settings added later (ADDED_OFF) enter it only when switched on, so fingerprints made before they existed
        stay valid for the same behaviour. With init='encoder' the encoder's identity is part of it (required)."""
        if self.init == "encoder" and not self.encoder_sha256:
            raise ProjectionError("init='encoder' without encoder_sha256: the fingerprint must name the encoder "
                                  "(use ProjectorConfig.using_encoder)")
        d = self.to_dict()
        for k, off in ADDED_OFF.items():
            if d[k] == off:
                del d[k]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# From an encoder's guess the start is already close: a lower peak learning rate and no noise on w keep what the
# guess found (bench/detect.py; on 16 + 16 images, 25 steps: LPIPS-alone AUC 0.94 against 0.90 with the w_avg
# schedule's lr 0.1 and noise 0.05).
ENCODER_SCHEDULE = {"lr": 0.03, "initial_noise_factor": 0.0}


def projector_config(encoder: Encoder | None = None, **fields) -> ProjectorConfig:
    """Settings for projections that start at `encoder`'s guess (its identity recorded; ENCODER_SCHEDULE where
    `fields` do not say otherwise), or at w_avg (the paper) when `encoder` is None. 0 steps is the guess itself."""
    if encoder is None:
        return ProjectorConfig(**fields)
    return ProjectorConfig(**{**ENCODER_SCHEDULE, **fields, "init": "encoder", "encoder_sha256": encoder.identity()})


INITS = ("w_avg", "encoder")
# setting: its value that means "as before it existed"
ADDED_OFF = {"init_samples": 0, "init": "w_avg", "encoder_sha256": "", "mse_weight": 0.0, "geometry": 0.0}
# The geometric parameters move GEOMETRY_LR_SCALE times faster than w: a crop's offset must be found within the
# few steps that start at an encoder's guess.
GEOMETRY_LR_SCALE = 3.0


def uses_amp(config: ProjectorConfig, device: torch.device | str) -> bool:
    """Whether `project` runs synthesis and LPIPS under bfloat16 autocast: `amp` is set and the device is CUDA."""
    return config.amp and torch.device(device).type == "cuda"


@dataclass
class Projection:
    """The result for one image. Tensors are on the CPU."""

    w: torch.Tensor  # [num_ws, w_dim]
    noise: list[torch.Tensor]  # [1, 1, r, r] per noise layer
    image: torch.Tensor  # [C, R, R] in [-1, 1], rendered from w with the optimised noise
    lpips: float  # LPIPS(target, image)
    mse: float  # mean squared error with pixels in [0, 1]
    psnr: float  # dB, from mse
    steps: int  # optimisation steps taken
    stopped_early: bool
    trace: list[dict] = field(default_factory=list)  # per step: step, lpips, noise_reg, lr
    seconds: float = 0.0  # share of the batch's wall time
    noise_gaussianity: float = 0.0  # see projector.noise.gaussianity
    geometry: tuple[float, float, float] | None = None  # with ProjectorConfig.geometry: (zoom, shift x, shift y)
    frames: list[np.ndarray] | None = None  # uint8 [R, R, C] per kept step (frame_every), when record_frames

    def summary(self) -> dict:
        return {
            "lpips": self.lpips, "mse": self.mse, "psnr": self.psnr, "steps": self.steps,
            "stopped_early": self.stopped_early, "seconds": round(self.seconds, 3),
            "noise_gaussianity": self.noise_gaussianity,
            **({"geometry": [round(x, 5) for x in self.geometry]} if self.geometry is not None else {}),
        }


# ---------------------------------------------------------------------------------------------- w statistics

_W_STATS: "weakref.WeakKeyDictionary[Generator, dict]" = weakref.WeakKeyDictionary()


def w_statistics(G: Generator, n: int = 10_000, seed: int = 123) -> tuple[torch.Tensor, float]:
    """w_avg and w_std of G from n mapped z (fixed seed); computed once per model and device. ([w_dim], scalar)"""
    per_model = _W_STATS.setdefault(G, {})
    key = (n, seed, str(G.device))
    if key not in per_model:
        per_model[key] = G.estimate_w_stats(n, seed=seed)
    return per_model[key]


# -------------------------------------------------------------------------------------------------- metrics


def mse_psnr(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image MSE with pixels in [0, 1] and the PSNR in dB. Inputs in [-1, 1]. ([N], [N])"""
    mse = ((a - b) / 2).square().mean(dim=[1, 2, 3])
    psnr = -10 * torch.log10(mse.clamp_min(1e-12))
    return mse, psnr


# ------------------------------------------------------------------------------------------------- geometry


def geometry_of(params: torch.Tensor, limit: float) -> torch.Tensor:
    """(zoom, shift x, shift y) from unbounded parameters [N, 3]: each within +-limit, 0 at 0. [N, 3]"""
    return limit * torch.tanh(params)


def warp(images: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """`images` [N, C, R, R] seen through (zoom, shift x, shift y) [N, 3] (units of the half-width): zoom z shows
    the central 1 - z of the image enlarged, shifted; e.g. a 95% crop is zoom 0.05 with a shift within +-0.05.
    Bicubic; (0, 0, 0) returns the images unchanged."""
    scale = 1 - geometry[:, 0]
    zero = torch.zeros_like(scale)
    theta = torch.stack([torch.stack([scale, zero, geometry[:, 1]], 1),
                         torch.stack([zero, scale, geometry[:, 2]], 1)], 1)  # [N, 2, 3]
    grid = torch.nn.functional.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)


# -------------------------------------------------------------------------------------------------- project


def project(
    G: Generator,
    targets: torch.Tensor,  # [N, C, R, R] in [-1, 1], at G's resolution
    *,
    config: ProjectorConfig | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    perceptual: PerceptualDistance | None = None,
    callback: Callable[[int, int, int], None] | None = None,  # (step, num_steps, images still optimising)
    record_frames: bool = False,
    frame_every: int = 1,  # with record_frames: keep every k-th step's image (and each image's last one)
    return_target_features: bool = False,
    encoder: Encoder | None = None,  # with init='encoder': the guess each image starts from (projector.encoder)
    measure: bool = True,  # False: no final LPIPS (Projection.lpips is NaN) for a caller that measures its own way
    # (with no steps and no init_samples, the targets then get no VGG pass at all)
    **overrides,  # ProjectorConfig fields, e.g. space='w+', num_steps=200
) -> list[Projection] | tuple[list[Projection], list[torch.Tensor]]:
    """Project every target image; returns one Projection per image, in order.

    With `return_target_features`, returns (projections, target_features): the LPIPS features of the targets that
    the projection was measured against (`PerceptualDistance.features`: one tensor per VGG layer, [N, C_l, h_l, w_l],
    unit-normalised along C_l, on `device`), so that a caller comparing more images with the same targets need not
    compute them again. They were computed under the projection's autocast (`uses_amp`): float32 numbers unless
    amp ran on CUDA.

    Randomness (initial noise maps, noise on w) is drawn per image from a generator seeded by `seed`, so an image
    gets the same result in any batch.

    With `init='encoder'` each image starts at `encoder`'s guess (W: its w, or the mean of its W+ guess over the
    layers; W+: its W+ guess, or its w on every layer); a config naming another encoder (`encoder_sha256`) is
    refused.
    """
    cfg = dataclasses.replace(config or ProjectorConfig(), **overrides)
    if frame_every < 1:
        raise ValueError(f"frame_every must be at least 1, got {frame_every}")
    device = torch.device(device) if device is not None else G.device
    n, c, h, w_ = targets.shape
    if (c, h, w_) != (G.img_channels, G.img_resolution, G.img_resolution):
        raise ProjectionError(
            f"targets must be [N, {G.img_channels}, {G.img_resolution}, {G.img_resolution}] for this model, "
            f"got {list(targets.shape)}"
        )
    G = G.to(device).eval().requires_grad_(False)
    perceptual = perceptual if perceptual is not None else load_perceptual(device=device)
    perceptual = perceptual.to(device)
    targets = targets.to(device, torch.float32)
    _check_encoder(cfg, encoder, G)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=uses_amp(cfg, device))

    w_avg, w_std = w_statistics(G, cfg.w_avg_samples)
    num_ws = G.num_ws
    w_layers = num_ws if cfg.space == "w+" else 1
    shapes = G.synthesis.noise_shapes()

    # One set of leaves per image: an image that stops simply gets no more gradients.
    gens = [torch.Generator(device="cpu").manual_seed(seed) for _ in range(n)]
    drawn = [[torch.randn((1, 1, *s), generator=gens[i]) for s in shapes] for i in range(n)]
    layers = [torch.cat([drawn[i][k] for i in range(n)]).to(device) for k in range(len(shapes))]  # [n, 1, r, r]
    normalize_noise_(layers)  # per image and map: the same as one image at a time, in one call per layer
    noise = [[layers[k][i : i + 1].clone().requires_grad_(True) for k in range(len(shapes))] for i in range(n)]
    target_feats = None  # nothing compares with the targets' features: no steps, no start search, no measuring
    if cfg.num_steps > 0 or cfg.init_samples or measure or return_target_features:
        with torch.no_grad(), autocast:
            target_feats = perceptual.features(targets)
    own = None
    if cfg.init == "encoder":
        with torch.no_grad():
            guess = encoder.to(device).eval().guess(targets)  # [n, w_dim] or [n, num_ws, w_dim]
        own = guess if guess.ndim == 3 else guess[:, None]  # [n, 1 or num_ws, w_dim]
    if cfg.init_samples:
        starts = _closest_starts(G, perceptual, target_feats, w_avg, [m.detach() for m in noise[0]],
                                 cfg.init_samples, seed, autocast, own=own)
        starts = starts if own is not None else starts[:, None]  # [n, 1 or num_ws, w_dim]
    else:
        starts = own if own is not None else w_avg[None, None].expand(n, 1, -1)
    w_opt = [_start_leaf(starts[i], w_layers) for i in range(n)]
    params = [p for i in range(n) for p in [w_opt[i], *noise[i]]]
    geo = [torch.zeros(1, 3, device=device, requires_grad=True) for _ in range(n)] if cfg.geometry else None
    groups = [{"params": params, "scale": 1.0}]
    if geo is not None:
        groups.append({"params": geo, "scale": GEOMETRY_LR_SCALE})
    opt = torch.optim.Adam(groups, betas=(0.9, 0.999), lr=cfg.lr)

    active = list(range(n))
    best = [math.inf] * n
    since_best = [0] * n
    steps_taken = [0] * n
    stopped = [False] * n
    traces: list[list[dict]] = [[] for _ in range(n)]
    frames: list[list[np.ndarray]] | None = [[] for _ in range(n)] if record_frames else None
    t_start = time.time()

    for step in range(cfg.num_steps):
        if not active:
            break
        t = step / cfg.num_steps
        lr = learning_rate(t, cfg.lr, rampup=cfg.lr_rampup, rampdown=cfg.lr_rampdown)
        for group in opt.param_groups:
            group["lr"] = lr * group["scale"]
        sigma = w_noise_scale(t, w_std, factor=cfg.initial_noise_factor, ramp_length=cfg.noise_ramp_length)

        ws = torch.cat([w_opt[i] for i in active])  # [A, w_layers, w_dim]
        w_noise = torch.cat([torch.randn(w_opt[i].shape, generator=gens[i]) for i in active]).to(device)
        ws = (ws + w_noise * sigma).expand(-1, num_ws, -1) if w_layers == 1 else ws + w_noise * sigma
        maps = [torch.cat([noise[i][k] for i in active]) for k in range(len(shapes))]  # [A, 1, r, r] each
        with autocast:
            synth = G.synthesis(ws, noise=maps)
            if geo is not None:
                synth = warp(synth, geometry_of(torch.cat([geo[i] for i in active]), cfg.geometry))
            dist = perceptual.distance_to(synth, [f[active] for f in target_feats]).float()  # [A]
        reg = noise_regularization(maps)  # [A]
        loss = (dist + cfg.noise_weight * reg).sum()
        if cfg.mse_weight:  # the pixels too, where the perceptual distance is blind (flat, uniform areas)
            loss = loss + cfg.mse_weight * (synth.float() - targets[active]).square().mean(dim=(1, 2, 3)).sum()

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for i in active:
            normalize_noise_(noise[i])

        d_list, r_list = dist.detach().cpu().tolist(), reg.detach().cpu().tolist()
        imgs = None  # uint8 [A, R, R, C], made when a frame is kept
        still = []
        for j, i in enumerate(active):
            steps_taken[i] = step + 1
            traces[i].append({"step": step, "lpips": d_list[j], "noise_reg": r_list[j], "lr": lr})
            if d_list[j] < best[i] - cfg.early_stop_delta:
                best[i], since_best[i] = d_list[j], 0
            else:
                since_best[i] += 1
            if cfg.early_stop and since_best[i] >= cfg.early_stop and step + 1 < cfg.num_steps:
                stopped[i] = True
            else:
                still.append(i)
            if frames is not None and ((step + 1) % frame_every == 0 or step + 1 == cfg.num_steps or stopped[i]):
                imgs = to_uint8(synth) if imgs is None else imgs
                frames[i].append(imgs[j])
        active = still
        if callback:
            callback(step + 1, cfg.num_steps, len(active))

    elapsed = time.time() - t_start
    geometries = geometry_of(torch.cat(geo).detach(), cfg.geometry) if geo is not None else None
    projections = _finish(G, targets, target_feats if measure else None, perceptual, w_opt, noise, steps_taken,
                          stopped, traces, frames, elapsed, num_ws, autocast, geometries)
    return (projections, target_feats) if return_target_features else projections


def _check_encoder(cfg: ProjectorConfig, encoder, G: Generator) -> None:
    """ProjectionError unless `encoder` is given exactly when init='encoder', is the one the config names, and
    fits G."""
    if cfg.init != "encoder":
        if encoder is not None:
            raise ProjectionError(f"an encoder was given but init is {cfg.init!r}; use init='encoder'")
        return
    if encoder is None:
        raise ProjectionError("init='encoder' needs an encoder (project(..., encoder=E); sgproject: --encoder)")
    geometry = (G.img_resolution, G.w_dim, G.num_ws, G.img_channels)
    if (encoder.resolution, encoder.w_dim, encoder.num_ws, encoder.img_channels) != geometry:
        raise ProjectionError(f"the encoder was made for {encoder.resolution} px and w [{encoder.num_ws}, "
                              f"{encoder.w_dim}], this model is {G.img_resolution} px with w [{G.num_ws}, {G.w_dim}]")
    if cfg.encoder_sha256 and cfg.encoder_sha256 != encoder.identity():
        raise ProjectionError(f"the settings name encoder {cfg.encoder_sha256}, but encoder "
                              f"{encoder.identity()} was given")


def _start_leaf(start: torch.Tensor, w_layers: int) -> torch.Tensor:
    """The optimised w of one image from its start [1 or num_ws, w_dim]: [1, w_layers, w_dim], a fresh leaf. A W+
    start projected in W starts at its mean over the layers; a W start in W+ is repeated on every layer."""
    if start.shape[0] == w_layers:
        w = start
    elif w_layers == 1:
        w = start.mean(dim=0, keepdim=True)
    else:
        w = start.expand(w_layers, -1)
    return w.detach().clone()[None].requires_grad_(True)


@torch.no_grad()
def _closest_starts(G, perceptual, target_feats, w_avg, maps, k, seed, autocast, chunk: int = 32,
                    own: torch.Tensor | None = None) -> torch.Tensor:
    """For each target, the candidate w whose image is closest in LPIPS: a start in the right basin, so fewer steps
    reach the same distance. [N, w_dim], or [N, L, w_dim] given `own`

    Candidates: w_avg (or, given `own` [N, L, w_dim], each image's own start, e.g. an encoder's guess) and k mapped
    z, the same for every image. They depend on `seed` only, and are rendered with the image's initial noise maps
    (identical for every image of a run: they come from the same seed), so an image's start does not depend on its
    batch.
    """
    dev = w_avg.device
    z = torch.randn(k, G.z_dim, generator=torch.Generator(device="cpu").manual_seed(10_007 + seed)).to(dev)
    cand = G.mapping(z)[:, 0] if own is not None else torch.cat([w_avg[None], G.mapping(z)[:, 0]])  # [K(+1), w_dim]
    n = target_feats[0].shape[0]
    dists = torch.empty(n, len(cand), device=dev)
    for a in range(0, len(cand), chunk):
        w = cand[a : a + chunk]
        with autocast:
            img = G.synthesis(w[:, None].expand(-1, G.num_ws, -1), noise=[m.expand(len(w), -1, -1, -1) for m in maps])
            feats = perceptual.features(img)
        for i in range(n):
            tf = [f[i : i + 1].expand(len(w), *f.shape[1:]) for f in target_feats]
            dists[i, a : a + len(w)] = perceptual.distance_between(feats, tf).float()
    best = cand[dists.argmin(dim=1)]  # [N, w_dim]
    if own is None:
        return best
    own_d = torch.empty(n, device=dev)
    for i in range(n):  # one at a time: the distance of an image's own start does not depend on its batch
        with autocast:
            img = G.synthesis(own[i : i + 1].expand(-1, G.num_ws, -1) if own.shape[1] == 1 else own[i : i + 1],
                              noise=maps)
            own_d[i] = perceptual.distance_to(img, [f[i : i + 1] for f in target_feats]).float()[0]
    take_own = own_d <= dists.min(dim=1).values  # [N]
    return torch.where(take_own[:, None, None], own, best[:, None].expand(-1, own.shape[1], -1))


@torch.no_grad()
def _finish(G, targets, target_feats, perceptual, w_opt, noise, steps_taken, stopped, traces, frames, elapsed,
            num_ws, autocast, geometries=None) -> list[Projection]:
    """Render every image from its final w with its optimised noise (seen through its geometry, given
    `geometries` [N, 3]), and measure it (LPIPS only given `target_feats`)."""
    n = len(w_opt)
    ws = torch.cat([w.detach().expand(-1, num_ws, -1) if w.shape[1] == 1 else w.detach() for w in w_opt])
    maps = [torch.cat([noise[i][k].detach() for i in range(n)]) for k in range(len(noise[0]))]
    with autocast:
        images = G.synthesis(ws, noise=maps).float()
        if geometries is not None:
            images = warp(images, geometries)
        dists = (perceptual.distance_to(images, target_feats).float() if target_feats is not None
                 else torch.full((n,), float("nan")))
    mse, psnr = mse_psnr(images, targets)
    gauss = gaussianity(maps)
    total_steps = max(1, sum(steps_taken))
    out = []
    for i in range(n):
        out.append(Projection(
            w=ws[i].cpu(), noise=[m[i : i + 1].cpu() for m in maps], image=images[i].cpu(),
            lpips=float(dists[i]), mse=float(mse[i]), psnr=float(psnr[i]), steps=steps_taken[i],
            stopped_early=stopped[i], trace=traces[i], seconds=elapsed * steps_taken[i] / total_steps,
            noise_gaussianity=float(gauss[i]), frames=frames[i] if frames is not None else None,
            geometry=tuple(geometries[i].tolist()) if geometries is not None else None,
        ))
    return out


@torch.no_grad()
def render(G: Generator, w: torch.Tensor, noise: Sequence[torch.Tensor],
           geometry: Sequence[float] | None = None) -> torch.Tensor:
    """Re-render a projection from its saved w [num_ws, w_dim] and noise maps (and its geometry, when it has one).
    [C, R, R] in [-1, 1]"""
    dev = G.device
    img = G.synthesis(w.to(dev)[None], noise=[m.to(dev) for m in noise])
    if geometry is not None:
        img = warp(img, torch.tensor([list(geometry)], dtype=img.dtype, device=dev))
    return img[0]


def auto_batch_size(G: Generator, device: torch.device, n_images: int, *, cap: int = 64) -> int:
    """How many images to optimise at once: all of them up to `cap` on a CPU (memory is not the limit there); on
    CUDA the largest power of two up to `cap` whose step fits in memory, found by trying."""
    if device.type != "cuda":
        return max(1, min(n_images, 16 if G.img_resolution <= 128 else 4))
    perceptual = load_perceptual(device=device)
    b = min(cap, 1 << max(0, (n_images - 1).bit_length()))
    while b > 1:
        try:
            x = torch.zeros(b, G.img_channels, G.img_resolution, G.img_resolution, device=device)
            project(G, x, num_steps=1, perceptual=perceptual, device=device, w_avg_samples=1000)
            torch.cuda.synchronize(device)
            return min(b, n_images)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            b //= 2
    return 1
