"""Bad input to residual structures gives the package's errors or warnings (issue 10)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma


def test_ties_in_the_order_column_name_the_group(trial_visits):
    df = trial_visits.copy()
    df.loc[1, "visit"] = df.loc[0, "visit"]  # pt01 gets visit 1 twice
    with pytest.raises(ma.DesignError, match=r"AR1: 'visit' has ties inside group 'pt01'"):
        ma.lmm("y ~ visit + (1|patient)", df, residual=ma.AR1(group="patient", order="visit"))
    with pytest.raises(ma.DesignError, match=r"CAR1: 'visit' has ties inside group 'pt01'"):
        ma.lmm("y ~ visit + (1|patient)", df, residual=ma.CAR1(group="patient", time="visit"))


def test_non_integer_order_points_to_car1(trial_visits):
    df = trial_visits.assign(t=trial_visits["visit"] + 0.5 * (trial_visits["visit"] % 2))
    with pytest.raises(ma.DesignError, match="integer positions.*CAR1"):
        ma.lmm("y ~ visit + (1|patient)", df, residual=ma.AR1(group="patient", order="t"))


def test_groups_of_one_observation(trial_visits):
    # every group a single row: nothing to estimate the correlation from
    df = trial_visits.assign(row=np.arange(len(trial_visits)).astype(str))
    with pytest.raises(ma.DesignError, match="every group of 'row' has one observation"):
        ma.lmm("y ~ visit + (1|patient)", df, residual=ma.AR1(group="row"))
    # some groups of one row are fine (they carry no correlation)
    keep = ~((trial_visits["patient"] == "pt01") & (trial_visits["visit"] > 1))
    res = ma.lmm("y ~ visit + (1|patient)", trial_visits[keep],
                 residual=ma.AR1(group="patient", order="visit"))
    assert 0 < res.residual_params["phi"] < 1


def test_phi_at_the_boundary_warns():
    rng = np.random.default_rng(1)
    ns, nt = 10, 8
    sub = np.repeat(np.arange(ns), nt)
    t = np.tile(np.arange(nt), ns)
    y = 5 * (-1.0) ** t + 0.01 * rng.normal(size=ns * nt) + rng.normal(size=ns)[sub]
    df = pd.DataFrame({"y": y, "s": sub.astype(str), "t": t})
    with pytest.warns(ma.ConvergenceWarning, match="phi = -0.99.*boundary"):
        ma.lmm("y ~ 1 + (1|s)", df, residual=ma.AR1(group="s", order="t"))


def test_varpower_covariate_zero_or_negative():
    df = ma.load_dataset("dose_response")  # dose 0 on some rows
    with pytest.raises(ma.DesignError, match=r"VarPower: covariate 'dose' is 0 in rows"):
        ma.lmm("y ~ dose + (1|subject)", df, residual=ma.VarPower("dose"))
    df = df.assign(centred=df["dose"] - 1.25)
    with pytest.warns(ma.ResidualWarning, match="negative values.*\\|v\\|\\^power"):
        ma.lmm("y ~ dose + (1|subject)", df, residual=ma.VarPower("centred"))


def test_specification_errors(trial_visits):
    f = "y ~ visit + (1|patient)"
    with pytest.raises(ma.DesignError, match="one correlation structure"):
        ma.lmm(f, trial_visits, residual=(ma.AR1("patient"), ma.CompSymm("patient")))
    with pytest.raises(ma.DesignError, match="one variance function"):
        ma.lmm(f, trial_visits, residual=(ma.VarIdent("arm"), ma.VarExp("visit")))
    with pytest.raises(ma.DesignError, match="residual= expects ma.AR1"):
        ma.lmm(f, trial_visits, residual="ar1")
    with pytest.raises(ma.DesignError, match=r"column 'visits' \(residual structure\)"):
        ma.lmm(f, trial_visits, residual=ma.AR1("patient", order="visits"))
    with pytest.raises(ma.DesignError, match="AR1 order column 'arm' must be numeric"):
        ma.lmm(f, trial_visits, residual=ma.AR1("patient", order="arm"))
    with pytest.raises(ma.DesignError, match="VarIdent: 'one' has one level"):
        ma.lmm(f, trial_visits.assign(one="x"), residual=ma.VarIdent("one"))
    with pytest.raises(ma.DesignError, match="reference level 'drug' is not a level of 'arm'"):
        ma.lmm(f, trial_visits, residual=ma.VarIdent("arm", reference="drug"))
    with pytest.raises(ma.DesignError, match="method='ANOVA'.*independent residuals"):
        ma.lmm(f, trial_visits, method="ANOVA", residual=ma.AR1("patient", order="visit"))


def test_residual_group_must_nest_in_some_random_factor():
    rng = np.random.default_rng(2)
    n_sub, n_item = 8, 12
    sub = np.repeat(np.arange(n_sub), n_item)
    item = np.tile(np.arange(n_item), n_sub)
    df = pd.DataFrame({"y": rng.normal(size=len(sub)), "subject": sub.astype(str),
                       "item": item.astype(str), "trial": item + 1})
    with pytest.raises(ma.DesignError, match="residual groups must lie inside the levels of "
                                             "at least one random-effects grouping factor"):
        ma.lmm("y ~ 1 + (1|item)", df, residual=ma.AR1(group="subject", order="trial"))


def test_missing_values_in_structure_columns_are_dropped(trial_visits):
    df = trial_visits.copy()
    df.loc[[3, 10], "visit"] = np.nan
    res = ma.lmm("y ~ visit * arm + (1|patient)", df,
                 residual=ma.AR1(group="patient", order="visit"))
    assert res.nobs == len(trial_visits) - 2 and res.n_dropped == 2


def test_refit_and_update_keep_the_structure(trial_visits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ma.lmm("y ~ visit + (1|patient)", trial_visits,
                     residual=ma.AR1(group="patient", order="visit"))
        again = res.model.refit(res.model.design.y)
        assert abs(again.llf - res.llf) < 1e-9
        smaller = res.model.update("y ~ 1 + (1|patient)").fit()
        assert list(smaller.residual_params.index) == ["phi"]


def test_wald_intervals_and_residual_intervals_with_and_without_a_structure(trial_visits):
    res = ma.lmm("y ~ visit * arm + (1|patient)", trial_visits,
                 residual=ma.AR1(group="patient", order="visit"))
    wald = res.conf_int(method="wald", parm="fixed")  # fixed effects: beta +- z SE
    assert np.all(wald["ci_low"] < wald["estimate"])
    plain = ma.lmm("y ~ visit * arm + (1|patient)", trial_visits)
    with pytest.raises(ValueError, match="no residual structure"):
        plain.residual_intervals()
    assert plain.residual_params.empty



def test_profile_zeta_tables_refused_with_a_residual_structure(trial_visits):
    # lme4's profile(m) has no residual structures (nlme's gls / lme have no
    # profile method): the package's error pointing to conf_int(method="profile"),
    # not a TypeError / IndexError from inside the profiler
    ar1 = ma.lmm("y ~ visit * arm + (1|patient)", trial_visits,
                 residual=ma.AR1(group="patient", order="visit"))
    marginal = ma.lmm("y ~ visit * arm", trial_visits,
                      residual=ma.Unstructured(group="patient", time="visit"))
    for res in (ar1, marginal):
        with pytest.raises(ma.MixedAnovaError, match="conf_int\\(method='profile'\\)"):
            res.profile()
