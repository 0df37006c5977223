"""Helpers shared by the bench scripts: the machine description printed before the figures, and timing utilities.

The scripts are run as modules from the repository root (`python -m bench.NAME`) and import from `bench._common`.
"""

from __future__ import annotations

import os
import platform

import torch

from generator.util.devices import cpu_model, pick_device  # noqa: F401  (re-exported for the scripts)


# ------------------------------------------------------------------------------------------------ machine


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine makes CPU figures lower and noisier."""
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def machine_lines(device: torch.device) -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"cpu      {cpu_model()} ({cores} cores available, {os.cpu_count()} logical in the machine)",
        f"torch    {torch.__version__}, {torch.get_num_threads()} intra-op threads at start, "
        f"python {platform.python_version()}",
    ]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(
            f"gpu      {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, cudnn.benchmark "
            f"{torch.backends.cudnn.benchmark}, TF32 conv {torch.backends.cudnn.allow_tf32} / matmul "
            f"{torch.backends.cuda.matmul.allow_tf32}"
        )
    else:
        lines.append(f"gpu      none used (cuda available: {torch.cuda.is_available()})")
    lines.append(f"omp      OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
                 f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    lines.append(f"load     {load_average()} at start")
    lines.append(f"device   {device}")
    return lines


def print_machine(title: str, device: torch.device) -> None:
    print(title)
    for line in machine_lines(device):
        print("  " + line)


# ------------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()
