"""Timings of the df computations (issue 4).  Run: ``python benchmarks/bench_inference.py``.

* Kenward-Roger on sleepstudy (REML, ``Reaction ~ Days + (Days | Subject)``):
  adjusted covariance plus the coefficient table and the type III table.
* Satterthwaite on the InstEval-shaped data (73,421 rows, crossed
  ``(1|s) + (1|d) + (1|dept)``): Hessian/Jacobian set-up plus the coefficient
  table (``res.fixed()``) and the ANOVA table; the fit itself is timed separately.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mixedanova as ma  # noqa: E402
from synthetic import insteval_like  # noqa: E402


def _time(label: str, fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{label:<58s} {best:8.3f} s")
    return out


def main() -> None:
    sleep = ma.load_dataset("sleepstudy")
    res = ma.lmm("Reaction ~ Days + (Days | Subject)", sleep)

    def kr():
        res.__dict__.pop("_inference", None)  # drop the cached set-up
        tab = res.fixed("kenward-roger")
        res.anova(3, "kenward-roger")
        return tab

    _time("sleepstudy KR: fixed() + anova(type=3), fresh", kr, repeat=5)

    def satt_sleep():
        res.__dict__.pop("_inference", None)
        return res.fixed()

    _time("sleepstudy Satterthwaite: fixed(), fresh", satt_sleep, repeat=5)

    data = insteval_like()
    formula = "y ~ 1 + service + (1|s) + (1|d) + (1|dept)"
    big = _time("InstEval-shaped fit (REML)", lambda: ma.lmm(formula, data))

    def satt_big():
        big.__dict__.pop("_inference", None)
        tab = big.fixed()
        big.anova(3)
        return tab

    tab = _time("InstEval-shaped Satterthwaite: fixed() + anova(), fresh", satt_big)
    print(tab.to_string())


if __name__ == "__main__":
    main()
