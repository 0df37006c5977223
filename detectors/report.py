"""Forensic reports of a detection run: report.html (one self-contained file), report.json and report.csv.

    write_reports(report_dir, rows, run)      what the detect engine calls at the end of a run (and on interruption)
    render_from_results(results.jsonl)        re-renders from a results file and the run.json beside it

`rows` are results rows as JSON objects (`ResultRow.to_json()`, detectors/results.py): the report reads them as
dicts, tolerating missing keys, so that hand-made or older rows still render; `run` is the run.json dict. Every key of `run` is optional: the
report shows what is there. Asset paths in rows (target, reconstruction, heatmap, video) are relative to the folder
of the results file (`base_dir`); when the reports go elsewhere, report.json and report.csv get them rewritten
relative to the report folder. report.html embeds every image as a data: URI; projection videos (rows with a
`video`, from detect --video) are too large for that, so it links them by their path relative to the report, and
the folder (report.html + assets/) must stay together.

report.html makes no network request: no CDN, no web fonts, no external CSS or JS. File names are attacker-
controlled, so everything is escaped by jinja2's autoescape, and a Content-Security-Policy that allows only the
report's own inline style and script (by hash), data: images and, with videos, media from the report's own origin
('self': local files when it is opened from disk) is a second line of defence.

report.csv is UTF-8 with a byte-order mark (so that spreadsheet programs read non-ASCII paths correctly); a text
cell that a spreadsheet would run as a formula (starting with = + - @) gets a leading apostrophe. report.json is
the lossless record.

Every file is rendered in memory first, then written to a temporary file and renamed: a failure leaves the
previous reports as they were.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import os
import re
import statistics
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

import jinja2
from PIL import Image

from detectors.results import read_results
from generator.util.errors import SGProjectError
from generator.util.files import write_bytes_atomic

FORMATS = ("html", "json", "csv")
VERDICTS = ("generated", "real", "uncertain", "insufficient", "out-of-domain")  # what a calibrated row can say
FILES = {"html": "report.html", "json": "report.json", "csv": "report.csv"}
ASSET_KEYS = ("target", "reconstruction", "heatmap")
VIDEO_KEY = "video"  # a row's projection video (detect --video)
FEATURE_ORDER = ("lpips", "psnr", "w_typicality", "noise_gaussianity", "lpips_wplus")  # known features, in order
THUMB_MAX = 256  # px: larger assets are downscaled before embedding (thumbnails are shown at 112 px)
ASSET_MAX_BYTES = 32 << 20  # an asset larger than this is not embedded
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HIST_BINS = 24


class ReportError(SGProjectError):
    """Reports cannot be made: no results file, no complete row in it, an unreadable run.json, a bad format."""


# ------------------------------------------------------------------------------------------------------- summary


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _numbers(rows: Iterable[dict], feature: str) -> list[float]:
    out = []
    for r in rows:
        v = (r.get("features") or {}).get(feature)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"n": len(values), "min": min(values), "max": max(values), "mean": statistics.fmean(values),
            "median": statistics.median(values)}


def feature_names(rows: Iterable[dict]) -> list[str]:
    """The known features in their fixed order, then any others found in rows, sorted."""
    seen = {k for r in rows for k in (r.get("features") or {})}
    return [k for k in FEATURE_ORDER if k in seen] + sorted(seen - set(FEATURE_ORDER))


def category(row: dict) -> str:
    """'error', 'generated', 'real', 'uncertain', 'insufficient' (too flat to judge: detectors/content.py),
    'out-of-domain' (not the model's kind of image: detectors/domain.py) or 'unscored' (judged, but no calibration gave a verdict)."""
    if row.get("status") != "ok":
        return "error"
    return row.get("verdict") if row.get("verdict") in VERDICTS else "unscored"


def summarize(rows: list[dict], run: dict) -> dict:
    """Counts, the paths per verdict, feature statistics, duration, thresholds and a one-line conclusion.

    counts: total, ok, error, generated, real, uncertain, insufficient, out-of-domain, unscored (ok rows without a verdict).
    """
    cats = [category(r) for r in rows]
    counts = {"total": len(rows), "ok": sum(c != "error" for c in cats), "error": cats.count("error")}
    for c in (*VERDICTS, "unscored"):
        counts[c] = cats.count(c)
    by_verdict = {c: [r.get("path") for r, rc in zip(rows, cats) if rc == c]
                  for c in ("generated", "uncertain", "real", "insufficient", "out-of-domain", "unscored", "error")}
    ok_rows = [r for r, c in zip(rows, cats) if c != "error"]
    cal = run.get("calibration") or None
    calibrated = bool(cal) or any(c in VERDICTS for c in cats)
    thresholds = None
    if isinstance(cal, dict):
        thresholds = {k: cal[k] for k in ("threshold", "t_generated", "t_real") if cal.get(k) is not None} or None
    projection_s = sum(r.get("seconds") or 0.0 for r in ok_rows)
    perceptual = str(run.get("perceptual") or "")
    partial = bool(run.get("partial"))

    warnings = []
    if "random" in perceptual:
        warnings.append(
            f"Scores were made with the deterministic random VGG backbone ({perceptual}), not the ImageNet-trained "
            "one: they are comparable only with scores made with this same backbone, never with published values."
        )
    if not calibrated and rows:
        warnings.append("No calibration: scores only, no verdicts.")
    return {
        "counts": counts,
        "by_verdict": by_verdict,
        "scores": {f: _stats(_numbers(ok_rows, f)) for f in feature_names(ok_rows)},
        "duration_s": run.get("duration_s"),
        "projection_s": round(projection_s, 3),
        "calibrated": calibrated,
        "thresholds": thresholds,
        "partial": partial,
        "warnings": warnings,
        "conclusion": conclusion(counts, calibrated),
    }


def conclusion(counts: dict, calibrated: bool) -> str:
    """E.g. '3 of 12 images flagged as generated, 2 uncertain; 1 could not be judged.'"""
    total, err = counts["total"], counts["error"]
    if total == 0:
        return "No images were judged."
    if calibrated:
        line = f"{counts['generated']} of {_plural(total, 'image')} flagged as generated"
        if counts["uncertain"]:
            line += f", {counts['uncertain']} uncertain"
        if counts.get("insufficient"):
            line += f", {counts['insufficient']} with too little information to judge"
        if counts.get("out-of-domain"):
            line += f", {counts['out-of-domain']} outside the model's domain"
    else:
        line = f"{counts['ok']} of {_plural(total, 'image')} scored; no calibration, so no verdicts"
    if err:
        line += f"; {err} could not be judged"
    return line + "."


# ------------------------------------------------------------------------------------------------------- writing


def write_reports(
    report_dir: Path,
    rows: list[dict],
    run: dict,
    *,
    formats: Iterable[str] = FORMATS,
    partial: bool = False,  # the run was interrupted (also taken from run['partial'])
    base_dir: Path | None = None,  # folder the rows' asset paths are relative to (default: report_dir)
) -> dict[str, Path]:
    """Write report.html / .json / .csv into report_dir; returns {format: path}. Atomic per file."""
    formats = tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ReportError(f"unknown report format {', '.join(bad) or '(none)'}: use {', '.join(FORMATS)}")
    report_dir = Path(report_dir)
    base_dir = Path(base_dir) if base_dir is not None else report_dir
    run = dict(run or {})
    partial = bool(partial or run.get("partial"))
    run["partial"] = partial
    rows = [dict(r) for r in rows]
    summary = summarize(rows, run)
    moved = _relocated_rows(rows, base_dir, report_dir)

    rendered: dict[str, bytes] = {}  # everything is rendered before anything is written
    for fmt in formats:
        if fmt == "html":
            html = render_html(rows, run, summary, base_dir=base_dir, report_dir=report_dir)
            rendered[fmt] = html.encode("utf-8", "backslashreplace")
        elif fmt == "json":
            doc = {"summary": summary, "run": run, "rows": moved, "partial": partial}
            rendered[fmt] = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        else:
            rendered[fmt] = render_csv(moved).encode("utf-8-sig", "backslashreplace")

    report_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt, data in rendered.items():
        path = report_dir / FILES[fmt]
        write_bytes_atomic(path, data, fsync=True)
        written[fmt] = path
    return written


def render_from_results(
    results_path: Path, *, formats: Iterable[str] = FORMATS, out_dir: Path | None = None
) -> dict[str, Path]:
    """Re-render the reports from results.jsonl and the run.json beside it (optional); default out_dir: its folder."""
    results_path = Path(results_path)
    if not results_path.is_file():
        raise ReportError(f"results file {results_path} not found")
    rows = read_results(results_path)
    if not rows:
        raise ReportError(f"{results_path} holds no complete result rows: nothing to report")
    run: dict = {}
    run_path = results_path.parent / "run.json"
    if run_path.is_file():
        try:
            run = json.loads(run_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReportError(f"{run_path} is not valid JSON ({e}); move it aside to report without it") from None
        if not isinstance(run, dict):
            raise ReportError(f"{run_path} does not hold a JSON object; move it aside to report without it")
    out = Path(out_dir) if out_dir is not None else results_path.parent
    return write_reports(out, rows, run, formats=formats, partial=bool(run.get("partial")),
                         base_dir=results_path.parent)


def _relocated_rows(rows: list[dict], base_dir: Path, report_dir: Path) -> list[dict]:
    """Rows with asset paths relative to report_dir instead of base_dir (the same rows when they coincide)."""
    if base_dir.resolve() == report_dir.resolve():
        return rows
    out = []
    for r in rows:
        r = dict(r)
        for k in (*ASSET_KEYS, VIDEO_KEY):
            if r.get(k):
                r[k] = Path(os.path.relpath(base_dir / r[k], report_dir)).as_posix()
        out.append(r)
    return out


# ----------------------------------------------------------------------------------------------------------- CSV


def csv_columns(rows: list[dict]) -> list[str]:
    """A stable column order: identity, verdict, the features, then the rest of the row."""
    features = list(FEATURE_ORDER) + [f for f in feature_names(rows) if f not in FEATURE_ORDER]
    video = [VIDEO_KEY] if any(r.get(VIDEO_KEY) for r in rows) else []  # only in runs with videos
    return (["path", "status", "error", "verdict", "probability"] + [f"features.{f}" for f in features]
            + ["sha256", "size", "width", "height", "format", "steps", "seconds", "target", "reconstruction",
               "heatmap", *video, "notes", "alignment", "settings_key", "rank", "time"])


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        v = json.dumps(v, ensure_ascii=False)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v  # a spreadsheet would run it as a formula
    return v


def render_csv(rows: list[dict]) -> str:
    cols = csv_columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for r in rows:
        flat = {k: v for k, v in r.items() if k not in ("features", "notes")}
        flat.update({f"features.{k}": v for k, v in (r.get("features") or {}).items()})
        flat["notes"] = "; ".join(str(n) for n in r.get("notes") or [])
        w.writerow([_csv_cell(flat.get(c)) for c in cols])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------- HTML

VERDICT_LABELS = {
    "generated": "Generated", "uncertain": "Uncertain", "real": "Real", "insufficient": "Insufficient",
    "out-of-domain": "Out of domain", "unscored": "No verdict",
    "error": "Not judged",
}


DIGITS = {"w_typicality": 2, "noise_gaussianity": 3, "detail": 2, "contrast": 1}  # decimals shown (default 4, PSNR 1)


def _fmt(v: Any, digits: int) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "—"
    return f"{v:.{digits}f}"


def _fmt_psnr(v: Any) -> str:
    if isinstance(v, (int, float)) and v >= 1e5:  # a perfect reconstruction's infinite PSNR, stored clipped
        return "∞"
    return _fmt(v, 1)


def _sort_value(v: Any) -> str:
    """data-v attribute for the sorting script: a plain number, or empty for 'no value' (sorted last)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return repr(float(v))
    return ""


def _duration(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "—"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min {sec:02d} s" if h else f"{m} min {sec:02d} s"


class _Thumbs:
    """Asset PNGs as data: URIs, each read once; None for a missing, foreign or unreadable file."""

    def __init__(self, base_dir: Path):
        self.base = base_dir.resolve()
        self.cache: dict[str, dict | None] = {}

    def get(self, rel: str | None) -> dict | None:
        if not rel:
            return None
        if rel not in self.cache:
            self.cache[rel] = self._load(rel)
        return self.cache[rel]

    def _load(self, rel: str) -> dict | None:
        path = (self.base / rel).resolve()
        if not path.is_relative_to(self.base) or not path.is_file() or path.stat().st_size > ASSET_MAX_BYTES:
            return None  # rows name assets inside the report folder only
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if not data.startswith(PNG_SIGNATURE) or max(w, h) > THUMB_MAX:
                    im = im.convert("RGB")
                    im.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
                    buf = io.BytesIO()
                    im.save(buf, format="PNG", optimize=True)
                    data = buf.getvalue()
        except Exception:  # noqa: BLE001  (an unreadable asset costs a thumbnail, not the report)
            return None
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        return {"src": uri, "width": w, "height": h, "pixelated": max(w, h) < 112}


VIDEO_WIDTH = 192  # px: a projection video's width in the table (target | reconstruction: two 96 px images)


def _video_view(rel: Any, base_dir: Path, report_dir: Path, target: dict | None) -> dict | None:
    """A row's projection video for the template: its URL relative to report.html, and its size in the table; None
    when the row has none, or names a file that is missing or outside the results folder."""
    if not rel or not isinstance(rel, str):
        return None
    base = base_dir.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    src = urllib.parse.quote(Path(os.path.relpath(path, report_dir.resolve())).as_posix())
    aspect = target["height"] / (2 * target["width"]) if target else 0.5  # frames are target | reconstruction
    return {"src": src, "width": VIDEO_WIDTH, "height": max(1, round(VIDEO_WIDTH * aspect))}


def _row_view(i: int, r: dict, thumbs: _Thumbs, features: list[str], base_dir: Path, report_dir: Path) -> dict:
    cat = category(r)
    f = r.get("features") or {}
    images = video = None
    if cat != "error":
        images = {k: thumbs.get(r.get(k)) for k in ASSET_KEYS}
        video = _video_view(r.get(VIDEO_KEY), base_dir, report_dir, images["target"])
    p = r.get("probability")
    return {
        "index": i + 1,
        "path": r.get("path") or "",
        "category": cat,
        "label": VERDICT_LABELS[cat],
        "status": r.get("status") or "error",
        "error": r.get("error") or "",
        "probability": {"v": _sort_value(p), "text": f"{p * 100:.1f} %" if _sort_value(p) else "—"},
        "features": {
            k: {"v": _sort_value(f.get(k)),
                "text": _fmt_psnr(f.get(k)) if k == "psnr" else _fmt(f.get(k), DIGITS.get(k, 4))}
            for k in features
        },
        "images": images,
        "video": video,
        "notes": [str(n) for n in r.get("notes") or []],
        "size": f"{r.get('width')}×{r.get('height')}" if r.get("width") and r.get("height") else None,
        "format": r.get("format"),
        "sha256": r.get("sha256"),
    }


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def histogram(rows: list[dict], threshold: float | None, *, bins: int = HIST_BINS,
              width: int = 720, height: int = 240) -> dict | None:
    """Geometry of the LPIPS histogram (stacked by verdict) for the template to draw as SVG; None without scores."""
    pts = [(float(r["features"]["lpips"]), category(r)) for r in rows
           if category(r) != "error" and _sort_value((r.get("features") or {}).get("lpips"))]
    if not pts:
        return None
    left, right, top, bottom = 44, 16, 14, 40
    pw, ph = width - left - right, height - top - bottom
    hi = max([v for v, _ in pts] + ([threshold] if isinstance(threshold, (int, float)) else []))
    step = _nice_step(max(hi, 1e-3) * 1.05, 6)
    xmax = step * math.ceil(max(hi, 1e-3) * 1.05 / step)
    bw = xmax / bins
    order = ("generated", "uncertain", "real", "unscored")
    counts = [{c: 0 for c in order} for _ in range(bins)]
    for v, c in pts:
        counts[min(max(int(v / bw), 0), bins - 1)][c] += 1
    ymax = max(1, max(sum(b.values()) for b in counts))
    ystep = max(1, int(_nice_step(ymax, 4)))
    ymax = ystep * math.ceil(ymax / ystep)

    def x(v: float) -> float:
        return round(left + pw * v / xmax, 2)

    def y(n: float) -> float:
        return round(top + ph - ph * n / ymax, 2)

    bars = []
    for i, b in enumerate(counts):
        acc = 0
        for c in order:
            if b[c]:
                bars.append({"x": x(i * bw) + 0.5, "y": y(acc + b[c]), "w": max(round(pw / bins - 1, 2), 1),
                             "h": round(y(acc) - y(acc + b[c]), 2), "category": c, "n": b[c],
                             "lo": i * bw, "hi": (i + 1) * bw})
                acc += b[c]
    decimals = max(0, -math.floor(math.log10(step)) + (1 if f"{step:e}".startswith("2.5") else 0))
    xticks = [{"x": x(k * step), "label": f"{k * step:.{decimals}f}"} for k in range(int(round(xmax / step)) + 1)]
    yticks = [{"y": y(k), "label": str(k)} for k in range(0, ymax + 1, ystep)]
    thr = None
    if isinstance(threshold, (int, float)) and math.isfinite(threshold):
        thr = {"x": x(float(threshold)), "value": f"{threshold:.4g}"}
    return {"width": width, "height": height, "left": left, "right": width - right, "top": top,
            "bottom": top + ph, "bars": bars, "xticks": xticks, "yticks": yticks, "threshold": thr,
            "present": [c for c in order if any(b[c] for b in counts)], "n": len(pts)}


def _settings(run: dict) -> list[tuple[str, Any]]:
    """(label, value) pairs of the run's settings; values are strings or lists of strings."""
    out: list[tuple[str, Any]] = []
    model = run.get("model") or {}
    if model:
        out.append(("Model", f"{model.get('name', '?')}"
                    + (f" ({model['resolution']} px)" if model.get("resolution") else "")))
        if model.get("sha256"):
            out.append(("Model sha256", model["sha256"]))
        if model.get("path"):
            out.append(("Model file", model["path"]))
    if run.get("perceptual"):
        out.append(("Perceptual network", run["perceptual"]))
    out.append(("Calibration", _calibration_lines(run.get("calibration")) or "none: scores only, no verdicts"))
    proj = run.get("projector")
    if isinstance(proj, dict):
        out.append(("Projector", [f"{k} = {v}" for k, v in proj.items()]))
    if run.get("projector_fingerprint"):
        out.append(("Projector fingerprint", run["projector_fingerprint"]))
    for key, label in (("seed", "Seed"), ("align", "Face alignment"), ("wplus", "W+ projection")):
        if key in run and run[key] is not None:
            v = run[key]
            out.append((label, ("yes" if v else "no") if isinstance(v, bool) else str(v)))
    if run.get("device"):
        out.append(("Device", str(run["device"]) + (f" × {run['world_size']} processes"
                                                     if (run.get("world_size") or 1) > 1 else "")))
    for key, label in (("started", "Started"), ("finished", "Finished")):
        if run.get(key):
            out.append((label, str(run[key])))
    if run.get("duration_s") is not None:
        out.append(("Duration", _duration(run["duration_s"])))
    if run.get("command"):
        out.append(("Command", str(run["command"])))
    versions = run.get("versions")
    if isinstance(versions, dict) and versions:
        out.append(("Versions", [f"{k} {v}" for k, v in versions.items()]))
    return out


def _glance(run: dict, summary: dict) -> list[tuple[str, str]]:
    """The few settings a reader needs beside the verdicts (all of them are in the run details)."""
    out = []
    model = run.get("model") or {}
    if model:
        sha = f" · sha256 {model['sha256'][:12]}…" if model.get("sha256") else ""
        out.append(("Model", f"{model.get('name', '?')}{sha}"))
    if run.get("perceptual"):
        out.append(("Perceptual network", str(run["perceptual"])))
    cal = run.get("calibration")
    if cal:
        parts = [str(cal.get("kind") or "calibrated")]
        if isinstance(cal.get("threshold"), (int, float)):
            parts.append(f"threshold {cal['threshold']:.4g}")
        if isinstance(cal.get("auc"), (int, float)):
            parts.append(f"AUC {cal['auc']:.3f}")
        out.append(("Calibration", " · ".join(parts)))
        tri = cal.get("triage")
        if isinstance(tri, dict):
            auc = f", AUC {tri['auc']:.3f}" if isinstance(tri.get("auc"), (int, float)) else ""
            out.append(("Cascade", f"first the encoder's guess alone (its own calibration{auc}): images it shows to "
                                   "be real are not optimised (their rows say so); every other verdict rests on the "
                                   "optimised projection"))
        esc = cal.get("escalation")
        if isinstance(esc, dict):
            auc = f", AUC {esc['auc']:.3f}" if isinstance(esc.get("auc"), (int, float)) else ""
            out.append(("Second look", f"images the projection leaves uncertain are projected again, longer "
                                       f"({esc.get('steps', '?')} steps from the same guess), and judged by that "
                                       f"projection's own calibration{auc} (their rows say so)"))
    else:
        out.append(("Calibration", "none: scores only, no verdicts"))
    proj = run.get("projector")
    if isinstance(proj, dict):
        space = {"w": "W", "w+": "W+"}.get(proj.get("space"), proj.get("space"))
        steps = ("no optimisation (fast triage: the encoder's guess alone)" if proj.get("num_steps") == 0
                 else f"{proj.get('num_steps', '?')} steps {projection_start(proj)}")
        out.append(("Projection", f"{space} space, {steps}" + (" (+ W+ for comparison)" if run.get("wplus") else "")))
    if "align" in run and run["align"] is not None:
        out.append(("Face alignment", "on" if run["align"] else "off"))
    if run.get("device"):
        n = run.get("world_size") or 1
        out.append(("Device", str(run["device"]) + (f" × {n} processes" if n > 1 else "")))
    if run.get("duration_s") is not None:
        out.append(("Duration", _duration(run["duration_s"])))
    versions = run.get("versions") or {}
    if isinstance(versions, dict) and versions:
        out.append(("Software", ", ".join(f"{k} {versions[k]}" for k in ("sgproject", "torch") if k in versions)
                    or ", ".join(f"{k} {v}" for k, v in versions.items())))
    return out


def projection_start(projector: dict) -> str:
    """Where a projection with these settings (ProjectorConfig.to_dict()) starts, in words (and whether it searches
    a zoom and shift too)."""
    start = (f"from encoder {projector.get('encoder_sha256')}'s guess" if projector.get("init") == "encoder"
             else "from w_avg")
    geometry = projector.get("geometry") or 0
    return start + (f", zoom and shift up to {geometry:g}" if geometry and projector.get("num_steps") else "")


def _calibration_lines(cal: dict | None) -> list[str]:
    if not cal:
        return []
    lines = []
    if cal.get("kind"):
        lines.append(f"kind: {cal['kind']}")
    th = [f"{k} = {cal[k]:.4g}" for k in ("threshold", "t_generated", "t_real")
          if isinstance(cal.get(k), (int, float))]
    if th:
        lines.append("; ".join(th))
    quality = []
    if isinstance(cal.get("auc"), (int, float)):
        quality.append(f"AUC {cal['auc']:.3f}")
    for k, label in (("tpr_at_1fpr", "1 %"), ("tpr_at_5fpr", "5 %")):
        if isinstance(cal.get(k), (int, float)):
            quality.append(f"{cal[k] * 100:.1f} % of generated images caught at {label} false positives")
    if quality:
        lines.append("; ".join(quality))
    if cal.get("n_generated") is not None or cal.get("n_real") is not None:
        lines.append(f"fitted on {cal.get('n_generated', '?')} generated and {cal.get('n_real', '?')} real images")
    if cal.get("path"):
        lines.append(f"file: {cal['path']}")
    return lines


FEATURE_LABELS = {"lpips": "LPIPS", "psnr": "PSNR (dB)", "w_typicality": "w typicality",
                  "noise_gaussianity": "Noise gaussianity", "lpips_wplus": "LPIPS W+",
                  "lpips_ref_flip": "LPIPS flipped", "lpips_ref_guess": "LPIPS guess", "detail": "Detail",
                  "contrast": "Contrast", "domain_distance": "Domain distance"}
ASSET_ALT = {"target": "Target image (as projected) of", "reconstruction": "Generator's reconstruction of",
             "heatmap": "Heat map of perceptual differences for"}
# sort order of the verdict column
VERDICT_RANK = {"generated": 0, "uncertain": 1, "real": 2, "insufficient": 3, "out-of-domain": 4, "unscored": 5,
                "error": 6}
HEAT_VMAX = 0.5  # the heat maps' full-scale LPIPS value: detectors.scoring.HEAT_VMAX (not imported: no torch here)


def _template():
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("detectors", "templates"),
        autoescape=True,  # every value is escaped: file names are attacker-controlled
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")


def _meta(run: dict) -> list[str]:
    """The line under the conclusion: model, when, how long."""
    out = []
    model = run.get("model") or {}
    if model.get("name"):
        out.append(f"model {model['name']}" + (f" ({model['sha256'][:12]})" if model.get("sha256") else ""))
    if run.get("finished"):
        out.append(f"finished {run['finished']}")
    elif run.get("started"):
        out.append(f"started {run['started']}")
    if run.get("duration_s") is not None:
        out.append(f"took {_duration(run['duration_s'])}")
    return out


def render_html(rows: list[dict], run: dict, summary: dict, *, base_dir: Path, report_dir: Path | None = None) -> str:
    """report.html's text; `report_dir` (default: base_dir) is the folder it goes to, which video links are relative
    to."""
    thumbs = _Thumbs(base_dir)
    report_dir = Path(report_dir) if report_dir is not None else base_dir
    ok_rows = [r for r in rows if category(r) != "error"]
    features = list(FEATURE_ORDER[:4]) + (["lpips_wplus"] if "lpips_wplus" in feature_names(ok_rows) else [])
    cal_features = ((run.get("calibration") or {}).get("features") or []) if isinstance(run.get("calibration"), dict) \
        else []
    features += [f for f in cal_features if f in FEATURE_LABELS and f not in features]  # what the decision used
    views = [_row_view(i, r, thumbs, features, base_dir, report_dir) for i, r in enumerate(rows)]
    has_video = any(v["video"] for v in views)
    video_run = run.get("video") if isinstance(run.get("video"), dict) else {}
    threshold = (summary.get("thresholds") or {}).get("threshold")
    model_name = (run.get("model") or {}).get("name")
    html = _template().render(
        title="Forensic report" + (f": images judged against {model_name}" if model_name else ""),
        summary=summary,
        run=run,
        meta=_meta(run),
        rows=views,
        features=features,
        has_video=has_video,
        video_plays=video_run.get("codec") != "mpeg4",  # MPEG-4 Part 2 (no video extra): a link, not a player
        feature_labels=FEATURE_LABELS,
        labels=VERDICT_LABELS,
        verdict_rank=VERDICT_RANK,
        asset_alt=ASSET_ALT,
        heat_vmax=HEAT_VMAX,
        hist=histogram(rows, threshold),
        settings=_settings(run),
        glance=_glance(run, summary),
        mono_settings=("Model sha256", "Model file", "Perceptual network", "Projector fingerprint", "Command"),
        csp="__CSP__",
    )
    return _with_csp(html, media=has_video)


def _with_csp(html: str, *, media: bool = False) -> str:
    """Fill the Content-Security-Policy: only this page's own <style> and <script> (by hash), data: images and, with
    `media` (projection videos), media from the page's own origin ('self': the server that serves the report, or
    local files when it is opened from disk), never from anywhere else."""

    def digest(tag: str) -> str:
        m = re.search(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        body = m.group(1) if m else ""
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode() + "'"

    media_src = "media-src 'self'; " if media else ""
    policy = (f"default-src 'none'; img-src data:; {media_src}style-src {digest('style')}; "
              f"script-src {digest('script')}; base-uri 'none'; form-action 'none'")
    return html.replace("__CSP__", policy, 1)
