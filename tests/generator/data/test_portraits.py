"""The procedural portrait renderer: determinism, geometry (FFHQ layout + pose), variety, dataset, writer, CLI."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

import generator.data.portraits as portraits
from generator.util.errors import SGProjectError
from generator.data.portraits import (
    LEFT_EYE, MOUTH, RIGHT_EYE, PortraitParams, PortraitsDataset, render_params, render_portrait, sample_params,
    to_pixels, write_portraits,
)


def test_same_seed_and_index_give_identical_bytes():
    a, pa = render_portrait(0, 5)
    b, pb = render_portrait(0, 5)
    assert a.tobytes() == b.tobytes()
    assert pa == pb
    c, _ = render_portrait(0, 6)
    d, _ = render_portrait(1, 5)
    assert np.abs(a.astype(int) - c).mean() > 5
    assert np.abs(a.astype(int) - d).mean() > 5


def test_order_independent():
    forward = [render_portrait(3, i, 32)[0] for i in (0, 1, 2)]
    backward = [render_portrait(3, i, 32)[0] for i in (2, 1, 0)][::-1]
    for f, b in zip(forward, backward, strict=True):
        assert np.array_equal(f, b)


@pytest.mark.parametrize("res", [32, 48, 64, 100])
def test_shapes_dtypes_and_params(res):
    img, p = render_portrait(7, 3, res)
    assert img.shape == (res, res, 3) and img.dtype == np.uint8
    assert (p["seed"], p["index"], p["res"]) == (7, 3, res)
    assert json.loads(json.dumps(p)) == p  # JSON-serialisable as is
    for key in ("left_eye", "right_eye", "mouth"):
        assert len(p[key]) == 2 and all(0 <= c < res for c in p[key])
    assert 10 < img.mean() < 245 and img.std() > 10  # not blank


def test_params_round_trip_through_their_dict_form():
    """PortraitParams <-> its JSON form: nothing lost, and a params.jsonl row renders the same image again."""
    for i in range(8):
        P = sample_params(3, i)
        d = P.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert PortraitParams.from_dict(d) == P
    img, labels = render_portrait(3, 5, 32)
    assert {k: v for k, v in labels.items() if k not in portraits.LABEL_KEYS} == sample_params(3, 5).to_dict()
    P = PortraitParams.from_dict(labels)  # the labels beside the parameters are ignored
    assert P == sample_params(3, 5)
    assert np.array_equal(render_params(P, 32), img)
    with pytest.raises(ValueError, match="unknown portrait parameters"):
        PortraitParams.from_dict({**labels, "bogus": 1})


def test_res_below_minimum_is_refused():
    with pytest.raises(ValueError):
        render_portrait(0, 0, 16)


def test_same_portrait_at_every_resolution():
    small, ps = render_portrait(0, 9, 64)
    big, pb = render_portrait(0, 9, 128)
    for k in ("hair", "skin", "eyes", "lips", "pose", "background"):
        assert ps[k] == pb[k]
    down = cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(down.astype(int) - small).mean() < 6


def test_canonical_geometry_is_the_ffhq_crop():
    identity = {"angle_deg": 0.0, "scale": 1.0, "offset": [0.0, 0.0]}
    px = to_pixels([LEFT_EYE, RIGHT_EYE, MOUTH], identity, 1000)
    np.testing.assert_allclose(px, [[375.5, 468.5], [624.5, 468.5], [499.5, 702.5]])


def test_landmarks_follow_the_pose():
    for i in range(16):
        _, p = render_portrait(0, i, 64)
        pose = p["pose"]
        assert abs(pose["angle_deg"]) <= 8 and abs(pose["scale"] - 1) <= 0.08
        assert max(abs(o) for o in pose["offset"]) <= 0.04
        le, re, mo = (np.array(p[k]) for k in ("left_eye", "right_eye", "mouth"))
        assert le[0] < re[0]  # left eye is the one with smaller x
        d = re - le
        assert math.hypot(*d) == pytest.approx(0.249 * pose["scale"] * 64, rel=1e-3)
        assert math.degrees(math.atan2(d[1], d[0])) == pytest.approx(pose["angle_deg"], abs=0.05)
        # The mouth sits below the eye midpoint, perpendicular to the eye line, at the canonical distance.
        down = mo - (le + re) / 2
        assert math.hypot(*down) == pytest.approx(0.234 * pose["scale"] * 64, rel=2e-3)
        assert abs(np.dot(down, d)) / (math.hypot(*down) * math.hypot(*d)) < 5e-3


def _window(img, xy, r):
    x, y = (int(round(c)) for c in xy)
    return img[y - r:y + r + 1, x - r:x + r + 1].astype(np.float32)


def test_landmarks_land_on_the_eyes_and_mouth():
    """At the returned coordinates there is an eye (pupil, sclera, lids) or a mouth, unlike plain cheek skin."""
    res, checked = 256, 0
    for i in range(40):
        p = sample_params(0, i).to_dict()
        if (p["glasses"] and p["glasses"]["sunglasses"]) or p["facial_hair"] != "none" or p["cheeks"]["freckles"]:
            continue  # dark lenses hide the eyes; beards and freckles texture the cheeks
        img, p = render_portrait(0, i, res)
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        cheek = to_pixels([(0.36, 0.585)], p["pose"], res)[0]
        skin = _window(grey, cheek, 5)
        for key in ("left_eye", "right_eye"):
            eye = _window(grey, p[key], 6)
            assert eye.std() > 2.5 * skin.std() + 4, (i, key)
            assert eye.min() < 0.6 * np.median(skin), (i, key)  # the pupil
        mouth = _window(img, p["mouth"], 5).reshape(-1, 3)
        assert np.abs(mouth.mean(0) - _window(img, cheek, 5).reshape(-1, 3).mean(0)).max() > 12, i
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_variety_across_64_images():
    ps = [sample_params(0, i).to_dict() for i in range(64)]
    assert len({p["hair"]["style"] for p in ps}) >= 7
    assert len({p["hair"]["colour"] for p in ps}) >= 6
    assert len({p["hair"]["texture"] for p in ps}) == 3
    assert any(p["hair"]["fringe"] for p in ps)
    assert len({p["background"]["kind"] for p in ps}) >= 5
    assert len({p["lips"]["expression"] for p in ps}) >= 4
    assert len({p["head"]["shape"] for p in ps}) >= 4
    assert len({p["clothing"]["kind"] for p in ps}) >= 4
    assert len({p["eyes"]["iris"] for p in ps}) >= 4
    assert sum(p["glasses"] is not None for p in ps) >= 5
    assert sum(p["hat"] is not None for p in ps) >= 3
    assert sum(p["earrings"] is not None for p in ps) >= 3
    tones = [p["skin"]["tone"] for p in ps]
    assert max(tones) - min(tones) > 0.8
    gaze_x = [p["eyes"]["gaze"][0] for p in ps]
    assert min(gaze_x) < -0.5 and max(gaze_x) > 0.5


def test_dataset_items():
    ds = PortraitsDataset(4, res=32, seed=1)
    assert len(ds) == 4
    x = ds[2]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    img, _ = render_portrait(1, 2, 32)
    assert torch.equal(x, torch.from_numpy(img).permute(2, 0, 1))
    assert torch.equal(ds[-1], ds[3])
    with pytest.raises(IndexError):
        ds[4]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 32, 32)


def _read_png(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_write_portraits_writes_pngs_and_params(tmp_path):
    calls = []
    path = write_portraits(tmp_path, n=5, res=32, seed=2, progress=lambda d, t: calls.append((d, t)))
    assert path == tmp_path / "params.jsonl"
    assert sorted(f.name for f in tmp_path.glob("*.png")) == [f"{i:06d}.png" for i in range(5)]
    rows = _lines(path)
    assert [r["index"] for r in rows] == list(range(5))
    img, params = render_portrait(2, 3, 32)
    assert np.array_equal(_read_png(tmp_path / "000003.png"), img)
    assert rows[3] == params
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    assert not list(tmp_path.glob(".tmp-*"))


def test_write_portraits_resumes_without_rewriting(tmp_path, monkeypatch):
    write_portraits(tmp_path, n=6, res=32, seed=0)
    # Simulate an interrupted run: two images missing, one params line lost, a torn last line and a temp file.
    (tmp_path / "000001.png").unlink()
    (tmp_path / "000004.png").unlink()
    rows = (tmp_path / "params.jsonl").read_text().splitlines()
    (tmp_path / "params.jsonl").write_text("\n".join(rows[:2] + rows[3:]) + "\n" + rows[5][:20])
    (tmp_path / ".tmp-123-000004.png").write_bytes(b"\x89PNG trunc")
    before = {i: (tmp_path / f"{i:06d}.png").stat().st_mtime_ns for i in (0, 2, 3, 5)}

    rendered = []
    real = portraits.render_portrait
    monkeypatch.setattr(portraits, "render_portrait", lambda s, i, r: rendered.append(i) or real(s, i, r))
    path = write_portraits(tmp_path, n=6, res=32, seed=0)

    assert sorted(rendered) == [1, 4]  # only the missing images were drawn
    assert {i: (tmp_path / f"{i:06d}.png").stat().st_mtime_ns for i in (0, 2, 3, 5)} == before
    assert [r["index"] for r in _lines(path)] == list(range(6))
    assert _lines(path)[2] == real(0, 2, 32)[1]  # the lost params line came back
    assert not list(tmp_path.glob(".tmp-*"))
    # A later shard appends to the same folder.
    write_portraits(tmp_path, n=2, res=32, seed=0, start=6)
    assert [r["index"] for r in _lines(path)] == list(range(8))


def test_write_portraits_refuses_a_folder_of_another_set(tmp_path):
    write_portraits(tmp_path, n=1, res=32, seed=0)
    with pytest.raises(SGProjectError, match="another set"):
        write_portraits(tmp_path, n=1, res=32, seed=1)


def test_write_portraits_with_workers_matches_in_process(tmp_path):
    write_portraits(tmp_path / "a", n=4, res=32, seed=4, workers=0)
    write_portraits(tmp_path / "b", n=4, res=32, seed=4, workers=2)
    for i in range(4):
        name = f"{i:06d}.png"
        assert np.array_equal(_read_png(tmp_path / "a" / name), _read_png(tmp_path / "b" / name))
    assert (tmp_path / "a" / "params.jsonl").read_text() == (tmp_path / "b" / "params.jsonl").read_text()


def test_cli_make_dataset_portraits(tmp_path):
    from typer.testing import CliRunner

    from sgproject import cmd_dataset  # noqa: F401  (registers the command)
    from sgproject.app import app

    out = tmp_path / "faces"
    result = CliRunner().invoke(app, ["make-dataset", "portraits", str(out), "--n", "8", "--res", "32", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.png"))) == 8
    assert len(_lines(out / "params.jsonl")) == 8
    assert str(out) in result.stdout and "8" in result.stdout

    again = CliRunner().invoke(app, ["make-dataset", "portraits", str(out), "--n", "8", "--res", "32", "--seed", "2"])
    assert again.exit_code == 2  # another set in the folder: a one-line error, not a traceback

    helped = CliRunner().invoke(app, ["make-dataset", "portraits", "--help"])
    assert helped.exit_code == 0 and "Examples" in helped.output
