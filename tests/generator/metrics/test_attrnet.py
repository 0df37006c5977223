"""The portrait attribute network: labels cover the renderer, the shipped weights read portraits, FID in its space."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.data.portraits import render_portrait, sample_params
from generator.metrics.attrnet import (
    CATEGORICAL, NUM_REGRESSION, WEIGHTS, AttributeNetError, PortraitAttributeNet, accuracy, labels_of,
    load_attribute_net, save_attribute_net,
)
from generator.metrics.features import load_feature_network
from generator.metrics.fid import FeatureStats, frechet_distance
from generator.util.imaging import to_tensor

HELD_OUT_SET, HELD_OUT_START = 1, 40_000  # neither network trained on these


def test_every_attribute_the_renderer_draws_has_a_class():
    cls, reg = labels_of([sample_params(s, i) for s in (0, 1) for i in range(600)])
    assert (cls >= 0).all(), "sample_params drew a value that generator.metrics.attrnet does not know"
    assert cls.shape == (1200, len(CATEGORICAL)) and reg.shape == (1200, NUM_REGRESSION)
    assert torch.isfinite(reg).all() and reg.abs().max() < 5  # scaled to about unit range


@pytest.fixture(scope="module")
def held_out():
    px = np.stack([render_portrait(HELD_OUT_SET, HELD_OUT_START + i, 64)[0] for i in range(96)])
    cls, _ = labels_of([sample_params(HELD_OUT_SET, HELD_OUT_START + i) for i in range(96)])
    return px, cls


def test_shipped_network_reads_held_out_portraits(held_out):
    net = load_attribute_net()
    assert net.identity.startswith("portraits-attr:") and net.dim == 256
    px, cls = held_out
    acc = accuracy(net, to_tensor(px), cls)
    # Chance is 1/3 to 1/14 for most of these; the large attributes are read nearly always (held-out accuracy
    # of the shipped weights on 1000 images: glasses 0.99, hat 1.00, head shape 0.95, clothing 0.92, mean 0.83).
    for name in ("glasses", "hat", "head_shape", "clothing", "hair_style"):
        assert acc[name] >= 0.8, (name, acc)
    assert np.mean(list(acc.values())) >= 0.75, acc


def test_features_take_uint8_and_float_at_any_size(held_out):
    net = load_feature_network("portraits")
    px, _ = held_out
    u8 = torch.from_numpy(px[:4]).permute(0, 3, 1, 2).contiguous()
    f1 = net(u8)
    f2 = net(u8.float() / 127.5 - 1)
    assert f1.shape == (4, 256) and torch.allclose(f1, f2, atol=1e-5)
    big = torch.nn.functional.interpolate(u8.float() / 127.5 - 1, size=128, mode="bilinear", align_corners=False)
    assert net(big).shape == (4, 256)


def test_fid_in_its_space_tells_portraits_from_damaged_portraits():
    # 150 per set (measured on two draws: same 211 and 244, without colour 578 and over 2x; a mild blur is NOT
    # reliably seen, 306 and 256: the renderer varies blur, so the network learnt to ignore it)
    net = load_feature_network("portraits")
    px = np.stack([render_portrait(HELD_OUT_SET, HELD_OUT_START + 1000 + i, 64)[0] for i in range(300)])
    a, b = to_tensor(px[:150]), to_tensor(px[150:])
    grey = b.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # the same portraits without colour

    def stats(x):
        s = FeatureStats(256)
        with torch.no_grad():
            s.add(net(x))
        return s.mean_cov()

    ref = stats(a)
    same = frechet_distance(*ref, *stats(b))
    assert frechet_distance(*ref, *stats(grey)) > 2 * same


def test_missing_or_foreign_weights_are_refused(tmp_path):
    with pytest.raises(AttributeNetError, match="not found"):
        load_attribute_net(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(AttributeNetError, match="not a portrait attribute network"):
        load_attribute_net(foreign)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = PortraitAttributeNet().eval()
    p = save_attribute_net(net, tmp_path / "a.safetensors", {"note": "test"})
    back = load_attribute_net(p)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(net(x), back(x)) and back.info == {"note": "test"}
    assert WEIGHTS.name == "portraits-attr.safetensors"
