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
