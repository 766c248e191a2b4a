"""The residual structure's view of a fit: its parameters, per-row SDs, Pearson
and normalized residuals, covariances among rows and Wald intervals (nlme's
``coef(m$modelStruct)``, ``residuals(m, type = )``, ``getVarCov``,
``intervals()``).  Without a residual structure each reduces to ``R = sigma^2 I``.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from ..errors import MixedAnovaError

__all__ = ["ResidualStructureMixin"]


class ResidualStructureMixin:
    """Methods of :class:`~mixedanova.results.lmm.LinearMixedResults` for the
    residual structure (``residual=`` of :func:`mixedanova.lmm`)."""

    @cached_property
    def residual_params(self) -> pd.Series:
        """Parameters of the residual structure (empty without one).

        ``phi`` (AR1, CAR1), ``rho`` (CompSymm), one SD ratio per level of a
        VarIdent factor (reference level first, ratio 1), ``power`` (VarPower),
        ``expon`` (VarExp) -- nlme's ``coef(m$modelStruct, unconstrained = FALSE)``.
        """
        fit = self.state.residual
        if fit is None:
            return pd.Series([], dtype=float, name="estimate")
        names, values = list(fit.names), list(fit.natural)
        var = fit.structure.variance
        if var is not None and var.kind == "VarIdent":
            k = len(names) - var.n_par
            names.insert(k, var.labels[0])
            values.insert(k, 1.0)
        return pd.Series(values, index=pd.Index(names, dtype=object), name="estimate")

    @property
    def residual_structure(self) -> tuple[str, ...]:
        """The residual structure as specified, e.g. ``("AR1(group='Mare')",)``."""
        fit = self.state.residual
        return () if fit is None else fit.structure.labels

    @cached_property
    def residual_sd(self) -> pd.Series:
        """Residual SD of every row: ``sigma`` times the variance function
        (nlme: ``m$sigma * abs(v)^delta`` for varPower); ``sigma`` without one."""
        fit = self.state.residual
        rel = np.ones(self.nobs) if fit is None else fit.structure.relative_sd(fit.u, self.nobs)
        return pd.Series(self.sigma * rel, index=self.design.row_index, name="residual_sd")

    @cached_property
    def resid_pearson(self) -> pd.Series:
        """Response residuals over :attr:`residual_sd` (nlme's
        ``residuals(m, type = "pearson")``)."""
        return (self.resid / self.residual_sd).rename("resid_pearson")

    @cached_property
    def resid_normalized(self) -> pd.Series:
        """Pearson residuals decorrelated within each correlation group (nlme's
        ``residuals(m, type = "normalized")``): ``W_g`` times the group's Pearson
        residuals, rows in data order, with ``W_g' W_g`` the inverse of the
        group's correlation matrix and ``W_g`` nlme's factor (the inverse
        Cholesky factor for AR1 / CAR1, a Helmert transform for CompSymm).
        Without a correlation structure they are the Pearson residuals.
        Approximately independent N(0, 1) under the model: what to inspect for
        leftover serial correlation.
        """
        fit = self.state.residual
        r = self.resid_pearson.to_numpy()
        if fit is not None:
            try:
                r = fit.structure.decorrelate(fit.u, r)
            except ValueError as exc:
                raise MixedAnovaError(f"resid_normalized: {exc}") from None
        return pd.Series(r, index=self.design.row_index, name="resid_normalized")

    def residual_covariance(self, rows) -> pd.DataFrame:
        """``sigma^2 Rrel`` among the given rows (positions in the data used).

        Without a residual structure this is ``sigma^2 I``.  For nlme's
        ``corMatrix`` / ``varWeights`` checks of one group.  Rows and columns are
        labelled by the structure's columns (group, then order or time, then a
        variance covariate), or by the data's row labels without a structure;
        ``.to_numpy()`` gives the plain matrix.
        """
        rows = np.asarray(rows, dtype=np.intp)
        fit = self.state.residual
        if fit is None:
            values = self.sigma ** 2 * np.eye(len(rows))
        else:
            values = self.sigma ** 2 * fit.structure.covariance(fit.u, rows)
        labels = self._row_labels(rows)
        return pd.DataFrame(values, index=labels, columns=labels.copy())

    def _row_labels(self, rows: np.ndarray) -> pd.Index:
        """Labels of data rows by the residual structure's columns (group, time)."""
        from ..residual import residual_columns

        data = self.design.data
        try:
            cols = [c for c in residual_columns(getattr(self.model, "residual", None))
                    if c in data.columns]
        except (TypeError, AttributeError):  # a structure written in the formula
            cols = []
        if not cols:
            return pd.Index(self.design.row_index[rows], name="row")
        frame = data[cols].iloc[rows]
        if len(cols) == 1:
            return pd.Index(frame[cols[0]].to_numpy(), name=cols[0])
        return pd.MultiIndex.from_frame(frame.reset_index(drop=True))

    def visit_covariance(self, group: str | None = None) -> pd.DataFrame:
        """The fitted ``m x m`` covariance over the visits (mmrm's ``VarCorr(fit)``)
        of a visit structure (``ma.Unstructured``, ``ma.Toeplitz``, ...; with
        random terms ``sigma^2 Rrel``).  ``group``: the level of ``by`` for a
        covariance per group (default: the only group)."""
        fit = self.state.residual
        s = None if fit is None else fit.structure
        vis = s if getattr(s, "marginal", False) else getattr(s, "correlation", None)
        if vis is None or not hasattr(vis, "matrices"):
            raise MixedAnovaError("the model has no visit covariance (residual= ma.Unstructured, "
                                  "ma.Toeplitz, ma.AR1H, ma.CSH or ma.AnteDependence)")
        levels = list(vis.group_levels)
        if group is None and len(levels) > 1:
            raise MixedAnovaError(f"one covariance per group: name the group, one of {levels}")
        k = 0 if group is None else levels.index(str(group)) if str(group) in levels else -1
        if k < 0:
            raise MixedAnovaError(f"unknown group {group!r}; the groups are {levels}")
        scale = 1.0 if getattr(s, "marginal", False) else self.sigma ** 2
        names = list(vis.cov.levels)
        return pd.DataFrame(scale * vis.matrices(fit.u)[k], index=names, columns=names)

    def residual_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Wald intervals of the residual-structure parameters, as nlme's ``intervals()``.

        The interval is ``u +- z se(u)`` on nlme's unconstrained scale (see
        :mod:`mixedanova.likelihood.residual`), mapped back; ``se(u)`` comes from
        the Hessian of the deviance in all variance parameters (the one used for
        the Satterthwaite df).  The VarIdent reference level has no interval.
        """
        from ..inference.satterthwaite import residual_wald_intervals

        return residual_wald_intervals(self, level)
