"""Residual covariance structures against nlme (issue 10).

Each case is ``nlme::lme(..., correlation = , weights = )`` as recorded in
``tests/reference/<case>.json`` (``formula_r``); the Python call names the same
structure through ``residual=``.  Tolerances (the developers' guide): logLik 1e-6
relative; fixed effects, SEs, SDs, sigma and structure parameters 1e-4; BLUPs
1e-3.  The intervals of the structure parameters are compared on nlme's
unconstrained scale (see ``test_structure_wald_intervals``).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np
import pytest

import mixedanova as ma
from _refdata import assert_close, load_reference

CASES = {
    # nlme: corAR1(form = ~ 1 | Mare); time_index is the row order within Mare
    "ovary_ar1": ("ovary", ma.AR1(group="Mare", order="time_index")),
    # nlme: weights = varIdent(form = ~ 1 | Type)
    "ergostool_varident": ("ergostool", ma.VarIdent(by="Type")),
    # nlme: corCompSymm(form = ~ 1 | Dog/Side)
    "pixel_compsymm": ("pixel", ma.CompSymm(group="Dog:Side")),
    # nlme: corAR1(form = ~ visit | patient), weights = varIdent(form = ~ 1 | arm)
    "trial_ar1_varident": ("trial_visits", (ma.AR1(group="patient", order="visit"),
                                            ma.VarIdent(by="arm"))),
    # nlme: corCAR1(form = ~ time | patient)
    "irregular_car1": ("irregular_visits", ma.CAR1(group="patient", time="time")),
    # nlme: weights = varPower(form = ~ pressure), REML and ML
    "dialyzer_varpower_reml": ("dialyzer", ma.VarPower(covariate="pressure")),
    "dialyzer_varpower_ml": ("dialyzer", ma.VarPower(covariate="pressure")),
    # nlme: weights = varExp(form = ~ dose)
    "doseresp_varexp": ("dose_response", ma.VarExp(covariate="dose")),
    # nlme: corAR1(form = ~ tindex | day/subject)
    "glucose_ar1": ("glucose", ma.AR1(group="day/subject", order="tindex")),
}

# natural structure parameters: (our residual_params name, reference field, key)
STRUCTURE = {
    "ovary_ar1": [("phi", "phi", None)],
    "ergostool_varident": [(k, "variance_ratios", k) for k in ("T1", "T2", "T3", "T4")],
    "pixel_compsymm": [("rho", "rho", None)],
    "trial_ar1_varident": [("phi", "phi", None), ("placebo", "variance_ratios", "placebo"),
                           ("active", "variance_ratios", "active")],
    "irregular_car1": [("phi", "phi", None)],
    "dialyzer_varpower_reml": [("power", "delta", None)],
    "dialyzer_varpower_ml": [("power", "delta", None)],
    "doseresp_varexp": [("expon", "expon", None)],
    "glucose_ar1": [("phi", "model_struct", "corStruct.Phi")],
}


def r_name(name: str) -> str:
    """formulaic -> R coefficient name: ``arm[T.placebo]`` -> ``armplacebo``,
    ``food[F3]:time[T1]`` -> ``foodF3:timeT1``."""
    if name == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[(?:T\.)?([^\]]*)\]", r"\1", name)


@lru_cache(maxsize=None)
def fitted(case: str):
    ref = load_reference(case)
    data_name, residual = CASES[case]
    res = ma.lmm(ref["formula"], ma.load_dataset(data_name), method=ref["method"],
                 residual=residual)
    return ref, res


def _ref_value(ref: dict, field: str, key):
    if field == "model_struct":
        return ref[field]["values"][ref[field]["names"].index(key)]
    return ref[field] if key is None else ref[field][key]


@pytest.mark.parametrize("case", list(CASES))
def test_loglik(case):
    """nlme: logLik(m) (REML or ML); never below nlme's optimum by more than 1e-6."""
    ref, res = fitted(case)
    assert_close(res.llf, ref["loglik"], 1e-6, f"{case} logLik")
    assert res.llf >= ref["loglik"] - 1e-7
    assert res.convergence_messages == ()


@pytest.mark.parametrize("case", list(CASES))
def test_fixed_effects_and_se(case):
    """nlme: summary(m)$tTable[, c("Value", "Std.Error")].

    For ML fits nlme's standard errors use ``sigma^2 N / (N - p)`` (they equal
    ``sqrt(N / (N - p))`` times lme4's convention, ``vcov`` with the ML sigma,
    which this package keeps); the comparison applies that factor.
    """
    ref, res = fitted(case)
    names = [r_name(n) for n in res.fe_params.index]
    idx = [ref["fixed"]["names"].index(n) for n in names]
    assert_close(res.fe_params.to_numpy(), np.array(ref["fixed"]["estimate"])[idx], 1e-4,
                 f"{case} fixef", atol=1e-8)
    se = res.bse_fe.to_numpy()
    if ref["method"] == "ML":
        se = se * math.sqrt(res.nobs / (res.nobs - res.design.p))
    assert_close(se, np.array(ref["fixed"]["se"])[idx], 1e-4, f"{case} SE")


@pytest.mark.parametrize("case", list(CASES))
def test_variance_components_and_structure(case):
    """nlme: getVarCov(m) SDs, m$sigma and coef(m$modelStruct, unconstrained = FALSE)."""
    ref, res = fitted(case)
    vc = res.varcomp
    assert_close(res.sigma, ref["sigma"], 1e-4, f"{case} sigma")
    for rec in ref["varcorr"]:
        if rec["group"] == "Residual":
            continue
        row = vc[(vc["group"] == rec["group"]) & vc["var2"].isna()]
        assert_close(row["sdcor"].to_numpy(), [rec["sdcor"]], 1e-4, f"{case} sd {rec['group']}")
    for name, field, key in STRUCTURE[case]:
        expected = _ref_value(ref, field, key)
        assert_close(res.residual_params[name], expected, 1e-4, f"{case} {name}")
        row = vc[(vc["group"] == "Residual") & (vc["var1"] == name)]
        assert_close(row["sdcor"].to_numpy(), [expected], 1e-4, f"{case} varcomp {name}")
    assert res.npar == ref.get("df", res.npar)  # nlme's df counts the structure too


def test_irregular_car1_against_tight_refit():
    """irregular_car1: nlme's default fit stops 4.3e-5 short along a flat phi/sigma
    direction; its tight refit (optim BFGS, msTol 1e-14) gains 5.5e-9 in logLik.  We
    match the tight refit at rtol 1e-5."""
    ref, res = fitted("irregular_car1")
    tight = ref["tight_refit"]
    assert_close(res.llf, tight["loglik"], 1e-10, "tight logLik")
    assert_close(res.sigma, tight["sigma"], 1e-5, "tight sigma")
    ms = tight["model_struct"]
    assert_close(res.residual_params["phi"], ms["values"][ms["names"].index("corStruct.Phi")],
                 1e-5, "tight phi")


@pytest.mark.parametrize("case", [c for c in CASES if c not in ("ergostool_varident",)])
def test_blups(case):
    """nlme: ranef(m) (matched by level label)."""
    ref, res = fitted(case)
    rf = ref["ranef"]
    if "group" not in rf:  # ovary_ar1's older layout: {group: {...}}
        (group, rf), = rf.items()
    else:
        group = rf["group"]
    ours = res.random_effects[group]["(Intercept)"]
    expected = rf["modes"]["(Intercept)"]
    got = ours.reindex([str(v) for v in rf["levels"]]).to_numpy()
    assert_close(got, expected, 1e-3, f"{case} ranef", atol=1e-6)


FIRST_GROUP = [c for c in CASES if "first_group_covariance" in load_reference(c)]


def _first_group_expected(case: str, ref: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (0-based), nlme's conditional and marginal covariance of the first group."""
    fg = ref["first_group_covariance"]
    rows = np.array(fg["csv_rows_1based"]) - 1
    cond, marg = np.array(fg["conditional"]), np.array(fg["marginal"])
    if case == "irregular_car1":
        # nlme's default fit is 4.3e-5 short in phi (README); the entries
        # sigma^2 phi^|t - t'| at gaps of up to 8 months amplify that to 1.3e-4.
        # The matrix is sigma^2 phi^|t - t'| at nlme's estimates (checked to 1e-9),
        # and ours is compared with the same formula at nlme's tight refit.
        t = ma.load_dataset("irregular_visits")["time"].to_numpy()[rows]
        gap = np.abs(t[:, None] - t[None, :])
        assert_close(ref["sigma"] ** 2 * ref["phi"] ** gap, cond, 1e-9, "nlme corCAR1")
        sd = {r["group"]: r["sdcor"] for r in ref["varcorr"]}["patient"]
        assert_close(cond + sd ** 2, marg, 1e-9, "nlme marginal")
        tight = ref["tight_refit"]
        ms = tight["model_struct"]
        phi = ms["values"][ms["names"].index("corStruct.Phi")]
        cond = tight["sigma"] ** 2 * phi ** gap
        sd_tight = {r["group"]: r["sdcor"] for r in tight["varcorr"]}["patient"]
        marg = cond + sd_tight ** 2
    return rows, cond, marg


@pytest.mark.parametrize("case", FIRST_GROUP)
def test_first_group_covariance(case):
    """nlme: sigma^2 R (corMatrix, varWeights) and Z G Z' + sigma^2 R of the first group."""
    ref, res = fitted(case)
    rows, expected, expected_marg = _first_group_expected(case, ref)
    cond = res.residual_covariance(rows).to_numpy()
    assert_close(cond, expected, 1e-4, f"{case} conditional", atol=1e-6)
    marg = cond.copy()
    templates = res.design.theta_layout().templates(res.theta)
    for b, T in zip(res.design.blocks, templates):
        G = res.sigma ** 2 * T @ T.T
        Zr = np.zeros((len(rows), b.nlev * b.q))
        for i, r in enumerate(rows):
            Zr[i, b.codes[r] * b.q:(b.codes[r] + 1) * b.q] = b.zraw[r]
        marg += Zr @ np.kron(np.eye(b.nlev), G) @ Zr.T
    assert_close(marg, expected_marg, 1e-4, f"{case} marginal", atol=1e-6)


@pytest.mark.parametrize("case", FIRST_GROUP)
def test_R_and_V_carry_the_structure(case):
    """res.R() and res.V() are nlme's sigma^2 R and Z G Z' + sigma^2 R (first group's
    block as in test_first_group_covariance), not sigma^2 I."""
    ref, res = fitted(case)
    rows, expected, expected_marg = _first_group_expected(case, ref)
    R, V = res.R().to_numpy(), res.V().to_numpy()
    assert_close(R[np.ix_(rows, rows)], expected, 1e-4, f"{case} R()", atol=1e-6)
    assert_close(V[np.ix_(rows, rows)], expected_marg, 1e-4, f"{case} V()", atol=1e-6)
    assert np.allclose(R, R.T) and np.allclose(V, V.T)


def _nlme_interval_rows(ref: dict) -> dict:
    """{nlme name: (lower, est, upper)} of the corStruct and varStruct intervals."""
    out = {}
    iv = ref.get("intervals") or {}
    for part in ("corStruct", "varStruct"):
        if part in iv:
            for k, name in enumerate(iv[part]["names"]):
                out[name] = (iv[part]["lower"][k], iv[part]["est"][k], iv[part]["upper"][k])
    if "intervals_95" in ref:  # ovary_ar1
        p = ref["intervals_95"]["phi"]
        out["Phi"] = (p["lower"], p["est."], p["upper"])
    return out


_NLME_NAMES = {"phi": ("Phi", "Phi1"), "rho": ("Rho",), "power": ("power",),
               "expon": ("expon",), "active": ("active",)}


@lru_cache(maxsize=None)
def _apvar_steps() -> dict:
    """nlme's apVar SEs refitted at larger fdHess steps (tests/reference/README.md)."""
    return load_reference("nlme_apvar_steps")


@pytest.mark.parametrize("case", list(CASES))
def test_structure_wald_intervals(case):
    """nlme: sqrt(diag(m$apVar)) of the corStruct / varStruct parameters and
    intervals(m)$corStruct / $varStruct, with fdHess's step error removed.

    ``tests/reference/nlme_apvar_steps.json`` holds, for the same ``lme()`` call,
    ``se(u)`` from ``lmeControl(.relStep = h)`` at h = 1e-4 and 2e-4 extrapolated to
    h = 0 (``2 S(h) - S(2h)``).  Our ``se_u`` (unconstrained scale) must agree to
    1e-4 and the interval ends ``natural(u +- z se)`` to 1e-4.
    """
    ref, res = fitted(case)
    fx = _apvar_steps()["cases"][case]["extrapolated_se"]
    ours = res.residual_intervals()
    s = res.state.residual.structure
    fit = res.state.residual
    se_nlme = np.array([v[1] for v in fx.values()])  # the h = 1e-4 extrapolation
    assert len(se_nlme) == len(ours), f"{case}: nlme has {list(fx)}"
    assert_close(ours["se_u"].to_numpy(), se_nlme, 1e-4, f"{case} se(u)")
    z = 1.959963984540054
    lo, hi = s.natural(fit.u - z * se_nlme), s.natural(fit.u + z * se_nlme)
    assert_close(ours["lower"].to_numpy(), np.minimum(lo, hi), 1e-4, f"{case} lower")
    assert_close(ours["upper"].to_numpy(), np.maximum(lo, hi), 1e-4, f"{case} upper")


@pytest.mark.parametrize("case", [c for c in CASES if c != "ergostool_varident"])
def test_structure_wald_intervals_default_step(case):
    """nlme: intervals(m)$corStruct / $varStruct as recorded in the shared reference
    (default ``.relStep`` 6.1e-6).

    Compared through ``se(u) = (u(upper) - u(lower)) / (2 z)`` at rtol 5e-3 and
    the ends at 1e-2: at the default step nlme's own value moves by that much
    between builds and even between steps equal to 7 digits (pixel_compsymm
    lower Rho: 0.300416 in the shared file, 0.299013 and 0.300373 refitted with
    the same R and nlme versions; see tests/reference/README.md).  The
    step-free comparison at 1e-4 is ``test_structure_wald_intervals``.
    """
    ref, res = fitted(case)
    rows = _nlme_interval_rows(ref)
    ours = res.residual_intervals()
    s = res.state.residual.structure
    z = 1.959963984540054
    for k, name in enumerate(ours.index):
        match = [rows[n] for n in _NLME_NAMES.get(name, (name,)) if n in rows]
        assert match, f"{case}: no nlme interval for {name}"
        lo, est, hi = match[0]
        u = s.unconstrained(np.array([est if j == k else ours["estimate"].iloc[j]
                                      for j in range(len(ours))]))
        u_lo = s.unconstrained(np.array([lo if j == k else ours["estimate"].iloc[j]
                                         for j in range(len(ours))]))[k]
        u_hi = s.unconstrained(np.array([hi if j == k else ours["estimate"].iloc[j]
                                         for j in range(len(ours))]))[k]
        assert_close(ours["se_u"].iloc[k], (u_hi - u_lo) / (2 * z), 5e-3, f"{case} se({name})")
        assert_close([ours["lower"].iloc[k], ours["upper"].iloc[k]], [lo, hi], 1e-2,
                     f"{case} interval({name})")
        assert np.isfinite(u[k])


def test_wald_se_is_step_stable():
    """Our se(u) does not depend on the finite-difference step (1e-3 vs 3e-3)."""
    from mixedanova.inference.satterthwaite import satterthwaite_setup

    _, res = fitted("dialyzer_varpower_ml")
    k = res.state.theta.size
    a = satterthwaite_setup(res, rel_step=1e-3, warn=False).vcov_varpar[k, k]
    b = satterthwaite_setup(res, rel_step=3e-3, warn=False).vcov_varpar[k, k]
    assert abs(math.sqrt(a) / math.sqrt(b) - 1) < 1e-4


def test_glucose_mu31_and_food3_mean():
    """nlme: fixef(m)['foodF3:timeT1'] and its SE; L = (mu_31 + ... + mu_34) / 4,
    sum(L * fixef(m)) and sqrt(L' vcov(m) L)."""
    ref, res = fitted("glucose_ar1")
    names = [r_name(n) for n in res.fe_params.index]
    j = names.index("foodF3:timeT1")
    assert_close(res.fe_params.iloc[j], ref["mu_31"]["estimate"], 1e-4, "mu_31")
    assert_close(res.bse_fe.iloc[j], ref["mu_31"]["se"], 1e-4, "se(mu_31)")
    L = np.array([n in {f"foodF3:timeT{t}" for t in range(1, 5)} for n in names]) / 4.0
    assert_close(L @ res.fe_params.to_numpy(), ref["food3_mean"]["estimate"], 1e-4, "food3")
    se = math.sqrt(L @ res.cov_fe.to_numpy() @ L)
    assert_close(se, ref["food3_mean"]["se"], 1e-4, "se(food3 mean)")
    cp = ref["covariance_parameters"]
    assert_close(res.residual_params["phi"], cp["phi"], 1e-4, "phi")
    assert_close(res.varcomp["sdcor"].iloc[0], cp["sigma_day"], 1e-4, "sigma_day")


def test_varident_reference_is_nlmes():
    """nlme's varIdent reference is the stratum of the first row in its sorted data:
    placebo in trial_ar1_varident, although 'active' sorts first."""
    _, res = fitted("trial_ar1_varident")
    assert list(res.residual_params.index) == ["phi", "placebo", "active"]
    assert res.residual_params["placebo"] == 1.0


def test_pixel_compsymm_equals_the_lmer_model():
    """lme4: lmer(pixel ~ day + day2 + (1|Dog) + (1|Dog:Side)) is the same model
    (``lmer_equivalent``): the same logLik, and Satterthwaite df computed over
    (theta, u, sigma) agree with those of the lmer parametrization."""
    ref, res = fitted("pixel_compsymm")
    eq = ref["lmer_equivalent"]
    assert_close(res.llf, eq["loglik"], 1e-9, "logLik")
    assert_close(res.residual_params["rho"], eq["implied_rho"], 1e-4, "implied rho")
    lm = ma.lmm("pixel ~ day + day2 + (1|Dog) + (1|Dog:Side)", ma.load_dataset("pixel"))
    assert_close(res.fixed()["df"].to_numpy(), lm.fixed()["df"].to_numpy(), 1e-3, "df")
    assert_close(res.anova()["den_df"].to_numpy(), lm.anova()["den_df"].to_numpy(), 1e-3,
                 "anova den df")


def test_summary_shows_the_structure():
    _, res = fitted("trial_ar1_varident")
    text = str(res.summary())
    assert "Residual structure: AR1(group='patient', order='visit') + VarIdent(by='arm')" in text
    assert "active" in text and "phi" in text


def test_kenward_roger_is_available():
    """Random terms plus AR(1): Kenward-Roger df and adjusted SEs (their values are
    checked against the dense Kenward & Roger (1997) formulas in
    tests/inference/test_kenward_roger_residual.py)."""
    _, res = fitted("ovary_ar1")
    kr = res.fixed(ddf="kenward-roger")
    assert np.all(np.isfinite(kr["df"])) and np.all(kr["df"] > 0)
    assert np.all(np.isfinite(kr["std_err"])) and np.all(kr["std_err"] > 0)


def test_glucose_group_spellings_agree():
    """nlme needs ``~ tindex | day/subject`` (``nlme_spelling``); here the subject
    alone names the same groups (one subject per food and day), so the fits agree."""
    ref, res = fitted("glucose_ar1")
    other = ma.lmm(ref["formula"], ma.load_dataset("glucose"),
                   residual=ma.AR1(group="subject", order="tindex"))
    assert abs(other.llf - res.llf) < 1e-9
    assert_close(other.residual_params["phi"], res.residual_params["phi"], 1e-6, "phi")


def test_predict_with_a_residual_structure():
    """Predictions do not involve R: population level is X beta, conditional adds Z b
    (nlme: fitted(m, level = 0:1), first 10 rows)."""
    ref, res = fitted("pixel_compsymm")
    assert_close(res.predict(include_random=False).to_numpy()[:10],
                 ref["fitted_population"]["values"], 1e-6, "level 0")
    assert_close(res.fittedvalues.to_numpy()[:10], ref["fitted"]["values"], 1e-6, "level 1")


@pytest.mark.parametrize("case", [c for c in CASES if "residuals_pearson" in load_reference(c)])
def test_residual_sd_and_pearson_residuals(case):
    """nlme: head(m$sigma * <variance function>, 10) (residual_sd_rows) and
    head(residuals(m, level = 1, type = "pearson"), 10)."""
    ref, res = fitted(case)
    if "residual_sd_rows" in ref:
        assert_close(res.residual_sd.to_numpy()[:10], ref["residual_sd_rows"]["values"], 1e-4,
                     f"{case} residual SD")
    assert_close(res.resid_pearson.to_numpy()[:10], ref["residuals_pearson"]["values"],
                 1e-4, f"{case} Pearson residuals", atol=1e-6)


def test_row_order_does_not_matter():
    """Shuffled rows give the same fit (whitening sorts by group and position)."""
    ref, res = fitted("trial_ar1_varident")
    data = ma.load_dataset("trial_visits").sample(frac=1.0, random_state=3)
    again = ma.lmm(ref["formula"], data, residual=CASES["trial_ar1_varident"][1])
    assert abs(again.llf - res.llf) < 1e-8
    assert_close(again.residual_params.to_numpy(), res.residual_params.to_numpy(), 1e-6, "params")


def test_ar1_without_order_uses_row_order():
    """nlme: corAR1(form = ~ 1 | Mare) -- positions are the rows' order within Mare,
    which in ovary.csv equals time_index."""
    ref, res = fitted("ovary_ar1")
    plain = ma.lmm(ref["formula"], ma.load_dataset("ovary"), residual=ma.AR1(group="Mare"))
    assert abs(plain.llf - ref["loglik"]) < 1e-6
    assert_close(plain.residual_params["phi"], ref["phi"], 1e-4, "phi")


@pytest.mark.parametrize("case", [c for c in CASES if "residuals_normalized" in load_reference(c)])
def test_normalized_residuals(case):
    """nlme: head(residuals(m, level = 1, type = "normalized"), 10) (CSV row order).

    irregular_car1 at atol 2e-5: nlme's default fit stops 4.3e-5 short of its
    tight refit along the flat phi/sigma direction (reference README), which
    moves its Pearson residuals by up to 1e-5 as well; one normalized residual
    there is 0.0036.
    """
    ref, res = fitted(case)
    atol = 2e-5 if case == "irregular_car1" else 1e-6
    assert_close(res.resid_normalized.to_numpy()[:10], ref["residuals_normalized"]["values"],
                 1e-4, f"{case} normalized residuals", atol=atol)
    assert np.array_equal(res.residuals("normalized").to_numpy(),
                          res.resid_normalized.to_numpy())


def test_normalized_residuals_are_white_under_ar1():
    """Under the fitted AR(1) the normalized residuals of glucose_ar1 have lag-1
    correlation near 0 within day/subject, where the Pearson residuals keep phi's."""
    ref, res = fitted("glucose_ar1")
    data = ma.load_dataset("glucose")
    key = data["day"].astype(str) + "/" + data["subject"].astype(str)
    order = np.lexsort((data["tindex"].to_numpy(), key.to_numpy()))
    same = key.to_numpy()[order][1:] == key.to_numpy()[order][:-1]

    def lag1(r):
        r = r[order]
        return np.corrcoef(r[1:][same], r[:-1][same])[0, 1]

    assert abs(lag1(res.resid_normalized.to_numpy())) < 0.1
    assert lag1(res.resid_pearson.to_numpy()) > 0.2
