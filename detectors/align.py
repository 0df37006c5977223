"""Face alignment: find a face, its eyes and mouth, and cut the FFHQ-style oriented square around it.

A StyleGAN2 generator can only reproduce faces placed the way its training faces were, so the projector needs
its targets aligned first. Three steps, each a function that can be used alone:

- `detect_landmarks`: OpenCV's bundled Haar cascades (face, eyes, smile). Coarse but dependency-free; any
  landmark that is not found is estimated from the face geometry and named in `Landmarks.estimated`.
- `ffhq_quad`: the FFHQ recipe, eye centres and mouth centre -> the oriented square to crop (pure).
- `warp_quad`: resample that square to the output resolution, prefiltered when shrinking, with the parts outside
  the photo filled by reflection that fades into a blur and the mean colour (pure).

`align_face` runs all three and falls back to a centre crop when no face is found.

Where the landmarks land: the recipe puts the eyes at exactly x = 0.375 and 0.625 of the output (the square is
four eye distances wide) and, when the eye distance sets the size, the eyes at y = 0.5 - r / 40 and the mouth at
y = 0.5 + 9 r / 40, with r = |eye_avg -> mouth| / |eye distance|. For the portraits' canonical face
(`CANONICAL_LANDMARKS`, r = 0.94) that is y = 0.477 and 0.711, about 2 px at 256 below the canonical 0.469 and
0.703: the FFHQ recipe is kept as it is, since it is what official FFHQ generators were trained on.

Coordinates: (x, y) in pixels, pixel (i, j) centred at x = i, y = j (OpenCV's convention). A fraction f of the
output width therefore sits at pixel coordinate f * R - 0.5.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from generator.util.imaging import centre_crop_resize, centre_square

# The project's canonical face (the procedural portraits' layout, close to FFHQ's mean), as fractions of the
# image (x, y). `align_face` lands within about 2 px at 256 of it; see the module docstring.
CANONICAL_LANDMARKS = {"left_eye": (0.376, 0.469), "right_eye": (0.625, 0.469), "mouth": (0.5, 0.703)}

_DETECT_MIN_SIDE = 320  # faces are searched on a copy whose long side is at least this (pixels; upscaled <= 4x)
_DETECT_MAX_SIDE = 640  # ... and at most this (pixels)
_FACE_CROP_WIDTH = 200  # eyes and mouth are searched on the face box rescaled to this width (pixels)
_SEARCH_ANGLES = (0.0, 25.0, -25.0)  # the image is searched turned by each of these (degrees)
_MOUTH_PER_EYE_DISTANCE = 0.94  # |eye_avg -> mouth| / |left -> right eye| of a typical (and canonical) face

# Landmarks of a typical frontal face as fractions of an OpenCV Haar face box (x, y), used when not detected.
_BOX_LANDMARKS = {"left_eye": (0.30, 0.37), "right_eye": (0.70, 0.37), "mouth": (0.50, 0.77)}


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

    def to_json(self) -> dict:
        """Everything but the image, as plain JSON types."""
        return {
            "aligned": self.aligned,
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


# ----------------------------------------------------------------------------------------------- detection


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


def detect_landmarks(rgb: np.ndarray) -> tuple[Landmarks | None, tuple[int, int, int, int] | None, int]:
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


# ------------------------------------------------------------------------------------------------ geometry


def ffhq_quad(left_eye, right_eye, mouth) -> np.ndarray:
    """The FFHQ crop square from eye centres and mouth centre: [4, 2] corners TL, BL, BR, TR (source pixels).

    The square's x axis runs along the eye line corrected by the eye-to-mouth direction; its half-size is the
    larger of twice the eye distance and 1.8 times the eye-to-mouth distance; its centre sits a tenth of the way
    from the eyes to the mouth.
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


def warp_quad(rgb: np.ndarray, quad: np.ndarray, resolution: int) -> np.ndarray:
    """Resample the quad of `rgb` to [R, R, 3] uint8.

    Shrinking by 2x or more goes through a Gaussian pyramid first, so the Lanczos resampling that follows never
    aliases. Where the quad leaves the photo, the reflected photo fades into a blurred copy and then into the mean
    colour with the distance from the photo's edge, so that no hard mirror seam reaches the generator.
    """
    _check_rgb(rgb)
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    R = int(resolution)
    side = (np.hypot(*(q[3] - q[0])) + np.hypot(*(q[1] - q[0]))) / 2  # source pixels per quad side
    src = rgb
    while side / R >= 2.0 and min(src.shape[:2]) >= 8:
        src = cv2.pyrDown(src)  # output pixel i is centred on input pixel 2i
        q, side = q / 2.0, side / 2.0
    M = quad_to_output(q, R)  # [2, 3]
    out = cv2.warpAffine(src, M, (R, R), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)

    # How far outside the photo each output pixel was taken from, in units of the quad's side.
    Minv = cv2.invertAffineTransform(M)
    gx, gy = np.meshgrid(np.arange(R, dtype=np.float64), np.arange(R, dtype=np.float64))
    sx = Minv[0, 0] * gx + Minv[0, 1] * gy + Minv[0, 2]
    sy = Minv[1, 0] * gx + Minv[1, 1] * gy + Minv[1, 2]
    h, w = src.shape[:2]
    dx = np.maximum(np.maximum(-0.5 - sx, sx - (w - 0.5)), 0.0)
    dy = np.maximum(np.maximum(-0.5 - sy, sy - (h - 0.5)), 0.0)
    t = np.hypot(dx, dy) / side  # [R, R]
    if not (t > 0).any():
        return out
    img = out.astype(np.float32)
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=max(1.0, 0.02 * R), borderType=cv2.BORDER_REFLECT)
    inside = t == 0
    mean = np.median(img[inside], axis=0) if inside.any() else np.median(src.reshape(-1, 3), axis=0)
    w_blur = np.clip(t * 16.0, 0.0, 1.0)[..., None]  # fully blurred 1/16 of a side out
    w_mean = np.clip(t * 4.0, 0.0, 1.0)[..., None] ** 2  # fully the mean colour a quarter of a side out
    img += (blurred - img) * w_blur
    img += (mean - img) * w_mean
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def centre_crop(rgb: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The largest centred square resized to [R, R, 3], and its corners as a quad (TL, BL, BR, TR)."""
    _check_rgb(rgb)
    y0, x0, s = centre_square(*rgb.shape[:2])
    image = centre_crop_resize(rgb, resolution)  # the same square as the quad, Lanczos-resized
    e = np.array([[x0, y0], [x0, y0 + s], [x0 + s, y0 + s], [x0 + s, y0]], dtype=np.float64) - 0.5
    return image, e


# -------------------------------------------------------------------------------------------------- public


def align_face(rgb: np.ndarray, resolution: int, *, landmarks: Landmarks | None = None) -> Alignment:
    """Align the largest face of `rgb` ([H, W, 3] uint8 RGB) to an [R, R, 3] FFHQ-style crop.

    With `landmarks` given, detection is skipped. Without a face the centre crop is returned with
    `aligned=False` and a warning.
    """
    _check_rgb(rgb)
    if int(resolution) < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    box, n_faces = None, 1
    if landmarks is None:
        landmarks, box, n_faces = detect_landmarks(rgb)
    if landmarks is None:
        image, quad = centre_crop(rgb, resolution)
        return Alignment(image=image, aligned=False, landmarks=None, face_box=None, quad=quad, n_faces=0,
                         warning="no face found; used the centre crop")
    warnings = []
    if n_faces > 1:
        warnings.append(f"{n_faces} faces found; aligned the largest")
    if landmarks.estimated:
        warnings.append(f"{', '.join(landmarks.estimated)} not found; estimated from the face")
    quad = ffhq_quad(landmarks.left_eye, landmarks.right_eye, landmarks.mouth)
    image = warp_quad(rgb, quad, resolution)
    return Alignment(image=image, aligned=True, landmarks=landmarks, face_box=box, quad=quad, n_faces=n_faces,
                     warning="; ".join(warnings) or None)


def _check_rgb(rgb: np.ndarray) -> None:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected a uint8 [H, W, 3] RGB array, got {got}")
