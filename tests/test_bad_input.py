"""Bad input gives an error that names the culprit (issue 2, DEVELOPERS.md)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma


@pytest.fixture()
def sleep():
    return ma.load_dataset("sleepstudy")


def test_missing_column_is_named(sleep):
    with pytest.raises(ma.DesignError, match=r"column 'Dayz' \(fixed effects\) is not in the "
                                             r"data; did you mean 'Days'"):
        ma.lmm("Reaction ~ Dayz + (1|Subject)", sleep)
    with pytest.raises(ma.DesignError, match="column 'Subj'.*grouping factor"):
        ma.lmm("Reaction ~ Days + (1|Subj)", sleep)


def test_non_numeric_response_is_named(sleep):
    df = sleep.assign(label=np.where(sleep["Days"] > 4, "late", "early"))
    with pytest.raises(ma.DesignError, match="response 'label' is not numeric"):
        ma.lmm("label ~ Days + (1|Subject)", df)


def test_inf_in_response_is_named(sleep):
    df = sleep.copy()
    df.loc[7, "Reaction"] = np.inf
    with pytest.raises(ma.DesignError, match=r"column 'Reaction' has infinite values \(rows \[7\]\)"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df)


def test_nan_produced_by_a_transformation_is_named(sleep):
    df = sleep.copy()
    df.loc[3, "Reaction"] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's log of a negative
        with pytest.raises(ma.DesignError, match=r"response 'np.log\(Reaction\)' has non-finite "
                                                 r"values .* rows \[3\]"):
            ma.lmm("np.log(Reaction) ~ Days + (1|Subject)", df)


def test_missing_values_are_dropped_and_counted(sleep):
    # lme4's na.omit: rows with NA in a used column are dropped and counted
    df = sleep.copy()
    df.loc[[0, 5], "Reaction"] = np.nan
    df.loc[9, "Days"] = np.nan
    df["unused"] = np.nan
    res = ma.lmm("Reaction ~ Days + (1|Subject)", df)
    assert res.nobs == 177 and res.n_dropped == 3
    assert "3 observations deleted due to missing values" in str(res.summary())
    ref = ma.lmm("Reaction ~ Days + (1|Subject)", df.drop(index=[0, 5, 9]))
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-12)


def test_missing_values_can_be_refused(sleep):
    df = sleep.copy()
    df.loc[4, "Reaction"] = np.nan
    with pytest.raises(ma.DesignError, match=r"missing values in 'Reaction' \(1 rows\)"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df, missing="raise")


def test_grouping_factor_with_one_level(sleep):
    df = sleep.assign(site="A")
    with pytest.raises(ma.DesignError, match=r"grouping factor 'site' of \(1\|site\) has only one "
                                             r"level \('A'\)"):
        ma.lmm("Reaction ~ Days + (1|Subject) + (1|site)", df)


def test_more_random_effects_than_observations(sleep):
    small = sleep[sleep["Days"] < 2]  # 36 rows, 18 subjects: 2 x 18 = 36 effects
    with pytest.raises(ma.DesignError, match=r"random term \(Days\|Subject\) has 36 random "
                                             r"effects \(18 levels x 2\) for 36 observations"):
        ma.lmm("Reaction ~ Days + (Days|Subject)", small)
    with pytest.raises(ma.DesignError, match="grouping factor 'obs' has 180 levels for 180"):
        ma.lmm("Reaction ~ Days + (1|obs)", sleep.assign(obs=np.arange(180)))


def test_empty_data(sleep):
    with pytest.raises(ma.DesignError, match="data has no rows"):
        ma.lmm("Reaction ~ Days + (1|Subject)", sleep.iloc[:0])
    df = sleep.assign(Reaction=np.nan)
    with pytest.raises(ma.DesignError, match=r"no rows left after dropping rows with missing "
                                             r"values in 'Reaction' \(180 rows\)"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df)


def test_formula_without_random_term(sleep):
    with pytest.raises(ma.DesignError, match=r"has no random-effects term such as \(1 \| group\)"):
        ma.lmm("Reaction ~ Days", sleep)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (1|Subject", "Reaction ~ Days + 1|Subject",
                                     "Reaction ~ Days + (1||)"])
def test_unbalanced_parentheses_or_bars(sleep, formula):
    with pytest.raises(ma.FormulaError) as err:
        ma.lmm(formula, sleep)
    assert formula in str(err.value) and "^" in str(err.value)


def test_unseen_level_in_newdata(sleep):
    res = ma.lmm("Reaction ~ Days + (Days|Subject)", sleep)
    new = pd.DataFrame({"Days": [1.0, 2.0], "Subject": [308, 999]})
    with pytest.raises(ma.DesignError, match=r"level\(s\) '999' of grouping factor 'Subject' not "
                                             r"seen in the fit \(rows \[1\]\)"):
        res.predict(new)
    pred = res.predict(new, allow_new_levels=True)
    fixed = res.fe_params["Intercept"] + res.fe_params["Days"] * 2.0
    # R: predict(m, newdata, allow.new.levels = TRUE) gives the population value for new levels
    assert pred.iloc[1] == pytest.approx(fixed, rel=1e-12)


def test_rank_deficient_X_drops_named_column(sleep):
    df = sleep.assign(Days2=2 * sleep["Days"])
    with pytest.warns(ma.RankDeficiencyWarning, match="dropping 1 column: Days2"):
        res = ma.lmm("Reaction ~ Days + Days2 + (1|Subject)", df)
    ref = ma.lmm("Reaction ~ Days + (1|Subject)", sleep)
    assert list(res.fe_params.index) == ["Intercept", "Days"]
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-12)
    assert "dropped: Days2" in str(res.summary())


def test_bad_method(sleep):
    with pytest.raises(ValueError, match="method must be one of REML, ML, ANOVA"):
        ma.lmm("Reaction ~ Days + (1|Subject)", sleep, method="GLS")


def test_anova_refuses_random_slopes(sleep):
    with pytest.raises(ma.DesignError, match=r"random intercepts \(1 \| g\) only; \(Days\|Subject\)"):
        ma.lmm("Reaction ~ Days + (Days|Subject)", sleep, method="ANOVA")
