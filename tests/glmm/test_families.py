"""ma.glmm's families and links beyond the visible glmer files, against R
(tests/reference/glmm_families.json, made by tests/reference/r/glmm_families.R:
R 4.2.2, lme4 1.1-31, glmmTMB 1.1.5, MASS).

Target (``exact``): the optimum of the Laplace approximation with
expected-information weights, the dispersion (Gamma, inverse Gaussian) or NB
shape as one more parameter, found in R by an independent dense evaluator
(Fisher scoring to the modes, then the Laplace formula; nlminb then Newton
steps with numDeriv).  For binomial links and for the NB at a fixed shape this
is glmer's objective (checked: glmer / glmer.nb's own -2 logLik is within 1e-6
of it); for the Gamma with its canonical link it is glmmTMB's (checked to 1e-6).
Tolerances as issue 18: -2 logLik 1e-6 absolute, theta, fixed effects and the
parameter 1e-4 relative, SEs 1e-3 relative.
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.glmm.dispersion import retarget

REF = Path(__file__).resolve().parents[1] / "reference" / "glmm_families.json"
DATA = Path(__file__).resolve().parents[1] / "data" / "glmm"

with open(REF) as _fh:
    FIX = json.load(_fh)["cases"]

FAST = ["cbpp_probit", "cbpp_cloglog", "cbpp_cauchit", "poisson_sqrt", "poisson_identity",
        "gamma_inverse", "gamma_log", "ig_log", "sim_nb"]
CASES = FAST + [pytest.param("grouseticks_nb", marks=pytest.mark.slow)]


@functools.lru_cache(maxsize=None)
def fitted(case: str):
    ref = FIX[case]
    data = pd.read_csv(DATA / ref["dataset_file"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.glmm(ref["formula"], data, family=ref["family"], link=ref["link"])
    return ref, res


@pytest.mark.parametrize("case", CASES)
def test_minus_2_loglik_at_the_exact_optimum(case):
    # R: the independent Laplace evaluator's optimum (= glmer / glmer.nb's objective,
    # glmmTMB's for the canonical Gamma), -2 * logLik
    ref, res = fitted(case)
    assert res.minus_2_loglik == pytest.approx(ref["exact"]["minus_2_loglik"], abs=1e-6)
    assert res.converged


@pytest.mark.parametrize("case", CASES)
def test_theta_and_fixed_effects(case):
    # R: exact$theta (getME(m, "theta")), exact$beta (fixef(m)), 1e-4 relative
    ref, res = fitted(case)
    ex = ref["exact"]
    np.testing.assert_allclose(res.theta, np.atleast_1d(ex["theta"]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.fe_params.to_numpy(), ex["beta"], rtol=1e-4, atol=1e-5)
    assert len(res.fe_params) == len(ex["fixed_names"])


@pytest.mark.parametrize("case", CASES)
def test_standard_errors(case):
    # R: sqrt(diag(2 solve(H)))[beta] over (theta, beta) at the estimated parameter
    # (glmer.nb's final glmer fit: vcov(m)), and over (theta, beta, log a) (glmmTMB)
    ref, res = fitted(case)
    ex = ref["exact"]
    np.testing.assert_allclose(res.bse_fe.to_numpy(), ex["se"], rtol=1e-3)
    joint = np.sqrt(np.diag(res.cov_fe_joint.to_numpy()))
    np.testing.assert_allclose(joint, ex["se_joint"], rtol=1e-3)


@pytest.mark.parametrize("case", [c for c in FAST if FIX[c]["exact"]["param"] is not None]
                         + [pytest.param("grouseticks_nb", marks=pytest.mark.slow)])
def test_dispersion_or_shape(case):
    # R: exact$param: the NB shape (getME(glmer.nb(...), "glmer.nb.theta") at its
    # profile optimum) or the Gamma / inverse Gaussian dispersion phi (glmmTMB
    # sigma(m)^2 for the canonical Gamma)
    ref, res = fitted(case)
    param = ref["exact"]["param"]
    if res.family.name == "negative_binomial":
        assert res.nb_shape == pytest.approx(param, rel=1e-4)
        assert f"Negative Binomial({res.nb_shape:.4g})" in res.summary()
    else:
        assert res.dispersion == pytest.approx(param, rel=1e-4)
        assert res.sigma == pytest.approx(np.sqrt(param), rel=1e-4)
        assert "Residual" in res.summary()


@pytest.mark.parametrize("case", ["sim_nb", pytest.param("grouseticks_nb",
                                                         marks=pytest.mark.slow)])
def test_negative_binomial_against_glmer_nb(case):
    # lme4::glmer.nb(...): -2 * logLik(m) (its profile optimum, tol 5e-5 on log theta),
    # getME(m, "glmer.nb.theta"), fixef(m), attr(logLik(m), "df") (theta counted)
    ref, res = fitted(case)
    g = ref["glmer"]
    assert res.minus_2_loglik == pytest.approx(g["minus_2_loglik"], abs=1e-6)
    assert res.nb_shape == pytest.approx(g["nb_shape"], rel=1e-4)
    np.testing.assert_allclose(res.fe_params.to_numpy(), g["fixed"]["estimate"], rtol=1e-4,
                               atol=1e-5)
    assert res.npar == g["df"]
    assert res.aic == pytest.approx(g["aic"], abs=1e-5)


def test_gamma_canonical_link_equals_glmmtmb():
    # glmmTMB(y_ginv ~ x + (1|g), family = Gamma("inverse")): -2 * logLik(m), fixef,
    # the random-intercept SD, sigma(m) (= sqrt(phi)), its SEs (joint Hessian),
    # attr(logLik(m), "df")
    ref, res = fitted("gamma_inverse")
    t = ref["glmmTMB"]
    assert res.minus_2_loglik == pytest.approx(t["minus_2_loglik"], abs=1e-6)
    np.testing.assert_allclose(res.fe_params.to_numpy(), t["fixed"]["estimate"], rtol=1e-4)
    np.testing.assert_allclose(res.theta, np.atleast_1d(t["sd"]), rtol=1e-4)
    assert res.sigma == pytest.approx(t["sigma"], rel=1e-4)
    np.testing.assert_allclose(np.sqrt(np.diag(res.cov_fe_joint.to_numpy())),
                               t["fixed"]["se"], rtol=1e-3)
    assert res.npar == t["df"]


@pytest.mark.parametrize("case", ["cbpp_probit", "cbpp_cloglog", "cbpp_cauchit",
                                  "poisson_sqrt", "poisson_identity"])
def test_links_against_glmer(case):
    # lme4::glmer(cbind(incidence, size - incidence) ~ period + (1|herd), cbpp,
    # binomial(link)) and glmer(y ~ x + (1|g), poisson(link)), bobyqa, tolPwrss = 1e-12:
    # -2 * logLik(m) within lme4's stale-weight error (GLMM_README), fixef(m),
    # getME(m, "theta")
    ref, res = fitted(case)
    g = ref["glmer"]
    assert res.minus_2_loglik == pytest.approx(g["minus_2_loglik"], abs=2e-6)
    np.testing.assert_allclose(res.fe_params.to_numpy(), g["fixed"]["estimate"], rtol=1e-5)
    np.testing.assert_allclose(res.theta, np.atleast_1d(g["theta"]), rtol=1e-5)
    assert res.family.link.name == ref["link"]


@pytest.mark.parametrize("case", ["gamma_inverse", "gamma_log", "ig_log"])
def test_glmer_dispersion_formula_is_what_the_docs_say(case):
    # lme4::glmer(..., family = Gamma / inverse.gaussian): -2 * logLik(m) is
    # log det(L'Z'WZL + I) + |u|^2 with unit dispersion in W and in the penalty, plus
    # -2 sum log f(y | mu, phi = deviance / n) + 2 (R's family$aic): recomputed here
    # from PIRLS at glmer's estimates, it equals glmer's logLik (to its tolPwrss)
    ref, res = fitted(case)
    g = ref["glmer"]
    obj = res.objective
    unit = res.family.with_param(1.0)
    retarget(obj, unit)
    try:
        st = obj.pirls(np.atleast_1d(g["theta"]), np.asarray(g["fixed"]["estimate"]))
        y, pw = obj.data.y, obj.data.pw
        phi = float(np.sum(unit.dev_resids(y, st.mu, pw))) / len(y)
        aic = -2.0 * res.family.with_param(phi).loglik(y, st.mu, pw) + 2.0
        assert st.ldL2 + st.ussq + aic == pytest.approx(g["minus_2_loglik"], abs=1e-4)
    finally:
        retarget(obj, res.family)
        obj.pirls(res.theta, res.fe_params.to_numpy())
    # and it is not the maximum-likelihood Laplace value this package reports
    assert abs(res.minus_2_loglik - g["minus_2_loglik"]) > 1.0


def test_family_objects_and_fixed_parameters():
    # MASS::negative.binomial(theta = 1.5) / glmer(..., family = negative.binomial(1.5)):
    # a fixed shape is not estimated (one parameter fewer)
    ref, est = fitted("sim_nb")
    data = pd.read_csv(DATA / ref["dataset_file"])
    fixed = ma.glmm(ref["formula"], data, family=ma.families.NegativeBinomial(theta=est.nb_shape))
    assert fixed.nb_shape == est.nb_shape
    assert fixed.npar == est.npar - 1
    assert fixed.minus_2_loglik == pytest.approx(est.minus_2_loglik, abs=1e-6)
    probit = ma.glmm("cbind(incidence, size - incidence) ~ period + (1|herd)",
                     pd.read_csv(DATA / "cbpp.csv"), family=ma.families.Binomial(link="probit"))
    assert probit.minus_2_loglik == pytest.approx(
        FIX["cbpp_probit"]["exact"]["minus_2_loglik"], abs=1e-6)
    for spelling in ("nbinom2", "negative.binomial", "Negative_Binomial"):
        assert ma.families.make_family(spelling).name == "negative_binomial"
    assert ma.families.make_family("inverse.gaussian").link.name == "1/mu^2"
    assert ma.families.make_family("Gamma").link.name == "inverse"
    with pytest.raises(ma.ArgumentError, match="'logit'"):
        ma.families.make_family("Gamma", "logit")
    with pytest.raises(ma.ArgumentError, match="positive"):
        ma.families.NegativeBinomial(theta=-1.0)


def test_r_call_spelling_of_a_family():
    # glmer(..., family = binomial(link = "probit")) typed as a string: the same fit
    probit = ma.glmm("cbind(incidence, size - incidence) ~ period + (1|herd)",
                     pd.read_csv(DATA / "cbpp.csv"), family='binomial(link = "probit")')
    assert probit.minus_2_loglik == pytest.approx(
        FIX["cbpp_probit"]["exact"]["minus_2_loglik"], abs=1e-6)
    make = ma.families.make_family
    for text, name, link in [("binomial(link='cloglog')", "binomial", "cloglog"),
                             ("binomial(probit)", "binomial", "probit"),
                             ("poisson(link = log)", "poisson", "log"),
                             ("Gamma(link = 'log')", "gamma", "log"),
                             ("inverse.gaussian()", "inverse_gaussian", "1/mu^2")]:
        fam = make(text)
        assert (fam.name, fam.link.name) == (name, link)
    # MASS::negative.binomial(theta = 2.5): the shape held
    assert make("negative.binomial(theta = 2.5)").param == 2.5
    with pytest.raises(ma.ArgumentError, match="link 'probit' but link= says 'logit'"):
        make('binomial(link = "probit")', link="logit")
    with pytest.raises(ma.ArgumentError, match="not understood"):
        make("binomial(weights = w)")
    with pytest.raises(ma.ArgumentError, match="R call"):
        make("binomial(link = 'probit'")


@functools.lru_cache(maxsize=None)
def fitted_observed(case: str):
    ref = FIX[case]
    data = pd.read_csv(DATA / ref["dataset_file"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.glmm(ref["formula"], data, family=ref["family"], link=ref["link"],
                      information="observed")
    return ref, res


@pytest.mark.parametrize("case", ["gamma_log", "sim_nb", "gamma_inverse",
                                  pytest.param("grouseticks_nb", marks=pytest.mark.slow)])
def test_observed_information_equals_glmmtmb(case):
    # glmmTMB(..., family = Gamma("log") / nbinom2): -2 * logLik(m), fixef(m)$cond, the
    # random-intercept SDs, sigma(m) (Gamma: sqrt(phi); nbinom2: the shape), and the
    # SEs of its joint Hessian, with information="observed" (glmmTMB's Laplace)
    ref, res = fitted_observed(case)
    t = ref["glmmTMB"]
    assert res.minus_2_loglik == pytest.approx(t["minus_2_loglik"], abs=1e-6)
    np.testing.assert_allclose(res.fe_params.to_numpy(), t["fixed"]["estimate"], rtol=1e-4)
    np.testing.assert_allclose(res.theta, np.atleast_1d(t["sd"]), rtol=1e-4)
    assert res.sigma == pytest.approx(t["sigma"], rel=1e-4)
    np.testing.assert_allclose(np.sqrt(np.diag(res.cov_fe_joint.to_numpy())),
                               t["fixed"]["se"], rtol=1e-3)
    assert res.converged


def test_observed_and_expected_differ_off_the_canonical_link():
    # glmer.nb (expected information) vs glmmTMB nbinom2 (observed): different
    # approximations for the NB log link; the same for the canonical Gamma link
    _, obs = fitted_observed("sim_nb")
    _, exp_ = fitted("sim_nb")
    assert abs(obs.minus_2_loglik - exp_.minus_2_loglik) > 1e-3
    _, obs = fitted_observed("gamma_inverse")
    _, exp_ = fitted("gamma_inverse")
    assert obs.minus_2_loglik == pytest.approx(exp_.minus_2_loglik, abs=1e-8)
    with pytest.raises(ma.ArgumentError, match="information"):
        ma.glmm(FIX["sim_nb"]["formula"], pd.read_csv(DATA / "families_sim.csv"),
                family="nbinom2", information="hessian")


def test_shape_at_infinity_is_not_converged():
    # glmer.nb on counts without overdispersion: theta runs off (lme4 warns
    # "iteration limit reached" / a huge theta); here converged=False and a message
    rng = np.random.default_rng(3)
    n = 200
    x = rng.normal(size=n)
    d = pd.DataFrame({"x": x, "g": [f"g{k}" for k in rng.integers(0, 10, n)],
                      "y": np.round(np.exp(1.5 + 0.3 * x) + rng.binomial(1, 0.5, n))})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.SingularFitWarning)
        with pytest.warns(ma.ConvergenceWarning, match="effectively infinite"):
            res = ma.glmm("y ~ x + (1|g)", d, family="nbinom2")
        pois = ma.glmm("y ~ x + (1|g)", d, family="poisson")
    assert not res.converged
    # the NB likelihood approaches the Poisson one from below as theta grows
    assert res.minus_2_loglik == pytest.approx(pois.minus_2_loglik, abs=1e-3)
    assert res.minus_2_loglik >= pois.minus_2_loglik - 1e-6


def test_gamma_residuals_against_glmmtmb():
    # glmmTMB(y_ginv ~ x + (1|g), Gamma("inverse")): fitted(m), residuals(m, "response"),
    # residuals(m, "pearson") (glmmTMB 1.1.5: (y - mu) / sqrt(V(mu)), V(mu) = mu^2 without
    # the dispersion, as R's unscaled glm residuals)
    ref, res = fitted("gamma_inverse")
    t = ref["glmmTMB"]
    np.testing.assert_allclose(res.fittedvalues.to_numpy()[:20], t["fitted_first20"],
                               rtol=1e-4)
    np.testing.assert_allclose(res.resid("response").to_numpy()[:20],
                               t["residuals_response_first20"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(res.resid("pearson").to_numpy()[:20],
                               t["residuals_pearson_first20"], rtol=1e-3, atol=1e-5)


def test_observed_information_with_the_shape_held_reaches_glmmtmb():
    # glmmTMB(TICKS ~ YEAR + HEIGHT_c + (1|BROOD) + (1|LOCATION), family = nbinom2):
    # at its shape sigma(m) held fixed, the optimum over (theta, beta) is glmmTMB's, so
    # -2 * logLik(m) is reached.  Two scalar terms: the sparse-coupling path, whose
    # analytic gradient is the expected-information one and must stand aside here
    # (with it the fit stopped 0.10 above, claiming convergence).
    ref = FIX["grouseticks_nb"]
    t = ref["glmmTMB"]
    data = pd.read_csv(DATA / ref["dataset_file"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.glmm(ref["formula"], data, family=ma.families.NegativeBinomial(theta=t["sigma"]),
                      information="observed")
    assert res.converged
    assert res.minus_2_loglik == pytest.approx(t["minus_2_loglik"], abs=1e-6)
    np.testing.assert_allclose(res.theta, np.atleast_1d(t["sd"]), rtol=1e-4)


def test_gamma_inverse_with_a_boundary_optimum_is_reached():
    # glmer's Laplace devfun (nAGQ = 1) for Gamma("inverse") with the dispersion held
    # at 1 on grouseticks' counts + 0.5: the optimum has theta[BROOD] = 0, and the
    # first long step from the start leaves the inverse link's domain.  The fit must
    # end at a minimum: converged, and the engine's Laplace value rises when any
    # parameter off its bound moves by 1e-3 (not the fit's own gradient).
    ref = FIX["grouseticks_nb"]
    data = pd.read_csv(DATA / ref["dataset_file"])
    data = data.assign(TICKS=data.TICKS + 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.glmm("TICKS ~ YEAR + HEIGHT_c + (1|BROOD) + (1|INDEX) + (1|LOCATION)",
                      data, family=ma.families.Gamma(dispersion=1.0))
    assert res.converged
    theta, beta = res.theta, res.fit.beta
    f0 = res.objective(theta, beta)
    assert f0 == pytest.approx(res.fit.value, abs=1e-8)
    x0 = np.concatenate([theta, beta])
    for i in range(len(x0)):
        for h in (1e-3, -1e-3):
            x = x0.copy()
            x[i] += h
            if i < len(theta) and x[i] < 0:
                continue
            assert res.objective(x[:len(theta)], x[len(theta):]) > f0 - 1e-9


def test_warm_started_inner_fit_reaches_the_cold_optimum():
    # the inner fits of glmer.nb's outer search over the shape: at shape 3.3, the
    # fit started from the converged fit at shape 3.0 reaches the optimum of lme4's
    # Laplace devfun that the cold start (search over sizes of theta) reaches, with
    # fewer evaluations (the warm path is taken)
    from mixedanova.glmm.fit import fit_glmm

    ref = FIX["grouseticks_nb"]
    data = pd.read_csv(DATA / ref["dataset_file"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.glmm(ref["formula"], data, family=ma.families.NegativeBinomial(theta=3.0))
    assert res.converged
    obj = res.objective
    retarget(obj, res.family.with_param(3.3))
    n0 = obj.nevals
    cold = fit_glmm(obj)
    n1 = obj.nevals
    warm = fit_glmm(obj, warm=res.fit)
    n2 = obj.nevals
    assert cold.converged and warm.converged
    assert warm.value == pytest.approx(cold.value, abs=1e-8)
    np.testing.assert_allclose(warm.theta, cold.theta, rtol=1e-6)
    np.testing.assert_allclose(warm.beta, cold.beta, rtol=1e-6, atol=1e-8)
    assert n2 - n1 < n1 - n0
