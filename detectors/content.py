"""How much an image has to say: the check behind the verdict 'insufficient'.

A projection detector calls 'generated' what the generator reproduces well, and a flat image is reproduced well by
almost anything: one colour, a plain gradient, a heavily blurred picture, a crop enlarged from a few pixels. Such
an image carries no evidence either way, so it is not projected at all: its verdict is `insufficient`, with the
measures that decided it in the row.

Two measures, on the luminance of the image as it is projected (at the model's resolution, grey levels 0-255):

- `contrast`: the standard deviation of the luminance (0 for one colour);
- `detail`: the RMS of the luminance minus its Gaussian blur of sigma DETAIL_SIGMA px (the energy of the finest
  scales: 0 for one colour and for a linear gradient, near 0 for a blurred image).

The thresholds are not chosen by hand: `fit_content_check` puts each at the CONTENT_QUANTILE-quantile of the
images the calibration was fitted on (the model's images and the real ones, clean and degraded: blurred, softened,
denoised, re-compressed, post-processed), and they are stored in the calibration (`Calibration.content`). A
calibration's error rates are measured on those images only; an image flatter than nearly all of them is outside
what it can vouch for. (Measured on the bundled model: detail is about 7 on clean renders and the model's images
alike, 1-6 after a blur of sigma 1, 0.4-2.7 after sigma 2, 0.2-0.55 after sigma 6, at most 0.3 for gradients.)
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

MEASURES = ("contrast", "detail")
DETAIL_SIGMA = 1.0  # px at the model's resolution
CONTENT_QUANTILE = 0.005  # share of the calibration's images the check would set aside
MIN_IMAGES = 10  # a calibration of fewer images gets no content check (a quantile of a handful means nothing)


def content_measures(pixels: np.ndarray) -> dict[str, float]:
    """{'contrast', 'detail'} of a uint8 [H, W, 3] RGB image (grey levels)."""
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, (pixels.dtype, pixels.shape)
    grey = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma
    fine = grey - cv2.GaussianBlur(grey, (0, 0), sigmaX=DETAIL_SIGMA, borderType=cv2.BORDER_REFLECT)
    return {"contrast": float(grey.std()), "detail": float(np.sqrt(np.mean(fine * fine)))}


def fit_content_check(measures: Sequence[dict[str, float]], quantile: float = CONTENT_QUANTILE) -> dict:
    """The check's thresholds from the content_measures of a calibration's images (both classes):
    {'thresholds': {measure: value}, 'quantile', 'n'}."""
    if len(measures) < MIN_IMAGES:
        raise ValueError(f"a content check needs the measures of at least {MIN_IMAGES} images, got {len(measures)}")
    # 'lower': a measured value, so that below a few hundred images nothing is set aside but the flattest outliers
    thresholds = {k: float(np.quantile([r[k] for r in measures], quantile, method="lower")) for k in MEASURES}
    return {"thresholds": thresholds, "quantile": quantile, "n": len(measures)}


def insufficient_reason(measures: dict[str, float], check: dict | None) -> str | None:
    """Why an image is too flat to judge under `check` (fit_content_check's dict), or None when it is not (or when
    there is no check)."""
    if not check:
        return None
    low = [f"{k} {measures[k]:.2f} < {t:.2f}" for k, t in check["thresholds"].items() if measures[k] < t]
    if not low:
        return None
    share = check.get("quantile", CONTENT_QUANTILE)
    return (f"too little information to judge ({', '.join(low)}: flatter than {1 - share:.1%} of the images the "
            "calibration was measured on); a flat, uniform or blurred image is reproduced well whoever made it")
