"""A large pandas frame set up chunk by chunk equals the in-memory fit (issue 19).

``ma.lmm(formula, df)`` on a pandas frame of at least ``frame_fit.CHUNKED_ROWS``
rows sums the cross-products slice by slice (:mod:`mixedanova.distributed.frame_fit`).
Here the threshold and the slice size are patched tiny, so that the same small
data go through both routes: the chunked fit must equal the in-memory fit of
the same rows (REML criterion 1e-10 relative, theta, fixed effects, SEs and
BLUPs 1e-8; with the response shifted by 1e8 SDs 1e-9 and 1e-6), and every
method of the results must give what the in-memory results give.  The expected
values are the package's in-memory fits (matched against lme4 in
tests/test_lmer_reference.py).  None of this needs Dask.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _dask_data import blups as _blups, insteval_like as _insteval_like
from mixedanova.distributed import frame_fit
from mixedanova.errors import DesignError, RankDeficiencyWarning
from mixedanova.results.lmm import LinearMixedResults


def _slopes(seed: int = 5, n: int = 900) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 30, n)
    h = rng.integers(0, 8, n)
    x = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    off = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(size=30)[g] + 0.4 * rng.normal(size=30)[g] * x
         + 0.6 * rng.normal(size=8)[h] + off + rng.normal(size=n) / np.sqrt(w))
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": [f"h{v}" for v in h], "w": w,
                         "off": off})


def _sleepstudy_missing() -> pd.DataFrame:
    df = ma.load_dataset("sleepstudy")
    df.loc[[3, 50], "Days"] = np.nan
    df.loc[7, "Reaction"] = np.nan
    return df


def _categorical() -> pd.DataFrame:
    """Categorical grouping and fixed factors, each with an unused category."""
    df = ma.load_dataset("sleepstudy")
    subjects = sorted(df.Subject.astype(str).unique())
    df["Subject"] = pd.Categorical(df.Subject.astype(str), categories=["none"] + subjects[::-1])
    df["part"] = pd.Categorical(np.where(df.Days < 5, "early", "late"),
                                categories=["never", "late", "early"])
    return df


CASES = {
    "categorical": ("Reaction ~ Days + part + (Days | Subject)", _categorical, {}),
    "sleepstudy_missing": ("Reaction ~ Days + (Days | Subject)", _sleepstudy_missing, {}),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                   lambda: ma.load_dataset("penicillin"), {}),
    "insteval": ("y ~ service + (1 | s) + (1 | d) + (1 | dept)", _insteval_like, {}),
    "slopes_weights_offset": ("y ~ x + (x | g) + (1 | h)", _slopes,
                              {"weights": "w", "offset": "off"}),
}


@pytest.fixture()
def chunked(monkeypatch):
    """A switch: ``chunked(True)`` sends every pandas frame through the chunked
    set-up in slices of 37 rows, ``chunked(False)`` through the in-memory design."""
    def switch(on: bool) -> None:
        monkeypatch.setattr(frame_fit, "CHUNKED_ROWS", 1 if on else 1 << 62)
        monkeypatch.setattr(frame_fit, "SLICE_ROWS", 37)
    return switch


def _both(chunked, formula, df, **kw):
    chunked(False)
    r0 = ma.lmm(formula, df, **kw)
    chunked(True)
    r1 = ma.lmm(formula, df, **kw)
    # (no R counterpart: which route ran) in memory below the threshold, chunked above
    assert r0.model.chunked is None and type(r0) is LinearMixedResults
    assert isinstance(r1.model.chunked, frame_fit.ChunkedSetUp)
    assert type(r1) is frame_fit.FrameLmmResults
    return r0, r1


def _compare(r1, r0, crit_rel: float, tol: float) -> None:
    assert r1.nobs == r0.nobs and r1.n_dropped == r0.n_dropped  # nobs(m), length(na.action(m))
    crit = "reml_criterion" if r0.method == "REML" else "deviance"
    # REMLcrit(m) for a REML fit, deviance(m) for an ML one
    assert getattr(r1, crit) == pytest.approx(getattr(r0, crit), rel=crit_rel)
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=tol, atol=tol)  # getME(m, "theta")
    assert list(r1.fe_params.index) == list(r0.fe_params.index)  # names(fixef(m))
    np.testing.assert_allclose(r1.fe_params.to_numpy(), r0.fe_params.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)  # fixef(m)
    np.testing.assert_allclose(r1.bse_fe.to_numpy(), r0.bse_fe.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)  # sqrt(diag(vcov(m)))
    assert r1.sigma == pytest.approx(r0.sigma, rel=tol)  # sigma(m)
    for g in r0.random_effects:  # rownames / colnames of ranef(m)[[g]]
        a, b = r1.random_effects[g], r0.random_effects[g]
        assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns)
    np.testing.assert_allclose(_blups(r1), _blups(r0), rtol=tol, atol=tol * r0.sigma)  # ranef(m)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_chunked_set_up_equals_the_in_memory_fit(case, method, chunked):
    formula, data, kw = CASES[case]
    r0, r1 = _both(chunked, formula, data(), method=method, **kw)
    assert not r1.design.built  # the fit itself never built the row-sized design
    assert r1.method == r0.method == method  # isREML(m)
    _compare(r1, r0, 1e-10, 1e-8)


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_set_up_with_a_response_shifted_by_1e8_sds(case, chunked):
    formula, data, kw = CASES[case]
    df = data()
    yname = formula.split("~")[0].strip()
    df[yname] = df[yname] + 1e8 * float(df[yname].std())
    r0, r1 = _both(chunked, formula, df, **kw)
    _compare(r1, r0, 1e-9, 1e-6)


def test_results_methods_equal_across_the_routes(chunked):
    formula, data, _ = CASES["sleepstudy_missing"]
    df = data()
    r0, r1 = _both(chunked, formula, df)
    # print(summary(m)) of lmerTest, the text
    assert str(r1.summary()) == str(r0.summary())
    assert not r1.design.built  # summary, varcomp and BLUPs are level-sized
    # as.data.frame(VarCorr(m))
    pd.testing.assert_frame_equal(r1.varcomp, r0.varcomp, rtol=1e-8)
    # fitted(m), residuals(m), residuals(m, type = "pearson"), residuals(m, scaled = TRUE)
    pd.testing.assert_series_equal(r1.fittedvalues, r0.fittedvalues, rtol=1e-8)
    pd.testing.assert_series_equal(r1.resid, r0.resid, rtol=1e-8, atol=1e-8 * r0.sigma)
    for t in ("response", "pearson", "scaled"):
        pd.testing.assert_series_equal(r1.residuals(t), r0.residuals(t), rtol=1e-8,
                                       atol=1e-8 * r0.sigma)
    # predict(m), predict(m, re.form = NA), predict(m, newdata = nd)
    pd.testing.assert_series_equal(r1.predict(), r0.predict(), rtol=1e-8)
    pd.testing.assert_series_equal(r1.predict(re_form="~0"), r0.predict(re_form="~0"),
                                   rtol=1e-8)
    nd = df.iloc[:20]
    pd.testing.assert_series_equal(r1.predict(nd), r0.predict(nd), rtol=1e-8)
    assert not r1.design.built  # fitted values, residuals, predictions slice by slice
    # anova(m) of lmerTest (Satterthwaite)
    pd.testing.assert_frame_equal(r1.anova(), r0.anova(), rtol=1e-8)
    # summary(m, ddf = "Kenward-Roger")$coefficients
    pd.testing.assert_frame_equal(r1.fixed(ddf="kenward-roger"), r0.fixed(ddf="kenward-roger"),
                                  rtol=1e-8)
    # anova(m, ddf = "Kenward-Roger")
    pd.testing.assert_frame_equal(r1.anova(ddf="kenward-roger"), r0.anova(ddf="kenward-roger"),
                                  rtol=1e-8)
    # hatvalues(m), cooks.distance(m)
    pd.testing.assert_series_equal(r1.hatvalues(), r0.hatvalues(), rtol=1e-8)
    pd.testing.assert_series_equal(r1.cooks_distance(), r0.cooks_distance(), rtol=1e-8)
    # getME(m, "X"), getME(m, "y")
    np.testing.assert_array_equal(r1.design.X, r0.design.X)
    np.testing.assert_array_equal(r1.design.y, r0.design.y)


def test_update_and_refit_of_a_chunked_fit(chunked):
    formula, data, _ = CASES["sleepstudy_missing"]
    df = data()
    r0, r1 = _both(chunked, formula, df)
    # update(m, REML = FALSE): the ML fit of the same rows
    m0, m1 = r0.model.fit("ML"), r1.model.fit("ML")
    _compare(m1, m0, 1e-10, 1e-8)
    # update(m, . ~ . - (Days | Subject) + (1 | Subject))
    u0 = r0.model.update("Reaction ~ Days + (1 | Subject)").fit()
    u1 = r1.model.update("Reaction ~ Days + (1 | Subject)").fit()
    assert u1.model.chunked is not None  # the reduced model is chunked too
    _compare(u1, u0, 1e-10, 1e-8)
    # anova(m_reduced, m): the likelihood-ratio test
    pd.testing.assert_frame_equal(ma.compare(u1, r1, refit=True), ma.compare(u0, r0, refit=True),
                                  rtol=1e-8)
    # refit(m, newresp = y2)
    y2 = r0.design.y + np.random.default_rng(0).normal(0.0, 20.0, r0.nobs)
    _compare(r1.model.refit(y2), r0.model.refit(y2), 1e-10, 1e-8)


def test_missing_values_counted_and_refused_as_in_memory(chunked):
    formula, data, _ = CASES["sleepstudy_missing"]
    df = data()
    r0, r1 = _both(chunked, formula, df)
    assert r1.n_dropped == r0.n_dropped == 3  # length(na.action(m))
    # print(summary(m)): "3 observations deleted due to missingness"
    assert str(r1.summary()).splitlines()[-1] == str(r0.summary()).splitlines()[-1]
    msgs = []
    for on in (False, True):  # lmer(..., na.action = na.fail): the same error
        chunked(on)
        with pytest.raises(DesignError) as err:
            ma.lmm(formula, df, missing="raise")
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1]


def test_rank_deficient_fixed_effects_warn_once_and_match(chunked):
    df = ma.load_dataset("sleepstudy")
    df["Days2"] = 2 * df["Days"]
    got = []
    for on in (False, True):
        chunked(on)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = ma.lmm("Reaction ~ Days + Days2 + (1 | Subject)", df)
        got.append((res, [str(w.message) for w in caught
                          if issubclass(w.category, RankDeficiencyWarning)]))
    (r0, w0), (r1, w1) = got
    assert r1.model.chunked is not None  # (no R counterpart) the chunked route ran
    # lmer's message "fixed-effect model matrix is rank deficient so dropping 1 column"
    assert w1 == w0 and len(w0) == 1
    _compare(r1, r0, 1e-10, 1e-8)


@pytest.mark.parametrize("how", ["center", "residual", "fixed", "weights_array", "anova"])
def test_what_the_chunked_route_refuses_is_fitted_in_memory(how, chunked):
    df = ma.load_dataset("sleepstudy")
    formula, kw = "Reaction ~ Days + (1 | Subject)", {}
    if how == "center":
        formula = "Reaction ~ center(Days) + (1 | Subject)"
    elif how == "residual":
        kw = {"residual": ma.AR1(group="Subject")}
    elif how == "fixed":
        kw = {"fixed": {"sigma": 25.0}}
    elif how == "weights_array":
        kw = {"weights": np.linspace(0.5, 2.0, len(df))}
    elif how == "anova":
        kw = {"method": "ANOVA"}
    chunked(False)
    r0 = ma.lmm(formula, df, **kw)
    chunked(True)
    r1 = ma.lmm(formula, df, **kw)
    assert r1.model.chunked is None and type(r1) is type(r0)  # the in-memory route
    # the very same numbers: logLik(m), fixef(m)
    assert r1.llf == r0.llf
    np.testing.assert_array_equal(r1.fe_params.to_numpy(), r0.fe_params.to_numpy())


def test_chunked_route_is_taken_from_the_threshold_on(monkeypatch):
    df = ma.load_dataset("sleepstudy")
    monkeypatch.setattr(frame_fit, "CHUNKED_ROWS", len(df) + 1)
    res = ma.lmm("Reaction ~ Days + (1 | Subject)", df)
    assert res.model.chunked is None  # below: the in-memory design
    monkeypatch.setattr(frame_fit, "CHUNKED_ROWS", len(df))
    res = ma.lmm("Reaction ~ Days + (1 | Subject)", df)
    assert res.model.chunked is not None  # at the threshold: chunked


def test_chunked_pandas_fit_does_not_import_dask():
    code = ("import sys, mixedanova as ma\n"
            "from mixedanova.distributed import frame_fit\n"
            "frame_fit.CHUNKED_ROWS = 1; frame_fit.SLICE_ROWS = 50\n"
            "res = ma.lmm('Reaction ~ Days + (Days | Subject)', ma.load_dataset('sleepstudy'))\n"
            "assert res.model.chunked is not None\n"
            "res.summary(); res.fittedvalues; res.predict(re_form='~0')\n"
            "print(sorted(m for m in sys.modules if m == 'dask' or m.startswith('dask.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"  # (no R counterpart) no dask module was loaded


def test_explicit_pwrss_is_a_pass_over_the_slices(chunked, monkeypatch):
    # the random effects explain nearly all of the response: the engine recomputes
    # the penalized residual sum of squares from the rows, here slice by slice
    rng = np.random.default_rng(4)
    g = rng.integers(0, 40, 2000)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=2000)})
    df["y"] = 10 * rng.normal(size=40)[g] + 0.5 * df.x + 0.05 * rng.normal(size=2000)
    calls = []
    original = frame_fit.FrameRows.pwrss

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(frame_fit.FrameRows, "pwrss", counting)
    r0, r1 = _both(chunked, "y ~ x + (1 | g)", df)
    assert calls  # (no R counterpart) the engine asked for the rows' pwrss
    # devfun(theta) (lme4's devFunOnly = TRUE) at the same theta: the in-memory value
    assert r1.model.deviance_function()(r0.theta) == pytest.approx(
        r0.model.deviance_function()(r0.theta), rel=1e-12)
    # REMLcrit(m); getME(m, "theta") and fixef(m) to 1e-7, as the Dask fit's (the
    # engine's gradient comes from cross-products whose pwrss cancels in this regime)
    assert r1.reml_criterion == pytest.approx(r0.reml_criterion, rel=1e-10)
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=1e-7)
    np.testing.assert_allclose(r1.fe_params, r0.fe_params, rtol=1e-7, atol=1e-7 * r0.sigma)


def test_results_of_a_chunked_fit_pickle(monkeypatch):
    import pickle

    monkeypatch.setattr(frame_fit, "CHUNKED_ROWS", 1)
    monkeypatch.setattr(frame_fit, "SLICE_ROWS", 50)
    res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"))
    back = pickle.loads(pickle.dumps(res))  # saveRDS(m) / readRDS()
    assert not back.design.built  # (no R counterpart) the rows are still built lazily
    np.testing.assert_array_equal(back.fittedvalues, res.fittedvalues)  # fitted(m)
    np.testing.assert_array_equal(back.hatvalues(), res.hatvalues())  # hatvalues(m)
