"""bench/detect.py's derived cascades: the verdicts `detect` would give, put together from each stage's rows."""

from __future__ import annotations

from bench.detect import add_derived_cascades
from detectors.calibration import verdict_of


class _Cal:
    """A calibration whose P is the row's feature `p`, with verdict bands."""

    def __init__(self, t_generated: float, t_real: float):
        self.t_generated, self.t_real = t_generated, t_real

    def probability(self, features: dict) -> float:
        return features["p"]

    def verdict(self, p: float) -> str:
        return verdict_of(p, self.t_generated, self.t_real)


def _rows(setup: str, ps: list[float], seconds: float) -> list[dict]:
    return [{"name": f"img{i}", "setup": setup, "features": {"p": p}, "seconds": seconds} for i, p in enumerate(ps)]


def test_cascade_with_a_second_look():
    # image 0: the guess clears it; 1: decided after 25 steps; 2 and 3: uncertain after 25, decided after 100
    by = {("encoder:0", "clean"): _rows("encoder:0", [0.01, 0.5, 0.5, 0.5], 0.1),
          ("encoder:25", "clean"): _rows("encoder:25", [0.5, 0.95, 0.5, 0.5], 1.0),
          ("encoder:100", "clean"): _rows("encoder:100", [0.9, 0.9, 0.95, 0.02], 4.0)}
    setups = ["encoder:0", "encoder:25", "encoder:100"]
    cal_of = {"encoder:0": _Cal(0.99, 0.05), "encoder:25": _Cal(0.8, 0.1), "encoder:100": _Cal(0.8, 0.1)}
    add_derived_cascades(by, setups, cal_of)
    assert "cascade:25+100*" in setups and "cascade:25*" in setups and "cascade:100*" in setups
    two = by[("cascade:25*", "clean")]
    assert [r["verdict"] for r in two] == ["real", "generated", "uncertain", "uncertain"]
    three = by[("cascade:25+100*", "clean")]
    assert [r["verdict"] for r in three] == ["real", "generated", "generated", "real"]
    assert [r["probability"] for r in three] == [0.01, 0.95, 0.95, 0.02]
    assert [r["seconds"] for r in three] == [0.1, 1.1, 5.1, 5.1]
    assert [r["triaged"] for r in three] == [True, False, False, False]
