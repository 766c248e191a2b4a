"""Wald z tests on the fixed effects of a model without df (a GLMM).

:class:`WaldInference` has the interface of
:class:`~mixedanova.inference.tables.FixedInference` that the marginal means
(:mod:`mixedanova.inference.emmeans`) and contrasts use, with asymptotic
(normal) reference distributions only: ``ddf`` must be ``"none"`` (glmer and
emmeans' ``asymp.LCL``/``z.ratio`` for a GLMM).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ArgumentError
from .tables import check_level, normalize_ddf

__all__ = ["WaldInference"]


class WaldInference:
    """z tests of ``l' beta`` with ``vcov(beta)``.

    Parameters
    ----------
    beta : numpy.ndarray
        Fixed-effect estimates.
    vcov : numpy.ndarray
        Their covariance matrix.
    names : list of str
        Fixed-effect names.
    """

    def __init__(self, beta: np.ndarray, vcov: np.ndarray, names: list[str]) -> None:
        self.beta = np.asarray(beta, dtype=float)
        self.vcov = np.asarray(vcov, dtype=float)
        self.names = list(names)

    @staticmethod
    def _check(ddf: str) -> None:
        if normalize_ddf(ddf) != "none":
            raise ArgumentError(f"a GLMM has asymptotic (z) tests only: ddf must be 'none', "
                                f"not {ddf!r}")

    def t_test(self, l: np.ndarray, ddf: str = "none", rhs: float = 0.0,
               level: float = 0.95) -> dict:
        """Wald z test of ``l' beta = rhs``: ``estimate, std_err, df (inf), t (z), p,
        ci_low, ci_high``."""
        self._check(ddf)
        l = np.asarray(l, dtype=float).ravel()
        est = float(l @ self.beta)
        se = math.sqrt(max(float(l @ self.vcov @ l), 0.0))
        z = (est - rhs) / se if se > 0 else math.nan
        q = float(stats.norm.ppf(0.5 + level / 2.0)) * se
        p = float(2.0 * stats.norm.sf(abs(z))) if np.isfinite(z) else math.nan
        return {"estimate": est, "std_err": se, "df": math.inf, "t": z, "p": p,
                "ci_low": est - q, "ci_high": est + q}

    def fixed_table(self, level: float = 0.95) -> pd.DataFrame:
        """``coef(summary(m))`` with Wald limits: ``estimate, std_err, z, p, ci_low,
        ci_high``."""
        level = check_level(level)
        se = np.sqrt(np.diag(self.vcov))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = self.beta / se
        q = float(stats.norm.ppf(0.5 + level / 2.0)) * se
        return pd.DataFrame({"estimate": self.beta, "std_err": se, "z": z,
                             "p": 2.0 * stats.norm.sf(np.abs(z)),
                             "ci_low": self.beta - q, "ci_high": self.beta + q},
                            index=self.names)
