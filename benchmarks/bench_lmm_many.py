"""Batch fits (issue 20): ``lmm_many`` on 20,000 simulated responses x 500 rows.

Crossed ``(1|donor) + (1|batch)`` with 50 x 10 levels and two fixed effects
(``condition``, ``age``); REML with Satterthwaite df.  Reports responses per
second (the issue's target: >= 1,000/s on the 2-core machine), fits plus the
tidy tables, after a warm-up call that pays the imports.  ``fast=False`` in the
third argument times the single-fit engine path instead.

    python benchmarks/bench_lmm_many.py [k] [n_jobs] [fast=False]
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

import mixedanova as ma


def design(n: int = 500, ndonor: int = 50, nbatch: int = 10, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    donor = np.arange(n) % ndonor
    batch = rng.integers(0, nbatch, n)
    return pd.DataFrame({"donor": pd.Categorical([f"d{i:02d}" for i in donor]),
                         "batch": pd.Categorical([f"b{i}" for i in batch]),
                         "condition": np.where(rng.integers(0, 2, n) == 1, "B", "A"),
                         "age": rng.normal(40, 10, n)})


def responses(data: pd.DataFrame, k: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(data)
    d, b = data["donor"].cat.codes.to_numpy(), data["batch"].cat.codes.to_numpy()
    cond = (data["condition"] == "B").to_numpy(float)
    sd_d = rng.uniform(0.0, 1.0, k)
    sd_b = rng.uniform(0.0, 0.7, k)
    fix = 1.0 + rng.normal(0, 0.5, k) * cond[:, None] + 0.01 * data["age"].to_numpy()[:, None]
    return (fix + sd_d * rng.normal(size=(50, k))[d] + sd_b * rng.normal(size=(10, k))[b]
            + rng.normal(size=(n, k)))


def main() -> None:
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    n_jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    fast = not (len(sys.argv) > 3 and sys.argv[3] == "fast=False")
    data = design()
    Y = responses(data, k)
    # warm-up: imports (scipy, the engine) are paid once per session, not per batch
    ma.lmm_many("~ condition + age + (1|donor) + (1|batch)", data, Y[:, :2]).fixed()
    t0 = time.perf_counter()
    res = ma.lmm_many("~ condition + age + (1|donor) + (1|batch)", data, Y, n_jobs=n_jobs,
                      progress=False, fast=fast)
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    fixed, info, vc = res.fixed(), res.fit_info, res.varcomp
    tab_s = time.perf_counter() - t1
    total = fit_s + tab_s
    print(f"{k} responses x {len(data)} rows, n_jobs={n_jobs}, fast={fast}: fits {fit_s:.1f} s, tables "
          f"{tab_s:.2f} s; {k / total:.0f} responses/s; converged {int(info.converged.sum())}, "
          f"singular {int(info.singular.sum())}; {len(fixed)} fixed rows, {len(vc)} varcomp rows")


if __name__ == "__main__":
    main()
