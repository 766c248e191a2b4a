"""Result tables that print within 80 columns.

:class:`ReportTable` is a :class:`pandas.DataFrame` (every column stays in the
frame) whose printed form wraps its columns in blocks of at most 80 characters
and keeps a heading and notes, and whose Jupyter form is the styled HTML of the
summaries (:data:`mixedanova.report.html.HTML_STYLE`).  A table may show a
deliberate subset of its columns (``shown``); the print then names the hidden
columns and the call that shows them all (``table.full()``).

Rendering only: nothing here computes a number.
"""
from __future__ import annotations

import html
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .html import HTML_STYLE, html_table
from .summary import format_column

__all__ = ["ReportTable", "report_table", "WIDTH", "frame_rows", "frame_html", "DF_COLUMNS"]

#: Columns of degrees of freedom, rounded to 4 significant digits for display.
DF_COLUMNS = ("df", "den_df", "Df")

#: The width the printed tables fit (a terminal's default).
WIDTH = 80


def _cell(value) -> str:
    """One cell as text for the HTML form (numbers to 6 significant digits)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


def frame_rows(frame: pd.DataFrame) -> tuple[list[list[str]], set[int]]:
    """Header and rows of text cells of ``frame`` (index first), and the
    indices of its text columns (left-aligned in HTML)."""
    names = [str(n) for n in frame.index.names if n is not None]
    head = [" / ".join(names)] + [str(c) for c in frame.columns]
    def column(j: int) -> list[str]:
        values = frame.iloc[:, j]
        if not pd.api.types.is_float_dtype(values):
            return [_cell(v) for v in values]
        if str(frame.columns[j]) in DF_COLUMNS:  # Satterthwaite's 44.999995 shows as 45
            return format_column([float(f"{v:.4g}") for v in values], 4)
        return format_column(values.tolist(), 6)

    cells = [column(j) for j in range(frame.shape[1])]
    rows = [head]
    for i, idx in enumerate(frame.index):
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        rows.append([label] + [col[i] for col in cells])
    def is_text(values: pd.Series) -> bool:
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            return False
        return not values.map(lambda v: v is None or isinstance(v, (int, float, np.number))).all()

    left = {0} | {j + 1 for j in range(frame.shape[1]) if is_text(frame.iloc[:, j])}
    return rows, left


class ReportTable(pd.DataFrame):
    """A DataFrame that prints every column (or a deliberate choice of them)
    within 80 characters, with its heading and notes.  The attributes are
    pandas metadata, kept by slices.

    Attributes
    ----------
    heading : str
        First line of the printed form.
    notes : list of str
        Lines printed under the table.
    shown : list of str or None
        Columns the printed form shows; None shows all.  The others stay in the
        frame; :meth:`full` prints them all.
    """

    _metadata = ["heading", "notes", "shown"]

    @property
    def _constructor(self):
        return ReportTable

    def _shown_frame(self) -> tuple[pd.DataFrame, list[str]]:
        shown = [c for c in (getattr(self, "shown", None) or []) if c in self.columns]
        if not shown:
            return pd.DataFrame(self), []
        hidden = [str(c) for c in self.columns if c not in shown]
        return pd.DataFrame(self)[shown], hidden

    def to_text(self, all_columns: bool = False) -> str:
        """The printed form: heading, the table wrapped at 80 characters, notes.

        Parameters
        ----------
        all_columns : bool
            Show every column, also those left out of the default print.
        """
        frame, hidden = (pd.DataFrame(self), []) if all_columns else self._shown_frame()
        # a missing name (None in a text column) prints blank, not "None"
        text_cols = [c for c in frame.columns if frame[c].dtype == object]
        if text_cols:
            frame = frame.copy()
            for c in text_cols:
                frame[c] = frame[c].map(lambda v: "" if v is None else v)
        # df columns (Satterthwaite's 17.000007) rounded for display only
        fmt = {c: (lambda v: f"{v:.4g}") for c in DF_COLUMNS
               if c in frame.columns and pd.api.types.is_float_dtype(frame[c])} or None
        parts = []
        heading = getattr(self, "heading", None)
        if heading:
            parts.append(str(heading))
        parts.append(frame.to_string(line_width=WIDTH, formatters=fmt))
        parts.extend(str(n) for n in (getattr(self, "notes", None) or []))
        if hidden:
            parts.append(_hidden_note(hidden))
        return "\n".join(parts)

    def full(self) -> str:
        """Every column as text (wrapped at 80 characters): ``print(table.full())``."""
        return self.to_text(all_columns=True)

    def __repr__(self) -> str:
        return self.to_text()

    __str__ = __repr__

    def _repr_html_(self) -> str:
        """Jupyter display: heading, the styled table (all columns), notes."""
        return frame_html(pd.DataFrame(self), getattr(self, "heading", None) or "",
                          getattr(self, "notes", None) or [])


def frame_html(frame: pd.DataFrame, heading: str = "", notes: Iterable[str] = ()) -> str:
    """A table as the reports' styled HTML: heading, the table (numbers
    right-aligned with one number of decimals per column), notes."""
    esc = html.escape
    rows, left = frame_rows(frame)
    return (HTML_STYLE + "<div class='mixedanova-summary'>"
            + (f"<p><b>{'<br>'.join(esc(x) for x in str(heading).splitlines())}</b></p>"
               if heading else "")
            + html_table(rows, left=left)
            + "".join(f"<p class='note'>{esc(str(n))}</p>" for n in notes)
            + "</div>")


def _hidden_note(hidden: Sequence[str]) -> str:
    """The line that names the columns a print leaves out, wrapped at 80."""
    words = ("Not shown: " + ", ".join(hidden) + "; print(table.full()) shows every "
             "column").split(" ")
    lines, line = [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > WIDTH:
            lines.append(line)
            line = "  " + w
        else:
            line = f"{line} {w}" if line else w
    return "\n".join(lines + [line])


def report_table(frame: pd.DataFrame, heading: str = "", notes: Iterable[str] = (),
                 shown: Sequence[str] | None = None) -> ReportTable:
    """``frame`` as a :class:`ReportTable` (its ``attrs`` kept).

    Parameters
    ----------
    frame : pandas.DataFrame
    heading : str
    notes : iterable of str
    shown : sequence of str, optional
        The columns the printed form shows (default: all).
    """
    out = ReportTable(frame)
    out.attrs.update(frame.attrs)
    out.heading = heading
    out.notes = list(notes)
    out.shown = list(shown) if shown is not None else None
    return out
