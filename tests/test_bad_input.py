"""Bad input gives an error that names the culprit (issue 2, DEVELOPERS.md)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma


def test_missing_column_is_named(sleepstudy):
    with pytest.raises(ma.DesignError, match=r"column 'Dayz' \(fixed effects\) is not in the "
                                             r"data; did you mean 'Days'"):
        ma.lmm("Reaction ~ Dayz + (1|Subject)", sleepstudy)
    with pytest.raises(ma.DesignError, match="column 'Subj'.*grouping factor"):
        ma.lmm("Reaction ~ Days + (1|Subj)", sleepstudy)


def test_non_numeric_response_is_named(sleepstudy):
    df = sleepstudy.assign(label=np.where(sleepstudy["Days"] > 4, "late", "early"))
    with pytest.raises(ma.DesignError, match="response 'label' is not numeric"):
        ma.lmm("label ~ Days + (1|Subject)", df)


def test_text_response_names_a_bad_value(sleepstudy):
    # issue 22: a response read as text names a value that is not a number (R's
    # lmer would say "invalid type (character)"), or says how to convert it
    df = sleepstudy.assign(Reaction=sleepstudy["Reaction"].astype(str))
    df.loc[5, "Reaction"] = "n/a"
    with pytest.raises(ma.DesignError, match=r"response 'Reaction' is not numeric .*row 5 "
                                             r"holds 'n/a', which is not a number"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df)
    df = sleepstudy.assign(Reaction=sleepstudy["Reaction"].astype(str))
    with pytest.raises(ma.DesignError, match=r"number written as text.*pd.to_numeric"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df)


def test_inf_in_response_is_named(sleepstudy):
    df = sleepstudy.copy()
    df.loc[7, "Reaction"] = np.inf
    with pytest.raises(ma.DesignError, match=r"column 'Reaction' has infinite values \(rows \[7\]\)"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df)


def test_nan_produced_by_a_transformation_is_named(sleepstudy):
    df = sleepstudy.copy()
    df.loc[3, "Reaction"] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's log of a negative
        with pytest.raises(ma.DesignError, match=r"response 'np.log\(Reaction\)' has non-finite "
                                                 r"values .* rows \[3\]"):
            ma.lmm("np.log(Reaction) ~ Days + (1|Subject)", df)


def test_missing_values_are_dropped_and_counted(sleepstudy):
    # lme4's na.omit: rows with NA in a used column are dropped and counted
    df = sleepstudy.copy()
    df.loc[[0, 5], "Reaction"] = np.nan
    df.loc[9, "Days"] = np.nan
    df["unused"] = np.nan
    res = ma.lmm("Reaction ~ Days + (1|Subject)", df)
    assert res.nobs == 177 and res.n_dropped == 3
    assert "3 observations deleted due to missing values" in str(res.summary())
    ref = ma.lmm("Reaction ~ Days + (1|Subject)", df.drop(index=[0, 5, 9]))
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-12)


def test_missing_values_can_be_refused(sleepstudy):
    df = sleepstudy.copy()
    df.loc[4, "Reaction"] = np.nan
    with pytest.raises(ma.DesignError, match=r"missing values in 'Reaction' \(1 rows\)"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df, missing="raise")


def test_grouping_factor_with_one_level(sleepstudy):
    df = sleepstudy.assign(site="A")
    with pytest.raises(ma.DesignError, match=r"grouping factor 'site' of \(1\|site\) has only one "
                                             r"level \('A'\)"):
        ma.lmm("Reaction ~ Days + (1|Subject) + (1|site)", df)


def test_more_random_effects_than_observations(sleepstudy):
    small = sleepstudy[sleepstudy["Days"] < 2]  # 36 rows, 18 subjects: 2 x 18 = 36 effects
    with pytest.raises(ma.DesignError, match=r"random term \(Days\|Subject\) has 36 random "
                                             r"effects \(18 levels x 2\) for 36 observations"):
        ma.lmm("Reaction ~ Days + (Days|Subject)", small)
    with pytest.raises(ma.DesignError, match="grouping factor 'obs' has 180 levels for 180"):
        ma.lmm("Reaction ~ Days + (1|obs)", sleepstudy.assign(obs=np.arange(180)))


def test_empty_data(sleepstudy):
    with pytest.raises(ma.DesignError, match="data has no rows"):
        ma.lmm("Reaction ~ Days + (1|Subject)", sleepstudy.iloc[:0])
    df = sleepstudy.assign(Reaction=np.nan)
    with pytest.raises(ma.DesignError, match=r"no rows left after dropping rows with missing "
                                             r"values in 'Reaction' \(180 rows\)"):
        ma.lmm("Reaction ~ Days + (1|Subject)", df)


def test_formula_without_random_term(sleepstudy):
    with pytest.raises(ma.DesignError, match=r"has no random-effects term such as \(1 \| group\)"):
        ma.lmm("Reaction ~ Days", sleepstudy)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (1|Subject", "Reaction ~ Days + 1|Subject",
                                     "Reaction ~ Days + (1||)"])
def test_unbalanced_parentheses_or_bars(sleepstudy, formula):
    with pytest.raises(ma.FormulaError) as err:
        ma.lmm(formula, sleepstudy)
    assert formula in str(err.value) and "^" in str(err.value)


def test_unseen_level_in_newdata(sleepstudy):
    res = ma.lmm("Reaction ~ Days + (Days|Subject)", sleepstudy)
    new = pd.DataFrame({"Days": [1.0, 2.0], "Subject": [308, 999]})
    with pytest.raises(ma.DesignError, match=r"level\(s\) '999' of grouping factor 'Subject' not "
                                             r"seen in the fit \(rows \[1\]\)"):
        res.predict(new)
    pred = res.predict(new, allow_new_levels=True)
    fixed = res.fe_params["Intercept"] + res.fe_params["Days"] * 2.0
    # R: predict(m, newdata, allow.new.levels = TRUE) gives the population value for new levels
    assert pred.iloc[1] == pytest.approx(fixed, rel=1e-12)


def test_rank_deficient_X_drops_named_column(sleepstudy):
    df = sleepstudy.assign(Days2=2 * sleepstudy["Days"])
    with pytest.warns(ma.RankDeficiencyWarning, match="dropping 1 column: Days2"):
        res = ma.lmm("Reaction ~ Days + Days2 + (1|Subject)", df)
    ref = ma.lmm("Reaction ~ Days + (1|Subject)", sleepstudy)
    assert list(res.fe_params.index) == ["Intercept", "Days"]
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-12)
    assert "dropped: Days2" in str(res.summary())


def test_bad_method(sleepstudy):
    with pytest.raises(ValueError, match="method must be one of REML, ML, ANOVA"):
        ma.lmm("Reaction ~ Days + (1|Subject)", sleepstudy, method="GLS")


def test_anova_refuses_random_slopes(sleepstudy):
    with pytest.raises(ma.DesignError, match=r"random intercepts \(1 \| g\) only; \(Days\|Subject\)"):
        ma.lmm("Reaction ~ Days + (Days|Subject)", sleepstudy, method="ANOVA")


# ---------------------------------------------------------------------------
# Issue 9: a table of bad inputs.  Each case is (id, call, error class, pattern):
# the call must raise exactly the package's error of that class (a foreign
# exception from numpy, pandas, scipy or formulaic fails the test) and the
# message must match the pattern, which names the column, term, level or
# argument at fault.
# ---------------------------------------------------------------------------
from functools import cache

_F = "Reaction ~ Days + (1|Subject)"


@cache
def _sleep() -> pd.DataFrame:
    return ma.load_dataset("sleepstudy")


@cache
def _fit():
    return ma.lmm(_F, _sleep())


@cache
def _fit_ml():
    return ma.lmm(_F, _sleep(), method="ML")


@cache
def _pen():
    return ma.load_dataset("bhh_penicillin")


@cache
def _fit_pen():
    return ma.lmm("yield ~ treat + (1|blend)", _pen())


@cache
def _fit_anova():
    return ma.lmm("yield ~ treat + (1|blend)", _pen(), method="ANOVA")


@cache
def _fit_cdays():
    return ma.lmm("Reaction ~ C(Days) + (1|Subject)", _sleep())


def _lmm(formula=_F, data=None, **kw):
    return lambda: ma.lmm(formula, _sleep() if data is None else data, **kw)


def _with(**cols):
    return lambda: _sleep().assign(**cols)


def _dup_column(name):
    s = _sleep()
    return pd.concat([s, s[[name]] * (10 if name == "Days" else 1)], axis=1)


def _look_alike_groups():
    s = _sleep().copy()
    g = pd.Series(["1"] * len(s), dtype=object, index=s.index)
    g.iloc[::2] = 1
    g.iloc[:60] = "2"
    return s.assign(g=g)


def _cplx():
    return _sleep().assign(Reaction=_sleep()["Reaction"] + 1j)


def _new(**cols):
    return pd.DataFrame(cols)


BAD_INPUTS = [
    # --- data (DesignError) -------------------------------------------------
    ("missing fixed column", _lmm("Reaction ~ Dayz + (1|Subject)"), ma.DesignError,
     r"column 'Dayz' \(fixed effects\)"),
    ("missing grouping column", _lmm("Reaction ~ Days + (1|Subj)"), ma.DesignError,
     r"column 'Subj' \(grouping factor"),
    ("missing response column", _lmm("Reactio ~ Days + (1|Subject)"), ma.DesignError,
     r"column 'Reactio' \(response\).*did you mean 'Reaction'"),
    ("missing random-slope column", _lmm("Reaction ~ Days + (Dayz|Subject)"), ma.DesignError,
     r"column 'Dayz' \(random term \(Dayz\|Subject\)\)"),
    ("missing part of an interaction group", _lmm("Reaction ~ Days + (1|Subject:site)"),
     ma.DesignError, r"column 'site' \(grouping factor of \(1\|Subject:site\)\)"),
    ("missing dotted backticked response", lambda: ma.lmm(
        "`y.vax` ~ `x.val` + (1|Subject)",
        _sleep().rename(columns={"Reaction": "y.val", "Days": "x.val"})),
     ma.DesignError, r"column 'y.vax' \(response\)"),
    ("missing dotted plain predictor", lambda: ma.lmm(
        "y.val ~ x.vax + (1|Subject)",
        _sleep().rename(columns={"Reaction": "y.val", "Days": "x.val"})),
     ma.DesignError, r"column 'x.vax' \(fixed effects\)"),
    ("missing backticked group", _lmm("Reaction ~ Days + (1|`my g`)"), ma.DesignError,
     r"column 'my g' \(grouping factor"),
    ("missing Q() group", _lmm("Reaction ~ Days + (1|Q('my g'))"), ma.DesignError,
     r"column 'my g' \(grouping factor"),
    ("missing unicode group", _lmm("Reaction ~ Days + (1|grüppe)"), ma.DesignError,
     r"column 'grüppe' \(grouping factor"),
    ("non-numeric response", lambda: ma.lmm(
        "label ~ Days + (1|Subject)", _sleep().assign(label="x")),
     ma.DesignError, r"response 'label' is not numeric"),
    ("complex response", lambda: ma.lmm(_F, _cplx()), ma.DesignError,
     r"column 'Reaction' is complex"),
    ("complex predictor", lambda: ma.lmm(_F, _sleep().assign(Days=_sleep()["Days"] * 1j)),
     ma.DesignError, r"column 'Days' is complex"),
    ("duplicated predictor column", lambda: ma.lmm(_F, _dup_column("Days")), ma.DesignError,
     r"column 'Days' appears 2 times"),
    ("duplicated grouping column", lambda: ma.lmm(_F, _dup_column("Subject")),
     ma.DesignError, r"column 'Subject' appears 2 times"),
    ("grouping values 1 and '1'", lambda: ma.lmm("Reaction ~ Days + (1|g)",
                                                  _look_alike_groups()),
     ma.DesignError, r"grouping factor 'g' mixes values that print alike: 1 \(int\) and '1' \(str\)"),
    ("durations as a predictor", lambda: ma.lmm(
        "Reaction ~ d + (1|Subject)",
        _sleep().assign(d=pd.to_timedelta(_sleep()["Days"], unit="D"))),
     ma.DesignError, r"column 'd' holds dates or durations \(dtype timedelta64"),
    ("fixed values 1 and '1'", lambda: ma.lmm(
        "Reaction ~ m + (1|Subject)",
        _sleep().assign(m=pd.Series([1 if i % 2 else "1" for i in range(180)], dtype=object))),
     ma.DesignError, r"column 'm' mixes values that print alike: '1' \(str\) and 1 \(int\)"),
    ("interaction labels that collide", lambda: ma.lmm(
        "Reaction ~ Days + (1|a:b)", _sleep().assign(
            a=np.where(_sleep().index < 90, "x:y", "x"),
            b=np.where(_sleep().index < 90, "z", "y:z"))),
     ma.DesignError, r"grouping factor 'a:b' of \(1\|a:b\) has two different levels both "
                     r"labelled 'x:y:z'"),
    ("infinite predictor", lambda: ma.lmm(_F, _sleep().assign(
        Days=np.where(_sleep()["Days"] == 3, np.inf, _sleep()["Days"]))),
     ma.DesignError, r"column 'Days' has infinite values"),
    ("more fixed effects than rows", lambda: ma.lmm(
        "Reaction ~ C(Days) * C(Subject) + (1|Subject)",
        _sleep()[_sleep()["Subject"].isin([308, 309])]),
     ma.DesignError, r"fixed effects 'C\(Days\) \* C\(Subject\)' have 20 independent "
                     r"columns for 20 observations"),
    ("grouping factor with one level", lambda: ma.lmm(
        "Reaction ~ Days + (1|Subject) + (1|site)", _sleep().assign(site="A")),
     ma.DesignError, r"grouping factor 'site'.*only one level"),
    ("as many levels as rows", lambda: ma.lmm(
        "Reaction ~ Days + (1|obs)", _sleep().assign(obs=np.arange(180))),
     ma.DesignError, r"grouping factor 'obs' has 180 levels"),
    ("data is not a DataFrame", lambda: ma.lmm(_F, {"Reaction": [1.0]}), ma.DesignError,
     r"data must be a pandas DataFrame, not dict"),
    ("data has no rows", lambda: ma.lmm(_F, _sleep().iloc[:0]), ma.DesignError,
     r"data has no rows"),
    ("missing= bogus", _lmm(missing="bogus"), ma.DesignError, r"missing must be 'drop' or "
                                                               r"'raise', not 'bogus'"),
    ("response all missing", lambda: ma.lmm(_F, _sleep().assign(Reaction=np.nan)),
     ma.DesignError, r"missing values in 'Reaction' \(180 rows\)"),
    ("no random term", _lmm("Reaction ~ Days"), ma.DesignError,
     r"'Reaction ~ Days' has no random-effects term"),
    ("ANOVA with random slopes", _lmm("Reaction ~ Days + (Days|Subject)", method="ANOVA"),
     ma.DesignError, r"\(Days\|Subject\) has columns \(Intercept\), Days"),
    # --- formulas (FormulaError) --------------------------------------------
    ("formula is not a string", lambda: ma.lmm(123, _sleep()), ma.FormulaError,
     r"formula must be a string, not int"),
    ("formula without ~", _lmm("Reaction Days + (1|Subject)"), ma.FormulaError,
     r"no '~'"),
    ("formula with two ~", _lmm("Reaction ~ Days ~ (1|Subject)"), ma.FormulaError,
     r"more than one '~'"),
    ("formula without response", _lmm("~ Days + (1|Subject)"), ma.FormulaError,
     r"no response left of '~'"),
    ("nothing right of ~", _lmm("Reaction ~ "), ma.FormulaError, r"nothing right of '~'"),
    ("unclosed parenthesis", _lmm("Reaction ~ Days + (1|Subject"), ma.FormulaError,
     r"'\(' is never closed"),
    ("stray closing parenthesis", _lmm("Reaction ~ Days) + (1|Subject)"), ma.FormulaError,
     r"'\)' without '\('"),
    ("bar outside parentheses", _lmm("Reaction ~ Days + 1|Subject"), ma.FormulaError,
     r"must be in parentheses"),
    ("nothing left of the bar", _lmm("Reaction ~ Days + ( |Subject)"), ma.FormulaError,
     r"nothing left of '\|'"),
    ("nothing right of the bar", _lmm("Reaction ~ Days + (1| )"), ma.FormulaError,
     r"no grouping factor right of '\|'"),
    ("too many bars", _lmm("Reaction ~ Days + (1|Subject|Days)"), ma.FormulaError,
     r"too many '\|'"),
    ("subtracted random term", _lmm("Reaction ~ Days - (1|Subject)"), ma.FormulaError,
     r"cannot be subtracted"),
    ("grouping by an expression", _lmm("Reaction ~ Days + (1|log(Subject))"),
     ma.FormulaError, r"grouping factor must be a variable.*\n.*\(1\|log\(Subject\)\)"),
    ("fixed-part syntax error", _lmm("Reaction ~ Days +* 2 + (1|Subject)"), ma.FormulaError,
     r"cannot parse '.*Days.*'"),
    ("random-part syntax error", _lmm("Reaction ~ Days + (Days ** |Subject)"),
     ma.FormulaError, r"cannot parse 'Days \*\*'"),
    ("unterminated backtick", _lmm("Reaction ~ `Days + (1|Subject)"), ma.FormulaError,
     r"unterminated backtick"),
    ("minus inside ||", _lmm("Reaction ~ Days + (Days - x || Subject)"),
     ma.FormulaError, r"'-' terms are not supported inside \(x \|\| g\)"),
    # --- fit arguments (FitError / ArgumentError) ---------------------------
    ("unknown method", _lmm(method="GLS"), ma.FitError, r"method must be one of REML, ML, "
                                                         r"ANOVA, not 'GLS'"),
    ("method not a string", _lmm(method=3), ma.FitError, r"method must be one of .* not 3"),
    ("unknown optimizer", _lmm(optimizer="bogus"), ma.FitError,
     r"optimizer must be one of .* not 'bogus'"),
    ("start of the wrong length", _lmm(start=[1.0, 2.0, 3.0]), ma.FitError,
     r"start has 3 values .*theta has 1 element \(Subject.\(Intercept\)\)"),
    ("start not numeric", _lmm(start="abc"), ma.FitError, r"start must be 1 number.*'abc'"),
    ("start as a matrix", _lmm(start=[[1.0], [1.0]]), ma.FitError, r"start has 2 values "
                                                                   r"\(shape \(2, 1\)\)"),
    ("start with ANOVA", lambda: ma.lmm("yield ~ treat + (1|blend)", _pen(), method="ANOVA",
                                        start=[1.0]), ma.FitError,
     r"start .* does not apply to method='ANOVA'"),
    ("ems with REML", _lmm(ems="restricted"), ma.FitError,
     r"ems='restricted' applies to method='ANOVA' only"),
    ("anova_method with REML", _lmm(anova_method="method3"), ma.FitError,
     r"anova_method='method3' applies to method='ANOVA' only"),
    ("unknown ems", lambda: ma.lmm("yield ~ treat + (1|blend)", _pen(), method="ANOVA",
                                   ems="sas"), ma.FitError, r"ems must be one of .*'sas'"),
    ("unknown anova_method", lambda: ma.lmm("yield ~ treat + (1|blend)", _pen(),
                                            method="ANOVA", anova_method="x"),
     ma.FitError, r"anova_method must be one of .*'x'"),
    ("warn not a bool", _lmm(warn="yes"), ma.FitError, r"warn must be True or False"),
    ("unknown keyword", _lmm(bogus=1), ma.ArgumentError,
     r"unknown keyword argument\(s\) 'bogus'"),
    ("refit y of the wrong length", lambda: _fit().model.refit(np.ones(5)), ma.FitError,
     r"y must have 180 values"),
    ("refit unknown keyword", lambda: _fit().model.refit(None, "REML", nboot=3),
     ma.ArgumentError, r"refit\(\) got unknown keyword argument\(s\) 'nboot'"),
    # --- predict ------------------------------------------------------------
    ("predict a dict", lambda: _fit().predict({"Days": [1], "Subject": [308]}),
     ma.DesignError, r"newdata must be a pandas DataFrame, not dict"),
    ("predict unseen fixed level", lambda: _fit_pen().predict(
        _new(treat=["A", "Z"], blend=["B1", "B2"])), ma.DesignError,
     r"level\(s\) 'Z' of fixed effects factor 'treat' not seen in the fit \(rows \[1\]\)"),
    ("predict unseen fixed level, allow_new_levels", lambda: _fit_pen().predict(
        _new(treat=["Z"], blend=["B1"]), allow_new_levels=True), ma.DesignError,
     r"level\(s\) 'Z' of fixed effects factor 'treat'"),
    ("predict unseen level of C(Days)", lambda: _fit_cdays().predict(
        _new(Days=[12], Subject=[308])), ma.DesignError,
     r"level\(s\) 12 of fixed effects factor 'Days'"),
    ("predict text in a numeric column", lambda: _fit().predict(
        _new(Days=["a"], Subject=[308])), ma.DesignError,
     r"newdata column 'Days' \(fixed effects\) is not numeric"),
    ("predict complex values", lambda: _fit().predict(_new(Days=[1j], Subject=[308])),
     ma.DesignError, r"newdata column 'Days' is complex"),
    ("predict booleans for a number", lambda: _fit().predict(
        _new(Days=[True], Subject=[308])), ma.DesignError,
     r"newdata column 'Days' \(fixed effects\) is not numeric \(dtype bool"),
    ("predict without a column", lambda: _fit().predict(_new(Subject=[308])),
     ma.DesignError, r"newdata lacks column\(s\) 'Days'"),
    ("predict unseen group level", lambda: _fit().predict(_new(Days=[1], Subject=[999])),
     ma.DesignError, r"level\(s\) '999' of grouping factor 'Subject'"),
    ("predict include_random not a bool", lambda: _fit().predict(include_random="no"),
     ma.ArgumentError, r"include_random must be True or False"),
    # --- contrasts ----------------------------------------------------------
    ("contrast of zeros", lambda: _fit().contrast([0, 0]), ma.ArgumentError,
     r"L row\(s\) 'contrast' are all zeros"),
    ("contrast matrix of zeros", lambda: _fit().contrast([[0, 0], [0, 0]]),
     ma.ArgumentError, r"L row\(s\) 'row1', 'row2' are all zeros"),
    ("contrast 3-D", lambda: _fit().contrast(np.zeros((2, 2, 2))), ma.ArgumentError,
     r"L must be a vector or a matrix, not an array of shape \(2, 2, 2\)"),
    ("contrast of the wrong length", lambda: _fit().contrast([1, 0, 0]), ma.ArgumentError,
     r"L has 3 columns; expected 2 \(the fitted coefficients 'Intercept', 'Days'\)"),
    ("contrast of strings", lambda: _fit().contrast(["a", "b"]), ma.ArgumentError,
     r"L must be real numbers"),
    ("contrast with NaN", lambda: _fit().contrast([np.nan, 1]), ma.ArgumentError,
     r"L has non-finite values"),
    ("empty contrast", lambda: _fit().contrast([]), ma.ArgumentError, r"L is empty"),
    ("contrast of an unknown coefficient", lambda: _fit().contrast({"Dayz": 1}),
     ma.UnknownNameError, r"unknown coefficient\(s\) 'Dayz'"),
    ("contrast rhs of the wrong length", lambda: _fit().contrast([[1, 0], [0, 1]],
                                                                 rhs=[1, 2, 3]),
     ma.ArgumentError, r"rhs must be one finite number or 2"),
    ("contrast not estimable", lambda: ma.lmm(
        "Reaction ~ Days + Days2 + (1|Subject)",
        _sleep().assign(Days2=2 * _sleep()["Days"])).contrast([0, 0, 1]),
     ma.EstimabilityError, r"contrast row\(s\) \['contrast'\] are not estimable.*"
                           r"dropped: Days2"),
    ("contrast unknown ddf", lambda: _fit().contrast([0, 1], ddf="bogus"), ma.ArgumentError,
     r"ddf must be one of .*'bogus'"),
    ("contrast level out of range", lambda: _fit().contrast([0, 1], level=1.5),
     ma.ArgumentError, r"level must be a number in \(0, 1\).*1.5"),
    ("contrast Kenward-Roger on an ML fit", lambda: _fit_ml().contrast([0, 1], ddf="kr"),
     ma.ArgumentError, r"Kenward-Roger's method is only available for REML"),
    # --- anova and fixed ----------------------------------------------------
    ("anova type 4", lambda: _fit().anova(type=4), ma.ArgumentError,
     r"type must be 1, 2 or 3 .*not 4"),
    ("anova unknown ddf", lambda: _fit().anova(ddf="x"), ma.ArgumentError,
     r"ddf must be one of"),
    ("fixed level 0", lambda: _fit().fixed(level=0), ma.ArgumentError,
     r"level must be a number in \(0, 1\)"),
    ("fixed Satterthwaite on an ANOVA fit", lambda: _fit_anova().fixed(), ma.ArgumentError,
     r"Satterthwaite df need a REML or ML fit"),
    ("fixed ddf not a string", lambda: _fit().fixed(ddf=None), ma.ArgumentError,
     r"ddf must be one of .*None"),
    # --- conf_int -----------------------------------------------------------
    ("conf_int unknown method", lambda: _fit().conf_int(method="bogus"), ma.ArgumentError,
     r"method must be 'wald', 'profile' or 'boot', not 'bogus'"),
    ("conf_int n_boot=0", lambda: _fit().conf_int(method="boot", n_boot=0),
     ma.ArgumentError, r"n_boot must be an integer of at least 2.*not 0"),
    ("conf_int n_boot not an integer", lambda: _fit().conf_int(method="boot", n_boot=2.5),
     ma.ArgumentError, r"n_boot must be an integer"),
    ("conf_int bad seed", lambda: _fit().conf_int(method="boot", n_boot=5, seed="x"),
     ma.ArgumentError, r"seed must be None, a non-negative integer"),
    ("conf_int unknown parm", lambda: _fit().conf_int(parm="nope"), ma.UnknownNameError,
     r"parm names unknown parameter 'nope'"),
    ("conf_int unknown keyword", lambda: _fit().conf_int(nboot=10), ma.ArgumentError,
     r"conf_int\(\) got unknown keyword argument\(s\) 'nboot'"),
    ("conf_int level 95", lambda: _fit().conf_int(level=95), ma.ArgumentError,
     r"level must be a number in \(0, 1\).*95"),
    ("conf_int unknown criterion", lambda: _fit().conf_int(method="profile",
                                                           criterion="GLS"),
     ma.ArgumentError, r"criterion must be 'ML' or 'REML', not 'GLS'"),
    ("conf_int profile of an ANOVA fit", lambda: _fit_anova().conf_int(method="profile"),
     ma.ArgumentError, r"method='profile' needs a REML or ML fit"),
    # --- compare, ranova ----------------------------------------------------
    ("compare one model", lambda: ma.compare(_fit()), ma.ArgumentError,
     r"compare\(\) needs at least two models"),
    ("compare a non-model", lambda: ma.compare(_fit(), "m1"), ma.ArgumentError,
     r"argument\(s\) \[2\] are str"),
    ("compare different rows", lambda: ma.compare(_fit(), ma.lmm(_F, _sleep().iloc[:170])),
     ma.DesignError, r"different numbers of observations \(\[170, 180\]\)"),
    ("compare an ANOVA fit", lambda: ma.compare(_fit_pen(), _fit_anova()), ma.ArgumentError,
     r"model2 is method='ANOVA'"),
    ("compare names of the wrong length", lambda: ma.compare(_fit(), _fit_ml(),
                                                             names=["a"]),
     ma.ArgumentError, r"names has 1 labels for 2 models"),
    ("compare refit not a bool", lambda: ma.compare(_fit(), _fit_ml(), refit="yes"),
     ma.ArgumentError, r"refit must be None, True or False"),
    ("ranova of an ANOVA fit", lambda: _fit_anova().ranova(), ma.ArgumentError,
     r"ranova\(\) needs a REML or ML fit"),
    # --- names --------------------------------------------------------------
    ("unknown group in random_effects", lambda: _fit().random_effects["Subjekt"],
     ma.UnknownNameError, r"no grouping factor 'Subjekt'; the grouping factors are "
                          r"'Subject'"),
    ("varcomp_ci unknown component", lambda: _fit_anova().varcomp_ci("s2_nope + s2_e"),
     ma.UnknownNameError, r"unknown variance component 's2_nope'"),
    ("varcomp_ci level", lambda: _fit_anova().varcomp_ci("s2_blend + s2_e", level=2),
     ma.ArgumentError, r"level must be a number in \(0, 1\)"),
    ("varcomp_ci combination of the wrong type", lambda: _fit_anova().varcomp_ci(3),
     ma.ArgumentError, r"combination must be a string .* not int"),
    ("varcomp_ci unparsable combination", lambda: _fit_anova().varcomp_ci("s2_blend + +"),
     ma.ArgumentError, r"cannot parse the combination 's2_blend \+ \+'"),
    ("oneway text response", lambda: ma.oneway(["a", "b", "c", "d"], [1, 1, 2, 2]),
     ma.DesignError, r"y must be numbers; it has values such as \['a', 'b', 'c'\]"),
    ("ems_rules of names", lambda: ma.ems_rules(["A"]), ma.ArgumentError,
     r"factors must be Factor objects .*not 'A'"),
    ("Factor with text levels", lambda: ma.Factor("A", "x"), ma.DesignError,
     r"factor 'A': levels must be a positive integer, not 'x'"),
    ("oneway of a matrix", lambda: ma.oneway(np.ones((2, 2)), ["a", "a", "b", "b"]),
     ma.DesignError, r"y and group must be one-dimensional .* shape \(2, 2\)"),
    ("moments_from_mean_squares without a table",
     lambda: ma.moments_from_mean_squares(None), ma.ArgumentError,
     r"ems_table must be the DataFrame of ma.ems_rules\(\)"),
    ("varcomp_ci of nothing", lambda: _fit_anova().varcomp_ci({}), ma.ArgumentError,
     r"the combination \{\} gives every component weight 0"),
    ("Python keyword inside an expression", lambda: ma.lmm(
        "np.log(yield) ~ treat + (1|blend)", _pen()), ma.FormulaError,
     r"'yield' is a Python keyword"),
    ("unknown data set", lambda: ma.load_dataset("nope"), ma.UnknownNameError,
     r"unknown dataset 'nope'"),
]


@pytest.mark.parametrize("call, error, pattern", [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_table(call, error, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=pattern) as info:
            call()
    # the package's own error, which is also a ValueError
    assert isinstance(info.value, ma.MixedAnovaError) and isinstance(info.value, ValueError)


def test_the_table_is_large_enough():
    assert len(BAD_INPUTS) >= 60
    assert len({c[0] for c in BAD_INPUTS}) == len(BAD_INPUTS)


# ---------------------------------------------------------------------------
# Issue 9: unusual but valid inputs give the right numbers
# ---------------------------------------------------------------------------
def _ref_criterion():
    return ma.lmm(_F, _sleep()).reml_criterion


@pytest.mark.parametrize("formula, columns", [
    ("`y.val` ~ `x.val` + (1|Subject)", {"Reaction": "y.val", "Days": "x.val"}),
    ("y.val ~ x.val + (1|Subject)", {"Reaction": "y.val", "Days": "x.val"}),
    ("Q('my y') ~ Q('my x') + (1|Q('my g'))",
     {"Reaction": "my y", "Days": "my x", "Subject": "my g"}),
    ("`my y` ~ `my x` + (`my x`|`my g`)",
     {"Reaction": "my y", "Days": "my x", "Subject": "my g"}),
    ("Reaction ~ Days + (1|grüppe)", {"Subject": "grüppe"}),
    ("np.log(`y.val`) ~ Days + (1|Subject)", {"Reaction": "y.val"}),
])
def test_quoted_dotted_and_unicode_names_fit(formula, columns):
    data = _sleep().rename(columns=columns)
    res = ma.lmm(formula, data)
    plain = {v: k for k, v in columns.items()}
    ref_formula = formula
    for new, old in sorted(plain.items(), key=lambda kv: -len(kv[0])):
        for quoted in (f"Q('{new}')", f"`{new}`", new):
            ref_formula = ref_formula.replace(quoted, old)
    ref = ma.lmm(ref_formula, _sleep())
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-10)
    groups = [g for g in res.ngroups]
    assert groups == [columns.get("Subject", "Subject")]


def test_dotted_names_keep_their_coefficient_names():
    data = _sleep().rename(columns={"Reaction": "y.val", "Days": "x.val"})
    res = ma.lmm("`y.val` ~ `x.val` + (1|Subject)", data)
    assert list(res.fe_params.index) == ["Intercept", "x.val"]


def test_pandas_string_dtype_factor_is_a_factor():
    s = _sleep()
    lab = np.where(s["Days"] > 4, "late", "early")
    res = ma.lmm("Reaction ~ f + (1|Subject)", s.assign(f=pd.array(lab, dtype="string")))
    ref = ma.lmm("Reaction ~ f + (1|Subject)", s.assign(f=pd.Series(lab, dtype=object)))
    assert list(res.fe_params.index) == ["Intercept", "f[T.late]"]
    np.testing.assert_allclose(res.fe_params, ref.fe_params, rtol=1e-12)
    new = pd.DataFrame({"f": pd.array(["late", "early"], dtype="string"), "Subject": [308, 309]})
    np.testing.assert_allclose(res.predict(new), ref.predict(new.astype({"f": object})),
                               rtol=1e-12)


def test_nested_groups_use_lme4_names_and_accept_either_spelling():
    # lme4: VarCorr(lmer(strength ~ 1 + (1|batch/cask), Pastes)) has groups
    # "cask:batch" and "batch"; rownames(ranef(m)$`cask:batch`) are "a:A", ...
    pastes = ma.load_dataset("pastes")
    res = ma.lmm("strength ~ 1 + (1|batch/cask)", pastes)
    ref = ma.lmm("strength ~ 1 + (1|batch) + (1|cask:batch)", pastes)
    assert list(res.varcomp["group"]) == ["cask:batch", "batch", "Residual"]
    assert list(res.random_effects) == ["cask:batch", "batch"]
    assert res.random_effects["cask:batch"].index[:2].tolist() == ["a:A", "a:B"]
    pd.testing.assert_frame_equal(res.random_effects["batch:cask"],
                                  res.random_effects["cask:batch"])
    np.testing.assert_allclose(res.random_effects["cask:batch"].to_numpy(),
                               ref.random_effects["cask:batch"].to_numpy(), rtol=1e-6)
    assert res.theta_names == ("cask:batch.(Intercept)", "batch.(Intercept)")
    ci = res.conf_int(parm="sd_(Intercept)|batch:cask")
    assert list(ci.index) == ["sd_(Intercept)|cask:batch"]
    aov = ma.lmm("strength ~ 1 + (1|batch/cask)", pastes, method="ANOVA")
    a = aov.varcomp_ci("s2_batch:cask + s2_e")
    b = aov.varcomp_ci("s2_cask:batch + s2_e")
    assert a.estimate == b.estimate and a.lower == b.lower


def test_predict_accepts_numbers_held_as_objects():
    new = _new(Days=pd.Series([1.0, 4], dtype=object), Subject=[308, 309])
    ref = _new(Days=[1.0, 4.0], Subject=[308, 309])
    np.testing.assert_allclose(_fit().predict(new), _fit().predict(ref), rtol=1e-14)


def test_predict_still_allows_new_group_levels():
    new = _new(Days=[2.0], Subject=[999])
    pred = _fit().predict(new, allow_new_levels=True)
    fe = _fit().fe_params
    # R: predict(m, newdata, allow.new.levels = TRUE)
    assert pred.iloc[0] == pytest.approx(fe["Intercept"] + 2.0 * fe["Days"], rel=1e-12)


def test_anova_tables_concatenate():
    a = _fit().anova()
    b = _fit_ml().anova()
    both = pd.concat([a, b])
    assert len(both) == 2
    for table in (a, b, _fit().fixed(), _fit().conf_int(), ma.compare(_fit(), _fit_ml())):
        assert all(v is None or isinstance(v, (str, int, float, bool, np.number))
                   for v in table.attrs.values()), table.attrs
    assert set(a.hypotheses) == {"Days"}
    boot = _fit().conf_int(method="boot", n_boot=3, seed=np.random.default_rng(1))
    assert boot.attrs["seed"] == "Generator" and boot.attrs["n_boot"] == 3


def test_warnings_point_at_the_callers_line():
    df = _sleep().assign(Days2=2 * _sleep()["Days"])
    with pytest.warns(ma.RankDeficiencyWarning) as rec:
        ma.lmm("Reaction ~ Days + Days2 + (1|Subject)", df)
    assert rec[0].filename == __file__
    with pytest.warns(ma.SingularFitWarning) as rec:
        ma.lmm("Yield ~ 1 + (1|Batch)", ma.load_dataset("dyestuff2"))
    assert rec[0].filename == __file__
    with pytest.warns(ma.SingularFitWarning) as rec:
        ma.LinearMixedModel.from_formula("Yield ~ 1 + (1|Batch)",
                                         ma.load_dataset("dyestuff2")).fit()
    assert rec[0].filename == __file__


def test_reml_false_points_to_method_ml():
    # lme4 users type lmer(..., REML = FALSE); the package's spelling is method="ML"
    import mixedanova as ma
    with pytest.raises(ma.ArgumentError, match="method='ML'"):
        ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"), REML=False)
