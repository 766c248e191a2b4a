"""Scoring of the GLMM stress corpus (copied from ``../shared/stress_glmm``; pass
rule in its README).

A fit passes a set when ``-2 * llf`` at the estimates it returns is at most
``reference.objective + 1e-6 * max(1, |reference.objective|)``.  The scorer also
checks that the package's objective evaluated at the returned estimates equals
``-2 * llf`` (else *inaccurate*) and, at the reference ``(theta, beta)``, equals
``reference.objective`` (else *mismatch*: the objective functions differ).  A fit
that raises fails, except a ``DesignError`` on a set whose ``lme4_checks_error``
is not null; a failing fit that said ``converged=True`` is *silent*.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import mixedanova as ma

CORPUS = Path(__file__).parent / "data" / "stress_glmm"

__all__ = ["CORPUS", "GlmmStressOutcome", "load_manifest", "score_set"]


@dataclass(frozen=True)
class GlmmStressOutcome:
    """How one fit scored against the pass rule."""

    id: str
    shape: str
    passed: bool
    silent: bool
    gap: float             # -2 llf minus the reference objective
    tolerance: float
    inaccurate: bool       # objective_at(estimates) != -2 llf
    mismatch: float        # objective_at(reference estimates) - reference objective
    error: str | None
    seconds: float
    converged: bool = False


def load_manifest() -> dict:
    with open(CORPUS / "manifest.json") as fh:
        return json.load(fh)


def score_set(entry: dict) -> GlmmStressOutcome:
    """Fit one set with default options and score it."""
    ref = entry["reference"]
    obj = float(ref["objective"])
    tol = 1e-6 * max(1.0, abs(obj))
    df = pd.read_csv(CORPUS / entry["csv"])
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ma.glmm(entry["formula"], df, family=entry["family"], link=entry["link"])
    except ma.DesignError as exc:
        ok = entry.get("lme4_checks_error") is not None
        return GlmmStressOutcome(entry["id"], entry["shape"], ok, False, math.nan, tol, False,
                                 math.nan, f"DesignError: {exc}", time.perf_counter() - t0)
    except Exception as exc:  # a fit that raises fails
        return GlmmStressOutcome(entry["id"], entry["shape"], False, False, math.nan, tol,
                                 False, math.nan, f"{type(exc).__name__}: {exc}",
                                 time.perf_counter() - t0)
    secs = time.perf_counter() - t0
    value = -2.0 * res.llf
    gap = value - obj
    passed = gap <= tol
    at_est = res.objective_at(res.theta, res.fe_params.to_numpy())
    inaccurate = abs(at_est - value) > 1e-8 * max(1.0, abs(value))
    names = list(ref["fixed"]["names"])
    mine = [n if n != "Intercept" else "(Intercept)" for n in res.fe_params.index]
    beta_ref = np.array([ref["fixed"]["estimate"][names.index(n)] for n in mine])
    mismatch = res.objective_at(np.asarray(ref["theta"], float), beta_ref) - obj
    return GlmmStressOutcome(entry["id"], entry["shape"], bool(passed),
                             bool(not passed and res.converged), float(gap), tol,
                             bool(inaccurate), float(mismatch), None, secs,
                             bool(res.converged))
