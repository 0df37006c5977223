"""The `sgproject` command line. It parses arguments, calls the library and renders with rich; nothing else."""

import os

from detectors.results import sgproject_version

__version__ = sgproject_version()  # the installed package's (pyproject.toml), "unknown" when not installed

# OpenMP threads that spin while waiting collapse (10-20x slower) when another process holds a core, which is the
# normal state of a shared machine. Sleeping waiters cost little here. Set before torch loads; users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
