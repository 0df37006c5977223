"""The projector's schedules (Karras et al. 2020, appendix D): learning rate and the noise added to w."""

from __future__ import annotations

import math


def learning_rate(t: float, initial: float = 0.1, *, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Linear ramp-up over the first `rampup` of the run, cosine ramp-down over the last `rampdown`.

    t = step / num_steps in [0, 1]. Starts at 0, is `initial` in between, ends at 0.
    """
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / rampup) if rampup > 0 else 1.0
    return initial * ramp


def w_noise_scale(t: float, w_std: float, *, factor: float = 0.05, ramp_length: float = 0.75) -> float:
    """Std of the Gaussian noise added to w at time t: w_std * factor * max(0, 1 - t/ramp_length)^2.

    It lets the optimiser explore early on and vanishes after `ramp_length` of the run.
    """
    return w_std * factor * max(0.0, 1.0 - t / ramp_length) ** 2
