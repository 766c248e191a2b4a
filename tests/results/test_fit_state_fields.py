"""The typed parts of a fit's state (issue 17): ``FitState.residual`` and
``FitState.moments`` replace the former loose ``extra`` dict."""
from __future__ import annotations

import dataclasses

import pandas as pd

import mixedanova as ma
from mixedanova.likelihood.residual_fit import ResidualFit
from mixedanova.likelihood.state import FitState
from mixedanova.moments.moments import AnovaFitState


def test_fit_state_has_no_dict_field():
    # the annotations are strings (``from __future__ import annotations``)
    for f in dataclasses.fields(FitState):
        assert "dict" not in str(f.type).lower(), (f.name, f.type)
        assert f.default_factory is not dict, f.name
    names = {f.name for f in dataclasses.fields(FitState)}
    assert "extra" not in names
    assert {"residual", "moments"} <= names


def test_residual_structure_fit_fills_residual_only():
    res = ma.lmm("follicles ~ sin2pit + cos2pit + (1|Mare)",
                 ma.load_dataset("ovary"), residual=ma.AR1(group="Mare", order="time_index"))
    assert isinstance(res.state.residual, ResidualFit)
    assert res.state.moments is None
    assert res.state.residual.names == ("phi",)
    assert res.residual_structure == res.state.residual.structure.labels
    # npar counts the structure's parameter (nlme: attr(logLik(m), "df"))
    assert res.npar == res.design.p + len(res.state.theta) + 1 + 1


def test_plain_fit_has_neither():
    res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"))
    assert res.state.residual is None
    assert res.state.moments is None
    assert res.residual_structure == ()


def test_anova_fit_fills_moments():
    res = ma.lmm("Yield ~ 1 + (1|Batch)", ma.load_dataset("dyestuff"), method="ANOVA")
    assert isinstance(res.state.moments, AnovaFitState)
    assert res.state.residual is None
    assert res.anova_state is res.state.moments
    assert isinstance(res.state.moments.table, pd.DataFrame)
    assert res.state.moments.response == "Yield"
