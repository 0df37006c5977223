"""The record of a detection run: one JSON line per image in `results.jsonl`, plus `run.json` with the settings.

Rows are appended and flushed to disk as each image finishes, so a kill loses at most the image in flight. A kill
in the middle of a write leaves a torn last line: readers skip it (and `ResultsWriter` starts a fresh line after it).

A row (all keys always present; None where not applicable):

    path            str    the file as given or found
    sha256          str    of the file's bytes
    size            int    bytes (None when the file could not be read at all)
    width, height   int    as stored in the file
    format          str    sniffed from the content ('png', 'jpeg', ...)
    status          str    'ok' or 'error'
    error           str    one-line reason when status is 'error'
    verdict         str    'generated', 'real' or 'uncertain'; None without a calibration or on error
    probability     float  P(generated) from the calibration; None without one
    features        dict   lpips, psnr, w_typicality, noise_gaussianity (+ lpips_wplus)
    steps           int    optimisation steps taken
    seconds         float  projection time attributed to this image
    target          str    report-relative path of the projected image (after crop/resize/alignment)
    reconstruction  str    report-relative path of the reconstruction
    heatmap         str    report-relative path of the spatial LPIPS heat map
    notes           list   what loading/alignment did ('EXIF orientation 6 applied', ...)
    alignment       dict   the alignment record with --align, else None
    settings_key    str    hash of everything that changes a score: resume only reuses rows with the same key
    rank            int    the process that judged it (torchrun)
    time            str    ISO 8601, UTC
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

ROW_KEYS = (
    "path", "sha256", "size", "width", "height", "format", "status", "error", "verdict", "probability",
    "features", "steps", "seconds", "target", "reconstruction", "heatmap", "notes", "alignment",
    "settings_key", "rank", "time",
)
VERDICTS = ("generated", "real", "uncertain")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_row(**fields: Any) -> dict:
    """A complete row: every key of ROW_KEYS, None where not given. Unknown keys are an error."""
    unknown = set(fields) - set(ROW_KEYS)
    if unknown:
        raise KeyError(f"unknown result fields: {sorted(unknown)}")
    row = {k: None for k in ROW_KEYS}
    row.update(fields)
    if row["notes"] is None:
        row["notes"] = []
    if row["time"] is None:
        row["time"] = now_iso()
    return row


def read_results(path: str | Path) -> list[dict]:
    """Every complete row of a results file, in order; torn or foreign lines are skipped."""
    return list(iter_results(path))


def iter_results(path: str | Path) -> Iterator[dict]:
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill
                continue
            if isinstance(row, dict) and "path" in row and "status" in row:
                yield {k: row.get(k) for k in ROW_KEYS}


class ResultsWriter:
    """Appends rows to results.jsonl: one write, flush and fsync per row."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._f = open(self.path, "a", encoding="utf-8")
        if torn:  # a kill cut the last line: start ours on a fresh one
            self._f.write("\n")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def write_json_atomic(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
