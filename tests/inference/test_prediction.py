"""predict(re_form=...) and get_prediction() against
tests/reference/subject_item_predict.json (crossed subject x item)."""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma
from _refdata import assert_close, fit_reference


@pytest.fixture(scope="module")
def fit():
    ref, res = fit_reference("subject_item_predict")
    return ref, res, ma.load_dataset("subject_item_newdata")


@pytest.mark.parametrize("re_form,key", [
    (None, "re_form_null"),              # predict(m, nd, re.form = NULL, allow.new.levels = TRUE)
    ("~0", "re_form_na"),                # predict(m, nd, re.form = NA)
    ("NA", "re_form_na"),
    ("~(1|subject)", "re_form_subject"),  # re.form = ~(1 | subject)
    ("~ (1 | item)", "re_form_item"),     # re.form = ~(1 | item)
])
def test_predict_re_form(fit, re_form, key):
    ref, res, nd = fit
    got = res.predict(nd, re_form=re_form, allow_new_levels=True)
    assert_close(got, ref["predictions"][key]["values"], 1e-6, key)


def test_predict_known_levels_only(fit):
    ref, res, nd = fit
    k = ref["predictions"]["known_levels_only"]  # predict(m, newdata = nd[known, ])
    rows = [i - 1 for i in k["rows_1based"]]
    assert_close(res.predict(nd.iloc[rows]), k["values"], 1e-6, "known levels")


def test_predict_new_levels_error(fit):
    ref, res, nd = fit
    # lme4: "new levels detected in newdata: new_itm"
    with pytest.raises(ma.DesignError, match="not seen in the fit.*allow_new_levels"):
        res.predict(nd)


def test_re_form_errors(fit):
    ref, res, nd = fit
    with pytest.raises(ma.DesignError, match=r"\(1\|plate\) is not a random term"):
        res.predict(nd, re_form="~(1|plate)")
    with pytest.raises(ma.DesignError, match="re_form"):
        res.predict(nd, re_form=3)


def test_fixed_part_se(fit):
    ref, res, nd = fit
    f = ref["predictions"]["fixed_part_se"]  # sqrt(diag(X %*% vcov(fit) %*% t(X)))
    assert_close(res.design.fixed_matrix(nd), f["X"], 1e-12, "model.matrix(nd)")
    g = res.get_prediction(nd, re_form="~0")
    assert_close(g["se_fit"], f["values"], 1e-4, "fixed-part SE")


@pytest.mark.parametrize("ddf,key", [("satterthwaite", "emmeans_satterthwaite"),
                                     ("kenward-roger", "emmeans_kenward_roger"),
                                     ("none", "emmeans_asymptotic")])
def test_get_prediction_matches_emmeans(fit, ddf, key):
    ref, res, nd = fit
    e = ref["predictions"][key]  # summary(emmeans(fit, ~ condition * freq, at = ..., lmer.df))
    g = res.get_prediction(nd, re_form="~0", ddf=ddf)
    assert_close(g["mean"], e["emmean"], 1e-6, "emmean")
    assert_close(g["se_fit"], e["SE"], 1e-4, "SE")
    if ddf == "none":
        assert np.all(np.isinf(g["df"]))
    else:
        assert_close(g["df"], e["df"], 1e-3, "df")
    assert_close(g["ci_low"], e["lower_CL"], 1e-6, "lower.CL")
    assert_close(g["ci_high"], e["upper_CL"], 1e-6, "upper.CL")


@pytest.mark.parametrize("ddf,key", [("satterthwaite", "emmeans_satterthwaite"),
                                     ("kenward-roger", "emmeans_kenward_roger")])
def test_emmeans_at_covariate_values(fit, ddf, key):
    ref, res, nd = fit
    e = ref["predictions"][key]
    em = res.emmeans("~ condition * freq", at={"freq": sorted(nd["freq"].unique())}, ddf=ddf)
    # rows matched to newdata by (condition, freq), as the reference
    idx = [int(np.flatnonzero((em["condition"] == c).to_numpy()
                              & np.isclose(em["freq"].to_numpy(float), fq))[0])
           for c, fq in zip(nd["condition"], nd["freq"])]
    em = em.iloc[idx]
    for ours, theirs, rtol in (("emmean", "emmean", 1e-6), ("SE", "SE", 1e-4),
                               ("df", "df", 1e-3), ("t_ratio", "t_ratio", 1e-4),
                               ("p_value", "p_value", 1e-3)):
        assert_close(em[ours], e[theirs], rtol, f"{key} {theirs}")


def test_prediction_interval_decomposition(fit):
    ref, res, nd = fit
    # population level: var = se_fit^2 + s2_subject + s2_item + sigma^2
    g = res.get_prediction(nd, re_form="~0")
    vc = res.varcomp.set_index("group")["vcov"]
    q = (g["pi_high"] - g["mean"]) / np.sqrt(g["se_fit"] ** 2 + vc.sum())
    from scipy import stats
    assert np.allclose(q, stats.t.ppf(0.975, g["df"]), rtol=1e-10)
    # conditional: a known level adds its BLUP's conditional variance instead
    g1 = res.get_prediction(nd, allow_new_levels=True)
    sd = {k: v.iloc[:, 0] for k, v in res.random_effects_sd.items()}
    expect = g1["se_fit"] ** 2 + vc["Residual"]
    for grp in ("subject", "item"):
        known = nd[grp].isin(sd[grp].index)
        expect += np.where(known, sd[grp].reindex(nd[grp]).fillna(0).to_numpy() ** 2, vc[grp])
    q1 = (g1["pi_high"] - g1["mean"]) / np.sqrt(expect)
    assert np.allclose(q1, stats.t.ppf(0.975, g1["df"]), rtol=1e-10)
    assert np.all(g1["pi_high"] - g1["pi_low"] > g1["ci_high"] - g1["ci_low"])


def test_get_prediction_on_fitted_rows():
    ref, res = fit_reference("sleepstudy_reml")
    g = res.get_prediction()
    assert np.allclose(g["mean"], res.fittedvalues)
    assert list(g.columns) == ["mean", "se_fit", "df", "ci_low", "ci_high", "pi_low", "pi_high"]


def test_predict_se_fit(fit):
    ref, res, nd = fit
    out = res.predict(nd, re_form="~0", se_fit=True)
    assert list(out.columns) == ["mean", "se_fit"]
    # sqrt(diag(X %*% vcov(fit) %*% t(X)))
    assert_close(out["se_fit"], ref["predictions"]["fixed_part_se"]["values"], 1e-4, "se.fit")
