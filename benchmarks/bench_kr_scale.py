"""Kenward-Roger beyond 8,000 random effects (issue 11).

Run:  python benchmarks/bench_kr_scale.py

Times ``res.fixed("kenward-roger")`` (pbkrtest's adjusted covariance and df)
on two REML fits that the dense implementation refused (more than 8,000 random
effects): a random intercept and slope over 20,000 groups (Q = 40,000) and two
nested factors, 3,000 x 4 (Q = 15,000), and prints the peak RSS of the process.
A large crossed design (one component of more than 8,000 linked effects) is
still refused; the message says why.  Shared 2-core machine: noisy.
"""
from __future__ import annotations

import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mixedanova as ma  # noqa: E402


def main() -> None:
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(5)
    groups, n = 20000, 5
    g = np.repeat(np.arange(groups), n)
    x = np.tile(np.arange(n), groups).astype(float)
    y = (1 + 0.5 * x + rng.normal(0, 1, groups)[g] + rng.normal(0, 0.3, groups)[g] * x
         + rng.normal(0, 1, groups * n))
    slope = pd.DataFrame({"g": g.astype(str), "x": x, "y": y})
    a, b, k = 3000, 4, 3
    ai = np.repeat(np.arange(a), b * k)
    bi = np.tile(np.repeat(np.arange(b), k), a)
    y = rng.normal(0, 1, a)[ai] + rng.normal(0, 1, (a, b))[ai, bi] + rng.normal(0, 1, ai.size)
    nested = pd.DataFrame({"a": ai.astype(str), "b": bi.astype(str),
                           "x": rng.normal(size=ai.size), "y": y})
    for label, formula, df in [("(1 + x | g), 20,000 groups, Q = 40,000", "y ~ x + (x|g)", slope),
                               ("(1|a) + (1|a:b), 3,000 x 4, Q = 15,000",
                                "y ~ x + (1|a) + (1|a:b)", nested)]:
        t = time.perf_counter()
        res = ma.lmm(formula, df)
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        tab = res.fixed("kenward-roger")
        t_kr = time.perf_counter() - t
        print(f"{label}: fit {t_fit:.2f} s, Kenward-Roger {t_kr:.2f} s; "
              f"df {', '.join(f'{v:.1f}' for v in tab['df'])}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
