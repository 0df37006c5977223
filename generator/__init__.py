"""StyleGAN2 networks, losses, training, datasets, checkpoints, official-weight import and metrics."""

from generator.checkpoint import ModelInfo, save_generator
from generator.registry import DEFAULT_MODEL, available_models, load_generator
from generator.networks import Generator, GeneratorConfig, mix_styles, truncate

__all__ = [
    "DEFAULT_MODEL", "Generator", "GeneratorConfig", "ModelInfo", "available_models", "load_generator",
    "mix_styles", "save_generator", "truncate",
]
