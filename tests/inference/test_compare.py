"""Model comparison against lme4 1.1-31 ``anova(m0, m1)`` and lmerTest 3.1-3 ``ranova(m1)``.

tests/reference/compare_sleepstudy.json on sleepstudy with
m0 = ``Reaction ~ Days + (1|Subject)``, m1 = ``Reaction ~ Days + (Days|Subject)``,
m2 = ``Reaction ~ 1 + (Days|Subject)`` (REML fits).  Log-likelihoods and criteria
1e-6 relative; Chisq 1e-5 relative; p 1e-4 relative.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import mixedanova as ma
from mixedanova.inference.compare import compare

REF = json.loads((Path(__file__).parent.parent / "reference" / "compare_sleepstudy.json").read_text())


@pytest.fixture(scope="module")
def models():
    data = ma.load_dataset("sleepstudy")
    return {k: ma.lmm(f, data) for k, f in REF["models"].items()}


def _check(tab, rows, what: str, stat: str = "Chisq") -> None:
    assert list(tab.index) == [r.get("model", r.get("term")) for r in rows], what
    for i, row in enumerate(rows):
        for key, val in row.items():
            if key in ("model", "term"):
                continue
            col = "LRT" if key == "LRT" else key
            got = tab[col].iloc[i]
            if val is None:
                assert np.isnan(got), f"{what}: {key} row {i}"
                continue
            rel = {"Chisq": 1e-5, "LRT": 1e-5, "p": 1e-4}.get(key, 1e-6)
            assert got == pytest.approx(val, rel=rel), f"{what}: {key} row {i}"


def test_anova_refits_with_ml(models):
    tab = compare(models["m0"], models["m1"], names=["m0", "m1"])
    # R: anova(m0, m1)  (lme4 refits the REML fits with ML)
    _check(tab, REF["anova_m0_m1_refit_ml"], "anova(m0, m1)")
    assert tab.attrs["refit"] is True
    assert any("refitting model(s) with ML" in n for n in tab.notes)
    assert "refitting" in repr(tab)


def test_anova_without_refit(models):
    tab = compare(models["m0"], models["m1"], names=["m0", "m1"], refit=False)
    # R: anova(m0, m1, refit = FALSE)
    _check(tab, REF["anova_m0_m1_reml"], "anova(m0, m1, refit = FALSE)")
    assert tab.attrs["refit"] is False and not tab.notes


def test_fixed_effects_comparison(models):
    # R: anova(m2, m1) -- different fixed effects, refitted with ML
    tab = compare(models["m1"], models["m2"], names=["m1", "m2"])  # sorted by npar
    _check(tab, REF["anova_m2_m1_refit_ml"], "anova(m2, m1)")
    # refit = FALSE cannot compare REML fits with different fixed effects: ML anyway
    tab2 = compare(models["m2"], models["m1"], names=["m2", "m1"], refit=False)
    _check(tab2, REF["anova_m2_m1_refit_ml"], "anova(m2, m1) (refit forced)")
    assert tab2.attrs["refit"] is True
    assert any("fixed effects differ" in n for n in tab2.notes)


def test_ranova(models):
    # R: lmerTest::ranova(m1)
    tab = models["m1"].ranova()
    _check(tab, REF["ranova_m1"], "ranova(m1)", stat="LRT")
    assert list(tab.columns) == ["npar", "logLik", "AIC", "LRT", "Df", "p"]


def test_ranova_removes_intercept_terms_and_can_use_lm():
    data = ma.load_dataset("dyestuff")
    res = ma.lmm("Yield ~ 1 + (1|Batch)", data)
    tab = res.ranova()
    assert list(tab.index) == ["<none>", "(1 | Batch)"]
    # without random effects the reduced model is lm(Yield ~ 1): its REML logLik
    y = data["Yield"].to_numpy(dtype=float)
    n = len(y)
    rss = float(np.sum((y - y.mean()) ** 2))
    # R: logLik(lm(Yield ~ 1, Dyestuff), REML = TRUE)
    ll = -0.5 * (n - 1) * (np.log(2 * np.pi * rss / (n - 1)) + 1) - 0.5 * np.log(n)
    assert tab["logLik"].iloc[1] == pytest.approx(ll, rel=1e-12)
    assert tab["npar"].iloc[1] == 2


def test_compare_input_errors(models):
    with pytest.raises(ValueError, match="at least two"):
        compare(models["m1"])
    data = ma.load_dataset("sleepstudy").iloc[:-10]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        short = ma.lmm(REF["models"]["m0"], data)
    with pytest.raises(ValueError, match="different numbers of observations"):
        compare(short, models["m1"])
