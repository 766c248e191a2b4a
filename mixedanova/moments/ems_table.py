"""The EMS table: its layout, the EMS text, and the F tests the EMS imply.

The balanced rules (:mod:`mixedanova.moments.ems`), the method of moments on
data (:mod:`mixedanova.moments.moments`) and published tables
(:mod:`mixedanova.moments.published`) all produce this table.  One layout:
index = source, columns ``df, sum_sq, mean_sq, ems``, one coefficient
column per variance component (``s2_e`` for the residual, ``s2_<label>``
otherwise, see :func:`coef_column`), ``Q`` (the EMS holds a fixed-effect
quadratic form), ``Q_coef``, ``component`` (the variance component the source
estimates, None for fixed sources), ``error_term``, ``test``, ``den_df``,
``F``, ``p``.

:func:`assemble` builds it from EMS coefficients; :func:`error_terms` finds
each source's F-test denominator from the EMS (an exact test or a
Satterthwaite quasi-F); :func:`fill_tests` and :func:`f_tests` compute the
tests from the mean squares.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DesignError

__all__ = [
    "RESIDUAL",
    "TABLE_COLUMNS",
    "assemble",
    "coef_column",
    "error_terms",
    "f_tests",
    "fill_tests",
    "format_ems",
    "own_components",
]

RESIDUAL = "Residual"
"""Name of the residual variance component and of the residual source."""

_LEADING = ["df", "sum_sq", "mean_sq", "ems"]
_TRAILING = ["Q", "Q_coef", "component", "error_term", "test", "den_df", "F", "p"]
TABLE_COLUMNS = (*_LEADING, *_TRAILING)
"""Fixed columns of an EMS table (the coefficient columns sit after ``ems``)."""

_ZERO_TOL = 1e-9


def coef_column(component: str) -> str:
    """Name of the EMS coefficient column of a variance component.

    ``"s2_e"`` for ``"Residual"``, ``"s2_<component>"`` otherwise.
    """
    return "s2_e" if component == RESIDUAL else f"s2_{component}"


def _fmt_num(x: float) -> str:
    if abs(x - round(x)) < 1e-9 * max(1.0, abs(x)):
        return str(int(round(x)))
    return f"{x:.6g}"


def format_ems(coefficients: Mapping[str, float], fixed_term: str | None = None) -> str:
    """Readable EMS text, e.g. ``s2_e + 2 s2_batch:cask + 6 s2_batch``.

    Parameters
    ----------
    coefficients : mapping
        Component name -> coefficient, in component order (Residual last).
        Zero coefficients are skipped.  The residual comes first in the text,
        then the other components in reverse order (innermost first).
    fixed_term : str, optional
        Label of a fixed term whose ``Q(term)`` ends the text.
    """
    names = [c for c in coefficients if c != RESIDUAL]
    order = ([RESIDUAL] if RESIDUAL in coefficients else []) + names[::-1]
    parts = []
    for comp in order:
        k = float(coefficients[comp])
        if abs(k) <= _ZERO_TOL:
            continue
        sym = coef_column(comp)
        parts.append(sym if abs(k - 1.0) < 1e-12 else f"{_fmt_num(k)} {sym}")
    if fixed_term is not None:
        parts.append(f"Q({fixed_term})")
    return " + ".join(parts)


def _synthesize(coef: np.ndarray, own: Sequence[int | None], t: int) -> dict[int, float] | None:
    """Linear combination of other sources whose EMS equals EMS(t) minus t's own part."""
    target = coef[t].copy()
    if own[t] is not None:
        target[own[t]] = 0.0
    scale = max(1.0, float(np.max(np.abs(coef[t]))))
    nz = np.abs(target) > _ZERO_TOL * scale
    if not nz.any():
        return None
    others = [s for s in range(coef.shape[0]) if s != t and own[s] is not None]
    subset = [s for s in others if nz[own[s]]
              and np.all(np.abs(coef[s][~nz]) <= _ZERO_TOL * max(1.0, np.max(np.abs(coef[s]))))]
    for cand in (subset, others):
        if not cand:
            continue
        a_mat = coef[cand].T
        sol, *_ = np.linalg.lstsq(a_mat, target, rcond=None)
        if np.linalg.norm(a_mat @ sol - target) <= 1e-9 * np.linalg.norm(target):
            # snap coefficients that are integers up to rounding (exact tests, +-1 combinations)
            return {s: float(round(a)) if abs(a - round(a)) < 1e-10 else float(a)
                    for s, a in zip(cand, sol) if abs(a) > 1e-12}
    return None


def _combo_text(combo: Mapping[str, float]) -> str:
    parts = []
    for i, (name, a) in enumerate(combo.items()):
        sign = "-" if a < 0 else "+"
        mag = abs(a)
        body = name if abs(mag - 1.0) < 1e-12 else f"{_fmt_num(mag)} {name}"
        parts.append(("- " if sign == "-" else "") + body if i == 0 else f"{sign} {body}")
    return " ".join(parts)


def own_components(table: pd.DataFrame) -> tuple[list[str], list[int | None]]:
    comps = [c for c in table["component"] if isinstance(c, str)]
    idx = {c: i for i, c in enumerate(comps)}
    own = [idx[c] if isinstance(c, str) else None for c in table["component"]]
    return comps, own


def error_terms(table: pd.DataFrame) -> dict[str, dict[str, float] | None]:
    """F-test denominators derived from the EMS of a table.

    For each source T (not the residual) the denominator is the linear
    combination of the other sources' mean squares whose EMS equals
    ``EMS(T)`` without T's own component (its variance component or
    ``Q(T)``).  Candidates are first the sources whose EMS only contains
    components of that target; when one source matches with coefficient 1 the
    test is exact, otherwise it is a Satterthwaite quasi-F (e.g.
    ``MS_AB + MS_AC - MS_ABC`` for a main effect of three crossed random
    factors).

    Returns
    -------
    dict
        Source -> {source: coefficient} (None when no combination exists,
        and for the residual).
    """
    comps, own = own_components(table)
    coef = table[[coef_column(c) for c in comps]].to_numpy(dtype=float)
    src = list(table.index)
    out: dict[str, dict[str, float] | None] = {}
    for t, name in enumerate(src):
        if table["component"].iat[t] == RESIDUAL:
            out[name] = None
            continue
        combo = _synthesize(coef, own, t)
        out[name] = None if combo is None else {src[s]: a for s, a in combo.items()}
    return out


def fill_tests(table: pd.DataFrame,
               combos: Mapping[str, Mapping[str, float] | None]) -> pd.DataFrame:
    from scipy import stats
    out = table.copy()
    ms = out["mean_sq"].astype(float)
    dfs = out["df"].astype(float)
    for name, combo in combos.items():
        if combo is None:
            if out.at[name, "component"] != RESIDUAL:
                out.at[name, "test"] = "none"
            continue
        exact = len(combo) == 1 and next(iter(combo.values())) == 1.0
        out.at[name, "error_term"] = _combo_text(combo)
        out.at[name, "test"] = "exact" if exact else "quasi-F (Satterthwaite)"
        parts = np.array([a * ms[s] for s, a in combo.items()])
        den = float(parts.sum())
        if exact:
            den_df = float(dfs[next(iter(combo))])
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                den_df = den**2 / float(np.sum(parts**2 / np.array([dfs[s] for s in combo])))
        out.at[name, "den_df"] = den_df
        if np.isfinite(den) and den > 0 and np.isfinite(ms[name]) and dfs[name] > 0 and den_df > 0:
            f_val = ms[name] / den
            out.at[name, "F"] = f_val
            out.at[name, "p"] = float(stats.f.sf(f_val, dfs[name], den_df))
        else:
            out.at[name, "F"] = np.nan
            out.at[name, "p"] = np.nan
    return out


def f_tests(table: pd.DataFrame, mean_squares: Mapping[str, float] | pd.Series | None = None,
            df: Mapping[str, float] | pd.Series | None = None) -> pd.DataFrame:
    """Fill mean squares, error terms, denominator df, F and p of an EMS table.

    Parameters
    ----------
    table : DataFrame
        An EMS table from :func:`ems_rules` or a fit.
    mean_squares : mapping, optional
        Source -> mean square; defaults to the table's ``mean_sq`` column.
        Every source must be given.
    df : mapping, optional
        Source -> degrees of freedom; defaults to the table's ``df``.

    Returns
    -------
    DataFrame
        A copy with ``mean_sq``, ``sum_sq`` (= mean_sq * df), ``error_term``,
        ``test``, ``den_df`` (df of the error source, or the Satterthwaite
        df ``(sum a_i MS_i)^2 / sum (a_i MS_i)^2 / df_i``), ``F`` and ``p``.
    """
    out = table.copy()
    if df is not None:
        out["df"] = pd.Series(df, dtype=float).reindex(out.index)
    if mean_squares is not None:
        ms = pd.Series(mean_squares, dtype=float)
        missing = [s for s in out.index if s not in ms.index]
        if missing:
            raise DesignError(f"mean squares missing for source(s) {missing}")
        out["mean_sq"] = ms.reindex(out.index)
    out["sum_sq"] = out["mean_sq"] * out["df"]
    return fill_tests(out, error_terms(out))


def assemble(labels: Sequence[str], comps: Sequence[str], coef: np.ndarray,
             q_coef: np.ndarray, fixed_flags: Sequence[bool], df: Sequence[float]) -> pd.DataFrame:
    """Build the EMS table (without sums of squares) from coefficients."""
    index = [*labels, RESIDUAL]
    data: dict[str, list] = {"df": [float(x) for x in df], "sum_sq": [np.nan] * len(index),
                             "mean_sq": [np.nan] * len(index)}
    ems_text = []
    for i, lab in enumerate(index):
        coefs = {c: coef[i, j] for j, c in enumerate(comps)}
        ems_text.append(format_ems(coefs, lab if i < len(labels) and fixed_flags[i] else None))
    data["ems"] = ems_text
    for j, c in enumerate(comps):
        data[coef_column(c)] = list(coef[:, j])
    data["Q"] = [bool(f) for f in fixed_flags] + [False]
    data["Q_coef"] = list(q_coef)
    components = [None if i < len(labels) and fixed_flags[i] else lab
                  for i, lab in enumerate(index)]
    data["den_df"] = [np.nan] * len(index)
    data["F"] = [np.nan] * len(index)
    data["p"] = [np.nan] * len(index)
    table = pd.DataFrame(data, index=pd.Index(index, name="source"))
    for col, values in (("component", components), ("error_term", [None] * len(index)),
                        ("test", [None] * len(index))):
        table.insert(table.columns.get_loc("den_df"), col,
                     pd.Series(values, index=table.index, dtype=object))
    table["ems"] = pd.Series(ems_text, index=table.index, dtype=object)
    return table

