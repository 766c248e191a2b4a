"""The lme4 / lmerTest / emmeans workflow on a fit: coef, residual types,
predictions with ``re_form`` and intervals, marginal means, R2 and ICC,
influence diagnostics, update and simulate.

:class:`WorkflowMixin` is mixed into
:class:`~mixedanova.results.lmm.LinearMixedResults`; each method is a thin
delegation to :mod:`mixedanova.inference` (``prediction``, ``emmeans``, ``r2``,
``influence``, ``simulate``) or to the model (``update``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ArgumentError, MixedAnovaError

__all__ = ["WorkflowMixin"]

_RESIDUAL_TYPES = ("response", "pearson", "scaled", "normalized")


class WorkflowMixin:
    """Methods of :class:`LinearMixedResults` for the R workflow (see module docstring)."""

    # ------------------------------------------------------------ coefficients
    def _term_covariances(self) -> list[np.ndarray]:
        """Per random term its ``VarCorr`` matrix ``sigma^2 T T'``."""
        s2 = self.sigma ** 2
        return [s2 * T @ T.T for T in self._templates()]

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-group coefficients (lme4's ``coef(m)``): one DataFrame per grouping
        factor, indexed by level, with every fixed-effect column; columns that have
        a random effect for that factor hold fixed + random (lme4's
        ``(Intercept)`` maps to formulaic's ``Intercept``).  Each prints every
        column, wrapped at 80 characters
        (:class:`~mixedanova.report.tables.ReportTable`).

        Examples
        --------
        >>> import mixedanova as ma
        >>> res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"))
        >>> res.coef()["Subject"].head(3).round(2)        # lme4: coef(m)$Subject
                 Intercept   Days
        Subject
        308         253.66  19.67
        309         211.01   1.85
        310         212.44   5.02
        """
        from ..report.tables import report_table

        beta = self.fe_params
        out = {}
        for group, re in self.random_effects.items():
            table = pd.DataFrame(np.tile(beta.to_numpy(), (len(re), 1)), index=re.index,
                                 columns=list(beta.index))
            for col in re.columns:
                name = "Intercept" if col == "(Intercept)" else col
                if name in table.columns:
                    table[name] = table[name] + re[col].to_numpy()
                else:
                    table[name] = re[col].to_numpy()
            out[group] = report_table(table)
        return out

    # ------------------------------------------------------------ residuals
    def residuals(self, type: str = "response") -> pd.Series:
        """Residuals as lme4's ``residuals(m, type)``.

        ``"response"``: ``y - fitted``; ``"pearson"``: ``sqrt(w) (y - fitted)``
        (lme4 does not divide by sigma); ``"scaled"``: the Pearson residuals over
        sigma (``residuals(m, scaled = TRUE)``); ``"normalized"``: nlme's
        ``residuals(m, type = "normalized")``, the residuals over their SD
        decorrelated within each residual correlation group
        (:attr:`resid_normalized`; the scaled residuals without a residual structure).
        """
        if type not in _RESIDUAL_TYPES:
            raise MixedAnovaError(f"type must be one of {', '.join(_RESIDUAL_TYPES)}, not {type!r}")
        if type == "normalized":
            return self.resid_normalized
        r = self.resid.to_numpy()
        if type != "response":
            r = r * np.sqrt(self.design.prior_weights)
        if type == "scaled":
            r = r / self.sigma
        return pd.Series(r, index=self.design.row_index, name=f"resid_{type}")

    def hatvalues(self) -> pd.Series:
        """Diagonal of the hat matrix (lme4's ``hatvalues(m)``)."""
        from ..inference.influence import hatvalues
        return hatvalues(self)

    def cooks_distance(self) -> pd.Series:
        """lme4's ``cooks.distance(m)`` (one-step, no refits)."""
        from ..inference.influence import cooks_distance
        return cooks_distance(self)

    def influence(self, groups: str | None = None):
        """Deletion refits (lme4's ``influence(m, groups)``); see
        :func:`mixedanova.inference.influence.influence`."""
        from ..inference.influence import influence
        return influence(self, groups)

    # ------------------------------------------------------------ predictions
    def predict(self, newdata: pd.DataFrame | None = None, re_form=None,
                allow_new_levels: bool = False, include_random: bool | None = None,
                se_fit: bool = False):
        """Predictions as lme4's ``predict(m, newdata, re.form, allow.new.levels)``.

        Parameters
        ----------
        newdata : DataFrame, optional
            New rows; the fitted rows when omitted.
        re_form : None, str
            ``None``: all random terms (conditional predictions); ``"~0"`` or
            ``"NA"``: none (population level); ``"~(1|plate)"``: those terms.
        allow_new_levels : bool
            Unseen levels get random effect 0 instead of an error.
        include_random : bool, optional
            Older spelling: ``False`` is ``re_form="~0"``.
        se_fit : bool
            Return a DataFrame with ``mean`` and ``se_fit`` (the SE of the fixed
            part, as R's ``predict(..., se.fit = TRUE)`` for population-level
            predictions) instead of a Series; :meth:`get_prediction` adds intervals.

        Offsets (``offset()`` terms and an ``offset=`` column) are included.
        """
        from ..inference.prediction import get_prediction, predict
        if include_random is not None and not isinstance(include_random, (bool, np.bool_)):
            raise ArgumentError(f"include_random must be True or False, not {include_random!r}")
        if include_random is not None and re_form is None:
            re_form = None if include_random else "~0"
        if se_fit:
            return get_prediction(self, newdata, re_form, allow_new_levels,
                                  ddf="none")[["mean", "se_fit"]]
        return predict(self, newdata, re_form, allow_new_levels)

    def get_prediction(self, newdata: pd.DataFrame | None = None, re_form=None,
                       allow_new_levels: bool = False, ddf: str = "satterthwaite",
                       level: float = 0.95) -> pd.DataFrame:
        """Predictions with SE of the fixed part, df, confidence and prediction
        intervals; see :func:`mixedanova.inference.prediction.get_prediction`.
        Prints every column within 80 characters."""
        from ..report.tables import report_table
        from ..inference.prediction import get_prediction
        return report_table(get_prediction(self, newdata, re_form, allow_new_levels, ddf,
                                           level))

    # ------------------------------------------------------------ marginal means
    def emmeans(self, specs, by=None, ddf: str = "satterthwaite", level: float = 0.95,
                at: dict | None = None):
        """Estimated marginal means (emmeans); ``.pairs(adjust=...)`` and
        ``.contrast({...})`` on the result.  See
        :func:`mixedanova.inference.emmeans.emmeans`.

        Examples
        --------
        >>> import mixedanova as ma
        >>> res = ma.lmm("yield ~ treat + (1|blend)", ma.load_dataset("bhh_penicillin"))
        >>> emm = res.emmeans("treat")                    # emmeans(m, ~ treat)
        >>> emm["emmean"].round(2).tolist()
        [84.0, 85.0, 89.0, 86.0]
        >>> emm.pairs(adjust="tukey")["p_value"].round(3).tolist()   # pairs(emm)
        [0.983, 0.311, 0.884, 0.491, 0.983, 0.7]
        """
        from ..inference.emmeans import emmeans
        return emmeans(self, specs, by=by, ddf=ddf, level=level, at=at)

    # ------------------------------------------------------------ R2 / ICC
    def r2(self) -> pd.Series:
        """Nakagawa's marginal and conditional R2 (``performance::r2_nakagawa``)."""
        from ..inference.r2 import r2_nakagawa
        return r2_nakagawa(self)

    def icc(self, by_group: bool = False) -> pd.Series:
        """Adjusted and unadjusted ICC (``performance::icc``), or per group."""
        from ..inference.r2 import icc
        return icc(self, by_group=by_group)

    # ------------------------------------------------------------ refits
    def update(self, formula: str | None = None, data: pd.DataFrame | None = None,
               method: str | None = None, **fit_kwargs):
        """Refit with a new formula, data or method (lme4's ``update(m, ...)``).

        ``formula`` may use ``.`` for the current formula's sides, as in R:
        ``". ~ . + x"`` or ``". ~ . - (1|g)"`` (a term is removed only if written
        exactly as in the formula).  Prior weights and the ``offset=`` column are
        carried over.
        """
        new = self.design.formula.formula if formula is None else \
            _expand_dot(self.design.formula, formula)
        model = self.model.update(new, data=data)
        return model.fit(self.method if method is None else method, **fit_kwargs)

    def simulate(self, n: int = 1, seed=None, use_random: bool = False) -> pd.DataFrame:
        """Responses drawn from the fitted model (lme4's ``simulate(m, nsim, seed)``).

        ``use_random=True`` conditions on the fitted random effects (lme4's
        ``use.u = TRUE``); by default new random effects are drawn, as lme4.
        """
        from ..inference.simulate import simulate
        return simulate(self, n=n, seed=seed, use_random=use_random)

    # ------------------------------------------------------------ plain data
    def to_dict(self) -> dict:
        """Every table of the fit as plain Python objects (JSON-ready: missing values
        as ``None``); :func:`mixedanova.read_results` reads it back as DataFrames.
        The data are not included."""
        from ..report.export import results_to_dict
        return results_to_dict(self)

    def to_json(self, path=None, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text; also written to ``path`` when given."""
        from ..report.export import results_to_json
        text = results_to_json(self, indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text


def _expand_dot(parsed, formula: str) -> str:
    """R's ``update.formula``: ``.`` on either side is the current side."""
    if "." not in formula.replace("np.", "").replace("numpy.", ""):
        return formula
    if "~" not in formula:
        return formula
    lhs, rhs = formula.split("~", 1)
    old_lhs, old_rhs = parsed.formula.split("~", 1)
    lhs = old_lhs.strip() if lhs.strip() in (".", "") else lhs.strip()
    rhs = rhs.strip()
    from ..design.formula import split_summands
    pieces = split_summands(rhs)
    old_terms = [t.strip() for _, _, t in split_summands(old_rhs)]
    out = []
    for sign, _, text in pieces:
        t = text.strip()
        if t == ".":
            out.extend(("+", o) for o in old_terms)
        else:
            out.append((sign, t))
    terms: list[str] = []
    for sign, t in out:
        key = t.replace(" ", "")
        if sign == "-" and any(x.replace(" ", "") == key for x in terms):
            terms = [x for x in terms if x.replace(" ", "") != key]
        elif sign == "-":
            terms.append(f"- {t}")
        else:
            terms.append(t)
    body = " + ".join(terms).replace("+ - ", "- ")
    return f"{lhs} ~ {body}"

