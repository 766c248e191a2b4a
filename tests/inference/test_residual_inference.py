"""Inference on models with a residual structure (issue 10)."""
from __future__ import annotations

import mixedanova as ma


def test_ranova_keeps_the_structure_when_dropping_the_last_random_term():
    """The reduced model of (1|Mare) is gls with the same AR(1): one df (the SD)."""
    res = ma.lmm("follicles ~ sin2pit + cos2pit + (1|Mare)", ma.load_dataset("ovary"),
                 residual=ma.AR1(group="Mare", order="time_index"))
    tab = res.ranova()
    assert tab["Df"].iloc[1] == 1.0
    assert tab["npar"].iloc[1] == res.npar - 1
    assert tab["logLik"].iloc[1] < res.llf
