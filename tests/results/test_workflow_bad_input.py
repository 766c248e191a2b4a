"""Bad arguments to the workflow methods: the package's own errors, naming the culprit."""
from __future__ import annotations

import pandas as pd
import pytest

import mixedanova as ma
from _refdata import fit_reference


@pytest.fixture(scope="module")
def sleep():
    return fit_reference("sleepstudy_reml")[1]


def test_residual_type(sleep):
    with pytest.raises(ma.MixedAnovaError, match="type must be one of response, pearson"):
        sleep.residuals("deviance")


def test_influence_groups(sleep):
    with pytest.raises(ma.DesignError, match="groups='Subj' is not a column"):
        sleep.influence(groups="Subj")


def test_prediction_newdata(sleep):
    with pytest.raises(ma.DesignError, match="newdata must be a pandas DataFrame"):
        sleep.get_prediction({"Days": [1]})
    with pytest.raises(ma.DesignError, match="newdata lacks column.*'Days'"):
        sleep.get_prediction(pd.DataFrame({"Subject": [308]}))


def test_offset_column_needed_in_newdata():
    res = ma.lmm("y ~ year + offset(log_exposure) + (1|region)", ma.load_dataset("region_rates"))
    with pytest.raises(ma.DesignError, match="newdata lacks column.*'log_exposure'"):
        res.predict(pd.DataFrame({"year": [1.0]}), re_form="~0")


def test_emmeans_arguments(sleep):
    with pytest.raises(ValueError, match="ddf must be one of"):  # tables.normalize_ddf
        sleep.emmeans("Days", ddf="magic")
    with pytest.raises(ma.DesignError, match="more than one"):
        sleep.emmeans("Days | a | b")
