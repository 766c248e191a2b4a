"""The results surface of ma.glmm against lme4 / emmeans / performance
(tests/reference/glmm_surface.json, made by tests/reference/r/glmm_surface.R);
the methods are in mixedanova/results/glmm_inference.py.

Two references.  glmer's fits (``glmerControl(optimizer = "bobyqa", optCtrl =
list(rhoend = 1e-10))``) still stop PIRLS at ``tolPwrss = 1e-7`` and take
log|L|^2 from the weights before the last step, so they sit off the exact
Laplace optimum that ma.glmm finds (cbpp: -2 logLik 5.7e-4 above it, estimates
4e-4 relative, and glmer's finite-difference Hessian gives SEs 1.2% off;
GLMM_README.md of the shared references); what follows from glmer's estimates
is compared at that README's default-fit tolerances (-2 logLik 2e-3 absolute,
estimates 2e-3 relative, SEs 2e-2).  glmmTMB's fits of the same models are at
the exact optimum (automatic differentiation; its vcov is the inverse Hessian
of the exact objective), so the emmeans, performance and predict numbers from
glmmTMB fits are compared at the issue's tolerances: estimates 1e-4 relative,
SEs 1e-3.
"""
from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedanova as ma
from mixedanova.errors import ArgumentError

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "reference" / "glmm_surface.json"
REF_TMB = ROOT / "reference" / "glmm_surface_tmb.json"  # tests/reference/r/glmm_surface_tmb.R
DATA = ROOT / "data" / "glmm"

CASES = {
    "cbpp": ("cbpp.csv", "binomial", ("herd",)),
    "grouseticks": ("grouseticks.csv", "poisson", ("INDEX", "BROOD", "LOCATION")),
}


@functools.lru_cache(maxsize=None)
def reference() -> dict:
    with open(REF) as fh:
        ref = json.load(fh)
    with open(REF_TMB) as fh:
        tmb = json.load(fh)
    for case in CASES:
        ref[case]["glmmTMB"] = tmb[case]
    return ref


def data(case: str) -> pd.DataFrame:
    file, _, groups = CASES[case]
    d = pd.read_csv(DATA / file)
    return d.astype({g: str for g in groups})


@functools.lru_cache(maxsize=None)
def fits(case: str, nagq: int = 1):
    ref = reference()[case]
    fam = CASES[case][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        m = ma.glmm(ref["formula"], data(case), family=fam, nAGQ=nagq)
        m0 = ma.glmm(ref["formula0"], data(case), family=fam, nAGQ=nagq)
    return ref, m, m0


EST, SE = 1e-4, 1e-3            # the tolerances (exact optimum: glmmTMB)
D_EST, D_SE, D_LL = 2e-3, 2e-2, 2e-3  # GLMM_README: against glmer's default-type fits


def close(got, exp, rtol, atol=0.0, what=""):
    got = np.asarray(got, dtype=float)
    exp = np.asarray(exp, dtype=float)
    assert got.shape == exp.shape, what
    bad = np.abs(got - exp) > atol + rtol * np.abs(exp)
    assert not bad.any(), f"{what}: got {got[bad]}, R {exp[bad]}"


# ------------------------------------------------------------ likelihood-ratio tests
@pytest.mark.parametrize("case", list(CASES))
def test_compare_is_anova(case):
    """anova(m0, m): npar, AIC, BIC, logLik, deviance (-2 logLik), Chisq, Df, p."""
    ref, m, m0 = fits(case)
    tab = m.compare(m0)
    a = ref["anova"]
    assert list(tab["npar"]) == a["npar"]
    assert list(tab["Df"].iloc[1:]) == a["Df"][1:]
    # glmer's -2 logLik is off the exact Laplace value by its PIRLS tolerance
    # (ours is the exact one: tests/glmm/test_glmer_reference.py, 1e-6)
    close(tab["deviance"], a["deviance"], 0, D_LL, "anova(m0, m) deviance")
    close(tab["logLik"], a["logLik"], 0, D_LL / 2, "anova(m0, m) logLik")
    close(tab["AIC"], a["AIC"], 0, D_LL, "anova(m0, m) AIC")
    close(tab["BIC"], a["BIC"], 0, D_LL, "anova(m0, m) BIC")
    close(tab["Chisq"].iloc[1], a["Chisq"][1], 0, D_LL, "anova(m0, m) Chisq")
    close(tab["p"].iloc[1], a["p"][1], D_EST, 0, "anova(m0, m) Pr(>Chisq)")
    # and below glmer's value: the exact optimum of the same approximation
    assert np.all(tab["deviance"].to_numpy() <= np.asarray(a["deviance"]) + 1e-6)


def test_quadrature_fits_compare_with_laplace_scale():
    """anova(update(m0, nAGQ = 9), update(m, nAGQ = 9)): lme4's logLik plus the
    saturated log-likelihood it leaves out; Chisq is the same either way."""
    ref, m, m0 = fits("cbpp", 9)
    q = ref["agq9"]
    tab = m.compare(m0)
    close(tab["logLik"], q["logLik"], 0, D_LL / 2, "logLik(nAGQ = 9) + saturated")
    close(tab["Chisq"].iloc[1], q["Chisq"][1], 0, D_LL, "anova(nAGQ = 9) Chisq")
    # the Laplace and quadrature fits are on one scale: their logLik differ by
    # the approximation only (well under a unit), not by the saturated constant
    _, lap, _ = fits("cbpp", 1)
    assert abs(lap.llf - m.llf) < 0.1
    assert abs(q["saturated_loglik"]) > 10


def test_compare_refuses_mixing_lmm_and_glmm():
    """lme4's anova() of an lmer and a glmer fit makes no sense: refused."""
    _, m, _ = fits("cbpp")
    d = data("cbpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        lm = ma.lmm("incidence ~ period + (1|herd)", d, method="ML")
    with pytest.raises(ArgumentError, match="cannot mix"):
        ma.compare(m, lm)


# ------------------------------------------------------------ intervals
@pytest.mark.parametrize("case", list(CASES))
def test_wald_intervals(case):
    """confint(m, method = "Wald"): NA for the SDs, beta -/+ qnorm(0.975) se."""
    ref, m, _ = fits(case)
    ci = m.conf_int("wald")
    w = ref["confint_wald"]
    k = len(m.theta)
    assert ci["ci_low"].iloc[:k].isna().all()
    # glmer's estimates and SEs (its finite-difference Hessian) at the default-fit
    # tolerances; the limits are beta -/+ 1.96 se
    se = m.bse_fe.to_numpy()
    tol = D_SE * 1.96 * se + D_EST * np.abs(m.fe_params.to_numpy())
    assert np.all(np.abs(ci["ci_low"].iloc[k:].to_numpy() - w["lower"][k:]) <= tol)
    assert np.all(np.abs(ci["ci_high"].iloc[k:].to_numpy() - w["upper"][k:]) <= tol)


def _profile_check(case, m, ci):
    ref = reference()[case]
    p = ref["confint_profile"]
    got = np.column_stack([ci["ci_low"], ci["ci_high"]])
    fine = np.column_stack([p["lower"], p["upper"]])
    default = np.column_stack([p["default_lower"], p["default_upper"]])
    # an SD whose profile reaches 0 before the cutoff: lme4 gives 0 as well
    assert np.all((got == 0) == (fine == 0))
    # R's limits carry two errors.  (1) Its spline through zeta: the two spacings
    # (delta.cutoff 1/8, 1/64) disagree by up to 2e-4 relative (grouseticks'
    # .sig02 upper), by ~1e-7 elsewhere.  (2) Its profile is of glmer's Laplace
    # value, off the exact one by up to ~1e-3 in -2 logLik (GLMM_README's
    # default-fit tolerance; 5.7e-4 at cbpp's optimum), which moves a limit by up
    # to 1e-3 / (2 * 1.96) of the parameter's SE: 5e-4 SE allowed.  Ours are
    # roots of zeta of the exact value (to 1e-10; the next test checks one with
    # an independent minimizer).
    spline = np.abs(fine - default)
    k = len(m.theta)
    se = np.concatenate([(fine[:k, 1] - fine[:k, 0]) / (2 * 1.96), m.bse_fe.to_numpy()])
    tol = np.maximum(spline, 5e-4 * se[:, None])
    err = np.abs(got - fine)
    assert np.all(err <= tol), f"profile limits: ours {got[err > tol]}, R {fine[err > tol]}"


def test_profile_intervals_cbpp():
    """confint(profile(m, delta.cutoff = 1/64), level = 0.95): .sig01 and the fixed
    effects, at the precision of R's spline interpolation."""
    _, m, _ = fits("cbpp")
    _profile_check("cbpp", m, m.conf_int("profile"))


@pytest.mark.slow
def test_profile_intervals_grouseticks():
    """confint(profile(m, delta.cutoff = 1/64)): three SDs and four fixed effects."""
    _, m, _ = fits("grouseticks")
    _profile_check("grouseticks", m, m.conf_int("profile"))


def test_profile_limits_are_where_the_profile_crosses_the_cutoff():
    """lme4's definition of a profile limit: at the limit, the -2 logLik minimized
    over the other parameters is qchisq(0.95, 1) above the minimum; checked here
    with an independent minimizer (scipy's Nelder-Mead on the Laplace value)."""
    from scipy.optimize import minimize
    _, m, _ = fits("cbpp")
    ci = m.conf_int("profile", parm=["period[T.P4]"])
    # lme4's name of the herd SD selects it, as confint(m, parm = ".sig01")
    assert list(m.conf_int("wald", parm=".sig01").index) == ["sd_(Intercept)|herd"]
    hi = float(ci["ci_high"].iloc[0])
    theta0, beta0 = m.theta, m.fe_params.to_numpy()

    def f(x):
        return m.objective_at(np.abs(x[:1]), np.append(x[1:], hi))

    res = minimize(f, np.concatenate([theta0, beta0[:3]]), method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-11, "maxfev": 20000})
    assert abs(res.fun - m.minus_2_loglik - stats.chi2.ppf(0.95, 1)) < 1e-5


def test_bootstrap_is_seeded_and_reported():
    """bootMer-style intervals: the same seed gives the same limits; n_boot, failures
    and the seed are recorded."""
    _, m, _ = fits("cbpp")
    a = m.conf_int("boot", n_boot=8, seed=11, parm="fixed")
    b = m.conf_int("boot", n_boot=8, seed=11, parm="fixed")
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["n_boot"] == 8 and a.attrs["seed"] == 11 and a.attrs["failed"] == 0
    assert np.all(a["ci_low"] <= a["ci_high"])


@pytest.mark.slow
def test_bootstrap_agrees_with_profile_for_fixed_effects():
    """Parametric bootstrap (confint(m, method = "boot")) and profile intervals of the
    fixed effects estimate the same thing: with 200 refits they agree to a fraction
    of a standard error (a statistical check; lme4's bootMer is random, no fixture)."""
    _, m, _ = fits("cbpp")
    boot = m.conf_int("boot", n_boot=200, seed=1, parm="fixed")
    prof = m.conf_int("profile", parm="fixed")
    se = m.bse_fe.to_numpy()
    assert np.all(np.abs(boot["ci_low"] - prof["ci_low"]).to_numpy() < 0.5 * se)
    assert np.all(np.abs(boot["ci_high"] - prof["ci_high"]).to_numpy() < 0.5 * se)


# ------------------------------------------------------------ marginal means
SPEC = {"cbpp": "period", "grouseticks": "YEAR"}
MEAN = {"cbpp": ("prob", "odds_ratio", "odds.ratio"), "grouseticks": ("rate", "ratio", "ratio")}


LINKS = {"logit": lambda p: np.log(p / (1 - p)), "log": np.log,
         None: lambda x: np.asarray(x, dtype=float)}


def _emm_check(tab, r, col, rcol, what, est_tol, se_tol, p=True, link=None, se_link=None):
    se_scale = np.max(np.asarray(r["SE"], dtype=float))
    close(tab[col], r[rcol], est_tol, est_tol * se_scale, f"{what} {rcol}")
    close(tab["SE"], r["SE"], se_tol, 0, f"{what} SE")
    # a limit is g^-1(eta -/+ q se): on the link scale g its error is at most the
    # estimate's plus q (<= 3 here) times the SE's
    g = LINKS[link]
    se_l = se_scale if se_link is None else np.max(se_link)
    for ours, theirs in (("lower_CL", "asymp.LCL"), ("upper_CL", "asymp.UCL")):
        exp = g(np.asarray(r[theirs], dtype=float))
        close(g(tab[ours].to_numpy(dtype=float)), exp, est_tol,
              est_tol * np.max(np.abs(exp)) + 3 * se_tol * se_l, f"{what} {theirs}")
    close(tab["t_ratio"], r["z.ratio"], se_tol + est_tol, 1e-6, f"{what} z.ratio")
    if p:
        z = np.abs(np.asarray(r["z.ratio"], dtype=float))
        # p from z: its relative error is about z^2 times z's relative error
        close(tab["p_value"], r["p.value"], 2 * np.max(z) ** 2 * (se_tol + est_tol), 1e-13,
              f"{what} p.value")


def _emmeans_cases(case, e, m, est_tol, se_tol, p):
    spec = SPEC[case]
    col, rcol, rrcol = MEAN[case]
    tab = m.emmeans(spec)
    assert list(tab[spec]) == e["link"][spec]
    assert np.all(np.isinf(tab["df"]))
    # summary(emmeans(m, spec), infer = TRUE): link scale, asymptotic
    _emm_check(tab, e["link"], "emmean", "emmean", "emmeans link", est_tol, se_tol, p)
    # summary(emmeans(m, spec, type = "response"), infer = TRUE): back-transformed,
    # delta-method SE, back-transformed limits, z tests on the link scale
    link = "logit" if col == "prob" else "log"
    _emm_check(m.emmeans(spec, type="response"), e["response"], col, col,
               "emmeans response", est_tol, se_tol, p, link, e["link"]["SE"])
    # summary(pairs(emmeans(m, spec)), infer = TRUE): Tukey-adjusted differences
    pl = m.emmeans(spec).pairs()
    assert list(pl["contrast"]) == e["pairs_link"]["contrast"]
    _emm_check(pl, e["pairs_link"], "estimate", "estimate", "pairs link", est_tol, se_tol, p)
    # summary(pairs(emmeans(m, spec, type = "response")), infer = TRUE): odds ratios
    # (logit) or rate ratios (log)
    pr = m.emmeans(spec, type="response").pairs()
    assert list(pr["contrast"]) == e["pairs_response"]["contrast"]
    _emm_check(pr, e["pairs_response"], rcol, rrcol, "pairs response", est_tol, se_tol, p,
               "log", e["pairs_link"]["SE"])


@pytest.mark.parametrize("case", list(CASES))
def test_emmeans_against_glmmtmb(case):
    """emmeans(glmmTMB fit, spec[, type = "response"]) and pairs(): the exact optimum,
    at the issue's tolerances (estimates 1e-4, SEs 1e-3)."""
    ref, m, _ = fits(case)
    _emmeans_cases(case, ref["glmmTMB"]["emmeans"], m, EST, SE, True)


@pytest.mark.parametrize("case", list(CASES))
def test_emmeans_against_glmer(case):
    """emmeans(glmer fit, spec[, type = "response"]) and pairs(): glmer's estimates and
    SEs are off the optimum, so at the README's default-fit tolerances (p values,
    which magnify the SEs' error, are checked against glmmTMB)."""
    ref, m, _ = fits(case)
    _emmeans_cases(case, ref["emmeans"], m, D_EST, D_SE, False)


# ------------------------------------------------------------ R2 and ICC
def _r2_check(m, r, tol, what):
    v = m.variance_components()
    for key in ("var_fixed", "var_random", "var_distribution", "var_residual"):
        close(v[key], r[key], tol, 0, f"{what} get_variance {key}")
    r2, icc = m.r2(), m.icc()
    close(r2["R2_marginal"], r["R2_marginal"], tol, 0, f"{what} r2_nakagawa marginal")
    close(r2["R2_conditional"], r["R2_conditional"], tol, 0, f"{what} r2_nakagawa conditional")
    close(icc["ICC_adjusted"], r["ICC_adjusted"], tol, 0, f"{what} icc adjusted")
    close(icc["ICC_unadjusted"], r["ICC_unadjusted"], tol, 0, f"{what} icc unadjusted")


@pytest.mark.parametrize("case", list(CASES))
def test_r2_and_icc_against_glmmtmb(case):
    """performance::r2_nakagawa, icc and insight::get_variance of the glmmTMB fit
    (Poisson: the lognormal approximation with the null model's intercept).  The
    variances are quadratic in the estimates: 2e-4 relative."""
    ref, m, _ = fits(case)
    _r2_check(m, ref["glmmTMB"]["r2_icc"], 2 * EST, "glmmTMB")


def test_r2_and_icc_against_glmer_binomial():
    """performance::r2_nakagawa(m), icc(m) of the glmer fit (binomial logit: pi^2/3).
    (For grouseticks, glmer's null model inside insight stops with max|grad| 0.08
    and an intercept 0.005 off, so its Poisson variance is checked against glmmTMB.)"""
    ref, m, _ = fits("cbpp")
    _r2_check(m, ref["r2_icc"], 2 * D_EST, "glmer")


def test_r2_distribution_variance_by_link():
    """insight's distribution-specific variance: 0.25 for Poisson sqrt; none for the
    cauchit link (performance::r2_nakagawa has no definition): an error naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = ma.glmm("TICKS ~ YEAR + (1|BROOD)", data("grouseticks"), family="poisson",
                    link="sqrt")
        c = ma.glmm(reference()["cbpp"]["formula"], data("cbpp"), link="cauchit")
    assert math.isclose(m.variance_components()["var_distribution"], 0.25)
    with pytest.raises(ArgumentError, match="cauchit"):
        c.r2()


# ------------------------------------------------------------ predictions, residuals
@pytest.mark.parametrize("case", list(CASES))
def test_predict_newdata(case):
    """predict(m, nd, re.form = NA, type = ...) and predict(m, nd, re.form = NULL,
    allow.new.levels = TRUE, type = "response")."""
    ref, m, _ = fits(case)
    p = ref["predict"]
    nd = pd.DataFrame(p["newdata"]).astype({g: str for g in CASES[case][2]})
    close(m.predict(nd, type="link", re_form="NA"), p["population_link"], D_EST, 1e-5,
          "predict re.form = NA link")
    close(m.predict(nd, type="response", re_form="~0"), p["population_response"], D_EST,
          1e-6, "predict re.form = NA response")
    close(m.predict(nd, type="response", allow_new_levels=True), p["conditional_response"],
          D_EST, 1e-6, "predict re.form = NULL response")
    # predict(glmmTMB fit, nd, re.form = NA, type = "response"): the exact optimum
    close(m.predict(nd, type="response", re_form="NA"),
          ref["glmmTMB"]["population_response"], EST, 1e-8, "glmmTMB predict re.form = NA")


def test_predict_with_some_random_terms():
    """re_form = "~(1|BROOD)": only that term's modes (lme4's re.form = ~(1|BROOD))."""
    _, m, _ = fits("grouseticks")
    d = data("grouseticks").iloc[:5]
    full = m.predict(d, re_form=None).to_numpy()
    pop = m.predict(d, re_form="~0").to_numpy()
    brood = m.predict(d, re_form="~(1|BROOD)").to_numpy()
    re_b = m.random_effects["BROOD"]["(Intercept)"].reindex(d["BROOD"]).to_numpy()
    close(brood, pop + re_b, 1e-12, 1e-12, "re.form = ~(1|BROOD)")
    assert not np.allclose(brood, full)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["deviance", "pearson", "response", "working"])
def test_residuals(case, kind):
    """residuals(m, type = kind) on every row."""
    ref, m, _ = fits(case)
    exp = np.asarray(ref["residuals"][kind])
    got = m.residuals(kind).to_numpy()
    close(got, exp, D_EST, D_EST * np.max(np.abs(exp)), f"residuals(m, '{kind}')")


def test_fitted():
    """fitted(m): the means at the conditional modes."""
    ref, m, _ = fits("cbpp")
    close(m.fittedvalues, ref["fitted"], D_EST, 1e-6, "fitted(m)")


# ------------------------------------------------------------ simulate and refit
def test_simulate_draws_from_the_family():
    """simulate(m, nsim, seed, use.u = TRUE): binomial proportions of the trials whose
    mean over draws is the fitted probability (within 4 Monte Carlo SEs)."""
    _, m, _ = fits("cbpp")
    sims = m.simulate(4000, seed=3, use_random=True)
    trials = m.data.pw
    succ = sims.to_numpy() * trials[:, None]
    assert np.allclose(succ, np.round(succ))
    mu = m.fittedvalues.to_numpy()
    se = np.sqrt(mu * (1 - mu) / trials / 4000)
    assert np.all(np.abs(sims.mean(axis=1).to_numpy() - mu) <= 4 * se + 1e-12)
    pd.testing.assert_frame_equal(m.simulate(2, seed=5), m.simulate(2, seed=5))


def test_refit_to_the_same_response_is_the_same_fit():
    """refit(m, getME(m, "y")) gives back the fit."""
    _, m, _ = fits("cbpp")
    r = m.refit(m.data.y, start_theta=m.theta)
    assert abs(r.minus_2_loglik - m.minus_2_loglik) < 1e-8
    close(r.fe_params, m.fe_params, 1e-6, 1e-8, "refit fixef")


def test_bad_arguments_name_themselves():
    """residuals(m, type = "scaled") has no glmer meaning; unknown keywords of
    confint(), emmeans' type and predict's type are refused with the package's
    errors naming the argument."""
    _, m, _ = fits("cbpp")
    with pytest.raises(ArgumentError, match="type"):
        m.residuals("scaled")
    with pytest.raises(ArgumentError, match="n_boots"):
        m.conf_int("boot", n_boots=10)
    with pytest.raises(ma.MixedAnovaError, match="type"):
        m.emmeans("period", type="odds")
    with pytest.raises(ArgumentError, match="type"):
        m.predict(type="prob")


def test_to_json_round_trip():
    """res.to_json() / ma.read_results(): the tables of summary(m) (coef(summary(m)),
    as.data.frame(VarCorr(m)), ranef(m)) come back as written; deviance is
    -2 logLik as for an ML fit, with the family and nAGQ recorded."""
    ref, m, _ = fits("cbpp")
    saved = ma.read_results(m.to_json())
    pd.testing.assert_frame_equal(saved.fixed, m.fixed(), check_names=False)
    d = json.loads(m.to_json())
    assert d["family"] == "binomial(logit)" and d["nAGQ"] == 1
    assert d["criteria"]["deviance"] == m.minus_2_loglik and d["criteria"]["REML"] is None
    close(saved.random_effects["herd"]["(Intercept)"],
          m.random_effects["herd"]["(Intercept)"], 1e-12, 0, "ranef(m)")


def test_profile_table_walks_to_the_limits():
    """as.data.frame(profile(m)): zeta rises through 0 at the estimate and reaches
    -/+ sqrt(qchisq(level, 1)) at the ends of the grid, which are the profile
    limits of that level (confint(m, method = "profile", level))."""
    _, m, _ = fits("cbpp")
    tab = m.profile(level=0.95, npoints=3)
    ci = m.conf_int("profile")
    cut = math.sqrt(stats.chi2.ppf(0.95, 1))
    for name, g in tab.groupby("parameter", sort=False):
        z = g["zeta"].to_numpy()
        assert np.all(np.diff(z) > 0), name
        close(z[[0, -1]], [-cut, cut], 0, 1e-7, f"zeta at the ends ({name})")
        close(g["value"].to_numpy()[[0, -1]], ci.loc[name, ["ci_low", "ci_high"]], 1e-9,
              1e-12, f"grid ends = profile limits ({name})")
