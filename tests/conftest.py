"""Shared fixtures. Tests run on CPU with the `tiny` model unless marked `gpu`."""

import pytest
import torch

torch.set_num_threads(max(1, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny():
    """The tiny generator (seeded, untrained), shared; tests must not modify it."""
    from generator import load_generator

    G, info = load_generator("tiny", "cpu")
    return G
