"""Helpers shared by the generator tests."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_torch_thread():
    """One torch intra-op thread, the previous count restored afterwards. The test networks are tiny: on a shared
    CPU, oversubscribed OpenMP threads spin-wait for each other and make small ops many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
