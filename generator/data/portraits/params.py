"""The parameters of a portrait: every choice drawn for image `index` of set `seed`, as typed dataclasses.

`sample_params(seed, index)` draws them from `np.random.default_rng([seed, index])` in a fixed order, in
resolution-free units: lengths and positions are *canonical* (0..1 of the FFHQ crop, see `geometry`), colours are
RGB 0..255 lists. `PortraitParams.to_dict()` is the JSON form written to params.jsonl (the key order and every value
exactly as before these were dataclasses); `PortraitParams.from_dict()` reads it back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

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


def mix_rgb(a, b, t: float) -> list[int]:
    """(1 - t) * a + t * b, rounded."""
    return [int(round(x * (1 - t) + y * t)) for x, y in zip(a, b)]


def luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def scale_rgb(rgb, f: float) -> list[int]:
    """rgb * f, rounded and clipped to 0..255."""
    return [int(min(255, max(0, round(c * f)))) for c in rgb]


# --------------------------------------------------------------------------------------------------------------
# The parameters. Lengths in canonical units (fractions of the image side), angles in degrees, colours RGB 0..255.


@dataclass
class Pose:
    """The face as a whole moves; the canonical layout inside it stays fixed."""

    angle_deg: float  # rotation about the image centre, degrees (-8..8)
    scale: float  # zoom about the image centre (0.92..1.08)
    offset: list[float]  # [x, y] shift, canonical units (-0.04..0.04 each)
    turn: float = 0.0  # a hint of yaw, -1..1 (head outline and nose shift a little); 0: facing the camera


@dataclass
class Head:
    width: float  # half-width at the cheeks, canonical units
    top: float  # y of the top of the skull
    chin: float  # y of the chin
    n_top: float  # superellipse exponent of the skull (2: an ellipse)
    n_jaw: float  # superellipse exponent of the jaw
    taper: float  # narrowing of the jaw towards the chin (0: none)
    shape: str  # one of HEAD_SHAPES, the base of the numbers above


@dataclass
class Skin:
    tone: float  # 0 lightest .. 1 darkest, along SKIN_ANCHORS
    undertone: float  # -1 pinker .. 1 more olive/yellow
    rgb: list[int]  # the skin colour


@dataclass
class Hair:
    style: str  # one of HAIR_STYLES
    colour: str  # one of HAIR_COLOURS
    rgb: list[int]  # the drawn colour (darkened when too close to the skin's luma)
    texture: str  # straight, wavy or curly
    volume: float  # how far the hair stands off the skull, canonical units
    hairline: float  # y of the forehead hairline
    part: float  # side part position, relative to the face centre, canonical units
    fringe: bool  # hair over the forehead
    fringe_kind: str  # straight, jagged or swept
    fringe_y: float  # y of the fringe's lower edge
    length: float  # y of the end of the side hair for bob and long; 0.0 for other styles
    flare: float  # long hair widening towards the ends, canonical units
    strands: int  # number of texture strands (curls: three times as many)
    sheen: float  # strength of the light's highlight on the hair, 0..1


@dataclass
class Eyes:
    iris: str  # one of IRIS_COLOURS
    iris_rgb: list[int]  # the drawn iris colour
    gaze: list[float]  # [x, y] in -1..1: where the iris sits in the eye opening
    width: float  # half-width of an eye, canonical units
    open: float  # half-height of the opening (narrower when smiling)
    tilt_deg: float  # outer corners up for positive values, degrees
    lashes: bool  # three lash strokes per eye
    liner: float  # width of the upper lid line, canonical units


@dataclass
class Brows:
    y: float  # height of the brows (raised with an open mouth)
    arch: float  # height of the arch, canonical units
    thickness: float  # thickness at the inner end, canonical units
    angle: float  # y change from the inner to the outer end
    length: float  # canonical units


@dataclass
class Nose:
    style: str  # button, straight or wide
    y: float  # height of the tip
    width: float  # half-width of the wings, canonical units


@dataclass
class Lips:
    expression: str  # neutral, smile, grin, open or smirk
    width: float  # half-width of the mouth, canonical units
    upper: float  # upper lip thickness
    lower: float  # lower lip thickness
    open: float  # opening of a grin or an open mouth
    lipstick: str | None  # one of LIPSTICK, or None
    lip_rgb: list[int]  # the lips' colour (the lipstick's when there is one)


@dataclass
class Cheeks:
    blush: float  # strength of the blush, 0..1 (0.0: none)
    freckles: bool


@dataclass
class Glasses:
    shape: str  # round, rect or wide
    frame: str  # one of FRAMES
    size: float  # lens size factor (1: 0.058 x 0.042 canonical half-axes)
    thickness: float  # frame line width, canonical units
    sunglasses: bool  # dark lenses


@dataclass
class Earrings:
    kind: str  # stud, hoop or drop
    metal: str  # one of METALS


@dataclass
class Hat:
    kind: str  # beanie, cap or brim
    rgb: list[int]
    pompom: bool  # beanies only


@dataclass
class Clothing:
    kind: str  # crew, vneck, collar, turtleneck or jacket
    rgb: list[int]  # the garment
    rgb2: list[int]  # the collar or the shirt under a jacket
    shoulders: float  # half-width at the shoulders, canonical units
    neck: float  # half-width of the neck, canonical units


@dataclass
class Background:
    kind: str  # one of BACKGROUNDS
    rgb: list[int]  # first colour
    rgb2: list[int]  # second colour (gradients, noise, stripes)
    angle_deg: float  # direction of gradients and stripes, degrees
    scale: int  # noise grid size, or stripe count
    count: int  # bokeh discs
    shadow: float  # strength of the person's shadow on the backdrop, 0..1


@dataclass
class Lighting:
    azimuth_deg: float  # direction of the key light in the image plane, degrees
    elevation_deg: float  # height of the key light above the image plane, degrees
    ambient: float  # share of light that is not from the key light, 0..1
    warmth: float  # -1 cool daylight .. 1 warm tungsten


@dataclass
class Camera:
    blur: float  # Gaussian blur sigma, output pixels
    noise: float  # sensor noise standard deviation, 0..255 units
    gain: list[float]  # [r, g, b] colour balance factors
    contrast: float  # factor about mid grey
    vignette: float  # darkening of the corners, 0..1


# The nested parts of PortraitParams by field name; the optional ones are None when the portrait has none.
_PARTS: dict[str, type] = {
    "pose": Pose, "head": Head, "skin": Skin, "hair": Hair, "eyes": Eyes, "brows": Brows, "nose": Nose, "lips": Lips,
    "cheeks": Cheeks, "glasses": Glasses, "earrings": Earrings, "hat": Hat, "clothing": Clothing,
    "background": Background, "lighting": Lighting, "camera": Camera,
}
# What `render_portrait` adds to the parameters in its labels (and params.jsonl): ignored by `from_dict`.
LABEL_KEYS = ("res", "left_eye", "right_eye", "mouth")


@dataclass
class PortraitParams:
    """Every choice of one portrait. The field order is the key order of the JSON form."""

    seed: int  # the set
    index: int  # the image in the set
    pose: Pose
    head: Head
    skin: Skin
    hair: Hair
    eyes: Eyes
    brows: Brows
    nose: Nose
    lips: Lips
    cheeks: Cheeks
    facial_hair: str  # none, stubble, moustache, beard or goatee
    glasses: Glasses | None
    earrings: Earrings | None
    hat: Hat | None
    clothing: Clothing
    background: Background
    lighting: Lighting
    camera: Camera
    detail_seed: int  # seed of the fine texture (strands, curls, freckles, stubble, bokeh, noise backgrounds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-serialisable form (nested dicts and lists; None for absent accessories)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PortraitParams":
        """The inverse of `to_dict`; also reads a params.jsonl row (its LABEL_KEYS are ignored)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(d) - set(names) - set(LABEL_KEYS)
        if unknown:
            raise ValueError(f"unknown portrait parameters: {sorted(unknown)}")
        kw = {}
        for name in names:
            v = d[name]
            part = _PARTS.get(name)
            kw[name] = part(**v) if part is not None and v is not None else v
        return cls(**kw)


# --------------------------------------------------------------------------------------------------------------
# Drawing the parameters


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


def sample_params(seed: int, index: int) -> PortraitParams:
    """Every parameter of portrait `index` of set `seed`, resolution-free.

    The draws happen in a fixed order (keyword arguments are evaluated left to right): changing that order, or any
    range, changes the portraits, and then RENDERER_VERSION must be bumped.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    d = _Draw(np.random.default_rng([seed, index]))

    pose = Pose(angle_deg=d.u(-8, 8), scale=d.u(0.92, 1.08), offset=[d.u(-0.04, 0.04), d.u(-0.04, 0.04)],
                turn=d.u(-1, 1))

    shape = d.pick(list(HEAD_SHAPES))
    head = Head(**{k: round(v * d.u(0.97, 1.03), 4) for k, v in HEAD_SHAPES[shape].items()}, shape=shape)

    tone = d.u(0, 1)
    pos = tone * (len(SKIN_ANCHORS) - 1)  # 0: lightest anchor .. last: darkest
    i0 = min(int(pos), len(SKIN_ANCHORS) - 2)
    base = SKIN_ANCHORS[i0] * (1 - (pos - i0)) + SKIN_ANCHORS[i0 + 1] * (pos - i0)
    undertone = d.u(-1, 1)
    base = base + np.array([4, 0, -8]) * undertone
    skin = Skin(tone=tone, undertone=undertone, rgb=d.jitter(base, 3))

    style = d.pick(HAIR_STYLES, HAIR_WEIGHTS)
    names = list(HAIR_COLOURS)
    colour = d.pick(names, [HAIR_COLOURS[k][1] for k in names])
    texture = {"curly": "curly", "afro": "curly"}.get(style) or d.pick(("straight", "wavy", "curly"), (0.6, 0.28, 0.12))
    hair_rgb = d.jitter(HAIR_COLOURS[colour][0], 6)
    if abs(luma(hair_rgb) - luma(skin.rgb)) < 35:  # keep the hair readable against the face
        hair_rgb = scale_rgb(hair_rgb, 0.55)
    hair = Hair(
        style=style, colour=colour, rgb=hair_rgb, texture=texture,
        volume=d.u(0.012, 0.04),
        hairline=d.u(0.27, 0.33),
        part=d.u(-0.09, 0.09),
        fringe=style == "fringe" or (style in ("bob", "long") and d.p(0.35)),
        fringe_kind=d.pick(("straight", "jagged", "swept")),
        fringe_y=d.u(0.375, 0.405),
        length={"bob": d.u(0.74, 0.82), "long": d.u(0.9, 1.08)}.get(style, 0.0),  # both drawn, whatever the style
        flare=d.u(0.0, 0.06),
        strands=int(d.rng.integers(25, 60)),
        sheen=d.u(0.08, 0.25),
    )

    gaze = [d.u(-1, 1), d.u(-0.6, 0.6)] if d.p(0.5) else [d.u(-0.25, 0.25), d.u(-0.2, 0.2)]
    iris = d.pick(list(IRIS_COLOURS), IRIS_WEIGHTS)
    expression = d.pick(("neutral", "smile", "grin", "open", "smirk"), (0.32, 0.3, 0.18, 0.1, 0.1))
    squint = 0.78 if expression in ("smile", "grin") else 1.0  # smiling eyes narrow
    eyes = Eyes(iris=iris, iris_rgb=d.jitter(IRIS_COLOURS[iris], 8), gaze=gaze,
                width=d.u(0.044, 0.054), open=round(d.u(0.019, 0.028) * squint, 4),
                tilt_deg=d.u(-4, 8), lashes=d.p(0.45), liner=d.u(0.004, 0.008))
    brows = Brows(y=round(d.u(0.405, 0.43) - (0.012 if expression == "open" else 0), 4), arch=d.u(0.004, 0.016),
                  thickness=d.u(0.006, 0.012), angle=d.u(-0.01, 0.008), length=d.u(0.075, 0.1))
    nose = Nose(style=d.pick(("button", "straight", "wide")), y=d.u(0.6, 0.63), width=d.u(0.026, 0.042))
    lip_rgb = mix_rgb(scale_rgb(skin.rgb, 0.8), (196, 70, 84), d.u(0.35, 0.6))
    lipstick = d.pick(list(LIPSTICK)) if d.p(0.12) else None
    lips = Lips(expression=expression, width=d.u(0.065, 0.09), upper=d.u(0.009, 0.016),
                lower=d.u(0.013, 0.022), open=d.u(0.018, 0.03), lipstick=lipstick,
                lip_rgb=list(LIPSTICK[lipstick]) if lipstick else lip_rgb)
    cheeks = Cheeks(blush=d.u(0.06, 0.3) if d.p(0.5) else 0.0, freckles=d.p(0.12))
    facial_hair = d.pick(("none", "stubble", "moustache", "beard", "goatee"), (0.7, 0.1, 0.05, 0.1, 0.05))

    glasses = None if not d.p(0.3) else Glasses(
        shape=d.pick(("round", "rect", "wide")), frame=d.pick(list(FRAMES)),
        size=d.u(0.95, 1.15), thickness=d.u(0.004, 0.009), sunglasses=d.p(0.15))
    earrings = None if not d.p(0.25) else Earrings(kind=d.pick(("stud", "hoop", "drop")), metal=d.pick(list(METALS)))
    hat_ok = style not in ("afro", "bun", "curly")  # hair that stands above the skull would poke through
    hat = None if not (hat_ok and d.p(0.16)) else Hat(
        kind=d.pick(("beanie", "cap", "brim")),
        rgb=d.hsv((0, 360), (0.2, 0.8), (0.2, 0.85)), pompom=d.p(0.4))

    clothing = Clothing(kind=d.pick(("crew", "vneck", "collar", "turtleneck", "jacket")),
                        rgb=d.hsv((0, 360), (0.1, 0.85), (0.15, 0.9)), rgb2=d.hsv((0, 360), (0.0, 0.5), (0.5, 1.0)),
                        shoulders=d.u(0.36, 0.46), neck=d.u(0.095, 0.125))

    bg = d.pick(BACKGROUNDS, BACKGROUND_WEIGHTS)
    c0 = d.hsv((0, 360), (0.05, 0.6), (0.25, 0.95))
    c1 = mix_rgb(c0, d.hsv((0, 360), (0.05, 0.7), (0.15, 0.95)), d.u(0.3, 1))
    background = Background(kind=bg, rgb=c0, rgb2=c1, angle_deg=d.u(0, 360), scale=int(d.rng.integers(3, 8)),
                            count=int(d.rng.integers(5, 14)), shadow=d.u(0.1, 0.4))
    lighting = Lighting(azimuth_deg=d.u(0, 360), elevation_deg=d.u(35, 75), ambient=d.u(0.42, 0.62),
                        warmth=d.u(-1, 1))
    camera = Camera(blur=d.u(0.2, 0.55), noise=d.u(0.8, 3.5), gain=[d.u(0.95, 1.05) for _ in range(3)],
                    contrast=d.u(0.92, 1.08), vignette=d.u(0.0, 0.25))
    return PortraitParams(
        seed=int(seed), index=int(index), pose=pose, head=head, skin=skin, hair=hair, eyes=eyes, brows=brows,
        nose=nose, lips=lips, cheeks=cheeks, facial_hair=facial_hair, glasses=glasses, earrings=earrings, hat=hat,
        clothing=clothing, background=background, lighting=lighting, camera=camera,
        detail_seed=int(d.rng.integers(2**31)),
    )
