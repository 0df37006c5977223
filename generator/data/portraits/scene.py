"""Background, light and camera, computed at the output resolution (all of them are smooth), and the composite.

`render_params` paints the person on a canvas `supersample` times larger than the output, area-downsamples canvas
and coverage to `res`, composites the person over the backdrop (premultiplied alpha) with a soft drop shadow and
the light's shading, then finishes with the camera (vignette, colour balance, contrast, blur, sensor noise).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from generator.data.portraits.geometry import pose_matrix
from generator.data.portraits.paint import paint_person
from generator.data.portraits.params import Lighting, PortraitParams

MIN_RES = 32


@functools.lru_cache(maxsize=8)
def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates of pixel centres. [res, res] each."""
    c = (np.arange(res, dtype=np.float32) + 0.5) / res
    return np.meshgrid(c, c)


def render_background(P: PortraitParams, res: int) -> np.ndarray:
    """The backdrop, float32 RGB. [res, res, 3]"""
    b = P.background
    x, y = _grid(res)
    c0, c1 = np.float32(b.rgb), np.float32(b.rgb2)
    kind = b.kind
    rng = np.random.default_rng(P.detail_seed + 1)
    if kind == "flat":
        t = np.zeros_like(x)
    elif kind == "gradient":
        a = math.radians(b.angle_deg)
        t = (x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a) + 0.5
    elif kind == "radial":
        t = np.sqrt((x - 0.5) ** 2 + (y - 0.4) ** 2) / 0.75
    elif kind == "noise":
        k = b.scale
        t = cv2.resize(rng.random((k, k), dtype=np.float32), (res, res), interpolation=cv2.INTER_CUBIC)
    elif kind == "stripes":
        a = math.radians(b.angle_deg)
        u = x * math.cos(a) + y * math.sin(a)
        t = 0.5 + 0.5 * np.tanh(6 * np.sin(2 * np.pi * u * b.scale))
        t *= 0.6
    else:  # bokeh: a gradient with out-of-focus discs of light
        a = math.radians(b.angle_deg)
        t = (x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a) + 0.5
        discs = np.zeros((res, res), np.float32)
        for _ in range(b.count):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.11)
            discs = np.maximum(discs, (np.hypot(x - cx, y - cy) < r) * rng.uniform(0.25, 0.6))
        discs = cv2.GaussianBlur(discs, (0, 0), max(0.006 * res, 0.4))
        bg = c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]
        return bg + (np.float32([255, 250, 235]) - bg) * discs[..., None]
    return c0 + (c1 - c0) * np.clip(t, 0, 1)[..., None]


def light_vector(lighting: Lighting) -> np.ndarray:
    """Unit vector towards the light (x right, y down, z towards the viewer)."""
    az, el = math.radians(lighting.azimuth_deg), math.radians(lighting.elevation_deg)
    return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az) * 0.7 - 0.3 * math.cos(el), math.sin(el)])


def shading(P: PortraitParams, res: int) -> np.ndarray:
    """Light on the person, float32 multiplier per pixel and channel. [res, res, 3]

    The head is treated as an ellipsoid and the shoulders as a wider one below it; Lambert's law on those normals
    gives the soft modelling of a key light; `ambient` fills the shadows.
    """
    lt = P.lighting
    x, y = _grid(res)
    # Pixel -> canonical coordinates (inverse pose), so the light's modelling turns with the face.
    m = pose_matrix(P.pose)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    u = inv[0, 0] * x + inv[0, 1] * y + inv[0, 2]
    v = inv[1, 0] * x + inv[1, 1] * y + inv[1, 2]
    L = light_vector(lt)
    h = P.head

    def lambert(cx, cy, ax, ay):
        nx, ny = (u - cx) / ax, (v - cy) / ay
        r2 = nx * nx + ny * ny
        k = np.where(r2 > 1, 1 / np.sqrt(np.maximum(r2, 1e-6)), 1.0)  # outside: the silhouette normal
        nz = np.sqrt(np.clip(1 - r2, 0, 1))
        return np.clip(nx * k * L[0] + ny * k * L[1] + nz * L[2], 0, 1)

    head = lambert(0.5 - 0.012 * P.pose.turn, 0.53, h.width * 1.25, (h.chin - h.top) * 0.62)
    body = lambert(0.5, 1.12, 0.55, 0.3)
    w = np.clip((v - h.chin + 0.02) / 0.08, 0, 1)
    lam = head * (1 - w) + body * w
    warm = lt.warmth
    key = np.float32([1 + 0.08 * warm, 1.0, 1 - 0.1 * warm])
    amb = np.float32([1 - 0.04 * warm, 1.0, 1 + 0.05 * warm]) * lt.ambient
    lz = max(L[2], 0.4)
    gain = (1.08 - lt.ambient) / lz  # a face-on point comes out at about 1.08
    return amb + (gain * lam)[..., None] * key


def finish(img: np.ndarray, P: PortraitParams, rng: np.random.Generator) -> np.ndarray:
    """Camera: vignette, colour balance, contrast, mild blur, sensor noise; float32 RGB -> uint8. [res, res, 3]"""
    cam = P.camera
    res = img.shape[0]
    x, y = _grid(res)
    vig = 1 - cam.vignette * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2
    img = img * (vig[..., None] * np.float32(cam.gain))
    img = (img - 128) * cam.contrast + 128
    img = cv2.GaussianBlur(img, (0, 0), cam.blur)  # in output pixels, as a lens or sensor blurs
    img += rng.normal(0, cam.noise, img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_params(P: PortraitParams, res: int = 64, *, supersample: int = 4) -> np.ndarray:
    """Render the parameters (from `sample_params`) as uint8 RGB. [res, res, 3]"""
    if res < MIN_RES:
        raise ValueError(f"res must be at least {MIN_RES}, got {res}")
    # Keep the canvas at most 1024 px: from 512 px up, LINE_AA at twice the output resolution is smooth enough.
    ss = max(1, min(int(supersample), 1024 // res))
    pt = paint_person(P, res * ss)
    person = cv2.resize(pt.img, (res, res), interpolation=cv2.INTER_AREA).astype(np.float32)  # premultiplied
    cover = cv2.resize(pt.sil, (res, res), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    bg = render_background(P, res)
    # Soft drop shadow of the person on the backdrop, away from the light.
    L = light_vector(P.lighting)
    dx, dy = -L[0] * 0.05 * res, -L[1] * 0.05 * res
    shadow = cv2.warpAffine(cover, np.float32([[1, 0, dx], [0, 1, dy]]), (res, res))
    shadow = cv2.GaussianBlur(shadow, (0, 0), 0.03 * res)
    bg *= (1 - P.background.shadow * shadow)[..., None]
    img = person * shading(P, res) + bg * (1 - cover)[..., None]
    rng = np.random.default_rng([P.seed, P.index, res])
    return finish(img, P, rng)
