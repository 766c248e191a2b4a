"""``simulation_model(..., residual=)``: errors drawn from a residual structure
(issue 20), and ``ma.power`` on such a model (``ma.lmm(..., residual=)`` per data set).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.errors import ArgumentError


def _data(nsubj=30, ntime=4, seed=2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(nsubj), ntime)
    return pd.DataFrame({"subj": pd.Categorical([f"s{i:02d}" for i in s]),
                         "time": np.tile(np.arange(ntime), nsubj),
                         "trt": np.where(s % 2 == 0, "A", "B"),
                         "x": rng.normal(size=len(s))})


def test_ar1_draws_have_the_ar1_covariance():
    """nlme's corAR1: Cor(e_t, e_t+k) = phi^k within a subject, 0 across subjects;
    Var(e) = sigma^2 (moment estimates over 4,000 draws, within 4 SEs)."""
    d = _data()
    m = ma.simulation_model("~ x + (1|subj)", d, fixed={"Intercept": 0.0, "x": 0.0}, varcomp={"subj": 0.0},
                            sigma=2.0, residual=ma.AR1("subj", "time"),
                            residual_par={"phi": 0.6})
    Y = m.simulate(4000, 1)
    E = Y.reshape(30, 4, 4000)  # subject, time, draw
    var = E.var(axis=(0, 2))
    assert np.all(np.abs(var - 4.0) < 4 * 4.0 * np.sqrt(2 / E[:, 0].size))
    for lag in (1, 2, 3):
        r = np.mean(E[:, :-lag] * E[:, lag:]) / 4.0
        assert abs(r - 0.6 ** lag) < 4 * np.sqrt((1 + 0.6 ** (2 * lag)) / E[:, :-lag].size)
    across = np.mean(E[:-1, 0] * E[1:, 0]) / 4.0
    assert abs(across) < 4 / np.sqrt(E[:-1, 0].size)


def test_residual_power_is_the_direct_loop():
    d = _data(nsubj=12)
    m = ma.simulation_model("~ trt + (1|subj)", d, fixed={"Intercept": 0.0, "trt[T.B]": 1.0},
                            varcomp={"subj": 0.3}, sigma=1.0,
                            residual=ma.AR1("subj", "time"), residual_par={"phi": 0.4})
    tab = ma.power(m, "trt[T.B]", nsim=3, seed=5)
    Y = m.simulate(3, np.random.default_rng(5), batch=m.design())
    hits, failed = 0, 0
    for j in range(3):
        dd = d.copy()
        dd["yy"] = Y[:, j]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # lmerTest-style Satterthwaite t test of a model with nlme's corAR1 errors
            r = ma.lmm("yy ~ trt + (1|subj)", dd, residual=ma.AR1("subj", "time"))
        if not r.converged:
            failed += 1
            continue
        hits += int(r.fixed("satterthwaite").loc["trt[T.B]", "p"] < 0.05)
    assert int(tab.loc[0, "n_failed"]) == failed
    assert tab.loc[0, "power"] == pytest.approx(hits / (3 - failed))


def test_residual_bad_input():
    d = _data()
    with pytest.raises(ArgumentError, match="phi"):
        ma.simulation_model("~ x + (1|subj)", d, fixed={"Intercept": 0.0, "x": 0.0}, varcomp={"subj": 0.0},
                            sigma=1.0, residual=ma.AR1("subj", "time"), residual_par={})
    with pytest.raises(ArgumentError, match="residual_par"):
        ma.simulation_model("~ x + (1|subj)", d, fixed={"Intercept": 0.0, "x": 0.0}, varcomp={"subj": 0.0},
                            sigma=1.0, residual=ma.AR1("subj", "time"),
                            residual_par={"phi": 0.5, "rho": 0.1})
    with pytest.raises(ArgumentError, match="residual="):
        ma.simulation_model("~ x + (1|subj)", d, fixed={"Intercept": 0.0, "x": 0.0}, varcomp={"subj": 0.0},
                            sigma=1.0, residual_par={"phi": 0.5})
