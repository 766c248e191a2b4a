"""The lme4-style printed report.  Rendering only: every number comes from the
results object; this module formats tables and computes nothing."""
from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .html import HTML_STYLE, SIGNIF, html_table, legend_html

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


def format_column(values, digits: int = 5, max_decimals: int = 6) -> list[str]:
    """Numbers of one column with a common number of decimals, so that their
    decimal points line up when right-aligned (R's ``format`` of a column): the
    element that needs the most decimals for ``digits`` significant digits sets
    them (at most ``max_decimals``); integers stay integers; missing values are
    empty; values too small or too large for that fall back to ``%g``."""
    vals = [None if v is None or not np.isfinite(float(v)) else float(v) for v in values]
    present = [v for v in vals if v is not None]
    if present and all(v == int(v) and abs(v) < 1e12 for v in present):
        return ["" if v is None else str(int(v)) for v in vals]
    dec = 0
    for v in present:
        text = f"{v:.{digits}g}"
        if v != 0 and "e" not in text and "." in text:
            dec = max(dec, len(text.split(".")[1]))
    dec = min(dec, max_decimals)
    out = []
    for v in vals:
        if v is None:
            out.append("")
        elif v != 0 and (abs(v) < 10.0 ** -dec or abs(v) >= 1e12):
            out.append(f"{v:.{digits}g}")
        else:
            out.append(f"{v:.{dec}f}")
    return out


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
    extra_rows : list of (title, rows) or (title, rows, left)
        The same sections as header + rows of text cells, used by
        :meth:`as_html` and :meth:`as_latex` instead of ``extra`` when given;
        ``left`` the indices of text columns (left-aligned in HTML).
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
    extra_rows: list = field(default_factory=list)
    fixed_corr: pd.DataFrame | None = None
    correlation: bool = False

    @classmethod
    def from_results(cls, res, correlation: bool = False) -> "Summary":
        """Collect the tables of a results object (which computes them);
        ``correlation`` adds lme4's "Correlation of Fixed Effects" block."""
        return cls(**res._summary_parts(), correlation=correlation)

    def __str__(self) -> str:
        return self.as_text()

    def __contains__(self, text: str) -> bool:
        """``"..." in summary`` searches the printed text."""
        return text in self.as_text()

    def as_text(self) -> str:
        """The lme4-style plain-text report (what ``print`` shows)."""
        lines = [self.title, f"Formula: {self.formula}", ""]
        lines += self._criteria_lines()
        q = self.residual_quantiles
        lines += ["Scaled residuals:"]
        lines += align_columns([list(q.index), [f"{v:.4f}" for v in q.to_numpy()]])
        lines += ["", "Random effects:"]
        rows, left = self._random_rows()
        lines += [" " + line for line in align_columns(rows, left=left)]
        lines += [f"Number of obs: {self.nobs}, groups:  {self._groups_text()}", ""]
        rows, left = self._fixed_rows()
        lines += ["Fixed effects:"] + align_columns(rows, left=left)
        if any(c.startswith("Pr(") for c in self.fixed.columns):
            lines += ["---", _SIGNIF]
        corr = self._corr_rows()
        if corr:
            lines += ["", "Correlation of Fixed Effects:"] + align_columns(corr, left={0})
        for title, text in self.extra:
            lines += ["", title, text] if title else ["", text]
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.as_html()

    def as_html(self) -> str:
        """The report as an HTML fragment (tables for Jupyter or a web page)."""
        esc = html.escape
        q = self.residual_quantiles
        parts = [HTML_STYLE,
                 f"<div class='mixedanova-summary'><p><b>{esc(self.title).replace(chr(10), '<br>')}</b><br>"
                 f"Formula: <code>{esc(self.formula)}</code></p>"]
        crit = [list(self.criteria), [_crit(k, v) for k, v in self.criteria.items()]]
        parts.append(html_table(crit, label=False))
        parts.append("<p>Scaled residuals:</p>")
        parts.append(html_table([list(q.index), [f"{v:.4f}" for v in q.to_numpy()]],
                                label=False))
        parts.append("<p>Random effects:</p>")
        rows, left = self._random_rows()
        parts.append(html_table(rows, left - {4}))  # correlations are numbers
        parts.append(f"<p>Number of obs: {self.nobs}, groups: {esc(self._groups_text())}</p>")
        parts.append("<p>Fixed effects:</p>")
        parts.append(html_table(*self._fixed_rows()))
        if any(c.startswith("Pr(") for c in self.fixed.columns):
            parts.append(legend_html())
        corr = self._corr_rows()
        if corr:
            parts.append("<p>Correlation of Fixed Effects:</p>")
            parts.append(html_table(corr))
        if self.extra_rows:
            legend = any(c.startswith("Pr(") for c in self.fixed.columns)
            for title, rows, *left in self.extra_rows:
                parts.append(f"<p>{esc(title)}</p>")
                parts.append(html_table(rows, *left))
                if not legend and any(str(c).startswith("Pr(") for c in rows[0]):
                    parts.append(legend_html())  # R's summary(aov) legend
                    legend = True
        else:
            for title, text in self.extra:
                if title:
                    parts.append(f"<p>{esc(title)}</p>")
                parts.append(f"<pre>{esc(text)}</pre>")
        if self.notes:
            parts.append("<p class='note'>" + "<br>".join(esc(n) for n in self.notes) + "</p>")
        parts.append("</div>")
        return "\n".join(parts)

    def as_latex(self) -> str:
        """The report as LaTeX: ``tabular`` environments for the tables (needs
        no package beyond standard LaTeX); extra sections go in ``verbatim``."""
        out = [f"\\textbf{{{_tex(self.title)}}}\\\\",
               f"Formula: \\texttt{{{_tex(self.formula)}}}\\\\", ""]
        crit = [list(self.criteria), [_crit(k, v) for k, v in self.criteria.items()]]
        out += [_latex_table(crit), "", "Random effects:\\\\", _latex_table(self._random_rows()[0]),
                "", f"Number of obs: {self.nobs}, groups: {_tex(self._groups_text())}\\\\", "",
                "Fixed effects:\\\\", _latex_table(self._fixed_rows()[0])]
        if self.extra_rows:
            for title, rows, *_ in self.extra_rows:
                out += ["", _tex(title) + "\\\\", _latex_table(rows)]
        else:
            for title, text in self.extra:
                out += ["", _tex(title) + "\\\\" if title else "",
                        "\\begin{verbatim}", text, "\\end{verbatim}"]
        if self.notes:
            out += [""] + [_tex(n) + "\\\\" for n in self.notes]
        return "\n".join(out)

    def _groups_text(self) -> str:
        return ", ".join(f"{g}, {k}" for g, k in self.ngroups.items())

    def _criteria_lines(self) -> list[str]:
        c = self.criteria
        if len(c) == 1:
            (label, value), = c.items()
            return [f"{label}: {value:.4f}", ""]
        keys = [k for k in ("AIC", "BIC", "logLik", "deviance", "df.resid") if k in c]
        vals = [_crit(k, c[k]) for k in keys]
        return align_columns([keys, vals]) + [""]

    def _random_rows(self) -> tuple[list[list[str]], set[int]]:
        """Header and rows of the random-effects table, and its left-aligned columns."""
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
        return rows, {0, 1} | ({4} if has_corr else set())

    def _fixed_rows(self) -> tuple[list[list[str]], set[int]]:
        """Header and rows of the fixed-effects table, and its left-aligned columns."""
        fx = self.fixed
        cols = list(fx.columns)
        rows = [[""] + cols]
        for name, r in fx.iterrows():
            row = [_display_name(name)]
            for c in cols:
                v = r[c]
                if c.startswith("Pr("):
                    row.append(format_pvalue(v))
                elif c == "":
                    row.append(str(v))
                else:
                    row.append(_num(v))
            rows.append(row)
        return rows, ({0, len(cols)} if cols and cols[-1] == "" else {0})


    def _corr_rows(self) -> list[list[str]]:
        """lme4's "Correlation of Fixed Effects" (lower triangle, 3 decimals, the
        columns named by R's ``abbreviate(minlength = 6)``); empty when not asked
        for or with fewer than two fixed effects."""
        C = self.fixed_corr
        if not self.correlation or C is None or len(C) < 2:
            return []
        names = [_display_name(n) for n in C.index]
        rows = [[""] + [abbreviate(n) for n in names[:-1]]]
        values = C.to_numpy()
        for i in range(1, len(names)):
            rows.append([names[i]] + [f"{values[i, j]:.3f}" for j in range(i)]
                        + [""] * (len(names) - 1 - i))
        return rows


def _display_name(name) -> str:
    """A fixed effect's name as lme4 prints it (``(Intercept)``)."""
    return "(Intercept)" if str(name) == "Intercept" else str(name)


def abbreviate(name: str, minlength: int = 6) -> str:
    """R's ``abbreviate(name, minlength)``: drop lower-case vowels from the right
    (never the first character), then lower-case letters, then truncate."""
    chars = list(name)
    for pred in (lambda c: c in "aeiou", lambda c: c.islower()):
        i = len(chars) - 1
        while len(chars) > minlength and i > 0:
            if pred(chars[i]):
                del chars[i]
            i -= 1
    return "".join(chars[:max(minlength, 1)]) if len(chars) > minlength else "".join(chars)


_SIGNIF = SIGNIF


def _crit(key: str, value) -> str:
    return str(value) if key == "df.resid" else f"{value:.4f}"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
        "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def _tex(text: str) -> str:
    """Escape LaTeX's special characters."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _latex_table(rows: list[list[str]]) -> str:
    """Header row + body rows of text cells as a LaTeX ``tabular``."""
    ncol = len(rows[0])
    lines = ["\\begin{tabular}{l" + "r" * (ncol - 1) + "}", "\\hline",
             " & ".join(_tex(c) for c in rows[0]) + " \\\\", "\\hline"]
    lines += [" & ".join(_tex(c) for c in r) + " \\\\" for r in rows[1:]]
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines)
