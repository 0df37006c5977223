"""An encoder per generator: a small CNN that guesses an image's latent in one forward pass.

The guess is a starting point for `project()` (`init='encoder'`): from it, far fewer optimisation steps reach the
distance that 200 steps from w_avg reach (docs/ARCHITECTURE.md, "Projection"). It is trained for one generator
(`projector.encoder_train.train_encoder`), on that generator's own images, and refuses to be used with another.

Network: the StyleGAN2 discriminator's layout with its equalised-lr layers (generator/layers.py): a 1x1 conv from
RGB, then one residual block per halving of the resolution down to 4x4, then two dense layers on the flattened 4x4
features (flattened, not pooled: where the face is matters). Channels at resolution r:
`min(channel_base // r, channel_max)`, as in the generator. The output is a residual from the generator's w_avg in
units of `w_std / sqrt(w_dim)` (the per-coordinate spread of w), and the last layer starts at zero, so an untrained
encoder guesses w_avg: the projector's usual start.

A bundled model may ship its encoder beside its weights: `generator/weights/<model>.encoder.safetensors`
(`bundled_encoder_path`, `encoder_for`).

File: `NAME.safetensors` (float32 tensors; metadata key `sgproject` holds the JSON header
`{"format": "sgproject-encoder", "format_version": 1, "config": EncoderConfig, "geometry": {...},
"generator": {"name", "sha256"}, "training": {...}}`) and the same header beside it as `NAME.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from generator.checkpoint import ModelInfo, tensors_sha256
from generator.layers import Conv2dLayer, FullyConnected
from generator.networks import init_parameters
from generator.registry import WEIGHTS_DIR
from generator.util.errors import CheckpointError, SGProjectError
from generator.util.files import atomic_path, write_json_atomic

FORMAT = "sgproject-encoder"
FORMAT_VERSION = 1


class EncoderError(SGProjectError):
    """An encoder cannot be trained or used as asked (settings, an existing run, shapes that do not fit)."""


class EncoderMismatchError(EncoderError):
    """An encoder was trained for another generator than the one it is used with."""


@dataclass
class EncoderConfig:
    channel_base: int = 1024  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 128  # upper bound on channels
    hidden: int = 256  # width of the dense layer between the flattened 4x4 features and the output
    w_plus: bool = False  # False: one w [w_dim]; True: one w per layer (W+) [num_ws, w_dim]
    init_seed: int = 0  # seed of the initial weights

    def __post_init__(self) -> None:
        if self.channel_base < 1 or self.channel_max < 1 or self.hidden < 1:
            raise EncoderError(f"channel_base, channel_max and hidden must be positive, got {self}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise EncoderError(f"unknown encoder config fields: {sorted(set(d) - known)}")
        return cls(**d)

    def channels(self, res: int) -> int:
        return max(1, min(self.channel_base // res, self.channel_max))


class _DownBlock(nn.Module):
    """r -> r/2: a 3x3 conv that halves the size (FIR low-pass, stride 2), a 3x3 conv (leaky ReLU after each), plus
    a skip path (halved the same way, 1x1 conv), summed and scaled by 1/sqrt 2 (the StyleGAN2 discriminator's
    residual block, with its equalised-lr layers)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = Conv2dLayer(c_in, c_out, 3, activation="lrelu", down=2)
        self.conv1 = Conv2dLayer(c_out, c_out, 3, activation="lrelu")
        self.skip = Conv2dLayer(c_in, c_out, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, c_in, r, r] -> [N, c_out, r/2, r/2]
        return (self.conv1(self.conv0(x)) + self.skip(x)) * math.sqrt(0.5)


class Encoder(nn.Module):
    """image [N, 3, R, R] in [-1, 1] -> w [N, w_dim], or [N, num_ws, w_dim] with `config.w_plus`."""

    def __init__(self, config: EncoderConfig, *, resolution: int, w_dim: int, num_ws: int, img_channels: int = 3):
        super().__init__()
        log2 = math.log2(resolution) if resolution > 0 else -1
        if resolution < 4 or log2 != int(log2):
            raise EncoderError(f"the encoder needs a power-of-2 resolution >= 4, got {resolution}")
        self.config = config
        self.resolution, self.w_dim, self.num_ws, self.img_channels = resolution, w_dim, num_ws, img_channels
        self.out_layers = num_ws if config.w_plus else 1
        self.from_rgb = Conv2dLayer(img_channels, config.channels(resolution), 1, activation="lrelu")
        self.blocks = nn.ModuleList(
            _DownBlock(config.channels(r), config.channels(r // 2)) for r in self._block_resolutions())
        self.fc = FullyConnected(config.channels(4) * 16, config.hidden, activation="lrelu")
        self.out = FullyConnected(config.hidden, self.out_layers * w_dim)
        init_parameters(self, torch.Generator().manual_seed(config.init_seed))
        with torch.no_grad():
            self.out.weight.zero_()  # the untrained guess is w_avg
        self.register_buffer("w_avg", torch.zeros(w_dim))  # the generator's (projector.project.w_statistics)
        self.register_buffer("w_std", torch.ones([]))  # RMS distance of mapped w to w_avg
        self.info: dict = {}  # the file's header, once loaded (load_encoder)

    def _block_resolutions(self) -> list[int]:
        return [2**i for i in range(int(math.log2(self.resolution)), 2, -1)]  # R, R/2, ..., 8

    def geometry(self) -> dict:
        return {"resolution": self.resolution, "w_dim": self.w_dim, "num_ws": self.num_ws,
                "img_channels": self.img_channels}

    @property
    def device(self) -> torch.device:
        return self.w_avg.device

    def set_w_statistics(self, w_avg: torch.Tensor, w_std: float) -> None:
        with torch.no_grad():
            self.w_avg.copy_(w_avg.detach().reshape(self.w_dim))
            self.w_std.fill_(float(w_std))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        n = img.shape[0]
        assert img.shape[1:] == (self.img_channels, self.resolution, self.resolution), (
            f"images must be [N, {self.img_channels}, {self.resolution}, {self.resolution}], got {list(img.shape)}")
        x = self.from_rgb(img)  # [N, C, R, R]
        for block in self.blocks:
            x = block(x)  # ... [N, C4, 4, 4]
        x = self.fc(x.flatten(1))  # [N, hidden]
        delta = self.out(x).reshape(n, self.out_layers, self.w_dim) * (self.w_std / math.sqrt(self.w_dim))
        w = self.w_avg + delta  # [N, out_layers, w_dim]
        return w if self.config.w_plus else w[:, 0]

    @torch.no_grad()
    def guess(self, img: torch.Tensor, *, batch: int = 256) -> torch.Tensor:
        """`forward` without gradients, in eval mode, in chunks, on the encoder's device; the result on the same
        device as `img`. [N, w_dim] or [N, num_ws, w_dim]"""
        out = [self(img[i : i + batch].to(self.device, torch.float32)) for i in range(0, len(img), batch)]
        return torch.cat(out).to(img.device)

    def identity(self) -> str:
        """A content hash of the weights (16 hex digits): what projector settings record (`encoder_sha256`)."""
        return tensors_sha256(self.state_dict())[:16]


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------- the file


def encoder_header(E: Encoder, generator: ModelInfo, training: dict | None = None) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "config": E.config.to_dict(), "geometry": E.geometry(),
        "generator": {"name": generator.name, "sha256": generator.sha256}, "identity": E.identity(),
        "parameters": num_parameters(E), "training": training or {},
    }


def save_encoder(E: Encoder, path: str | Path, generator: ModelInfo, *, training: dict | None = None) -> Path:
    """Write the weights (`.safetensors`, header in its metadata) and the header as NAME.json, each atomically."""
    path = Path(path)
    header = encoder_header(E, generator, training)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in E.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"sgproject": json.dumps(header)})
    write_json_atomic(path.with_suffix(".json"), header)
    return path


def read_encoder_header(path: str | Path) -> dict:
    """The JSON header of an encoder file; CheckpointError when the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such encoder file (make one with `sgproject train-encoder`)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        header = json.loads(meta["sgproject"])
    except KeyError:
        raise CheckpointError(f"{path}: a safetensors file, but not an sgproject encoder (no 'sgproject' header)") \
            from None
    except Exception as e:  # safetensors' own error types for truncated or foreign files; bad JSON
        raise CheckpointError(f"{path}: not a readable encoder file ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        what = header.get("format") if isinstance(header, dict) else None
        raise CheckpointError(f"{path}: format {what!r} is not {FORMAT!r} (a generator is not an encoder)")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: encoder format version {version!r} is newer than this sgproject "
                              f"understands ({FORMAT_VERSION}); upgrade sgproject")
    return header


def check_generator(header: dict, generator: ModelInfo, where: str) -> None:
    """EncoderMismatchError unless the encoder described by `header` was trained for `generator`."""
    made_for = header.get("generator", {})
    if made_for.get("sha256") != generator.sha256:
        raise EncoderMismatchError(
            f"{where} was trained for the generator {made_for.get('name')!r} (sha256 {made_for.get('sha256')}), "
            f"not for {generator.name!r} (sha256 {generator.sha256}); train one for this model with "
            "`sgproject train-encoder`"
        )


def load_encoder(path: str | Path, generator: ModelInfo, device: torch.device | str = "cpu") -> Encoder:
    """Load an encoder for `generator` (its ModelInfo, from `load_generator`), in eval mode without gradients.

    Raises EncoderMismatchError when the file was made for another generator (both hashes named), CheckpointError
    when the file is not a readable encoder or its tensors do not fit its config."""
    path = Path(path)
    header = read_encoder_header(path)
    check_generator(header, generator, str(path))
    return _read_encoder(path, header).to(device)


def load_encoder_for_warm_start(path: str | Path) -> Encoder:
    """An encoder file's network whatever generator it was trained for (its header in `.info`), on the CPU: the
    start of a new encoder for another generator of the same geometry (train_encoder(init=...)), never a guesser
    for detection. CheckpointError as in `load_encoder`."""
    path = Path(path)
    return _read_encoder(path, read_encoder_header(path))


def _read_encoder(path: Path, header: dict) -> Encoder:
    """The encoder a file holds, from its header (read_encoder_header): checked, in eval mode without gradients."""
    try:
        E = Encoder(EncoderConfig.from_dict(header["config"]), **header["geometry"])
    except (KeyError, TypeError, EncoderError) as e:
        raise CheckpointError(f"{path}: invalid encoder config ({e})") from None
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: the weights cannot be read, the file may be truncated ({e})") from None
    expected = {k: tuple(v.shape) for k, v in E.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise CheckpointError(f"{path}: the weights do not fit the encoder's config (e.g. {diff[0]})")
    if not all(torch.isfinite(v).all() for v in tensors.values()):
        raise CheckpointError(f"{path}: the weights contain NaN or infinite values")
    E.load_state_dict(tensors, strict=True)
    E.info = header
    return E.eval().requires_grad_(False)


def bundled_encoder_path(model_name: str) -> Path | None:
    """generator/weights/<model_name>.encoder.safetensors when it exists."""
    path = WEIGHTS_DIR / f"{model_name}.encoder.safetensors"
    return path if path.is_file() else None


def encoder_for(generator: ModelInfo, explicit_path: str | Path | None = None,
                device: torch.device | str = "cpu") -> Encoder | None:
    """The explicit encoder file when given (refused for another generator), else the model's bundled encoder when
    it was trained for exactly these weights, else None."""
    if explicit_path is not None:
        return load_encoder(explicit_path, generator, device)
    path = bundled_encoder_path(generator.name)
    if path is None or read_encoder_header(path).get("generator", {}).get("sha256") != generator.sha256:
        return None  # e.g. a user's own file that happens to share the bundled model's name
    return load_encoder(path, generator, device)
