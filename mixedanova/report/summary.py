"""The lme4-style printed report.  Rendering only: every number comes from the
results object; this module formats tables and computes nothing."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["Summary", "format_pvalue", "signif_stars", "align_columns"]


def format_pvalue(p: float) -> str:
    """R's ``format.pval`` style: ``< 2e-16`` below machine precision."""
    if p is None or not np.isfinite(p):
        return ""
    if p < 2.2e-16:
        return "< 2e-16"
    if p < 1e-4:
        return f"{p:.2e}"
    return f"{p:.4f}".rstrip("0").rstrip(".") if p >= 1e-3 else f"{p:.6f}"


def signif_stars(p: float) -> str:
    """R's significance codes."""
    if p is None or not np.isfinite(p):
        return ""
    for cut, star in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return star
    return ""


def _num(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e6 else f"{x:.{digits}f}"


def align_columns(rows: list[list[str]], left: set[int] = frozenset(),
                  sep: str = " ") -> list[str]:
    """Rows of cells as text lines, columns padded to a common width (right
    aligned, except the column indices in ``left``)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in
                 enumerate(zip(r, widths))]
        out.append(sep.join(cells).rstrip())
    return out


@dataclass
class Summary:
    """Tables of a fit and their lme4-style rendering (``str(summary)``).

    Attributes
    ----------
    title, formula : str
    criteria : dict
        ``REML criterion`` or ``AIC``/``BIC``/``logLik``/``deviance``/``df.resid``.
    residual_quantiles : pandas.Series
        Scaled residuals: Min, 1Q, Median, 3Q, Max.
    random : pandas.DataFrame
        Variance components (``varcomp``).
    fixed : pandas.DataFrame
        Fixed-effects table; columns depend on the df method.
    notes : list of str
        Dropped rows, dropped columns, singular fit, convergence messages, df method.
    extra : list of (title, text)
        Further sections (an ANOVA fit's EMS table).
    """

    title: str
    formula: str
    criteria: dict
    residual_quantiles: pd.Series
    random: pd.DataFrame
    nobs: int
    ngroups: dict
    fixed: pd.DataFrame
    notes: list = field(default_factory=list)
    extra: list = field(default_factory=list)

    @classmethod
    def from_results(cls, res) -> "Summary":
        """Collect the tables of a results object (which computes them)."""
        return cls(**res._summary_parts())

    def __str__(self) -> str:
        lines = [self.title, f"Formula: {self.formula}", ""]
        lines += self._criteria_lines()
        q = self.residual_quantiles
        lines += ["Scaled residuals:"]
        lines += align_columns([list(q.index), [f"{v:.4f}" for v in q.to_numpy()]])
        lines += ["", "Random effects:"]
        lines += self._random_lines()
        groups = ", ".join(f"{g}, {k}" for g, k in self.ngroups.items())
        lines += [f"Number of obs: {self.nobs}, groups:  {groups}", ""]
        lines += self._fixed_lines()
        for title, text in self.extra:
            lines += ["", title, text] if title else ["", text]
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines)

    def _criteria_lines(self) -> list[str]:
        c = self.criteria
        if len(c) == 1:
            (label, value), = c.items()
            return [f"{label}: {value:.4f}", ""]
        keys = [k for k in ("AIC", "BIC", "logLik", "deviance", "df.resid") if k in c]
        vals = [f"{c[k]:.4f}" if k != "df.resid" else str(c[k]) for k in keys]
        return align_columns([keys, vals]) + [""]

    def _random_lines(self) -> list[str]:
        vc = self.random
        head = ["Groups", "Name", "Variance", "Std.Dev."]
        variances = vc[vc["var2"].isna()]
        corr = vc[vc["var2"].notna()]
        has_corr = len(corr) > 0
        rows = [head + (["Corr"] if has_corr else [])]
        last_group = None
        for _, r in variances.iterrows():
            group = "" if r["group"] == last_group else r["group"]
            last_group = r["group"]
            name = "" if pd.isna(r["var1"]) else str(r["var1"])
            row = [group, name, _num(r["vcov"]), _num(r["sdcor"])]
            if has_corr:
                cs = corr[(corr["group"] == r["group"]) & (corr["var2"] == r["var1"])]
                row.append(" ".join(f"{v:.2f}" for v in cs["sdcor"]))
            rows.append(row)
        return [" " + line for line in align_columns(rows, left={0, 1} | ({4} if has_corr else set()))]

    def _fixed_lines(self) -> list[str]:
        fx = self.fixed
        lines = ["Fixed effects:"]
        cols = list(fx.columns)
        rows = [[""] + cols]
        for name, r in fx.iterrows():
            row = [str(name)]
            for c in cols:
                v = r[c]
                if c.startswith("Pr("):
                    row.append(format_pvalue(v))
                elif c == "":
                    row.append(str(v))
                else:
                    row.append(_num(v))
            rows.append(row)
        lines += align_columns(rows, left={0, len(cols)} if cols and cols[-1] == "" else {0})
        if any(c.startswith("Pr(") for c in cols):
            lines += ["---", "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"]
        return lines
