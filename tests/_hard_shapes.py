"""Simulated data of the three shapes of the engine issue that ended wrong with
``converged=True`` (generator shared by ``benchmarks/hard_shapes_battery.py``,
which computes the references, and ``tests/likelihood/test_hard_shapes.py``).

* ``intercept_free``: ``y ~ 0 + x + (x | a) + (1 | b)`` on a response whose mean
  is 50 of its SDs from 0 (the mean has to be carried by a random intercept:
  ``a``'s or ``b``'s, two basins);
* ``crossed_pm1``: ``y ~ x + (x | subj) + (x | item)``, intercept-slope
  correlations at +-1 (ML; optima on the boundary);
* ``huge_shift``: ``y ~ x + (x | g)``, ML, the response shifted by 1e7..1e8 of
  its SDs.

Each set is a pure function of its seed (``numpy.random.default_rng``).  The
pass rule is the stress corpus's (``tests/_stress.py``): the criterion at the
returned theta, evaluated on ``(y - c) / s`` plus ``k log s`` (``c = 0`` for
the intercept-free shape, whose model is not shift invariant), within
``1e-7 max(1, |ref|)`` of the reference, and the reported criterion equal to
that value within the same tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

import mixedanova as ma

SHAPES = {
    "intercept_free": ("y ~ 0 + x + (x | a) + (1 | b)", "REML"),
    "crossed_pm1": ("y ~ x + (x | subj) + (x | item)", "ML"),
    "huge_shift": ("y ~ x + (x | g)", "ML"),
}

__all__ = ["SHAPES", "HardSet", "make_set", "standardized_deviance", "score"]


@dataclass(frozen=True)
class HardSet:
    """One simulated set: its shape, seed, formula, method, data and the
    standardization ``(c, s)`` of the objective."""

    shape: str
    seed: int
    formula: str
    method: str
    data: pd.DataFrame
    center: float
    scale: float


def _intercept_free(rng: np.random.Generator) -> pd.DataFrame:
    na, nb = int(rng.integers(5, 13)), int(rng.integers(4, 11))
    n = int(rng.integers(60, 160))
    a = rng.integers(0, na, n)
    b = rng.integers(0, nb, n)
    x = rng.normal(0.0, 1.0, n)
    sigma = 1.0
    sd_a = sigma * rng.choice([0.3, 1.0, 3.0]) * np.array([1.0, rng.uniform(0.2, 2.0)])
    rho = rng.uniform(-0.9, 0.9)
    cov = np.outer(sd_a, sd_a) * np.array([[1.0, rho], [rho, 1.0]])
    ua = rng.multivariate_normal(np.zeros(2), cov, na)
    ub = rng.normal(0.0, sigma * rng.choice([0.3, 1.0, 3.0]), nb)
    mean = 50.0 * rng.choice([-1.0, 1.0]) * (sigma + sd_a[0])
    y = (mean + rng.normal(0.0, 1.0) * x + ua[a, 0] + ua[a, 1] * x + ub[b]
         + rng.normal(0.0, sigma, n))
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i:02d}" for i in a],
                         "b": [f"b{i:02d}" for i in b]})


def _crossed_pm1(rng: np.random.Generator) -> pd.DataFrame:
    ns, ni = int(rng.integers(6, 13)), int(rng.integers(8, 25))
    rows = [(s, i) for s in range(ns) for i in range(ni) if rng.random() < 0.6]
    s_ = np.array([r[0] for r in rows])
    i_ = np.array([r[1] for r in rows])
    n = len(rows)
    x = rng.choice([-0.5, 0.5], n) if rng.random() < 0.5 else rng.normal(0.0, 1.0, n)
    sigma = rng.uniform(0.3, 2.0)
    effects = []
    for nlev in (ns, ni):
        sd = sigma * rng.choice([0.01, 0.1, 0.5, 1.0, 3.0], 2)
        rho = rng.choice([-1.0, 1.0])
        z = rng.normal(0.0, 1.0, nlev)
        effects.append(np.column_stack([sd[0] * z, rho * sd[1] * z]))
    us, ui = effects
    y = (rng.normal(0.0, 5.0) + rng.normal(0.0, 1.0) * x + us[s_, 0] + us[s_, 1] * x
         + ui[i_, 0] + ui[i_, 1] * x + rng.normal(0.0, sigma, n))
    return pd.DataFrame({"y": y, "x": x, "subj": [f"s{i:02d}" for i in s_],
                         "item": [f"i{i:02d}" for i in i_]})


def _huge_shift(rng: np.random.Generator) -> pd.DataFrame:
    ng = int(rng.integers(8, 25))
    sizes = rng.integers(3, 12, ng)
    g = np.repeat(np.arange(ng), sizes)
    n = len(g)
    x = rng.normal(0.0, 1.0, n) * rng.choice([1.0, 10.0]) + rng.choice([0.0, 5.0])
    sd = rng.choice([0.1, 0.5, 1.0, 2.0], 2)
    rho = rng.uniform(-0.95, 0.95)
    cov = np.outer(sd, sd) * np.array([[1.0, rho], [rho, 1.0]])
    u = rng.multivariate_normal(np.zeros(2), cov, ng)
    y0 = 0.5 * x + u[g, 0] + u[g, 1] * x + rng.normal(0.0, 1.0, n)
    shift = 10.0 ** rng.uniform(7.0, 8.0) * float(np.std(y0)) * rng.choice([-1.0, 1.0])
    return pd.DataFrame({"y": y0 + shift, "x": x, "g": [f"g{i:02d}" for i in g]})


_MAKERS = {"intercept_free": _intercept_free, "crossed_pm1": _crossed_pm1,
           "huge_shift": _huge_shift}


def make_set(shape: str, seed: int) -> HardSet:
    """The set of ``shape`` simulated from ``seed``."""
    rng = np.random.default_rng([seed, list(_MAKERS).index(shape)])
    df = _MAKERS[shape](rng)
    formula, method = SHAPES[shape]
    y = df["y"].to_numpy()
    center = 0.0 if shape == "intercept_free" else float(np.mean(y))
    scale = float(np.sqrt(np.mean((y - center) ** 2)))
    return HardSet(shape, seed, formula, method, df, center, scale)


def standardized_deviance(s: HardSet):
    """``(dev, offset)``: the package's criterion on ``(y - c) / s`` as a function
    of theta, and ``k log s`` to add to it."""
    std = s.data.assign(y=(s.data["y"] - s.center) / s.scale)
    dev = ma.LinearMixedModel.from_formula(s.formula, std).deviance_function(
        reml=s.method == "REML")
    k = 2 * (dev.n - dev.p) if s.method == "REML" else 2 * dev.n
    return dev, k * math.log(s.scale)


def score(s: HardSet, reference: float, res) -> tuple[bool, float, float]:
    """``(passed, objective at the returned theta, reported criterion)``."""
    dev, offset = standardized_deviance(s)
    objective = float(dev(np.asarray(res.state.theta, dtype=float))) + offset
    reported = float(res.reml_criterion if s.method == "REML" else res.deviance)
    tol = 1e-7 * max(1.0, abs(reference))
    return (objective <= reference + tol and abs(reported - objective) <= tol,
            objective, reported)
