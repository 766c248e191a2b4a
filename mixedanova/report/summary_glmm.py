"""The glmer-style summary of a GLMM fit: text (what ``print`` shows) and the
styled HTML of the other summaries.  Rendering only: every number comes from
the results object passed to :meth:`GlmmSummary.from_results` (duck-typed)."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from .html import HTML_STYLE, SIGNIF, html_table, legend_html
from .summary import format_pvalue, signif_stars

__all__ = ["GlmmSummary"]


class GlmmSummary(str):
    """The summary text (a ``str``, so ``"..." in summary`` works) with
    :meth:`as_html` and a Jupyter display.

    Built by :meth:`from_results`; ``tables`` holds the sections as
    ``(title, rows, left columns)`` for the HTML form.
    """

    title_lines: list[str]
    tables: list[tuple[str, list[list[str]], set[int]]]
    notes: list[str]
    has_p: bool

    @classmethod
    def from_results(cls, res) -> "GlmmSummary":
        """Collect and render the summary of a :class:`~mixedanova.GlmmResults`."""
        fam = res.family
        method = ("Laplace Approximation" if res.nagq <= 1 else
                  f"Adaptive Gauss-Hermite Quadrature (nAGQ = {res.nagq})")
        title = [f"Generalized linear mixed model fit by maximum likelihood ({method})",
                 f" Family: {fam.name}  ( {fam.link.name} )", f"Formula: {res.formula}"]
        crit_keys = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
        crit_vals = [f"{res.aic:.1f}", f"{res.bic:.1f}", f"{res.llf:.1f}",
                     f"{res.minus_2_loglik:.1f}", f"{res.df_resid:d}"]
        q = np.quantile(res.resid("pearson").to_numpy(), [0, 0.25, 0.5, 0.75, 1])
        quant = [["Min", "1Q", "Median", "3Q", "Max"], [f"{v:.4f}" for v in q]]
        random = [["Groups", "Name", "Variance", "Std.Dev.", "Corr"]]
        for _, row in res.varcomp.iterrows():
            if pd.isna(row["var2"]):
                random.append([str(row["group"]), str(row["var1"]), f"{row['vcov']:.4g}",
                               f"{row['sdcor']:.4g}", ""])
            else:
                random.append(["", f"Corr({row['var1']},{row['var2']})", "", "",
                               f"{row['sdcor']:.3f}"])
        if all(r[4] == "" for r in random[1:]):
            random = [r[:4] for r in random]
        tab = res.fixed()
        fixed = [["", "Estimate", "Std. Error", "z value", "Pr(>|z|)", ""]]
        for name, r in tab.iterrows():
            label = "(Intercept)" if str(name) == "Intercept" else str(name)
            fixed.append([label, f"{r['estimate']:.5f}", f"{r['std_err']:.5f}",
                          f"{r['z']:.3f}", format_pvalue(r["p"]), signif_stars(r["p"])])
        groups = "; ".join(f"{g}, {n}" for g, n in res.ngroups.items())
        notes = []
        if res.is_singular:
            notes.append("boundary (singular) fit: see help('isSingular')")
        if not res.converged:
            notes.append("Convergence: " + "; ".join(res.convergence_messages))
        tables = [("", [crit_keys, crit_vals], set()),
                  ("Scaled residuals:", quant, set()),
                  ("Random effects:", random, {0, 1}),
                  (f"Number of obs: {res.nobs}, groups:  {groups}", [], set()),
                  ("Fixed effects:", fixed, {0, 5})]
        text = _text(title, tables, notes)
        out = cls(text)
        out.title_lines, out.tables, out.notes, out.has_p = title, tables, notes, True
        return out

    def as_text(self) -> str:
        """The plain-text summary."""
        return str(self)

    def as_html(self) -> str:
        """The summary as an HTML fragment: the style sheet of every report
        (:data:`mixedanova.report.html.HTML_STYLE`), tables, the legend."""
        esc = html.escape
        head, family, formula = (t.strip() for t in self.title_lines)
        parts = [HTML_STYLE, f"<div class='mixedanova-summary'><p><b>{esc(head)}</b><br>"
                 f"{esc(family)}<br>Formula: <code>{esc(formula.split(': ', 1)[1])}</code></p>"]
        for title, rows, left in self.tables:
            if title:
                parts.append(f"<p>{esc(title)}</p>")
            if rows:
                parts.append(html_table(rows, left, label=title not in ("", "Scaled residuals:")))
        if self.has_p:
            parts.append(legend_html())
        if self.notes:
            parts.append("<p class='note'>" + "<br>".join(esc(n) for n in self.notes) + "</p>")
        parts.append("</div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.as_html()


def _text(title: list[str], tables: list, notes: list[str]) -> str:
    """lme4's layout: right-aligned columns, the names left-aligned."""
    from .summary import align_columns

    lines = list(title) + [""]
    for heading, rows, left in tables:
        if heading:
            lines.append(heading)
        if rows:
            body = align_columns(rows, left=left)
            lines += [" " + b for b in body] if heading == "Random effects:" else body
        if heading != "Random effects:" and heading != "Fixed effects:":
            lines.append("")
        if heading == "Fixed effects:":
            lines += ["---", SIGNIF]
    return "\n".join(lines + notes)
