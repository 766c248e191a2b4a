"""Result tables as JSON (the command line's ``--json``).  Rendering only: every
table is read from the results object (duck-typed, never imported here)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["results_to_dict", "results_to_json", "read_results", "SavedResults"]


def _value(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return v if isinstance(v, (int, str)) else str(v)


def _table(df: pd.DataFrame) -> dict:
    """``{"index": [...], "columns": [...], "data": [[...], ...]}`` (missing -> null)."""
    return {"index": [_value(i) for i in df.index],
            "columns": [str(c) for c in df.columns],
            "data": [[_value(v) for v in row] for row in df.itertuples(index=False)]}


def results_to_dict(res, *, anova: pd.DataFrame | None = None) -> dict:
    """All tables of a fit as plain Python objects.

    Keys: ``formula``, ``method``, ``nobs``, ``ngroups``, ``criteria``
    (``REML``/``logLik``/``AIC``/``BIC``/``deviance``), ``fixed`` (``res.fixed()``
    for likelihood fits: estimate, SE, Satterthwaite df, t, p, CI; the Wald
    table otherwise), ``varcomp``, ``random_effects`` and
    ``random_effects_sd`` (per grouping factor), ``notes``; ``anova`` when an
    F table is passed; for method-of-moments fits also ``ems_table`` and
    ``moment_estimates``; for GLMMs also ``family`` and ``nAGQ`` (``deviance`` is
    then ``-2 logLik``, as for an ML fit, not glmer's conditional ``deviance(m)``).
    """
    parts = res._summary_parts()
    glmm = hasattr(res, "family")
    out = {
        "formula": parts["formula"], "method": res.method, "nobs": int(res.nobs),
        "ngroups": {k: int(v) for k, v in res.ngroups.items()},
        "criteria": {"REML": _value(getattr(res, "reml_criterion", None)),
                     "logLik": _value(res.llf), "AIC": _value(res.aic), "BIC": _value(res.bic),
                     "deviance": _value(res.minus_2_loglik if glmm else res.deviance)},
        "fixed": _table(res.fixed() if res.method in ("REML", "ML") else parts["fixed"]),
        "varcomp": _table(res.varcomp),
        "random_effects": {g: _table(t) for g, t in res.random_effects.items()},
        "random_effects_sd": {g: _table(t) for g, t in res.random_effects_sd.items()},
        "notes": list(parts["notes"]),
    }
    if glmm:
        out["family"] = str(res.family)
        out["nAGQ"] = int(res.nagq)
    if anova is not None:
        out["anova"] = _table(anova)
    if hasattr(res, "ems_table"):
        ems = res.ems_table()
        out["ems_table"] = _table(ems.drop(columns=[c for c in ems.columns if c == "Q_coef"]))
        out["moment_estimates"] = _table(res.moment_estimates)
    return out


def results_to_json(res, *, anova: pd.DataFrame | None = None, indent: int | None = 2) -> str:
    """:func:`results_to_dict` as a JSON string (NaN written as null)."""
    return json.dumps(results_to_dict(res, anova=anova), indent=indent)


def _frame(t: dict) -> pd.DataFrame:
    """A table written by :func:`_table` as a DataFrame (``None`` read as NaN in
    numeric columns)."""
    df = pd.DataFrame(t["data"], columns=t["columns"], index=t["index"])
    for c in df.columns:
        if df[c].map(lambda v: v is None or isinstance(v, (int, float))).all() and \
                df[c].notna().any():
            df[c] = pd.to_numeric(df[c])
    return df


@dataclass(frozen=True)
class SavedResults:
    """The tables of a saved fit (:func:`read_results`), for reporting: DataFrames,
    no model behind them."""

    formula: str
    method: str
    nobs: int
    ngroups: dict
    criteria: dict
    fixed: pd.DataFrame = field(repr=False)
    varcomp: pd.DataFrame = field(repr=False)
    random_effects: dict = field(repr=False)
    random_effects_sd: dict = field(repr=False)
    notes: list = field(default_factory=list)
    tables: dict = field(default_factory=dict, repr=False)  # anova, ems_table, ...


def read_results(source) -> SavedResults:
    """Read what ``res.to_json()`` (or the command line's ``--json``) wrote.

    Parameters
    ----------
    source : str, path or dict
        A JSON file, JSON text, or the dict of ``res.to_dict()``.
    """
    if isinstance(source, dict):
        d = source
    else:
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        d = json.loads(text)
    known = {"formula", "method", "nobs", "ngroups", "criteria", "fixed", "varcomp",
             "random_effects", "random_effects_sd", "notes"}
    return SavedResults(
        formula=d["formula"], method=d["method"], nobs=int(d["nobs"]),
        ngroups=dict(d["ngroups"]), criteria=dict(d["criteria"]),
        fixed=_frame(d["fixed"]), varcomp=_frame(d["varcomp"]),
        random_effects={g: _frame(t) for g, t in d["random_effects"].items()},
        random_effects_sd={g: _frame(t) for g, t in d["random_effects_sd"].items()},
        notes=list(d.get("notes", [])),
        tables={k: _frame(v) for k, v in d.items() if k not in known and isinstance(v, dict)
                and "columns" in v})
