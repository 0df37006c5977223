"""Canonical geometry of a portrait and the shapes it is drawn with.

Every shape is described in *canonical* coordinates: 0..1 of the image side, x right, y down, laid out as the FFHQ
alignment crop (eyes at x 0.376 / 0.625, y 0.469, mouth at 0.5, 0.703). One pose transform (rotation and scale
about the image centre, then a shift) takes them to the image, so the landmarks move exactly with the face.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import numpy as np

from generator.data.portraits.params import Head, Pose

# The FFHQ alignment crop, in normalised image coordinates (x right, y down).
LEFT_EYE = (0.376, 0.469)
RIGHT_EYE = (0.625, 0.469)
MOUTH = (0.5, 0.703)
POSE_CENTRE = (0.5, 0.5)  # rotation and scale jitter act about the image centre
CHEEK_Y = 0.5  # height of the widest part of the head


def pose_matrix(pose: Pose | Mapping) -> np.ndarray:
    """2x3 affine map canonical -> posed normalised coordinates: rotate and scale about the centre, then shift.

    `pose` is a `Pose` or its dict form (a params.jsonl row's "pose"; "turn" may be left out).
    """
    if not isinstance(pose, Pose):
        pose = Pose(**pose)
    a = math.radians(pose.angle_deg)
    s = pose.scale
    lin = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.array(POSE_CENTRE)
    t = c - lin @ c + np.array(pose.offset)
    return np.hstack([lin, t[:, None]])


def to_pixels(xy, pose: Pose | Mapping, res: int) -> np.ndarray:
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


def head_outline(head: Head, t: np.ndarray, grow: float = 0.0, shift: float = 0.0) -> np.ndarray:
    """Head contour at angles `t` (sin t < 0: skull, > 0: jaw), pushed out by `grow`. [N, 2]"""
    c, s = np.cos(t), np.sin(t)
    n = np.where(s < 0, head.n_top, head.n_jaw)
    ux = np.sign(c) * np.abs(c) ** (2 / n)
    uy = np.sign(s) * np.abs(s) ** (2 / n)
    taper = 1 - head.taper * np.clip(s, 0, None) ** 2  # narrows the jaw towards the chin
    half_h = np.where(s < 0, CHEEK_Y - head.top, head.chin - CHEEK_Y)
    x = 0.5 + shift + (head.width + grow) * ux * taper
    y = CHEEK_Y + (half_h + grow) * uy
    return np.stack([x, y], 1)


def head_x_at(head: Head, y: float, side: int, shift: float = 0.0) -> float:
    """x of the head contour at height y on one side (-1 left, +1 right), by inverting the superellipse."""
    top = y < CHEEK_Y
    half_h = (CHEEK_Y - head.top) if top else (head.chin - CHEEK_Y)
    v = min(abs(y - CHEEK_Y) / half_h, 1.0)
    n = head.n_top if top else head.n_jaw
    u = (1 - v**n) ** (1 / n)
    s = (1 - (1 - v**n) ** (2 / n)) ** 0.5 if not top else 0.0  # |sin t| for the taper
    taper = 1 - head.taper * s**2 if not top else 1.0
    return 0.5 + shift + side * head.width * u * taper


def bezier(p0, p1, p2, p3, n=12) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, np.float64) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
