"""Fixtures shared by the projector tests."""

import pytest

from generator.metrics.lpips import ENV_WEIGHTS, load_perceptual


@pytest.fixture(scope="module")
def perceptual(tmp_path_factory):
    """LPIPS with the deterministic random backbone (lpips-vgg16:random-seed0), forced: the tests' thresholds were
    measured with it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGPROJECT_OFFLINE", "1")
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        mp.delenv(ENV_WEIGHTS, raising=False)
        P = load_perceptual(device="cpu", allow_download=False)
    assert P.identity == "lpips-vgg16:random-seed0"
    return P
