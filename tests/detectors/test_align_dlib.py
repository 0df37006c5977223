"""The dlib-68 aligner (the `faces` extra): FFHQ's landmarks on real photographs, stability under moves, the CNN
detector's part, the model files, and the fallback to the Haar aligner when the extra is missing."""

from __future__ import annotations

import logging
import math
import sys

import cv2
import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
from PIL import Image

import detectors.align as align_mod
from detectors.align import (
    LANDMARKS_ENV, AlignerUnavailableError, Landmarks, align_face, detect_faces_dlib, detect_landmarks,
    detect_landmarks68, find_dlib_models, landmarks_from_68, quad_to_output, resolve_aligner,
)
from detectors.batch import prepare_image
from generator.data.portraits import render_portrait

R = 256
NAMES = ("left_eye", "right_eye", "mouth")
OUTER = np.array([[0, 0], [0, R], [R, R], [R, 0]], dtype=np.float64) - 0.5  # the output's corners, TL BL BR TR


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Real photographs that ship with installed packages: scikit-image's astronaut, matplotlib's Grace Hopper."""
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return {"astronaut": skimage.data.astronaut(), "hopper": np.asarray(Image.open(hopper).convert("RGB"))}


@pytest.fixture(scope="module")
def aligned(photos) -> dict:
    return {name: align_face(rgb, R, aligner="dlib-68") for name, rgb in photos.items()}


@pytest.fixture
def fresh_dlib(monkeypatch):
    """dlib's loaded models and the once-only warning forgotten, before and after the test."""
    align_mod._dlib_tools.cache_clear()
    monkeypatch.setattr(align_mod, "_fallback_warned", False)
    monkeypatch.delenv(LANDMARKS_ENV, raising=False)
    yield
    align_mod._dlib_tools.cache_clear()


def in_crop(al, p) -> np.ndarray:
    return quad_to_output(al.quad, al.image.shape[0]) @ (p[0], p[1], 1.0)


def moved(M: np.ndarray, p) -> tuple[float, float]:
    return tuple(float(v) for v in M @ (p[0], p[1], 1.0))


def phase_shift(a: np.ndarray, b: np.ndarray) -> float:
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (a, b))
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, cv2.createHanningWindow(ga.shape[::-1], cv2.CV_32F))
    return math.hypot(dx, dy)


# ------------------------------------------------------------------------------------------ the model files


def test_models_are_found_without_importing_face_recognition_models():
    landmarks, cnn = find_dlib_models()
    assert landmarks.name == "shape_predictor_68_face_landmarks.dat" and landmarks.is_file()
    assert cnn is not None and cnn.name == "mmod_human_face_detector.dat" and cnn.parent == landmarks.parent
    assert "face_recognition_models" not in sys.modules  # importing it needs pkg_resources, gone from setuptools


def test_landmarks_from_68_are_ffhqs_eye_centres_and_mouth_corners():
    p = np.zeros((68, 2))
    p[36:42] = [[10, 20], [12, 18], [14, 18], [16, 20], [14, 22], [12, 22]]  # mean (13, 20)
    p[42:48] = p[36:42] + (30, 2)  # mean (43, 22)
    p[48], p[54] = (20, 50), (36, 54)
    p[49:54] = p[55:60] = (999, 999)  # the rest of the mouth does not count
    lm = landmarks_from_68(p)
    assert lm.left_eye == (13.0, 20.0) and lm.right_eye == (43.0, 22.0) and lm.mouth == (28.0, 52.0)
    assert lm.estimated == []


# --------------------------------------------------------------------------------------------- real photos


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_landmarks_are_found_on_real_photos(photos, aligned, name):
    rgb = photos[name]
    points, box, n = detect_landmarks68(rgb)
    assert n == 1 and points.shape == (68, 2)
    x, y, w, h = box
    inside = (points[:, 0] > x - 0.2 * w) & (points[:, 0] < x + 1.2 * w) & (points[:, 1] > y - 0.2 * h) & (
        points[:, 1] < y + 1.3 * h)
    assert inside.all()
    lm = landmarks_from_68(points)
    assert lm.left_eye[0] < lm.mouth[0] < lm.right_eye[0] and max(lm.left_eye[1], lm.right_eye[1]) < lm.mouth[1]
    # The jaw line (0-16) runs from the image's left to its right, below the eyes; the nose tip (30) sits between.
    assert points[0, 0] < lm.left_eye[0] and points[16, 0] > lm.right_eye[0] and points[8, 1] > lm.mouth[1]
    assert lm.left_eye[1] < points[30, 1] < lm.mouth[1]
    # The Haar aligner agrees on the eyes of the astronaut to a few pixels (it misses Grace Hopper's behind glasses).
    if name == "astronaut":
        haar, _, _ = detect_landmarks(rgb, "haar")
        for k in ("left_eye", "right_eye"):
            assert np.hypot(*np.subtract(getattr(haar, k), getattr(lm, k))) < 4
    al = aligned[name]
    assert al.aligned and al.aligner == "dlib-68" and al.warning is None and al.landmarks.estimated == []
    assert al.to_json()["aligner"] == "dlib-68" and al.notes == ["face aligned with dlib-68 (FFHQ's landmarks)"]
    # FFHQ's geometry: eyes at x = 0.375 and 0.625 of the crop, level (exactly so for a symmetric face).
    le, re = in_crop(al, al.landmarks.left_eye), in_crop(al, al.landmarks.right_eye)
    np.testing.assert_allclose([le[0], re[0]], [0.375 * R - 0.5, 0.625 * R - 0.5], atol=0.5)
    assert abs(le[1] - re[1]) < 1


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
def test_realigning_an_aligned_face_is_the_identity(aligned, name):
    ref = aligned[name]
    again = align_face(ref.image, R, aligner="dlib-68")
    for k in NAMES:  # the landmarks found in the crop are where the first alignment put them
        d = np.subtract(getattr(again.landmarks, k), in_crop(ref, getattr(ref.landmarks, k)))
        assert np.abs(d).max() < 1.0, (k, d)
    assert np.abs(again.quad - OUTER).max() < 2.0  # and so the crop of the crop is the crop
    assert phase_shift(again.image, ref.image) < 0.3


@pytest.mark.parametrize("name", ["astronaut", "hopper"])
@pytest.mark.parametrize("angle, scale, shift", [(30, 1.0, (0, 0)), (-30, 0.7, (20, -25)), (12, 1.4, (-30, 10)),
                                                 (-8, 0.8, (35, 30)), (0, 1.0, (17, -13))])
def test_turned_scaled_and_shifted_copies_come_back_to_the_same_crop(photos, aligned, name, angle, scale, shift):
    rgb, ref = photos[name], aligned[name]
    h, w = rgb.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    M[:, 2] += shift
    al = align_face(cv2.warpAffine(rgb, M, (w, h), flags=cv2.INTER_LINEAR), R, aligner="dlib-68")
    assert al.aligned and al.n_faces == 1
    # The original's landmarks, moved with the photo, land where they landed in the original's crop.
    for k in NAMES:
        p_ref = in_crop(ref, getattr(ref.landmarks, k))
        p_new = in_crop(al, moved(M, getattr(ref.landmarks, k)))
        assert np.hypot(*(p_new - p_ref)) < 1.0, (k, p_ref, p_new)
    # So do the corners of the original's crop (a rotation error shows most there).
    corners = np.array([in_crop(al, moved(M, c)) for c in ref.quad])
    assert np.abs(corners - OUTER).max() < 2.0
    assert phase_shift(al.image, ref.image) < 0.5


# ----------------------------------------------------------------------------------------- the detectors


def test_hog_false_faces_are_dropped_when_the_cnn_does_not_confirm_them(photos):
    # HOG fires on the astronaut's suit in this copy (scores below 0.3 against the face's 1.7, and about as large).
    M = cv2.getRotationMatrix2D((256, 256), 0.709, 1.365)
    M[:, 2] += (-14.23, 17.95)
    rgb = cv2.warpAffine(photos["astronaut"], M, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert len(align_mod._dlib_tools(None).hog.run(rgb, 0, 0.0)[0]) >= 2
    boxes, detector = detect_faces_dlib(rgb)
    assert detector == "hog" and len(boxes) == 1
    x, y, w, h = boxes[0]
    face = moved(M, (225, 120))  # the astronaut's face centre
    assert x < face[0] < x + w and y < face[1] < y + h


def test_the_cnn_detector_finds_what_hog_misses_and_landmarks_follow_the_painted_face():
    # Portrait 3 of set 0 (glasses): HOG finds no face at 1x or 2x, the CNN does.
    img, labels = render_portrait(0, 3, R)
    assert not len(align_mod._dlib_tools(None).hog.run(img, 1, 0.0)[0])
    boxes, detector = detect_faces_dlib(img)
    assert detector == "cnn" and len(boxes) == 1
    al = align_face(img, R, aligner="dlib-68")
    assert al.aligned
    for k in ("left_eye", "right_eye"):
        assert np.hypot(*np.subtract(getattr(al.landmarks, k), labels[k])) < 8, k


def test_dlib_finds_the_procedural_portraits_and_their_eyes():
    # Drawn faces: HOG finds about 2 in 3, the CNN the rest. dlib's eye centres sit a little inside the painted
    # ones (the eye distance comes out about 8 % short on these drawings; bench/align.py), so 4 px at 256.
    errors = []
    for index in range(6):
        img, labels = render_portrait(0, index, R)
        lm, _, n = detect_landmarks(img, "dlib-68")
        assert lm is not None and n == 1, index
        errors += [np.hypot(*np.subtract(getattr(lm, k), labels[k])) for k in ("left_eye", "right_eye")]
    assert np.median(errors) < 4.0, errors


def test_small_images_are_upscaled_for_the_detector(photos):
    small = cv2.resize(photos["astronaut"], (128, 128), interpolation=cv2.INTER_AREA)  # face about 22 px
    al = align_face(small, 64, aligner="dlib-68")
    assert al.aligned
    big = align_face(photos["astronaut"], 64, aligner="dlib-68")
    for k in ("left_eye", "right_eye"):
        assert np.hypot(*(np.array(getattr(al.landmarks, k)) * 4 + 1.5 - getattr(big.landmarks, k))) < 4, k


def test_large_photos_are_shrunk_for_the_detector_and_the_landmarks(photos):
    # 2560 px: HOG sees a 2048 px copy, the predictor an area-averaged frame, FFHQ's resampling shrinks by 5 first.
    big = cv2.resize(photos["astronaut"], (2560, 2560), interpolation=cv2.INTER_CUBIC)
    al = align_face(big, 64, aligner="dlib-68")
    ref = align_face(photos["astronaut"], 64, aligner="dlib-68")
    for k in NAMES:
        p = np.array(getattr(ref.landmarks, k)) * 5 + 2  # pixel centres: (p + 0.5) * 5 - 0.5
        assert np.hypot(*(in_crop(al, getattr(al.landmarks, k)) - in_crop(al, p))) < 0.25, k  # 64 px: 1 px at 256
    assert np.abs(al.image.astype(int) - ref.image).mean() < 3


def test_two_faces_aligns_the_largest(photos):
    canvas = np.full((600, 1100, 3), 90, np.uint8)
    canvas[40:552, 20:532] = photos["astronaut"]  # face box about 88 px
    hopper = cv2.resize(photos["hopper"], (341, 400), interpolation=cv2.INTER_AREA)  # face box about 145 px
    canvas[100:500, 650:991] = hopper
    al = align_face(canvas, 128, aligner="dlib-68")
    assert al.aligned and al.n_faces == 2 and al.warning == "2 faces found; aligned the largest"
    ref = align_face(hopper, 128, aligner="dlib-68")
    for k in ("left_eye", "right_eye"):
        assert np.hypot(*np.subtract(getattr(al.landmarks, k), np.add(getattr(ref.landmarks, k), (650, 100)))) < 2


# --------------------------------------------------------------------------- choosing, and falling back


def test_without_dlib_auto_falls_back_to_haar_with_one_warning(photos, fresh_dlib, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="detectors.align"):
        al = align_face(photos["astronaut"], 64)
        again = align_face(photos["astronaut"], 64)
    assert al.aligned and al.aligner == "haar" and again.aligner == "haar"
    assert "haar" in al.notes[0] and al.to_json()["aligner"] == "haar"
    warned = [r.getMessage() for r in caplog.records if r.name == "detectors.align"]
    assert len(warned) == 1 and 'pip install "sgproject[faces]"' in warned[0] and "Haar" in warned[0]
    with pytest.raises(AlignerUnavailableError, match=r"sgproject\[faces\]"):
        align_face(photos["astronaut"], 64, aligner="dlib-68")


def test_with_dlib_auto_is_dlib_and_haar_can_be_asked_for(fresh_dlib):
    assert resolve_aligner() == "dlib-68" and resolve_aligner("auto") == "dlib-68"
    assert resolve_aligner("haar") == "haar"
    with pytest.raises(ValueError, match="aligner must be one of"):
        resolve_aligner("mediapipe")


def test_an_explicit_landmark_model_is_used_and_a_missing_one_is_an_error(photos, fresh_dlib, monkeypatch, tmp_path):
    monkeypatch.setenv(LANDMARKS_ENV, str(tmp_path / "nowhere.dat"))
    with pytest.raises(AlignerUnavailableError, match=LANDMARKS_ENV):
        align_face(photos["astronaut"], 64)  # auto does not hide a file the user named
    monkeypatch.delenv(LANDMARKS_ENV)
    real, _ = find_dlib_models()
    own = tmp_path / "models" / real.name
    own.parent.mkdir()
    own.symlink_to(real)
    monkeypatch.setenv(LANDMARKS_ENV, str(own))
    assert find_dlib_models() == (own, None)  # no CNN detector beside it: HOG only
    al = align_face(photos["astronaut"], 64)
    assert al.aligner == "dlib-68" and al.aligned
    assert align_mod._dlib_tools(str(own)).cnn is None


def test_prepare_image_notes_say_which_aligner_ran(photos, tmp_path):
    path = tmp_path / "astronaut.png"
    Image.fromarray(photos["astronaut"]).save(path)
    p = prepare_image(path, 64, align=True)
    assert p.alignment["aligner"] == "dlib-68"
    assert "face aligned with dlib-68 (FFHQ's landmarks)" in p.notes


def test_given_landmarks_skip_detection(photos):
    lm = Landmarks((203.0, 101.0), (246.0, 104.0), (223.0, 140.0))
    al = align_face(photos["astronaut"], 32, landmarks=lm)
    assert al.aligner == "given" and al.notes == ["face aligned with given landmarks"]
