"""The lmer checks every lmer case passes (tests/test_lmer_reference.py and the
feature fits in tests/results/test_feature_fits.py): criterion, fixed effects and
vcov, variance components and theta (default and tight refit), BLUPs and
conditional SDs, fitted values and residuals.  Each takes ``(reference, fit)``.

Tolerances (DEVELOPERS.md and issue 2): objective 1e-6 relative; fixed effects,
standard errors and variance components 1e-4 relative against the default lme4
fit; BLUPs and conditional SDs 1e-3.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from _refdata import assert_close, r_name


def _varcorr_frame(records) -> pd.DataFrame:
    return pd.DataFrame(records)


def check_objective(fitted) -> None:
    ref, res = fitted
    if ref["method"] == "REML":
        # R: REMLcrit(m)
        assert_close(res.reml_criterion, ref["reml_criterion"], 1e-6, "REMLcrit(m)")
        assert np.isnan(res.deviance)
        assert_close(res.reml_criterion, ref["tight_refit"]["reml_criterion"], 1e-9,
                     "REMLcrit(tight refit)")
    else:
        # R: deviance(m)
        assert_close(res.deviance, ref["deviance"], 1e-6, "deviance(m)")
        assert_close(res.deviance, ref["tight_refit"]["deviance"], 1e-9,
                     "deviance(tight refit)")
    # R: logLik(m), AIC(m), BIC(m), attr(logLik(m), "df")
    assert_close(res.llf, ref["loglik"], 1e-6, "logLik(m)")
    assert_close(res.aic, ref["aic"], 1e-6, "AIC(m)")
    assert_close(res.bic, ref["bic"], 1e-6, "BIC(m)")
    assert res.npar == ref["df"], "attr(logLik(m), 'df')"


def check_fixed_effects(fitted) -> None:
    ref, res = fitted
    names = [r_name(n) for n in res.fe_params.index]
    assert names == ref["fixed"]["names"], "names(fixef(m))"
    # R: fixef(m); sqrt(diag(vcov(m)))
    assert_close(res.fe_params, ref["fixed"]["estimate"], 1e-4, "fixef(m)")
    assert_close(res.bse_fe, ref["fixed"]["se"], 1e-4, "sqrt(diag(vcov(m)))")
    tight = ref["tight_refit"]["fixed"]
    assert_close(res.fe_params, tight["estimate"], 1e-6, "fixef(tight refit)")
    assert_close(res.bse_fe, tight["se"], 1e-5, "SE (tight refit)")
    # R: vcov(m)
    vc = np.array(ref["vcov_fixed"]["matrix"])
    assert_close(res.cov_fe.to_numpy(), vc, 1e-4, "vcov(m)",
                 atol=1e-4 * np.abs(np.diag(vc)).max())


def check_variance_components(fitted) -> None:
    ref, res = fitted
    vc = res.varcomp
    rv = _varcorr_frame(ref["varcorr"])
    assert list(vc.columns) == ["group", "var1", "var2", "vcov", "sdcor"]
    # R: as.data.frame(VarCorr(m))$grp, $var1, $var2
    assert list(vc["group"]) == [r["group"] for r in ref["varcorr"]]
    assert [None if pd.isna(v) else v for v in vc["var1"]] == [r["var1"] for r in ref["varcorr"]]
    assert [None if pd.isna(v) else v for v in vc["var2"]] == [r["var2"] for r in ref["varcorr"]]
    # R: as.data.frame(VarCorr(m))$vcov, $sdcor (default fit, 1e-4)
    assert_close(vc["vcov"], rv["vcov"], 1e-4, "as.data.frame(VarCorr(m))$vcov", atol=1e-10)
    assert_close(vc["sdcor"], rv["sdcor"], 1e-4, "as.data.frame(VarCorr(m))$sdcor", atol=1e-10)
    tv = _varcorr_frame(ref["tight_refit"]["varcorr"])
    # R: the same from the tight refit (converged optimum), 1e-5 / atol 1e-6 near 0
    assert_close(vc["vcov"], tv["vcov"], 1e-5, "VarCorr(tight refit)$vcov", atol=1e-6)
    assert_close(vc["sdcor"], tv["sdcor"], 1e-5, "VarCorr(tight refit)$sdcor", atol=1e-6)
    # R: getME(m, "theta"), sigma(m)
    assert list(res.theta_names) == ref["theta_names"], "names(getME(m, 'theta'))"
    assert_close(res.theta, ref["tight_refit"]["theta"], 1e-5, "getME(tight, 'theta')",
                 atol=1e-6)
    assert_close(res.theta, ref["theta"], 1e-3, "getME(m, 'theta')", atol=1e-5)
    assert_close(res.sigma, ref["sigma"], 1e-4, "sigma(m)")
    assert res.is_singular == ref["is_singular"], "isSingular(m)"


def check_random_effects(fitted) -> None:
    ref, res = fitted
    assert res.ngroups == ref["n_groups"], "ngrps(m)"
    assert res.nobs == ref["nobs"], "nobs(m)"
    for group, rr in ref["ranef"].items():
        ours = res.random_effects[group]
        sd = res.random_effects_sd[group]
        assert list(ours.columns) == rr["terms"], f"names(ranef(m)${group})"
        levels = pd.Index([str(v) for v in rr["levels"]])
        assert set(levels) == set(ours.index), f"rownames(ranef(m)${group})"
        for term in rr["terms"]:
            # R: ranef(m)$group[, term]
            assert_close(ours.loc[levels, term], rr["modes"][term], 1e-3,
                         f"ranef(m)${group}[, '{term}']", atol=1e-6)
            # R: sqrt(attr(ranef(m, condVar = TRUE)$group, 'postVar')[j, j, ])
            assert_close(sd.loc[levels, term], rr["condsd"][term], 1e-3,
                         f"condVar sd ranef(m)${group}[, '{term}']")


def check_fitted_and_residuals(fitted) -> None:
    ref, res = fitted
    # R: head(fitted(m), 10); head(residuals(m), 10)
    assert_close(res.fittedvalues.to_numpy()[:10], ref["fitted"], 1e-4, "fitted(m)[1:10]")
    assert_close(res.resid.to_numpy()[:10], ref["residuals"], 1e-3, "residuals(m)[1:10]",
                 atol=1e-4 * np.abs(ref["fitted"]).max())
