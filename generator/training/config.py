"""What a training run is: the presets (network sizes and defaults) and `TrainConfig`, saved as the run folder's
`config.json` and read back from it by `--resume` (docs/ARCHITECTURE.md, "Data flow: train").

A run folder holds `config.json` (CONFIG_FILE), `training-state.pt` (STATE_FILE, written by `generator.training.loop`),
`stats.jsonl`, the exported generators and the sample grids (docs/ARCHITECTURE.md, "File formats").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from generator.networks import GeneratorConfig
from generator.training.discriminator import DiscriminatorConfig
from generator.training.losses import r1_gamma_heuristic
from generator.util.errors import SGProjectError

CONFIG_FILE = "config.json"
STATE_FILE = "training-state.pt"


class TrainingError(SGProjectError):
    """Training cannot start or continue (bad options, a snapshot that does not match, ...)."""


# ------------------------------------------------------------------------------------------------------ presets

PRESETS: dict[str, dict] = {
    # For tests and smoke runs: seconds per step on a CPU. Also the registered `tiny` model (generator.registry).
    "tiny": dict(
        g=dict(z_dim=64, w_dim=64, mapping_layers=2, resolution=32, channel_base=1024, channel_max=32),
        batch=8, lr=0.0025,
    ),
    # The bundled portraits-64 model: small enough to train on a CPU and to project at ~0.1 s per step.
    "portraits64": dict(
        g=dict(z_dim=128, w_dim=128, mapping_layers=4, resolution=64, channel_base=1024, channel_max=128),
        batch=32, lr=0.0025,
    ),
    # The paper's config-f sizes at 256 px and at 1024 px.
    "paper256": dict(
        g=dict(z_dim=512, w_dim=512, mapping_layers=8, resolution=256, channel_base=32768, channel_max=512),
        batch=32, lr=0.002,
    ),
    "config-f": dict(
        g=dict(z_dim=512, w_dim=512, mapping_layers=8, resolution=1024, channel_base=32768, channel_max=512),
        batch=32, lr=0.002,
    ),
}


def preset_generator_config(preset: str) -> GeneratorConfig:
    """The generator of a preset, e.g. `preset_generator_config("tiny")`."""
    return GeneratorConfig(**PRESETS[preset]["g"])


# ------------------------------------------------------------------------------------------------- the config


@dataclass
class TrainConfig:
    data: str  # image folder, or portraits:N[:SEED] for procedural portraits
    outdir: str  # run folder: snapshots, samples, stats.jsonl
    preset: str = "portraits64"  # network sizes and defaults (see PRESETS)
    g: dict = field(default_factory=dict)  # GeneratorConfig fields; filled from the preset
    d: dict = field(default_factory=dict)  # DiscriminatorConfig fields; default: like the generator
    batch: int = 32  # global minibatch in images (split across processes)
    kimg: float = 500  # stop after this many thousand real images shown
    snap_kimg: float = 50  # snapshot interval in kimg (training state, G_ema export, sample grid)
    tick_kimg: float = 1  # progress/log interval in kimg
    seed: int = 0  # seed of the weights, the data order and every random draw
    g_lr: float = 0.0025  # Adam learning rate of G (before the lazy-regularisation rescaling)
    d_lr: float = 0.0025  # Adam learning rate of D (before the lazy-regularisation rescaling)
    betas: tuple[float, float] = (0.0, 0.99)  # Adam betas of G and D (before the rescaling)
    gamma: float | None = None  # R1 weight; None: 0.0002 * res^2 / batch
    r1_interval: int = 16  # lazy R1 every N minibatches (0: off)
    pl_weight: float = 2.0  # path-length weight (0: off)
    pl_interval: int = 4  # lazy path length every N minibatches
    pl_batch_shrink: int = 2  # path length runs on batch / shrink samples
    pl_decay: float = 0.01  # EMA decay of the path-length target
    mixing_prob: float = 0.9  # style-mixing probability
    ema_kimg: float | None = None  # G EMA half-life in kimg; None: batch * 10 / 32
    ema_rampup: float | None = 0.05  # EMA half-life at most this fraction of images seen (None: off)
    xflip: bool = False  # random horizontal flips of reals
    amp: bool = False  # bfloat16 autocast for the main passes (CUDA only)
    # Weights and activations in channels-last (NHWC) memory: the same numbers, 1.2x faster CPU steps at 64 px
    # (bench/train.py --compare-memory-format); False: PyTorch's default (NCHW).
    channels_last: bool = True
    sample_grid: int = 16  # images in the fixed-seed sample grid written at each snapshot

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise TrainingError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        # The loop counts images in whole numbers: an interval under one image would divide by zero.
        if self.batch < 1:
            raise TrainingError(f"batch must be at least 1, got {self.batch}")
        for name, flag in (("kimg", "--kimg"), ("snap_kimg", "--snap"), ("tick_kimg", "--tick")):
            value = getattr(self, name)
            if not value * 1000 >= 1:
                raise TrainingError(f"{name} ({flag}) must be at least 0.001 kimg (one image), got {value}")

    @classmethod
    def from_preset(cls, data: str, outdir: str, preset: str = "portraits64", **overrides) -> "TrainConfig":
        """A new run: the preset's networks, batch and learning rate; an override of None means the default."""
        if preset not in PRESETS:
            raise TrainingError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        p = PRESETS[preset]
        g = dict(p["g"])
        g.update(overrides.pop("g", {}) or {})
        if overrides.get("resolution"):
            g["resolution"] = overrides.pop("resolution")
        overrides.pop("resolution", None)
        base = dict(batch=p["batch"], g_lr=p["lr"], d_lr=p["lr"])
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(data=data, outdir=outdir, preset=preset, g=g, **base)

    @classmethod
    def for_resume(
        cls, outdir: str | Path, *, kimg: float, snap_kimg: float, tick_kimg: float,
        preset: str | None = None, resolution: int | None = None, g_lr: float | None = None,
        d_lr: float | None = None,
    ) -> "TrainConfig":
        """The config of the run in `outdir` (its config.json) with a new end and new intervals, and new learning
        rates where given (they apply from the resumed minibatch on: a decay late in training).

        The networks of a run are fixed: a `preset` or `resolution` that contradicts the run's is a TrainingError,
        not something to ignore silently (None: not given). The folder may have moved: `outdir` is taken as given.
        """
        outdir = Path(outdir)
        saved = outdir / CONFIG_FILE
        if not (outdir / STATE_FILE).exists() or not saved.exists():
            raise TrainingError(f"--resume: {outdir} holds no run to resume (no {STATE_FILE})")
        try:
            d = json.loads(saved.read_text())
            d.update(kimg=kimg, snap_kimg=snap_kimg, tick_kimg=tick_kimg, outdir=str(outdir))
            d.update({k: v for k, v in (("g_lr", g_lr), ("d_lr", d_lr)) if v is not None})
            config = cls(**d)
        except (ValueError, TypeError, AttributeError) as e:  # not JSON, not an object, unknown or missing fields
            reason = " ".join(str(e).split())[:200]
            raise TrainingError(f"--resume: {saved} is not a training config ({reason})") from None
        if preset is not None and preset != config.preset:
            raise TrainingError(f"--resume: the run in {outdir} was started with --cfg {config.preset}, not {preset}")
        if resolution is not None and resolution != config.g_config().resolution:
            raise TrainingError(
                f"--resume: the run in {outdir} trains at --res {config.g_config().resolution}, not {resolution}"
            )
        return config

    def g_config(self) -> GeneratorConfig:
        return GeneratorConfig(**self.g)

    def d_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig.like(self.g_config(), **self.d)

    @property
    def r1_gamma(self) -> float:
        return self.gamma if self.gamma is not None else r1_gamma_heuristic(self.g_config().resolution, self.batch)

    def to_dict(self) -> dict:
        """The JSON form written as config.json (betas as a list)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d
