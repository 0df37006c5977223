"""Calibration: turning projection features into P(generated) and a verdict, and knowing when that is valid.

A calibration is fitted on the features (detectors.scoring) of images the model generated from fresh seeds and
of real images, projected with the same settings. It records what it is valid for (the model's sha256, the
projector settings and their fingerprint, the perceptual network, whether images were aligned), and
`check_compatible` refuses scores made any other way.

Two kinds:

- `logistic`: L2-regularised logistic regression on standardised (and, for distances, log) features, fitted with
  Newton's method. The two classes get equal total weight, so the probability assumes even prior odds; the L2
  term keeps coefficients finite on separable data (which is the usual case: that is the point of the method).
- `threshold`: the paper's decision on the LPIPS distance alone: the same fit on log(lpips) only, so the
  probability is a decreasing function of lpips and `threshold` is the lpips below which the verdict is
  'generated'.

Verdict bands (`t_generated`, `t_real`), chosen on out-of-fold (cross-validated) probabilities, because in-sample
probabilities on separable data are over-confident:

- `t_generated` = max(0.5, the smallest value that puts at most floor(1% of n_real) of the real images at or
  above it, the 99th percentile of a normal fit to the reals' logit(P)). A forensic 'generated' must be rare on
  real images: with fewer than 100 reals that means above every real image seen. The parametric tail is there
  because an empirical 1% quantile of ~100 images rests on one or two of them: measured on the bundled model,
  the empirical rule alone let 7% of 100 new held-out real images through (the fit: 0-2%).
- `t_real` = min(0.5, the largest value that puts at most floor(0.25% of n_generated) generated images at or
  below it, the 0.25th percentile of a normal fit to the generated images' logit(P)). 'real' is a claim too, and
  must be rare on generated images: the target is 1% of them, and `detect`'s cascade has three stages that can
  each say 'real' (the guess alone, 25 steps, the second look), so each gets a quarter of it. With 300 generated
  images (37 per group) the rule at 1% let 1.6% of 500 fresh ones through (bench.stress); it is the tail of
  projections that did not finish, so the bundled default and fast calibrations use 1,300 generated images.
- between the two: 'uncertain', the honest answer where the classes overlap.

Metrics (`Calibration.metrics`): the top-level `auc`, `tpr_at_1fpr`, `tpr_at_5fpr`, `roc` are the k-fold
cross-validated estimate when the data allow (`estimate` says which), `train` holds the same on the calibration
data itself, plus the rates of each verdict per class and lpips histograms of both classes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from detectors.results import now_iso, sgproject_version
from generator.util.errors import SGProjectError
from generator.util.files import atomic_path, write_json_atomic

FORMAT = "sgproject-calibration"
FORMAT_VERSION = 1
KINDS = ("logistic", "threshold")
DEFAULT_FEATURES = ("lpips", "psnr", "w_typicality", "noise_gaussianity")  # detectors.scoring.FEATURES
CALIBRATIONS_DIR = Path(__file__).parent / "calibrations"  # bundled calibrations: <model name>.json

L2 = 1.0  # ridge strength on the standardised coefficients, in units of one (weighted) sample
CV_FOLDS = 5  # folds of the held-out estimate (fewer when a class has fewer images)
MAX_FPR = 0.01  # at most this fraction of the calibration's reals may be called 'generated'
MAX_MISS = 0.0025  # at most this fraction of its generated images may be called 'real' (see the module docstring)
CONSTANT_SPREAD = 1e-5  # relative spread below which a feature is constant (float32 rounding is ~1e-7 per op)
Z_CLIP = 8.0  # standardised features are clipped to +-Z_CLIP: far outside the data, extrapolation stops
HIST_BINS = 20

# How each feature is made finite and roughly symmetric before standardising: (transform, low clip, high clip).
# Distances are ratio-scaled (log); PSNR is inf for a perfect reconstruction (clipped at 100 dB).
TRANSFORMS = {
    "lpips": ("log", 1e-6, 10.0),
    "lpips_wplus": ("log", 1e-6, 10.0),
    "lpips_ref_flip": ("log", 1e-6, 10.0),
    "lpips_ref_guess": ("log", 1e-6, 10.0),
    "detail": ("log", 1e-3, 1e3),
    "contrast": ("log", 1e-3, 1e3),
    "psnr": ("identity", -20.0, 100.0),
}
DEFAULT_TRANSFORM = ("identity", -1e6, 1e6)
REF_PREFIX = "lpips_ref_"  # features named so are detectors.scoring's complexity references


class CalibrationError(SGProjectError):
    """A calibration file cannot be read, cannot be fitted, or does not apply to these scores."""


# ------------------------------------------------------------------------------------------------- ROC metrics


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): the ROC of the rule 'score >= threshold -> generated' (labels: 1 = generated).

    One point per distinct score, highest first, after a first point (0, 0) at threshold +inf. Tied scores
    share a point, so the area under this curve counts ties as 1/2.
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    assert s.shape == y.shape and s.ndim == 1, (s.shape, y.shape)
    if y.all() or not y.any():
        raise ValueError("a ROC curve needs both classes")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each run of equal scores
    tps, fps = np.cumsum(y)[last], np.cumsum(~y)[last]
    fpr = np.r_[0.0, fps / (~y).sum()]
    tpr = np.r_[0.0, tps / y.sum()]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: P(a generated image scores above a real one), ties counting 1/2."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[int], fpr: float) -> float:
    """The largest true-positive rate of a threshold whose false-positive rate is at most `fpr`."""
    f, t, _ = roc_curve(scores, labels)
    return float(t[f <= fpr + 1e-12].max())


# ---------------------------------------------------------------------------------------- logistic regression


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)), without overflow


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = L2, iters: int = 100) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method; classes weighted equally; intercept unpenalised.

    x: [N, D] standardised features; y: [N] 0/1. Minimises sum_i v_i * logloss_i + l2/2 * |coef|^2 with weights
    v summing to N/2 per class. Deterministic; finite on separable data thanks to the L2 term. (coef [D], b)
    """
    n, d = x.shape
    y = y.astype(np.float64)
    n1, n0 = y.sum(), n - y.sum()
    v = np.where(y > 0, n / (2 * n1), n / (2 * n0))  # [N]
    a = np.c_[x, np.ones(n)]  # [N, D+1]: the last column carries the intercept
    beta = np.zeros(d + 1)
    pen = np.r_[np.full(d, l2), 0.0]

    def objective(b: np.ndarray) -> float:
        z = a @ b
        return float(np.sum(v * (np.logaddexp(0, z) - y * z)) + 0.5 * np.sum(pen * b * b))

    f = objective(beta)
    for _ in range(iters):
        p = sigmoid(a @ beta)
        grad = a.T @ (v * (p - y)) + pen * beta
        hess = (a * (v * p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:  # backtracking: a Newton step can overshoot where the data are separable
            f_new = objective(beta - t * step)
            if f_new <= f:
                break
            t *= 0.5
        beta, f_old, f = beta - t * step, f, f_new
        if abs(f_old - f) < 1e-12 * max(1.0, abs(f)) or np.abs(t * step).max() < 1e-10:
            break
    return beta[:d], float(beta[d])


# ------------------------------------------------------------------------------------------------ features


def transform_feature(name: str, values: np.ndarray, transforms: dict | None = None) -> np.ndarray:
    """Clip to the feature's range (inf included) and apply its transform; NaN stays NaN."""
    kind, lo, hi = (transforms or TRANSFORMS).get(name, DEFAULT_TRANSFORM)
    v = np.clip(np.asarray(values, dtype=np.float64), lo, hi)
    return np.log(v) if kind == "log" else v


def feature_matrix(rows: Sequence[dict], features: Sequence[str], transforms: dict | None = None) -> np.ndarray:
    """[N, D] transformed features of feature dicts. A missing feature is a CalibrationError."""
    out = np.empty((len(rows), len(features)))
    for j, name in enumerate(features):
        col = []
        for i, r in enumerate(rows):
            if name not in r or r[name] is None:
                raise CalibrationError(
                    f"feature {name!r} is missing (image {i + 1}); the calibration needs {', '.join(features)}"
                    + (": score with --wplus" if name == "lpips_wplus" else "")
                )
            try:
                col.append(float(r[name]))
            except (TypeError, ValueError):
                raise CalibrationError(f"feature {name!r} is not a number: {r[name]!r}") from None
        out[:, j] = transform_feature(name, np.array(col), transforms)
    return out


def _column_stats(x: np.ndarray) -> list[tuple[float, float, bool]]:
    """(mean, spread, constant) of each column over its finite values; constant: no spread beyond float32
    rounding (an empty column counts as constant with mean 0)."""
    out = []
    for j in range(x.shape[1]):
        col = x[np.isfinite(x[:, j]), j]
        m, s = (float(col.mean()), float(col.std())) if len(col) else (0.0, 0.0)
        out.append((m, s, s <= CONSTANT_SPREAD * max(1.0, abs(m))))
    return out


def _standardise_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of each column over its finite values (spread 1 for a constant column)."""
    stats = _column_stats(x)
    return np.array([m for m, _, _ in stats]), np.array([1.0 if c else s for _, s, c in stats])


def constant_features(x: np.ndarray, features: Sequence[str]) -> dict[str, float]:
    """Features whose finite values do not spread beyond float32 rounding: {name: spread}. They carry no
    information, and standardising them would blow rounding noise up into a fake signal."""
    return {name: s for name, (_, s, c) in zip(features, _column_stats(x)) if c}


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised, NaN -> 0 (the calibration mean: no evidence either way), clipped to +-Z_CLIP."""
    z = (x - mean) / std
    return np.clip(np.nan_to_num(z, nan=0.0), -Z_CLIP, Z_CLIP)


def _fit_raw(xg: np.ndarray, xr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, std, coef, intercept) fitted on transformed generated [G, D] and real [R, D] features."""
    x = np.r_[xg, xr]
    y = np.r_[np.ones(len(xg)), np.zeros(len(xr))]
    mean, std = _standardise_fit(x)
    coef, b = fit_logistic(_standardise(x, mean, std), y)
    return mean, std, coef, b


def _predict_raw(x: np.ndarray, mean, std, coef, b) -> np.ndarray:
    return sigmoid(_standardise(x, mean, std) @ coef + b)


def _folds(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index of each of n items: a seeded permutation dealt round-robin, so folds differ by at most one."""
    f = np.empty(n, dtype=int)
    f[rng.permutation(n)] = np.arange(n) % k
    return f


def cross_validate(xg: np.ndarray, xr: np.ndarray, folds: int = CV_FOLDS, seed: int = 0) -> np.ndarray | None:
    """Out-of-fold P(generated) for every image (generated first, then real), by stratified k-fold; None when a
    class has fewer than 2 images (nothing can be held out). Deterministic for a given seed."""
    k = min(folds, len(xg), len(xr))
    if k < 2:
        return None
    rng = np.random.default_rng(seed)
    fg, fr = _folds(len(xg), k, rng), _folds(len(xr), k, rng)
    p = np.empty(len(xg) + len(xr))
    for i in range(k):
        mean, std, coef, b = _fit_raw(xg[fg != i], xr[fr != i])
        p[: len(xg)][fg == i] = _predict_raw(xg[fg == i], mean, std, coef, b)
        p[len(xg) :][fr == i] = _predict_raw(xr[fr == i], mean, std, coef, b)
    return p


# ---------------------------------------------------------------------------------------------- thresholds


def _logit_normal_quantile(p: np.ndarray, q: float) -> float:
    """The q-quantile of a normal distribution fitted to logit(p) (p clipped to [1e-6, 1 - 1e-6]), as a probability."""
    from scipy.stats import norm  # local: scipy.stats is heavy to import and only fitting needs it

    if len(p) < 2:
        return 0.5
    z = np.log(np.clip(p, 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(p, 1e-6, 1 - 1e-6))
    return float(sigmoid(np.array(z.mean() + norm.ppf(q) * z.std(ddof=1))))


def verdict_thresholds(p_gen: np.ndarray, p_real: np.ndarray, max_fpr: float = MAX_FPR,
                       max_miss: float = MAX_MISS) -> tuple[float, float]:
    """(t_generated, t_real) by the rule in the module docstring."""
    real_desc = np.sort(p_real)[::-1]
    k = int(math.floor(max_fpr * len(p_real)))  # reals allowed at or above t_generated
    t_gen = 0.5 if k >= len(real_desc) else max(0.5, float(np.nextafter(real_desc[k], np.inf)))
    t_gen = min(max(t_gen, _logit_normal_quantile(p_real, 1 - max_fpr)), 1.0)
    gen_asc = np.sort(p_gen)
    k = int(math.floor(max_miss * len(p_gen)))  # generated allowed at or below t_real
    t_real = 0.5 if k >= len(gen_asc) else min(0.5, float(np.nextafter(gen_asc[k], -np.inf)))
    t_real = max(min(t_real, _logit_normal_quantile(p_gen, max_miss)), 0.0)
    if t_real >= t_gen:  # both 0.5: keep the bands disjoint
        t_real = float(np.nextafter(t_gen, -np.inf))
    return t_gen, max(t_real, 0.0)


def grouped_thresholds(p_gen: np.ndarray, p_real: np.ndarray, g_gen: Sequence[str] | None, g_real: Sequence[str] | None,
                       max_fpr: float = MAX_FPR, max_miss: float = MAX_MISS) -> tuple[float, float]:
    """verdict_thresholds held in every group: t_generated is the largest of the real groups' own, t_real the
    smallest of the generated groups' own, so that no group of real images (blurred, re-compressed, ...) and no
    group of generated ones (JPEG, resized, ...) is sacrificed to the average. Without groups: verdict_thresholds."""
    t_gen, t_real = verdict_thresholds(p_gen, p_real, max_fpr, max_miss)
    g_gen = np.asarray(g_gen if g_gen is not None else ["all"] * len(p_gen))
    g_real = np.asarray(g_real if g_real is not None else ["all"] * len(p_real))
    for g in sorted(set(g_real.tolist())):
        t_gen = max(t_gen, verdict_thresholds(p_gen, p_real[g_real == g], max_fpr, max_miss)[0])
    for g in sorted(set(g_gen.tolist())):
        t_real = min(t_real, verdict_thresholds(p_gen[g_gen == g], p_real, max_fpr, max_miss)[1])
    if t_real >= t_gen:
        t_real = float(np.nextafter(t_gen, -np.inf))
    return t_gen, max(t_real, 0.0)


def group_rates(p: np.ndarray, groups: Sequence[str], t_gen: float, t_real: float) -> dict:
    """{group: {'n', 'generated', 'uncertain', 'real' (shares), 'median_p'}}."""
    groups = np.asarray(groups)
    out = {}
    for g in sorted(set(groups.tolist())):
        pg = p[groups == g]
        v = [verdict_of(float(x), t_gen, t_real) for x in pg]
        out[g] = {"n": int(len(pg)), **{k: v.count(k) / len(v) for k in ("generated", "uncertain", "real")},
                  "median_p": float(np.median(pg))}
    return out


def verdict_of(p: float, t_generated: float, t_real: float) -> str:
    """'generated' (p >= t_generated), 'real' (p <= t_real) or 'uncertain'."""
    if p >= t_generated:
        return "generated"
    if p <= t_real:
        return "real"
    return "uncertain"


def _rates(p_gen: np.ndarray, p_real: np.ndarray, t_gen: float, t_real: float) -> dict:
    """Fraction of each class given each verdict."""
    out = {}
    for name, p in (("generated", p_gen), ("real", p_real)):
        v = [verdict_of(float(x), t_gen, t_real) for x in p]
        out[name] = {k: v.count(k) / len(v) for k in ("generated", "uncertain", "real")}
    return out


def _roc_summary(p_gen: np.ndarray, p_real: np.ndarray, t_gen: float, t_real: float) -> dict:
    scores = np.r_[p_gen, p_real]
    labels = np.r_[np.ones(len(p_gen)), np.zeros(len(p_real))]
    fpr, tpr, thr = roc_curve(scores, labels)
    return {
        "auc": roc_auc(scores, labels),
        "tpr_at_1fpr": tpr_at_fpr(scores, labels, 0.01),
        "tpr_at_5fpr": tpr_at_fpr(scores, labels, 0.05),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": [None if math.isinf(t) else t for t in thr]},
        "verdict_rates": _rates(p_gen, p_real, t_gen, t_real),
    }


def _histograms(gen_lpips: np.ndarray, real_lpips: np.ndarray, bins: int = HIST_BINS) -> dict:
    both = np.r_[gen_lpips, real_lpips]
    both = both[np.isfinite(both)]
    edges = np.histogram_bin_edges(both if len(both) else [0.0, 1.0], bins=bins)
    count = lambda v: np.histogram(v[np.isfinite(v)], bins=edges)[0].tolist()  # noqa: E731
    return {"lpips": {"bins": edges.tolist(), "generated": count(gen_lpips), "real": count(real_lpips)}}


# ---------------------------------------------------------------------------------------------- Calibration


@dataclass
class Calibration:
    model_sha256: str  # of the generator the calibration was made with
    model_name: str
    projector: dict  # ProjectorConfig.to_dict()
    projector_fingerprint: str  # ProjectorConfig.fingerprint()
    perceptual: str  # PerceptualDistance.identity
    align: bool  # whether images were face-aligned before projection
    kind: str  # 'logistic' or 'threshold' (on lpips alone)
    features: list[str]  # in the order of mean/std/coef
    mean: list[float]  # of each transformed feature
    std: list[float]  # of each transformed feature (1 for a constant one)
    coef: list[float]  # on the standardised features
    intercept: float
    threshold: float | None  # 'threshold' kind: lpips at or below it -> 'generated'; None for 'logistic'
    t_generated: float  # P(generated) at or above which the verdict is 'generated'
    t_real: float  # P(generated) at or below which the verdict is 'real'; in between 'uncertain'
    metrics: dict  # see the module docstring
    created: str  # ISO 8601, UTC
    sgproject_version: str
    n_generated: int
    n_real: int
    real_source: str  # where the real images came from (a folder)
    generated_seeds: str  # e.g. '1000000-1000199'
    seed: int = 0  # the projection seed used for both classes
    transforms: dict = field(default_factory=lambda: {k: list(v) for k, v in TRANSFORMS.items()})
    content: dict | None = None  # detectors.content.fit_content_check: flatter images are 'insufficient'; None: none
    groups: dict | None = None  # {'generated': {group: n}, 'real': {group: n}}: the bands hold per group; None: one
    source_path: str | None = field(default=None, compare=False)  # the file it was loaded from (not saved)

    # ------------------------------------------------------------------ judging

    def _transforms(self) -> dict:
        return {k: tuple(v) for k, v in self.transforms.items()}

    def probabilities(self, rows: Sequence[dict]) -> np.ndarray:
        """P(generated) for each feature dict. [N]"""
        x = feature_matrix(rows, self.features, self._transforms())
        return _predict_raw(x, np.array(self.mean), np.array(self.std), np.array(self.coef), self.intercept)

    def probability(self, features: dict) -> float:
        """P(generated) of one image's features (even prior odds). A missing feature is a CalibrationError."""
        return float(self.probabilities([features])[0])

    def references(self) -> tuple[str, ...]:
        """The complexity references (detectors.scoring.REFERENCES) among the features."""
        return tuple(f[len(REF_PREFIX):] for f in self.features if f.startswith(REF_PREFIX))

    def verdict(self, p: float) -> str:
        """'generated' (p >= t_generated), 'real' (p <= t_real) or 'uncertain'."""
        return verdict_of(float(p), self.t_generated, self.t_real)

    def lpips_at(self, p: float) -> float | None:
        """The lpips at which P(generated) = p, other features at their calibration means (exact for the
        'threshold' kind); None when lpips has no weight."""
        if "lpips" not in self.features or not 0 < p < 1:
            return None
        j = self.features.index("lpips")
        if abs(self.coef[j]) < 1e-12:
            return None
        z = (math.log(p / (1 - p)) - self.intercept) / self.coef[j]
        z = min(max(z, -Z_CLIP), Z_CLIP)
        kind = self._transforms().get("lpips", DEFAULT_TRANSFORM)[0]
        x = self.mean[j] + self.std[j] * z
        return math.exp(x) if kind == "log" else x

    # ------------------------------------------------------------------ validity

    def check_compatible(
        self, *, model_sha256: str, projector_fingerprint: str, perceptual: str, align: bool,
        projector: dict | None = None,  # optional: the settings behind the fingerprint, to name what differs
    ) -> None:
        """Refuse scores made differently from the calibration's: CalibrationError naming each difference."""
        where = f"the calibration{f' {self.source_path}' if self.source_path else ''}"
        problems = []
        if model_sha256 != self.model_sha256:
            problems.append(f"model sha256 {model_sha256[:12]} differs from the calibration's {self.model_sha256[:12]} "
                            f"({self.model_name})")
        if projector_fingerprint != self.projector_fingerprint:
            mine = self.projector
            if projector is not None:
                keys = sorted(k for k in set(projector) | set(mine) if projector.get(k) != mine.get(k))
                diff = ": " + ", ".join(f"{k}={projector.get(k)!r} (calibration: {mine.get(k)!r})" for k in keys)
            else:
                diff = f" (calibration: num_steps={mine.get('num_steps')}, space={mine.get('space')})"
            problems.append(f"projector settings fingerprint {projector_fingerprint} differs from "
                            f"{self.projector_fingerprint}{diff}")
        if perceptual != self.perceptual:
            problems.append(f"perceptual network {perceptual} differs from the calibration's {self.perceptual}")
        if bool(align) != bool(self.align):
            problems.append(f"align is {'on' if align else 'off'} but the calibration was made with it "
                            f"{'on' if self.align else 'off'}")
        if problems:
            raise CalibrationError(
                f"{where} does not apply: " + "; ".join(problems)
                + ". Use the calibration's settings, or make a matching one with `sgproject calibrate`"
            )

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source_path")
        return {"format": FORMAT, "version": FORMAT_VERSION, **_json_safe(d)}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CalibrationError("not an sgproject calibration file")
        if d.get("version") != FORMAT_VERSION:
            raise CalibrationError(f"calibration format version {d.get('version')!r} is not supported "
                                   f"(this sgproject reads version {FORMAT_VERSION}); recalibrate")
        names = {f.name for f in dataclasses.fields(cls)} - {"source_path"}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise CalibrationError(f"calibration file is missing {', '.join(missing)}")
        cal = cls(**{k: v for k, v in d.items() if k in names})
        if cal.kind not in KINDS:
            raise CalibrationError(f"unknown calibration kind {cal.kind!r}")
        if not len(cal.features) == len(cal.mean) == len(cal.std) == len(cal.coef):
            raise CalibrationError("calibration file is inconsistent: features, mean, std and coef differ in length")
        return cal

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (a reader sees the old file or the new one)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"calibration {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CalibrationError(f"calibration {path}: cannot read it ({e})") from None
        except json.JSONDecodeError as e:
            raise CalibrationError(f"calibration {path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        try:
            cal = cls.from_dict(d)
        except CalibrationError as e:
            raise CalibrationError(f"calibration {path}: {e}") from None
        except (TypeError, ValueError) as e:
            raise CalibrationError(f"calibration {path}: malformed ({e})") from None
        cal.source_path = str(path)
        return cal


def _json_safe(obj):
    """NaN and inf -> None (strict JSON); numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ------------------------------------------------------------------------------------------------- fitting


def fit_calibration(
    gen: Sequence[dict],  # feature dicts (ImageScore.features) of generated images
    real: Sequence[dict],  # ... of real images
    *,
    kind: str = "logistic",
    features: Sequence[str] = DEFAULT_FEATURES,  # 'threshold' uses lpips alone
    model_sha256: str = "",
    model_name: str = "",
    projector: dict | None = None,
    projector_fingerprint: str = "",
    perceptual: str = "",
    align: bool = False,
    real_source: str = "",
    generated_seeds: str = "",
    seed: int = 0,
    folds: int = CV_FOLDS,
    gen_groups: Sequence[str] | None = None,  # per generated image, its group ('clean', 'jpeg75', ...); None: one
    real_groups: Sequence[str] | None = None,  # per real image, its group ('clean', 'blur1', ...); None: one
    content: dict | None = None,  # detectors.content.fit_content_check of these images, stored with the calibration
    max_miss: float = MAX_MISS,  # the share of generated images the 'real' band may take (verdict_thresholds)
) -> Calibration:
    """Fit the decision, choose the verdict bands on cross-validated probabilities (held in every group when groups
    are given), and measure it."""
    if kind not in KINDS:
        raise CalibrationError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if len(gen) < 2 or len(real) < 2:
        raise CalibrationError(
            f"a calibration needs at least 2 generated and 2 real images, got {len(gen)} and {len(real)}"
        )
    features = ["lpips"] if kind == "threshold" else list(dict.fromkeys(features))
    if not features:
        raise CalibrationError("no features to calibrate on")
    xg, xr = feature_matrix(gen, features), feature_matrix(real, features)
    dropped = constant_features(np.r_[xg, xr], features) if kind == "logistic" else {}
    if dropped:
        keep = [j for j, f in enumerate(features) if f not in dropped]
        if not keep:
            raise CalibrationError(f"every feature is constant over these images ({', '.join(features)})")
        features = [features[j] for j in keep]
        xg, xr = xg[:, keep], xr[:, keep]
    mean, std, coef, b = _fit_raw(xg, xr)
    threshold_lpips = None
    if kind == "threshold" and coef[0] >= 0:
        raise CalibrationError(
            "the generated images do not project better (lower lpips) than the real ones: the model does not "
            "reproduce its own images with these settings (more --steps?) or the real images are not real"
        )

    p_train = _predict_raw(np.r_[xg, xr], mean, std, coef, b)
    p_cv = cross_validate(xg, xr, folds)
    p_sel = p_cv if p_cv is not None else p_train  # what the verdict bands are chosen on
    ng = len(xg)
    for name, g, n in (("generated", gen_groups, ng), ("real", real_groups, len(xr))):
        if g is not None and len(g) != n:
            raise CalibrationError(f"{len(g)} group names for {n} {name} images")
    if not 0 < max_miss < 0.5:
        raise CalibrationError(f"the share of generated images the 'real' band may take must be in (0, 0.5), "
                               f"got {max_miss}")
    t_gen, t_real = grouped_thresholds(p_sel[:ng], p_sel[ng:], gen_groups, real_groups, MAX_FPR, max_miss)

    train = _roc_summary(p_train[:ng], p_train[ng:], t_gen, t_real)
    held = _roc_summary(p_cv[:ng], p_cv[ng:], t_gen, t_real) if p_cv is not None else train
    gen_lpips = np.array([float(r["lpips"]) for r in gen]) if all("lpips" in r for r in gen) else np.array([])
    real_lpips = np.array([float(r["lpips"]) for r in real]) if all("lpips" in r for r in real) else np.array([])
    metrics = {
        "estimate": f"{min(folds, ng, len(xr))}-fold cross-validation" if p_cv is not None else "training data",
        **held,
        "train": train,
        "n_generated": ng,
        "n_real": len(xr),
        "min_resolvable_fpr": 1.0 / len(xr),  # below this the reals cannot show a false-positive rate
        "max_fpr": MAX_FPR,  # the rates the bands were chosen for: reals called generated,
        "max_miss": max_miss,  # ... generated images called real
        "dropped_constant_features": dropped,  # no spread over the calibration images: left out of the fit
        "nonfinite": {f: int((~np.isfinite(np.r_[xg, xr][:, j])).sum()) for j, f in enumerate(features)},
        "histograms": _histograms(gen_lpips, real_lpips),
    }
    groups = None
    if gen_groups is not None or real_groups is not None:
        gg = list(gen_groups) if gen_groups is not None else ["all"] * ng
        gr = list(real_groups) if real_groups is not None else ["all"] * len(xr)
        metrics["groups"] = {"generated": group_rates(p_sel[:ng], gg, t_gen, t_real),
                             "real": group_rates(p_sel[ng:], gr, t_gen, t_real)}
        groups = {"generated": {g: gg.count(g) for g in sorted(set(gg))},
                  "real": {g: gr.count(g) for g in sorted(set(gr))}}
    cal = Calibration(
        model_sha256=model_sha256, model_name=model_name, projector=dict(projector or {}),
        projector_fingerprint=projector_fingerprint, perceptual=perceptual, align=bool(align), kind=kind,
        features=features, mean=mean.tolist(), std=std.tolist(), coef=coef.tolist(), intercept=b,
        threshold=None, t_generated=t_gen, t_real=t_real, metrics=_json_safe(metrics), created=now_iso(),
        sgproject_version=sgproject_version(), n_generated=ng, n_real=len(xr), real_source=real_source,
        generated_seeds=generated_seeds, seed=seed, content=content, groups=groups,
    )
    if kind == "threshold":
        threshold_lpips = cal.lpips_at(t_gen) if t_gen < 1 else 0.0
        cal.threshold = threshold_lpips
    return cal


# ---------------------------------------------------------------------------------------------- finding one


VARIANTS = ("", "fast", "deep")  # bundled calibrations of a model: the default, the guess alone, the second look


def bundled_calibration_path(model_name: str, *, variant: str = "") -> Path | None:
    """detectors/calibrations/<model_name>.json when it exists; with `variant` 'fast', <model_name>.fast.json (the
    encoder's guess alone: `detect --fast` and the cascade's first stage); 'deep', <model_name>.deep.json (the
    cascade's last stage: a longer projection of the images the default one leaves uncertain)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    path = CALIBRATIONS_DIR / f"{model_name}{'.' + variant if variant else ''}.json"
    return path if path.is_file() else None


def calibration_for(model_name: str, explicit_path: str | Path | None = None, *,
                    variant: str = "") -> Calibration | None:
    """The explicit file when given, else the model's bundled calibration (of `variant`), else None."""
    if explicit_path is not None:
        return Calibration.load(explicit_path)
    path = bundled_calibration_path(model_name, variant=variant)
    return Calibration.load(path) if path is not None else None


# -------------------------------------------------------------------------------------------------- plotting


def plot_calibration(cal: Calibration, gen: Sequence[dict], real: Sequence[dict], path: str | Path) -> Path:
    """A PNG: ROC curves (calibration data and cross-validated), lpips histograms of both classes with the
    decision threshold, and P(generated) histograms with the verdict bands."""
    # local: matplotlib is heavy to import and only plotting needs it. No pyplot: no global backend or state;
    # savefig renders with Agg.
    from matplotlib.figure import Figure

    path = Path(path)
    p_gen, p_real = cal.probabilities(gen), cal.probabilities(real)
    fig = Figure(figsize=(15, 4.5), dpi=100)
    ax_roc, ax_lp, ax_p = fig.subplots(1, 3)

    scores, labels = np.r_[p_gen, p_real], np.r_[np.ones(len(p_gen)), np.zeros(len(p_real))]
    fpr, tpr, _ = roc_curve(scores, labels)
    ax_roc.plot(fpr, tpr, drawstyle="steps-post", label=f"fitted, these images (AUC {roc_auc(scores, labels):.3f})")
    roc = cal.metrics.get("roc")
    if roc and cal.metrics.get("estimate", "").endswith("cross-validation"):
        ax_roc.plot(roc["fpr"], roc["tpr"], drawstyle="steps-post", linestyle="--",
                    label=f"{cal.metrics['estimate']} (AUC {cal.metrics['auc']:.3f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    ax_roc.axvline(0.01, color="grey", linestyle=":", linewidth=0.8)
    ax_roc.set(xlabel="false-positive rate (real called generated)", ylabel="true-positive rate",
               title="ROC", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax_roc.legend(loc="lower right", fontsize=8)

    lg = np.array([float(r["lpips"]) for r in gen])
    lr = np.array([float(r["lpips"]) for r in real])
    both = np.r_[lg, lr]
    both = both[np.isfinite(both)]
    edges = np.histogram_bin_edges(both if len(both) else [0, 1], bins=HIST_BINS)
    ax_lp.hist(lg[np.isfinite(lg)], bins=edges, alpha=0.6, label=f"generated ({len(lg)})", color="tab:red")
    ax_lp.hist(lr[np.isfinite(lr)], bins=edges, alpha=0.6, label=f"real ({len(lr)})", color="tab:blue")
    t = cal.threshold if cal.kind == "threshold" else cal.lpips_at(cal.t_generated)
    if t is not None:
        what = "threshold" if cal.kind == "threshold" else "P = t_generated, other features at their means"
        ax_lp.axvline(t, color="black", linestyle="--", label=f"{what}: {t:.4g}")
    ax_lp.set(xlabel="LPIPS to the W projection", ylabel="images", title="LPIPS distance")
    ax_lp.legend(fontsize=8)

    bins = np.linspace(0, 1, 21)
    ax_p.hist(p_gen, bins=bins, alpha=0.6, color="tab:red", label="generated")
    ax_p.hist(p_real, bins=bins, alpha=0.6, color="tab:blue", label="real")
    ax_p.axvspan(cal.t_real, cal.t_generated, color="grey", alpha=0.15, label="uncertain")
    ax_p.axvline(cal.t_generated, color="tab:red", linestyle="--", label=f"t_generated {cal.t_generated:.3g}")
    ax_p.axvline(cal.t_real, color="tab:blue", linestyle="--", label=f"t_real {cal.t_real:.3g}")
    ax_p.set(xlabel="P(generated)", ylabel="images", title=f"{cal.kind} calibration", xlim=(0, 1))
    ax_p.legend(fontsize=8)

    from detectors.report import projection_start  # local: the report module is only needed for plots

    fig.suptitle(f"{cal.model_name} ({cal.model_sha256[:12]}), {cal.perceptual}, "
                 f"{cal.projector.get('num_steps', '?')} steps {projection_start(cal.projector)}"
                 f"{', aligned' if cal.align else ''}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
