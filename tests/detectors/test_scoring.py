"""`score_batch`: the features and heat map of each image, on the `tiny` model (CPU, random LPIPS backbone).

It reuses the target features that `project()` computed and the reconstruction's features for both the distance
and the map; the numbers must be those of a direct computation from the images.
"""

import numpy as np
import pytest
import torch

from detectors.degrade import Degradation
from detectors.scoring import FEATURES, heatmap_rgb, score_batch
from generator.metrics.lpips import load_perceptual
from generator.render import generate_images
from generator.util.imaging import to_tensor, to_uint8
from projector.project import ProjectorConfig, mse_psnr
from tests.detectors.helpers import offline_environment


@pytest.fixture(scope="module")
def perceptual(tmp_path_factory):
    with offline_environment(tmp_path_factory.mktemp("cache")):
        return load_perceptual(device="cpu", allow_download=False)


def test_features_and_heat_map_match_a_direct_computation(tiny, perceptual):
    images = [a for _, a in generate_images(tiny, [1_000_000, 1_000_001], noise_mode="random")]
    targets = to_tensor(images)
    res = tiny.img_resolution
    degradations = [None, Degradation(source_size=(48, 40), resolution=res)]  # a 48x40 source: 32 -> 40 -> 32 px
    scores = score_batch(tiny, targets, config=ProjectorConfig(num_steps=3), perceptual=perceptual, seed=0,
                         degradations=degradations)
    assert len(scores) == 2
    for s, target, deg in zip(scores, targets, degradations):
        assert set(FEATURES) <= set(s.features)
        u8 = to_uint8(s.projection.image)
        matched = to_tensor([deg.apply(u8) if deg is not None else u8])
        with torch.no_grad():
            lp = float(perceptual(matched, target[None]))
            spatial = perceptual.spatial_map(matched, target[None])
        assert s.features["lpips"] == pytest.approx(lp, abs=1e-6)
        assert s.features["psnr"] == pytest.approx(float(mse_psnr(matched, target[None])[1][0]), abs=1e-4)
        with torch.no_grad():  # before the degradation: the reconstruction as saved (the same image without one)
            raw = float(perceptual(to_tensor([u8]), target[None]))
        assert s.features["lpips_raw"] == pytest.approx(raw, abs=1e-6)
        assert (s.features["lpips_raw"] == s.features["lpips"]) == (deg is None)
        assert np.array_equal(s.heatmap, heatmap_rgb(spatial[0], res))
        assert s.heatmap.shape == (res, res, 3) and s.heatmap.dtype == np.uint8


def test_lpips_map_from_features_is_the_spatial_distance(tiny, perceptual):
    a = to_tensor([a for _, a in generate_images(tiny, [3, 4], noise_mode="const")])
    b = a.flip(-1)
    with torch.no_grad():
        direct = perceptual.distance_to(a, perceptual.features(b), spatial=True)
        from_feats = perceptual.map_between(perceptual.features(a), perceptual.features(b))
    assert from_feats.shape == direct.shape and torch.equal(from_feats, direct)
