"""The GLMM stress corpus (tests/data/stress_glmm, 60 sets; pass rule in its README).

Each set is fitted with default options and scored with
:func:`tests._stress_glmm.score_set`.  The corpus count is asserted on the whole
(the number of sets passing, and no *silent* failure: a failing fit that
reported ``converged=True``); the objective at the reference estimates must equal
the reference objective on every set that fits (else the two objective functions
differ).
"""
from __future__ import annotations

import functools

import pytest

from _stress_glmm import load_manifest, score_set

MANIFEST = load_manifest()
IDS = [e["id"] for e in MANIFEST["sets"]]


@functools.lru_cache(maxsize=None)
def outcome(set_id: str):
    entry = next(e for e in MANIFEST["sets"] if e["id"] == set_id)
    return score_set(entry)


@pytest.mark.parametrize("set_id", IDS)
def test_same_objective_as_lme4(set_id):
    o = outcome(set_id)
    if o.error is not None:
        pytest.skip(f"fit failed: {o.error}")
    # lme4's Laplace devfun (tolPwrss 1e-14, two passes) at the reference (theta, beta)
    assert abs(o.mismatch) <= 1e-6 * max(1.0, abs(o.tolerance / 1e-6)), o
    assert not o.inaccurate, o


@pytest.mark.parametrize("set_id", IDS)
def test_reaches_the_optimum(set_id):
    o = outcome(set_id)
    assert o.passed, o
    # an honest verdict: the fit that reached the optimum says it converged
    assert o.converged, o


def test_corpus_is_complete():
    assert len(IDS) == 60
    assert {e["shape"] for e in MANIFEST["sets"]} == set("abcdefgh")
