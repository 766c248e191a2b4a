"""Fixtures shared by the test modules (issue 17).

Data sets
    ``sleepstudy``, ``penicillin`` (lme4's ``Penicillin``), ``pastes``,
    ``bhh_penicillin``, ``dyestuff``, ``trial_visits``: each CSV is read once per session and every test
    gets its own copy, so a test may change its frame freely.

Fits
    ``reference_fit(case)``: ``(reference, fit)`` of a case in tests/reference, fitted
    once per session (as :func:`_refdata.fit_reference`); ``sleepstudy_fit`` and
    ``dyestuff_fit`` are the fits of ``sleepstudy_reml`` (``Reaction ~ Days +
    (Days|Subject)``, REML) and ``dyestuff_reml`` (``Yield ~ 1 + (1|Batch)``).  A fit
    is shared between modules, so a test must not change it: the reference dict is a
    fresh copy per call, and at the end of the session every shared fit is checked
    against what it held when it was made (its parameter arrays, and each cached
    table against a recomputation), so a test that mutates one fails loudly instead of
    quietly changing the numbers another module sees.
"""
from __future__ import annotations

import copy
from functools import cached_property
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from _refdata import fit_reference

# ------------------------------------------------------------------- data sets
@pytest.fixture(scope="session")
def _data_sets() -> dict[str, pd.DataFrame]:
    """Each data set read once (never handed out: the fixtures below copy it)."""
    return {}


def _data(cache: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    if name not in cache:
        cache[name] = ma.load_dataset(name)
    return cache[name].copy(deep=True)


@pytest.fixture()
def sleepstudy(_data_sets) -> pd.DataFrame:
    """lme4's ``sleepstudy`` (180 rows: Reaction, Days, Subject)."""
    return _data(_data_sets, "sleepstudy")


@pytest.fixture()
def penicillin(_data_sets) -> pd.DataFrame:
    """lme4's ``Penicillin`` (144 rows: diameter, plate, sample)."""
    return _data(_data_sets, "penicillin")


@pytest.fixture()
def pastes(_data_sets) -> pd.DataFrame:
    """lme4's ``Pastes`` (60 rows: strength, batch, cask, sample)."""
    return _data(_data_sets, "pastes")


@pytest.fixture()
def bhh_penicillin(_data_sets) -> pd.DataFrame:
    """Box, Hunter and Hunter's penicillin blocks (yield, treat, blend)."""
    return _data(_data_sets, "bhh_penicillin")


@pytest.fixture()
def dyestuff(_data_sets) -> pd.DataFrame:
    """lme4's ``Dyestuff`` (30 rows: Yield, Batch)."""
    return _data(_data_sets, "dyestuff")


@pytest.fixture()
def trial_visits(_data_sets) -> pd.DataFrame:
    """The repeated-measures trial bundled for the residual structures."""
    return _data(_data_sets, "trial_visits")


# ------------------------------------------------------------------------ fits
def _snapshot(res) -> dict[str, np.ndarray]:
    st = res.state
    return {"theta": np.array(st.theta, copy=True), "beta": np.array(st.beta, copy=True),
            "sigma": np.array(st.sigma, copy=True),
            "vcov_beta": np.array(st.vcov_beta, copy=True),
            "y": np.array(res.design.y, copy=True), "X": np.array(res.design.X, copy=True)}


def _same(a, b) -> bool:
    """``a`` and ``b`` hold the same numbers (exactly; NaN equals NaN)."""
    if isinstance(a, (pd.DataFrame, pd.Series)):
        return isinstance(b, type(a)) and a.equals(b) and list(a.index) == list(b.index)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and \
            all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (str, int, float, np.number, type(None))):
        return bool(a == b or (a != a and b != b))
    return True     # objects without a value comparison (an inference cache) are not checked


def _changed(res, snap: dict[str, np.ndarray]) -> list[str]:
    """What of ``res`` differs from its snapshot or from a recomputation."""
    now = _snapshot(res)
    out = [k for k in snap if not np.array_equal(snap[k], now[k], equal_nan=True)]
    for name, attr in vars(type(res)).items():
        if isinstance(attr, cached_property) and name in vars(res):
            if not _same(vars(res)[name], attr.func(res)):
                out.append(name)
    return out


class SharedFits:
    """``(reference, fit)`` per reference case, fitted on first use."""

    def __init__(self) -> None:
        self._fits: dict[str, tuple[dict, object, dict]] = {}

    def __call__(self, case: str):
        if case not in self._fits:
            ref, res = fit_reference(case)
            self._fits[case] = (ref, res, _snapshot(res))
        ref, res, _ = self._fits[case]
        return copy.deepcopy(ref), res

    def mutated(self) -> dict[str, list[str]]:
        """``{case: [what changed]}`` for the fits a test has changed."""
        out = {}
        for case, (_, res, snap) in self._fits.items():
            changed = _changed(res, snap)
            if changed:
                out[case] = changed
        return out


@pytest.fixture(scope="session")
def reference_fit() -> Callable[[str], tuple[dict, object]]:
    """``reference_fit(case) -> (reference dict, fit)``, one fit per case per session."""
    fits = SharedFits()
    yield fits
    bad = fits.mutated()
    assert not bad, f"tests changed shared fits (a test must copy, not mutate): {bad}"


@pytest.fixture(scope="session")
def sleepstudy_fit(reference_fit):
    """``lmer(Reaction ~ Days + (Days | Subject), sleepstudy)`` (REML), shared."""
    return reference_fit("sleepstudy_reml")[1]


@pytest.fixture(scope="session")
def dyestuff_fit(reference_fit):
    """``lmer(Yield ~ 1 + (1 | Batch), Dyestuff)`` (REML), shared."""
    return reference_fit("dyestuff_reml")[1]
