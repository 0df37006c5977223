"""A feature network for portraits: a small CNN trained to read a procedural portrait's attributes.

FID needs a feature network that knows the domain. The usual one (Inception-v3 on ImageNet) cannot be downloaded
where this project is built, and a random network measures nothing. The procedural portraits come with their ground
truth (generator.data.portraits.sample_params), so this project trains its own: a CNN that predicts, from a 64 px image,
the categorical attributes a person would name (hair style and colour, glasses, hat, expression, background, ...)
and the continuous ones (skin tone, pose, colours). Its 256-d embedding is the feature space of FID
(`sgproject metrics --feature-net portraits`): two sets of images are close when they have the same distribution
of recognisable portrait attributes. Weights ship with the package (`generator/weights/portraits-attr.safetensors`,
made by `python -m tools.train_attrnet`, with its held-out accuracy per attribute in the header).

An FID in this space is comparable only with FIDs in the same space (the identity names the weights' digest), never
with published Inception FIDs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from generator.data.portraits.params import PortraitParams
from generator.util.errors import SGProjectError
from generator.util.files import atomic_path, file_sha256
from generator.util.imaging import resize_square, unit_range

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "portraits-attr.safetensors"
INPUT_RES = 64
EMBED_DIM = 256


def _kind(part: Any) -> str:
    """An optional part's kind (an accessory's `kind`, or the name itself), or 'none' when absent."""
    if part is None:
        return "none"
    return part if isinstance(part, str) else str(part.kind)


def _glasses(p: PortraitParams) -> str:
    return "none" if p.glasses is None else ("sunglasses" if p.glasses.sunglasses else "glasses")


# name: (attribute of sample_params -> label, the labels). Labels are fixed here (not learnt from data), so a
# checkpoint's heads always mean the same classes.
CATEGORICAL: dict[str, tuple[Callable[[PortraitParams], str], tuple[str, ...]]] = {
    "head_shape": (lambda p: p.head.shape, ("long", "round", "heart", "oval", "square")),
    "hair_style": (lambda p: p.hair.style,
                   ("bald", "buzz", "short", "side_part", "fringe", "bob", "long", "curly", "afro", "bun")),
    "hair_colour": (lambda p: p.hair.colour,
                    ("black", "dark_brown", "brown", "blonde", "light_brown", "auburn", "ginger", "grey", "platinum",
                     "white", "pink", "green", "blue", "purple")),
    "hair_texture": (lambda p: p.hair.texture, ("straight", "curly", "wavy")),
    "fringe": (lambda p: str(bool(p.hair.fringe)), ("False", "True")),
    "iris": (lambda p: p.eyes.iris, ("brown", "dark_brown", "blue", "hazel", "green", "grey", "amber")),
    "nose": (lambda p: p.nose.style, ("wide", "button", "straight")),
    "expression": (lambda p: p.lips.expression, ("neutral", "smile", "grin", "smirk", "open")),
    "lipstick": (lambda p: _kind(p.lips.lipstick), ("none", "plum", "red", "coral", "pink")),
    "facial_hair": (lambda p: p.facial_hair, ("none", "stubble", "beard", "moustache", "goatee")),
    "glasses": (_glasses, ("none", "glasses", "sunglasses")),
    "earrings": (lambda p: _kind(p.earrings), ("none", "stud", "drop", "hoop")),
    "hat": (lambda p: _kind(p.hat), ("none", "cap", "brim", "beanie")),
    "clothing": (lambda p: p.clothing.kind, ("crew", "collar", "jacket", "vneck", "turtleneck")),
    "background": (lambda p: p.background.kind, ("gradient", "radial", "noise", "bokeh", "flat", "stripes")),
    "freckles": (lambda p: str(bool(p.cheeks.freckles)), ("False", "True")),
}


def _regression(p: PortraitParams) -> list[float]:
    """Continuous targets, each scaled to roughly unit range."""
    rgb = lambda c: [x / 255.0 for x in c]  # noqa: E731
    return [
        p.skin.tone, p.pose.angle_deg / 8.0, (p.pose.scale - 1.0) / 0.08,
        p.pose.offset[0] / 0.04, p.pose.offset[1] / 0.04, p.pose.turn,
        *p.eyes.gaze, *rgb(p.skin.rgb), *rgb(p.hair.rgb), *rgb(p.clothing.rgb), *rgb(p.background.rgb),
    ]


NUM_REGRESSION = 20


class AttributeNetError(SGProjectError):
    """The portrait attribute network's weights are missing or do not fit."""


def labels_of(params: list[PortraitParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth of `sample_params` results: class indices [N, len(CATEGORICAL)] and regression targets [N, R]."""
    cls = []
    for p in params:
        row = []
        for name, (get, classes) in CATEGORICAL.items():
            v = get(p)
            row.append(classes.index(v) if v in classes else -100)  # an unknown class is ignored by the loss
        cls.append(row)
    reg = [_regression(p) for p in params]
    return torch.tensor(cls, dtype=torch.long), torch.tensor(reg, dtype=torch.float32)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PortraitAttributeNet(nn.Module):
    """64 px RGB -> 256-d embedding -> one head per categorical attribute and one regression head.

    As a FeatureNetwork (generator.metrics.features): uint8 input is read as [0, 255], float as [-1, 1]; other sizes are
    resized to 64 px; the features are the embedding.
    """

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            _block(3, 32, 2),  # 32 px
            _block(32, 64, 2), _block(64, 64, 1),  # 16 px
            _block(64, 128, 2), _block(128, 128, 1),  # 8 px
            _block(128, 256, 2),  # 4 px
        )
        self.embed = nn.Linear(256 * 4 * 4, EMBED_DIM)
        self.heads = nn.ModuleDict({name: nn.Linear(EMBED_DIM, len(c)) for name, (_, c) in CATEGORICAL.items()})
        self.regress = nn.Linear(EMBED_DIM, NUM_REGRESSION)
        self.identity, self.dim = "portraits-attr:untrained", EMBED_DIM

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 64, 64] float in [-1, 1] -> [N, 256]."""
        return self.embed(self.trunk(x).flatten(1))

    def predict(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Logits per categorical attribute and the regression outputs."""
        e = F.relu(self.embedding(x))
        return {k: h(e) for k, h in self.heads.items()}, self.regress(e)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # FeatureNetwork: [N, C, H, W] -> [N, 256]
        return self.embedding(resize_square(unit_range(images), INPUT_RES))


def loss_of(net: PortraitAttributeNet, x: torch.Tensor, cls: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    logits, r = net.predict(x)
    loss = sum(F.cross_entropy(logits[k], cls[:, j], ignore_index=-100) for j, k in enumerate(CATEGORICAL))
    return loss / len(CATEGORICAL) + F.smooth_l1_loss(r, reg)


@torch.no_grad()
def accuracy(net: PortraitAttributeNet, x: torch.Tensor, cls: torch.Tensor, batch: int = 256) -> dict[str, float]:
    """Fraction of images whose class is predicted right, per categorical attribute."""
    net.eval()
    right = torch.zeros(len(CATEGORICAL))
    for i in range(0, len(x), batch):
        logits, _ = net.predict(x[i : i + batch])
        for j, k in enumerate(CATEGORICAL):
            right[j] += (logits[k].argmax(1) == cls[i : i + batch, j]).sum()
    return {k: float(right[j] / len(x)) for j, k in enumerate(CATEGORICAL)}


def save_attribute_net(net: PortraitAttributeNet, path: str | Path, info: dict) -> Path:
    """Write the weights atomically, with the class lists and `info` (e.g. held-out accuracy) in the header."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    header = {"format": "sgproject-portraits-attr", "classes": {k: list(c) for k, (_, c) in CATEGORICAL.items()},
              "info": info}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"sgproject": json.dumps(header)})
    return path


_CACHE: dict[tuple[str, str], PortraitAttributeNet] = {}


def load_attribute_net(path: str | Path | None = None, device: torch.device | str = "cpu") -> PortraitAttributeNet:
    """The shipped (or given) attribute network, in eval mode, identity 'portraits-attr:<sha256[:12]>'."""
    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise AttributeNetError(f"portrait attribute network weights not found: {path} "
                                "(make them with tools/train_attrnet.py)")
    key = (str(path.resolve()), str(device))
    if key not in _CACHE:
        digest = file_sha256(path)
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("sgproject", "{}"))
        want = {k: list(c) for k, (_, c) in CATEGORICAL.items()}
        if header.get("format") != "sgproject-portraits-attr" or header.get("classes") != want:
            raise AttributeNetError(f"{path} is not a portrait attribute network of this version")
        net = PortraitAttributeNet()
        try:
            net.load_state_dict(load_file(str(path)), strict=True)
        except RuntimeError as e:
            raise AttributeNetError(f"{path}: weights do not fit ({' '.join(str(e).split())[:160]})") from None
        net.identity = f"portraits-attr:{digest[:12]}"
        net.info = header.get("info", {})
        _CACHE[key] = net.to(device).eval().requires_grad_(False)
    return _CACHE[key]

