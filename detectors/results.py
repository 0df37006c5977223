"""The record of a detection run: one JSON line per image in `results.jsonl` (a `ResultRow`), plus `run.json`
with the settings (docs/ARCHITECTURE.md, "File formats").

Rows are appended and flushed to disk as each image finishes, so a kill loses at most the image in flight. A kill
in the middle of a write leaves a torn last line: readers skip it (and `ResultsWriter` starts a fresh line after it).
Every key of a row is always present, None where not applicable, in the order of `ResultRow`'s fields; the one
exception is `video`, present only in rows that have a projection video (detect --video), so that the rows of runs
without videos are what they always were.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

VERDICTS = ("generated", "real", "uncertain")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sgproject_version() -> str:
    """The installed sgproject's version (run.json and calibrations record it); 'unknown' when not installed."""
    try:
        return version("sgproject")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class ResultRow:
    """One image's result: a line of results.jsonl. `to_json` / `from_json` write and read that line's object."""

    path: str | None = None  # the file as given or found
    sha256: str | None = None  # hex sha256 of the file's bytes
    size: int | None = None  # bytes (None when the file could not be read at all)
    width: int | None = None  # pixels, as stored in the file
    height: int | None = None  # pixels, as stored in the file
    format: str | None = None  # sniffed from the content: 'png', 'jpeg', ...
    status: str | None = None  # 'ok' or 'error'
    error: str | None = None  # one-line reason when status is 'error'
    verdict: str | None = None  # 'generated', 'real' or 'uncertain'; None without a calibration or on error
    probability: float | None = None  # P(generated) from the calibration; None without one
    features: dict | None = None  # lpips, psnr, w_typicality, noise_gaussianity (+ lpips_wplus), ...
    steps: int | None = None  # optimisation steps taken
    seconds: float | None = None  # projection time attributed to this image, in seconds
    target: str | None = None  # report-relative path of the projected image (after crop/resize/alignment)
    reconstruction: str | None = None  # report-relative path of the reconstruction
    heatmap: str | None = None  # report-relative path of the spatial LPIPS heat map
    video: str | None = None  # report-relative path of the projection video (detect --video); key absent when None
    notes: list | None = field(default_factory=list)  # what loading/alignment did ('EXIF orientation 6 applied')
    alignment: dict | None = None  # the alignment record with --align, else None
    settings_key: str | None = None  # hash of everything that changes a score: resume reuses rows with the same
    rank: int | None = None  # the process that judged it (torchrun)
    time: str | None = field(default_factory=now_iso)  # when it was judged, ISO 8601, UTC

    def to_json(self) -> dict:
        """The JSON object of a results.jsonl line: every field, in field order (values not copied); `video` only when
        there is one."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "video" or self.video is not None}

    @classmethod
    def from_json(cls, obj: dict) -> "ResultRow":
        """A row from a results.jsonl object: unknown keys are ignored, missing ones are None."""
        return cls(**{k: obj.get(k) for k in ROW_KEYS})


ROW_KEYS = tuple(f.name for f in dataclasses.fields(ResultRow))


def make_row(**fields: Any) -> dict:
    """A complete row's JSON object: every key of ROW_KEYS (video only when given), None where not given (no notes:
    [], no time: now). Unknown keys are an error."""
    unknown = set(fields) - set(ROW_KEYS)
    if unknown:
        raise KeyError(f"unknown result fields: {sorted(unknown)}")
    row = ResultRow(**fields)
    if row.notes is None:
        row.notes = []
    if row.time is None:
        row.time = now_iso()
    return row.to_json()


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
                yield ResultRow.from_json(row).to_json()


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
