"""Turning a generator into pictures: images from seeds, grids, and the style-mixing figure of the StyleGAN paper.

Pixels leave the generator through `generator.util.imaging.to_uint8` and are written with
`generator.util.imaging.save_png` (docs/ARCHITECTURE.md, "Conventions").
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from generator.networks import Generator, mix_styles
from generator.util.errors import SGProjectError
from generator.util.imaging import to_uint8

# Which ws each style range covers is defined by resolution, as in the StyleGAN paper (figure 3).
STYLE_RANGES = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 1 << 30)}


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]. Raises SGProjectError with a one-line message."""
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise SGProjectError(f"bad seed list {text!r}: use numbers and ranges like 0-7,12")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise SGProjectError(f"bad seed range {part!r}: the end is before the start")
        if hi - lo >= 100_000:
            raise SGProjectError(f"seed range {part!r} is too large (at most 100000 seeds)")
        seeds.extend(range(lo, hi + 1))
    if any(s >= 2**32 for s in seeds):
        raise SGProjectError("seeds must be below 2**32")
    return seeds


def make_grid(images: Sequence[np.ndarray], cols: int | None = None, *, pad: int = 0, fill: int = 255) -> np.ndarray:
    """Tile same-sized uint8 [H, W, C] images row by row; `cols` defaults to a near-square layout."""
    assert len(images) > 0
    h, w, c = images[0].shape
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), fill, dtype=np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = im
    return grid


@torch.no_grad()
def generate_images(
    G: Generator,
    seeds: Sequence[int],
    *,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    batch_size: int = 16,
    callback: Callable[[int], None] | None = None,  # called with the number of images just finished
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, uint8 [H, W, C]) for every seed. Noise 'random' is seeded by the image's seed too."""
    for i in range(0, len(seeds), batch_size):
        chunk = list(seeds[i : i + batch_size])
        z = torch.cat([G.z_from_seed(s) for s in chunk])
        ws = G.mapping(z, truncation_psi, truncation_cutoff)
        if noise_mode == "random":  # per-seed noise, so that a seed gives the same image in any batch
            imgs = torch.cat([
                G.synthesis(ws[j : j + 1], "random", gen=torch.Generator(G.device).manual_seed(s))
                for j, s in enumerate(chunk)
            ])
        else:
            imgs = G.synthesis(ws, noise_mode)
        for s, arr in zip(chunk, to_uint8(imgs)):
            yield s, arr
        if callback:
            callback(len(chunk))


def style_range_layers(G: Generator, name: str) -> list[int]:
    """The ws indices whose styles act at the resolutions of a named range ('coarse', 'middle', 'fine')."""
    lo, hi = STYLE_RANGES[name]
    layers = []
    for i in range(G.num_ws):
        # w index i drives conv layer i: b4.conv1, b8.conv0, b8.conv1, b16.conv0, ... (the last one only a toRGB).
        res = 2 ** ((i + 1) // 2 + 2) if i < G.num_ws - 1 else G.img_resolution
        if lo <= res <= hi:
            layers.append(i)
    return layers


@torch.no_grad()
def style_mixing_figure(
    G: Generator,
    row_seeds: Sequence[int],
    col_seeds: Sequence[int],
    layers: Sequence[int],
    *,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
) -> np.ndarray:
    """The paper's figure: column sources across the top, row sources down the left; cell (r, c) is column
    source c with the styles of `layers` taken from row source r. uint8 [(R+1)*H, (C+1)*W, 3]"""
    seeds = list(dict.fromkeys(list(row_seeds) + list(col_seeds)))
    z = torch.cat([G.z_from_seed(s) for s in seeds])
    ws = dict(zip(seeds, G.mapping(z, truncation_psi)))
    render = lambda w: to_uint8(G.synthesis(w, noise_mode))  # noqa: E731
    singles = dict(zip(seeds, render(torch.stack([ws[s] for s in seeds]))))
    res, c = G.img_resolution, G.img_channels
    cells = [np.full((res, res, c), 255, np.uint8)] + [singles[s] for s in col_seeds]
    crossover_mask = torch.zeros(G.num_ws, dtype=torch.bool, device=G.device)
    crossover_mask[list(layers)] = True
    for r in row_seeds:
        a = torch.stack([ws[s] for s in col_seeds])  # [C, num_ws, w_dim]
        b = ws[r].unsqueeze(0).expand_as(a)
        mixed = torch.where(crossover_mask[None, :, None], b, a)
        cells += [singles[r]] + list(render(mixed))
    return make_grid(cells, cols=len(col_seeds) + 1)


__all__ = [
    "STYLE_RANGES", "generate_images", "make_grid", "mix_styles", "parse_seeds", "style_mixing_figure",
    "style_range_layers",
]
