"""Every table named in issue 22 prints within 80 characters at pandas'
``display.width = 80``: all its columns (wrapped in blocks) or a deliberate
choice that names the rest, and its notes (R's printed tables: emmeans'
``pairs()`` with its "P value adjustment" note, lme4's ``coef(m)$Block``).
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma

WIDTH = 80


def _printed(obj) -> str:
    with pd.option_context("display.width", WIDTH):
        return repr(obj)


def _check_fits(text: str, columns, what: str) -> None:
    """Lines fit; every column name is printed or named in the "Not shown" note;
    nothing is cut with pandas' "..." placeholder."""
    long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not long, f"{what}: lines over {WIDTH} characters: {long}"
    assert not re.search(r"(^|\s)\.\.\.(\s|$)", text), f"{what}: columns cut with '...'"
    tokens = set(re.split(r"[\s,;]+", text))
    missing = [str(c) for c in columns if str(c) not in tokens]
    assert not missing, f"{what}: columns not visible: {missing}"


@pytest.fixture(scope="module")
def oats():
    return ma.load_dataset("oats")


@pytest.fixture(scope="module")
def oats_fit(oats):
    # lme4: lmer(yield ~ Variety * nitro_f + (1|Block) + (1|Block:Variety), oats)
    return ma.lmm("yield ~ Variety * nitro_f + (1|Block) + (1|Block:Variety)", oats)


@pytest.fixture(scope="module")
def oats_anova(oats):
    return ma.lmm("yield ~ Variety*nitro_f + (1|Block) + (1|Block:Variety)", oats,
                  method="ANOVA")


def test_pairs_print_every_column_and_the_adjustment_note(oats_fit):
    # emmeans: pairs(emmeans(m, ~ nitro_f), adjust = "tukey")
    pairs = oats_fit.emmeans("nitro_f").pairs(adjust="tukey")
    text = _printed(pairs)
    _check_fits(text, pairs.columns, "pairs()")
    assert "P value adjustment: tukey method for comparing a family of 4 estimates" in text
    # emmeans: pairs(emmeans(m, ~ Variety | nitro_f), adjust = "bonferroni")
    by = oats_fit.emmeans("Variety | nitro_f").pairs(adjust="bonferroni")
    text = _printed(by)
    _check_fits(text, by.columns, "Variety | nitro_f pairs")
    assert "P value adjustment: bonferroni method for 3 tests" in text
    assert "Marvellous - Victory" in text
    # Jupyter's form keeps the notes too
    assert "P value adjustment: bonferroni method for 3 tests" in by._repr_html_()


def test_coef_of_a_group_prints_every_column(oats_fit):
    # lme4: coef(m)$Block (12 fixed-effect columns)
    block = oats_fit.coef()["Block"]
    assert block.shape == (6, 12)
    _check_fits(_printed(block), block.columns, 'coef()["Block"]')


def test_ems_table_prints_chosen_columns_and_names_the_rest(oats_anova):
    # the EMS table of aov(yield ~ Variety*nitro_f + Error(Block/Variety)): 15 columns
    table = oats_anova.ems_table()
    assert table.shape[1] == 15  # the frame keeps every column
    text = _printed(table)
    shown = ["df", "sum_sq", "mean_sq", "ems", "error_term", "den_df", "F", "p"]
    hidden = [c for c in table.columns if c not in shown]
    _check_fits(text, table.columns, "ems_table()")
    assert "Not shown: " + ", ".join(hidden[:2]) in text and "table.full()" in text
    assert text.startswith("ANOVA table, EMS rules (balanced), unrestricted mixed model")
    full = table.full()
    _check_fits(full, table.columns, "ems_table().full()")
    assert "Not shown" not in full and "Q_coef" in full


def test_moment_estimates_and_varcomp_ci_print_within_80(oats_anova):
    est = oats_anova.moment_estimates
    text = _printed(est)
    _check_fits(text, est.columns, "moment_estimates")
    assert "3.228" in text and "3.2281" not in text  # Satterthwaite df rounded for display
    ci = oats_anova.varcomp_ci("V(Y) = s2_Block + s2_Block:Variety + s2_e")
    text = _printed(ci)
    assert "dataclass" not in text and "VarcompInterval(" not in text
    _check_fits(text, [], "varcomp_ci()")
    assert "estimate 497.622, SE 149.8, df 16.08" in text


def test_fixed_anova_and_predictions_print_every_column(oats_fit):
    # lmerTest: summary(m)$coefficients with confint; anova(m); predict intervals
    fixed = oats_fit.fixed()
    text = _printed(fixed)
    _check_fits(text, fixed.columns, "fixed()")
    assert "30.23" in text and "30.2279" not in text  # Satterthwaite df rounded for display
    table = oats_fit.anova()
    text = _printed(table)
    _check_fits(text, table.columns, "anova()")
    assert text.startswith("Type III Analysis of Variance Table with Satterthwaite's method")
    pred = oats_fit.get_prediction(oats_fit.model.design.data.head(3), re_form="~0")
    _check_fits(_printed(pred), pred.columns, "get_prediction()")


def test_varcomp_missing_names_are_nan(oats_fit):
    # lme4: as.data.frame(VarCorr(m)) has NA in var2 (and var1 of Residual)
    vc = oats_fit.varcomp
    assert vc["var2"].isna().all() and vc["var1"].isna().tolist() == [False, False, True]
    assert all(isinstance(v, float) and np.isnan(v) for v in vc["var2"])  # NaN, not None
    text = _printed(vc)
    _check_fits(text, vc.columns, "varcomp")
    assert "None" not in text and "NaN" in text


def test_residual_covariance_is_labelled():
    # nlme: getVarCov(m, type = "conditional") of Mare 1, labelled by Mare and time_index
    ovary = ma.load_dataset("ovary")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ma.lmm("follicles ~ sin2pit + cos2pit + (1|Mare)", ovary,
                     residual=ma.AR1(group="Mare", order="time_index"))
    cov = res.residual_covariance([0, 1, 2])
    assert isinstance(cov, pd.DataFrame)
    assert list(cov.index.names) == ["Mare", "time_index"] and cov.index.equals(cov.columns)
    assert [t for _, t in cov.index] == list(ovary["time_index"].iloc[:3])
    phi = res.residual_params["phi"]
    np.testing.assert_allclose(cov.iloc[0, 1] / cov.iloc[0, 0], phi, rtol=1e-12)
    _check_fits(_printed(cov), [], "residual_covariance()")
    plain = ma.lmm("Reaction ~ Days + (1|Subject)", ma.load_dataset("sleepstudy"))
    cov = plain.residual_covariance([0, 1])  # sigma^2 I, labelled by the data's rows
    assert cov.index.name == "row" and list(cov.index) == [0, 1]


def test_compare_names_the_residual_structures():
    # nlme: anova(m_ar1, m_cs) of two models with the same formula
    trial = ma.load_dataset("trial_visits")
    f = "y ~ visit * arm + (1|patient)"
    a = ma.lmm(f, trial, residual=ma.AR1(group="patient", order="visit"))
    b = ma.lmm(f, trial, residual=ma.CompSymm(group="patient"))
    text = _printed(ma.compare(a, b, refit=False))
    assert "model1: y ~ visit * arm + (1|patient)" in text
    assert "residual=AR1(group='patient', order='visit')" in text
    assert "residual=CompSymm(group='patient')" in text
    _check_fits(text, ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "p"],
                "compare()")
