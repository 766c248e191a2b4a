"""Results of a method-of-moments (ANOVA) fit.

:class:`AnovaResults` is a :class:`~mixedanova.results.lmm.LinearMixedResults` whose
variance parameters are the moment estimates (negative ones set to 0); the fixed
effects are their GLS estimates and the BLUPs come from the mixed model
equations at those values.  It adds the EMS table, the raw moment estimates
with SEs and Cochran-Satterthwaite intervals, and intervals for sums of
components.
"""
from __future__ import annotations

from functools import cached_property

import pandas as pd

from ..moments.moments import AnovaFitState, VarcompInterval, varcomp_ci, varcomp_table
from .lmm import LinearMixedResults

__all__ = ["AnovaResults", "EMS_SHOWN"]

#: The columns of :meth:`AnovaResults.ems_table` its printed form shows.
EMS_SHOWN = ("df", "sum_sq", "mean_sq", "ems", "error_term", "den_df", "F", "p")


class AnovaResults(LinearMixedResults):
    """A linear mixed model fitted by the method of moments (``method="ANOVA"``)."""

    @property
    def anova_state(self) -> AnovaFitState:
        """The ANOVA engine's output."""
        return self.state.moments

    @property
    def ems_method(self) -> str:
        """``"EMS rules (balanced)"`` or ``"Henderson Method III (Type I SS)"``."""
        return self.anova_state.method

    def ems_table(self) -> pd.DataFrame:
        """One row per source (fixed terms, random terms, Residual).

        Columns: ``df, sum_sq, mean_sq, ems`` (text), one coefficient column per
        variance component (``s2_e``, ``s2_<group>``), ``Q`` (fixed-effect
        quadratic form present) and ``Q_coef``, ``error_term`` (the source or
        combination of sources in the F denominator), ``test``, ``den_df``,
        ``F``, ``p``.  ``attrs["method"]`` says whether the balanced EMS rules or
        Henderson's Method III were used.  A DataFrame (a
        :class:`~mixedanova.report.tables.ReportTable`) whose printed form shows
        the heading and ``df, sum_sq, mean_sq, ems, error_term, den_df, F, p``
        within 80 characters (``print(table.full())`` shows every column) and
        whose Jupyter form is the styled HTML of all of them.

        Examples
        --------
        >>> import mixedanova as ma
        >>> pen = ma.load_dataset("bhh_penicillin")
        >>> aov = ma.lmm("yield ~ treat + (1|blend)", pen, method="ANOVA")
        >>> aov.ems_table()["ems"].tolist()
        ['s2_e + Q(treat)', 's2_e + 4 s2_blend', 's2_e']
        >>> round(float(aov.ems_table().loc["blend", "F"]), 4)   # summary(aov(...))
        3.5044
        """
        from ..report.tables import report_table

        st = self.anova_state
        heading = f"ANOVA table, {st.method}, {st.ems_model} mixed model"
        return report_table(st.table.copy(), heading, [st.note] if st.note else [],
                            shown=EMS_SHOWN)

    @cached_property
    def moment_estimates(self) -> pd.DataFrame:
        """Per component: raw ``estimate`` (may be negative), ``truncated``,
        ``negative``, ``sd``, ``se``, Satterthwaite ``df`` and the 95% interval
        (printed wrapped at 80 characters, df rounded for display)."""
        from ..report.tables import report_table

        return report_table(varcomp_table(self.anova_state),
                            "Variance components (method of moments, "
                            "Cochran-Satterthwaite intervals)")

    def varcomp_ci(self, combination: dict | str, level: float = 0.95) -> VarcompInterval:
        """Estimate, SE and Cochran-Satterthwaite interval of a sum of components.

        Parameters
        ----------
        combination : dict or str
            ``{"blend": 1, "Residual": 1}`` or ``"V(Y) = s2_blend + s2_e"``.
        level : float
        """
        return varcomp_ci(self.anova_state, combination, level)

    def _summary_parts(self) -> dict:
        from ..report.summary_anova import (ems_rows, render_ems_table, render_varcomp,
                                            varcomp_rows)

        parts = super()._summary_parts()
        st = self.anova_state
        parts["criteria"] = {"REML criterion at the moment estimates": self.state.objective}
        parts["extra"] = [
            ("", render_ems_table(st.table, method=st.method, note=st.note)),
            ("", render_varcomp(self.moment_estimates)),
        ]
        model = f", {st.ems_model} mixed model" if st.ems_model else ""
        parts["extra_rows"] = [
            (f"ANOVA table, {st.method}{model}" + (f" ({st.note})" if st.note else ""),
             ems_rows(st.table), {0, 4, 5, 9}),
            ("Variance components (method of moments, Cochran-Satterthwaite intervals)",
             varcomp_rows(self.moment_estimates), {0, 7}),
        ]
        neg = [c for c in st.components if bool(st.negative[c])]
        if neg:
            parts["notes"].insert(0, "negative moment estimate(s) set to 0: " + ", ".join(
                f"{c} ({st.estimates[c]:.6g})" for c in neg))
        return parts
