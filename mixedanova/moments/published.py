"""Variance components from a published ANOVA table (no raw data).

Many classic studies are known only by their ANOVA table: sources, degrees of
freedom, mean squares and expected mean squares.  :func:`ems_table_from_text`
turns such a table into the package's EMS-table layout (see
:mod:`mixedanova.moments.ems_table`), with the F tests that the EMS imply, so that
:func:`~mixedanova.moments.moments.moments_from_mean_squares` gives the moment
estimates, their standard errors ``sqrt(2 sum a_i^2 MS_i^2 / (df_i + 2))`` and
(through :meth:`~mixedanova.moments.moments.MomentEstimates.varcomp`) the
Cochran-Satterthwaite intervals.

Example: the pigment paste study (Box, Hunter & Hunter, 15 batches x 2
samples x 2 tests)::

    >>> from mixedanova.moments.published import ems_table_from_text
    >>> from mixedanova.moments.moments import moments_from_mean_squares
    >>> t = ems_table_from_text({
    ...     "batch":    (14, 86.495, "s2_e + 2 s2_sample + 4 s2_batch"),
    ...     "sample":   (15, 57.983, "s2_e + 2 s2_sample"),
    ...     "Residual": (30, 0.917, "s2_e")})
    >>> moments_from_mean_squares(t).estimates.round(3).tolist()
    [7.128, 28.533, 0.917]
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import MixedAnovaError
from .ems_table import RESIDUAL, assemble, error_terms, fill_tests

__all__ = ["ems_table_from_text", "parse_ems"]

_RESIDUAL_NAMES = ("Residual", "Residuals", "Error", "error", "e", "Within", "within")
_TERM = re.compile(r"^\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)?\s*\*?\s*"
                   r"(s2_[A-Za-z0-9_:.()]+|Q\([^)]*\)|phi\([^)]*\))\s*$")


def parse_ems(text: str) -> tuple[dict[str, float], str | None]:
    """Coefficients of an EMS written as text.

    Parameters
    ----------
    text : str
        E.g. ``"s2_e + 2 s2_sample + 4 s2_batch"`` or ``"s2_e + 3 s2_AB + Q(A)"``
        (``2*s2_sample`` also accepted).  ``s2_e`` is the residual variance.

    Returns
    -------
    coefficients : dict
        Component name (``"Residual"`` for ``s2_e``) -> coefficient.
    fixed : str or None
        The term of a ``Q(term)`` (or ``phi(term)``) part, if any.

    Raises
    ------
    MixedAnovaError
        A part that is not ``[number] s2_name`` or ``Q(term)``.
    """
    coefs: dict[str, float] = {}
    fixed = None
    for part in str(text).split("+"):
        m = _TERM.match(part)
        if m is None:
            raise MixedAnovaError(f"cannot read the EMS part {part.strip()!r} of {text!r}; write "
                                  "parts as '[number] s2_name' or 'Q(term)', joined by '+'")
        k = float(m.group(1)) if m.group(1) else 1.0
        sym = m.group(2)
        if sym.startswith(("Q(", "phi(")):
            fixed = sym[sym.index("(") + 1:-1].strip()
            continue
        name = sym[3:]
        name = RESIDUAL if name == "e" else name
        coefs[name] = coefs.get(name, 0.0) + k
    return coefs, fixed


def _rows(table) -> list[tuple[str, float, float, str]]:
    if isinstance(table, pd.DataFrame):
        missing = [c for c in ("df", "mean_sq", "ems") if c not in table.columns]
        if missing:
            raise MixedAnovaError(f"the table lacks column(s) {missing}; it needs df, mean_sq "
                                  "and ems (one row per source, sources as the index)")
        return [(str(s), r["df"], r["mean_sq"], r["ems"]) for s, r in table.iterrows()]
    out = []
    for source, row in table.items():
        if isinstance(row, Mapping):
            row = (row.get("df"), row.get("mean_sq"), row.get("ems"))
        if not isinstance(row, Sequence) or len(row) != 3:
            raise MixedAnovaError(f"source {source!r}: give (df, mean_sq, ems text), not {row!r}")
        out.append((str(source), *row))
    return out


def ems_table_from_text(table: pd.DataFrame | Mapping[str, Sequence | Mapping]) -> pd.DataFrame:
    """An EMS table (with F tests) from a published ANOVA table.

    Parameters
    ----------
    table : DataFrame or mapping
        One row per source: ``df``, ``mean_sq`` and ``ems`` (text, see
        :func:`parse_ems`).  A mapping is ``{source: (df, mean_sq, ems)}`` or
        ``{source: {"df": ..., "mean_sq": ..., "ems": ...}}``.  A random
        source's own component is ``s2_<source>``; the residual row is the one
        whose EMS is ``s2_e`` alone (named ``Residual`` in the output,
        whatever its name in the input); a fixed source has a ``Q(term)``.

    Returns
    -------
    DataFrame
        The layout of :mod:`mixedanova.moments.ems_table` (index ``source``;
        ``df, sum_sq, mean_sq, ems``, the coefficient columns, ``error_term``,
        ``test``, ``den_df``, ``F``, ``p``), ready for
        :func:`~mixedanova.moments.moments.moments_from_mean_squares`.

    Raises
    ------
    MixedAnovaError
        Unreadable EMS, a missing or non-positive df or mean square, no
        residual row, a random source whose component ``s2_<source>`` is not
        in its own EMS, a component that no source estimates.
    """
    rows = _rows(table)
    parsed = []
    residual = None
    for source, df, ms, text in rows:
        for what, v in (("df", df), ("mean square", ms)):
            try:
                ok = np.isfinite(float(v)) and float(v) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise MixedAnovaError(f"source {source!r}: the {what} must be a positive "
                                      f"number, got {v!r}")
        coefs, fixed = parse_ems(text)
        if fixed is None and set(coefs) == {RESIDUAL}:
            if residual is not None:
                raise MixedAnovaError(f"two residual rows ({residual!r} and {source!r}): only one "
                                      "source may have the EMS 's2_e'")
            residual = source
        parsed.append((source, float(df), float(ms), coefs, fixed))
    if residual is None:
        raise MixedAnovaError("no residual row: one source must have the EMS 's2_e' alone")
    body = [p for p in parsed if p[0] != residual]
    res_row = next(p for p in parsed if p[0] == residual)
    labels = [p[0] for p in body]
    random_labels = [p[0] for p in body if p[4] is None]
    if RESIDUAL in labels:
        raise MixedAnovaError(f"the source name {RESIDUAL!r} is reserved for the residual row")
    comps = random_labels + [RESIDUAL]
    for source, _, _, coefs, fixed in body:
        if fixed is None and source not in coefs:
            raise MixedAnovaError(f"random source {source!r}: its EMS {coefs} does not contain "
                                  f"its own component s2_{source}")
        unknown = [c for c in coefs if c not in comps]
        if unknown:
            raise MixedAnovaError(f"source {source!r}: EMS component(s) "
                                  f"{', '.join('s2_' + c for c in unknown)} are estimated by no "
                                  f"source (sources: {', '.join(labels)})")
    ordered = body + [res_row]
    coef = np.array([[p[3].get(c, 0.0) for c in comps] for p in ordered])
    fixed_flags = [p[4] is not None for p in body]
    out = assemble(labels, comps, coef, np.full(len(ordered), np.nan), fixed_flags,
                   [p[1] for p in ordered])
    out["mean_sq"] = [p[2] for p in ordered]
    out["sum_sq"] = out["mean_sq"] * out["df"]
    out = fill_tests(out, error_terms(out))
    out.attrs["method"] = "published ANOVA table"
    return out
