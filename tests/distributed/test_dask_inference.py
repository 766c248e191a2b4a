"""Inference on a fit to a Dask data frame equals the in-memory fit's (issue 19).

``anova()`` of every type (lmerTest's ``anova(m, type, ddf)``: types 1 and 2 from
the summed ``X'X``, type 3 from one TSQR pass over ``[rdX X]``), Nakagawa's R2 and
the ICC (one pass of prediction moments), Wald and profile intervals (the summed
system's deviance), emmeans (grid levels from the codebook, covariate means from
one pass) and predictions with SEs on pandas ``newdata`` must equal those of the
in-memory ``ma.lmm`` fit of the same rows: 1e-8 relative, and 1e-6 with the
response shifted by 1e8 SDs.  The in-memory numbers are themselves checked
against lmerTest / performance / emmeans in tests/inference/; these tests check
that the partition-by-partition path changes nothing.  Methods that need the rows
one by one or refits of other models are refused with a package error naming
the reason (one test each).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.errors import MixedAnovaError, RankDeficiencyWarning
from _dask_data import serial_data, split as _split, split_by_group

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")

TOL = 1e-8
TOL_SHIFTED = 1e-6


def _weighted(seed: int = 7, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 25, n)
    f = rng.choice(["a", "b", "c"], n)
    x = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    y = (1 + 0.5 * x + (f == "b") - 0.5 * (f == "c") * x + rng.normal(size=25)[g]
         + 0.3 * rng.normal(size=25)[g] * x + rng.normal(size=n) / np.sqrt(w))
    return pd.DataFrame({"y": y, "x": x, "f": f, "g": g, "w": w})


CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)",
                   lambda: ma.load_dataset("sleepstudy"), {}),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                   lambda: ma.load_dataset("penicillin"), {}),
    "oats": ("yield ~ Variety * nitro_f + (1 | Block)", lambda: ma.load_dataset("oats"), {}),
    "oats_sum_covariate": ("yield ~ C(Variety, contr.sum) * nitro + (1 | Block)",
                           lambda: ma.load_dataset("oats"), {}),
    "weights": ("y ~ f * x + (x | g)", _weighted, {"weights": "w"}),
}


def _close(a, b, tol: float, atol: float = 0.0) -> None:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=atol, equal_nan=True)


# R2 and ICC are fractions in [0, 1]; an intercept-only model's marginal R2 is 0 up
# to rounding (np.var of a constant), so they also get an absolute 1e-14
R2_ATOL = 1e-14

# every case in 3 partitions; 1 and 50 partitions for a few (the 50-partition
# passes cost ~1 s each on the synchronous scheduler)
SPLITS = [(case, 3) for case in sorted(CASES)] + [
    ("oats", 1), ("weights", 1), ("sleepstudy", 50), ("oats_sum_covariate", 50)]


@pytest.fixture(scope="module")
def fits():
    """``(dask fit, in-memory fit)`` per (case, partitions, shifted), built once."""
    cache = {}

    def get(case: str, nparts: int, shifted: bool = False):
        key = (case, nparts, shifted)
        if key not in cache:
            formula, data, kw = CASES[case]
            df = data()
            if shifted:
                resp = formula.split("~")[0].strip()
                df[resp] = df[resp].astype(float) + 1e8 * df[resp].std()
            with dask.config.set(scheduler="synchronous"):
                cache[key] = (ma.lmm(formula, _split(df, nparts, seed=nparts + 1), **kw),
                              ma.lmm(formula, df, **kw))
        return cache[key]

    return get


@pytest.mark.parametrize("case, nparts", SPLITS)
def test_anova_tables_equal_in_memory(fits, case, nparts):
    r1, r0 = fits(case, nparts)
    for type_, ddf in [(1, "satterthwaite"), (2, "satterthwaite"), (3, "satterthwaite"),
                       (1, "residual"), (3, "residual"), (3, "none")]:
        a1, a0 = r1.anova(type=type_, ddf=ddf), r0.anova(type=type_, ddf=ddf)
        assert list(a1.index) == list(a0.index)
        # lmerTest: anova(m, type = type_, ddf = ddf)
        _close(a1.to_numpy(), a0.to_numpy(), TOL)
        assert a1.heading == a0.heading
        for term in a0.hypotheses:  # lmerTest: attr(anova(m, type), "hypotheses")
            np.testing.assert_allclose(a1.hypotheses[term], a0.hypotheses[term],
                                       rtol=TOL, atol=TOL)


@pytest.mark.parametrize("case, nparts", SPLITS)
def test_r2_icc_equal_in_memory(fits, case, nparts):
    r1, r0 = fits(case, nparts)
    _close(r1.r2(), r0.r2(), TOL, R2_ATOL)                 # performance::r2_nakagawa(m)
    _close(r1.icc(), r0.icc(), TOL, R2_ATOL)               # performance::icc(m)
    # performance::icc(m, by_group = TRUE)
    _close(r1.icc(by_group=True), r0.icc(by_group=True), TOL, R2_ATOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_wald_intervals_emmeans_predictions_equal_in_memory(fits, case):
    r1, r0 = fits(case, 3)
    _close(r1.conf_int("wald"), r0.conf_int("wald"), TOL)  # confint(m, method = "Wald")
    nd = CASES[case][1]().iloc[::7]
    # predict(m, nd) with lmerTest's SE of the fixed part and intervals
    _close(r1.get_prediction(nd), r0.get_prediction(nd), TOL)
    _close(r1.predict(nd, se_fit=True), r0.predict(nd, se_fit=True), TOL)
    variables = r0.design.needed_columns(include_random=False)
    if variables:
        spec = variables[0]
        e1, e0 = r1.emmeans(spec), r0.emmeans(spec)
        num = e0.select_dtypes("number").columns
        assert list(e1.columns) == list(e0.columns)
        _close(e1[num], e0[num], TOL)                      # emmeans(m, ~ spec)
        p0 = e0.pairs()
        if len(p0):
            p1 = e1.pairs()
            num = [c for c in p0.select_dtypes("number").columns if c != "p_value"]
            _close(p1[num], p0[num], TOL)                  # pairs(emmeans(m, ~ spec))
            # the Tukey p values are scipy's studentized_range.sf, a numerical
            # integral accurate to ~1e-13 absolute (tiny p: 0 or 1e-13)
            _close(p1["p_value"], p0["p_value"], TOL, 1e-12)  # pairs(emm)$p.value


def test_profile_intervals_equal_in_memory(fits):
    r1, r0 = fits("penicillin", 3)
    # confint(m, method = "profile")
    _close(r1.conf_int("profile"), r0.conf_int("profile"), TOL)


@pytest.mark.parametrize("case", ["oats", "weights", "sleepstudy"])
def test_shifted_response(fits, case):
    r1, r0 = fits(case, 3, shifted=True)
    for type_ in (1, 2, 3):
        # lmerTest: anova(m, type = type_) with y + 1e8 sd(y)
        _close(r1.anova(type=type_).to_numpy(), r0.anova(type=type_).to_numpy(), TOL_SHIFTED)
    _close(r1.r2(), r0.r2(), TOL_SHIFTED, R2_ATOL)         # performance::r2_nakagawa(m)
    _close(r1.icc(), r0.icc(), TOL_SHIFTED, R2_ATOL)       # performance::icc(m)


def test_anova_method_fit(fits):
    """``method="ANOVA"``: the EMS table and moment estimates (tested in
    test_dask_anova.py) and the fixed-effects F tests of the moment fit."""
    df = ma.load_dataset("oats")
    formula = "yield ~ Variety * nitro_f + (1 | Block) + (1 | Block:Variety)"
    r0 = ma.lmm(formula, df, method="ANOVA")
    r1 = ma.lmm(formula, _split(df, 3, seed=2), method="ANOVA")
    for type_ in (1, 3):
        # lmerTest: anova(m, type = type_, ddf = "residual") at the moment estimates
        _close(r1.anova(type=type_, ddf="residual").to_numpy(),
               r0.anova(type=type_, ddf="residual").to_numpy(), TOL)
    # summary(aov(yield ~ Variety * nitro_f + Error(Block/Variety)))
    _close(r1.ems_table().select_dtypes("number"), r0.ems_table().select_dtypes("number"), TOL)
    num = r0.moment_estimates.select_dtypes("number").columns
    _close(r1.moment_estimates[num], r0.moment_estimates[num], TOL)
    c1, c0 = r1.varcomp_ci({"Block": 1, "Residual": 1}), r0.varcomp_ci({"Block": 1,
                                                                         "Residual": 1})
    _close([c1.estimate, c1.lower, c1.upper], [c0.estimate, c0.lower, c0.upper], TOL)
    _close(r1.r2(), r0.r2(), TOL, R2_ATOL)                 # performance::r2_nakagawa(m)


@pytest.mark.parametrize("case", ["sleepstudy", "penicillin", "oats", "weights"])
def test_ranova_equals_in_memory(fits, case):
    """Reduced models are refitted on the Dask frame (their own passes); the model
    without random terms (oats' one term) is the lm from the summed cross-products."""
    r1, r0 = fits(case, 3)
    a1, a0 = r1.ranova(), r0.ranova()
    assert list(a1.index) == list(a0.index)
    _close(a1.to_numpy(), a0.to_numpy(), TOL)              # lmerTest: ranova(m)


def test_ranova_lm_with_weights():
    df = _weighted()
    formula = "y ~ f * x + (1 | g)"
    r0 = ma.lmm(formula, df, weights="w", method="ML")
    r1 = ma.lmm(formula, _split(df, 3, seed=5), weights="w", method="ML")
    # lmerTest: ranova(m) of lmer(..., weights = w, REML = FALSE): logLik(lm(..., weights = w))
    _close(r1.ranova().to_numpy(), r0.ranova().to_numpy(), TOL)


def test_compare_and_update_equal_in_memory(fits):
    r1, r0 = fits("sleepstudy", 3)
    df = ma.load_dataset("sleepstudy")
    s1 = ma.lmm("Reaction ~ Days + (1 | Subject)", _split(df, 3, seed=9))
    s0 = ma.lmm("Reaction ~ Days + (1 | Subject)", df)
    for refit in (None, False):
        # lme4: anova(m0, m1) (ML refits) and anova(m0, m1, refit = FALSE)
        _close(ma.compare(s1, r1, refit=refit).to_numpy(),
               ma.compare(s0, r0, refit=refit).to_numpy(), TOL)
    u1, u0 = r1.update(method="ML"), r0.update(method="ML")
    assert u1.deviance == pytest.approx(u0.deviance, rel=1e-10)  # lme4: update(m, REML = FALSE)
    _close(u1.fe_params, u0.fe_params, TOL)


def test_update_keeps_the_rows_of_the_first_model():
    df = ma.load_dataset("sleepstudy").astype({"Days": float})
    df["z"] = np.where(np.arange(len(df)) % 9 == 0, np.nan, 1.0)  # only in the slope term
    df["z"] = df["z"] * df["Days"]
    r0 = ma.lmm("Reaction ~ Days + (z | Subject)", df)
    r1 = ma.lmm("Reaction ~ Days + (z | Subject)", _split(df, 3, seed=2))
    # lme4: update(m, . ~ Days + (1 | Subject)) on the complete cases: same nobs
    u1, u0 = r1.update("Reaction ~ Days + (1 | Subject)"), r0.update("Reaction ~ Days + (1 | Subject)")
    assert u1.nobs == u0.nobs == r0.nobs < len(df)
    assert u1.reml_criterion == pytest.approx(u0.reml_criterion, rel=1e-10)


# ------------------------------------------------------------------ refusals
REFUSED = {
    "anova_kenward_roger": (lambda r: r.anova(ddf="kenward-roger"), "Kenward-Roger"),
    "confint_boot": (lambda r: r.conf_int("boot", n_boot=2, seed=1), "method='profile'"),
    "simulate": (lambda r: r.simulate(seed=1), "simulate()"),
    "cooks_distance": (lambda r: r.cooks_distance(), "cooks_distance()"),
    "influence": (lambda r: r.influence(), "refits the model without each"),
    "hatvalues": (lambda r: r.hatvalues(), "hatvalues()"),
    "plot_resid": (lambda r: r.plot_resid(), "plot a sample"),
    "residual_sd": (lambda r: r.residual_sd, "residual_sd"),
    "resid_pearson": (lambda r: r.resid_pearson, "resid_pearson"),
    "resid_normalized": (lambda r: r.resid_normalized, "resid_normalized"),
    "residual_covariance": (lambda r: r.residual_covariance([0, 1]), "residual_covariance"),
    "residual_intervals": (lambda r: r.residual_intervals(), "no residual structure"),
    "get_prediction_rows": (lambda r: r.get_prediction(), "pass newdata as a pandas"),
    "se_fit_rows": (lambda r: r.predict(se_fit=True), "newdata as a pandas DataFrame"),
    "R": (lambda r: r.R(), "row-sized"),
    "V": (lambda r: r.V(), "row-sized"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refusal(fits, name):
    r1, _ = fits("sleepstudy", 3)
    call, words = REFUSED[name]
    with pytest.raises(MixedAnovaError, match="Dask data frame|no residual structure") as err:
        call(r1)  # lme4 / lmerTest would compute it from the rows
    assert words in str(err.value)


def test_emmeans_refused_with_dropped_columns():
    df = ma.load_dataset("oats")
    df["twin"] = df["nitro"] * 2.0  # aliased with nitro: dropped
    with pytest.warns(RankDeficiencyWarning):
        r1 = ma.lmm("yield ~ Variety + nitro + twin + (1 | Block)", _split(df, 3, seed=1))
    with pytest.raises(MixedAnovaError, match="estimability") as err:
        r1.emmeans("Variety")  # emmeans(m, ~ Variety) checks estimability on the rows
    assert "twin" in str(err.value)


def test_ranova_refused_when_a_gls_is_needed():
    sd = serial_data(ngroups=12)
    r1 = ma.lmm("y ~ x + (1 | g)", split_by_group(sd, "g", 3, seed=1),
                residual=ma.AR1(group="g", order="pos"))
    with pytest.raises(MixedAnovaError, match="gls with the residual structure"):
        r1.ranova()  # lmerTest: ranova(m) would fit nlme::gls on the rows


def test_residual_structure_fit_inference():
    """A fit with an AR1 residual structure (partitions aligned on the group)."""
    sd = serial_data(ngroups=20)
    ar1 = ma.AR1(group="g", order="pos")
    r0 = ma.lmm("y ~ x * s + (1 | g)", sd, residual=ar1)
    r1 = ma.lmm("y ~ x * s + (1 | g)", split_by_group(sd, "g", 3, seed=1), residual=ar1)
    for type_ in (1, 3):
        # lmerTest-style anova(m, type = type_) of nlme's lme(..., correlation = corAR1())
        _close(r1.anova(type=type_).to_numpy(), r0.anova(type=type_).to_numpy(), TOL)
    _close(r1.r2(), r0.r2(), TOL, R2_ATOL)                 # performance::r2_nakagawa(m)
