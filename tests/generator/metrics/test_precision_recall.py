"""generator/metrics/precision_recall.py: the k-NN manifold estimate and what precision and recall tell apart."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from generator.data.datasets import ImageDataset
from generator.metrics.common import MetricError
from generator.metrics.features import RandomConvFeatures
from generator.metrics.precision_recall import (
    compute_precision_recall, inside_manifold, knn_radii, precision_recall,
)


def _gauss(n, d=8, seed=0, mean=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + mean


def test_knn_radii_match_a_brute_force_count():
    x = _gauss(50, d=3)
    d = torch.cdist(x, x)
    expected = d.sort(dim=1).values[:, 3]  # column 0 is the point itself
    assert torch.allclose(knn_radii(x, k=3, chunk=7), expected)


def test_inside_manifold_on_a_line():
    ref = torch.tensor([[0.0], [10.0]])
    radii = torch.tensor([1.0, 2.0])
    q = torch.tensor([[0.5], [1.5], [8.0], [12.5]])
    assert inside_manifold(q, ref, radii).tolist() == [True, False, True, False]


def test_same_distribution_scores_high_on_both():
    p, r = precision_recall(_gauss(600, seed=1), _gauss(600, seed=2))
    assert p > 0.85 and r > 0.85


def test_mode_dropping_keeps_precision_and_loses_recall():
    # Generated samples from a quarter of the real distribution only: realistic, but not covering the data.
    real = _gauss(800, seed=3)
    pool = _gauss(4000, seed=4)
    dropped = pool[(pool[:, 0] > 0.7)][:800]
    p, r = precision_recall(real, dropped)
    assert p > 0.8 and r < 0.5


def test_low_fidelity_loses_precision():
    # Generated samples spread far wider than the data: they cover it (recall) but most are off the manifold.
    p, r = precision_recall(_gauss(600, seed=5), _gauss(600, seed=6, scale=3.0))
    assert p < 0.3 and r > 0.8


def test_too_few_samples_and_mismatched_dims_are_clear_errors():
    with pytest.raises(MetricError, match="more than 3 samples"):
        knn_radii(_gauss(3), k=3)
    with pytest.raises(MetricError, match="one D"):
        precision_recall(_gauss(10, d=4), _gauss(10, d=5))


def test_generators_own_images_are_precise_and_noise_is_not(tiny):
    net = RandomConvFeatures()
    n = 48
    own = np.stack([
        ((img * 127.5 + 128).clamp(0, 255).to(torch.uint8)).numpy()
        for img in tiny(torch.randn(n, tiny.z_dim, generator=torch.Generator().manual_seed(9)), noise_mode="random",
                        gen=torch.Generator().manual_seed(9))
    ])  # [n, 3, R, R]
    noise = np.random.RandomState(0).randint(0, 256, own.shape).astype(np.uint8)
    own_ds = ImageDataset(own, source="own")
    noise_ds = ImageDataset(noise, source="noise")
    a = compute_precision_recall(tiny, own_ds, n=n, batch=16, feature_net=net)
    b = compute_precision_recall(tiny, noise_ds, n=n, batch=16, feature_net=net)
    # Against its own kind of images both are high; noise images are off G's manifold (precision ~0). Recall
    # against noise is not asserted: an untrained G's widely spread samples have balls that swallow the noise.
    assert a["precision"] > 0.8 and a["recall"] > 0.8 and b["precision"] < 0.2
    assert a["metric"] == "pr" and a["k"] == 3 and a["n_real"] == n and a["feature_net"] == net.identity


def test_cli_pr_as_json(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPROJECT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    rs = np.random.RandomState(8)
    for i in range(16):
        Image.fromarray(rs.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    import sgproject.cli  # noqa: F401  (registers the commands)
    from sgproject.app import app

    r = CliRunner().invoke(app, ["metrics", "--model", "tiny", "--device", "cpu", "--data", str(folder), "--metrics",
                                 "pr", "--feature-net", "random", "--n-gen", "16", "--batch-size", "8", "--json"])
    assert r.exit_code == 0, r.output
    pr = json.loads(r.stdout)["metrics"]["pr"]
    assert 0 <= pr["precision"] <= 1 and 0 <= pr["recall"] <= 1 and pr["n_real"] == 16 and pr["n_gen"] == 16
    assert "fid" not in json.loads(r.stdout)["metrics"]
