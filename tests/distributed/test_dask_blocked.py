"""A Dask fit through the crossed layout for very large designs equals the in-memory fit.

At 100 M rows over 100k x 10k crossed levels the summed cross-products go to
likelihood/crossed_blocked.py (``C C'`` by dense blocks of first-term levels, nothing
stored per entry).  Here its thresholds are lowered so that the InstEval-shaped data
take that route through Dask, while the in-memory fit of the same rows takes the
default one (the stored pairs of entries): the tolerances of issue 19's comparisons.
"""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma
import mixedanova.likelihood.crossed_blocked as cb
from _dask_data import blups, insteval_like, split
from mixedanova.likelihood.crossed import CrossedSystem
from mixedanova.likelihood.crossed_blocked import BlockedCrossedSystem

pytest.importorskip("dask")

FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept)"


@pytest.mark.parametrize("nparts, shift, method", [(3, False, "REML"), (50, False, "REML"),
                                                   (3, True, "REML"), (3, False, "ML")])
def test_blocked_dask_fit_equals_the_in_memory_fit(monkeypatch, nparts, shift, method):
    df = insteval_like()
    if shift:
        df["y"] = df["y"] + 1e8 * float(df["y"].std())
    crit, tol = (1e-9, 1e-6) if shift else (1e-10, 1e-8)
    r0 = ma.lmm(FORMULA, df, method=method)
    assert isinstance(r0.model.deviance_function(method == "REML").system, CrossedSystem)
    monkeypatch.setattr(cb, "BLOCKED_MIN_DENSE_C", -1)
    monkeypatch.setattr(cb, "BLOCKED_MIN_PAIRS", -1)
    monkeypatch.setattr(cb, "BLOCKED_FLOPS_PER_PAIR", np.inf)
    monkeypatch.setattr(cb, "BLOCK_BYTES", 8 * 17 * 60)  # blocks of 17 students
    r1 = ma.lmm(FORMULA, split(df, nparts, seed=nparts), method=method)
    system = r1.model.deviance_function(method == "REML").system
    assert isinstance(system, BlockedCrossedSystem) and system.width == 17
    # REMLcrit(m) / deviance(m), getME(m, "theta"), fixef(m), sqrt(diag(vcov(m))), sigma(m)
    assert r1.state.objective == pytest.approx(r0.state.objective, rel=crit)
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=tol, atol=tol)
    np.testing.assert_allclose(r1.fe_params, r0.fe_params, rtol=tol, atol=tol * r0.sigma)
    np.testing.assert_allclose(r1.bse_fe, r0.bse_fe, rtol=tol, atol=tol * r0.sigma)
    assert r1.sigma == pytest.approx(r0.sigma, rel=tol)
    # ranef(m) and the conditional SDs of ranef(m, condVar = TRUE)
    np.testing.assert_allclose(blups(r1), blups(r0), rtol=tol, atol=tol * r0.sigma)
    for g in r0.random_effects_sd:
        np.testing.assert_allclose(r1.random_effects_sd[g].sort_index(),
                                   r0.random_effects_sd[g].sort_index(), rtol=tol)
    if method == "REML" and not shift:
        # lmerTest's summary(m) df (central differences: their noise is ~1e-6)
        np.testing.assert_allclose(r1.fixed()["df"], r0.fixed()["df"], rtol=1e-5)
