"""Helpers for tests that compare with the R reference answers in tests/reference.

The JSON files were computed with R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, pbkrtest
0.5.2 and nlme 3.1-162 on the CSVs bundled in the top-level datasets/ folder (copied from
the project's shared/reference and shared/data; see tests/reference/README.md).
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

import mixedanova as ma

REF_DIR = Path(__file__).parent / "reference"

LMER_CASES = [
    "dyestuff_reml", "dyestuff_ml", "dyestuff2_reml", "rail_reml",
    "penicillin_crossed_reml", "pastes_nested_reml", "ergostool_reml",
    "bhh_penicillin_reml", "oats_splitplot_reml", "cake_reml",
    "sleepstudy_reml", "sleepstudy_ml", "sleepstudy_uncorr_reml",
    "sleepstudy_unbalanced_reml",
]


def load_reference(case: str) -> dict:
    """The reference JSON of ``case``."""
    with open(REF_DIR / f"{case}.json") as fh:
        return json.load(fh)


def fit_reference(case: str, formula: str | None = None):
    """``(reference, fit)``: the case's model fitted to its bundled CSV, as in R."""
    ref = load_reference(case)
    data = ma.load_dataset(ref["dataset"][:-4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ma.SingularFitWarning)
        res = ma.lmm(formula or ref["formula"], data, method=ref["method"])
    return ref, res


def r_name(name: str) -> str:
    """formulaic column name -> R coefficient name (``Type[T.T2]`` -> ``TypeT2``)."""
    if name == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[T\.([^\]]*)\]", r"\1", name)


def assert_close(actual, expected, rtol: float, what: str, atol: float = 0.0) -> None:
    """``|actual - expected| <= atol + rtol |expected|`` elementwise, naming the check."""
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e)
    bound = atol + rtol * np.abs(e)
    worst = int(np.argmax(err - bound)) if a.size else 0
    assert np.all(err <= bound), (
        f"{what}: max violation at {worst}: got {a.ravel()[worst]!r}, R gives "
        f"{e.ravel()[worst]!r} (rtol {rtol}, atol {atol})")
