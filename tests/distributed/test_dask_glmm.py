"""GLMMs on Dask data frames equal the in-memory fit (issue 19).

``ma.glmm(formula, ddf, family)`` on a Dask frame (synchronous scheduler; the
rows shuffled and cut into 1, 3 or 50 partitions of random sizes) against
``ma.glmm`` on the same rows in memory (matched against lme4's glmer in
tests/glmm/test_glmer_reference.py).  The Dask fit runs every PIRLS iteration as
a pass and optimizes by the engine's finite-difference path (the in-memory fit
uses the analytic gradient), so:

* the objective itself must agree to rounding: the Laplace ``-2 log L`` at the
  in-memory estimates to 1e-12 relative;
* the optima: ``-2 log L`` to 1e-8 relative, theta and beta to 1e-6 (observed
  1e-13, 1e-10 and 1e-10 after the Dask fit's final Newton steps,
  :func:`~mixedanova.distributed.dask_glmm_polish.polish_optimum`), SEs to 1e-5
  relative (observed up to 9e-6: the in-memory fit's own SEs are that far from
  those of central differences of the analytic gradient, 3.5e-6 on cbpp's
  intercept and 9e-6 on the random slope's; the Dask fit's SEs, from a
  Richardson-extrapolated difference Hessian, are tested against those
  analytic-gradient SEs to 1e-6).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _dask_data import split as _split

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")

DATA = Path(__file__).resolve().parents[1] / "data" / "glmm"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
TICKS = "TICKS ~ YEAR + HEIGHT_c + (1 | BROOD)"
TICKS2 = "TICKS ~ YEAR + HEIGHT_c + (1 | BROOD) + (1 | LOCATION)"


@pytest.fixture(scope="module")
def cbpp() -> pd.DataFrame:
    d = pd.read_csv(DATA / "cbpp.csv")
    d["herd"] = d["herd"].astype(str)
    return d


@pytest.fixture(scope="module")
def ticks() -> pd.DataFrame:
    d = pd.read_csv(DATA / "grouseticks.csv")
    for c in ("INDEX", "BROOD", "LOCATION"):
        d[c] = d[c].astype(str)
    return d


@pytest.fixture(scope="module")
def cbpp_fit(cbpp):
    # lme4: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
    return ma.glmm(CBPP, cbpp, family="binomial")


@pytest.fixture(scope="module")
def cbpp_dask(cbpp):
    # lme4: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
    return ma.glmm(CBPP, _split(cbpp, 3, seed=3), family="binomial")


def _modes(res) -> np.ndarray:
    return np.concatenate([res.random_effects[g].sort_index().to_numpy().ravel()
                           for g in sorted(res.random_effects)])


def _compare(r1, r0) -> None:
    assert r1.nobs == r0.nobs  # lme4: nobs(m)
    assert r1.converged
    # lme4: -2 * logLik(m)
    assert r1.minus_2_loglik == pytest.approx(r0.minus_2_loglik, rel=1e-8)
    # lme4: AIC(m), BIC(m)
    assert r1.aic == pytest.approx(r0.aic, rel=1e-8)
    assert r1.bic == pytest.approx(r0.bic, rel=1e-8)
    # lme4: getME(m, "theta")
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=1e-6, atol=1e-6)
    # lme4: fixef(m)
    assert list(r1.fe_params.index) == list(r0.fe_params.index)
    np.testing.assert_allclose(r1.fe_params.to_numpy(), r0.fe_params.to_numpy(), rtol=1e-6,
                               atol=1e-6)
    # lme4: sqrt(diag(vcov(m)))
    np.testing.assert_allclose(r1.bse_fe.to_numpy(), r0.bse_fe.to_numpy(), rtol=1e-5)
    # lme4: as.data.frame(VarCorr(m))$vcov
    np.testing.assert_allclose(r1.varcomp["vcov"].to_numpy(), r0.varcomp["vcov"].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    # lme4: ranef(m) (the conditional modes move with theta and beta: 1e-5)
    np.testing.assert_allclose(_modes(r1), _modes(r0), rtol=1e-5, atol=1e-5)
    # lme4: deviance(m) (the sum of squared deviance residuals at the modes; not
    # stationary at the optimum, it moves with theta and beta to first order)
    assert r1.deviance == pytest.approx(r0.deviance, rel=1e-6)


def test_cbpp_matches_in_memory(cbpp_dask, cbpp_fit):
    # lme4: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
    _compare(cbpp_dask, cbpp_fit)
    assert cbpp_dask.passes > 0


@pytest.mark.parametrize("nparts", [1, pytest.param(50, marks=pytest.mark.slow)])
def test_cbpp_partitions_match_in_memory(cbpp, cbpp_fit, nparts):
    # lme4: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
    _compare(ma.glmm(CBPP, _split(cbpp, nparts, seed=nparts), family="binomial"), cbpp_fit)


def test_objective_equals_in_memory_at_the_estimates(cbpp_dask, cbpp_fit):
    # the passes compute the in-memory objective: at the in-memory estimates the
    # Laplace value agrees to rounding (the PIRLS sums in another order)
    r1 = cbpp_dask
    th, be = cbpp_fit.theta, cbpp_fit.fe_params.to_numpy()
    # lme4: devfun <- update(m, devFunOnly = TRUE); devfun(c(getME(m, "theta"), fixef(m)))
    assert r1.objective_at(th, be) == pytest.approx(cbpp_fit.objective_at(th, be), rel=1e-12)
    st = r1.objective.pirls(th, be)
    st0 = cbpp_fit.objective.pirls(th, be)
    # lme4: getME(m, "u") at the same (theta, beta)
    np.testing.assert_allclose(st.u, st0.u, rtol=1e-9, atol=1e-10)


def _gradient_hessian_se(res) -> np.ndarray:
    """SEs of ``beta`` from central differences of the in-memory analytic gradient
    at ``res``'s estimates (steps 1e-4 in the units of its Hessian): a reference
    independent of both fits' difference Hessians."""
    from mixedanova.glmm.fit import laplace_gradient

    obj = res.objective
    grad = laplace_gradient(obj)
    k = len(res.theta)
    x = np.concatenate([res.theta, res.fe_params.to_numpy()])
    h = 1e-4 / np.sqrt(np.diag(res.fit.hessian))
    H = np.empty((len(x), len(x)))
    for i in range(len(x)):
        e = np.zeros(len(x))
        e[i] = h[i]
        gp = grad(obj.pirls((x + e)[:k], (x + e)[k:]))
        gm = grad(obj.pirls((x - e)[:k], (x - e)[k:]))
        H[:, i] = (gp - gm) / (2.0 * h[i])
    H = (H + H.T) / 2.0
    return np.sqrt(np.diag(2.0 * np.linalg.inv(H))[k:])


def test_standard_errors_equal_an_independent_hessian(cbpp_dask, cbpp_fit):
    # lme4: sqrt(diag(vcov(m, use.hessian = TRUE))) with the Hessian from central
    # differences of the analytic gradient: the Dask fit's SEs to 1e-6 (the
    # in-memory fit's own are 3.5e-6 from it on the intercept, see the docstring)
    np.testing.assert_allclose(cbpp_dask.bse_fe.to_numpy(), _gradient_hessian_se(cbpp_fit),
                               rtol=1e-6)


@pytest.mark.slow
def test_proportion_with_weights_as_cbind(cbpp, cbpp_fit):
    # lme4: glmer(incidence / size ~ period + (1 | herd), cbpp, binomial, weights = size)
    d = cbpp.assign(prop=cbpp["incidence"] / cbpp["size"])
    r1 = ma.glmm("prop ~ period + (1 | herd)", _split(d, 3, seed=2), family="binomial",
                 weights="size")
    r0 = ma.glmm("prop ~ period + (1 | herd)", d, family="binomial", weights="size")
    _compare(r1, r0)


def test_proportions_with_a_count_gap(cbpp):
    # stored proportions times the trials a hair off whole numbers: glmer's logLik
    # counts round(w y) successes, the deviance w y (the gap summed in each pass)
    d = cbpp.assign(prop=(cbpp["incidence"] / cbpp["size"]).round(9))
    # lme4: glmer(prop ~ period + (1 | herd), d, binomial, weights = size)
    r0 = ma.glmm("prop ~ period + (1 | herd)", d, family="binomial", weights="size")
    assert r0.objective.count_gap is not None
    r1 = ma.glmm("prop ~ period + (1 | herd)", _split(d, 3, seed=1), family="binomial",
                 weights="size")
    _compare(r1, r0)


def test_lazy_fitted_and_residuals(cbpp_dask, cbpp_fit):
    r1 = cbpp_dask
    fitted = r1.fittedvalues
    assert hasattr(fitted, "compute") and hasattr(fitted, "npartitions")
    # lme4: fitted(m)
    got = fitted.compute().sort_index()
    np.testing.assert_allclose(got.to_numpy(), cbpp_fit.fittedvalues.sort_index().to_numpy(),
                               rtol=1e-5)
    for kind in ("deviance", "pearson", "response", "working"):
        # lme4: residuals(m, type = kind)
        got = r1.resid(kind).compute().sort_index()
        np.testing.assert_allclose(got.to_numpy(), cbpp_fit.resid(kind).sort_index().to_numpy(),
                                   rtol=1e-4, atol=1e-6)
    # lme4: predict(m, type = "link")
    np.testing.assert_allclose(r1.linear_predictor.compute().sort_index().to_numpy(),
                               cbpp_fit.linear_predictor.sort_index().to_numpy(), rtol=1e-5,
                               atol=1e-6)
    # lme4: summary(m) (the scaled residuals' quantiles from exact distributed
    # quantiles; every printed figure as in memory)
    assert str(r1.summary()) == str(cbpp_fit.summary())


@pytest.mark.parametrize("nparts", [3, pytest.param(1, marks=pytest.mark.slow),
                                    pytest.param(50, marks=pytest.mark.slow)])
def test_poisson_ticks_matches_in_memory(ticks, nparts):
    # lme4: glmer(TICKS ~ YEAR + HEIGHT_c + (1 | BROOD), grouseticks, poisson)
    r0 = ma.glmm(TICKS, ticks, family="poisson")
    r1 = ma.glmm(TICKS, _split(ticks, nparts, seed=11), family="poisson")
    _compare(r1, r0)


@pytest.mark.slow
@pytest.mark.parametrize("nparts", [1, 3, 50])
def test_poisson_ticks_two_terms_matches_in_memory(ticks, nparts):
    # lme4: glmer(TICKS ~ YEAR + HEIGHT_c + (1 | BROOD) + (1 | LOCATION), grouseticks, poisson)
    r0 = ma.glmm(TICKS2, ticks, family="poisson")
    r1 = ma.glmm(TICKS2, _split(ticks, nparts, seed=13), family="poisson")
    _compare(r1, r0)


def _slopes_counts(seed: int = 3, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 25, n)
    x = rng.normal(size=n)
    off = rng.normal(0, 0.3, n)
    b0, b1 = rng.normal(0, 0.5, 25), rng.normal(0, 0.3, 25)
    y = rng.poisson(np.exp(0.3 + 0.4 * x + b0[g] + b1[g] * x + off))
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g], "off": off})


@pytest.mark.slow
def test_poisson_random_slope_with_offset_matches_in_memory():
    # lme4: glmer(y ~ x + (x | g), d, poisson, offset = off)
    d = _slopes_counts()
    r0 = ma.glmm("y ~ x + (x | g)", d, family="poisson", offset="off")
    r1 = ma.glmm("y ~ x + (x | g)", _split(d, 3, seed=5), family="poisson", offset="off")
    _compare(r1, r0)
    # lme4: sqrt(diag(vcov(m))) against the analytic-gradient Hessian (the in-memory
    # fit's own SEs are 9e-6 from it here)
    np.testing.assert_allclose(r1.bse_fe.to_numpy(), _gradient_hessian_se(r0), rtol=1e-6)


def test_singular_fit_matches_in_memory():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 20, 400)
    x = rng.normal(size=400)
    y = rng.binomial(1, 1 / (1 + np.exp(-(0.2 + 0.8 * x))))
    d = pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g]})
    # lme4: glmer(y ~ x + (1 | g), d, binomial) -- isSingular(m) is TRUE
    with pytest.warns(ma.errors.SingularFitWarning):
        r0 = ma.glmm("y ~ x + (1 | g)", d, family="binomial")
    with pytest.warns(ma.errors.SingularFitWarning):
        r1 = ma.glmm("y ~ x + (1 | g)", _split(d, 3, seed=2), family="binomial")
    assert r0.is_singular and r1.is_singular  # lme4: isSingular(m)
    _compare(r1, r0)


def test_parquet_folder(cbpp, cbpp_fit, tmp_path):
    # the common case: dd.read_parquet of a folder (herd a string column)
    for i, idx in enumerate(np.array_split(np.random.default_rng(0).permutation(len(cbpp)), 3)):
        cbpp.iloc[idx].to_parquet(tmp_path / f"part-{i}.parquet")
    r1 = ma.glmm(CBPP, dd.read_parquet(str(tmp_path)), family="binomial")
    # lme4: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
    _compare(r1, cbpp_fit)


@pytest.mark.slow
def test_local_cluster_of_two_worker_processes(cbpp, cbpp_fit):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with dask.config.set(scheduler=client):  # override the synchronous fixture
            r1 = ma.glmm(CBPP, _split(cbpp, 4, seed=4), family="binomial")
            # lme4: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), ...)
            _compare(r1, cbpp_fit)
            got = r1.fittedvalues.compute().sort_index()
    # lme4: fitted(m)
    np.testing.assert_allclose(got.to_numpy(), cbpp_fit.fittedvalues.sort_index().to_numpy(),
                               rtol=1e-6)


def test_refused_with_the_reason(cbpp):
    ddf = dd.from_pandas(cbpp, npartitions=2)
    # lme4: glmer(..., nAGQ = 5): quadrature is not built for Dask
    with pytest.raises(ma.errors.ArgumentError, match="nAGQ"):
        ma.glmm(CBPP, ddf, family="binomial", nAGQ=5)
    # glmer.nb: the shape is estimated by refits
    with pytest.raises(ma.errors.ArgumentError, match="estimated"):
        ma.glmm("incidence ~ period + (1 | herd)", ddf, family="negative_binomial")
    # a factor response: its levels would be read chunk by chunk
    d = cbpp.assign(any=np.where(cbpp["incidence"] > 0, "yes", "no"))
    with pytest.raises(ma.errors.DesignError, match="0/1"):
        ma.glmm("any ~ period + (1 | herd)", dd.from_pandas(d, npartitions=2),
                family="binomial")
    # persist= is for Dask frames only
    with pytest.raises(ma.errors.ArgumentError, match="Dask"):
        ma.glmm(CBPP, cbpp, family="binomial", persist=False)
    # a response outside the family's support, found in a partition
    bad = cbpp.assign(neg=-cbpp["incidence"])
    with pytest.raises(ma.errors.DesignError, match="neg"):
        ma.glmm("neg ~ period + (1 | herd)", dd.from_pandas(bad, npartitions=2),
                family="poisson")


def test_row_sized_views_refused(cbpp_dask):
    # lme4 / performance: simulate(m), r2(m), icc(m), emmeans(m, ~ period) read rows
    for call in (lambda r: r.simulate(1), lambda r: r.r2(), lambda r: r.icc(),
                 lambda r: r.variance_components(), lambda r: r.emmeans("period")):
        with pytest.raises(ma.errors.DesignError, match="Dask data frame"):
            call(cbpp_dask)
    with pytest.raises(ma.errors.FitError, match="Dask"):
        cbpp_dask.refit(np.zeros(cbpp_dask.nobs))


def test_predict_on_pandas_and_dask_newdata(cbpp_dask, cbpp_fit):
    new = pd.read_csv(DATA / "cbpp_newdata.csv").astype({"herd": str})
    # lme4: predict(m, newdata, type = "response", allow.new.levels = TRUE)
    expected = cbpp_fit.predict(new, type="response", allow_new_levels=True).to_numpy()
    got = cbpp_dask.predict(new, type="response", allow_new_levels=True)
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-6)
    lazy = cbpp_dask.predict(dd.from_pandas(new, npartitions=2), type="response",
                             allow_new_levels=True)
    assert hasattr(lazy, "compute")
    np.testing.assert_allclose(lazy.compute().to_numpy(), expected, rtol=1e-6)
    # lme4: predict(m, re.form = NA) at the fit's rows
    pop = cbpp_dask.predict(re_form="~0").compute().sort_index().to_numpy()
    np.testing.assert_allclose(pop, cbpp_fit.predict(re_form="~0").sort_index().to_numpy(),
                               rtol=1e-6)
