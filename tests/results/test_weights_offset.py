"""Prior weights (lme4's ``weights =``) and offsets (``offset()`` / ``offset =``)
against tests/reference/clinic_weights_reml.json and region_offset_reml.json."""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma
from _refdata import assert_close, load_reference, r_name


@pytest.fixture(scope="module")
def clinic():
    ref = load_reference("clinic_weights_reml")
    res = ma.lmm(ref["formula"], ma.load_dataset("clinic_means"), weights=ref["weights_column"])
    return ref, res


@pytest.fixture(scope="module")
def region():
    ref = load_reference("region_offset_reml")
    res = ma.lmm(ref["formula"], ma.load_dataset("region_rates"))
    return ref, res


def _check_fit(res, ref, what):
    names = [r_name(n) for n in res.fe_params.index]
    assert names == ref["fixed"]["names"]
    # coef(summary(m))[, 'Estimate'] and [, 'Std. Error']
    assert_close(res.fe_params, ref["fixed"]["estimate"], 1e-4, f"{what} fixef")
    assert_close(res.bse_fe, ref["fixed"]["se"], 1e-4, f"{what} se")
    # as.data.frame(VarCorr(m))$vcov; sigma(m)
    assert_close(res.varcomp["vcov"], [r["vcov"] for r in ref["varcorr"]], 1e-4, f"{what} vcov")
    assert_close(res.sigma, ref["sigma"], 1e-4, f"{what} sigma")
    # REMLcrit(m); as.numeric(logLik(m))
    assert_close(res.reml_criterion, ref["reml_criterion"], 0, f"{what} REMLcrit", atol=1e-6)
    assert_close(res.llf, ref["loglik"], 0, f"{what} logLik", atol=1e-6)
    # head(fitted(m), 10); head(residuals(m), 10)
    assert_close(res.fittedvalues.to_numpy()[:10], ref["fitted"], 1e-6, f"{what} fitted")
    assert_close(res.resid.to_numpy()[:10], ref["residuals"], 1e-4, f"{what} residuals",
                 atol=1e-4)


def test_weighted_fit_matches_lme4(clinic):
    ref, res = clinic
    _check_fit(res, ref, "lmer(weights = n)")
    # lmerTest: coef(summary(m))[, 'df'] (Satterthwaite uses the weights)
    assert_close(res.fixed()["df"], ref["fixed"]["df_satterthwaite"], 1e-3, "Satterthwaite df")
    assert_close(res.fixed()["p"], ref["fixed"]["p_satterthwaite"], 1e-3, "Satterthwaite p")
    # AIC(m), BIC(m)
    assert_close(res.aic, ref["aic"], 0, "AIC", atol=1e-6)
    assert_close(res.bic, ref["bic"], 0, "BIC", atol=1e-6)


def test_weighted_criterion_holds_log_weights(clinic):
    # lme4's logLik includes 0.5 * sum(log w_i); the nlme fit with varFixed(~1/n)
    # has the same log-likelihood (nlme_check$loglik)
    ref, res = clinic
    assert_close(res.llf, ref["nlme_check"]["loglik"], 0, "nlme logLik", atol=1e-6)
    w = ma.load_dataset("clinic_means")["n"].to_numpy(dtype=float)
    assert res.model.weights_constant() == pytest.approx(-np.sum(np.log(w)), rel=1e-14)


def test_weighted_pearson_residuals(clinic):
    ref, res = clinic
    # head(residuals(m, type = 'pearson'), 10): sqrt(w) * (y - fitted), not / sigma
    assert_close(res.residuals("pearson").to_numpy()[:10], ref["residuals_pearson"]["values"],
                 1e-4, "pearson residuals", atol=1e-4)
    scaled = res.residuals("scaled").to_numpy()
    assert np.allclose(scaled, res.residuals("pearson").to_numpy() / res.sigma)


def test_weighted_ml_fit(clinic):
    ref = clinic[0]
    ml = ma.lmm(ref["formula"], ma.load_dataset("clinic_means"), method="ML",
                weights=ref["weights_column"])
    m = ref["ml_fit"]  # lmer(..., REML = FALSE, weights = n)
    assert_close(ml.fe_params, list(m["fixed"].values()), 1e-4, "ML fixef")
    assert_close(ml.sigma, m["sigma"], 1e-4, "ML sigma")
    assert_close(ml.deviance, m["deviance"], 0, "deviance(m)", atol=1e-6)
    assert_close(ml.aic, m["aic"], 0, "AIC", atol=1e-6)
    assert_close(ml.bic, m["bic"], 0, "BIC", atol=1e-6)


def test_weights_as_array_equal_column(clinic):
    ref, res = clinic
    data = ma.load_dataset("clinic_means")
    arr = ma.lmm(ref["formula"], data, weights=data["n"].to_numpy())
    assert arr.reml_criterion == pytest.approx(res.reml_criterion, abs=1e-9)
    assert np.allclose(arr.fe_params, res.fe_params, rtol=1e-9)


def test_unweighted_fit_differs(clinic):
    ref = clinic[0]
    res = ma.lmm(ref["formula"], ma.load_dataset("clinic_means"))
    u = ref["unweighted_fit"]  # the same model without weights
    assert_close(res.fe_params, list(u["fixed"].values()), 1e-4, "unweighted fixef")


def test_kenward_roger_refused_with_weights(clinic):
    # pbkrtest ignores prior weights: no reference, and a clear refusal here
    with pytest.raises(ma.MixedAnovaError, match="prior weights"):
        clinic[1].fixed(ddf="kenward-roger")


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_bad_weights(bad):
    data = ma.load_dataset("clinic_means")
    w = data["n"].to_numpy(dtype=float)
    w[3] = bad
    if np.isnan(bad):  # a missing weight drops the row, as na.omit
        res = ma.lmm("y ~ arm + (1|clinic)", data, weights=w)
        assert res.nobs == len(data) - 1 and res.n_dropped == 1
        return
    with pytest.raises(ma.DesignError, match="weights .* must be positive"):
        ma.lmm("y ~ arm + (1|clinic)", data, weights=w)


def test_weights_errors_name_the_argument():
    data = ma.load_dataset("clinic_means")
    with pytest.raises(ma.DesignError, match="'nn'.*weights.*did you mean 'n'"):
        ma.lmm("y ~ arm + (1|clinic)", data, weights="nn")
    with pytest.raises(ma.DesignError, match="weights must be a column name or one value"):
        ma.lmm("y ~ arm + (1|clinic)", data, weights=[1.0, 2.0])
    with pytest.raises(ma.DesignError, match="weights column 'arm' is not numeric"):
        ma.lmm("y ~ age_c + (1|clinic)", data, weights="arm")
    with pytest.raises(ma.DesignError, match="ANOVA.*weights"):
        ma.lmm("y ~ arm + (1|clinic)", data, weights="n", method="ANOVA")


# ------------------------------------------------------------------ offsets
def test_offset_in_formula(region):
    ref, res = region
    _check_fit(res, ref, "offset(log_exposure)")
    # coef(summary(m, ddf = 'Kenward-Roger'))[, 'df']
    assert_close(res.fixed("kenward-roger")["df"], ref["fixed"]["df_kenward_roger"], 1e-3,
                 "KR df")


def test_offset_argument_same_fit(region):
    ref, res = region
    arg = ma.lmm("y ~ program + year + (1|region)", ma.load_dataset("region_rates"),
                 offset="log_exposure")
    o = ref["offset_argument_fit"]  # lmer(..., offset = log_exposure)
    assert_close(arg.fe_params, list(o["fixed"].values()), 1e-4, "offset= fixef")
    assert_close(arg.reml_criterion, o["reml_criterion"], 0, "offset= REMLcrit", atol=1e-6)
    assert_close(arg.fittedvalues.to_numpy()[:10], o["fitted_first10"], 1e-6, "offset= fitted")


def test_shifted_response_same_estimates(region):
    ref, res = region
    s = ref["shifted_response_fit"]  # lmer(y - log_exposure ~ program + year + (1|region))
    shifted = ma.lmm("I(y - log_exposure) ~ program + year + (1|region)",
                     ma.load_dataset("region_rates"))
    assert_close(shifted.fe_params, list(s["fixed"].values()), 1e-4, "shifted fixef")
    assert shifted.reml_criterion == pytest.approx(res.reml_criterion, abs=1e-6)
    off = ma.load_dataset("region_rates")["log_exposure"].to_numpy()
    assert np.allclose(res.fittedvalues.to_numpy() - off, shifted.fittedvalues.to_numpy(),
                       atol=1e-6)


def test_offset_predictions_carry_newdata_offset(region):
    ref, res = region
    nd = ma.load_dataset("region_rates_newdata")
    p = ref["predictions"]
    # predict(m, newdata = nd, re.form = NULL, allow.new.levels = TRUE)
    assert_close(res.predict(nd, allow_new_levels=True),
                 p["re_form_null_allow_new_levels"]["values"], 1e-6, "predict NULL")
    # predict(m, newdata = nd, re.form = NA)
    assert_close(res.predict(nd, re_form="~0"), p["re_form_na"]["values"], 1e-6, "predict NA")


def test_offset_argument_column_carried_into_predict(region):
    # Decision: an offset= given as a column is carried into predict(newdata), like
    # offset() in the formula; lme4 1.1-31 leaves it out there
    # (predictions_offset_argument_fit records that quirk: ours minus log_exposure).
    ref, res = region
    nd = ma.load_dataset("region_rates_newdata")
    arg = ma.lmm("y ~ program + year + (1|region)", ma.load_dataset("region_rates"),
                 offset="log_exposure")
    quirk = np.array(ref["predictions_offset_argument_fit"]["re_form_na"])
    assert_close(arg.predict(nd, re_form="~0").to_numpy() - nd["log_exposure"].to_numpy(),
                 quirk, 1e-6, "lme4's offset-less predictions")
    arr = ma.lmm("y ~ program + year + (1|region)", ma.load_dataset("region_rates"),
                 offset=ma.load_dataset("region_rates")["log_exposure"].to_numpy())
    assert np.allclose(arr.fittedvalues, arg.fittedvalues, rtol=1e-9)
    with pytest.raises(ma.DesignError, match="offset= was given as an array"):
        arr.predict(nd, re_form="~0")


def test_offset_expression_and_errors():
    data = ma.load_dataset("region_rates").assign(exposure=lambda d: np.exp(d["log_exposure"]))
    a = ma.lmm("y ~ program + year + offset(np.log(exposure)) + (1|region)", data)
    b = ma.lmm("y ~ program + year + offset(log_exposure) + (1|region)", data)
    assert np.allclose(a.fe_params, b.fe_params, rtol=1e-7)
    with pytest.raises(ma.FormulaError, match="offset"):
        ma.lmm("y ~ program - offset(log_exposure) + (1|region)", data)
    with pytest.raises(ma.DesignError, match="'log_exp'.*offset"):
        ma.lmm("y ~ program + offset(log_exp) + (1|region)", data)
