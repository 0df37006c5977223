"""Painting the person: canonical shapes -> anti-aliased OpenCV polygons on a supersampled canvas.

`paint_person(P, size)` draws everything but the background, back to front, onto a canvas `size` pixels square
together with a coverage mask; `scene.render_params` downsamples both and composites them over the backdrop.
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from generator.data.portraits.geometry import (
    CHEEK_Y, LEFT_EYE, MOUTH, RIGHT_EYE, bezier, ellipse, head_outline, head_x_at, pose_matrix,
)
from generator.data.portraits.params import FRAMES, METALS, Head, PortraitParams, Pose, mix_rgb, scale_rgb

SHIFT = 4  # sub-pixel bits for cv2 drawing: coordinates are passed as integers * 16
ONE = 1 << SHIFT
AA = cv2.LINE_AA


class Painter:
    """Draws canonical-coordinate shapes through the pose transform onto an RGB canvas and a coverage mask."""

    def __init__(self, size: int, pose: Pose):
        self.size = size
        self.img = np.zeros((size, size, 3), np.uint8)  # premultiplied person colour (0 outside)
        self.sil = np.zeros((size, size), np.uint8)  # person coverage, for compositing over the background
        m = pose_matrix(pose)
        self.lin = m[:, :2].T * size * ONE
        self.off = (m[:, 2] * size - 0.5) * ONE  # pixel centres at integers
        self.px = pose.scale * size  # canonical length -> canvas pixels

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
# Body parts. Each takes the painter, the parameters (and some a detail rng) and paints in a fixed order.


def _torso(pt: Painter, P: PortraitParams):
    c = P.clothing
    nb = c.neck + 0.035  # half-width of the garment at the neck base
    sw = c.shoulders
    right = bezier((0.5 + nb, 0.86), (0.5 + nb + 0.1, 0.875), (0.5 + sw - 0.05, 0.91), (0.5 + sw, 0.97), 10)
    right = np.vstack([right, [(0.5 + sw + 0.05, 1.15)]])
    left = right[::-1] * [-1, 1] + [1, 0]
    body = np.vstack([left, right])
    pt.poly(body, c.rgb, sil=True)
    if c.kind == "jacket":  # shirt in a V between lapels
        shirt = np.array([(0.5 - nb - 0.01, 0.86), (0.5 + nb + 0.01, 0.86), (0.5 + 0.06, 1.15), (0.5 - 0.06, 1.15)])
        pt.poly(shirt, c.rgb2)
        for s in (-1, 1):
            lapel = [(0.5 + s * (nb + 0.01), 0.86), (0.5 + s * (nb + 0.07), 0.93), (0.5 + s * 0.05, 1.0),
                     (0.5 + s * 0.02, 1.15), (0.5 + s * 0.07, 1.15)]
            pt.poly(lapel, scale_rgb(c.rgb, 0.8))
            pt.line(lapel[:4], scale_rgb(c.rgb, 0.6), 0.004)


def _neck(pt: Painter, P: PortraitParams):
    c, skin = P.clothing, P.skin.rgb
    nw = c.neck
    top = 0.72
    if c.kind in ("vneck", "collar", "jacket"):
        bottom = [(0.5 + nw + 0.03, 0.875), (0.5, 0.98), (0.5 - nw - 0.03, 0.875)]
    else:
        bottom = ellipse(0.5, 0.872, nw + 0.035, 0.035, n=24)
        bottom = bottom[(bottom[:, 1] >= 0.872)]
        bottom = bottom[np.argsort(-bottom[:, 0])]
    neck = np.vstack([[(0.5 - nw, top), (0.5 + nw, top), (0.5 + nw * 1.06, 0.84)], bottom, [(0.5 - nw * 1.06, 0.84)]])
    pt.poly(neck, skin, sil=True)
    # The chin casts a shadow on the neck.
    chin = P.head.chin
    pt.soft(ellipse(0.5, chin - 0.02, nw * 1.2, 0.06, n=24), scale_rgb(skin, 0.62), 0.75, 0.018)
    if c.kind == "collar":
        for s in (-1, 1):
            pt.poly([(0.5 + s * (nw + 0.04), 0.86), (0.5 + s * (nw - 0.005), 0.83), (0.5 + s * 0.005, 0.98),
                     (0.5 + s * 0.06, 0.965)], c.rgb2, sil=True)
    elif c.kind == "turtleneck":
        pt.poly([(0.5 - nw - 0.012, 0.78), (0.5 + nw + 0.012, 0.78), (0.5 + nw + 0.04, 0.9), (0.5 - nw - 0.04, 0.9)],
                scale_rgb(c.rgb, 0.92), sil=True)
        for k in range(5):
            y = 0.795 + k * 0.02
            pt.line([(0.5 - nw - 0.015, y), (0.5, y + 0.006), (0.5 + nw + 0.015, y)], scale_rgb(c.rgb, 0.78), 0.003)
    elif c.kind == "crew":
        rib = ellipse(0.5, 0.872, nw + 0.035, 0.035, n=24)
        rib = rib[rib[:, 1] >= 0.872]
        pt.line(rib[np.argsort(rib[:, 0])], scale_rgb(c.rgb, 0.8), 0.008)


def _ears(pt: Painter, P: PortraitParams):
    h, skin = P.head, P.skin.rgb
    shift = -0.012 * P.pose.turn
    for s in (-1, 1):
        x = head_x_at(h, 0.52, s, shift) - s * 0.012
        w = 0.034 * (1 - 0.25 * s * P.pose.turn)  # the far ear looks narrower
        pt.poly(ellipse(x + s * 0.012, 0.525, w, 0.062, angle=s * 0.15, n=28), skin, sil=True)
        pt.line(ellipse(x + s * 0.016, 0.52, w * 0.5, 0.04, angle=s * 0.15, n=20)[[12, 15, 18, 1, 4, 7]
                if s > 0 else [17, 14, 11, 8, 5, 2]], scale_rgb(skin, 0.72), 0.005)


def _head(pt: Painter, P: PortraitParams):
    h, skin = P.head, P.skin.rgb
    shift = -0.012 * P.pose.turn
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    pt.poly(head_outline(h, t, shift=shift), skin, sil=True)


def _cheeks(pt: Painter, P: PortraitParams, rng: np.random.Generator):
    ch, skin = P.cheeks, P.skin.rgb
    if ch.blush:
        for s in (-1, 1):
            pt.soft(ellipse(0.5 + s * 0.165, 0.605, 0.045, 0.03, n=20), (224, 96, 100), ch.blush, 0.02)
    if ch.freckles:
        dark = scale_rgb(skin, 0.72)
        for _ in range(int(rng.integers(18, 40))):
            x, y = rng.normal(0, 0.09), rng.normal(0.57, 0.025)
            pt.poly(ellipse(0.5 + x, y, 0.003, 0.003, n=8), dark)


def _nose(pt: Painter, P: PortraitParams):
    n, skin = P.nose, P.skin.rgb
    x, y, w = 0.5 + 0.012 * P.pose.turn, n.y, n.width
    if n.style == "wide":
        w *= 1.2
    light_x = math.cos(math.radians(P.lighting.azimuth_deg))
    side = -1 if light_x > 0 else 1  # the bridge shadow falls on the side away from the light
    dark = scale_rgb(skin, 0.68)
    pt.soft([(0.5 + side * 0.012, 0.48), (0.5 + side * 0.02, 0.48), (x + side * w * 0.75, y - 0.005),
             (x + side * w * 0.45, y - 0.005)], dark, 0.35, 0.01)
    pt.soft(ellipse(x, y + 0.02, w * 0.8, 0.012, n=20), scale_rgb(skin, 0.6), 0.45, 0.008)  # shadow under the nose
    pt.soft(ellipse(x - side * 0.004, y - 0.008, w * 0.35, 0.012, n=16), scale_rgb(skin, 1.15), 0.4, 0.006)
    for s in (-1, 1):  # nostrils and the wings of the nose
        pt.poly(ellipse(x + s * w * 0.45, y + 0.012, w * 0.24, w * 0.12, angle=-s * 0.3, n=14), scale_rgb(skin, 0.42))
        wing = ellipse(x + s * w * 0.62, y + 0.002, w * 0.38, 0.012, n=24)
        pt.line(wing[[20, 22, 0, 2, 4, 6]] if s > 0 else wing[[16, 14, 12, 10, 8, 6]], scale_rgb(skin, 0.66), 0.004)
    if n.style == "straight":
        pt.line([(x - side * 0.01, 0.5), (x - side * 0.012, y - 0.02)], scale_rgb(skin, 1.1), 0.006)


def _eye(pt: Painter, P: PortraitParams, centre, s: int):
    e, skin = P.eyes, P.skin.rgb
    ew, eh = e.width, e.open
    cx, cy = centre
    u = np.linspace(-1, 1, 13)
    upper = -eh * (1 - u**2) ** 0.7 * (1 - 0.18 * u * s)  # highest point a little towards the nose
    lower = eh * 0.72 * (1 - u**2) ** 0.9
    a = -math.radians(e.tilt_deg) * s  # outer corners up for positive tilt
    ca, sa = math.cos(a), math.sin(a)

    def place(lx, ly):
        return np.stack([cx + lx * ca - ly * sa, cy + lx * sa + ly * ca], 1)

    top, bottom = place(u * ew, upper), place(u * ew, lower)
    almond = np.vstack([top, bottom[::-1]])
    pt.soft(ellipse(cx, cy - 0.004, ew * 1.25, eh * 1.6 + 0.006, n=24), scale_rgb(skin, 0.82), 0.35, 0.01)  # socket
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
        ix, iy = cx + e.gaze[0] * ew * 0.38, cy + e.gaze[1] * eh * 0.3
        col = e.iris_rgb
        for xy, rgb in ((ellipse(ix, iy, ir, ir, n=28), scale_rgb(col, 0.55)),
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
    pt.line(top, liner, e.liner)
    pt.line(bottom[2:-2], scale_rgb(skin, 0.68), 0.0025)
    crease = place(u[2:-2] * ew * 0.95, upper[2:-2] * 1.15 - 0.011)
    pt.line(crease, scale_rgb(skin, 0.72), 0.003)
    if e.lashes:
        for k in (8, 10, 12) if s > 0 else (4, 2, 0):
            x, y = top[k]
            pt.line([(x, y), (x + s * 0.008, y - 0.008)], liner, 0.0025)


def _eyes(pt: Painter, P: PortraitParams):
    _eye(pt, P, LEFT_EYE, -1)
    _eye(pt, P, RIGHT_EYE, 1)


def _brows(pt: Painter, P: PortraitParams):
    b = P.brows
    hair = P.hair.rgb
    rgb = mix_rgb(scale_rgb(hair, 0.8), scale_rgb(P.skin.rgb, 0.55), 0.25)
    if P.hair.colour in ("platinum", "white", "blonde", "blue", "pink", "purple", "green"):
        rgb = mix_rgb(rgb, (120, 95, 70), 0.5)  # dyed or very light hair: darker brows
    u = np.linspace(0, 1, 9)
    for s, (ex, _) in ((-1, LEFT_EYE), (1, RIGHT_EYE)):
        x = ex + s * (-0.04 + b.length * u)
        y = b.y - b.arch * np.sin(np.pi * u**0.75) + b.angle * u
        half = b.thickness * (1 - 0.65 * u) * 0.5 + 0.0015
        poly = np.vstack([np.stack([x, y - half], 1), np.stack([x, y + half], 1)[::-1]])
        pt.poly(poly, rgb)


def _mouth_curves(P: PortraitParams):
    """Mouth line (upper edge of the opening), lower edge of the opening, and x, all canonical. [N] each."""
    m = P.lips
    ex, w = m.expression, m.width
    s = np.linspace(-1, 1, 17)
    smile = {"smile": 0.014, "grin": 0.012, "smirk": 0.0, "neutral": 0.002, "open": 0.0}[ex]
    lift = smile * s**2
    if ex == "smirk":
        lift = 0.012 * np.clip(s, 0, None) ** 2 + 0.002 * s**2
    gap = {"grin": m.open, "open": m.open * 1.4}.get(ex, 0.0)
    wid = w * (0.7 if ex == "open" else 1.12 if ex == "grin" else 1.0)
    x = 0.5 + wid * s
    top = MOUTH[1] - gap / 2 - lift
    bottom = MOUTH[1] - gap / 2 - lift + gap * (1 - s**2) ** 0.8
    return x, top, bottom


def _mouth(pt: Painter, P: PortraitParams):
    m, skin = P.lips, P.skin.rgb
    x, top, bottom = _mouth_curves(P)
    s = np.linspace(-1, 1, len(x))
    lip = m.lip_rgb
    bow = 1 - 0.35 * np.exp(-((s / 0.18) ** 2))  # cupid's bow
    upper = np.vstack([np.stack([x, top], 1), np.stack([x, top - m.upper * (1 - s**2) ** 0.5 * bow], 1)[::-1]])
    lower = np.vstack([np.stack([x, bottom], 1), np.stack([x, bottom + m.lower * (1 - s**2) ** 0.6], 1)[::-1]])
    pt.soft(ellipse(0.5, bottom[8] + m.lower + 0.012, 0.035, 0.01, n=16), scale_rgb(skin, 0.7), 0.35, 0.008)
    if m.expression in ("grin", "open"):
        gap = np.vstack([np.stack([x, top], 1), np.stack([x, bottom], 1)[::-1]])
        pt.poly(gap, (72, 24, 30))
        if m.expression == "grin":
            teeth_h = (bottom - top) * 0.45
            pt.poly(np.vstack([np.stack([x, top], 1), np.stack([x, top + teeth_h], 1)[::-1]])[2:-2], (238, 236, 228))
        else:
            pt.poly(ellipse(0.5, bottom[8] - 0.008, m.width * 0.45, 0.01, n=16), (176, 78, 88))
    pt.poly(lower, lip)
    pt.poly(upper, scale_rgb(lip, 0.85))
    pt.soft(ellipse(0.5, bottom[8] + m.lower * 0.45, m.width * 0.35, m.lower * 0.2, n=16),
            scale_rgb(lip, 1.35), 0.4, 0.004)  # lower-lip highlight
    line = scale_rgb(lip, 0.45) if m.expression not in ("grin", "open") else scale_rgb(lip, 0.7)
    pt.line(np.stack([x, top], 1), line, 0.003)
    if m.expression in ("smile", "grin"):  # cheek lines at the corners
        for k in (0, -1):
            cx, cy = x[k], top[k]
            d = 1 if k == -1 else -1
            pt.line([(cx + d * 0.008, cy - 0.016), (cx + d * 0.014, cy - 0.002), (cx + d * 0.008, cy + 0.01)],
                    scale_rgb(skin, 0.8), 0.003)


def _beard_region(h: Head, shift: float, grow: float) -> np.ndarray:
    """The jaw below the cheek line: from the sideburns down around the mouth to under the nose. [N, 2]"""
    jaw = head_outline(h, np.linspace(0.08, np.pi - 0.08, 36), grow=grow, shift=shift)  # right to left
    side = head_x_at(h, 0.55, -1, shift) + 0.01
    cheeks = np.vstack([bezier((side, 0.55), (0.33, 0.6), (0.36, 0.655), (0.5, 0.658), 10),
                        bezier((0.5, 0.658), (0.64, 0.655), (0.67, 0.6), (1 - side + 2 * shift, 0.55), 10)])
    return np.vstack([jaw, cheeks])


def _facial_hair(pt: Painter, P: PortraitParams, rng: np.random.Generator, after_mouth: bool):
    kind = P.facial_hair
    if kind == "none":
        return
    h, hair = P.head, P.hair.rgb
    shift = -0.012 * P.pose.turn
    _, top, bottom = _mouth_curves(P)
    lower_lip = bottom[8] + P.lips.lower
    if not after_mouth and kind in ("stubble", "beard", "goatee"):
        if kind == "goatee":
            region = ellipse(0.5, lower_lip + 0.035, 0.042, 0.045, n=24)
        else:
            region = _beard_region(h, shift, 0.012 if kind == "beard" else 0.0)
        if kind == "stubble":  # a shadow of the hair colour, speckled
            pt.soft(region, mix_rgb(hair, P.skin.rgb, 0.45), 0.22, 0.01)
            k, length, tones = 260, 0.002, (0.6, 0.8)
        else:
            pt.poly(region, scale_rgb(hair, 0.95), sil=kind == "beard")
            k, length, tones = 90, 0.014, (0.65, 1.3)
        start = np.stack([0.5 + rng.uniform(-0.27, 0.27, k), rng.uniform(0.55, 0.92, k)], 1)
        end = start + np.stack([rng.normal(0, 0.005, k) * length / 0.014, np.full(k, length)], 1)
        segs = np.stack([start, end], 1)  # [k, 2, 2]
        dark = rng.random(k) < 0.6
        rgb = mix_rgb(hair, P.skin.rgb, 0.3) if kind == "stubble" else hair

        def strokes(layer, origin):  # short downward strokes (dots for stubble), kept inside the region
            p = pt.pts(segs.reshape(-1, 2), origin).reshape(-1, 2, 2)
            for sel, f in ((dark, tones[0]), (~dark, tones[1])):
                cv2.polylines(layer, list(p[sel]), False, tuple(scale_rgb(rgb, f)), pt.width(0.003), AA, SHIFT)

        _hair_clip_draw(pt, [region], strokes)
    elif after_mouth and kind in ("moustache", "beard", "goatee"):
        mw = P.lips.width * 1.15
        y0 = top[8] - P.lips.upper - 0.002
        mous = [(0.5 - mw - 0.01, top[0] + 0.012), (0.5 - mw * 0.6, y0 - 0.018), (0.5, y0 - 0.024),
                (0.5 + mw * 0.6, y0 - 0.018), (0.5 + mw + 0.01, top[-1] + 0.012), (0.5 + mw * 0.5, y0 - 0.002),
                (0.5, y0 - 0.006), (0.5 - mw * 0.5, y0 - 0.002)]
        pt.poly(mous, scale_rgb(hair, 0.9))


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


def _hair_texture(pt: Painter, P: PortraitParams, rng: np.random.Generator, polys: list[np.ndarray], crown, sheen=True):
    hp = P.hair
    rgb = hp.rgb
    dark, light = scale_rgb(rgb, 0.78), mix_rgb(rgb, (255, 246, 230), 0.16)
    cx, cy = crown

    if hp.texture == "curly":  # many small open curls
        k = hp.strands * 3
        a, r = rng.uniform(0, 2 * np.pi, k), rng.uniform(0.0, 0.5, k)
        centres = np.stack([cx + r * np.cos(a) * 0.9, cy + r * np.abs(np.sin(a)) * 1.4 - 0.03], 1)  # [k, 2]
        t = rng.uniform(0, 2 * np.pi, k)[:, None] + np.linspace(0, 4.2, 8)  # [k, 8] three quarters of a turn
        lines = centres[:, None, :] + 0.011 * np.stack([np.cos(t), np.sin(t)], 2)  # [k, 8, 2]
        width = 0.0035
    else:  # strands fanning down from the crown, bending a little
        k = hp.strands
        a = rng.uniform(0.05, np.pi - 0.05, k)
        a = np.where(rng.random(k) < 0.3, -a, a)  # a few strands over the top of the skull
        r0 = rng.uniform(0.03, 0.14, k)[:, None]  # strands start apart: no starburst at the crown
        r = r0 + (0.9 - r0) * np.linspace(0, 1, 14)  # [k, 14]
        ang = a[:, None] + rng.normal(0, 0.15, k)[:, None] * r
        wave = 0.012 if hp.texture == "wavy" else 0.0
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
    az = math.radians(P.lighting.azimuth_deg)
    pt.soft(ellipse(cx + 0.08 * math.cos(az), P.head.top + 0.05, 0.12, 0.03, n=20),
            mix_rgb(rgb, (255, 250, 240), 0.5), hp.sheen, 0.02)


def _scallop(xy: np.ndarray, centre, amount: float, k: int) -> np.ndarray:
    """Push a closed outline outwards in bumps (curly hair silhouettes)."""
    d = xy - np.asarray(centre)
    ang = np.arctan2(d[:, 1], d[:, 0])
    r = np.linalg.norm(d, axis=1, keepdims=True)
    return np.asarray(centre) + d * (1 + amount * np.abs(np.sin(ang * k / 2))[:, None] / np.maximum(r, 1e-6))


def _crown(P: PortraitParams) -> tuple[float, float]:
    """Where the strands part: the side part, or the middle under a fringe."""
    hp = P.hair
    shift = -0.012 * P.pose.turn
    return 0.5 + (hp.part if not hp.fringe else 0.0) + shift, P.head.top + 0.02


def _hair_back(pt: Painter, P: PortraitParams, rng: np.random.Generator):
    """Hair behind the head: long hair, bobs, afros and buns, with their texture."""
    h, hp = P.head, P.hair
    style, v = hp.style, hp.volume
    shift = -0.012 * P.pose.turn
    polys = []
    if style in ("long", "bob"):
        t = np.linspace(np.pi, 2 * np.pi, 25)
        cap = head_outline(h, t, grow=v + 0.012, shift=shift)
        end, flare = hp.length, hp.flare + (0.02 if style == "long" else 0)
        wide = h.width + v + 0.012
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
        polys.append(ellipse(0.5 + shift, h.top - 0.03, 0.09, 0.075, n=32))
    for p in polys:
        pt.poly(p, scale_rgb(hp.rgb, 0.85), sil=True)
    if polys:
        _hair_texture(pt, P, rng, polys, _crown(P), sheen=False)


def _hair_front(pt: Painter, P: PortraitParams, rng: np.random.Generator):
    """The hair over the skull and forehead, with its hairline, sides, fringe; then strand or curl texture."""
    h, hp = P.head, P.hair
    style, v = hp.style, hp.volume
    shift = -0.012 * P.pose.turn
    if style == "bald":
        # A fringe of short hair around the back and sides, and a shine on the scalp.
        for s in (-1, 1):
            x = head_x_at(h, 0.45, s, shift)
            pt.soft([(x - s * 0.02, 0.38), (x + s * 0.006, 0.36), (x + s * 0.006, 0.5), (x - s * 0.02, 0.5)],
                    hp.rgb, 0.8, 0.006)
        pt.soft(ellipse(0.5 + shift - 0.05, h.top + 0.07, 0.07, 0.03, angle=-0.3, n=16),
                scale_rgb(P.skin.rgb, 1.2), 0.45, 0.02)
        return
    if style == "buzz":
        v = 0.004
    side_y = {"short": 0.44, "side_part": 0.45, "buzz": 0.42, "fringe": 0.47, "curly": 0.52, "afro": 0.5,
              "bun": 0.44}.get(style, min(hp.length, 0.82) if style == "bob" else 0.7)
    cover = {"bob": 0.03, "long": 0.045}.get(style, 0.008)  # how far the side hair reaches over the cheeks
    hl = hp.hairline
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
    if hp.fringe:
        fy = hp.fringe_y
        ys_hl = np.full_like(xs, fy) - 0.02 * ((xs - 0.5) / 0.25) ** 2
        if hp.fringe_kind == "swept":
            ys_hl = ys_hl - 0.05 * (xs - xs.min()) / (xs.max() - xs.min() + 1e-9)
        elif hp.fringe_kind == "jagged":
            ys_hl = ys_hl + np.where(np.arange(len(xs)) % 2 == 0, 0.0, -0.018)
    else:
        part = 0.5 + hp.part
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
    if hp.texture == "curly" or style in ("curly", "afro"):
        front = _scallop(front, (0.5 + shift, CHEEK_Y), 0.008, 40)
    rgb = hp.rgb if style != "buzz" else mix_rgb(hp.rgb, P.skin.rgb, 0.35)
    # The hair shadows the forehead just below the hairline; the hair itself then covers the band's top.
    band = np.vstack([hairline - [0, 0.01], (hairline + [0, 0.02])[::-1]])
    pt.soft(band, scale_rgb(P.skin.rgb, 0.6), 0.4, 0.008)
    pt.poly(front, rgb, sil=True)
    if style != "buzz":
        _hair_texture(pt, P, rng, [front], _crown(P))
    if style == "bun":  # a band where the bun is tied
        pt.line([(0.5 + shift - 0.05, h.top + 0.01), (0.5 + shift + 0.05, h.top + 0.01)],
                scale_rgb(hp.rgb, 0.55), 0.008)


def _hat(pt: Painter, P: PortraitParams):
    hat = P.hat
    if not hat:
        return
    h = P.head
    shift = -0.012 * P.pose.turn
    rgb, dark = hat.rgb, scale_rgb(hat.rgb, 0.72)
    v = P.hair.volume
    if hat.kind in ("beanie", "cap"):
        t = np.linspace(np.pi, 2 * np.pi, 31)
        dome = head_outline(h, t, grow=v + 0.02, shift=shift)
        band_y = 0.3 if hat.kind == "beanie" else 0.29
        dome = dome[dome[:, 1] <= band_y]
        pt.poly(np.vstack([dome, [(dome[-1, 0], band_y + 0.01), (dome[0, 0], band_y + 0.01)]]), rgb, sil=True)
        if hat.kind == "beanie":
            w = h.width + v + 0.03
            band = np.array([(0.5 + shift - w, band_y - 0.06), (0.5 + shift + w, band_y - 0.06),
                             (0.5 + shift + w, band_y + 0.01), (0.5 + shift - w, band_y + 0.01)])
            pt.poly(band, scale_rgb(rgb, 0.88), sil=True)
            for k in np.linspace(-w + 0.015, w - 0.015, 16):
                pt.line([(0.5 + shift + k, band_y - 0.055), (0.5 + shift + k, band_y + 0.005)], dark, 0.004)
            if hat.pompom:
                pt.poly(_scallop(ellipse(0.5 + shift, h.top - v - 0.04, 0.05, 0.045, n=40),
                                 (0.5 + shift, h.top - v - 0.04), 0.006, 18), scale_rgb(rgb, 1.1), sil=True)
        else:
            pt.line([(0.5 + shift, h.top - v), (0.5 + shift, band_y)], dark, 0.004)
            pt.poly(ellipse(0.5 + shift, h.top - v - 0.012, 0.014, 0.01, n=12), dark, sil=True)  # button
            # The visor, seen from the front: a flat half-ellipse over the forehead, shadowing it.
            brim = ellipse(0.5 + shift, band_y, h.width + 0.01, 0.06, n=48)
            brim = brim[brim[:, 1] >= band_y]
            brim = brim[np.argsort(-brim[:, 0])]
            pt.soft(brim + [0, 0.02], scale_rgb(P.skin.rgb, 0.5), 0.5, 0.015)
            pt.poly(brim, scale_rgb(rgb, 0.85), sil=True)
            pt.line(brim, dark, 0.004)
    else:  # a brimmed hat: crown, ribbon, wide brim
        w = h.width * 0.82
        base = 0.27
        crown = np.vstack([bezier((0.5 + shift - w, base), (0.5 + shift - w, base - 0.12),
                                  (0.5 + shift - w * 0.8, base - 0.19), (0.5 + shift, base - 0.17), 10),
                           bezier((0.5 + shift, base - 0.17), (0.5 + shift + w * 0.8, base - 0.19),
                                  (0.5 + shift + w, base - 0.12), (0.5 + shift + w, base), 10)])
        pt.poly(crown, rgb, sil=True)
        pt.poly([(0.5 + shift - w, base - 0.045), (0.5 + shift + w, base - 0.045), (0.5 + shift + w, base),
                 (0.5 + shift - w, base)], scale_rgb(rgb, 0.45), sil=True)
        pt.poly(ellipse(0.5 + shift, base + 0.005, h.width + 0.13, 0.04, n=48), dark, sil=True)


def _glasses(pt: Painter, P: PortraitParams):
    g = P.glasses
    if not g:
        return
    frame = FRAMES[g.frame]
    gw, gh = 0.058 * g.size, 0.042 * g.size
    power = {"round": 2.0, "rect": 5.0, "wide": 3.5}[g.shape]
    if g.shape == "wide":
        gw *= 1.12
        gh *= 0.9
    h = P.head
    for s, (ex, ey) in ((-1, LEFT_EYE), (1, RIGHT_EYE)):
        lens = ellipse(ex, ey + 0.004, gw, gh, n=48, power=power)
        if g.sunglasses:
            pt.soft(lens, (20, 22, 28), 0.82, 0.001)
        else:
            pt.soft(lens, (210, 225, 235), 0.12, 0.001)
        pt.soft([(ex - 0.02, ey - 0.02), (ex - 0.01, ey - 0.03), (ex + 0.02, ey + 0.015), (ex + 0.012, ey + 0.025)],
                (255, 255, 255), 0.22, 0.004)  # glare
        pt.line(lens, frame, g.thickness, closed=True, sil=True)
        pt.line([(ex + s * gw, ey - gh * 0.3), (head_x_at(h, ey - 0.01, s) + s * 0.004, ey - 0.012)],
                frame, g.thickness * 0.8, sil=True)  # temple arm
    pt.line([(LEFT_EYE[0] + gw, LEFT_EYE[1] - gh * 0.2), (0.5, LEFT_EYE[1] - gh * 0.45),
             (RIGHT_EYE[0] - gw, RIGHT_EYE[1] - gh * 0.2)], frame, g.thickness)


def _earrings(pt: Painter, P: PortraitParams):
    er = P.earrings
    if not er or P.hair.style in ("long", "bob", "afro", "curly"):
        return  # hidden by the hair
    rgb = METALS[er.metal]
    shift = -0.012 * P.pose.turn
    for s in (-1, 1):
        x = head_x_at(P.head, 0.58, s, shift) + s * 0.018
        y = 0.582
        if er.kind == "stud":
            pt.poly(ellipse(x, y, 0.007, 0.007, n=12), rgb, sil=True)
        elif er.kind == "hoop":
            pt.line(ellipse(x, y + 0.022, 0.019, 0.022, n=28), rgb, 0.0045, closed=True, sil=True)
        else:
            pt.line([(x, y), (x, y + 0.03)], rgb, 0.003, sil=True)
            pt.poly(ellipse(x, y + 0.04, 0.009, 0.013, n=16), rgb, sil=True)


def paint_person(P: PortraitParams, size: int) -> Painter:
    """Paint everything but the background onto a `size` x `size` canvas (painter's algorithm, back to front)."""
    rng = np.random.default_rng(P.detail_seed)
    pt = Painter(size, P.pose)
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
