"""Nakagawa's R2 and the ICC of negative binomial and Gamma GLMMs against
performance 0.10.2 / insight 0.19.0 (tests/reference/glmm_r2_families.json, made
by tests/reference/r/glmm_r2_families.R on glmmTMB 1.1.5 and lme4 1.1-31 fits).

The distribution-specific variance (insight's ``.compute_variance_distribution``):
negative binomial with the log link ``log1p(1 / mu + 1 / k)``, ``mu = exp(b0)``
with ``b0`` the intercept of the refitted null model (its own shape) and ``k``
the model's shape; Gamma ``sigma(m)^2`` (glmmTMB: the dispersion phi).  glmmTMB
fits use the observed-information Laplace, so the NB and the Gamma log-link fits
here do too (``information="observed"``; the canonical Gamma agrees either way).
The variances are quadratic in the estimates: 2e-4 relative against glmmTMB's
optimum (its default fit, as in tests/results/test_glmm_inference.py), 2e-3
against glmer.nb's default fit (GLMM_README's default-fit tolerance).
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pandas as pd
import pytest

import mixedanova as ma
from _refdata import assert_close, load_reference

FIX = load_reference("glmm_r2_families")["cases"]
DATA = Path(__file__).resolve().parents[1] / "data" / "glmm"
KEYS = ("var_fixed", "var_random", "var_distribution", "var_residual")


@functools.lru_cache(maxsize=None)
def fitted(case: str, information: str):
    ref = FIX[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        return ma.glmm(ref["formula"], pd.read_csv(DATA / ref["dataset_file"]),
                       family=ref["family"], link=ref["link"], information=information)


def _check(res, r: dict, rtol: float, what: str) -> None:
    v = res.variance_components()
    for key in KEYS:  # insight::get_variance(m)
        assert_close(v[key], r[key], rtol, f"{what} get_variance {key}")
    r2, icc = res.r2(), res.icc()
    # performance::r2_nakagawa(m), performance::icc(m)
    assert_close(r2["R2_marginal"], r["R2_marginal"], rtol, f"{what} R2_marginal")
    assert_close(r2["R2_conditional"], r["R2_conditional"], rtol, f"{what} R2_conditional")
    assert_close(icc["ICC_adjusted"], r["ICC_adjusted"], rtol, f"{what} ICC_adjusted")
    assert_close(icc["ICC_unadjusted"], r["ICC_unadjusted"], rtol, f"{what} ICC_unadjusted")


@pytest.mark.parametrize("case", ["sim_nb", pytest.param("grouseticks_nb", marks=pytest.mark.slow),
                                  "gamma_inverse",
                                  pytest.param("gamma_log_slope", marks=pytest.mark.slow)])
def test_r2_icc_against_glmmtmb(case):
    info = "expected" if case == "gamma_inverse" else "observed"
    res = fitted(case, info)
    r = FIX[case]["glmmTMB"]
    # -2 * logLik(m) of glmmTMB: the same fit
    assert abs(res.minus_2_loglik - r["minus_2_loglik"]) <= 1e-6
    # fixef(insight::null_model(m))$cond[1]: the null model's intercept (its own shape)
    if FIX[case]["family"] == "negative_binomial":
        assert_close(res.null_model().fe_params.iloc[0], r["null_intercept"], 2e-4,
                     "null_model intercept")
        assert res.null_model().nb_shape != res.nb_shape
    _check(res, r, 2e-4, "glmmTMB")


def test_r2_icc_against_glmer_nb():
    # performance::r2_nakagawa(glmer.nb(y_nb ~ x + (1|g))): insight's merMod branch,
    # mu (1 + mu / getME(m, "glmer.nb.theta")), the same formula on glmer.nb's fits
    res = fitted("sim_nb", "expected")
    _check(res, FIX["sim_nb"]["other"], 2e-3, "glmer.nb")


def test_null_model_keeps_the_information_and_reestimates_the_shape():
    # insight::null_model(glmmTMB(..., nbinom2)) refits the shape; the observed
    # information of the fit carries over to its null model
    res = fitted("sim_nb", "observed")
    null = res.null_model()
    assert null.family.information == "observed"
    assert abs(null.nb_shape - res.nb_shape) > 1e-3


def test_no_definition_for_inverse_gaussian():
    # performance has no distribution-specific variance for the inverse Gaussian
    d = pd.read_csv(DATA / "battery_pos.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.MixedAnovaWarning)
        res = ma.glmm("y_ig ~ x + (1|g)", d, family="inverse.gaussian", link="log")
    with pytest.raises(ma.ArgumentError, match="inverse_gaussian"):
        res.r2()
