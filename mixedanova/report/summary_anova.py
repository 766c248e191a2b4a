"""Text rendering of an ANOVA (EMS) table and its moment estimates.

Rendering only: every number shown is taken from the table and the
variance-component table passed in (see
:func:`mixedanova.moments.moments.varcomp_table`).
"""
from __future__ import annotations

import math

import pandas as pd

from .html import SIGNIF
from .summary import align_columns, format_column, signif_stars

__all__ = ["render_ems_table", "render_varcomp", "ems_rows", "varcomp_rows"]


def _num(x, digits: int = 5) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    x = float(x)
    if x == int(x) and abs(x) < 1e12:
        return str(int(x))
    return f"{x:.{digits}g}"


def _pval(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return "< 2.2e-16" if p < 2.2e-16 else f"{p:.4g}"


def ems_rows(table: pd.DataFrame) -> list[list[str]]:
    """Header and rows (text cells) of an EMS table, as :func:`render_ems_table` shows them."""
    header = ["Source", "Df", "Sum Sq", "Mean Sq", "Expected mean square", "Error term",
              "Den Df", "F", "Pr(>F)", ""]
    cols = {c: format_column(table[c].tolist(), d) for c, d in
            (("df", 5), ("sum_sq", 6), ("mean_sq", 6), ("den_df", 5), ("F", 5))}
    rows = []
    for i, (src, r) in enumerate(table.iterrows()):
        err = r["error_term"] if isinstance(r["error_term"], str) else ""
        rows.append([str(src), cols["df"][i], cols["sum_sq"][i], cols["mean_sq"][i],
                     str(r["ems"]), err, cols["den_df"][i], cols["F"][i], _pval(r["p"]),
                     _stars(r["p"])])
    return [header] + rows


def _stars(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return signif_stars(float(p))


def varcomp_rows(varcomp: pd.DataFrame) -> list[list[str]]:
    """Header and rows (text cells) of a moment-estimate table (:func:`render_varcomp`)."""
    level = varcomp.attrs.get("level", 0.95)
    pct = f"{100 * level:g}%"
    header = ["Component", "Variance", "Std.Dev.", "SE", "df", f"{pct} lower", f"{pct} upper", ""]
    cols = {c: format_column(varcomp[c].tolist(), d) for c, d in
            (("truncated", 5), ("sd", 5), ("se", 5), ("df", 4), ("lower", 5), ("upper", 5))}
    rows = []
    for i, (comp, r) in enumerate(varcomp.iterrows()):
        flag = f"negative estimate {_num(r['estimate'])} set to 0" if r["negative"] else ""
        rows.append([str(comp)] + [cols[c][i] for c in ("truncated", "sd", "se", "df", "lower",
                                                         "upper")] + [flag])
    return [header] + rows


def render_ems_table(table: pd.DataFrame, *, method: str | None = None, note: str = "") -> str:
    """Render an EMS table: source, df, SS, MS, EMS, error term, den df, F, p.

    Parameters
    ----------
    table : DataFrame
        Layout of :mod:`mixedanova.moments.ems_table`.
    method : str, optional
        Method line (default: ``table.attrs["method"]``).
    note : str
        Extra line, e.g. why Method III was used.
    """
    method = method or table.attrs.get("method", "")
    model = table.attrs.get("ems_model")
    lines = []
    if method:
        lines.append(f"ANOVA table, {method}" + (f", {model} mixed model" if model else ""))
    if note:
        lines.append(f"  ({note})")
    lines += align_columns(ems_rows(table), sep="  ", left={0, 4, 5, 9})
    if table["p"].notna().any():
        lines += ["---", SIGNIF]
    quasi = [str(s) for s, t in zip(table.index, table["test"]) if t == "quasi-F (Satterthwaite)"]
    if quasi:
        lines.append("Quasi-F (Satterthwaite denominator df) for: " + ", ".join(quasi))
    if table["Q"].any():
        lines.append("Q(term): quadratic form of the fixed effects of the term.")
    return "\n".join(lines)


def render_varcomp(varcomp: pd.DataFrame) -> str:
    """Render moment estimates: estimate, SD, SE, Satterthwaite df and CI.

    ``varcomp`` is :func:`mixedanova.moments.moments.varcomp_table` output.
    Negative estimates are shown raw, then as 0, and flagged.
    """
    lines = ["Variance components (method of moments, Cochran-Satterthwaite intervals)"]
    lines += align_columns(varcomp_rows(varcomp), sep="  ", left={0, 7})
    return "\n".join(lines)
