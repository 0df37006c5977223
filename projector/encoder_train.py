"""Training an encoder for one generator on that generator's own images (docs/ARCHITECTURE.md, "Projection").

The data is free: every minibatch samples z, maps it to w (with truncation and style mixing for some images),
renders with the model's constant noise maps or fresh random ones, and degrades the images as detection inputs are
degraded (crops re-fitted, resizes down and up, brightness and contrast, Gaussian noise, uint8 rounding, JPEG). The
loss is the squared distance of the guess to the true w, in units of w_std^2 (per layer, averaged over the layers
a W guess is broadcast to), plus `lpips_weight` times LPIPS(G(E(x)), x0) on the first `lpips_batch` images, where
x0 is the clean render and G(E(x)) is rendered with the same noise maps as x0: what the guess should explain is
the image the generator made, not the degradations.

Every random draw of minibatch k comes from a generator seeded by (seed, k), a fixed number of draws per image
whatever the probabilities, so a run resumed from its state file repeats an uninterrupted one.

Files: the encoder (`OUT.safetensors` + `OUT.json`, `projector.encoder.save_encoder`) and the training state
(`OUT.state.pt`: weights, Adam state, step; read with weights_only=True), both written every `checkpoint_every`
steps, at the end and when `should_stop()` says so.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from generator.checkpoint import ModelInfo
from generator.metrics.lpips import PerceptualDistance
from generator.networks import Generator, mix_styles
from generator.training.loop import step_generator
from generator.util.files import atomic_path
from generator.util.imaging import resize_square, to_tensor, to_uint8
from projector.encoder import (Encoder, EncoderConfig, EncoderError, check_generator, load_encoder_for_warm_start,
                               save_encoder)
from projector.project import w_statistics

STATE_FORMAT = "sgproject-encoder-training"
STATE_VERSION = 1


@dataclass
class EncoderTrainConfig:
    lr: float = 1e-2  # Adam learning rate (betas 0.9, 0.99), constant; the layers have equalised learning rates
    lpips_weight: float = 1.0  # weight of LPIPS(G(E(x)), x0) beside the w loss (in units of w_std^2)
    lpips_batch: int = 4  # images of each minibatch that also get the LPIPS term (it is the costly part); 0: off
    truncation_prob: float = 0.5  # fraction of images rendered with truncation (all layers)
    truncation_min: float = 0.5  # their psi is uniform in [truncation_min, 1]
    mixing_prob: float = 0.3  # fraction of images with style mixing (a second z from a random crossover layer on)
    random_noise_prob: float = 0.5  # fraction rendered with fresh random noise maps (the rest: the model's const maps)
    crop_prob: float = 0.25  # fraction cropped to a random square of side >= crop_min * R, resized back to R
    crop_min: float = 0.85  # smallest crop side, as a fraction of R
    resize_prob: float = 0.3  # fraction resized down to a side >= resize_min * R (antialiased) and back up
    resize_min: float = 0.5  # smallest intermediate side, as a fraction of R
    color_prob: float = 0.3  # fraction with brightness and contrast changed
    brightness: float = 0.1  # brightness shift uniform in +-brightness (pixel units of [-1, 1])
    contrast: float = 0.15  # contrast factor uniform in 1 +- contrast, about the image's mean
    noise_prob: float = 0.2  # fraction with Gaussian pixel noise
    noise_max: float = 0.04  # its sigma is uniform in [0, noise_max] (pixel units of [-1, 1]; 0.04 ~ 5/255)
    jpeg_prob: float = 0.4  # fraction JPEG-compressed (PIL, 4:2:0), after the uint8 rounding every image gets
    jpeg_min: int = 40  # JPEG quality uniform in [jpeg_min, jpeg_max]
    jpeg_max: int = 95

    def __post_init__(self) -> None:
        probs = [f.name for f in dataclasses.fields(self) if f.name.endswith("_prob")]
        bad = [p for p in probs if not 0 <= getattr(self, p) <= 1]
        if bad:
            raise EncoderError(f"probabilities must be in [0, 1]: {', '.join(bad)}")
        if not (0 < self.truncation_min <= 1 and 0 < self.crop_min <= 1 and 0 < self.resize_min <= 1):
            raise EncoderError("truncation_min, crop_min and resize_min must be in (0, 1]")
        if not 1 <= self.jpeg_min <= self.jpeg_max <= 100:
            raise EncoderError(f"JPEG qualities must satisfy 1 <= jpeg_min <= jpeg_max <= 100, got "
                               f"{self.jpeg_min}, {self.jpeg_max}")
        if self.lr <= 0 or self.lpips_weight < 0 or self.lpips_batch < 0:
            raise EncoderError("lr must be positive, lpips_weight and lpips_batch at least 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EncoderTick:
    """What the progress callback gets after every step."""

    step: int  # steps done
    steps: int  # steps in all
    stats: dict  # w_loss, w_dist (RMS distance to the true w in units of w_std), lpips: means of the last 20 steps
    seconds: float  # training time, summed over resumes
    event: str = "step"  # 'step', 'checkpoint', 'done', 'interrupted'
    checkpoint: str | None = None  # the encoder file, when one was written


@dataclass
class TrainedEncoder:
    encoder: Encoder
    step: int  # steps done
    event: str  # 'done' or 'interrupted'
    path: Path  # the encoder file
    state_path: Path  # the training state, for --resume


def state_path_for(out: str | Path) -> Path:
    """Where the training state of the encoder `out` lives: OUT.state.pt beside it."""
    return Path(out).with_suffix(".state.pt")


# ------------------------------------------------------------------------------------------------ the data


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """uint8 [H, W, 3] through a JPEG file at `quality` (PIL's default 4:2:0 chroma subsampling)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=int(quality))
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def augment(x: torch.Tensor, gen: torch.Generator, cfg: EncoderTrainConfig) -> torch.Tensor:
    """Degrade images as detection inputs are degraded. [N, 3, R, R] in [-1, 1] on the CPU -> the same shape,
    through uint8 (every image is rounded as a saved file would be). 13 uniforms and one noise image per image are
    drawn from `gen` whatever the probabilities, so the stream of draws does not depend on the settings."""
    n, _, r, _ = x.shape
    u = torch.rand(n, 13, generator=gen).tolist()
    pixel_noise = torch.randn(x.shape, generator=gen)
    out = []
    for i in range(n):
        y, a = x[i : i + 1], u[i]
        if a[0] < cfg.crop_prob:
            side = max(4, round(r * (cfg.crop_min + (1 - cfg.crop_min) * a[1])))
            top, left = int(a[2] * (r - side + 1)), int(a[3] * (r - side + 1))
            y = resize_square(y[..., top : top + side, left : left + side], r)
        if a[4] < cfg.resize_prob:
            small = max(4, round(r * (cfg.resize_min + (1 - cfg.resize_min) * a[5])))
            y = F.interpolate(resize_square(y, small), size=(r, r), mode="bilinear", align_corners=False)
        if a[6] < cfg.color_prob:
            mean = y.mean()
            y = (y - mean) * (1 + cfg.contrast * (2 * a[7] - 1)) + mean + cfg.brightness * (2 * a[8] - 1)
        if a[9] < cfg.noise_prob:
            y = y + pixel_noise[i : i + 1] * (cfg.noise_max * a[10])
        px = to_uint8(y.clamp(-1, 1))[0]  # [R, R, 3]
        if a[11] < cfg.jpeg_prob:
            span = cfg.jpeg_max - cfg.jpeg_min
            px = jpeg(px, cfg.jpeg_min + min(int(a[12] * (span + 1)), span))
        out.append(px)
    return to_tensor(out)


@torch.no_grad()
def sample_batch(G: Generator, n: int, gen: torch.Generator, cfg: EncoderTrainConfig, device: torch.device):
    """One minibatch of training data from G: (true ws [n, num_ws, w_dim], noise maps [n, 1, r, r] per layer, clean
    images x0 [n, 3, R, R], degraded images x [n, 3, R, R]), all on `device`."""
    num_ws = G.num_ws
    z = torch.randn(n, G.z_dim, generator=gen)
    z2 = torch.randn(n, G.z_dim, generator=gen)
    mix_u, trunc_u, psi_u, noise_u = torch.rand(4, n, generator=gen)
    crossover = torch.randint(1, max(2, num_ws), (n,), generator=gen)
    crossover = torch.where(mix_u < cfg.mixing_prob, crossover, torch.full_like(crossover, num_ws))
    ws = mix_styles(G.mapping(z.to(device)), G.mapping(z2.to(device)), crossover.to(device))
    psi = torch.where(trunc_u < cfg.truncation_prob, cfg.truncation_min + (1 - cfg.truncation_min) * psi_u,
                      torch.ones(n)).to(device)
    w_avg = G.mapping.w_avg
    ws = w_avg + psi[:, None, None] * (ws - w_avg)  # truncation on every layer
    use_random = (noise_u < cfg.random_noise_prob).to(device)[:, None, None, None]
    maps = []
    for layer in G.synthesis.noise_layers():
        rnd = torch.randn(n, 1, layer.resolution, layer.resolution, generator=gen).to(device)
        maps.append(torch.where(use_random, rnd, layer.noise_const[None, None]))
    x0 = G.synthesis(ws, noise=maps)
    x = augment(x0.cpu(), gen, cfg).to(device)
    return ws, maps, x0, x


# ------------------------------------------------------------------------------------------------ training


def _check_resume(snap: dict, info: ModelInfo, config, train_config, seed, batch, path: Path) -> None:
    check_generator({"generator": snap.get("generator", {})}, info, f"the training state {path}")
    given = {"config": config and config.to_dict(), "train_config": train_config and train_config.to_dict(),
             "seed": seed, "batch": batch}
    for key, value in given.items():
        if value is not None and value != snap[key]:
            raise EncoderError(f"{path}: the run was started with another {key.replace('_', ' ')} "
                               f"({snap[key]!r}); resume with the same settings, or start a new run elsewhere")


def _warm_start(path: str | Path, config: EncoderConfig | None, G: Generator) -> Encoder:
    """The encoder in `path` as the start of a new run for G: EncoderError unless it fits G's geometry and the
    requested network (`config`, None: its own)."""
    start = load_encoder_for_warm_start(path)
    want = {"resolution": G.img_resolution, "w_dim": G.w_dim, "num_ws": G.num_ws, "img_channels": G.img_channels}
    if start.geometry() != want:
        raise EncoderError(f"--init {path}: made for a generator of another geometry ({start.geometry()}), not "
                           f"{want}")
    if config is not None and config != start.config:
        raise EncoderError(f"--init {path}: its network ({start.config.to_dict()}) differs from the requested one "
                           f"({config.to_dict()}); drop the network options to take its own")
    return start


def train_encoder(
    G: Generator,
    info: ModelInfo,  # G's identity: recorded in the encoder, checked on resume
    perceptual: PerceptualDistance,
    *,
    out: str | Path,  # the encoder file (.safetensors); its training state goes beside it (state_path_for)
    steps: int = 2000,  # train until this many minibatches were done (counting those before a resume)
    batch: int | None = None,  # images per minibatch (default 32; with resume: the run's)
    config: EncoderConfig | None = None,  # the network (default EncoderConfig(); with resume: the run's)
    train_config: EncoderTrainConfig | None = None,  # loss, optimiser, augmentations (likewise)
    seed: int | None = None,  # of every random draw (default 0; with resume: the run's)
    device: torch.device | str | None = None,  # default: G's device
    resume: bool = False,  # continue from the state beside `out`
    init: str | Path | None = None,  # a new run starts from this encoder file's weights (made for any generator of
    # G's geometry, e.g. an earlier snapshot of the same training run) instead of a fresh network
    checkpoint_every: int = 500,  # steps between checkpoints (0: only at the end and when stopped)
    progress: Callable[[EncoderTick], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,  # polled after every step: True writes a checkpoint and returns
) -> TrainedEncoder:
    """Train (or continue training) an encoder for G; returns it with the step reached and why training ended.

    With `resume`, settings left at None are the run's; settings given must equal the run's (EncoderError)."""
    out = Path(out)
    state_path = state_path_for(out)
    device = torch.device(device) if device is not None else G.device
    G = G.to(device).eval().requires_grad_(False)
    perceptual = perceptual.to(device)
    if steps < 1:
        raise EncoderError(f"steps must be at least 1, got {steps}")
    if resume and init is not None:
        raise EncoderError("--init starts a new run; a resumed run continues from its own state")
    start = None  # a new run's warm start (`init`)
    if resume:
        if not state_path.is_file():
            raise EncoderError(f"--resume: no training state at {state_path}")
        try:
            snap = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise EncoderError(f"{state_path}: cannot read the training state ({' '.join(str(e).split())[:200]})") \
                from None
        if not isinstance(snap, dict) or snap.get("format") != STATE_FORMAT:
            raise EncoderError(f"{state_path}: not an sgproject encoder training state")
        _check_resume(snap, info, config, train_config, seed, batch, state_path)
        config, train_config = EncoderConfig.from_dict(snap["config"]), EncoderTrainConfig(**snap["train_config"])
        seed, batch = snap["seed"], snap["batch"]
        init_record = snap.get("init")
    else:
        for p in (out, state_path):
            if p.exists():
                raise EncoderError(f"{p} already exists; use --resume to continue that run, or another --out")
        if init is not None:
            start = _warm_start(init, config, G)
            config = start.config
        init_record = ({"identity": start.identity(), "generator": start.info.get("generator", {}),
                        "steps": start.info.get("training", {}).get("steps")} if start is not None else None)
        config, train_config = config or EncoderConfig(), train_config or EncoderTrainConfig()
        seed, batch = (0 if seed is None else seed), (batch or 32)
    if batch < 1:
        raise EncoderError(f"batch must be at least 1, got {batch}")

    E = Encoder(config, resolution=G.img_resolution, w_dim=G.w_dim, num_ws=G.num_ws, img_channels=G.img_channels)
    if start is not None:
        E.load_state_dict(start.state_dict())  # then this generator's w statistics replace the other's
    w_avg, w_std = w_statistics(G)
    E.set_w_statistics(w_avg, w_std)
    E = E.to(device).train()
    opt = torch.optim.Adam(E.parameters(), lr=train_config.lr, betas=(0.9, 0.99))
    step, wall = 0, 0.0
    if resume:
        E.load_state_dict(snap["encoder"])
        opt.load_state_dict(snap["optimizer"])
        step, wall = int(snap["step"]), float(snap["seconds"])

    recent: dict[str, collections.deque] = collections.defaultdict(lambda: collections.deque(maxlen=20))
    w_var = E.w_std.square()

    def checkpoint() -> Path:
        training = {"steps": step, "batch": batch, "images": step * batch, "seed": seed, "seconds": round(wall, 1),
                    **({"init": init_record} if init_record else {}),
                    "perceptual": perceptual.identity, "train_config": train_config.to_dict(),
                    "last": {k: float(np.mean(v)) for k, v in recent.items()}}
        save_encoder(E, out, info, training=training)
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "generator": {"name": info.name,
                 "sha256": info.sha256}, "config": config.to_dict(), "train_config": train_config.to_dict(),
                 "seed": seed, "batch": batch, "step": step, "seconds": wall, "init": init_record,
                 "encoder": {k: v.detach().cpu() for k, v in E.state_dict().items()}, "optimizer": opt.state_dict()}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        return out

    event = "done"
    while step < steps:
        t0 = time.time()
        gen = step_generator(seed, 0, step, torch.device("cpu"))
        ws, maps, x0, x = sample_batch(G, batch, gen, train_config, device)
        pred = E(x)
        pred_ws = pred if pred.ndim == 3 else pred[:, None]  # [B, 1 or num_ws, w_dim]
        w_loss = (pred_ws - ws).square().sum(dim=2).mean() / w_var
        loss = w_loss
        k = min(train_config.lpips_batch, batch)
        if k and train_config.lpips_weight > 0:
            recon = G.synthesis(pred_ws[:k].expand(-1, G.num_ws, -1), noise=[m[:k] for m in maps])
            lp = perceptual(recon, x0[:k]).mean()
            loss = loss + train_config.lpips_weight * lp
            recent["lpips"].append(float(lp.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        wall += time.time() - t0
        recent["w_loss"].append(float(w_loss.detach()))
        recent["w_dist"].append(float(w_loss.detach()) ** 0.5)

        stop = should_stop()
        tick = EncoderTick(step, steps, {k_: float(np.mean(v)) for k_, v in recent.items()}, wall)
        if step >= steps or stop or (checkpoint_every and step % checkpoint_every == 0):
            tick.checkpoint = str(checkpoint())
            tick.event = "done" if step >= steps else ("interrupted" if stop else "checkpoint")
        if progress:
            progress(tick)
        if stop and step < steps:
            event = "interrupted"
            break
    if step >= steps and not out.exists():  # resumed a run that had already reached `steps`
        checkpoint()
    return TrainedEncoder(E.eval().requires_grad_(False), step, event, out, state_path)
