"""Face alignment: FFHQ geometry and resampling on exactly known landmarks, the Haar aligner on a real photo, the
centre-crop fallback, the CLI. The dlib-68 aligner and the fallback to Haar without it: test_align_dlib.py."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from detectors.align import (
    CANONICAL_LANDMARKS, Alignment, Landmarks, align_face, ffhq_crop, ffhq_pad, ffhq_quad, ffhq_shrink, haar_landmarks,
    quad_to_output, warp_quad,
)
from generator.data.portraits import render_portrait
from sgproject.cli import app  # the real entry point, with every command registered

R = 256  # output resolution of the geometry tests
NAMES = ("left_eye", "right_eye", "mouth")


# ------------------------------------------------------------------------------------------------- helpers


def similarity(angle_deg: float, scale: float, shift, centre) -> np.ndarray:
    """[2, 3] rotation by angle (counter-clockwise on screen) and scale about `centre`, then a shift."""
    M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle_deg, scale)
    M[:, 2] += shift
    return M


def apply(M: np.ndarray, p) -> tuple[float, float]:
    return tuple(float(v) for v in M @ (p[0], p[1], 1.0))


def transform(rgb: np.ndarray, M: np.ndarray, size=None, border=cv2.BORDER_REFLECT) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, M, size or (w, h), flags=cv2.INTER_LINEAR, borderMode=border)


def in_output(al: Alignment, p) -> np.ndarray:
    """Where source point p lands in the aligned image (pixel centres at integers)."""
    return quad_to_output(al.quad, al.image.shape[0]) @ (p[0], p[1], 1.0)


def canonical_px(name: str, res: int = R) -> np.ndarray:
    return np.array(CANONICAL_LANDMARKS[name]) * res - 0.5


def tilt_deg(a, b) -> float:
    return math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # [512, 512, 3] uint8, one face


@pytest.fixture(scope="module")
def astronaut_aligned(astronaut) -> Alignment:
    return align_face(astronaut, R, aligner="haar")


# ------------------------------------------------------------------------------------------ pure geometry


def test_ffhq_quad_upright_canonical_face():
    # A symmetric upright face: the FFHQ square is axis-aligned, 4 eye distances wide (the eye distance wins over
    # the eye-to-mouth distance here), and centred a tenth of the way from the eyes to the mouth.
    lm = {"left_eye": np.array([375.0, 469.0]), "right_eye": np.array([625.0, 469.0]),
          "mouth": np.array([500.0, 703.0])}
    q = ffhq_quad(lm["left_eye"], lm["right_eye"], lm["mouth"])
    assert q.shape == (4, 2)
    side = 4 * (lm["right_eye"][0] - lm["left_eye"][0])
    eye_avg = (lm["left_eye"] + lm["right_eye"]) / 2
    c = eye_avg + 0.1 * (lm["mouth"] - eye_avg)
    np.testing.assert_allclose(q, c + np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) * side / 2, atol=1e-9)


def test_ffhq_quad_is_equivariant_under_similarity_transforms():
    rng = np.random.default_rng(1)
    pts = [np.array(v) * 300 + 50 for v in CANONICAL_LANDMARKS.values()]
    for _ in range(10):
        M = similarity(rng.uniform(-40, 40), rng.uniform(0.5, 2), rng.uniform(-60, 60, 2), (200, 200))
        moved = ffhq_quad(*(apply(M, p) for p in pts))
        expected = np.array([apply(M, p) for p in ffhq_quad(*pts)])
        np.testing.assert_allclose(moved, expected, atol=1e-9)


def dots_image(size: int, points: dict, sigma: float) -> np.ndarray:
    """Black image with a Gaussian dot per landmark, one colour channel each (R left eye, G right eye, B mouth)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    img = np.zeros((size, size, 3), np.float64)
    for ch, name in enumerate(NAMES):
        x, y = points[name]
        img[..., ch] = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.rint(img).astype(np.uint8)


def dot_centres(img: np.ndarray) -> dict:
    """Intensity-weighted centroid of each channel (above a small floor, to ignore resampling ripples)."""
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    out = {}
    for ch, name in enumerate(NAMES):
        w = np.clip(img[..., ch].astype(np.float64) - 8, 0, None)
        out[name] = np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    return out


@pytest.mark.parametrize("face_px, seed", [(300, 0), (300, 1), (300, 2), (900, 3), (900, 4)])
def test_warp_puts_known_landmarks_at_canonical_positions(face_px, seed):
    # Dots at canonical positions of a face_px square, the whole picture moved by a random similarity transform;
    # the transformed landmarks are passed in. face_px 900 takes the pyramid (prefiltered shrink) path at R 256.
    rng = np.random.default_rng(seed)
    size = int(face_px * 1.5)
    off = (size - face_px) / 2
    points = {k: np.array(v) * face_px - 0.5 + off for k, v in CANONICAL_LANDMARKS.items()}
    M = similarity(rng.uniform(-30, 30), rng.uniform(0.8, 1.25), rng.uniform(-0.05, 0.05, 2) * size, (size / 2,) * 2)
    moved = transform(dots_image(size, points, sigma=face_px / 100), M, border=cv2.BORDER_CONSTANT)
    lm = Landmarks(*(apply(M, points[k]) for k in NAMES), estimated=[])

    al = align_face(moved, R, landmarks=lm)
    assert al.aligned and al.image.shape == (R, R, 3) and al.image.dtype == np.uint8
    found = dot_centres(al.image)
    for name in NAMES:
        predicted = in_output(al, getattr(lm, name))
        np.testing.assert_allclose(found[name], predicted, atol=1.0, err_msg=name)  # the pixels follow the maths
        # The FFHQ recipe lands eyes and mouth about 2 px (at 256) below the portraits' canonical y: see the
        # module docstring of detectors/align.py. x is exact to 0.3 px.
        np.testing.assert_allclose(found[name], canonical_px(name), atol=2.5, err_msg=name)
    assert abs(tilt_deg(found["left_eye"], found["right_eye"])) < 0.5


def smooth_noise(size: int, seed: int = 0) -> np.ndarray:
    """[size, size, 3] uint8 texture with detail at a few pixels (blurred noise, contrast stretched)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip((img - img.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def test_warp_quad_inside_the_photo_is_plain_resampling_without_shift():
    img = smooth_noise(100)
    # Corners on the outer edges of pixels 10..89: FFHQ's 4x bilinear + Lanczos gives them back, slightly smoothed.
    inside = warp_quad(img, np.array([[9.5, 9.5], [9.5, 89.5], [89.5, 89.5], [89.5, 9.5]]), 80)
    ref = img[10:90, 10:90]
    assert np.abs(inside.astype(int) - ref).mean() < 2.5 and np.abs(inside.astype(int) - ref).max() < 20
    a, b = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (inside, ref))
    (dx, dy), _ = cv2.phaseCorrelate(a, b)
    assert math.hypot(dx, dy) < 0.05


def test_warp_quad_fills_outside_of_the_photo_with_blur_then_median_colour():
    img = smooth_noise(100)
    quad = np.array([[-100, -100], [-100, 200], [200, 200], [200, -100]], dtype=np.float64)  # 3x the photo
    out = warp_quad(img, quad, 96)
    # The photo fills the middle third. FFHQ fades the blur a third of the pad width (here 130 px) into the photo, so
    # only its middle keeps its texture: the same texture as the photo, shrunk.
    inner = out[42:54, 42:54].astype(np.float64)
    expected = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)[10:22, 10:22].astype(np.float64)
    assert np.corrcoef(inner.ravel(), expected.ravel())[0, 1] > 0.8
    # Towards the quad's corners: mostly the median colour (76 % at the corner pixel here), no texture left.
    corner = out[:3, :3].reshape(-1, 3).astype(float)
    np.testing.assert_allclose(corner.mean(0), np.median(img.reshape(-1, 3), 0), atol=15)
    assert corner.std(0).max() < 3


def test_ffhq_steps_shrink_crop_and_pad_as_the_recipe_says():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    quad = np.array([[100.0, -40.0], [100.0, 560.0], [700.0, 560.0], [700.0, -40.0]])  # side 600, above the photo
    # Shrink: by the integer floor(qsize / R / 2), 600 / 64 / 2 -> 4; not at all below 2.
    small, q, qsize = ffhq_shrink(img, quad, 600.0, 64)
    assert small.shape == (175, 225, 3) and qsize == 150.0
    np.testing.assert_allclose(q, (quad + 0.5) / 4 - 0.5)
    assert ffhq_shrink(img, quad, 600.0, 256)[0] is img  # floor(600 / 256 / 2) = 1
    # Crop: the quad's box plus 0.1 qsize (at least 3 px), clipped to the photo.
    cropped, qc = ffhq_crop(small, q, qsize)
    b = 15  # rint(0.1 * 150)
    x0, y0 = int(np.floor(q[:, 0].min())) - b, int(np.floor(q[:, 1].min())) - b
    x1, y1 = int(np.ceil(q[:, 0].max())) + b, int(np.ceil(q[:, 1].max())) + b
    assert (x0, y0, x1, y1) == (9, -26, 190, 155)
    np.testing.assert_array_equal(cropped, small[0:155, 9:190])
    np.testing.assert_allclose(qc, q - (9, 0))
    # Pad: the quad leaves the photo at the top, so every side gets at least rint(0.3 qsize) = 45.
    padded, qp = ffhq_pad(cropped, qc, qsize)
    h, w = cropped.shape[:2]
    assert padded.shape == (h + 2 * 45, w + 2 * 45, 3)
    np.testing.assert_allclose(qp, qc + 45)
    # The outer edge is one flat colour (the median); the pad between is blurred photo, smoother than the photo.
    for edge in (padded[0], padded[-1], padded[:, 0], padded[:, -1]):
        assert np.ptp(edge.astype(int), axis=0).max() <= 1
    np.testing.assert_array_equal(padded[0, 0], padded[-1, -1])
    grad = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert grad(padded[20:25, 45:-45]) < 0.2 * grad(cropped)
    # A quad well inside the photo is not padded.
    inside, _ = ffhq_pad(img, np.array([[50.0, 50.0], [50.0, 150.0], [150.0, 150.0], [150.0, 50.0]]), 100.0)
    assert inside is img


# ------------------------------------------------------------------------------------- detection: a photo


def test_astronaut_eyes_and_mouth_are_detected_by_haar(astronaut):
    lm, box, n = haar_landmarks(astronaut)
    assert n == 1 and lm is not None
    assert "left_eye" not in lm.estimated and "right_eye" not in lm.estimated
    x, y, w, h = box
    for p in (lm.left_eye, lm.right_eye, lm.mouth):
        assert x <= p[0] <= x + w and y <= p[1] <= y + h
    assert lm.left_eye[0] < lm.mouth[0] < lm.right_eye[0]
    assert max(lm.left_eye[1], lm.right_eye[1]) < lm.mouth[1]


@pytest.mark.parametrize("angle, scale, shift", [(10, 0.8, (30, -20)), (-10, 1.2, (-25, 15)), (6, 1.0, (-40, 35)),
                                                 (-30, 0.9, (10, 10))])
def test_haar_alignment_undoes_rotation_scale_and_shift(astronaut, astronaut_aligned, angle, scale, shift):
    ref = astronaut_aligned
    assert ref.aligned and ref.warning is None and ref.aligner == "haar"
    M = similarity(angle, scale, shift, (256, 256))
    al = align_face(transform(astronaut, M), R, aligner="haar")
    assert al.aligned and not {"left_eye", "right_eye"} & set(al.landmarks.estimated)
    for name in ("left_eye", "right_eye"):
        # Where the eyes of the original photo end up in both crops (true positions, moved by the known M).
        p_ref = in_output(ref, getattr(ref.landmarks, name))
        p_new = in_output(al, apply(M, getattr(ref.landmarks, name)))
        assert np.abs(p_new - p_ref).max() < 4, (name, p_ref, p_new)
        assert np.abs(p_ref - canonical_px(name)).max() < 4
    # Upright: the eye line of the crop is horizontal.
    assert abs(tilt_deg(in_output(al, al.landmarks.left_eye), in_output(al, al.landmarks.right_eye))) < 2
    # And the crops show the same thing.
    assert np.abs(al.image.astype(int) - ref.image.astype(int)).mean() < 20


@pytest.mark.parametrize("aligner", ["dlib-68", "haar"])
def test_no_face_falls_back_to_the_centre_crop(aligner):
    h, w = 300, 400
    grad = np.zeros((h, w, 3), np.uint8)
    grad[..., 0] = np.linspace(0, 255, w)[None, :]
    grad[..., 1] = np.linspace(30, 220, h)[:, None]
    grad[..., 2] = 128
    al = align_face(grad, 64, aligner=aligner)
    assert not al.aligned and al.landmarks is None and al.face_box is None and al.n_faces == 0
    assert al.aligner == aligner and al.to_json()["aligner"] == aligner and aligner in al.notes[0]
    assert "no face" in al.warning
    assert al.image.shape == (64, 64, 3) and al.image.dtype == np.uint8
    np.testing.assert_allclose(al.quad, [[49.5, -0.5], [49.5, 299.5], [349.5, 299.5], [349.5, -0.5]])
    expected = cv2.resize(grad[:, 50:350], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(al.image.astype(int) - expected).max() <= 1
    json.dumps(al.to_json())


def test_haar_with_two_faces_aligns_the_largest(astronaut):
    canvas = np.full((700, 1100, 3), 90, np.uint8)
    canvas[50:562, 30:542] = astronaut  # face about 92 px
    canvas[300:620, 700:1020] = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)  # about 58 px
    al = align_face(canvas, 128, aligner="haar")
    assert al.aligned and al.n_faces >= 2
    assert f"{al.n_faces} faces found; aligned the largest" in al.warning
    ref, _, _ = haar_landmarks(astronaut)
    assert np.hypot(*(np.array(al.landmarks.left_eye) - (ref.left_eye[0] + 30, ref.left_eye[1] + 50))) < 3
    assert al.face_box[2] > 80


def test_to_json_round_trips(astronaut_aligned):
    d = json.loads(json.dumps(astronaut_aligned.to_json()))
    assert d["aligned"] is True and d["resolution"] == R and d["n_faces"] == 1 and d["warning"] is None
    assert d["aligner"] == "haar"
    assert set(d["landmarks"]) == {"left_eye", "right_eye", "mouth", "estimated"}
    assert len(d["quad"]) == 4 and len(d["face_box"]) == 4
    assert "image" not in d


def test_rejects_what_is_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        align_face(np.zeros((32, 32), np.uint8), 16)
    with pytest.raises(ValueError, match="uint8"):
        align_face(np.zeros((32, 32, 3), np.float32), 16)


# -------------------------------------------------------------------------------- procedural portraits


def test_portraits_with_known_landmarks_come_back_to_the_canonical_place():
    rng = np.random.default_rng(7)
    for index in range(4):
        img, P = render_portrait(0, index, R)
        known = {k: tuple(P[k]) for k in NAMES}
        M = similarity(rng.uniform(-20, 20), rng.uniform(0.8, 1.2), rng.uniform(-20, 20, 2), (R / 2, R / 2))
        moved = transform(img, M)
        straight = align_face(img, R, landmarks=Landmarks(*known.values(), estimated=[]))
        al = align_face(moved, R, landmarks=Landmarks(*(apply(M, known[k]) for k in NAMES), estimated=[]))
        for name in NAMES:
            assert np.abs(in_output(al, apply(M, known[name])) - canonical_px(name)).max() < 3, (index, name)
        # Pixels agree with the undisturbed portrait's crop: no residual shift between the two.
        a, b = (cv2.cvtColor(x.image, cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (straight, al))
        window = cv2.createHanningWindow((R, R), cv2.CV_32F)
        (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
        assert math.hypot(dx, dy) < 1.0, (index, dx, dy)


def test_haar_landmarks_on_portraits_are_close_when_found():
    # The Haar cascades were trained on photos; they find about half of these drawn faces (2 of these 6, 22 of the
    # first 40 at 256 px with both eyes). What matters is that a hit is a good one.
    checked = 0
    for index in range(6):
        img, P = render_portrait(0, index, R)
        lm, _, _ = haar_landmarks(img)
        if lm is None or {"left_eye", "right_eye"} & set(lm.estimated):
            continue
        checked += 1
        for name in ("left_eye", "right_eye"):
            assert np.hypot(*(np.array(getattr(lm, name)) - P[name])) < 6, (index, name)
    assert checked >= 1


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_writes_crops_and_json_and_reports_unreadable_files(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "astronaut.png")
    grad = np.repeat(np.linspace(0, 255, 120, dtype=np.uint8)[None, :, None], 90, 0).repeat(3, 2)
    Image.fromarray(grad).save(src / "gradient.png")
    out = tmp_path / "out"
    runner = CliRunner()

    ok = runner.invoke(app, ["align", str(src / "astronaut.png"), str(src / "gradient.png"), "--outdir", str(out),
                             "--res", "32"])
    assert ok.exit_code == 0, ok.output
    assert "aligned (dlib-68)" in ok.output and "centre crop" in ok.output and "no face found" in ok.output
    for stem, aligned in (("astronaut", True), ("gradient", False)):
        assert Image.open(out / f"{stem}.png").size == (32, 32)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["aligned"] is aligned and record["resolution"] == 32 and record["aligner"] == "dlib-68"
        assert record["source"].endswith(f"{stem}.png")

    haar = runner.invoke(app, ["align", str(src / "astronaut.png"), "--outdir", str(tmp_path / "haar"), "--res", "32",
                               "--aligner", "haar"])
    assert haar.exit_code == 0 and "aligned (haar)" in haar.output, haar.output
    assert json.loads((tmp_path / "haar" / "astronaut.json").read_text())["aligner"] == "haar"
    wrong = runner.invoke(app, ["align", str(src / "astronaut.png"), "--outdir", str(out), "--aligner", "mtcnn"])
    assert wrong.exit_code == 2 and "--aligner must be one of" in wrong.output

    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    bad = runner.invoke(app, ["align", str(src), "--outdir", str(out), "--res", "32"])
    assert bad.exit_code == 2, bad.output
    assert "broken.png" in bad.output and "Traceback" not in bad.output
    assert not (out / "broken.png").exists() and (out / "astronaut.png").exists()

    help_ = runner.invoke(app, ["align", "--help"])
    assert help_.exit_code == 0 and "--outdir" in help_.output and "Examples" in help_.output
