"""predict(): conditional and population-level predictions, new data, new levels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _refdata import assert_close, fit_reference


def test_predict_on_fitted_rows_is_fitted():
    ref, res = fit_reference("sleepstudy_reml")
    # R: predict(m) == fitted(m)
    assert_close(res.predict().to_numpy()[:10], ref["fitted"], 1e-4, "predict(m)[1:10]")
    # R: predict(m, re.form = NA) == X %*% fixef(m)
    pop = res.predict(include_random=False).to_numpy()
    assert np.allclose(pop, res.design.X @ res.fe_params.to_numpy(), rtol=1e-12)


def test_predict_newdata_matches_fitted_rows():
    ref, res = fit_reference("sleepstudy_reml")
    df = ma.load_dataset("sleepstudy")
    new = df.iloc[[5, 0, 3]].drop(columns="Reaction")
    pred = res.predict(new)
    assert list(pred.index) == [5, 0, 3]
    assert np.allclose(pred.to_numpy(), res.fittedvalues.loc[[5, 0, 3]].to_numpy(), rtol=1e-12)


def test_predict_factor_levels_and_missing_rows():
    ref, res = fit_reference("ergostool_reml")
    new = pd.DataFrame({"Type": ["T3", "T1", None], "Subject": [2, 5, 1]})
    pred = res.predict(new)
    fe, re = res.fe_params, res.random_effects["Subject"]["(Intercept)"]
    assert pred.iloc[0] == pytest.approx(fe["Intercept"] + fe["Type[T.T3]"] + re["2"], rel=1e-12)
    assert pred.iloc[1] == pytest.approx(fe["Intercept"] + re["5"], rel=1e-12)
    assert np.isnan(pred.iloc[2])  # a missing predictor gives NaN, as predict(na.action = na.pass)


def test_population_prediction_needs_no_grouping_column():
    ref, res = fit_reference("sleepstudy_reml")
    pred = res.predict(pd.DataFrame({"Days": [0.0, 10.0]}), include_random=False)
    assert pred.iloc[1] == pytest.approx(res.fe_params["Intercept"] + 10 * res.fe_params["Days"])


def test_predict_missing_column():
    ref, res = fit_reference("sleepstudy_reml")
    with pytest.raises(ma.DesignError, match="newdata lacks column.*'Subject'"):
        res.predict(pd.DataFrame({"Days": [1.0]}))
