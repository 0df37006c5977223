"""The encoder (projector/encoder.py, projector/encoder_train.py) and projection from its guess, on the `tiny` model
(32 px, CPU) with the deterministic random LPIPS backbone.

What is promised: the file round-trips and refuses another generator; a resumed training run repeats an
uninterrupted one; after a short training the guess is closer to the true w than w_avg is, on images the encoder
never saw; `project(init='encoder')` starts each image at that guess (a lower first-step distance than from
w_avg); the projector's fingerprint tells w_avg, encoder and different encoders apart, and is unchanged when the
encoder is not used.
"""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from generator.checkpoint import ModelInfo, save_generator
from generator.util.errors import CheckpointError
from generator.util.imaging import to_tensor, to_uint8
from projector.encoder import (
    Encoder,
    EncoderConfig,
    EncoderError,
    EncoderMismatchError,
    load_encoder,
    num_parameters,
    read_encoder_header,
    save_encoder,
)
from projector.encoder_train import EncoderTrainConfig, augment, state_path_for, train_encoder
from projector.project import ProjectionError, ProjectorConfig, project, w_statistics

SMALL = EncoderConfig(channel_base=256, channel_max=64, hidden=128)  # for 32 px: 8, 16, 32, 64 channels
NO_AUGMENT = EncoderTrainConfig(truncation_prob=0, mixing_prob=0, random_noise_prob=0, crop_prob=0, resize_prob=0,
                                color_prob=0, noise_prob=0, jpeg_prob=0)


@pytest.fixture(scope="module")
def tiny_info():
    from generator import load_generator

    return load_generator("tiny", "cpu")[1]


def random_encoder(G, config=SMALL, seed=1) -> Encoder:
    """An encoder whose output layer is not zero (an untrained one always guesses w_avg)."""
    E = Encoder(config, resolution=G.img_resolution, w_dim=G.w_dim, num_ws=G.num_ws)
    E.set_w_statistics(*w_statistics(G))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        E.out.weight.copy_(torch.randn(E.out.weight.shape, generator=gen) * 0.05)
    return E.eval()


def held_out(G, n=24, first_seed=5_000_000):
    """Generated images from seeds the training never draws (it draws z from per-step generators), through uint8,
    with their true w. ([N, 3, R, R], [N, w_dim])"""
    z = torch.cat([G.z_from_seed(s) for s in range(first_seed, first_seed + n)])
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
        x = G.synthesis(w[:, None].expand(-1, G.num_ws, -1))
    return to_tensor(list(to_uint8(x))), w


@pytest.fixture(scope="module")
def trained(tiny, tiny_info, perceptual, tmp_path_factory):
    """A small encoder trained for 120 steps of 32 clean images on the w loss and a little LPIPS (~30 s on one
    core)."""
    out = tmp_path_factory.mktemp("enc") / "tiny.encoder.safetensors"
    cfg = dataclasses.replace(NO_AUGMENT, lr=2e-2, lpips_batch=2)
    r = train_encoder(tiny, tiny_info, perceptual, out=out, steps=120, batch=32, config=SMALL, train_config=cfg,
                      checkpoint_every=0)
    assert r.event == "done" and r.step == 120 and r.path == out
    return r.encoder


# ------------------------------------------------------------------------------------------------- the network


def test_shapes_size_and_untrained_guess_is_w_avg(tiny):
    w_avg, w_std = w_statistics(tiny)
    for w_plus in (False, True):
        E = Encoder(EncoderConfig(w_plus=w_plus), resolution=32, w_dim=tiny.w_dim, num_ws=tiny.num_ws)
        E.set_w_statistics(w_avg, w_std)
        x = torch.rand(3, 3, 32, 32) * 2 - 1
        g = E.guess(x)
        assert g.shape == ((3, tiny.num_ws, tiny.w_dim) if w_plus else (3, tiny.w_dim))
        assert torch.equal(g, w_avg.expand_as(g))  # the last layer starts at zero
    # The default network for the bundled model's 64 px, 128-d w: well under 2M parameters.
    assert num_parameters(Encoder(EncoderConfig(), resolution=64, w_dim=128, num_ws=10)) < 2_000_000
    with pytest.raises(EncoderError, match="power-of-2"):
        Encoder(EncoderConfig(), resolution=48, w_dim=8, num_ws=4)


def test_save_load_round_trip(tiny, tiny_info, tmp_path):
    E = random_encoder(tiny, EncoderConfig(channel_base=256, channel_max=64, hidden=64, w_plus=True))
    path = save_encoder(E, tmp_path / "e.safetensors", tiny_info, training={"steps": 7})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "e.safetensors"]  # no temporary files left
    header = read_encoder_header(path)
    assert json.loads((tmp_path / "e.json").read_text()) == header
    assert header["generator"] == {"name": "tiny", "sha256": tiny_info.sha256}
    assert header["config"]["w_plus"] is True and header["training"] == {"steps": 7}
    assert header["geometry"] == {"resolution": 32, "w_dim": tiny.w_dim, "num_ws": tiny.num_ws, "img_channels": 3}
    F = load_encoder(path, tiny_info)
    assert F.info == header and F.identity() == E.identity() == header["identity"]
    assert not any(p.requires_grad for p in F.parameters()) and not F.training
    for k, v in E.state_dict().items():
        assert torch.equal(v, F.state_dict()[k]), k
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(E.guess(x), F.guess(x))


def test_refuses_another_generator_and_other_files(tiny, tiny_info, tmp_path):
    path = save_encoder(random_encoder(tiny), tmp_path / "e.safetensors", tiny_info)
    other = ModelInfo(name="portraits-64", path=None, sha256="ab" * 32)
    with pytest.raises(EncoderMismatchError) as e:
        load_encoder(path, other)
    assert tiny_info.sha256 in str(e.value) and other.sha256 in str(e.value) and "train-encoder" in str(e.value)
    with pytest.raises(CheckpointError, match="not 'sgproject-encoder'"):
        load_encoder(save_generator(tiny, tmp_path / "g.safetensors"), tiny_info)  # a generator is not an encoder
    with pytest.raises(CheckpointError, match="no such encoder file"):
        load_encoder(tmp_path / "missing.safetensors", tiny_info)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError):
        load_encoder(tmp_path / "cut.safetensors", tiny_info)


# ------------------------------------------------------------------------------------------------- training


def test_augment_is_seeded_and_switchable():
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    on = EncoderTrainConfig(crop_prob=1, resize_prob=1, color_prob=1, noise_prob=1, jpeg_prob=1)
    a = augment(x, torch.Generator().manual_seed(3), on)
    b = augment(x, torch.Generator().manual_seed(3), on)
    c = augment(x, torch.Generator().manual_seed(4), on)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(to_tensor(list(to_uint8(a))), a)  # through uint8, as a saved file
    assert float((a - x).abs().mean()) > 0.02  # every degradation on: visibly changed
    # Everything off: only the uint8 rounding.
    off = augment(x, torch.Generator().manual_seed(3), NO_AUGMENT)
    assert torch.equal(off, to_tensor(list(to_uint8(x))))
    with pytest.raises(EncoderError, match="jpeg_prob"):
        EncoderTrainConfig(jpeg_prob=1.5)


def test_resume_repeats_an_uninterrupted_run(tiny, tiny_info, perceptual, tmp_path):
    kw = dict(batch=4, config=SMALL, train_config=EncoderTrainConfig(lpips_batch=2), seed=5, checkpoint_every=0)
    full = train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "a.safetensors", steps=4, **kw)

    calls, polls = [], []

    def stop_after_two() -> bool:  # polled after every step, as Ctrl-C is
        polls.append(1)
        return len(polls) >= 2

    part = train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "b.safetensors", steps=4, **kw,
                         progress=calls.append, should_stop=stop_after_two)
    assert (part.event, part.step) == ("interrupted", 2)
    assert [t.event for t in calls] == ["step", "interrupted"] and calls[-1].checkpoint == str(part.path)
    assert state_path_for(part.path).is_file() and read_encoder_header(part.path)["training"]["steps"] == 2
    with pytest.raises(EncoderError, match="already exists"):
        train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "b.safetensors", steps=4, **kw)
    with pytest.raises(EncoderError, match="seed"):
        train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "b.safetensors", steps=4, resume=True, seed=6)
    other = ModelInfo(name="other", path=None, sha256="cd" * 32)
    with pytest.raises(EncoderMismatchError, match=other.sha256):
        train_encoder(tiny, other, perceptual, out=tmp_path / "b.safetensors", steps=4, resume=True)

    resumed = train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "b.safetensors", steps=4, resume=True)
    assert (resumed.event, resumed.step) == ("done", 4)
    a, b = full.encoder.state_dict(), resumed.encoder.state_dict()
    assert any(not torch.equal(v, part.encoder.state_dict()[k]) for k, v in a.items()), "steps 3-4 changed nothing"
    for k in a:
        assert torch.equal(a[k], b[k]), k  # the same draws, the same float operations: bit for bit
    header = read_encoder_header(tmp_path / "b.safetensors")
    assert header["training"]["steps"] == 4 and header["training"]["images"] == 16
    assert header["training"]["perceptual"] == perceptual.identity


def _later_snapshot(G, scale=0.02, seed=3):
    """G with every weight moved a little, as a later snapshot of the same training run is; and its identity."""
    H = copy.deepcopy(G)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in H.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean().clamp_min(1e-3))  # scalars too
    return H, ModelInfo(name="tiny-later", path=None, sha256="ef" * 32)


def test_warm_start_from_an_encoder_of_an_earlier_snapshot(tiny, tiny_info, trained, perceptual, tmp_path):
    """--init: a new encoder for new weights starts from the old encoder (this generator's w statistics in place
    of the old one's) and records where it started; after the same two steps it guesses the new generator's images
    far better than a fresh network does."""
    old = save_encoder(trained, tmp_path / "old.safetensors", tiny_info, training={"steps": 120})
    H, info = _later_snapshot(tiny)
    kw = dict(steps=2, batch=8, train_config=NO_AUGMENT, checkpoint_every=0)
    warm = train_encoder(H, info, perceptual, out=tmp_path / "warm.safetensors", init=old, **kw)
    fresh = train_encoder(H, info, perceptual, out=tmp_path / "fresh.safetensors", config=SMALL, **kw)
    header = read_encoder_header(warm.path)
    assert header["generator"]["sha256"] == info.sha256 and header["config"] == SMALL.to_dict()  # its own config
    assert header["training"]["init"] == {"identity": trained.identity(), "steps": 120,
                                          "generator": {"name": "tiny", "sha256": tiny_info.sha256}}
    w_avg, w_std = w_statistics(H)
    assert torch.equal(warm.encoder.w_avg, w_avg) and float(warm.encoder.w_std) == pytest.approx(w_std)
    x, w_true = held_out(H)
    d = {name: float(((r.encoder.guess(x) - w_true).norm(dim=1) / w_std).mean()) for name, r in
         (("warm", warm), ("fresh", fresh))}
    assert d["warm"] < 0.9 * d["fresh"], d
    load_encoder(warm.path, info)  # an encoder for the new weights, usable for detection


def test_warm_start_refuses_what_does_not_fit(tiny, tiny_info, trained, perceptual, tmp_path):
    old = save_encoder(trained, tmp_path / "old.safetensors", tiny_info)
    kw = dict(steps=1, batch=4, checkpoint_every=0)
    with pytest.raises(EncoderError, match="network"):
        train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "a.safetensors", init=old,
                      config=dataclasses.replace(SMALL, hidden=64), **kw)
    wide = Encoder(SMALL, resolution=64, w_dim=tiny.w_dim, num_ws=tiny.num_ws)
    other = save_encoder(wide, tmp_path / "wide.safetensors", tiny_info)
    with pytest.raises(EncoderError, match="geometry"):
        train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "b.safetensors", init=other, **kw)
    train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "c.safetensors", init=old, **kw)
    with pytest.raises(EncoderError, match="new run"):
        train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "c.safetensors", init=old, resume=True, **kw)
    with pytest.raises(CheckpointError):
        train_encoder(tiny, tiny_info, perceptual, out=tmp_path / "d.safetensors", init=tmp_path / "none", **kw)


def test_guess_beats_w_avg_on_unseen_generated_images(tiny, trained):
    x, w_true = held_out(tiny)
    w_avg, w_std = w_statistics(tiny)
    guess = trained.guess(x)
    d_enc = (guess - w_true).norm(dim=1) / w_std  # [N], in units of w_std
    d_avg = (w_avg - w_true).norm(dim=1) / w_std
    # Measured: mean MEAN_ENC against MEAN_AVG (w_avg); closer than w_avg for K of 24 images.
    assert float(d_enc.mean()) < 0.92 * float(d_avg.mean()), (d_enc.mean(), d_avg.mean())
    assert int((d_enc < d_avg).sum()) >= 18, (d_enc, d_avg)
    print(f"held-out distance to the true w (w_std units): {float(d_enc.mean()):.3f} from the guess, "
          f"{float(d_avg.mean()):.3f} from w_avg; closer for {int((d_enc < d_avg).sum())} of {len(d_enc)}")


# ------------------------------------------------------------------------------------------------- projection


def test_projection_starts_at_the_guess(tiny, trained, perceptual):
    x, _ = held_out(tiny, n=6, first_seed=6_000_000)
    kw = dict(num_steps=3, seed=0, perceptual=perceptual, initial_noise_factor=0.0)
    plain = project(tiny, x, **kw)
    cfg = ProjectorConfig(num_steps=3, initial_noise_factor=0.0).using_encoder(trained)
    enc = project(tiny, x, config=cfg, seed=0, perceptual=perceptual, encoder=trained)
    # Step 0 runs at learning rate 0: its distance is that of the start.
    first_plain = np.array([p.trace[0]["lpips"] for p in plain])
    first_enc = np.array([p.trace[0]["lpips"] for p in enc])
    assert first_enc.mean() < 0.8 * first_plain.mean(), (first_enc, first_plain)
    # Measured: lower for 6 of 6.
    assert (first_enc < first_plain).sum() >= 5, (first_enc, first_plain)
    # Through the overrides, W+ (the W guess on every layer) and with sampled candidates too.
    wp = project(tiny, x[:2], num_steps=1, seed=0, perceptual=perceptual, init="encoder", encoder=trained,
                 space="w+", initial_noise_factor=0.0, lr=0.0)
    guess = trained.guess(x[:2])
    for p, g in zip(wp, guess):
        torch.testing.assert_close(p.w, g.expand(tiny.num_ws, -1), rtol=0, atol=0)
    both = project(tiny, x[:2], num_steps=1, seed=0, perceptual=perceptual, init="encoder", encoder=trained,
                   init_samples=4, initial_noise_factor=0.0)
    for a, b in zip(both, enc[:2]):  # the guess is one of the candidates: never a worse start
        assert a.trace[0]["lpips"] <= b.trace[0]["lpips"] + 1e-6


def test_wplus_encoder_starts_wplus_and_its_mean_in_w(tiny, perceptual):
    E = random_encoder(tiny, EncoderConfig(channel_base=256, channel_max=64, hidden=64, w_plus=True))
    x, _ = held_out(tiny, n=2)
    guess = E.guess(x)  # [2, num_ws, w_dim]
    kw = dict(num_steps=1, seed=0, perceptual=perceptual, init="encoder", encoder=E, initial_noise_factor=0.0, lr=0.0)
    for p, g in zip(project(tiny, x, space="w+", **kw), guess):
        torch.testing.assert_close(p.w, g, rtol=0, atol=0)
    for p, g in zip(project(tiny, x, space="w", **kw), guess):
        torch.testing.assert_close(p.w, g.mean(0).expand_as(g), rtol=0, atol=0)


def test_encoder_settings_are_checked_and_fingerprinted(tiny, perceptual):
    x, _ = held_out(tiny, n=1)
    E, F = random_encoder(tiny, seed=1), random_encoder(tiny, seed=2)
    with pytest.raises(ProjectionError, match="needs an encoder"):
        project(tiny, x, num_steps=1, perceptual=perceptual, init="encoder")
    with pytest.raises(ProjectionError, match="init='encoder'"):
        project(tiny, x, num_steps=1, perceptual=perceptual, encoder=E)
    with pytest.raises(ProjectionError, match="name encoder"):
        project(tiny, x, config=ProjectorConfig(num_steps=1).using_encoder(E), perceptual=perceptual, encoder=F)
    big = Encoder(SMALL, resolution=64, w_dim=tiny.w_dim, num_ws=10)
    with pytest.raises(ProjectionError, match="64 px"):
        project(tiny, x, num_steps=1, perceptual=perceptual, init="encoder", encoder=big)
    with pytest.raises(ProjectionError, match="init must be"):
        ProjectorConfig(init="samples")
    with pytest.raises(ProjectionError, match="encoder_sha256"):
        ProjectorConfig(encoder_sha256="abc")
    with pytest.raises(ProjectionError, match="using_encoder"):
        ProjectorConfig(init="encoder").fingerprint()

    base = ProjectorConfig(num_steps=200)
    # Unchanged when the encoder is not used: the shipped calibration's fingerprint (200 steps, W, from w_avg).
    assert base.fingerprint() == "5ec96f52511d2062"
    prints = {base.fingerprint(), base.using_encoder(E).fingerprint(), base.using_encoder(F).fingerprint()}
    assert len(prints) == 3
    assert base.using_encoder(E).fingerprint() == ProjectorConfig(num_steps=200).using_encoder(E).fingerprint()

