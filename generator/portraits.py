"""Procedural stylised portraits: the project's own training data, since no dataset can be downloaded here.

`render_portrait(seed, index, res)` draws image `index` of the set `seed`. Every image is a pure function of
`(seed, index)`: its parameters come from `np.random.default_rng([seed, index])`, so any image can be rendered
alone, in any order, on any machine. The parameters (and the landmarks) are returned beside the pixels.

How an image is made:

1. `sample_params` draws every choice (head shape, skin, hair, eyes, mouth, accessories, clothing, background,
   light, pose, camera) in resolution-free units, so one (seed, index) is the same portrait at every `res`.
2. The person is painted with OpenCV's anti-aliased polygons on a canvas `supersample` times larger than the
   output, together with a coverage mask. All shapes are described in *canonical* coordinates (0..1, the FFHQ
   crop: eyes at x 0.376 / 0.625, y 0.469, mouth at 0.5, 0.703) and pass through one pose transform (rotation,
   scale, offset) on their way to the canvas, so the landmarks move exactly with the face.
3. The canvas and mask are area-downsampled to `res`; the low-frequency parts (background, light shading, drop
   shadow) are computed directly at `res`, where they are cheap; the person is composited over the background
   (premultiplied alpha); a mild blur and sensor noise finish it.

Landmarks are in output pixel coordinates with pixel centres at integers (pixel (0, 0) covers -0.5..0.5), the
convention of dlib landmarks and of `img[round(y), round(x)]`.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
import torch

from generator.errors import SGProjectError

# Canonical geometry: the FFHQ alignment crop, in normalised image coordinates (x right, y down).
LEFT_EYE = (0.376, 0.469)
RIGHT_EYE = (0.625, 0.469)
MOUTH = (0.5, 0.703)
POSE_CENTRE = (0.5, 0.5)  # rotation and scale jitter act about the image centre
CHEEK_Y = 0.5  # height of the widest part of the head

RENDERER_VERSION = 1  # bump whenever the pixels or params of a given (seed, index) change: caches key on it
MIN_RES = 32
SHIFT = 4  # sub-pixel bits for cv2 drawing: coordinates are passed as integers * 16
ONE = 1 << SHIFT
AA = cv2.LINE_AA

# --------------------------------------------------------------------------------------------------------------
# Palettes (RGB). Skin tones are interpolated along the anchors, so tones are continuous, not a handful.

SKIN_ANCHORS = np.array(
    [(255, 226, 208), (242, 196, 168), (226, 173, 133), (199, 137, 97), (164, 106, 70), (124, 78, 51),
     (92, 58, 40), (64, 42, 32)], np.float64)
HAIR_COLOURS = {  # name: (rgb, weight)
    "black": ((28, 24, 24), 0.22), "dark_brown": ((58, 40, 31), 0.2), "brown": ((98, 64, 42), 0.14),
    "light_brown": ((145, 105, 68), 0.08), "auburn": ((128, 56, 32), 0.06), "ginger": ((188, 96, 46), 0.05),
    "blonde": ((214, 178, 118), 0.08), "platinum": ((232, 222, 196), 0.03), "grey": ((150, 148, 146), 0.05),
    "white": ((226, 224, 220), 0.03), "blue": ((58, 92, 182), 0.015), "pink": ((228, 112, 160), 0.015),
    "purple": ((118, 70, 160), 0.015), "green": ((58, 148, 110), 0.015)}
IRIS_COLOURS = {"brown": (104, 62, 30), "dark_brown": (58, 34, 20), "hazel": (128, 98, 48),
                "green": (78, 128, 68), "blue": (70, 122, 184), "grey": (118, 134, 146), "amber": (172, 120, 40)}
IRIS_WEIGHTS = (0.3, 0.2, 0.12, 0.1, 0.15, 0.07, 0.06)
LIPSTICK = {"red": (176, 30, 48), "pink": (208, 92, 122), "plum": (116, 40, 70), "coral": (224, 112, 90)}
METALS = {"gold": (214, 172, 66), "silver": (206, 208, 214), "pearl": (238, 232, 222), "black": (30, 30, 34)}
FRAMES = {"black": (24, 24, 26), "tortoise": (92, 52, 28), "gold": (196, 160, 70), "silver": (170, 172, 180),
          "red": (170, 30, 40), "blue": (40, 70, 150), "clear": (200, 196, 190)}

HEAD_SHAPES = {  # half-width, skull top, chin, top/jaw superellipse exponents, jaw taper
    "oval": dict(width=0.268, top=0.19, chin=0.865, n_top=2.2, n_jaw=2.0, taper=0.16),
    "round": dict(width=0.29, top=0.2, chin=0.845, n_top=2.2, n_jaw=2.3, taper=0.06),
    "square": dict(width=0.282, top=0.19, chin=0.86, n_top=2.5, n_jaw=3.2, taper=0.14),
    "heart": dict(width=0.286, top=0.18, chin=0.865, n_top=2.5, n_jaw=1.75, taper=0.3),
    "long": dict(width=0.258, top=0.165, chin=0.885, n_top=2.2, n_jaw=2.2, taper=0.14),
}
HAIR_STYLES = ("bald", "buzz", "short", "side_part", "fringe", "bob", "long", "curly", "afro", "bun")
HAIR_WEIGHTS = (0.06, 0.07, 0.13, 0.12, 0.11, 0.11, 0.18, 0.09, 0.06, 0.07)
BACKGROUNDS = ("flat", "gradient", "radial", "noise", "bokeh", "stripes")
BACKGROUND_WEIGHTS = (0.15, 0.2, 0.2, 0.2, 0.15, 0.1)


# --------------------------------------------------------------------------------------------------------------
# Parameters


class _Draw:
    """Small helpers over one `np.random.Generator` that return plain, rounded, JSON-friendly values."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def u(self, lo: float, hi: float) -> float:
        return round(float(self.rng.uniform(lo, hi)), 4)

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def pick(self, options, weights=None):
        cum = np.cumsum(np.ones(len(options)) if weights is None else weights)
        return options[min(int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right")), len(options) - 1)]

    def jitter(self, rgb, amount: float) -> list[int]:
        return [int(np.clip(c + self.rng.normal(0, amount), 0, 255)) for c in rgb]

    def hsv(self, h: tuple, s: tuple, v: tuple) -> list[int]:
        """A colour from hue (degrees), saturation and value ranges (0..1)."""
        hsv = np.uint8([[[self.u(*h) / 2 % 180, self.u(*s) * 255, self.u(*v) * 255]]])
        return [int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]]


def _mix(a, b, t: float) -> list[int]:
    return [int(round(x * (1 - t) + y * t)) for x, y in zip(a, b)]


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _scale(rgb, f: float) -> list[int]:
    return [int(min(255, max(0, round(c * f)))) for c in rgb]


def sample_params(seed: int, index: int) -> dict:
    """Every parameter of portrait `index` of set `seed`, resolution-free and JSON-serialisable."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    d = _Draw(np.random.default_rng([seed, index]))
    P: dict = {"seed": int(seed), "index": int(index)}

    # Pose: the face as a whole moves; the canonical layout inside it stays fixed.
    P["pose"] = {"angle_deg": d.u(-8, 8), "scale": d.u(0.92, 1.08), "offset": [d.u(-0.04, 0.04), d.u(-0.04, 0.04)],
                 "turn": d.u(-1, 1)}  # turn: a hint of yaw (head outline and nose shift a little)

    shape = d.pick(list(HEAD_SHAPES))
    head = {k: round(v * d.u(0.97, 1.03), 4) for k, v in HEAD_SHAPES[shape].items()}
    head["shape"] = shape
    P["head"] = head

    tone = d.u(0, 1)
    pos = tone * (len(SKIN_ANCHORS) - 1)  # 0: lightest anchor .. last: darkest
    i0 = min(int(pos), len(SKIN_ANCHORS) - 2)
    base = SKIN_ANCHORS[i0] * (1 - (pos - i0)) + SKIN_ANCHORS[i0 + 1] * (pos - i0)
    undertone = d.u(-1, 1)  # negative: pinker, positive: more olive/yellow
    base = base + np.array([4, 0, -8]) * undertone
    P["skin"] = {"tone": tone, "undertone": undertone, "rgb": d.jitter(base, 3)}

    style = d.pick(HAIR_STYLES, HAIR_WEIGHTS)
    names = list(HAIR_COLOURS)
    colour = d.pick(names, [HAIR_COLOURS[k][1] for k in names])
    texture = {"curly": "curly", "afro": "curly"}.get(style) or d.pick(("straight", "wavy", "curly"), (0.6, 0.28, 0.12))
    hair_rgb = d.jitter(HAIR_COLOURS[colour][0], 6)
    if abs(_luma(hair_rgb) - _luma(P["skin"]["rgb"])) < 35:  # keep the hair readable against the face
        hair_rgb = _scale(hair_rgb, 0.55)
    P["hair"] = {
        "style": style, "colour": colour, "rgb": hair_rgb, "texture": texture,
        "volume": d.u(0.012, 0.04),  # how far the hair stands off the skull (canonical units)
        "hairline": d.u(0.27, 0.33),  # forehead hairline height
        "part": d.u(-0.09, 0.09),  # side part position, relative to the face centre
        "fringe": style == "fringe" or (style in ("bob", "long") and d.p(0.35)),
        "fringe_kind": d.pick(("straight", "jagged", "swept")),
        "fringe_y": d.u(0.375, 0.405),
        "length": {"bob": d.u(0.74, 0.82), "long": d.u(0.9, 1.08)}.get(style, 0.0),  # end of the side hair
        "flare": d.u(0.0, 0.06),  # long hair widening towards the ends
        "strands": int(d.rng.integers(25, 60)),
        "sheen": d.u(0.08, 0.25),
    }

    gaze = [d.u(-1, 1), d.u(-0.6, 0.6)] if d.p(0.5) else [d.u(-0.25, 0.25), d.u(-0.2, 0.2)]
    iris = d.pick(list(IRIS_COLOURS), IRIS_WEIGHTS)
    expression = d.pick(("neutral", "smile", "grin", "open", "smirk"), (0.32, 0.3, 0.18, 0.1, 0.1))
    squint = 0.78 if expression in ("smile", "grin") else 1.0  # smiling eyes narrow
    P["eyes"] = {"iris": iris, "iris_rgb": d.jitter(IRIS_COLOURS[iris], 8), "gaze": gaze,
                 "width": d.u(0.044, 0.054), "open": round(d.u(0.019, 0.028) * squint, 4),
                 "tilt_deg": d.u(-4, 8), "lashes": d.p(0.45), "liner": d.u(0.004, 0.008)}
    P["brows"] = {"y": round(d.u(0.405, 0.43) - (0.012 if expression == "open" else 0), 4), "arch": d.u(0.004, 0.016),
                  "thickness": d.u(0.006, 0.012), "angle": d.u(-0.01, 0.008), "length": d.u(0.075, 0.1)}
    P["nose"] = {"style": d.pick(("button", "straight", "wide")), "y": d.u(0.6, 0.63), "width": d.u(0.026, 0.042)}
    lips = _mix(_scale(P["skin"]["rgb"], 0.8), (196, 70, 84), d.u(0.35, 0.6))
    lipstick = d.pick(list(LIPSTICK)) if d.p(0.12) else None
    P["lips"] = {"expression": expression, "width": d.u(0.065, 0.09), "upper": d.u(0.009, 0.016),
                  "lower": d.u(0.013, 0.022), "open": d.u(0.018, 0.03), "lipstick": lipstick,
                  "lip_rgb": list(LIPSTICK[lipstick]) if lipstick else lips}
    P["cheeks"] = {"blush": d.u(0.06, 0.3) if d.p(0.5) else 0.0, "freckles": d.p(0.12)}
    P["facial_hair"] = d.pick(("none", "stubble", "moustache", "beard", "goatee"), (0.7, 0.1, 0.05, 0.1, 0.05))

    P["glasses"] = None if not d.p(0.3) else {
        "shape": d.pick(("round", "rect", "wide")), "frame": d.pick(list(FRAMES)),
        "size": d.u(0.95, 1.15), "thickness": d.u(0.004, 0.009), "sunglasses": d.p(0.15)}
    P["earrings"] = None if not d.p(0.25) else {"kind": d.pick(("stud", "hoop", "drop")), "metal": d.pick(list(METALS))}
    hat_ok = style not in ("afro", "bun", "curly")  # hair that stands above the skull would poke through
    P["hat"] = None if not (hat_ok and d.p(0.16)) else {
        "kind": d.pick(("beanie", "cap", "brim")),
        "rgb": d.hsv((0, 360), (0.2, 0.8), (0.2, 0.85)), "pompom": d.p(0.4)}

    P["clothing"] = {"kind": d.pick(("crew", "vneck", "collar", "turtleneck", "jacket")),
                     "rgb": d.hsv((0, 360), (0.1, 0.85), (0.15, 0.9)), "rgb2": d.hsv((0, 360), (0.0, 0.5), (0.5, 1.0)),
                     "shoulders": d.u(0.36, 0.46), "neck": d.u(0.095, 0.125)}

    bg = d.pick(BACKGROUNDS, BACKGROUND_WEIGHTS)
    c0 = d.hsv((0, 360), (0.05, 0.6), (0.25, 0.95))
    c1 = _mix(c0, d.hsv((0, 360), (0.05, 0.7), (0.15, 0.95)), d.u(0.3, 1))
    P["background"] = {"kind": bg, "rgb": c0, "rgb2": c1, "angle_deg": d.u(0, 360),
                       "scale": int(d.rng.integers(3, 8)),  # noise grid size, or stripe count
                       "count": int(d.rng.integers(5, 14)),  # bokeh discs
                       "shadow": d.u(0.1, 0.4)}  # strength of the person's shadow on the backdrop
    P["lighting"] = {"azimuth_deg": d.u(0, 360), "elevation_deg": d.u(35, 75), "ambient": d.u(0.42, 0.62),
                     "warmth": d.u(-1, 1)}  # warmth: -1 cool daylight .. 1 warm tungsten
    P["camera"] = {"blur": d.u(0.2, 0.55), "noise": d.u(0.8, 3.5), "gain": [d.u(0.95, 1.05) for _ in range(3)],
                   "contrast": d.u(0.92, 1.08), "vignette": d.u(0.0, 0.25)}
    P["detail_seed"] = int(d.rng.integers(2**31))  # fine texture (strands, curls, freckles, bokeh)
    return P


# --------------------------------------------------------------------------------------------------------------
# Geometry helpers (canonical coordinates)


def pose_matrix(pose: dict) -> np.ndarray:
    """2x3 affine map canonical -> posed normalised coordinates: rotate and scale about the centre, then shift."""
    a = math.radians(pose["angle_deg"])
    s = pose["scale"]
    lin = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.array(POSE_CENTRE)
    t = c - lin @ c + np.array(pose["offset"])
    return np.hstack([lin, t[:, None]])


def to_pixels(xy, pose: dict, res: int) -> np.ndarray:
    """Canonical points [N, 2] -> output pixel coordinates (pixel centres at integers)."""
    m = pose_matrix(pose)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return (xy @ m[:, :2].T + m[:, 2]) * res - 0.5


@functools.lru_cache(maxsize=16)
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def ellipse(cx, cy, ax, ay, angle=0.0, n=40, power=2.0) -> np.ndarray:
    """Points of an ellipse (a superellipse when power != 2) rotated by `angle` radians. [n, 2]"""
    c, s = _unit_circle(n)
    if power != 2.0:
        c = np.sign(c) * np.abs(c) ** (2 / power)
        s = np.sign(s) * np.abs(s) ** (2 / power)
    x, y = ax * c, ay * s
    if angle:
        ca, sa = math.cos(angle), math.sin(angle)
        x, y = x * ca - y * sa, x * sa + y * ca
    return np.stack([cx + x, cy + y], 1)


def head_outline(head: dict, t: np.ndarray, grow: float = 0.0, shift: float = 0.0) -> np.ndarray:
    """Head contour at angles `t` (sin t < 0: skull, > 0: jaw), pushed out by `grow`. [N, 2]"""
    c, s = np.cos(t), np.sin(t)
    n = np.where(s < 0, head["n_top"], head["n_jaw"])
    ux = np.sign(c) * np.abs(c) ** (2 / n)
    uy = np.sign(s) * np.abs(s) ** (2 / n)
    taper = 1 - head["taper"] * np.clip(s, 0, None) ** 2  # narrows the jaw towards the chin
    half_h = np.where(s < 0, CHEEK_Y - head["top"], head["chin"] - CHEEK_Y)
    x = 0.5 + shift + (head["width"] + grow) * ux * taper
    y = CHEEK_Y + (half_h + grow) * uy
    return np.stack([x, y], 1)


def head_x_at(head: dict, y: float, side: int, shift: float = 0.0) -> float:
    """x of the head contour at height y on one side (-1 left, +1 right), by inverting the superellipse."""
    top = y < CHEEK_Y
    half_h = (CHEEK_Y - head["top"]) if top else (head["chin"] - CHEEK_Y)
    v = min(abs(y - CHEEK_Y) / half_h, 1.0)
    n = head["n_top"] if top else head["n_jaw"]
    u = (1 - v**n) ** (1 / n)
    s = (1 - (1 - v**n) ** (2 / n)) ** 0.5 if not top else 0.0  # |sin t| for the taper
    taper = 1 - head["taper"] * s**2 if not top else 1.0
    return 0.5 + shift + side * head["width"] * u * taper


def bezier(p0, p1, p2, p3, n=12) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, np.float64) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


# --------------------------------------------------------------------------------------------------------------
# The painter: canonical shapes -> anti-aliased polygons on the supersampled canvas


class Painter:
    """Draws canonical-coordinate shapes through the pose transform onto an RGB canvas and a coverage mask."""

    def __init__(self, size: int, pose: dict):
        self.size = size
        self.img = np.zeros((size, size, 3), np.uint8)  # premultiplied person colour (0 outside)
        self.sil = np.zeros((size, size), np.uint8)  # person coverage, for compositing over the background
        m = pose_matrix(pose)
        self.lin = m[:, :2].T * size * ONE
        self.off = (m[:, 2] * size - 0.5) * ONE  # pixel centres at integers
        self.px = pose["scale"] * size  # canonical length -> canvas pixels

    def pts(self, xy, origin=(0, 0)) -> np.ndarray:
        """Canonical points [N, 2] -> fixed-point canvas coordinates (int32, `SHIFT` fractional bits)."""
        p = np.asarray(xy, np.float64) @ self.lin
        p += self.off
        if origin[0] or origin[1]:
            p -= (origin[0] * ONE, origin[1] * ONE)
        return np.rint(p, out=p).astype(np.int32)

    def width(self, w: float) -> int:
        return max(1, int(round(w * self.px)))

    def poly(self, xy, rgb, sil=False):
        p = [self.pts(xy)]
        cv2.fillPoly(self.img, p, tuple(rgb), AA, SHIFT)
        if sil:
            cv2.fillPoly(self.sil, p, 255, AA, SHIFT)

    def line(self, xy, rgb, w, closed=False, sil=False):
        p = [self.pts(xy)]
        cv2.polylines(self.img, p, closed, tuple(rgb), self.width(w), AA, SHIFT)
        if sil:
            cv2.polylines(self.sil, p, closed, 255, self.width(w), AA, SHIFT)

    def box(self, p: np.ndarray, pad_px: float):
        """Canvas box (x0, y0, x1, y1) around fixed-point points, padded by `pad_px`; None when off-canvas."""
        lo, hi = p.min(0) >> SHIFT, (p.max(0) >> SHIFT) + 2
        pad = int(math.ceil(pad_px))
        x0, y0 = max(int(lo[0]) - pad, 0), max(int(lo[1]) - pad, 0)
        x1, y1 = min(int(hi[0]) + pad, self.size), min(int(hi[1]) + pad, self.size)
        return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)

    def soft(self, xy, rgb, alpha: float, blur: float):
        """Blend a blurred polygon into the canvas (shadows, blush, highlights). `blur` in canonical units."""
        if alpha <= 0:
            return
        p = self.pts(xy)
        sigma = max(blur * self.px, 0.5)
        box = self.box(p, 2.5 * sigma)
        if box is None:
            return
        x0, y0, x1, y1 = box
        m = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(m, [p - (x0 * ONE, y0 * ONE)], alpha, AA, SHIFT)
        m = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
        region = self.img[y0:y1, x0:x1]
        f = region.astype(np.float32)
        f += (np.float32(rgb) - f) * m
        region[:] = f


# --------------------------------------------------------------------------------------------------------------
# Body parts. Each takes the painter, the full parameter dict and a detail rng, and paints in a fixed order.


def _torso(pt: Painter, P: dict):
    c = P["clothing"]
    nb = c["neck"] + 0.035  # half-width of the garment at the neck base
    sw = c["shoulders"]
    right = bezier((0.5 + nb, 0.86), (0.5 + nb + 0.1, 0.875), (0.5 + sw - 0.05, 0.91), (0.5 + sw, 0.97), 10)
    right = np.vstack([right, [(0.5 + sw + 0.05, 1.15)]])
    left = right[::-1] * [-1, 1] + [1, 0]
    body = np.vstack([left, right])
    pt.poly(body, c["rgb"], sil=True)
    if c["kind"] == "jacket":  # shirt in a V between lapels
        shirt = np.array([(0.5 - nb - 0.01, 0.86), (0.5 + nb + 0.01, 0.86), (0.5 + 0.06, 1.15), (0.5 - 0.06, 1.15)])
        pt.poly(shirt, c["rgb2"])
        for s in (-1, 1):
            lapel = [(0.5 + s * (nb + 0.01), 0.86), (0.5 + s * (nb + 0.07), 0.93), (0.5 + s * 0.05, 1.0),
                     (0.5 + s * 0.02, 1.15), (0.5 + s * 0.07, 1.15)]
            pt.poly(lapel, _scale(c["rgb"], 0.8))
            pt.line(lapel[:4], _scale(c["rgb"], 0.6), 0.004)


def _neck(pt: Painter, P: dict):
    c, skin = P["clothing"], P["skin"]["rgb"]
    nw = c["neck"]
    top = 0.72
    if c["kind"] in ("vneck", "collar", "jacket"):
        bottom = [(0.5 + nw + 0.03, 0.875), (0.5, 0.98), (0.5 - nw - 0.03, 0.875)]
    else:
        bottom = ellipse(0.5, 0.872, nw + 0.035, 0.035, n=24)
        bottom = bottom[(bottom[:, 1] >= 0.872)]
        bottom = bottom[np.argsort(-bottom[:, 0])]
    neck = np.vstack([[(0.5 - nw, top), (0.5 + nw, top), (0.5 + nw * 1.06, 0.84)], bottom, [(0.5 - nw * 1.06, 0.84)]])
    pt.poly(neck, skin, sil=True)
    # The chin casts a shadow on the neck.
    chin = P["head"]["chin"]
    pt.soft(ellipse(0.5, chin - 0.02, nw * 1.2, 0.06, n=24), _scale(skin, 0.62), 0.75, 0.018)
    if c["kind"] == "collar":
        for s in (-1, 1):
            pt.poly([(0.5 + s * (nw + 0.04), 0.86), (0.5 + s * (nw - 0.005), 0.83), (0.5 + s * 0.005, 0.98),
                     (0.5 + s * 0.06, 0.965)], c["rgb2"], sil=True)
    elif c["kind"] == "turtleneck":
        pt.poly([(0.5 - nw - 0.012, 0.78), (0.5 + nw + 0.012, 0.78), (0.5 + nw + 0.04, 0.9), (0.5 - nw - 0.04, 0.9)],
                _scale(c["rgb"], 0.92), sil=True)
        for k in range(5):
            y = 0.795 + k * 0.02
            pt.line([(0.5 - nw - 0.015, y), (0.5, y + 0.006), (0.5 + nw + 0.015, y)], _scale(c["rgb"], 0.78), 0.003)
    elif c["kind"] == "crew":
        rib = ellipse(0.5, 0.872, nw + 0.035, 0.035, n=24)
        rib = rib[rib[:, 1] >= 0.872]
        pt.line(rib[np.argsort(rib[:, 0])], _scale(c["rgb"], 0.8), 0.008)


def _ears(pt: Painter, P: dict):
    h, skin = P["head"], P["skin"]["rgb"]
    shift = -0.012 * P["pose"]["turn"]
    for s in (-1, 1):
        x = head_x_at(h, 0.52, s, shift) - s * 0.012
        w = 0.034 * (1 - 0.25 * s * P["pose"]["turn"])  # the far ear looks narrower
        pt.poly(ellipse(x + s * 0.012, 0.525, w, 0.062, angle=s * 0.15, n=28), skin, sil=True)
        pt.line(ellipse(x + s * 0.016, 0.52, w * 0.5, 0.04, angle=s * 0.15, n=20)[[12, 15, 18, 1, 4, 7]
                if s > 0 else [17, 14, 11, 8, 5, 2]], _scale(skin, 0.72), 0.005)


def _head(pt: Painter, P: dict):
    h, skin = P["head"], P["skin"]["rgb"]
    shift = -0.012 * P["pose"]["turn"]
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    pt.poly(head_outline(h, t, shift=shift), skin, sil=True)


def _cheeks(pt: Painter, P: dict, rng: np.random.Generator):
    ch, skin = P["cheeks"], P["skin"]["rgb"]
    if ch["blush"]:
        for s in (-1, 1):
            pt.soft(ellipse(0.5 + s * 0.165, 0.605, 0.045, 0.03, n=20), (224, 96, 100), ch["blush"], 0.02)
    if ch["freckles"]:
        dark = _scale(skin, 0.72)
        for _ in range(int(rng.integers(18, 40))):
            x, y = rng.normal(0, 0.09), rng.normal(0.57, 0.025)
            pt.poly(ellipse(0.5 + x, y, 0.003, 0.003, n=8), dark)


def _nose(pt: Painter, P: dict):
    n, skin = P["nose"], P["skin"]["rgb"]
    x, y, w = 0.5 + 0.012 * P["pose"]["turn"], n["y"], n["width"]
    if n["style"] == "wide":
        w *= 1.2
    light_x = math.cos(math.radians(P["lighting"]["azimuth_deg"]))
    side = -1 if light_x > 0 else 1  # the bridge shadow falls on the side away from the light
    dark = _scale(skin, 0.68)
    pt.soft([(0.5 + side * 0.012, 0.48), (0.5 + side * 0.02, 0.48), (x + side * w * 0.75, y - 0.005),
             (x + side * w * 0.45, y - 0.005)], dark, 0.35, 0.01)
    pt.soft(ellipse(x, y + 0.02, w * 0.8, 0.012, n=20), _scale(skin, 0.6), 0.45, 0.008)  # shadow under the nose
    pt.soft(ellipse(x - side * 0.004, y - 0.008, w * 0.35, 0.012, n=16), _scale(skin, 1.15), 0.4, 0.006)
    for s in (-1, 1):  # nostrils and the wings of the nose
        pt.poly(ellipse(x + s * w * 0.45, y + 0.012, w * 0.24, w * 0.12, angle=-s * 0.3, n=14), _scale(skin, 0.42))
        wing = ellipse(x + s * w * 0.62, y + 0.002, w * 0.38, 0.012, n=24)
        pt.line(wing[[20, 22, 0, 2, 4, 6]] if s > 0 else wing[[16, 14, 12, 10, 8, 6]], _scale(skin, 0.66), 0.004)
    if n["style"] == "straight":
        pt.line([(x - side * 0.01, 0.5), (x - side * 0.012, y - 0.02)], _scale(skin, 1.1), 0.006)


def _eye(pt: Painter, P: dict, centre, s: int):
    e, skin = P["eyes"], P["skin"]["rgb"]
    ew, eh = e["width"], e["open"]
    cx, cy = centre
    u = np.linspace(-1, 1, 13)
    upper = -eh * (1 - u**2) ** 0.7 * (1 - 0.18 * u * s)  # highest point a little towards the nose
    lower = eh * 0.72 * (1 - u**2) ** 0.9
    a = -math.radians(e["tilt_deg"]) * s  # outer corners up for positive tilt
    ca, sa = math.cos(a), math.sin(a)

    def place(lx, ly):
        return np.stack([cx + lx * ca - ly * sa, cy + lx * sa + ly * ca], 1)

    top, bottom = place(u * ew, upper), place(u * ew, lower)
    almond = np.vstack([top, bottom[::-1]])
    pt.soft(ellipse(cx, cy - 0.004, ew * 1.25, eh * 1.6 + 0.006, n=24), _scale(skin, 0.82), 0.35, 0.01)  # socket
    # Sclera, iris and pupil, clipped to the eye opening inside a small box.
    p = pt.pts(almond)
    box = pt.box(p, 1)
    if box is not None:
        x0, y0, x1, y1 = box
        m = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(m, [p - (x0 * ONE, y0 * ONE)], 1.0, AA, SHIFT)
        layer = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        layer[:] = (236, 232, 226)
        ir = ew * 0.44
        ix, iy = cx + e["gaze"][0] * ew * 0.38, cy + e["gaze"][1] * eh * 0.3
        col = e["iris_rgb"]
        for xy, rgb in ((ellipse(ix, iy, ir, ir, n=28), _scale(col, 0.55)),
                        (ellipse(ix, iy, ir * 0.82, ir * 0.82, n=28), col),
                        (ellipse(ix, iy, ir * 0.42, ir * 0.42, n=20), (14, 12, 14)),
                        (ellipse(ix - ir * 0.35, iy - ir * 0.35, ir * 0.2, ir * 0.2, n=12), (250, 250, 250))):
            cv2.fillPoly(layer, [pt.pts(xy, (x0, y0))], tuple(int(c) for c in rgb), AA, SHIFT)
        shade = np.linspace(0.72, 1.0, y1 - y0, dtype=np.float32)[:, None, None]  # the upper lid's shadow
        m = m[..., None]
        region = pt.img[y0:y1, x0:x1]
        f = region.astype(np.float32)
        f += (layer * shade - f) * m
        region[:] = f
    liner = (28, 20, 20)
    pt.line(top, liner, e["liner"])
    pt.line(bottom[2:-2], _scale(skin, 0.68), 0.0025)
    crease = place(u[2:-2] * ew * 0.95, upper[2:-2] * 1.15 - 0.011)
    pt.line(crease, _scale(skin, 0.72), 0.003)
    if e["lashes"]:
        for k in (8, 10, 12) if s > 0 else (4, 2, 0):
            x, y = top[k]
            pt.line([(x, y), (x + s * 0.008, y - 0.008)], liner, 0.0025)


def _eyes(pt: Painter, P: dict):
    _eye(pt, P, LEFT_EYE, -1)
    _eye(pt, P, RIGHT_EYE, 1)


def _brows(pt: Painter, P: dict):
    b = P["brows"]
    hair = P["hair"]["rgb"]
    rgb = _mix(_scale(hair, 0.8), _scale(P["skin"]["rgb"], 0.55), 0.25)
    if P["hair"]["colour"] in ("platinum", "white", "blonde", "blue", "pink", "purple", "green"):
        rgb = _mix(rgb, (120, 95, 70), 0.5)  # dyed or very light hair: darker brows
    u = np.linspace(0, 1, 9)
    for s, (ex, _) in ((-1, LEFT_EYE), (1, RIGHT_EYE)):
        x = ex + s * (-0.04 + b["length"] * u)
        y = b["y"] - b["arch"] * np.sin(np.pi * u**0.75) + b["angle"] * u
        half = b["thickness"] * (1 - 0.65 * u) * 0.5 + 0.0015
        poly = np.vstack([np.stack([x, y - half], 1), np.stack([x, y + half], 1)[::-1]])
        pt.poly(poly, rgb)


def _mouth_curves(P: dict):
    """Mouth line (upper edge of the opening), lower edge of the opening, and x, all canonical. [N] each."""
    m = P["lips"]
    ex, w = m["expression"], m["width"]
    s = np.linspace(-1, 1, 17)
    smile = {"smile": 0.014, "grin": 0.012, "smirk": 0.0, "neutral": 0.002, "open": 0.0}[ex]
    lift = smile * s**2
    if ex == "smirk":
        lift = 0.012 * np.clip(s, 0, None) ** 2 + 0.002 * s**2
    gap = {"grin": m["open"], "open": m["open"] * 1.4}.get(ex, 0.0)
    wid = w * (0.7 if ex == "open" else 1.12 if ex == "grin" else 1.0)
    x = 0.5 + wid * s
    top = MOUTH[1] - gap / 2 - lift
    bottom = MOUTH[1] - gap / 2 - lift + gap * (1 - s**2) ** 0.8
    return x, top, bottom


def _mouth(pt: Painter, P: dict):
    m, skin = P["lips"], P["skin"]["rgb"]
    x, top, bottom = _mouth_curves(P)
    s = np.linspace(-1, 1, len(x))
    lip = m["lip_rgb"]
    bow = 1 - 0.35 * np.exp(-((s / 0.18) ** 2))  # cupid's bow
    upper = np.vstack([np.stack([x, top], 1), np.stack([x, top - m["upper"] * (1 - s**2) ** 0.5 * bow], 1)[::-1]])
    lower = np.vstack([np.stack([x, bottom], 1), np.stack([x, bottom + m["lower"] * (1 - s**2) ** 0.6], 1)[::-1]])
    pt.soft(ellipse(0.5, bottom[8] + m["lower"] + 0.012, 0.035, 0.01, n=16), _scale(skin, 0.7), 0.35, 0.008)
    if m["expression"] in ("grin", "open"):
        gap = np.vstack([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])
        pt.poly(gap, (72, 24, 30))
        if m["expression"] == "grin":
            teeth_h = (bottom - top) * 0.45
            pt.poly(np.vstack([np.stack([x, top], 1), np.stack([x, top + teeth_h], 1)[::-1]])[2:-2], (238, 236, 228))
        else:
            pt.poly(ellipse(0.5, bottom[8] - 0.008, m["width"] * 0.45, 0.01, n=16), (176, 78, 88))
    pt.poly(lower, lip)
    pt.poly(upper, _scale(lip, 0.85))
    pt.soft(ellipse(0.5, bottom[8] + m["lower"] * 0.45, m["width"] * 0.35, m["lower"] * 0.2, n=16),
            _scale(lip, 1.35), 0.4, 0.004)  # lower-lip highlight
    line = _scale(lip, 0.45) if m["expression"] not in ("grin", "open") else _scale(lip, 0.7)
    pt.line(np.stack([x, top], 1), line, 0.003)
    if m["expression"] in ("smile", "grin"):  # cheek lines at the corners
        for k in (0, -1):
            cx, cy = x[k], top[k]
            d = 1 if k == -1 else -1
            pt.line([(cx + d * 0.008, cy - 0.016), (cx + d * 0.014, cy - 0.002), (cx + d * 0.008, cy + 0.01)],
                    _scale(skin, 0.8), 0.003)


def _beard_region(h: dict, shift: float, grow: float) -> np.ndarray:
    """The jaw below the cheek line: from the sideburns down around the mouth to under the nose. [N, 2]"""
    jaw = head_outline(h, np.linspace(0.08, np.pi - 0.08, 36), grow=grow, shift=shift)  # right to left
    side = head_x_at(h, 0.55, -1, shift) + 0.01
    cheeks = np.vstack([bezier((side, 0.55), (0.33, 0.6), (0.36, 0.655), (0.5, 0.658), 10),
                        bezier((0.5, 0.658), (0.64, 0.655), (0.67, 0.6), (1 - side + 2 * shift, 0.55), 10)])
    return np.vstack([jaw, cheeks])


def _facial_hair(pt: Painter, P: dict, rng: np.random.Generator, after_mouth: bool):
    kind = P["facial_hair"]
    if kind == "none":
        return
    h, hair = P["head"], P["hair"]["rgb"]
    shift = -0.012 * P["pose"]["turn"]
    _, top, bottom = _mouth_curves(P)
    lower_lip = bottom[8] + P["lips"]["lower"]
    if not after_mouth and kind in ("stubble", "beard", "goatee"):
        if kind == "goatee":
            region = ellipse(0.5, lower_lip + 0.035, 0.042, 0.045, n=24)
        else:
            region = _beard_region(h, shift, 0.012 if kind == "beard" else 0.0)
        if kind == "stubble":  # a shadow of the hair colour, speckled
            pt.soft(region, _mix(hair, P["skin"]["rgb"], 0.45), 0.22, 0.01)
            k, length, tones = 260, 0.002, (0.6, 0.8)
        else:
            pt.poly(region, _scale(hair, 0.95), sil=kind == "beard")
            k, length, tones = 90, 0.014, (0.65, 1.3)
        start = np.stack([0.5 + rng.uniform(-0.27, 0.27, k), rng.uniform(0.55, 0.92, k)], 1)
        end = start + np.stack([rng.normal(0, 0.005, k) * length / 0.014, np.full(k, length)], 1)
        segs = np.stack([start, end], 1)  # [k, 2, 2]
        dark = rng.random(k) < 0.6
        rgb = _mix(hair, P["skin"]["rgb"], 0.3) if kind == "stubble" else hair

        def strokes(layer, origin):  # short downward strokes (dots for stubble), kept inside the region
            p = pt.pts(segs.reshape(-1, 2), origin).reshape(-1, 2, 2)
            for sel, f in ((dark, tones[0]), (~dark, tones[1])):
                cv2.polylines(layer, list(p[sel]), False, tuple(_scale(rgb, f)), pt.width(0.003), AA, SHIFT)

        _hair_clip_draw(pt, [region], strokes)
    elif after_mouth and kind in ("moustache", "beard", "goatee"):
        mw = P["lips"]["width"] * 1.15
        y0 = top[8] - P["lips"]["upper"] - 0.002
        mous = [(0.5 - mw - 0.01, top[0] + 0.012), (0.5 - mw * 0.6, y0 - 0.018), (0.5, y0 - 0.024),
                (0.5 + mw * 0.6, y0 - 0.018), (0.5 + mw + 0.01, top[-1] + 0.012), (0.5 + mw * 0.5, y0 - 0.002),
                (0.5, y0 - 0.006), (0.5 - mw * 0.5, y0 - 0.002)]
        pt.poly(mous, _scale(hair, 0.9))


def _hair_clip_draw(pt: Painter, polys: list[np.ndarray], draw: Callable[[np.ndarray, tuple], None]):
    """Run `draw(layer, origin)` on a copy of the hair's box and keep its strokes only inside the hair."""
    ps = [pt.pts(p) for p in polys]
    box = pt.box(np.vstack(ps), 1)
    if box is None:
        return
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(m, [p - (x0 * ONE, y0 * ONE) for p in ps], 255, cv2.LINE_8, SHIFT)
    region = pt.img[y0:y1, x0:x1]
    layer = region.copy()
    draw(layer, (x0, y0))
    region[:] = cv2.copyTo(layer, m, region)


def _hair_texture(pt: Painter, P: dict, rng: np.random.Generator, polys: list[np.ndarray], crown, sheen=True):
    hp = P["hair"]
    rgb = hp["rgb"]
    dark, light = _scale(rgb, 0.78), _mix(rgb, (255, 246, 230), 0.16)
    cx, cy = crown

    if hp["texture"] == "curly":  # many small open curls
        k = hp["strands"] * 3
        a, r = rng.uniform(0, 2 * np.pi, k), rng.uniform(0.0, 0.5, k)
        centres = np.stack([cx + r * np.cos(a) * 0.9, cy + r * np.abs(np.sin(a)) * 1.4 - 0.03], 1)  # [k, 2]
        t = rng.uniform(0, 2 * np.pi, k)[:, None] + np.linspace(0, 4.2, 8)  # [k, 8] three quarters of a turn
        lines = centres[:, None, :] + 0.011 * np.stack([np.cos(t), np.sin(t)], 2)  # [k, 8, 2]
        width = 0.0035
    else:  # strands fanning down from the crown, bending a little
        k = hp["strands"]
        a = rng.uniform(0.05, np.pi - 0.05, k)
        a = np.where(rng.random(k) < 0.3, -a, a)  # a few strands over the top of the skull
        r0 = rng.uniform(0.03, 0.14, k)[:, None]  # strands start apart: no starburst at the crown
        r = r0 + (0.9 - r0) * np.linspace(0, 1, 14)  # [k, 14]
        ang = a[:, None] + rng.normal(0, 0.15, k)[:, None] * r
        wave = 0.012 if hp["texture"] == "wavy" else 0.0
        xs = cx + r * np.cos(ang) + wave * np.sin(r * 40 + rng.uniform(0, 6, k)[:, None])
        lines = np.stack([xs, cy + r * np.sin(ang) * 1.2], 2)  # [k, 14, 2]
        width = 0.003
    is_dark = rng.random(k) < 0.6

    def draw(layer, origin):
        n = lines.shape[1]
        p = pt.pts(lines.reshape(-1, 2), origin).reshape(-1, n, 2)
        for sel, rgb_ in ((is_dark, dark), (~is_dark, light)):  # one OpenCV call per colour
            cv2.polylines(layer, list(p[sel]), False, tuple(rgb_), pt.width(width), AA, SHIFT)

    _hair_clip_draw(pt, polys, draw)
    if not sheen:
        return
    # A soft sheen where the light catches the top of the hair.
    az = math.radians(P["lighting"]["azimuth_deg"])
    pt.soft(ellipse(cx + 0.08 * math.cos(az), P["head"]["top"] + 0.05, 0.12, 0.03, n=20),
            _mix(rgb, (255, 250, 240), 0.5), hp["sheen"], 0.02)


def _scallop(xy: np.ndarray, centre, amount: float, k: int) -> np.ndarray:
    """Push a closed outline outwards in bumps (curly hair silhouettes)."""
    d = xy - np.asarray(centre)
    ang = np.arctan2(d[:, 1], d[:, 0])
    r = np.linalg.norm(d, axis=1, keepdims=True)
    return np.asarray(centre) + d * (1 + amount * np.abs(np.sin(ang * k / 2))[:, None] / np.maximum(r, 1e-6))


def _crown(P: dict) -> tuple[float, float]:
    """Where the strands part: the side part, or the middle under a fringe."""
    hp = P["hair"]
    shift = -0.012 * P["pose"]["turn"]
    return 0.5 + (hp["part"] if not hp["fringe"] else 0.0) + shift, P["head"]["top"] + 0.02


def _hair_back(pt: Painter, P: dict, rng: np.random.Generator):
    """Hair behind the head: long hair, bobs, afros and buns, with their texture."""
    h, hp = P["head"], P["hair"]
    style, v = hp["style"], hp["volume"]
    shift = -0.012 * P["pose"]["turn"]
    polys = []
    if style in ("long", "bob"):
        t = np.linspace(np.pi, 2 * np.pi, 25)
        cap = head_outline(h, t, grow=v + 0.012, shift=shift)
        end, flare = hp["length"], hp["flare"] + (0.02 if style == "long" else 0)
        wide = h["width"] + v + 0.012
        right = [(0.5 + wide, CHEEK_Y + 0.05), (0.5 + wide + flare, end)]
        left = [(0.5 - wide - flare, end), (0.5 - wide, CHEEK_Y + 0.05)]
        hem = [(0.5 + 0.12, end + 0.01), (0.5 - 0.12, end + 0.01)]
        polys.append(np.vstack([cap, right, hem, left]))
    elif style in ("afro", "curly"):
        r = 0.37 if style == "afro" else 0.31
        c = (0.5 + shift, 0.4 if style == "afro" else 0.43)
        blob = ellipse(c[0], c[1], r * 1.02, r * (0.95 if style == "afro" else 1.05), n=90)
        blob = blob[blob[:, 1] < (0.62 if style == "afro" else 0.7)]
        polys.append(_scallop(blob, c, 0.02, 26))
    elif style == "bun":
        polys.append(ellipse(0.5 + shift, h["top"] - 0.03, 0.09, 0.075, n=32))
    for p in polys:
        pt.poly(p, _scale(hp["rgb"], 0.85), sil=True)
    if polys:
        _hair_texture(pt, P, rng, polys, _crown(P), sheen=False)


def _hair_front(pt: Painter, P: dict, rng: np.random.Generator):
    """The hair over the skull and forehead, with its hairline, sides, fringe; then strand or curl texture."""
    h, hp = P["head"], P["hair"]
    style, v = hp["style"], hp["volume"]
    shift = -0.012 * P["pose"]["turn"]
    if style == "bald":
        # A fringe of short hair around the back and sides, and a shine on the scalp.
        for s in (-1, 1):
            x = head_x_at(h, 0.45, s, shift)
            pt.soft([(x - s * 0.02, 0.38), (x + s * 0.006, 0.36), (x + s * 0.006, 0.5), (x - s * 0.02, 0.5)],
                    hp["rgb"], 0.8, 0.006)
        pt.soft(ellipse(0.5 + shift - 0.05, h["top"] + 0.07, 0.07, 0.03, angle=-0.3, n=16),
                _scale(P["skin"]["rgb"], 1.2), 0.45, 0.02)
        return
    if style == "buzz":
        v = 0.004
    side_y = {"short": 0.44, "side_part": 0.45, "buzz": 0.42, "fringe": 0.47, "curly": 0.52, "afro": 0.5,
              "bun": 0.44}.get(style, min(hp["length"], 0.82) if style == "bob" else 0.7)
    cover = {"bob": 0.03, "long": 0.045}.get(style, 0.008)  # how far the side hair reaches over the cheeks
    hl = hp["hairline"]
    t_top = np.linspace(np.pi, 2 * np.pi, 31)
    outer = head_outline(h, t_top, grow=v, shift=shift)
    # Side hair: straight down from the widest point to `side_y`.
    rx = outer[-1, 0]
    lx = outer[0, 0]
    ys = np.linspace(side_y, CHEEK_Y, 6) if side_y > CHEEK_Y else np.array([])
    # Inner edge: follows the face contour, `cover` inside it, from the bottom of the side hair up to the temple.
    inner_ys = np.linspace(max(side_y, 0.36), 0.36, 6)
    inner_r = [(head_x_at(h, y, 1, shift) - cover, y) for y in inner_ys]
    inner_l = [(head_x_at(h, y, -1, shift) + cover, y) for y in inner_ys[::-1]]
    # Hairline across the forehead, from the right temple to the left, dipping at the part.
    xs = np.linspace(inner_r[-1][0], inner_l[0][0], 15)
    if hp["fringe"]:
        fy = hp["fringe_y"]
        ys_hl = np.full_like(xs, fy) - 0.02 * ((xs - 0.5) / 0.25) ** 2
        if hp["fringe_kind"] == "swept":
            ys_hl = ys_hl - 0.05 * (xs - xs.min()) / (xs.max() - xs.min() + 1e-9)
        elif hp["fringe_kind"] == "jagged":
            ys_hl = ys_hl + np.where(np.arange(len(xs)) % 2 == 0, 0.0, -0.018)
    else:
        part = 0.5 + hp["part"]
        ys_hl = hl + 0.03 * ((xs - 0.5) / 0.22) ** 2 - 0.02 * np.exp(-((xs - part) / 0.06) ** 2)
        if style in ("short", "buzz"):
            ys_hl = hl + 0.045 * np.abs((xs - 0.5) / 0.22) ** 1.5 - 0.012  # receding corners
    hairline = np.stack([xs, ys_hl], 1)
    right = [(rx, y) for y in ys[::-1]] if len(ys) else []
    left = [(lx, y) for y in ys] if len(ys) else []
    parts = [outer]
    if right:
        parts.append(np.array(right))
    parts += [np.array(inner_r), hairline, np.array(inner_l)]
    if left:
        parts.append(np.array(left))
    front = np.vstack(parts)
    if hp["texture"] == "curly" or style in ("curly", "afro"):
        front = _scallop(front, (0.5 + shift, CHEEK_Y), 0.008, 40)
    rgb = hp["rgb"] if style != "buzz" else _mix(hp["rgb"], P["skin"]["rgb"], 0.35)
    # The hair shadows the forehead just below the hairline; the hair itself then covers the band's top.
    band = np.vstack([hairline - [0, 0.01], (hairline + [0, 0.02])[::-1]])
    pt.soft(band, _scale(P["skin"]["rgb"], 0.6), 0.4, 0.008)
    pt.poly(front, rgb, sil=True)
    if style != "buzz":
        _hair_texture(pt, P, rng, [front], _crown(P))
    if style == "bun":  # a band where the bun is tied
        pt.line([(0.5 + shift - 0.05, h["top"] + 0.01), (0.5 + shift + 0.05, h["top"] + 0.01)],
                _scale(hp["rgb"], 0.55), 0.008)


def _hat(pt: Painter, P: dict):
    hat = P["hat"]
    if not hat:
        return
    h = P["head"]
    shift = -0.012 * P["pose"]["turn"]
    rgb, dark = hat["rgb"], _scale(hat["rgb"], 0.72)
    v = P["hair"]["volume"]
    if hat["kind"] in ("beanie", "cap"):
        t = np.linspace(np.pi, 2 * np.pi, 31)
        dome = head_outline(h, t, grow=v + 0.02, shift=shift)
        band_y = 0.3 if hat["kind"] == "beanie" else 0.29
        dome = dome[dome[:, 1] <= band_y]
        pt.poly(np.vstack([dome, [(dome[-1, 0], band_y + 0.01), (dome[0, 0], band_y + 0.01)]]), rgb, sil=True)
        if hat["kind"] == "beanie":
            w = h["width"] + v + 0.03
            band = np.array([(0.5 + shift - w, band_y - 0.06), (0.5 + shift + w, band_y - 0.06),
                             (0.5 + shift + w, band_y + 0.01), (0.5 + shift - w, band_y + 0.01)])
            pt.poly(band, _scale(rgb, 0.88), sil=True)
            for k in np.linspace(-w + 0.015, w - 0.015, 16):
                pt.line([(0.5 + shift + k, band_y - 0.055), (0.5 + shift + k, band_y + 0.005)], dark, 0.004)
            if hat["pompom"]:
                pt.poly(_scallop(ellipse(0.5 + shift, h["top"] - v - 0.04, 0.05, 0.045, n=40),
                                 (0.5 + shift, h["top"] - v - 0.04), 0.006, 18), _scale(rgb, 1.1), sil=True)
        else:
            pt.line([(0.5 + shift, h["top"] - v), (0.5 + shift, band_y)], dark, 0.004)
            pt.poly(ellipse(0.5 + shift, h["top"] - v - 0.012, 0.014, 0.01, n=12), dark, sil=True)  # button
            # The visor, seen from the front: a flat half-ellipse over the forehead, shadowing it.
            brim = ellipse(0.5 + shift, band_y, h["width"] + 0.01, 0.06, n=48)
            brim = brim[brim[:, 1] >= band_y]
            brim = brim[np.argsort(-brim[:, 0])]
            pt.soft(brim + [0, 0.02], _scale(P["skin"]["rgb"], 0.5), 0.5, 0.015)
            pt.poly(brim, _scale(rgb, 0.85), sil=True)
            pt.line(brim, dark, 0.004)
    else:  # a brimmed hat: crown, ribbon, wide brim
        w = h["width"] * 0.82
        base = 0.27
        crown = np.vstack([bezier((0.5 + shift - w, base), (0.5 + shift - w, base - 0.12),
                                  (0.5 + shift - w * 0.8, base - 0.19), (0.5 + shift, base - 0.17), 10),
                           bezier((0.5 + shift, base - 0.17), (0.5 + shift + w * 0.8, base - 0.19),
                                  (0.5 + shift + w, base - 0.12), (0.5 + shift + w, base), 10)])
        pt.poly(crown, rgb, sil=True)
        pt.poly([(0.5 + shift - w, base - 0.045), (0.5 + shift + w, base - 0.045), (0.5 + shift + w, base),
                 (0.5 + shift - w, base)], _scale(rgb, 0.45), sil=True)
        pt.poly(ellipse(0.5 + shift, base + 0.005, h["width"] + 0.13, 0.04, n=48), dark, sil=True)


def _glasses(pt: Painter, P: dict):
    g = P["glasses"]
    if not g:
        return
    frame = FRAMES[g["frame"]]
    gw, gh = 0.058 * g["size"], 0.042 * g["size"]
    power = {"round": 2.0, "rect": 5.0, "wide": 3.5}[g["shape"]]
    if g["shape"] == "wide":
        gw *= 1.12
        gh *= 0.9
    h = P["head"]
    for s, (ex, ey) in ((-1, LEFT_EYE), (1, RIGHT_EYE)):
        lens = ellipse(ex, ey + 0.004, gw, gh, n=48, power=power)
        if g["sunglasses"]:
            pt.soft(lens, (20, 22, 28), 0.82, 0.001)
        else:
            pt.soft(lens, (210, 225, 235), 0.12, 0.001)
        pt.soft([(ex - 0.02, ey - 0.02), (ex - 0.01, ey - 0.03), (ex + 0.02, ey + 0.015), (ex + 0.012, ey + 0.025)],
                (255, 255, 255), 0.22, 0.004)  # glare
        pt.line(lens, frame, g["thickness"], closed=True, sil=True)
        pt.line([(ex + s * gw, ey - gh * 0.3), (head_x_at(h, ey - 0.01, s) + s * 0.004, ey - 0.012)],
                frame, g["thickness"] * 0.8, sil=True)  # temple arm
    pt.line([(LEFT_EYE[0] + gw, LEFT_EYE[1] - gh * 0.2), (0.5, LEFT_EYE[1] - gh * 0.45),
             (RIGHT_EYE[0] - gw, RIGHT_EYE[1] - gh * 0.2)], frame, g["thickness"])


def _earrings(pt: Painter, P: dict):
    er = P["earrings"]
    if not er or P["hair"]["style"] in ("long", "bob", "afro", "curly"):
        return  # hidden by the hair
    rgb = METALS[er["metal"]]
    shift = -0.012 * P["pose"]["turn"]
    for s in (-1, 1):
        x = head_x_at(P["head"], 0.58, s, shift) + s * 0.018
        y = 0.582
        if er["kind"] == "stud":
            pt.poly(ellipse(x, y, 0.007, 0.007, n=12), rgb, sil=True)
        elif er["kind"] == "hoop":
            pt.line(ellipse(x, y + 0.022, 0.019, 0.022, n=28), rgb, 0.0045, closed=True, sil=True)
        else:
            pt.line([(x, y), (x, y + 0.03)], rgb, 0.003, sil=True)
            pt.poly(ellipse(x, y + 0.04, 0.009, 0.013, n=16), rgb, sil=True)


def paint_person(P: dict, size: int) -> Painter:
    """Paint everything but the background onto a `size` x `size` canvas (painter's algorithm, back to front)."""
    rng = np.random.default_rng(P["detail_seed"])
    pt = Painter(size, P["pose"])
    _torso(pt, P)
    _hair_back(pt, P, rng)
    _neck(pt, P)
    _ears(pt, P)
    _head(pt, P)
    _cheeks(pt, P, rng)
    _facial_hair(pt, P, rng, after_mouth=False)
    _nose(pt, P)
    _eyes(pt, P)
    _brows(pt, P)
    _mouth(pt, P)
    _facial_hair(pt, P, rng, after_mouth=True)
    _hair_front(pt, P, rng)
    _hat(pt, P)
    _glasses(pt, P)
    _earrings(pt, P)
    return pt


# --------------------------------------------------------------------------------------------------------------
# Background, light and camera, computed at the output resolution (all of them are smooth)


@functools.lru_cache(maxsize=8)
def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates of pixel centres. [res, res] each."""
    c = (np.arange(res, dtype=np.float32) + 0.5) / res
    return np.meshgrid(c, c)


def render_background(P: dict, res: int) -> np.ndarray:
    """The backdrop, float32 RGB. [res, res, 3]"""
    b = P["background"]
    x, y = _grid(res)
    c0, c1 = np.float32(b["rgb"]), np.float32(b["rgb2"])
    kind = b["kind"]
    rng = np.random.default_rng(P["detail_seed"] + 1)
    if kind == "flat":
        t = np.zeros_like(x)
    elif kind == "gradient":
        a = math.radians(b["angle_deg"])
        t = (x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a) + 0.5
    elif kind == "radial":
        t = np.sqrt((x - 0.5) ** 2 + (y - 0.4) ** 2) / 0.75
    elif kind == "noise":
        k = b["scale"]
        t = cv2.resize(rng.random((k, k), dtype=np.float32), (res, res), interpolation=cv2.INTER_CUBIC)
    elif kind == "stripes":
        a = math.radians(b["angle_deg"])
        u = x * math.cos(a) + y * math.sin(a)
        t = 0.5 + 0.5 * np.tanh(6 * np.sin(2 * np.pi * u * b["scale"]))
        t *= 0.6
    else:  # bokeh: a gradient with out-of-focus discs of light
        a = math.radians(b["angle_deg"])
        t = (x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a) + 0.5
        discs = np.zeros((res, res), np.float32)
        for _ in range(b["count"]):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.11)
            discs = np.maximum(discs, (np.hypot(x - cx, y - cy) < r) * rng.uniform(0.25, 0.6))
        discs = cv2.GaussianBlur(discs, (0, 0), max(0.006 * res, 0.4))
        bg = c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]
        return bg + (np.float32([255, 250, 235]) - bg) * discs[..., None]
    return c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]


def light_vector(lighting: dict) -> np.ndarray:
    """Unit vector towards the light (x right, y down, z towards the viewer)."""
    az, el = math.radians(lighting["azimuth_deg"]), math.radians(lighting["elevation_deg"])
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az) * 0.7 - 0.3 * math.cos(el), math.sin(el)])


def shading(P: dict, res: int) -> np.ndarray:
    """Light on the person, float32 multiplier per pixel and channel. [res, res, 3]

    The head is treated as an ellipsoid and the shoulders as a wider one below it; Lambert's law on those normals
    gives the soft modelling of a key light; `ambient` fills the shadows.
    """
    lt = P["lighting"]
    x, y = _grid(res)
    # Pixel -> canonical coordinates (inverse pose), so the light's modelling turns with the face.
    m = pose_matrix(P["pose"])
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    u = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
    v = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
    L = light_vector(lt)
    h = P["head"]

    def lambert(cx, cy, ax, ay):
        nx, ny = (u - cx) / ax, (v - cy) / ay
        r2 = nx * nx + ny * ny
        k = np.where(r2 > 1, 1 / np.sqrt(np.maximum(r2, 1e-6)), 1.0)  # outside: the silhouette normal
        nz = np.sqrt(np.clip(1 - r2, 0, 1))
        return np.clip(nx * k * L[0] + ny * k * L[1] + nz * L[2], 0, 1)

    head = lambert(0.5 - 0.012 * P["pose"]["turn"], 0.53, h["width"] * 1.25, (h["chin"] - h["top"]) * 0.62)
    body = lambert(0.5, 1.12, 0.55, 0.3)
    w = np.clip((v - h["chin"] + 0.02) / 0.08, 0, 1)
    lam = head * (1 - w) + body * w
    warm = lt["warmth"]
    key = np.float32([1 + 0.08 * warm, 1.0, 1 - 0.1 * warm])
    amb = np.float32([1 - 0.04 * warm, 1.0, 1 + 0.05 * warm]) * lt["ambient"]
    lz = max(L[2], 0.4)
    gain = (1.08 - lt["ambient"]) / lz  # a face-on point comes out at about 1.08
    return amb + (gain * lam)[..., None] * key


def finish(img: np.ndarray, P: dict, rng: np.random.Generator) -> np.ndarray:
    """Camera: vignette, colour balance, contrast, mild blur, sensor noise; float32 RGB -> uint8. [res, res, 3]"""
    cam = P["camera"]
    res = img.shape[0]
    x, y = _grid(res)
    vig = 1 - cam["vignette"] * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2
    img = img * (vig[..., None] * np.float32(cam["gain"]))
    img = (img - 128) * cam["contrast"] + 128
    img = cv2.GaussianBlur(img, (0, 0), cam["blur"])  # in output pixels, as a lens or sensor blurs
    img += rng.normal(0, cam["noise"], img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_params(P: dict, res: int = 64, *, supersample: int = 4) -> np.ndarray:
    """Render a parameter dict (from `sample_params`) as uint8 RGB. [res, res, 3]"""
    if res < MIN_RES:
        raise ValueError(f"res must be at least {MIN_RES}, got {res}")
    # Keep the canvas at most 1024 px: from 512 px up, LINE_AA at twice the output resolution is smooth enough.
    ss = max(1, min(int(supersample), 1024 // res))
    pt = paint_person(P, res * ss)
    person = cv2.resize(pt.img, (res, res), interpolation=cv2.INTER_AREA).astype(np.float32)  # premultiplied
    cover = cv2.resize(pt.sil, (res, res), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    bg = render_background(P, res)
    # Soft drop shadow of the person on the backdrop, away from the light.
    L = light_vector(P["lighting"])
    dx, dy = -L[0] * 0.05 * res, -L[1] * 0.05 * res
    shadow = cv2.warpAffine(cover, np.float32([[1, 0, dx], [0, 1, dy]]), (res, res))
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.03 * res)
    bg *= (1 - P["background"]["shadow"] * shadow)[..., None]
    img = person * shading(P, res) + bg * (1 - cover)[..., None]
    rng = np.random.default_rng([P["seed"], P["index"], res])
    return finish(img, P, rng)


def landmarks(P: dict, res: int) -> dict:
    """Eye and mouth centres in output pixel coordinates, after the pose jitter."""
    le, re, mo = to_pixels([LEFT_EYE, RIGHT_EYE, MOUTH], P["pose"], res).tolist()
    return {"left_eye": le, "right_eye": re, "mouth": mo}


def render_portrait(seed: int, index: int, res: int = 64, *, supersample: int = 4) -> tuple[np.ndarray, dict]:
    """Image `index` of the set `seed`: uint8 RGB array [res, res, 3] and its parameters (JSON-serialisable).

    The parameters hold every choice drawn, the landmarks `left_eye`, `right_eye`, `mouth` ([x, y] in output
    pixels, pixel centres at integers, after pose jitter), and `seed`, `index`, `res`.
    """
    P = sample_params(seed, index)
    img = render_params(P, res, supersample=supersample)
    P["res"] = int(res)
    P.update({k: [round(c, 3) for c in xy] for k, xy in landmarks(P, res).items()})
    return img, P


# --------------------------------------------------------------------------------------------------------------
# Dataset and writer


class PortraitsDataset(torch.utils.data.Dataset):
    """`n` portraits of set `seed`, rendered on the fly: item i is uint8 RGB [3, res, res]."""

    def __init__(self, n: int, *, res: int = 64, seed: int = 0):
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        if res < MIN_RES:
            raise ValueError(f"res must be at least {MIN_RES}, got {res}")
        self.n, self.res, self.seed = int(n), int(res), int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i) -> torch.Tensor:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} portraits")
        img, _ = render_portrait(self.seed, i, self.res)
        return torch.from_numpy(img).permute(2, 0, 1).contiguous()  # [3, res, res]


PARAMS_FILE = "params.jsonl"


def _png_name(index: int) -> str:
    return f"{index:06d}.png"


def _render_and_write(job: tuple[str, int, int, int]) -> dict:
    """Worker: render one portrait and write its PNG atomically (temp name, then os.replace)."""
    outdir, seed, index, res = job
    img, params = render_portrait(seed, index, res)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise SGProjectError(f"could not encode portrait {index} as PNG")
    final = os.path.join(outdir, _png_name(index))
    tmp = os.path.join(outdir, f".tmp-{os.getpid()}-{_png_name(index)}")
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, final)
    return params


def _params_only(seed: int, index: int, res: int) -> dict:
    """The params line of an image already on disk, without drawing it again."""
    P = sample_params(seed, index)
    P["res"] = int(res)
    P.update({k: [round(c, 3) for c in xy] for k, xy in landmarks(P, res).items()})
    return P


def _read_params(path: Path, seed: int, res: int) -> dict[int, dict]:
    """Params lines already written, by index; a torn last line (interrupted run) is ignored."""
    found: dict[int, dict] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        try:
            p = json.loads(line)
        except json.JSONDecodeError:
            continue
        if p.get("seed") != seed or p.get("res") != res:
            raise SGProjectError(
                f"{path.parent} already holds portraits of another set (seed {p.get('seed')}, res {p.get('res')}); "
                f"asked for seed {seed}, res {res}: use an empty folder")
        found[int(p["index"])] = p
    return found


def _worker_init():
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would only contend


def write_portraits(outdir: Path, *, n: int, res: int = 64, seed: int = 0, start: int = 0, workers: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> Path:
    """Write portraits `start .. start+n-1` as {index:06d}.png and `params.jsonl` (one JSON object per image,
    in index order) into outdir; return the params path.

    Resumable: images already present (and their params line) are not rendered again; a PNG present without its
    params line gets its line back without being drawn. `progress(done, total)` is called as images complete.
    `workers` > 0 renders in that many processes.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be non-negative, got n={n}, start={start}")
    if res < MIN_RES:
        raise ValueError(f"res must be at least {MIN_RES}, got {res}")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for junk in outdir.glob(".tmp-*.png"):  # left by an interrupted run
        junk.unlink(missing_ok=True)
    params_path = outdir / PARAMS_FILE
    have = _read_params(params_path, seed, res)
    indices = range(start, start + n)
    todo, done = [], 0
    for i in indices:
        if (outdir / _png_name(i)).exists():
            if i not in have:
                have[i] = _params_only(seed, i, res)
            done += 1
        else:
            todo.append(i)
    # Rewrite the params file with what is on disk, then append as images finish, so an interruption loses nothing.
    _write_params(params_path, [have[i] for i in sorted(have)])
    if progress:
        progress(done, n)
    if todo:
        jobs = [(str(outdir), seed, i, res) for i in todo]
        with open(params_path, "a") as f:
            for params in _run(jobs, workers):
                f.write(json.dumps(params, separators=(",", ":")) + "\n")
                f.flush()
                have[params["index"]] = params
                done += 1
                if progress:
                    progress(done, n)
        _write_params(params_path, [have[i] for i in sorted(have)])  # back in index order
    return params_path


def _run(jobs: list, workers: int) -> Iterable[dict]:
    if workers <= 0:
        yield from map(_render_and_write, jobs)
        return
    # 'spawn', not fork: forking a process whose torch/OpenMP thread pools are running deadlocks the children.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap_unordered(_render_and_write, jobs, chunksize=16)


def _write_params(path: Path, rows: list[dict]):
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "w") as f:
        for p in rows:
            f.write(json.dumps(p, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
