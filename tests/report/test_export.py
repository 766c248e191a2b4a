"""Results as plain data and back (issue 22): ``res.to_dict()``, ``res.to_json()`` and
``ma.read_results``; the numbers are the fit's own (lme4's are checked elsewhere)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

import mixedanova as ma


def test_json_round_trip_of_a_reml_fit(sleepstudy_fit, tmp_path):
    path = tmp_path / "fit.json"
    text = sleepstudy_fit.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text) == sleepstudy_fit.to_dict()
    saved = ma.read_results(path)
    assert saved.formula == sleepstudy_fit.design.formula.formula and saved.nobs == 180
    assert saved.criteria["REML"] == sleepstudy_fit.reml_criterion
    fixed = sleepstudy_fit.fixed()
    np.testing.assert_array_equal(saved.fixed["estimate"].to_numpy(),
                                  fixed["estimate"].to_numpy())
    assert list(saved.fixed.index) == list(fixed.index)
    np.testing.assert_array_equal(saved.varcomp["vcov"].to_numpy(),
                                  sleepstudy_fit.varcomp["vcov"].to_numpy())
    b = sleepstudy_fit.random_effects["Subject"]
    np.testing.assert_array_equal(saved.random_effects["Subject"].to_numpy(), b.to_numpy())
    # from JSON text and from the dict too
    assert ma.read_results(text).fixed.equals(saved.fixed)
    assert ma.read_results(sleepstudy_fit.to_dict()).fixed.equals(saved.fixed)


def test_anova_fit_keeps_its_ems_tables():
    aov = ma.lmm("yield ~ treat + (1|blend)", ma.load_dataset("bhh_penicillin"),
                 method="ANOVA")
    saved = ma.read_results(aov.to_json())
    assert {"ems_table", "moment_estimates"} <= set(saved.tables)
    assert isinstance(saved.tables["ems_table"], pd.DataFrame)
