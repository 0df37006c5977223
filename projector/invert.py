"""`invert_images`: project prepared images in batches and write each one's files, as `sgproject invert` does.

Every image gets its own folder, OUTDIR/STEM (STEM-2, STEM-3, ... when inputs share a name), holding the files of
projector.outputs, plus aligned.png for an aligned input (docs/ARCHITECTURE.md, "Data flow: invert").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from generator.checkpoint import ModelInfo
from generator.metrics.lpips import PerceptualDistance
from generator.networks import Generator
from generator.util.imaging import save_png, to_tensor
from projector.encoder import Encoder
from projector.outputs import save_projection
from projector.project import Projection, ProjectorConfig, auto_batch_size, project
from projector.video import video_codec


@dataclass
class InvertTarget:
    """One input, loaded and fitted to the model's resolution."""

    source: str  # the input as the user named it
    stem: str  # its folder's name (made unique among the run's inputs)
    pixels: np.ndarray  # uint8 [R, R, 3]: what is projected (written as target.png)
    meta: dict = field(default_factory=dict)  # extra summary.json entries: source, source_sha256, load_notes, ...
    aligned: bool = False  # the pixels are a face alignment: also written as aligned.png


@dataclass
class Inverted:
    """One image's result: its projection and the files written for it."""

    source: str
    folder: Path
    projection: Projection
    files: dict[str, str]  # kind -> path, as returned by projector.outputs.save_projection
    video_codec: str | None = None  # 'h264' or 'mpeg4' when proj.mp4 was written (projector/video.py), else None

    def summary(self) -> dict:
        """What `sgproject invert --json` prints for the image."""
        out = {"image": self.source, "folder": str(self.folder), **self.projection.summary(), "files": self.files}
        if self.video_codec:
            out["video_codec"] = self.video_codec
        return out


def unique_folder(outdir: Path, stem: str, taken: set[str]) -> Path:
    """outdir/stem, or outdir/stem-2, -3... when two inputs share a name."""
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}-{k}", k + 1
    taken.add(name)
    return outdir / name


def invert_images(
    G: Generator,
    perceptual: PerceptualDistance,
    targets: Sequence[InvertTarget],
    *,
    config: ProjectorConfig,
    outdir: str | Path,
    model: ModelInfo,  # recorded in every summary.json
    seed: int = 0,
    device: torch.device | str | None = None,  # default: G's device
    batch_size: int | None = None,  # images optimised at once (default: auto_batch_size)
    video: bool = False,  # also write proj.mp4 (target | projection at every step; H.264 with the video extra)
    encoder: Encoder | None = None,  # with config.init='encoder': the start of every image (projector.encoder)
    progress: Callable[[int, int, int], None] | None = None,  # (steps done, steps in all, images optimising)
    warn: Callable[[str], None] | None = None,  # the warning that videos fall back to MPEG-4 (default: logging)
) -> Iterator[Inverted]:
    """Project `targets` in batches and write each image's folder; yields each image's result, in input order, as
    soon as its batch is done. Steps are counted per image: `len(targets) * config.num_steps` in all."""
    outdir = Path(outdir)
    device = torch.device(device) if device is not None else G.device
    meta = {
        "model": model.name, "model_sha256": model.sha256, "perceptual": perceptual.identity,
        "projector": config.to_dict(), "projector_fingerprint": config.fingerprint(), "seed": seed,
        "device": str(device),
    }
    taken: set[str] = set()
    folders = [unique_folder(outdir, t.stem, taken) for t in targets]
    total = len(targets) * config.num_steps
    codec = video_codec(warn) if video else None  # decided (and the fallback warned about) before any work
    bs = batch_size or auto_batch_size(G, device, len(targets))
    for start in range(0, len(targets), bs):
        chunk = targets[start : start + bs]
        base = start * config.num_steps

        def on_step(step: int, num_steps: int, active: int, base: int = base, k: int = len(chunk)) -> None:
            if progress:
                progress(base + step * k, total, active)

        results = project(G, to_tensor([t.pixels for t in chunk]), config=config, seed=seed, device=device,
                          perceptual=perceptual, callback=on_step, record_frames=video, encoder=encoder)
        if progress and max(p.steps for p in results) < config.num_steps:  # all stopped early: count their rest
            progress(base + len(chunk) * config.num_steps, total, 0)
        for t, folder, p in zip(chunk, folders[start : start + bs], results):
            if t.aligned:
                save_png(t.pixels, folder / "aligned.png")
            files = save_projection(p, folder, target=t.pixels, meta={**meta, **t.meta}, video=video, codec=codec)
            yield Inverted(t.source, folder, p, files, codec if "video" in files else None)
