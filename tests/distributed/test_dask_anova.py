"""``method="ANOVA"`` on a Dask data frame equals the in-memory ANOVA fit (issue 19).

The method of moments on a Dask frame reads a distributed group-by of the cells
(observations, mean and within-cell sum of squares per observed combination of
the model's variables, merged across partitions by Chan's pairwise formulas).
Each data set is shuffled and split into 1, 3 and 50 partitions of random sizes
(synchronous scheduler; a 2-process ``LocalCluster`` below); the EMS table,
the moment estimates, theta, fixed effects, SEs and BLUPs must equal the
in-memory ``ma.lmm(..., method="ANOVA")`` fit (itself checked against R's
``anova(lm(...))`` and the EMS in tests/moments/test_anova_lmm.py) to 1e-8, and
to 1e-6 with the response shifted by 1e8 SDs.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _dask_data import blups as _blups, insteval_like as _insteval_like, split as _split

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")



CASES = {
    # balanced crossed: the EMS rules
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                   lambda: ma.load_dataset("penicillin")),
    # balanced nested
    "pastes": ("strength ~ 1 + (1 | batch) + (1 | batch:cask)",
               lambda: ma.load_dataset("pastes")),
    # split plot with fixed factors
    "oats": ("yield ~ Variety * nitro_f + (1 | Block) + (1 | Block:Variety)",
             lambda: ma.load_dataset("oats")),
    # unbalanced: Henderson's Method III
    "oats_unbalanced": ("yield ~ Variety * nitro_f + (1 | Block) + (1 | Block:Variety)",
                        lambda: ma.load_dataset("oats_unbalanced")),
    "insteval": ("y ~ service + (1 | s) + (1 | d)", _insteval_like),
}

_NUMERIC = ["df", "sum_sq", "mean_sq", "F", "p"]


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.SingularFitWarning)
        return ma.lmm(formula, data, method="ANOVA", **kw)


def _compare(r1, r0, tol: float) -> None:
    assert type(r1).__name__ == "DistributedAnovaResults"
    assert r1.nobs == r0.nobs
    assert r1.ems_method == r0.ems_method
    t1, t0 = r1.ems_table(), r0.ems_table()
    assert list(t1.index) == list(t0.index)
    # R: anova(lm(...)) Df, Sum Sq, Mean Sq, F, p against the EMS error term
    scale = float(t0["sum_sq"].sum())
    for col in _NUMERIC:
        np.testing.assert_allclose(t1[col].to_numpy(float), t0[col].to_numpy(float),
                                   rtol=tol, atol=tol * (scale if "sq" in col else 1.0),
                                   err_msg=col)
    coef = [c for c in t0.columns if c.startswith("s2_")]
    np.testing.assert_allclose(t1[coef].to_numpy(float), t0[coef].to_numpy(float), rtol=1e-12)
    assert list(t1["error_term"]) == list(t0["error_term"])
    # the moment estimates (may be negative) and their SEs
    m1, m0 = r1.moment_estimates, r0.moment_estimates
    for col in ("estimate", "se"):
        np.testing.assert_allclose(m1[col].to_numpy(float), m0[col].to_numpy(float),
                                   rtol=tol, atol=tol * float(m0["estimate"].abs().max()))
    # GLS and BLUPs at the moment estimates (lme4-style fixef / ranef at theta)
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=tol, atol=tol)
    np.testing.assert_allclose(r1.fe_params.to_numpy(), r0.fe_params.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)
    np.testing.assert_allclose(r1.bse_fe.to_numpy(), r0.bse_fe.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)
    np.testing.assert_allclose(_blups(r1), _blups(r0), rtol=tol, atol=tol * r0.sigma)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("nparts", [1, 3, 50])
def test_dask_anova_equals_the_in_memory_anova(case, nparts):
    formula, data = CASES[case]
    df = data()
    r0 = _fit(formula, df)
    r1 = _fit(formula, _split(df, nparts, seed=nparts))
    _compare(r1, r0, 1e-8)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("nparts", [3, 50])
def test_dask_anova_with_a_response_shifted_by_1e8_sds(case, nparts):
    formula, data = CASES[case]
    df = data()
    yname = formula.split("~")[0].strip()
    df[yname] = df[yname] + 1e8 * float(df[yname].std())
    r0 = _fit(formula, df)
    r1 = _fit(formula, _split(df, nparts, seed=nparts + 7))
    _compare(r1, r0, 1e-6)


def test_dask_anova_restricted_model_and_method3():
    formula, data = CASES["oats"]
    df = data()
    ddf = _split(df, 3, seed=2)
    # Montgomery's restricted mixed model (ems="restricted") and forced Method III
    _compare(_fit(formula, ddf, ems="restricted"), _fit(formula, df, ems="restricted"), 1e-8)
    _compare(_fit(formula, ddf, anova_method="method3"),
             _fit(formula, df, anova_method="method3"), 1e-8)


def test_dask_anova_drops_missing_rows_as_in_memory():
    formula, data = CASES["oats_unbalanced"]
    df = data()
    df["yield"] = df["yield"].astype(float)
    df.loc[[2, 17], "yield"] = np.nan
    df.loc[[30], "Variety"] = None
    r0 = _fit(formula, df)
    r1 = _fit(formula, _split(df, 4, seed=3))
    assert r1.n_dropped == r0.n_dropped == 3
    _compare(r1, r0, 1e-8)


def test_dask_anova_refusals_are_named():
    df = ma.load_dataset("sleepstudy")
    ddf = _split(df, 3, seed=1)
    with pytest.raises(ma.DesignError, match="'Days' is a numeric covariate"):
        _fit("Reaction ~ Days + (1 | Subject)", ddf)
    with pytest.raises(ma.DesignError, match="random intercepts"):
        _fit("Reaction ~ 1 + (Days | Subject)", ddf)
    df["w"] = 1.0
    with pytest.raises(ma.DesignError, match="prior weights"):
        _fit("Reaction ~ 1 + (1 | Subject)", _split(df, 3, seed=1), weights="w")
    with pytest.raises(ma.FitError, match="start"):
        _fit("Reaction ~ 1 + (1 | Subject)", ddf, start=[1.0])


def test_dask_anova_on_a_local_cluster_of_two_worker_processes():
    distributed = pytest.importorskip("distributed")
    formula, data = CASES["oats_unbalanced"]
    df = data()
    r0 = _fit(formula, df)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with dask.config.set(scheduler=client):
            for nparts in (1, 3, 50):
                _compare(_fit(formula, _split(df, nparts, seed=nparts)), r0, 1e-8)
    assert isinstance(r0.ems_table(), pd.DataFrame)
