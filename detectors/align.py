"""Face alignment: find a face, its eyes and mouth, and cut the FFHQ-style oriented square around it.

A StyleGAN2 generator can only reproduce faces placed the way its training faces were, so the projector needs its
targets aligned first. FFHQ, and so every official face model, was cropped from dlib's 68 face landmarks; this
module repeats that recipe (docs/ARCHITECTURE.md, "Face alignment"). The steps, each a function usable alone:

- Landmarks, by one of two aligners (`resolve_aligner` picks; `align_face(aligner=...)` can force one):
  - `dlib-68` (the `sgproject[faces]` extra: dlib + the face-recognition-models files): `detect_faces_dlib` (dlib's
    HOG frontal face detector, its CNN detector when HOG finds nothing), `predict_landmarks68` (the 68-point shape
    predictor, made independent of the detector's box), `landmarks_from_68` (FFHQ's eye centres and mouth corners).
  - `haar` (always there, the fallback): OpenCV's bundled Haar cascades (face, eyes, smile); coarse, and any
    landmark that is not found is estimated from the face geometry and named in `Landmarks.estimated`.
- `ffhq_quad`: eye centres and mouth centre -> the oriented square to crop (pure).
- `warp_quad`: FFHQ's resampling of that square to the output size: `ffhq_shrink`, `ffhq_crop`, `ffhq_pad` (a
  reflected border fading into a blur and the median colour), `ffhq_transform` (4x oversampled, Lanczos down).

`align_face` runs them all and falls back to a centre crop when no face is found.

Where the landmarks land: for a symmetric face the recipe puts the eyes at exactly x = 0.375 and 0.625 of the
output (the square is four eye distances wide) and, when the eye distance sets the size, the eyes at
y = 0.5 - r / 40 and the mouth at y = 0.5 + 9 r / 40, with r = |eye_avg -> mouth| / |eye distance|. For the
portraits' canonical face (`CANONICAL_LANDMARKS`, r = 0.94) that is y = 0.477 and 0.711, about 2 px at 256 below
the canonical 0.469 and 0.703: the FFHQ recipe is kept as it is, since it is what official FFHQ generators were
trained on.

Coordinates: (x, y) in pixels, pixel (i, j) centred at x = i, y = j (OpenCV's and dlib's convention). A fraction f
of the output width therefore sits at pixel coordinate f * R - 0.5.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from generator.util.errors import SGProjectError
from generator.util.imaging import centre_crop_resize, centre_square

log = logging.getLogger(__name__)

# The project's canonical face (the procedural portraits' layout, close to FFHQ's mean), as fractions of the
# image (x, y). `align_face` lands within about 2 px at 256 of it; see the module docstring.
CANONICAL_LANDMARKS = {"left_eye": (0.376, 0.469), "right_eye": (0.625, 0.469), "mouth": (0.5, 0.703)}

ALIGNERS = ("auto", "dlib-68", "haar")  # auto: dlib-68 when the faces extra is installed, else haar (warned once)
INSTALL_FACES = 'pip install "sgproject[faces]"'
LANDMARKS_ENV = "SGPROJECT_DLIB_LANDMARKS"  # an explicit shape_predictor_68_face_landmarks.dat
_LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"  # dlib's 68-point model (iBUG 300-W: non-commercial)
_CNN_FILE = "mmod_human_face_detector.dat"  # dlib's CNN face detector, looked for beside the landmark model

# Haar aligner
_DETECT_MIN_SIDE = 320  # faces are searched on a copy whose long side is at least this (pixels; upscaled <= 4x)
_DETECT_MAX_SIDE = 640  # ... and at most this (pixels)
_FACE_CROP_WIDTH = 200  # eyes and mouth are searched on the face box rescaled to this width (pixels)
_SEARCH_ANGLES = (0.0, 25.0, -25.0)  # the image is searched turned by each of these (degrees)
_MOUTH_PER_EYE_DISTANCE = 0.94  # |eye_avg -> mouth| / |left -> right eye| of a typical (and canonical) face

# Landmarks of a typical frontal face as fractions of an OpenCV Haar face box (x, y), used when not detected.
_BOX_LANDMARKS = {"left_eye": (0.30, 0.37), "right_eye": (0.70, 0.37), "mouth": (0.50, 0.77)}

# dlib aligner
_DLIB_MIN_SIDE = 320  # HOG searches a copy whose long side is at least this (pixels; upscaled <= 8x) ...
_DLIB_MAX_SIDE = 2048  # ... and at most this (pixels)
_HOG_UPSAMPLES = (0, 1)  # HOG tries these pyramid doublings in turn (1 finds faces down to ~40 px) ...
_CNN_MAX_SIDE = 640  # ... then the CNN detector, on a copy with at most this long side (pixels; slow on a CPU)
_FRAME = 300  # the landmark predictor runs on the face resampled so that the FFHQ quad is this square (pixels)
_FRAME_BOX = (0.0, 0.18, 1.08)  # where dlib's HOG box sits in the quad: centre offset (x, y), width; in half sides
_BOX_JITTER = tuple((dx, dy, s) for dx in (-0.04, 0.0, 0.04) for dy in (-0.04, 0.0, 0.04) for s in (0.95, 1.05))
_FRAME_PASSES = 2  # predictions in the quad frame after the one in the detector's box

# FFHQ's resampling
_OVERSAMPLE = 4  # the quad is resampled to 4R bilinearly, then Lanczos-shrunk to R (FFHQ: 4096 -> 1024)

# FFHQ's landmark groups in dlib's 68-point layout (0-based)
_LEFT_EYE_68 = slice(36, 42)  # the eye on the image's left (the subject's right)
_RIGHT_EYE_68 = slice(42, 48)
_MOUTH_CORNERS_68 = (48, 54)  # outer mouth corners


class AlignerUnavailableError(SGProjectError):
    """The dlib aligner was asked for (or its model file named) but cannot run here."""


@dataclass
class Landmarks:
    left_eye: tuple[float, float]  # (x, y) source pixels; the eye on the image's left (the subject's right eye)
    right_eye: tuple[float, float]  # (x, y) source pixels
    mouth: tuple[float, float]  # (x, y) source pixels; the centre between the mouth corners
    estimated: list[str] = field(default_factory=list)  # landmarks guessed from the face geometry, not detected


@dataclass
class Alignment:
    image: np.ndarray  # [R, R, 3] uint8 RGB
    aligned: bool  # False: no face found, the centre crop was used
    landmarks: Landmarks | None  # in the source image
    face_box: tuple[int, int, int, int] | None  # x, y, w, h in the source image
    quad: np.ndarray | None  # [4, 2] source coords of the crop corners: top-left, bottom-left, bottom-right, top-right
    n_faces: int  # faces the detector found (1 when the landmarks were given)
    warning: str | None  # something the user should know, e.g. several faces or no face at all
    aligner: str = "given"  # what found the landmarks: "dlib-68", "haar", or "given" (passed in)

    @property
    def notes(self) -> list[str]:
        """One line per thing a results row should say: which aligner ran, then the warning if any."""
        how = {"dlib-68": "dlib-68 (FFHQ's landmarks)", "haar": "haar (OpenCV cascades, coarser than FFHQ's dlib)",
               "given": "given landmarks"}[self.aligner]
        lines = [f"face {'aligned' if self.aligned else 'searched'} with {how}"]
        return lines + ([self.warning] if self.warning else [])

    def to_json(self) -> dict:
        """Everything but the image, as plain JSON types."""
        return {
            "aligned": self.aligned,
            "aligner": self.aligner,
            "resolution": int(self.image.shape[0]),
            "landmarks": None if self.landmarks is None else _plain(asdict(self.landmarks)),
            "face_box": None if self.face_box is None else [int(v) for v in self.face_box],
            "quad": None if self.quad is None else [[round(float(a), 3), round(float(b), 3)] for a, b in self.quad],
            "n_faces": int(self.n_faces),
            "warning": self.warning,
        }


def _plain(d: dict) -> dict:
    """Landmarks as JSON: points to [x, y] rounded to 1/1000 pixel."""
    return {k: [round(float(x), 3) for x in v] if isinstance(v, tuple) else list(v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------- choosing an aligner


@dataclass(frozen=True)
class _DlibTools:
    dlib: object  # the dlib module
    hog: object  # dlib.fhog_object_detector: the frontal face detector
    cnn: object | None  # dlib.cnn_face_detection_model_v1, None without its file
    predictor: object  # dlib.shape_predictor: 68 points
    landmarks_file: Path


def find_dlib_models(landmarks: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
    """(the 68-point landmark model, the CNN face detector or None).

    The landmark model is `landmarks`, else $SGPROJECT_DLIB_LANDMARKS, else the one face-recognition-models ships
    (found without importing that package, which needs the retired pkg_resources). The CNN detector is looked for
    beside the landmark model. AlignerUnavailableError when there is no landmark model, or a named one is missing.
    """
    named = landmarks or os.environ.get(LANDMARKS_ENV) or None
    if named is not None:
        path = Path(named).expanduser()
        if not path.is_file():
            raise AlignerUnavailableError(f"the landmark model {path} (named in ${LANDMARKS_ENV} or by the caller) is "
                                          f"not a file; it should be dlib's {_LANDMARKS_FILE}")
    else:
        spec = importlib.util.find_spec("face_recognition_models")
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        path = next((Path(f) / "models" / _LANDMARKS_FILE for f in folders
                     if (Path(f) / "models" / _LANDMARKS_FILE).is_file()), None)
        if path is None:
            raise AlignerUnavailableError(f"dlib's 68-point landmark model was not found (install it with "
                                          f"{INSTALL_FACES}, or name the file in ${LANDMARKS_ENV})")
    cnn = path.parent / _CNN_FILE
    return path, (cnn if cnn.is_file() else None)


@functools.lru_cache(maxsize=4)
def _dlib_tools(landmarks: str | None) -> _DlibTools:
    """dlib and its models, loaded once per landmark file. AlignerUnavailableError when either is missing."""
    try:
        import dlib  # local: optional extra (sgproject[faces])
    except ImportError as e:
        raise AlignerUnavailableError(f"dlib is not installed ({e}); install it with {INSTALL_FACES}") from None
    lm_file, cnn_file = find_dlib_models(landmarks)
    try:
        predictor = dlib.shape_predictor(str(lm_file))
        cnn = None if cnn_file is None else dlib.cnn_face_detection_model_v1(str(cnn_file))
    except RuntimeError as e:
        raise AlignerUnavailableError(f"dlib could not load {lm_file.parent}: {e}") from None
    return _DlibTools(dlib, dlib.get_frontal_face_detector(), cnn, predictor, lm_file)


_fallback_warned = False  # the missing-extra warning is given once per process


def resolve_aligner(aligner: str = "auto") -> str:
    """The aligner that will run: "dlib-68" or "haar".

    "auto" is dlib-68 when dlib and the landmark model load, else haar with a one-time warning saying how to
    install the extra. "dlib-68" raises AlignerUnavailableError when it cannot run; so does a landmark model named
    in $SGPROJECT_DLIB_LANDMARKS that does not exist, whatever is asked.
    """
    if aligner not in ALIGNERS:
        raise ValueError(f"aligner must be one of {', '.join(ALIGNERS)}, got {aligner!r}")
    if aligner == "haar":
        return "haar"
    named = os.environ.get(LANDMARKS_ENV) or None
    try:
        _dlib_tools(named)
        return "dlib-68"
    except AlignerUnavailableError as e:
        if aligner == "dlib-68" or named is not None:
            raise
        global _fallback_warned
        if not _fallback_warned:
            _fallback_warned = True
            log.warning("face alignment falls back to OpenCV's Haar cascades, which place eyes and mouth less "
                        "exactly than the dlib landmarks FFHQ was cropped with: %s", e)
        return "haar"


# ------------------------------------------------------------------------------------------- dlib-68 aligner


def detect_faces_dlib(rgb: np.ndarray) -> tuple[list[tuple[float, float, float, float]], str]:
    """Face boxes (x, y, w, h: source pixels, edges) largest first, and the detector that found them ("hog",
    "cnn", or "" when none did).

    dlib's HOG frontal detector first (what FFHQ's crops were made with), on a copy at least 320 px on its long
    side (small images upscaled), at 1x and then 2x. HOG also fires on clothes and patterns (scores up to about
    0.3, as large as the face): when it returns several boxes, only those the CNN detector confirms are kept. When
    HOG finds nothing, dlib's CNN detector, which finds more faces (drawn ones, profiles, rolls up to 60 degrees)
    but takes seconds per image on a CPU.
    """
    _check_rgb(rgb)
    tools = _dlib_tools(os.environ.get(LANDMARKS_ENV) or None)
    work, s = _resized(rgb, _DLIB_MIN_SIDE, _DLIB_MAX_SIDE, max_up=8.0)
    for up in _HOG_UPSAMPLES:
        rects, scores, _ = tools.hog.run(work, up, 0.0)
        if len(rects):
            found = sorted(zip(_boxes_from_rects(rects, 1.0), scores), key=lambda bs: -bs[0][2] * bs[0][3])
            if len(found) > 1 and tools.cnn is not None:
                confirmed = [bs for bs in found if _cnn_confirms(tools, work, bs[0])]
                found = confirmed or [max(found, key=lambda bs: bs[1])]
            return [tuple(v / s for v in b) for b, _ in found], "hog"
    if tools.cnn is None:
        return [], ""
    small, s2 = _resized(work, 0, _CNN_MAX_SIDE, max_up=1.0)
    found = tools.cnn(small, 0)
    return (_boxes_from_rects([d.rect for d in found], s * s2), "cnn") if len(found) else ([], "")


def _cnn_confirms(tools: _DlibTools, rgb: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether the CNN detector finds a face in a square twice the size of `box` around it (rescaled so the box
    is 120 px wide, above the CNN's smallest face)."""
    x, y, w, h = box
    side = 2 * max(w, h)
    cx, cy = x + w / 2, y + h / 2
    k = 120 / max(w, h)
    M = np.array([[k, 0.0, k * (side / 2 - cx)], [0.0, k, k * (side / 2 - cy)]])  # edges: crop corner -> 0
    size = round(side * k)
    crop = cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return len(tools.cnn(crop, 0)) > 0


def _resized(rgb: np.ndarray, min_side: int, max_side: int, max_up: float) -> tuple[np.ndarray, float]:
    """`rgb` scaled so that its long side lies in [min_side, max_side] (upscaling at most max_up), and the scale."""
    long_side = max(rgb.shape[:2])
    s = min(max_up, min_side / long_side) if long_side < min_side else min(1.0, max_side / long_side)
    if s == 1.0:
        return rgb, 1.0
    h, w = rgb.shape[:2]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, size, interpolation=interp), s


def _boxes_from_rects(rects, s: float) -> list[tuple[float, float, float, float]]:
    """dlib rectangles (inclusive pixel indices) of an image scaled by s -> source (x, y, w, h) edges, largest
    first."""
    boxes = [(r.left() / s, r.top() / s, (r.right() + 1 - r.left()) / s, (r.bottom() + 1 - r.top()) / s)
             for r in rects]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def predict_landmarks68(rgb: np.ndarray, box: tuple[float, float, float, float], *, stable: bool = True) -> np.ndarray:
    """dlib's 68 landmarks [68, 2] (source pixels) of the face in `box` (x, y, w, h, as detect_faces_dlib gives).

    One prediction in the detector's box (`stable=False`, what FFHQ's script did) depends on where that box falls:
    moving a photo by a few pixels moves its crop by up to 5 px at 256. So by default the predictor runs on the
    face resampled to a fixed frame, averaged over 18 small shifts and scalings of its box, first in the
    detector's box, then twice in the FFHQ quad of the previous answer. The answer then follows the face, not the
    box: moved, turned and scaled copies of a photo agree within about 1 px at 256 (bench/align.py).
    """
    _check_rgb(rgb)
    tools = _dlib_tools(os.environ.get(LANDMARKS_ENV) or None)
    x, y, w, h = box
    if not stable:
        rect = tools.dlib.rectangle(round(x), round(y), round(x + w) - 1, round(y + h) - 1)
        return np.array([(p.x, p.y) for p in tools.predictor(rgb, rect).parts()], dtype=np.float64)
    k = _FRAME_BOX[2] * (_FRAME / 2) / w  # the detector's box onto the frame's box
    cx, cy = _frame_box_centre()
    bx, by = x + w / 2 - 0.5, y + h / 2 - 0.5  # its centre, pixel-centre convention
    M = np.array([[k, 0.0, cx - k * bx], [0.0, k, cy - k * by]])
    points = _predict_in_frame(tools, rgb, M)
    for _ in range(_FRAME_PASSES):
        lm = landmarks_from_68(points)
        M = quad_to_output(ffhq_quad(lm.left_eye, lm.right_eye, lm.mouth), _FRAME)
        points = _predict_in_frame(tools, rgb, M)
    return points


def _frame_box_centre() -> tuple[float, float]:
    half = _FRAME / 2
    return half - 0.5 + _FRAME_BOX[0] * half, half - 0.5 + _FRAME_BOX[1] * half


def _predict_in_frame(tools: _DlibTools, rgb: np.ndarray, M: np.ndarray) -> np.ndarray:
    """The 68 points [68, 2] in source pixels, predicted on `rgb` warped by M ([2, 3], source -> frame) and
    averaged over the jittered boxes."""
    frame = _warp_frame(rgb, M, _FRAME)
    cx, cy = _frame_box_centre()
    side = _FRAME_BOX[2] * _FRAME / 2
    acc = np.zeros((68, 2))
    for dx, dy, sc in _BOX_JITTER:
        half = side * sc / 2
        x0, y0 = cx + dx * side - half + 0.5, cy + dy * side - half + 0.5  # edges
        rect = tools.dlib.rectangle(round(x0), round(y0), round(x0 + 2 * half) - 1, round(y0 + 2 * half) - 1)
        shape = tools.predictor(frame, rect)
        acc += [(p.x, p.y) for p in shape.parts()]
    acc /= len(_BOX_JITTER)
    Minv = cv2.invertAffineTransform(M)
    return acc @ Minv[:, :2].T + Minv[:, 2]


def _warp_frame(rgb: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """`rgb` warped by M ([2, 3], source -> frame) into a [size, size, 3] frame; areas shrunk more than 2x are
    area-averaged first, so the warp does not alias."""
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
    src, M = rgb, np.asarray(M, dtype=np.float64)
    if scale < 0.5:
        Minv = cv2.invertAffineTransform(M)
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], float) - 0.5
        pts = corners @ Minv[:, :2].T + Minv[:, 2]
        h, w = rgb.shape[:2]
        x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 2, 0, None)
        x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 3, (w, h))
        if x1 > x0 and y1 > y0:
            crop = rgb[y0:y1, x0:x1]
            size_r = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
            src = cv2.resize(crop, size_r, interpolation=cv2.INTER_AREA)
            f = np.array([size_r[0] / (x1 - x0), size_r[1] / (y1 - y0)])
            # resized pixel r <- crop pixel (r + 0.5) / f - 0.5 <- source pixel + (x0, y0)
            A = M[:, :2] / f
            M = np.concatenate([A, (M[:, :2] @ (0.5 / f - 0.5 + np.array([x0, y0])) + M[:, 2])[:, None]], axis=1)
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR  # cubic: small faces come out a little sharper
    return cv2.warpAffine(src, M, (size, size), flags=interp, borderMode=cv2.BORDER_REFLECT)


def landmarks_from_68(points: np.ndarray) -> Landmarks:
    """FFHQ's eye centres (mean of points 36-41 and 42-47) and mouth centre (mean of the corners 48 and 54)."""
    p = np.asarray(points, dtype=np.float64).reshape(68, 2)
    left_eye = p[_LEFT_EYE_68].mean(0)
    right_eye = p[_RIGHT_EYE_68].mean(0)
    mouth = p[list(_MOUTH_CORNERS_68)].mean(0)
    return Landmarks(*(tuple(float(v) for v in q) for q in (left_eye, right_eye, mouth)), estimated=[])


def detect_landmarks68(rgb: np.ndarray) -> tuple[np.ndarray | None, tuple[int, int, int, int] | None, int]:
    """(the 68 points [68, 2] of the largest face, its box x, y, w, h, number of faces), or (None, None, 0)."""
    boxes, _ = detect_faces_dlib(rgb)
    if not boxes:
        return None, None, 0
    box = tuple(round(v) for v in boxes[0])
    return predict_landmarks68(rgb, boxes[0]), box, len(boxes)


# ---------------------------------------------------------------------------------------------- haar aligner


@functools.lru_cache(maxsize=None)
def _cascade(name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    c = cv2.CascadeClassifier(path)
    if c.empty():
        raise RuntimeError(f"OpenCV could not load its bundled cascade {path}; reinstall opencv-python")
    return c


def _dedupe_boxes(boxes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Largest first; drop a box when most of it lies inside a larger one already kept."""
    kept: list[tuple[int, int, int, int]] = []
    for x, y, w, h in sorted((tuple(int(v) for v in b) for b in boxes), key=lambda b: -b[2] * b[3]):
        for kx, ky, kw, kh in kept:
            ix = max(0, min(x + w, kx + kw) - max(x, kx))
            iy = max(0, min(y + h, ky + kh) - max(y, ky))
            if ix * iy > 0.5 * w * h:
                break
        else:
            kept.append((x, y, w, h))
    return kept


def _find_faces(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) in `gray`'s pixels, largest first. `gray` is the full-size uint8 image."""
    # Large photos are searched shrunk (faster); small ones enlarged (the cascades' windows start at 20-24 px).
    long_side = max(gray.shape)
    if long_side < _DETECT_MIN_SIDE:
        scale = min(4.0, _DETECT_MIN_SIDE / long_side)
    else:
        scale = min(1.0, _DETECT_MAX_SIDE / long_side)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interp)
    small = cv2.equalizeHist(small)
    min_side = max(20, int(0.05 * min(small.shape)))
    for name in ("haarcascade_frontalface_alt2.xml", "haarcascade_frontalface_default.xml"):
        boxes = _cascade(name).detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(boxes):
            return [tuple(int(round(v / scale)) for v in b) for b in _dedupe_boxes(np.asarray(boxes))]
    return []


def _centres(boxes) -> np.ndarray:
    """[N, 3]: box centre x, y (pixel-centre convention) and box size."""
    rows = [(x + w / 2 - 0.5, y + h / 2 - 0.5, (w + h) / 2) for x, y, w, h in boxes]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _pick_eyes(cands: np.ndarray, w: float, h: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The most plausible (left, right) eye pair among candidate centres in face-box coordinates.

    A pair must lie in the upper part of the box, one eye on each side, 25-65 % of the box width apart, tilted
    less than about 27 degrees, with similar sizes. Without a pair the best single eye is returned on its side.
    """
    cx, cy = cands[:, 0], cands[:, 1]
    cands = cands[(cy > 0.15 * h) & (cy < 0.6 * h) & (cx > 0.05 * w) & (cx < 0.95 * w)]
    best, best_score = None, np.inf
    for a in cands:
        for b in cands:
            dx, dy = b[0] - a[0], b[1] - a[1]
            if dx <= 0 or abs(dy) > 0.5 * dx:
                continue
            d = np.hypot(dx, dy)
            if not 0.25 * w <= d <= 0.65 * w or max(a[2], b[2]) > 1.6 * min(a[2], b[2]):
                continue
            mid_x, mid_y = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
            score = abs(d / w - 0.45) + abs(mid_x / w - 0.5) + abs(mid_y / h - 0.37) + 0.2 * abs(np.log(a[2] / b[2]))
            if score < best_score:
                best, best_score = (a[:2], b[:2]), score
    if best is not None:
        return best
    if len(cands) == 0:
        return None, None
    # One eye only: the candidate closest to where an eye usually is, on its own side.
    typical = {side: np.array(_BOX_LANDMARKS[side]) * (w, h) for side in ("left_eye", "right_eye")}
    dist = [min(np.hypot(*(c[:2] - typical[s])) for s in typical) for c in cands]
    c = cands[int(np.argmin(dist))][:2]
    return (c, None) if c[0] < w / 2 else (None, c)


def _face_landmarks(gray: np.ndarray, box: tuple[int, int, int, int]) -> Landmarks:
    """Eyes and mouth inside one face box; whatever is not found is estimated (and listed as such)."""
    x, y, w, h = box
    H, W = gray.shape
    # The face box plus a margin, rescaled to a fixed width: the eye windows then have a useful size.
    m = int(0.15 * w)
    x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(W, x + w + m), min(H, y + h + m)
    s = _FACE_CROP_WIDTH / w
    crop = cv2.resize(gray[y0:y1, x0:x1], None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    crop = cv2.equalizeHist(crop)

    def to_src(p) -> tuple[float, float]:  # crop pixel -> source pixel
        return (float(x0 + (p[0] + 0.5) / s - 0.5), float(y0 + (p[1] + 0.5) / s - 0.5))

    def to_box(c: np.ndarray) -> np.ndarray:  # crop centres -> face-box coordinates (source pixels)
        out = c.copy()
        out[:, 0] = x0 + (c[:, 0] + 0.5) / s - 0.5 - x
        out[:, 1] = y0 + (c[:, 1] + 0.5) / s - 0.5 - y
        out[:, 2] = c[:, 2] / s
        return out

    eye_min, eye_max = int(0.1 * _FACE_CROP_WIDTH), int(0.45 * _FACE_CROP_WIDTH)
    found = []
    for name in ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml"):
        boxes = _cascade(name).detectMultiScale(crop, scaleFactor=1.05, minNeighbors=3,
                                                minSize=(eye_min, eye_min), maxSize=(eye_max, eye_max))
        if len(boxes):
            found.append(to_box(_centres(boxes)))
        left, right = _pick_eyes(np.concatenate(found), w, h) if found else (None, None)
        if left is not None and right is not None:
            break

    estimated = []
    box_point = {k: (x + fx * w - 0.5, y + fy * h - 0.5) for k, (fx, fy) in _BOX_LANDMARKS.items()}
    if left is None and right is None:
        left_eye, right_eye = box_point["left_eye"], box_point["right_eye"]
        estimated += ["left_eye", "right_eye"]
    elif right is None:  # mirror the found eye about the box's vertical midline
        left_eye = (x + left[0], y + left[1])
        right_eye = (x + w - 1 - left[0], y + left[1])
        estimated.append("right_eye")
    elif left is None:
        right_eye = (x + right[0], y + right[1])
        left_eye = (x + w - 1 - right[0], y + right[1])
        estimated.append("left_eye")
    else:
        left_eye, right_eye = (x + left[0], y + left[1]), (x + right[0], y + right[1])
    left_eye, right_eye = tuple(map(float, left_eye)), tuple(map(float, right_eye))

    # The mouth is where the eyes say it should be, unless the smile detector finds one close to that.
    eye_avg = (np.array(left_eye) + np.array(right_eye)) / 2
    e2e = np.array(right_eye) - np.array(left_eye)
    down = np.array([-e2e[1], e2e[0]])  # e2e turned 90 degrees towards the chin
    predicted = eye_avg + down * _MOUTH_PER_EYE_DISTANCE
    if not found:  # no eye at all: the face box knows better than a guessed eye line
        predicted = np.array(box_point["mouth"])
    mouth = None
    band_top = int(max(0, (y + 0.55 * h - y0 + 0.5) * s - 0.5))
    lower = crop[band_top:]
    boxes = _cascade("haarcascade_smile.xml").detectMultiScale(
        lower, scaleFactor=1.05, minNeighbors=15, minSize=(int(0.2 * _FACE_CROP_WIDTH), int(0.1 * _FACE_CROP_WIDTH)),
        maxSize=(int(0.7 * _FACE_CROP_WIDTH), int(0.4 * _FACE_CROP_WIDTH)))
    if len(boxes):
        c = _centres(boxes)[:, :2] + (0, band_top)
        pts = np.array([to_src(p) for p in c])
        d = np.hypot(*(pts - predicted).T)
        i = int(np.argmin(d))
        if d[i] < 0.35 * np.hypot(*e2e):
            mouth = tuple(map(float, pts[i]))
    if mouth is None:
        mouth = tuple(map(float, predicted))
        estimated.append("mouth")
    return Landmarks(left_eye=left_eye, right_eye=right_eye, mouth=mouth, estimated=estimated)


def haar_landmarks(rgb: np.ndarray) -> tuple[Landmarks | None, tuple[int, int, int, int] | None, int]:
    """(landmarks of the largest face, its box x, y, w, h, number of faces), or (None, None, 0) with no face.

    Haar cascades only see faces within about 20 degrees of upright, so the image is searched as it is and
    turned by +-25 degrees (faces up to about 45 degrees of roll). Each turn proposes its largest face; a turned
    copy only one whose two eyes were found, since turning adds false faces. The proposals whose eyes were both
    found win (false faces rarely have two eyes), then the largest; when several turns saw that same face, the
    one that saw it most upright gives the landmarks.
    """
    _check_rgb(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    proposals = []
    for angle in _SEARCH_ANGLES:
        turned, M = _rotate(gray, angle)  # M: [2, 3] source -> turned
        faces = _find_faces(turned)
        if not faces:
            continue
        proposal = _Proposal(_face_landmarks(turned, faces[0]), faces, M)
        if angle == 0 or proposal.eyes_missing == 0:  # the turned copies add false faces: demand both eyes there
            proposals.append(proposal)
    if not proposals:
        return None, None, 0
    first = min(proposals, key=lambda p: (p.eyes_missing, -p.faces[0][2]))
    same = [p for p in proposals if p.eyes_missing == first.eyes_missing
            and np.hypot(*(p.centre - first.centre)) < 0.3 * first.faces[0][2]]
    best = min(same, key=lambda p: abs(p.tilt))
    return best.landmarks_in_source(), best.box_in_source(), len(best.faces)


@dataclass
class _Proposal:
    """The largest face found in one turned copy of the image; coordinates in that copy."""

    landmarks: Landmarks
    faces: list[tuple[int, int, int, int]]  # largest first
    M: np.ndarray  # [2, 3] source -> turned copy

    @property
    def eyes_missing(self) -> int:
        return sum(k in self.landmarks.estimated for k in ("left_eye", "right_eye"))

    @property
    def tilt(self) -> float:  # degrees of the eye line in the turned copy
        (lx, ly), (rx, ry) = self.landmarks.left_eye, self.landmarks.right_eye
        return float(np.degrees(np.arctan2(ry - ly, rx - lx)))

    @property
    def centre(self) -> np.ndarray:  # face box centre in the source
        x, y, w, h = self.faces[0]
        return np.array(self._back((x + w / 2, y + h / 2)))

    def _back(self, p) -> tuple[float, float]:
        Minv = cv2.invertAffineTransform(self.M)
        return tuple(float(v) for v in Minv @ (p[0], p[1], 1.0))

    def landmarks_in_source(self) -> Landmarks:
        lm = self.landmarks
        return Landmarks(self._back(lm.left_eye), self._back(lm.right_eye), self._back(lm.mouth), lm.estimated)

    def box_in_source(self) -> tuple[int, int, int, int]:
        """The face box; for a turned copy, the upright box around the turned one."""
        x, y, w, h = self.faces[0]
        corners = np.array([self._back(p) for p in ((x, y), (x + w, y), (x, y + h), (x + w, y + h))])
        (x0, y0), (x1, y1) = np.rint(corners.min(0)), np.rint(corners.max(0))
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _rotate(gray: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """`gray` turned by `angle` degrees (counter-clockwise) on a canvas that holds all of it, and the map."""
    if angle == 0:
        return gray, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    h, w = gray.shape
    M = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    c, s = abs(M[0, 0]), abs(M[0, 1])
    W, H = int(np.ceil(w * c + h * s)), int(np.ceil(w * s + h * c))
    M[:, 2] += ((W - w) / 2, (H - h) / 2)
    return cv2.warpAffine(gray, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), M


def detect_landmarks(rgb: np.ndarray, aligner: str = "auto",
                     ) -> tuple[Landmarks | None, tuple[int, int, int, int] | None, int]:
    """(eyes and mouth of the largest face, its box x, y, w, h, number of faces), or (None, None, 0) with no face,
    found by `aligner` ("auto", "dlib-68" or "haar"; see resolve_aligner)."""
    _check_rgb(rgb)
    if resolve_aligner(aligner) == "haar":
        return haar_landmarks(rgb)
    points, box, n = detect_landmarks68(rgb)
    return (None if points is None else landmarks_from_68(points)), box, n


# ------------------------------------------------------------------------------------------------ geometry


def ffhq_quad(left_eye, right_eye, mouth) -> np.ndarray:
    """The FFHQ crop square from eye centres and mouth centre: [4, 2] corners TL, BL, BR, TR (source pixels).

    The square's x axis runs along the eye line corrected by the eye-to-mouth direction (eye_to_eye minus
    eye_to_mouth turned 90 degrees); its half-size is the larger of twice the eye distance and 1.8 times the
    eye-to-mouth distance; its centre sits a tenth of the way from the eyes to the mouth.
    """
    left_eye, right_eye, mouth = (np.asarray(p, dtype=np.float64) for p in (left_eye, right_eye, mouth))
    eye_avg = (left_eye + right_eye) * 0.5
    eye_to_eye = right_eye - left_eye
    eye_to_mouth = mouth - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # [4, 2]


def quad_to_output(quad: np.ndarray, resolution: int) -> np.ndarray:
    """[2, 3] affine map from source pixels to output pixels that sends the quad onto the R x R output."""
    q = np.asarray(quad, dtype=np.float64)
    src = np.stack([q[0], q[1], q[3]])  # TL, BL, TR
    r = float(resolution)
    dst = np.array([[0.0, 0.0], [0.0, r], [r, 0.0]]) - 0.5  # the output's outer corners, pixel-centre convention
    A = np.concatenate([src, np.ones((3, 1))], axis=1)  # [3, 3]
    return np.linalg.solve(A, dst).T  # [2, 3]


# -------------------------------------------------------------------------------------- FFHQ's resampling


def warp_quad(rgb: np.ndarray, quad: np.ndarray, resolution: int) -> np.ndarray:
    """Resample the quad of `rgb` to [R, R, 3] uint8 the way FFHQ's crops were made: shrink by an integer factor
    while the quad is over 4R, crop around the quad, pad where it leaves the photo, resample to 4R and shrink to R.
    """
    _check_rgb(rgb)
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    R = int(resolution)
    qsize = (np.hypot(*(q[3] - q[0])) + np.hypot(*(q[1] - q[0]))) / 2  # side of the quad (source pixels)
    img, q, qsize = ffhq_shrink(rgb, q, qsize, R)
    img, q = ffhq_crop(img, q, qsize)
    img, q = ffhq_pad(img, q, qsize)
    return ffhq_transform(img, q, R)


def ffhq_shrink(rgb: np.ndarray, quad: np.ndarray, qsize: float, resolution: int):
    """(image, quad, qsize) shrunk by the integer floor(qsize / R / 2) with Lanczos, when that is 2 or more.

    FFHQ divides the quad by the factor; here the pixel-centre offset is kept exact (at most 0.25 px at 4R apart).
    """
    shrink = int(np.floor(qsize / resolution * 0.5))
    if shrink <= 1:
        return rgb, quad, qsize
    h, w = rgb.shape[:2]
    size = (max(1, int(np.rint(w / shrink))), max(1, int(np.rint(h / shrink))))
    img = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    f = np.array([size[0] / w, size[1] / h])
    return img, (quad + 0.5) * f - 0.5, qsize / shrink


def _border(qsize: float) -> int:
    return max(int(np.rint(qsize * 0.1)), 3)


def _quad_bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    (x0, y0), (x1, y1) = np.floor(quad.min(0)), np.ceil(quad.max(0))
    return int(x0), int(y0), int(x1), int(y1)


def ffhq_crop(rgb: np.ndarray, quad: np.ndarray, qsize: float) -> tuple[np.ndarray, np.ndarray]:
    """(image, quad) cut to the quad's bounding box plus a tenth of its size (at least 3 px) on each side."""
    h, w = rgb.shape[:2]
    b = _border(qsize)
    x0, y0, x1, y1 = _quad_bounds(quad)
    x0, y0, x1, y1 = max(x0 - b, 0), max(y0 - b, 0), min(x1 + b, w), min(y1 + b, h)
    if x1 <= x0 or y1 <= y0 or (x1 - x0 == w and y1 - y0 == h):  # the quad misses the photo / covers it all
        return rgb, quad
    return rgb[y0:y1, x0:x1], quad - (x0, y0)


def ffhq_pad(rgb: np.ndarray, quad: np.ndarray, qsize: float) -> tuple[np.ndarray, np.ndarray]:
    """(image, quad) padded where the quad (plus its border) leaves the photo, as FFHQ did.

    When padding is needed every side gets at least 0.3 qsize of reflected photo; the pad is blurred (sigma
    0.02 qsize; the blur also fades a third of the pad width into the photo) and fades linearly into the median
    colour towards the outer edge, so no hard seam or mirrored face reaches the generator.
    """
    h, w = rgb.shape[:2]
    b = _border(qsize)
    x0, y0, x1, y1 = _quad_bounds(quad)
    pad = np.array([max(-x0 + b, 0), max(-y0 + b, 0), max(x1 - w + b, 0), max(y1 - h + b, 0)])  # left top right bottom
    if pad.max() <= b - 4:
        return rgb, quad
    pad = np.maximum(np.maximum(pad, int(np.rint(qsize * 0.3))), 1)
    img = np.pad(rgb.astype(np.float32), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
    H, W = img.shape[:2]
    yy, xx = np.ogrid[:H, :W]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    # [H, W, 1]: 1 on the outer edge, 0 on the photo's edge, negative inside the photo
    mask = np.maximum(1.0 - np.minimum(xx / pad[0], (W - 1 - xx) / pad[2]),
                      1.0 - np.minimum(yy / pad[1], (H - 1 - yy) / pad[3]))[..., None]
    sigma = qsize * 0.02
    if sigma > 0:
        blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), quad + pad[:2]


def ffhq_transform(rgb: np.ndarray, quad: np.ndarray, resolution: int) -> np.ndarray:
    """The quad resampled bilinearly to 4R x 4R, then Lanczos-shrunk to R x R (FFHQ: 4096, then 1024)."""
    R = int(resolution)
    T = _OVERSAMPLE * R
    corners = tuple(float(v) for v in (quad + 0.5).flatten())  # PIL counts from pixel edges: NW, SW, SE, NE
    big = Image.fromarray(np.ascontiguousarray(rgb)).transform((T, T), Image.Transform.QUAD, corners,
                                                                 Image.Resampling.BILINEAR)
    return np.asarray(big.resize((R, R), Image.Resampling.LANCZOS))


def centre_crop(rgb: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The largest centred square resized to [R, R, 3], and its corners as a quad (TL, BL, BR, TR)."""
    _check_rgb(rgb)
    y0, x0, s = centre_square(*rgb.shape[:2])
    image = centre_crop_resize(rgb, resolution)  # the same square as the quad, Lanczos-resized
    e = np.array([[x0, y0], [x0, y0 + s], [x0 + s, y0 + s], [x0 + s, y0]], dtype=np.float64) - 0.5
    return image, e


# -------------------------------------------------------------------------------------------------- public


def align_face(rgb: np.ndarray, resolution: int, *, landmarks: Landmarks | None = None,
               aligner: str = "auto") -> Alignment:
    """Align the largest face of `rgb` ([H, W, 3] uint8 RGB) to an [R, R, 3] FFHQ-style crop.

    `aligner` finds the landmarks ("auto": dlib-68 with the faces extra, else haar; see resolve_aligner); with
    `landmarks` given, detection is skipped. Without a face the centre crop is returned with `aligned=False` and
    a warning.
    """
    _check_rgb(rgb)
    if int(resolution) < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    box, n_faces, used = None, 1, "given"
    if landmarks is None:
        used = resolve_aligner(aligner)
        landmarks, box, n_faces = detect_landmarks(rgb, used)
    if landmarks is None:
        image, quad = centre_crop(rgb, resolution)
        return Alignment(image=image, aligned=False, landmarks=None, face_box=None, quad=quad, n_faces=0,
                         warning="no face found; used the centre crop", aligner=used)
    warnings = []
    if n_faces > 1:
        warnings.append(f"{n_faces} faces found; aligned the largest")
    if landmarks.estimated:
        warnings.append(f"{', '.join(landmarks.estimated)} not found; estimated from the face")
    quad = ffhq_quad(landmarks.left_eye, landmarks.right_eye, landmarks.mouth)
    image = warp_quad(rgb, quad, resolution)
    return Alignment(image=image, aligned=True, landmarks=landmarks, face_box=box, quad=quad, n_faces=n_faces,
                     warning="; ".join(warnings) or None, aligner=used)


def _check_rgb(rgb: np.ndarray) -> None:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected a uint8 [H, W, 3] RGB array, got {got}")
