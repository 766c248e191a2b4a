"""The HTML of every report: one small embedded style sheet and one table
writer, shared by the summaries (lmm, ANOVA, GLMM) and the printed tables.

Numbers are right-aligned with tabular figures (so decimals line up), text
columns left-aligned, cells bordered, and the significance legend set in a
smaller font.  Rendering only.
"""
from __future__ import annotations

import html
from typing import Collection

__all__ = ["HTML_STYLE", "SIGNIF", "html_table", "legend_html"]

#: The style of the HTML reports: numbers right-aligned with aligned decimals
#: (tabular figures), borders, the significance legend in a smaller font.
HTML_STYLE = """<style>
.mixedanova-summary { overflow-x: auto; }
.mixedanova-summary table { border-collapse: collapse; margin: 0.3em 0 0.8em 0;
  font-variant-numeric: tabular-nums; }
.mixedanova-summary th, .mixedanova-summary td { border: 1px solid #bbb;
  padding: 0.15em 0.5em; text-align: right; white-space: nowrap; }
.mixedanova-summary th:first-child, .mixedanova-summary td:first-child,
.mixedanova-summary th.l, .mixedanova-summary td.l { text-align: left; }
.mixedanova-summary th.n, .mixedanova-summary td.n { text-align: right; }
.mixedanova-summary th { background: #f3f3f3; }
.mixedanova-summary .legend, .mixedanova-summary .note { font-size: 85%; color: #555; }
</style>"""

#: R's significance codes line.
SIGNIF = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def html_table(rows: list[list[str]], left: Collection[int] = (), label: bool = True) -> str:
    """Header row + body rows of text cells as an HTML table.

    Columns whose header and cells are all empty are left out.

    Parameters
    ----------
    rows : list of list of str
        The header, then the body rows.
    left : collection of int
        Indices of text columns (left-aligned).
    label : bool
        The first column holds row labels (left-aligned); False for a table of
        numbers only (criteria, residual quantiles), whose first column is
        right-aligned like the others.
    """
    esc = html.escape
    keep = [i for i in range(len(rows[0])) if any(str(r[i]).strip() for r in rows)]
    rows = [[r[i] for i in keep] for r in rows]
    left = {keep.index(i) for i in left if i in keep}

    def cls(i: int) -> str:
        if i == 0:
            return "" if label else " class='n'"
        return " class='l'" if i in left else ""

    head = "".join(f"<th{cls(i)}>{esc(c)}</th>" for i, c in enumerate(rows[0]))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def legend_html() -> str:
    """The significance legend paragraph (R's codes)."""
    return f"<p class='legend'>Signif. codes: {html.escape(SIGNIF.split(':', 1)[1].strip())}</p>"
