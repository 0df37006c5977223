"""generator/networks.py (and the pure helpers of generator/render.py): shapes, seeding, truncation, noise, mixing.

Uses the session-wide `tiny` generator (32 px, 32 channels, z/w 64, num_ws 8, 7 noise maps). Tests that need to
change a model work on a deep copy.
"""

import copy

import numpy as np
import pytest
import torch

from generator.util.errors import SGProjectError
from generator.networks import (
    Generator,
    GeneratorConfig,
    mix_styles,
    normalize_2nd_moment,
    truncate,
)
from generator.render import make_grid, parse_seeds, style_range_layers
from generator.util.imaging import to_uint8


def _z(n: int, seed: int, z_dim: int = 64) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


def _small_cfg(**kw) -> GeneratorConfig:
    base = dict(z_dim=16, w_dim=16, mapping_layers=2, resolution=16, channel_base=128, channel_max=16)
    base.update(kw)
    return GeneratorConfig(**base)


@pytest.fixture()
def noisy(tiny):
    """A copy of tiny whose noise strengths are nonzero (untrained models have them at 0, hiding the noise)."""
    G = copy.deepcopy(tiny)
    with torch.no_grad():
        for i, layer in enumerate(G.synthesis.noise_layers()):
            layer.noise_strength.fill_(0.3 + 0.1 * i)
    return G


# ----------------------------------------------------------------------------------------------------- config


def test_config_derived_sizes():
    cfg = GeneratorConfig()  # the paper's config-f at 1024 px
    assert cfg.num_ws == 18
    assert cfg.block_resolutions == [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert [cfg.channels(r) for r in (4, 64, 128, 1024)] == [512, 512, 256, 32]
    assert GeneratorConfig(resolution=64).num_ws == 10


@pytest.mark.parametrize("bad", [dict(resolution=48), dict(resolution=2), dict(resolution=0), dict(architecture="x")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        GeneratorConfig(**bad)


def test_config_dict_round_trip_and_unknown_fields():
    cfg = _small_cfg(conv_clamp=256.0)
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# --------------------------------------------------------------------------------------------- shapes, dtypes


def test_shapes_and_dtypes(tiny):
    z = _z(3, 0)
    ws = tiny.mapping(z)
    assert ws.shape == (3, tiny.num_ws, tiny.w_dim) == (3, 8, 64) and ws.dtype == torch.float32
    # mapping broadcasts one w to every layer
    assert torch.equal(ws[:, 0], ws[:, -1])
    img = tiny.synthesis(ws)
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert tiny(z).shape == (3, 3, 32, 32)
    assert tiny.synthesis.noise_shapes() == [(4, 4), (8, 8), (8, 8), (16, 16), (16, 16), (32, 32), (32, 32)]


def test_official_parameter_names(tiny):
    names = set(tiny.state_dict())
    for k in (
        "mapping.fc0.weight", "mapping.fc1.bias", "mapping.w_avg", "synthesis.b4.const",
        "synthesis.b4.conv1.weight", "synthesis.b4.conv1.noise_const", "synthesis.b4.conv1.noise_strength",
        "synthesis.b8.conv0.affine.weight", "synthesis.b8.conv0.affine.bias", "synthesis.b32.torgb.weight",
    ):
        assert k in names, k
    assert not any("resample_filter" in k for k in names), "constant filters are not part of the checkpoint"
    assert "synthesis.b4.conv0.weight" not in names


def test_wrong_input_shapes_are_rejected(tiny):
    with pytest.raises(AssertionError):
        tiny.mapping(torch.zeros(2, 63))
    with pytest.raises(AssertionError):
        tiny.synthesis(torch.zeros(2, 7, 64))
    with pytest.raises(ValueError, match="noise_mode"):
        tiny.synthesis(tiny.mapping(_z(1, 0)), "gaussian")


@pytest.mark.parametrize("architecture", ["orig", "resnet"])
def test_other_architectures_run(architecture):
    G = Generator(_small_cfg(architecture=architecture), seed=0).eval()
    with torch.no_grad():
        img = G(_z(2, 0, 16))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()


def test_normalize_2nd_moment():
    z = _z(4, 1) * 7
    x = normalize_2nd_moment(z)
    torch.testing.assert_close(x.square().mean(dim=1), torch.ones(4))


# -------------------------------------------------------------------------------------------------- seeding


def test_same_seed_same_weights():
    cfg = _small_cfg()
    a, b, c = Generator(cfg, seed=3), Generator(cfg, seed=3), Generator(cfg, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["synthesis.b4.const"], sc["synthesis.b4.const"])
    assert not torch.equal(sa["synthesis.b16.conv1.noise_const"], sc["synthesis.b16.conv1.noise_const"])


def test_seeded_weights_do_not_depend_on_global_rng():
    cfg = _small_cfg()
    torch.manual_seed(1)
    a = Generator(cfg, seed=5).state_dict()
    torch.manual_seed(2)
    b = Generator(cfg, seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_z_same_image(tiny):
    z = _z(2, 7)
    with torch.no_grad():
        assert torch.equal(tiny(z), tiny(z.clone()))
        assert not torch.equal(tiny(z)[0], tiny(z)[1])


def test_z_from_seed_matches_numpy(tiny):
    z = tiny.z_from_seed(42)
    assert z.shape == (1, 64) and z.dtype == torch.float32
    np.testing.assert_allclose(z.numpy(), np.random.RandomState(42).randn(1, 64).astype(np.float32))


# ---------------------------------------------------------------------------------------------- truncation


def test_psi_zero_gives_the_average_image(tiny):
    w_avg = tiny.mapping.w_avg
    assert w_avg.abs().sum() > 0, "the tiny model estimates its w_avg"
    with torch.no_grad():
        avg_img = tiny.synthesis(w_avg.expand(2, tiny.num_ws, -1))  # same batch size: same conv algorithm
        for seed in (0, 1, 2):
            img = tiny(_z(2, seed), truncation_psi=0.0)
            torch.testing.assert_close(img, avg_img, rtol=0, atol=1e-6)
        torch.testing.assert_close(img[0], img[1], rtol=0, atol=1e-6)


def test_truncate_cutoff_and_psi():
    ws = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    avg = torch.randn(4, generator=torch.Generator().manual_seed(1))
    assert truncate(ws, avg, 1.0) is ws
    t = truncate(ws, avg, 0.5, cutoff=2)
    torch.testing.assert_close(t[:, :2], avg + 0.5 * (ws[:, :2] - avg))
    assert torch.equal(t[:, 2:], ws[:, 2:])
    torch.testing.assert_close(truncate(ws, avg, 0.0), avg.expand_as(ws))
    assert not torch.equal(ws, t), "truncate must not modify its input in place"


def test_w_avg_tracking_moves_towards_the_batch_mean():
    G = Generator(_small_cfg(), seed=0)
    z = _z(64, 3, 16)
    assert torch.equal(G.mapping.w_avg, torch.zeros(16))
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
        G.mapping(z, update_w_avg=True)
    torch.testing.assert_close(G.mapping.w_avg, w.mean(0) * (1 - 0.995))


# --------------------------------------------------------------------------------------------------- noise


def test_untrained_noise_strength_is_zero(tiny):
    """Why the noise tests below use a copy with nonzero strengths."""
    assert all(layer.noise_strength.item() == 0 for layer in tiny.synthesis.noise_layers())


def test_const_noise_is_deterministic(noisy):
    ws = noisy.mapping(_z(2, 0))
    with torch.no_grad():
        a, b = noisy.synthesis(ws, "const"), noisy.synthesis(ws, "const")
        assert torch.equal(a, b)
        assert not torch.allclose(a, noisy.synthesis(ws, "none"))


def test_random_noise_varies_and_is_reproducible_with_a_generator(noisy):
    ws = noisy.mapping(_z(2, 0))
    with torch.no_grad():
        assert not torch.allclose(noisy.synthesis(ws, "random"), noisy.synthesis(ws, "random"))
        a = noisy.synthesis(ws, "random", gen=torch.Generator().manual_seed(9))
        b = noisy.synthesis(ws, "random", gen=torch.Generator().manual_seed(9))
        c = noisy.synthesis(ws, "random", gen=torch.Generator().manual_seed(10))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_none_noise_equals_explicit_zero_maps(noisy):
    ws = noisy.mapping(_z(2, 1))
    zeros = [torch.zeros(1, 1, *s) for s in noisy.synthesis.noise_shapes()]
    with torch.no_grad():
        torch.testing.assert_close(noisy.synthesis(ws, "none"), noisy.synthesis(ws, noise=zeros), rtol=0, atol=0)


def test_explicit_noise_maps_are_used(noisy):
    ws = noisy.mapping(_z(2, 2))
    layers = noisy.synthesis.noise_layers()
    const_maps = [layer.noise_const[None, None].clone() for layer in layers]
    with torch.no_grad():
        # passing the stored maps explicitly is the same as noise_mode='const'
        torch.testing.assert_close(noisy.synthesis(ws, "none", noise=const_maps), noisy.synthesis(ws, "const"))
        base = noisy.synthesis(ws, noise=const_maps)
        for i in (0, len(const_maps) - 1):  # the first and the last map both reach the image
            changed = list(const_maps)
            changed[i] = torch.randn(const_maps[i].shape, generator=torch.Generator().manual_seed(i))
            assert not torch.allclose(noisy.synthesis(ws, noise=changed), base)
        # per-sample maps [N, 1, r, r]: sample 1 gets different noise, sample 0 the same
        per_sample = [m.repeat(2, 1, 1, 1) for m in const_maps]
        per_sample[3] = per_sample[3].clone()
        per_sample[3][1] += 1.0
        out = noisy.synthesis(ws, noise=per_sample)
        torch.testing.assert_close(out[0], base[0])
        assert not torch.allclose(out[1], base[1])


def test_wrong_number_of_noise_maps_raises(noisy):
    ws = noisy.mapping(_z(1, 0))
    maps = [torch.zeros(1, 1, *s) for s in noisy.synthesis.noise_shapes()]
    with pytest.raises(ValueError, match="expected 7 noise maps, got 6"):
        noisy.synthesis(ws, noise=maps[:-1])
    with pytest.raises(ValueError, match="expected 7 noise maps, got 8"):
        noisy.synthesis(ws, noise=maps + maps[:1])
    with pytest.raises(AssertionError):  # right count, wrong size
        noisy.synthesis(ws, noise=maps[::-1])


# ----------------------------------------------------------------------------------------------------- mixing


def test_mix_styles_int_crossover():
    a = torch.zeros(3, 8, 4)
    b = torch.ones(3, 8, 4)
    m = mix_styles(a, b, 5)
    assert torch.equal(m[:, :5], a[:, :5]) and torch.equal(m[:, 5:], b[:, 5:])
    assert torch.equal(mix_styles(a, b, 0), b)
    assert torch.equal(mix_styles(a, b, 8), a)


def test_mix_styles_per_sample_crossover():
    a = torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(0))
    b = torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(1))
    cross = torch.tensor([0, 3, 8])
    m = mix_styles(a, b, cross)
    for n, c in enumerate(cross.tolist()):
        assert torch.equal(m[n, :c], a[n, :c]) and torch.equal(m[n, c:], b[n, c:])


def test_mixed_ws_change_the_image_only_from_the_crossover_on(tiny):
    """A crossover at the last w only changes the final toRGB: the image differs, but less than a full swap."""
    wa, wb = tiny.mapping(_z(1, 0)), tiny.mapping(_z(1, 1))
    with torch.no_grad():
        ia, ib = tiny.synthesis(wa), tiny.synthesis(wb)
        assert torch.equal(tiny.synthesis(mix_styles(wa, wb, tiny.num_ws)), ia)
        assert torch.equal(tiny.synthesis(mix_styles(wa, wb, 0)), ib)
        late = tiny.synthesis(mix_styles(wa, wb, tiny.num_ws - 1))
    assert not torch.equal(late, ia)
    assert (late - ia).abs().mean() < (ib - ia).abs().mean()


# ------------------------------------------------------------------------------------------------ fused path


@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_fused_and_non_fused_generator_agree(tiny, noise_mode):
    ws = tiny.mapping(_z(3, 4))
    with torch.no_grad():
        a = tiny.synthesis(ws, noise_mode, fused=False)
        b = tiny.synthesis(ws, noise_mode, fused=True)
    # ~1e-5 per layer, accumulated over 7 layers and the skip sum of an image with values up to ~10
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------ render helpers (render.py)


def test_style_range_layers_64px():
    G = Generator(_small_cfg(resolution=64, channel_base=256), seed=0)
    assert G.num_ws == 10
    assert style_range_layers(G, "coarse") == [0, 1, 2]
    assert style_range_layers(G, "middle") == [3, 4, 5, 6]
    assert style_range_layers(G, "fine") == [7, 8, 9]


def test_style_range_layers_tiny_has_no_fine(tiny):
    assert style_range_layers(tiny, "coarse") == [0, 1, 2]
    assert style_range_layers(tiny, "middle") == [3, 4, 5, 6, 7]
    assert style_range_layers(tiny, "fine") == []


@pytest.mark.parametrize(
    "text,expected",
    [("0-3,7", [0, 1, 2, 3, 7]), ("5", [5]), (" 1 , 2-3 ", [1, 2, 3]), ("4-4", [4]), ("10-11,0", [10, 11, 0])],
)
def test_parse_seeds(text, expected):
    assert parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["", "a", "1-", "-3", "3-1", "1,,2", "1.5", "0-100000", "4294967296", "1;2"])
def test_parse_seeds_rejects_bad_input(text):
    with pytest.raises(SGProjectError) as e:
        parse_seeds(text)
    assert "\n" not in str(e.value)


def test_to_uint8_and_grid():
    img = torch.tensor([-1.0, 0.0, 1.0, 5.0]).reshape(1, 1, 2, 2)
    assert to_uint8(img)[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    tiles = [np.full((4, 5, 3), i, np.uint8) for i in range(5)]
    grid = make_grid(tiles)
    assert grid.shape == (8, 15, 3)
    assert grid[4, 0, 0] == 3 and grid[4, 10, 0] == 255  # row 2 holds tiles 3, 4 and padding fill
