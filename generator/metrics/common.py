"""What the metrics share: their error and the progress callback they report through."""

from __future__ import annotations

from typing import Callable

from generator.util.errors import SGProjectError

MetricProgress = Callable[[str, int, int], None]  # (stage, done, total)


class MetricError(SGProjectError):
    """A metric cannot be computed as asked (too few samples, mismatched data, ...)."""
