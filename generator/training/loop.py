"""The StyleGAN2 training loop: lazy R1 and path-length regularisation, style mixing, G EMA, snapshots, resume,
and data parallelism over `torchrun`.

Reproducibility: every random draw of minibatch k (z, mixing, noise, path-length directions, flips) comes from a
generator seeded by (seed, rank, k), and the data order is a pure function of (seed, epoch). A snapshot therefore
holds all the state there is, and a resumed run repeats an uninterrupted one.

Multi-process: launched by `torchrun`, each process takes its share of the global batch and gradients are averaged
with an all-reduce after every backward pass (gloo on CPU, NCCL on GPU). Only rank 0 writes. The networks are not
wrapped in DistributedDataParallel because R1 and path length need double backward through `autograd.grad`, which
DDP does not support; averaging the gradients by hand is what DDP would do.

The equations are in `generator.training.losses`, the run's settings in `generator.training.config`
(docs/ARCHITECTURE.md, "Data flow: train" and "Training").
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from generator.checkpoint import save_generator
from generator.data.datasets import ImageDataset, open_dataset
from generator.networks import Generator
from generator.render import make_grid
from generator.training.config import CONFIG_FILE, STATE_FILE, TrainConfig, TrainingError
from generator.training.discriminator import Discriminator
from generator.training.losses import (
    d_logistic_loss,
    g_nonsaturating_loss,
    lazy_adam_params,
    path_length,
    path_length_penalty,
    r1_penalty,
    sample_ws,
)
from generator.util.distributed import Dist, barrier, init_distributed
from generator.util.files import atomic_path, write_json_atomic
from generator.util.imaging import save_png, to_uint8

STATE_FORMAT = "sgproject-training"
STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------- distributed


def average_gradients(module: torch.nn.Module, d: Dist) -> None:
    """All-reduce the gradients of `module` (one flat buffer), average them, and replace NaN/inf."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    if d.enabled:
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat)
        flat /= d.world
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.reshape(p.shape))
    for p in params:
        torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)


def broadcast_module(module: torch.nn.Module, d: Dist) -> None:
    if d.enabled:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


# ------------------------------------------------------------------------------------------------ data order


def sample_indices(n: int, start: int, count: int, seed: int) -> np.ndarray:
    """Dataset indices at stream positions [start, start+count): a fresh permutation of n every epoch."""
    pos = np.arange(start, start + count)
    epochs = pos // n
    out = np.empty(count, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n)
        sel = epochs == e
        out[sel] = perm[pos[sel] % n]
    return out


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """The random stream of one minibatch on one process."""
    s = int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device).manual_seed(s)


# ------------------------------------------------------------------------------------------------ the state


@dataclass
class TrainState:
    G: Generator
    D: Discriminator
    G_ema: Generator
    G_opt: torch.optim.Optimizer
    D_opt: torch.optim.Optimizer
    pl_mean: torch.Tensor  # [] EMA of path lengths
    step: int = 0  # minibatches done
    nimg: int = 0  # real images shown
    wall: float = 0.0  # training seconds, summed over resumes

    def to_dict(self, cfg: TrainConfig) -> dict:
        cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}  # noqa: E731
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "config": cfg.to_dict(),
            "G": cpu(self.G.state_dict()), "D": cpu(self.D.state_dict()), "G_ema": cpu(self.G_ema.state_dict()),
            "G_opt": self.G_opt.state_dict(), "D_opt": self.D_opt.state_dict(),
            "pl_mean": self.pl_mean.detach().cpu(), "step": self.step, "nimg": self.nimg, "wall": self.wall,
            # Randomness is a pure function of (seed, rank, step): nothing else to store.
            "rng": {"scheme": "seed-rank-step", "seed": cfg.seed},
        }


def build_state(cfg: TrainConfig, device: torch.device) -> TrainState:
    G = Generator(cfg.g_config(), seed=cfg.seed).train().to(device)
    D = Discriminator(cfg.d_config(), seed=cfg.seed + 1).train().to(device)
    if cfg.channels_last:  # loading a state copies values into these tensors: the layout stays
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    (g_lr, g_betas), (d_lr, d_betas) = adam_settings(cfg)
    G_opt = torch.optim.Adam(G.parameters(), lr=g_lr, betas=g_betas, eps=1e-8)
    D_opt = torch.optim.Adam(D.parameters(), lr=d_lr, betas=d_betas, eps=1e-8)
    return TrainState(G, D, G_ema, G_opt, D_opt, torch.zeros([], device=device))


def adam_settings(cfg: TrainConfig) -> tuple[tuple[float, tuple[float, float]], tuple[float, tuple[float, float]]]:
    """((lr, betas) of G's optimiser, the same of D's): the config's, rescaled for lazy regularisation."""
    return (lazy_adam_params(cfg.g_lr, cfg.betas, cfg.pl_interval if cfg.pl_weight > 0 else 0),
            lazy_adam_params(cfg.d_lr, cfg.betas, cfg.r1_interval))


def load_state(path: Path, cfg: TrainConfig, device: torch.device) -> TrainState:
    """Restore a snapshot written by `save_state` (read with weights_only=True: no code runs)."""
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"{path}: cannot read the training snapshot ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(snap, dict) or snap.get("format") != STATE_FORMAT:
        raise TrainingError(f"{path}: not an sgproject training snapshot")
    if snap["config"]["g"] != cfg.g or snap["config"]["d"] != cfg.d:
        raise TrainingError(f"{path}: the snapshot's networks differ from the requested ones; use the same --cfg")
    st = build_state(cfg, device)
    st.G.load_state_dict(snap["G"])
    st.D.load_state_dict(snap["D"])
    st.G_ema.load_state_dict(snap["G_ema"])
    st.G_opt.load_state_dict(snap["G_opt"])
    st.D_opt.load_state_dict(snap["D_opt"])
    # The optimisers' moments come from the snapshot, their settings from the config (loading would restore the
    # saved ones): a learning rate changed on resume applies, an unchanged one is the same number.
    for opt, (lr, betas) in zip((st.G_opt, st.D_opt), adam_settings(cfg)):
        for group in opt.param_groups:
            group["lr"], group["betas"] = lr, betas
    st.pl_mean = snap["pl_mean"].to(device)
    st.step, st.nimg, st.wall = int(snap["step"]), int(snap["nimg"]), float(snap["wall"])
    return st


def save_state(st: TrainState, cfg: TrainConfig, path: Path) -> None:
    """Atomic (`generator.util.files.atomic_path`): a kill while saving never damages the previous snapshot."""
    with atomic_path(path) as tmp:
        torch.save(st.to_dict(cfg), tmp)


# ------------------------------------------------------------------------------------------------- the phases


def _requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _autocast(cfg: TrainConfig, device: torch.device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def g_main(st: TrainState, cfg: TrainConfig, n: int, gen: torch.Generator, device, d: Dist) -> dict:
    """Non-saturating loss for G on a fresh batch of fakes."""
    _requires_grad(st.G, True)
    _requires_grad(st.D, False)
    st.G_opt.zero_grad(set_to_none=True)
    z = torch.randn([n, st.G.z_dim], device=device, generator=gen)
    with _autocast(cfg, device):
        ws = sample_ws(st.G, z, mixing_prob=cfg.mixing_prob, gen=gen)
        fake = st.G.synthesis(ws, "random", gen=gen)
        logits = st.D(fake)
    loss = g_nonsaturating_loss(logits.float())
    loss.backward()
    average_gradients(st.G, d)
    st.G_opt.step()
    return {"G_loss": loss.item(), "D_fake": logits.float().mean().item()}


def g_path_length(st: TrainState, cfg: TrainConfig, n: int, gen: torch.Generator, device, d: Dist) -> dict:
    """Lazy path-length regularisation on a shrunk batch (weighted by the interval)."""
    _requires_grad(st.G, True)
    st.G_opt.zero_grad(set_to_none=True)
    m = max(1, n // cfg.pl_batch_shrink)
    z = torch.randn([m, st.G.z_dim], device=device, generator=gen)
    ws = sample_ws(st.G, z, mixing_prob=cfg.mixing_prob, gen=gen, update_w_avg=False)
    img = st.G.synthesis(ws, "random", gen=gen)
    lengths = path_length(img, ws, gen=gen)
    if d.enabled:  # the EMA target must be the same on every process
        mean = lengths.detach().mean().clone()
        dist.all_reduce(mean)
        mean /= d.world
        new_mean = st.pl_mean.lerp(mean, cfg.pl_decay)
        penalty = (lengths - new_mean).square()
    else:
        penalty, new_mean = path_length_penalty(lengths, st.pl_mean, cfg.pl_decay)
    st.pl_mean = new_mean.detach()
    # `img[:, 0, 0, 0] * 0` keeps every synthesis parameter in the graph, as the reference does.
    loss = (img[:, 0, 0, 0] * 0 + penalty * cfg.pl_weight).mean() * cfg.pl_interval
    loss.backward()
    average_gradients(st.G, d)
    st.G_opt.step()
    return {"pl_length": lengths.mean().item(), "pl_penalty": penalty.mean().item()}


def d_main(st: TrainState, cfg: TrainConfig, real: torch.Tensor, gen: torch.Generator, device, d: Dist) -> dict:
    """Logistic loss for D on fakes (from G, no gradient into G) and reals."""
    _requires_grad(st.G, False)
    _requires_grad(st.D, True)
    st.D_opt.zero_grad(set_to_none=True)
    n = real.shape[0]
    z = torch.randn([n, st.G.z_dim], device=device, generator=gen)
    with torch.no_grad(), _autocast(cfg, device):
        ws = sample_ws(st.G, z, mixing_prob=cfg.mixing_prob, gen=gen, update_w_avg=False)
        fake = st.G.synthesis(ws, "random", gen=gen)
    with _autocast(cfg, device):
        fake_logits = st.D(fake.detach())
        real_logits = st.D(real)
    loss = d_logistic_loss(real_logits.float(), fake_logits.float())
    loss.backward()
    average_gradients(st.D, d)
    st.D_opt.step()
    return {"D_loss": loss.item(), "D_real": real_logits.float().mean().item()}


def d_r1(st: TrainState, cfg: TrainConfig, real: torch.Tensor, device, d: Dist) -> dict:
    """Lazy R1 penalty on reals (weighted by the interval), in full precision."""
    _requires_grad(st.D, True)
    st.D_opt.zero_grad(set_to_none=True)
    real = real.detach().requires_grad_(True)
    logits = st.D(real)
    penalty = r1_penalty(logits, real)
    loss = (logits[:, 0] * 0 + penalty * (cfg.r1_gamma / 2)).mean() * cfg.r1_interval
    loss.backward()
    average_gradients(st.D, d)
    st.D_opt.step()
    return {"r1_penalty": penalty.mean().item()}


@torch.no_grad()
def update_ema(st: TrainState, cfg: TrainConfig) -> None:
    """G_ema <- G_ema * beta + G * (1 - beta), beta from the half-life in images; buffers copied."""
    ema_nimg = (cfg.ema_kimg if cfg.ema_kimg is not None else cfg.batch * 10 / 32) * 1000
    if cfg.ema_rampup is not None:
        ema_nimg = min(ema_nimg, st.nimg * cfg.ema_rampup)
    beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
    for p_ema, p in zip(st.G_ema.parameters(), st.G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(st.G_ema.buffers(), st.G.buffers()):
        b_ema.copy_(b)


def train_step(st: TrainState, cfg: TrainConfig, data: ImageDataset, device: torch.device, d: Dist) -> dict:
    """One minibatch: G main, (G path length), D main, (D R1), EMA."""
    local = cfg.batch // d.world
    gen = step_generator(cfg.seed, d.rank, st.step, device)
    idx = sample_indices(len(data), st.step * cfg.batch + d.rank * local, local, cfg.seed)
    real = data.batch(idx, device)
    if cfg.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    if cfg.xflip:
        flip = torch.rand([local], device=device, generator=gen) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)
    stats = g_main(st, cfg, local, gen, device, d)
    if cfg.pl_weight > 0 and cfg.pl_interval > 0 and st.step % cfg.pl_interval == 0:
        stats |= g_path_length(st, cfg, local, gen, device, d)
    stats |= d_main(st, cfg, real, gen, device, d)
    if cfg.r1_interval > 0 and st.step % cfg.r1_interval == 0:
        stats |= d_r1(st, cfg, real, device, d)
    st.step += 1
    st.nimg += cfg.batch
    update_ema(st, cfg)
    return stats


# ------------------------------------------------------------------------------------------------- the loop


@dataclass
class Tick:
    """What the progress display and stats.jsonl get at each tick."""

    kimg: float
    total_kimg: float
    step: int
    sec_per_kimg: float
    wall: float
    stats: dict  # mean of each loss/penalty over the tick
    event: str = "tick"  # 'tick', 'snapshot', 'done', 'interrupted'
    snapshot: str | None = None


def sample_grid_image(G_ema: Generator, n: int) -> np.ndarray:
    """The fixed-seed sample grid: seeds 0 .. n-1, const noise, no truncation. uint8 [H, W, 3]"""
    with torch.no_grad():
        z = torch.cat([G_ema.z_from_seed(s) for s in range(n)])
        imgs = to_uint8(G_ema(z, noise_mode="const"))
    return make_grid(list(imgs))


def train(
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    resume: bool = False,
    callback: Callable[[Tick], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    data_progress: Callable[[int, int], None] | None = None,
) -> TrainState:
    """Train until `cfg.kimg`, writing snapshots to `cfg.outdir`; returns the final state.

    `should_stop()` is polled after every minibatch: when it returns True the loop writes a snapshot and returns
    (the CLI wires it to Ctrl-C / SIGTERM). With `resume`, the run continues from `outdir/training-state.pt`.
    """
    device = torch.device(device)
    d = init_distributed(device)
    if cfg.batch % d.world:
        raise TrainingError(f"--batch {cfg.batch} must be divisible by the number of processes ({d.world})")
    outdir = Path(cfg.outdir)
    state_path = outdir / STATE_FILE
    data = open_dataset(cfg.data, cfg.g_config().resolution, progress=data_progress if d.main else None)
    if d.main:
        outdir.mkdir(parents=True, exist_ok=True)
    if resume:
        if not state_path.exists():
            raise TrainingError(f"--resume: no snapshot at {state_path}")
        st = load_state(state_path, cfg, device)
    else:
        if state_path.exists():  # every process checks, so that none is left waiting for rank 0
            raise TrainingError(f"{outdir} already holds a run; use --resume to continue it or another --outdir")
        st = build_state(cfg, device)
    broadcast_module(st.G, d)
    broadcast_module(st.D, d)
    broadcast_module(st.G_ema, d)
    if d.main:
        write_json_atomic(outdir / CONFIG_FILE, cfg.to_dict())
        _log(outdir, {"event": "start", "kimg": st.nimg / 1000, "data": data.source, "images": len(data),
                      "skipped": len(data.skipped), "world": d.world, "device": str(device), "resume": resume,
                              "g_lr": cfg.g_lr, "d_lr": cfg.d_lr})

    total_nimg = int(cfg.kimg * 1000)
    next_tick = (st.nimg // int(cfg.tick_kimg * 1000) + 1) * int(cfg.tick_kimg * 1000)
    next_snap = (st.nimg // int(cfg.snap_kimg * 1000) + 1) * int(cfg.snap_kimg * 1000)
    tick_stats: dict[str, list[float]] = {}
    tick_start, tick_nimg = time.time(), st.nimg
    event = "done"
    while st.nimg < total_nimg:
        t0 = time.time()
        for k, v in train_step(st, cfg, data, device, d).items():
            tick_stats.setdefault(k, []).append(v)
        st.wall += time.time() - t0
        stop = should_stop()
        if d.enabled:  # every process must agree to stop at the same step
            flag = torch.tensor([1.0 if stop else 0.0], device=device)
            dist.all_reduce(flag)
            stop = bool(flag.item() > 0)
        done = st.nimg >= total_nimg
        snap = done or stop or st.nimg >= next_snap
        if st.nimg >= next_tick or snap:
            dt = time.time() - tick_start
            tick = Tick(
                kimg=st.nimg / 1000, total_kimg=cfg.kimg, step=st.step,
                sec_per_kimg=dt / max((st.nimg - tick_nimg) / 1000, 1e-9), wall=st.wall,
                stats={k: float(np.mean(v)) for k, v in tick_stats.items()},
            )
            if snap and d.main:
                tick.snapshot = str(_snapshot(st, cfg, outdir))
                tick.event = "interrupted" if (stop and not done) else ("done" if done else "snapshot")
            if d.main:
                _log(outdir, {"event": tick.event, **{k: v for k, v in dataclasses.asdict(tick).items() if k != "event"}})
                if callback:
                    callback(tick)
            tick_stats, tick_start, tick_nimg = {}, time.time(), st.nimg
            next_tick = (st.nimg // int(cfg.tick_kimg * 1000) + 1) * int(cfg.tick_kimg * 1000)
            if st.nimg >= next_snap:
                next_snap = (st.nimg // int(cfg.snap_kimg * 1000) + 1) * int(cfg.snap_kimg * 1000)
        if stop:
            event = "done" if done else "interrupted"
            break
    barrier(d)
    st.last_event = event  # type: ignore[attr-defined]
    return st


def _snapshot(st: TrainState, cfg: TrainConfig, outdir: Path) -> Path:
    """Training state, G_ema as a generator checkpoint (numbered and latest), and the sample grid (numbered and
    latest: samples-latest.png is the grid of the newest snapshot). Every file is written atomically."""
    save_state(st, cfg, outdir / STATE_FILE)
    kimg = st.nimg // 1000
    info = {
        "kimg": st.nimg / 1000, "step": st.step, "train_seconds": round(st.wall, 1), "preset": cfg.preset,
        "data": cfg.data, "batch": cfg.batch, "r1_gamma": cfg.r1_gamma, "seed": cfg.seed,
    }
    path = save_generator(st.G_ema, outdir / f"network-{kimg:06d}.safetensors", info=info)
    save_generator(st.G_ema, outdir / "network-latest.safetensors", info=info)
    grid = sample_grid_image(st.G_ema, cfg.sample_grid)
    save_png(grid, outdir / f"samples-{kimg:06d}.png")
    save_png(grid, outdir / "samples-latest.png")
    return path


def _log(outdir: Path, record: dict) -> None:
    record = {"time": time.time(), **record}
    with open(outdir / "stats.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
