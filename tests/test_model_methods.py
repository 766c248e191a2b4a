"""LinearMixedModel's refit and update, used by inference through ``res.model``."""
from __future__ import annotations

import numpy as np
import pytest

import mixedanova as ma


def test_results_carry_their_model(sleepstudy):
    res = ma.lmm("Reaction ~ Days + (Days | Subject)", sleepstudy)
    assert isinstance(res.model, ma.LinearMixedModel)
    assert res.model.design is res.design


def test_refit_same_response_reproduces_fit(sleepstudy):
    res = ma.lmm("Reaction ~ Days + (1 | Subject)", sleepstudy)
    again = res.model.refit(method="REML")
    assert again.reml_criterion == pytest.approx(res.reml_criterion, rel=1e-12)


def test_refit_new_response(sleepstudy):
    model = ma.LinearMixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleepstudy)
    y = model.design.y
    scaled = model.refit(2.0 * y, "ML", warn=False)
    base = model.fit("ML")
    assert scaled.fe_params.to_numpy() == pytest.approx(2.0 * base.fe_params.to_numpy(),
                                                        rel=1e-6)
    assert scaled.sigma == pytest.approx(2.0 * base.sigma, rel=1e-6)
    assert model.design.y is y  # the model itself is unchanged
    with pytest.raises(ValueError):
        model.refit(y[:-1])


def test_update_keeps_data_and_options(sleepstudy):
    data = sleepstudy.copy()
    data.loc[data.index[:3], "Reaction"] = np.nan
    model = ma.LinearMixedModel.from_formula("Reaction ~ Days + (Days | Subject)", data)
    smaller = model.update("Reaction ~ Days + (1 | Subject)")
    assert isinstance(smaller, ma.LinearMixedModel)
    assert smaller.missing == model.missing
    assert smaller.design.nobs == model.design.nobs == len(sleepstudy) - 3
    direct = ma.lmm("Reaction ~ Days + (1 | Subject)", data)
    assert smaller.fit().reml_criterion == pytest.approx(direct.reml_criterion, rel=1e-12)
