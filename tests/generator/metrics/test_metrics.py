"""FID and PPL (generator/metrics/) and `sgproject metrics`, on the tiny model with small random feature networks.

No real weights exist here: Inception loading is tested for its clear offline error and with random weights saved
to a file; FID orderings use `RandomConvFeatures`; most PPL tests use a pixel-MSE stand-in for LPIPS (the PPL
machinery does not depend on which distance it is given); the CLI test runs the real LPIPS code with its
deterministic random backbone.
"""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from generator.data.datasets import ImageDataset
from generator.metrics.common import MetricError
from generator.metrics.features import (
    InceptionWeightsError, RandomConvFeatures, load_feature_network, load_inception, resolve_inception,
)
from generator.metrics.fid import FeatureStats, compute_fid, frechet_distance, real_statistics
from generator.metrics.ppl import compute_ppl, face_crop, filtered_mean, ppl_preprocess

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def offline_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPROJECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SGPROJECT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty torchvision cache
    monkeypatch.delenv("SGPROJECT_INCEPTION", raising=False)
    monkeypatch.delenv("SGPROJECT_VGG16", raising=False)


def _random_stats(rs, d):
    a = rs.standard_normal((d, d))
    return rs.standard_normal(d), a @ a.T / d + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------------------- Fréchet distance (pure)


def test_frechet_distance_is_zero_for_identical_statistics():
    mu, sigma = _random_stats(np.random.RandomState(0), 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    rs = np.random.RandomState(1)
    mu1, mu2 = rs.standard_normal(8), rs.standard_normal(8)
    v1, v2 = rs.uniform(0.1, 3, 8), rs.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_symmetric_and_grows_with_a_mean_shift():
    rs = np.random.RandomState(2)
    (mu1, s1), (mu2, s2) = _random_stats(rs, 12), _random_stats(rs, 12)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-6)
    shift = np.full(12, 0.5)
    assert frechet_distance(mu1, s1, mu1 + shift, s1) == pytest.approx(12 * 0.25, rel=1e-6)


def test_frechet_distance_survives_singular_covariances():
    """Fewer samples than dimensions (a rank-deficient covariance) still gives a finite, non-negative value."""
    rs = np.random.RandomState(3)
    a, b = rs.standard_normal((10, 32)), rs.standard_normal((10, 32)) + 1
    fid = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert np.isfinite(fid) and fid > 0


def test_feature_stats_match_numpy():
    x = torch.from_numpy(np.random.RandomState(4).standard_normal((50, 6)))
    stats = FeatureStats(6)
    stats.add(x[:20])
    stats.add(x[20:])
    mu, sigma = stats.mean_cov()
    np.testing.assert_allclose(mu, x.numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.numpy(), rowvar=False), atol=1e-10)


# -------------------------------------------------------------------------------------------------------- FID


def _generated(G, seed, n):
    """G's own images (the same way compute_fid renders them), as a uint8 dataset."""
    z = torch.from_numpy(np.random.RandomState(seed).standard_normal((n, G.z_dim))).float()
    with torch.no_grad():
        img = G(z, noise_mode="const")
    return ImageDataset((img * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy(), f"tiny-seed{seed}")


def test_fid_is_small_against_the_generators_own_images_and_large_against_noise(tiny):
    net = RandomConvFeatures(dim=16)
    own = _generated(tiny, 100, 32)
    noise = ImageDataset(np.random.RandomState(5).randint(0, 256, (32, 3, 32, 32), dtype=np.uint8), "noise")
    near = compute_fid(tiny, own, n_gen=32, batch=32, feature_net=net, seed=0)
    far = compute_fid(tiny, noise, n_gen=32, batch=32, feature_net=net, seed=0)
    assert 0 <= near["fid"] < far["fid"] / 10
    assert near["feature_net"] == far["feature_net"] == "random-conv16-seed0"
    assert (near["n_real"], near["n_gen"]) == (32, 32)


def test_real_statistics_are_cached_by_content(tmp_path):
    net = RandomConvFeatures(dim=8)
    images = np.random.RandomState(6).randint(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    mu, sigma, n, cached = real_statistics(ImageDataset(images, "folder"), net)
    assert (n, cached) == (12, False)
    assert list((tmp_path / "cache" / "metrics").glob("fid-real-*.npz"))
    mu2, sigma2, _, cached2 = real_statistics(ImageDataset(images, "folder"), net)
    assert cached2 and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    changed = images.copy()
    changed[0] = 255 - changed[0]  # same folder, same size, other pictures: not the cached statistics
    assert real_statistics(ImageDataset(changed, "folder"), net)[3] is False
    assert real_statistics(ImageDataset(images, "folder"), RandomConvFeatures(dim=8, seed=1))[3] is False


def test_fid_refuses_data_at_another_resolution(tiny):
    data = ImageDataset(np.zeros((4, 3, 16, 16), np.uint8), "small")
    with pytest.raises(MetricError, match="resolution"):
        compute_fid(tiny, data, n_gen=4, feature_net=RandomConvFeatures(dim=8))


def test_random_feature_network_is_deterministic_and_reads_uint8_and_float_alike():
    a, b = RandomConvFeatures(), RandomConvFeatures()
    u8 = torch.from_numpy(np.random.RandomState(7).randint(0, 256, (3, 3, 32, 32), dtype=np.uint8))
    fa = a(u8)
    assert fa.shape == (3, 64) and a.identity == "random-conv64-seed0"
    assert torch.equal(fa, b(u8))
    torch.testing.assert_close(a(u8.float() / 127.5 - 1), fa)


# ---------------------------------------------------------------------------------------------- Inception loading


def test_inception_without_weights_raises_a_clear_error(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(InceptionWeightsError) as e:
        resolve_inception(allow_download=True)
    msg = str(e.value)
    assert "FID needs the Inception-v3 weights" in msg and "network unreachable" in msg
    assert "--inception-weights" in msg and "--feature-net random" in msg and "\n" not in msg
    with pytest.raises(InceptionWeightsError, match="downloads are off"):  # SGPROJECT_OFFLINE=1: not even tried
        load_feature_network("inception")
    with pytest.raises(InceptionWeightsError, match="does not exist"):
        load_inception("/nonexistent/inception.pth")
    monkeypatch.setenv("SGPROJECT_INCEPTION", "/nonexistent/from-env.pth")
    with pytest.raises(InceptionWeightsError, match="from-env.pth does not exist"):
        load_feature_network("inception")


def test_inception_loads_from_an_explicit_file_and_records_its_identity(tmp_path):
    from torchvision.models import inception_v3

    from generator.util.files import file_sha256

    path = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    sha = file_sha256(path)[:8]
    net = load_inception(path)
    assert net.identity == f"inception-v3:sha256-{sha}" and net.path == str(path) and net.dim == 2048
    feats = net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()


# -------------------------------------------------------------------------------------------------------- PPL


class PixelDistance(torch.nn.Module):
    """A fast stand-in for LPIPS: mean squared pixel difference."""

    identity = "pixel-mse"

    def forward(self, a, b):
        return (a - b).square().mean(dim=[1, 2, 3])


def test_filtered_mean_discards_the_lowest_and_highest_percent():
    dist = np.arange(1, 101, dtype=float)  # 1..100: the 1st percentile (lower) is 1, the 99th (higher) is 100
    assert filtered_mean(dist) == pytest.approx(50.5)
    dist = np.concatenate([np.ones(198), [1e9, -1e9]])  # one outlier at each end among 200 samples
    assert filtered_mean(dist) == pytest.approx(1.0)


def test_face_crop_is_the_official_region():
    img = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    crop = face_crop(img)
    assert crop.shape == (1, 1, 32, 32)
    assert crop[0, 0, 0, 0] == img[0, 0, 24, 16] and crop[0, 0, -1, -1] == img[0, 0, 55, 47]
    big = torch.zeros(2, 3, 1024, 1024)
    assert ppl_preprocess(big, crop=True).shape == (2, 3, 256, 256)  # 512 crop, then area-downsampled
    assert ppl_preprocess(torch.zeros(2, 1, 32, 32), crop=False).shape == (2, 3, 32, 32)


def test_ppl_is_positive_finite_deterministic_and_independent_of_batch_size(tiny):
    a = compute_ppl(tiny, n=12, batch=12, perceptual=PixelDistance(), seed=3)
    b = compute_ppl(tiny, n=12, batch=5, perceptual=PixelDistance(), seed=3)
    assert np.isfinite(a["ppl"]) and a["ppl"] > 0
    assert a["ppl"] == pytest.approx(b["ppl"], rel=1e-3)
    assert (a["perceptual"], a["n"], a["sampling"], a["space"]) == ("pixel-mse", 12, "end", "w")


def test_truncation_shortens_paths_so_ppl_falls(tiny):
    """psi < 1 pulls both path ends towards w_avg, so the same step changes the image less; psi = 0: PPL = 0."""
    ppl = {psi: compute_ppl(tiny, n=12, batch=12, perceptual=PixelDistance(), truncation_psi=psi, crop=True)["ppl"]
           for psi in (1.0, 0.5, 0.0)}
    assert ppl[1.0] > 2 * ppl[0.5] > 0
    assert ppl[0.0] < 1e-6 * ppl[1.0]


def test_ppl_rejects_unknown_sampling(tiny):
    with pytest.raises(MetricError, match="sampling"):
        compute_ppl(tiny, n=2, sampling="middle", perceptual=PixelDistance())


# -------------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rs = np.random.RandomState(8)
    for i in range(16):
        Image.fromarray(rs.randint(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _run(*args):
    import sgproject.cli  # noqa: F401  (registers the commands)
    from sgproject.app import app

    return CliRunner().invoke(app, ["metrics", "--model", "tiny", "--device", "cpu", *map(str, args)])


def test_cli_fid_and_ppl_as_json(image_folder):
    r = _run("--data", image_folder, "--metrics", "fid,ppl", "--feature-net", "random", "--n-gen", 16,
             "--n-ppl", 4, "--batch-size", 8, "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    fid, ppl = record["metrics"]["fid"], record["metrics"]["ppl"]
    assert fid["feature_net"] == "random-conv64-seed0" and fid["n_real"] == 16 and fid["fid"] > 0
    assert ppl["perceptual"] == "lpips-vgg16:random-seed0" and ppl["n"] == 4 and ppl["ppl"] > 0
    assert "RANDOM feature network" in ANSI.sub("", r.stderr)


def test_cli_ppl_alone_needs_no_data_and_prints_a_table():
    r = _run("--metrics", "ppl", "--n-ppl", 4, "--batch-size", 4)
    assert r.exit_code == 0, r.output
    text = ANSI.sub("", r.stdout)
    assert "PPL" in text and "lpips-vgg16:random-seed0" in text and "end sampling" in text and "FID" not in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--metrics", "fid,bogus", "--data", "x"], "unknown metric 'bogus'"),
        (["--metrics", "fid"], "--data"),
        (["--metrics", "fid", "--data", "x", "--feature-net", "alexnet"], "--feature-net"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(args, needle):
    r = _run(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output and r.stdout == ""
    errors = [line for line in ANSI.sub("", r.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr


def test_cli_fid_without_inception_weights_exits_2(image_folder):
    r = _run("--data", image_folder, "--metrics", "fid", "--n-gen", 4)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "Inception-v3 weights" in ANSI.sub("", r.stderr)
