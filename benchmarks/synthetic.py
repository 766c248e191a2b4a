"""Synthetic data sets for the benchmarks (deterministic)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def insteval_like(seed: int = 20261122) -> pd.DataFrame:
    """A data set shaped like lme4's InstEval.

    73,421 ratings; 2,972 students ``s``, 1,128 lecturers ``d`` each in one of 14
    departments ``dept``; binary ``service``; a response on InstEval's scale
    simulated from ``y ~ 1 + service + (1|s) + (1|d) + (1|dept)`` with SDs near
    lme4's InstEval estimates (0.32, 0.52, 0.07, residual 1.18).
    """
    rng = np.random.default_rng(seed)
    n, ns, nd, ndept = 73421, 2972, 1128, 14
    dept_of_d = np.concatenate([np.arange(ndept), rng.integers(0, ndept, nd - ndept)])
    # every student and every lecturer appears at least once
    s = np.concatenate([np.arange(ns), rng.integers(0, ns, n - ns)])
    d = np.concatenate([np.arange(nd), rng.integers(0, nd, n - nd)])
    rng.shuffle(s)
    dept = dept_of_d[d]
    service = rng.integers(0, 2, n)
    u_s = rng.normal(0, 0.32, ns)
    u_d = rng.normal(0, 0.52, nd)
    u_dept = rng.normal(0, 0.07, ndept)
    y = 3.2 - 0.07 * service + u_s[s] + u_d[d] + u_dept[dept] + rng.normal(0, 1.18, n)
    return pd.DataFrame({
        "y": y,
        "service": service,
        "s": pd.Categorical([f"s{i:04d}" for i in s]),
        "d": pd.Categorical([f"d{i:04d}" for i in d]),
        "dept": pd.Categorical([f"dept{i:02d}" for i in dept]),
    })
