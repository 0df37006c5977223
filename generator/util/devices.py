"""Choosing a torch device and describing the machine. Only entry points (the CLI, bench and tools scripts) pick a
device; library code takes one as an argument."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from generator.util.errors import SGProjectError


def pick_device(name: str | None = None, *, threads: int | None = None, cudnn_benchmark: bool = False) -> torch.device:
    """`name` (cpu, cuda, cuda:N; None or 'auto': cuda when available, else cpu), checked to exist.

    Sets torch's intra-op thread count when `threads` is given, and lets cuDNN autotune on CUDA when asked.
    Raises SGProjectError for a malformed name or a CUDA device on a machine without CUDA.
    """
    if name is None or name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise SGProjectError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SGProjectError(f"device {name!r} asked for, but CUDA is not available on this machine")
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda" and cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    return device


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
