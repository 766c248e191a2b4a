"""Scoring of the stress corpus (copied from ``../shared/stress``; pass rule in its README).

A fit passes a set when

* the criterion at the theta it returns (REML criterion or ML deviance) is within
  ``1e-7 * max(1, |ref|)`` above ``reference.objective`` (lower is welcome),
  evaluated on the standardized response ``(y - c) / s`` plus ``k log s``
  (``k = 2 (n - p)`` for REML, ``2 n`` for ML), so that rounding on a response with
  a huge mean or scale cannot hide a wrong theta;
* the reported criterion agrees with that value within the same tolerance;
* the package's objective at ``reference.theta`` agrees with ``reference.objective``
  (else the two objective functions differ).

A fit that raises fails, except a ``DesignError`` on a set that lme4's default
checks refuse too.  A failure whose fit said ``converged=True`` is *silent*.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import mixedanova as ma

CORPUS = Path(__file__).parent / "data" / "stress"

__all__ = ["CORPUS", "StressOutcome", "load_manifest", "score_set"]


@dataclass(frozen=True)
class StressOutcome:
    """How one fit scored against the pass rule."""

    id: str
    shape: str
    passed: bool
    silent: bool
    objective: float       # criterion at the returned theta (standardized evaluation)
    reported: float        # what the fit reported
    reference: float
    at_reference: float    # the package's criterion at reference.theta
    converged: bool
    seconds: float
    error: str = ""

    @property
    def margin(self) -> float:
        """objective - reference, in units of the tolerance (negative: below the reference)."""
        tol = 1e-7 * max(1.0, abs(self.reference))
        return (self.objective - self.reference) / tol


def load_manifest(corpus: Path = CORPUS) -> list[dict]:
    """The sets of the corpus (slim manifest: references, no battery fits)."""
    with open(corpus / "manifest.json") as fh:
        return json.load(fh)["sets"]


def _standardized_objective(entry: dict, df: pd.DataFrame, theta: np.ndarray) -> float:
    """Criterion at ``theta`` on ``(y - c)/s`` plus ``k log s`` (equals the raw one)."""
    c, s = float(entry["y_center"]), float(entry["y_scale"])
    std = df.assign(y=(df["y"] - c) / s)
    model = ma.LinearMixedModel.from_formula(entry["formula"], std)
    reml = entry["method"] == "REML"
    dev = model.deviance_function(reml=reml)
    n, p = dev.n, dev.p
    k = 2 * (n - p) if reml else 2 * n
    return float(dev(np.asarray(theta, dtype=float))) + k * math.log(s)


def _theta_in_package_order(entry: dict, model) -> np.ndarray:
    """``reference.theta`` mapped to the package's theta names (``ffb`` -> ``f[T.fb]``)."""
    ref = dict(zip(entry["reference"]["theta_names"], entry["reference"]["theta"]))
    names = model.deviance_function(reml=entry["method"] == "REML").layout.names
    out = []
    for name in names:
        r_name = name.replace("f[T.", "f").replace("]", "")
        out.append(ref[r_name])
    return np.array(out)


def score_set(entry: dict, corpus: Path = CORPUS, **fit_kwargs) -> StressOutcome:
    """Fit one set with default options (or ``fit_kwargs``) and apply the pass rule."""
    import time

    df = pd.read_csv(corpus / Path(entry["csv"]).name)
    ref = float(entry["reference"]["objective"])
    tol = 1e-7 * max(1.0, abs(ref))
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ma.lmm(entry["formula"], df, method=entry["method"], **fit_kwargs)
    except ma.DesignError as exc:
        ok = entry.get("lme4_checks_error") is not None
        return StressOutcome(entry["id"], entry["shape"], ok, False, math.nan, math.nan, ref,
                             math.nan, False, time.perf_counter() - t0, f"DesignError: {exc}")
    except Exception as exc:  # noqa: BLE001 - any other error fails the set
        return StressOutcome(entry["id"], entry["shape"], False, False, math.nan, math.nan,
                             ref, math.nan, False, time.perf_counter() - t0,
                             f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - t0
    reported = float(res.reml_criterion if entry["method"] == "REML" else res.deviance)
    objective = _standardized_objective(entry, df, res.state.theta)
    at_ref = _standardized_objective(entry, df, _theta_in_package_order(entry, res.model))
    passed = (objective <= ref + tol and abs(reported - objective) <= tol
              and abs(at_ref - ref) <= tol)
    converged = bool(res.converged)
    return StressOutcome(entry["id"], entry["shape"], passed, (not passed) and converged,
                         objective, reported, ref, at_ref, converged, seconds)
