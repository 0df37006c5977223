"""Helpers shared by the detector tests (and the `sgproject calibrate` CLI tests)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.generator.helpers import one_torch_thread


@contextmanager
def offline_environment(cache: Path):
    """Offline LPIPS, a private cache folder, and one torch thread: on a shared 2-core machine two threads waiting
    on each other make a projection step several times slower."""
    with one_torch_thread(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGPROJECT_OFFLINE", "1")
        mp.setenv("SGPROJECT_CACHE", str(cache))
        yield


def count_projected(monkeypatch) -> list[int]:
    """Patch detectors.batch.score_batch to record the size of every batch it projects; returns that list."""
    import detectors.batch as batch

    seen: list[int] = []
    score = batch.score_batch

    def counting(G, targets, **kw):
        seen.append(len(targets))
        return score(G, targets, **kw)

    monkeypatch.setattr(batch, "score_batch", counting)
    return seen


def assert_set_aside_in_reports(report_dir: Path, verdict: str, label: str, reason: str, n: int) -> None:
    """report.html names the verdict (`label`) and the reason; report.json counts n rows of `verdict` and its
    conclusion gives the reason."""
    import html as html_lib
    import json

    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert label in page and reason in html_lib.unescape(page)
    summary = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))["summary"]
    assert summary["counts"][verdict] == n and reason in summary["conclusion"]
