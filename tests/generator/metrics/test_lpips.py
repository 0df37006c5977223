"""LPIPS-VGG: where the backbone comes from (explicit file > torchvision cache > download > seeded random), what
it is called, and that the distance is the `lpips` package's LPIPS.

No test downloads anything: SGPROJECT_OFFLINE=1, TORCH_HOME points at an empty temporary folder and
$SGPROJECT_VGG16 is unset, so without a file the deterministic random backbone is what is used.
"""

import warnings

import pytest
import torch

from generator.metrics.lpips import (
    ENV_WEIGHTS,
    VGG16_FILE,
    PerceptualWeightsError,
    _digest,
    downsample_to,
    load_perceptual,
    random_identity,
    random_vgg16_features,
    resolve_backbone,
    torchvision_cache_path,
)

# sha256 prefix of random_vgg16_features(0): must never change (docs/ARCHITECTURE.md, "Metrics")
RANDOM_DIGEST = "661f401d"
CONV_IDX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("SGPROJECT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    assert str(torchvision_cache_path()).startswith(str(tmp_path)), "TORCH_HOME must steer the cache lookup"


@pytest.fixture(scope="module")
def random_feats():
    return random_vgg16_features()


@pytest.fixture(scope="module")
def lpips_random():
    """The shared random-backbone LPIPS (what the other projector tests use too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGPROJECT_OFFLINE", "1")
        mp.delenv(ENV_WEIGHTS, raising=False)
        return load_perceptual(device="cpu", allow_download=False)


@pytest.fixture(scope="module")
def lpips_reference(random_feats):
    """The `lpips` package's own LPIPS-VGG with the same backbone weights (and its own linear heads)."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    state = {}
    for name, _ in model.net.named_parameters():  # slice1.0.weight -> features index 0
        _, idx, kind = name.split(".")
        state[name] = random_feats[f"{idx}.{kind}"]
    model.net.load_state_dict(state)
    return model.eval()


def _torchvision_dict(feats: dict, *, extra: bool = False) -> dict:
    """A state dict in torchvision's VGG16 naming (`features.0.weight`, ...); `extra` adds a classifier tensor,
    as the real file has, which the loader must ignore."""
    state = {f"features.{k}": v.clone() for k, v in feats.items()}
    if extra:
        state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


def _scaled(feats: dict, factor: float) -> dict:
    return {k: v * factor for k, v in feats.items()}


# ------------------------------------------------------------------------------------------------ resolve order


def test_explicit_path_wins_over_cache(tmp_path, random_feats):
    cache = torchvision_cache_path()
    cache.parent.mkdir(parents=True)
    torch.save(_torchvision_dict(_scaled(random_feats, 2.0), extra=True), cache)
    explicit = tmp_path / "my_vgg.pth"
    mine = _scaled(random_feats, 0.5)
    torch.save(_torchvision_dict(mine), explicit)  # features only: all the loader reads

    source, feats = resolve_backbone(explicit)
    assert source.kind == "explicit" and source.path == str(explicit)
    assert source.identity == f"lpips-vgg16:{_digest(mine)}"
    assert set(feats) == {f"{i}.{p}" for i in CONV_IDX for p in ("weight", "bias")}
    torch.testing.assert_close(feats["0.weight"], mine["0.weight"], rtol=0, atol=0)


def test_explicit_path_from_environment(tmp_path, monkeypatch, random_feats):
    explicit = tmp_path / "env_vgg.pth"
    torch.save({k: v for k, v in _scaled(random_feats, 3.0).items()}, explicit)  # bare `0.weight` naming works too
    monkeypatch.setenv(ENV_WEIGHTS, str(explicit))
    source, _ = resolve_backbone()
    assert source.kind == "explicit"
    assert source.identity == f"lpips-vgg16:{_digest(_scaled(random_feats, 3.0))}"


def test_cache_used_without_explicit_path(random_feats):
    cache = torchvision_cache_path()
    assert cache.name == VGG16_FILE
    cache.parent.mkdir(parents=True)
    cached = _scaled(random_feats, 2.0)
    torch.save(_torchvision_dict(cached, extra=True), cache)
    source, feats = resolve_backbone()
    assert source.kind == "cache" and source.path == str(cache)
    assert source.identity == f"lpips-vgg16:{_digest(cached)}"
    torch.testing.assert_close(feats["28.weight"], cached["28.weight"], rtol=0, atol=0)


def test_unusable_cache_falls_through_to_random(caplog):
    cache = torchvision_cache_path()
    cache.parent.mkdir(parents=True)
    torch.save({"something.else": torch.zeros(2)}, cache)
    source, _ = resolve_backbone()
    assert source.kind == "random"
    assert "ignoring the torchvision cache" in caplog.text


def test_random_backbone_when_offline_with_warning():
    source, feats = resolve_backbone()
    assert source.is_random and source.path is None
    assert source.identity == random_identity() == "lpips-vgg16:random-seed0"
    # load_perceptual says so through the caller's `warn`, on every call (even when the network is cached).
    for _ in range(2):
        messages = []
        P = load_perceptual(device="cpu", warn=messages.append)
        assert P.identity == "lpips-vgg16:random-seed0" and P.source.is_random
        assert len(messages) == 1
        assert "RANDOM" in messages[0] and "lpips-vgg16:random-seed0" in messages[0]


def test_downloads_can_be_refused_explicitly(monkeypatch):
    monkeypatch.delenv("SGPROJECT_OFFLINE")
    called = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: called.append(a) or {})
    source, _ = resolve_backbone(allow_download=False)
    assert source.is_random and not called


def test_no_warning_for_a_real_file(tmp_path, random_feats):
    explicit = tmp_path / "vgg.pth"
    torch.save(_torchvision_dict(_scaled(random_feats, 0.25)), explicit)
    messages = []
    P = load_perceptual(explicit, device="cpu", warn=messages.append)
    assert messages == []
    assert P.identity.startswith("lpips-vgg16:") and "random" not in P.identity
    assert P.identity != random_identity()


def test_random_backbone_is_deterministic(random_feats):
    again = random_vgg16_features()
    assert _digest(again) == _digest(random_feats) == RANDOM_DIGEST
    assert _digest(random_vgg16_features(seed=1)) != RANDOM_DIGEST
    # He initialisation: weight std sqrt(2 / fan_in), zero biases.
    w = random_feats["0.weight"]
    assert tuple(w.shape) == (64, 3, 3, 3) and w.dtype == torch.float32
    assert float(w.std()) == pytest.approx((2 / 27) ** 0.5, rel=0.1)
    assert tuple(random_feats["28.weight"].shape) == (512, 512, 3, 3)
    assert all(float(random_feats[f"{i}.bias"].abs().max()) == 0 for i in CONV_IDX)


def test_missing_or_bad_explicit_file_raises(tmp_path, monkeypatch):
    with pytest.raises(PerceptualWeightsError, match="does not exist"):
        resolve_backbone(tmp_path / "nope.pth")
    with pytest.raises(PerceptualWeightsError, match="does not exist"):
        load_perceptual(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(PerceptualWeightsError, match="cannot read"):
        resolve_backbone(junk)
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(PerceptualWeightsError, match="not a torchvision VGG16"):
        resolve_backbone(partial)
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path / "also_missing.pth"))
    with pytest.raises(PerceptualWeightsError):  # a named file that is missing is an error, never a fallback
        resolve_backbone()


# --------------------------------------------------------------------------------------------------- distance


def _images(seed: int, n: int = 2, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    return a, b


def test_lpips_identity_and_symmetry(lpips_random):
    a, b = _images(0)
    with torch.no_grad():
        assert torch.equal(lpips_random(a, a), torch.zeros(2))
        ab, ba = lpips_random(a, b), lpips_random(b, a)
    assert ab.shape == (2,) and (ab > 0).all()
    torch.testing.assert_close(ab, ba, rtol=0, atol=1e-7)


def test_matches_the_lpips_package(lpips_random, lpips_reference):
    a, b = _images(1)
    with torch.no_grad():
        ours = lpips_random(a, b)
        ref = lpips_reference(a, b).flatten()  # inputs in [-1, 1]: the package's default
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
        # Precomputed target features (what the projector does) give the same numbers.
        torch.testing.assert_close(lpips_random.distance_to(a, lpips_random.features(b)), ours, rtol=0, atol=0)
        # Larger than 256 px: both images are area-downsampled first, then it is plain LPIPS again.
        big_a, big_b = _images(2, n=1, size=300)
        small_a, small_b = downsample_to(big_a), downsample_to(big_b)
        assert small_a.shape[-2:] == (256, 256)
        torch.testing.assert_close(
            lpips_random(big_a, big_b), lpips_reference(small_a, small_b).flatten(), rtol=0, atol=1e-6
        )


def test_spatial_map(lpips_random, lpips_reference):
    a, b = _images(3, size=64)
    with torch.no_grad():
        m = lpips_random.spatial_map(a, b)
        scalar = lpips_random(a, b)
        lpips_reference.spatial = True
        try:
            ref = lpips_reference(a, b)
        finally:
            lpips_reference.spatial = False
    assert m.shape == (2, 1, 64, 64)
    assert (m >= 0).all()
    torch.testing.assert_close(m, ref, rtol=0, atol=1e-6)
    # Bilinear upsampling by powers of two (align_corners=False) preserves the mean: the map averages to the
    # scalar distance (measured: relative difference < 1e-6).
    torch.testing.assert_close(m.mean(dim=[1, 2, 3]), scalar, rtol=1e-5, atol=0)


def test_spatial_map_of_a_large_image_is_at_the_downsampled_size(lpips_random):
    g = torch.Generator().manual_seed(4)
    a = torch.rand(1, 3, 300, 280, generator=g) * 2 - 1
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        m = lpips_random.spatial_map(a, b)
        scalar = lpips_random(a, b)
    assert m.shape == (1, 1, 256, 239)  # the longer side to 256, aspect kept
    # Off powers of two the pooled sizes round down (239 -> 119 -> 59 -> 29 -> 14) and the identity is no longer
    # exact by construction; measured relative differences are still below 1e-6.
    torch.testing.assert_close(m.mean(dim=[1, 2, 3]), scalar, rtol=1e-4, atol=0)


def test_downsample_to():
    x = torch.rand(1, 3, 512, 512)
    y = downsample_to(x)
    assert y.shape == (1, 3, 256, 256)
    torch.testing.assert_close(y[0, :, 0, 0], x[0, :, :2, :2].mean(dim=[1, 2]))  # area: the mean of 2x2 blocks
    small = torch.rand(1, 3, 100, 64)
    assert downsample_to(small) is small


def test_distance_grows_with_the_difference(lpips_random):
    g = torch.Generator().manual_seed(5)
    a = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(a.shape, generator=g)
    with torch.no_grad():
        d = [float(lpips_random((a + s * noise).clamp(-1, 1), a)) for s in (0.02, 0.1, 0.5)]
    assert d[0] < d[1] < d[2], d
