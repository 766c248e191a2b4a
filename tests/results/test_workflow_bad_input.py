"""Bad arguments to the workflow methods: the package's own errors, naming the culprit."""
from __future__ import annotations

import pandas as pd
import pytest

import mixedanova as ma


def test_residual_type(sleepstudy_fit):
    with pytest.raises(ma.MixedAnovaError, match="type must be one of response, pearson"):
        sleepstudy_fit.residuals("deviance")


def test_influence_groups(sleepstudy_fit):
    with pytest.raises(ma.DesignError, match="groups='Subj' is not a column"):
        sleepstudy_fit.influence(groups="Subj")


def test_prediction_newdata(sleepstudy_fit):
    with pytest.raises(ma.DesignError, match="newdata must be a pandas DataFrame"):
        sleepstudy_fit.get_prediction({"Days": [1]})
    with pytest.raises(ma.DesignError, match="newdata lacks column.*'Days'"):
        sleepstudy_fit.get_prediction(pd.DataFrame({"Subject": [308]}))


def test_offset_column_needed_in_newdata():
    res = ma.lmm("y ~ year + offset(log_exposure) + (1|region)", ma.load_dataset("region_rates"))
    with pytest.raises(ma.DesignError, match="newdata lacks column.*'log_exposure'"):
        res.predict(pd.DataFrame({"year": [1.0]}), re_form="~0")


def test_emmeans_arguments(sleepstudy_fit):
    with pytest.raises(ValueError, match="ddf must be one of"):  # tables.normalize_ddf
        sleepstudy_fit.emmeans("Days", ddf="magic")
    with pytest.raises(ma.DesignError, match="more than one"):
        sleepstudy_fit.emmeans("Days | a | b")
