"""Shared fixtures. Tests run on CPU with the `tiny` model unless marked `gpu`."""

import os

import pytest
import torch

# One torch thread per test process: the tests are small, and on a shared 2-core machine several multi-threaded
# processes spin against each other. Parallelism comes from running test processes side by side instead.
torch.set_num_threads(int(os.environ.get("SGPROJECT_TEST_THREADS", "1")))


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
