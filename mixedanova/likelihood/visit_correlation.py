"""A visit covariance as the residual structure of a model WITH random terms.

The likelihood engine profiles ``sigma`` out of ``R = sigma^2 Rrel(u)``
(:mod:`mixedanova.likelihood.residual`).  A visit covariance in mmrm's
parametrization (:class:`~mixedanova.likelihood.visit_cov.VisitCovariance`)
becomes ``Rrel`` by fixing its first log-SD (that of the first covariance
group) at 0: ``u`` is mmrm's ``theta`` without its first entry, and mmrm's
``theta`` of the fit is ``u`` with ``log sigma`` added to every log-SD
(:meth:`VisitCorrelation.mmrm_theta`).  The whitener ``W`` (``W'W =
Rrel^{-1}``) is block diagonal, one inverse Cholesky factor per subject,
factored once per visit pattern.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .visit_cov import VisitCovariance

__all__ = ["VisitCorrelation"]


@dataclass(frozen=True)
class VisitCorrelation:
    """``Rrel`` of a visit covariance; the correlation part of a
    :class:`~mixedanova.likelihood.residual.ResidualStructure`.

    Parameters
    ----------
    cov : VisitCovariance
    groups : numpy.ndarray
        Subject code per row (the residual groups).
    visit : numpy.ndarray
        Visit position per row.
    cov_group : numpy.ndarray
        Covariance-group code per row (``by``), constant within a subject.
    group_levels : tuple of str
    """

    cov: VisitCovariance
    groups: np.ndarray
    visit: np.ndarray
    cov_group: np.ndarray
    group_levels: tuple[str, ...] = ("",)
    _patterns: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        m = self.cov.m
        n_subj = int(self.groups.max()) + 1
        row = np.full((n_subj, m), -1, dtype=np.intp)
        row[self.groups, self.visit] = np.arange(len(self.groups))
        mask = row >= 0
        g = np.zeros(n_subj, dtype=np.intp)
        g[self.groups] = self.cov_group
        key = g.astype(np.int64) * (1 << m) + mask @ (1 << np.arange(m, dtype=np.int64))
        present = mask.any(axis=1)
        subj = np.flatnonzero(present)
        uniq, inv = np.unique(key[present], return_inverse=True)
        pats = []
        for i in range(len(uniq)):
            s = subj[inv == i]
            vis = mask[s[0]]
            pats.append((int(g[s[0]]), vis, row[s][:, vis]))   # rows (n, mv), visit order
        object.__setattr__(self, "_patterns", tuple(pats))

    @property
    def n_groups(self) -> int:
        return len(self.group_levels)

    @property
    def n_par(self) -> int:
        return self.cov.n_par * self.n_groups - 1

    @property
    def names(self) -> tuple[str, ...]:
        """mmrm's names of ``theta[1:]`` (relative to the first log-SD)."""
        names = self.cov.names if self.n_groups == 1 else tuple(
            f"{g}:{n}" for g in self.group_levels for n in self.cov.names)
        return names[1:]

    def natural(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u, dtype=float)

    def unconstrained(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=float)

    def start(self) -> np.ndarray:
        """Unit SDs, correlations near 0.1 (all groups)."""
        th = np.concatenate([self.cov.start(np.eye(self.cov.m))] * self.n_groups)
        return th[1:]

    def _theta(self, u: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.asarray(u, dtype=float)])

    def matrices(self, u: np.ndarray) -> list[np.ndarray]:
        th = self._theta(u)
        k = self.cov.n_par
        return [self.cov.matrix(th[g * k:(g + 1) * k]) for g in range(self.n_groups)]

    def mmrm_theta(self, u: np.ndarray, sigma: float) -> np.ndarray:
        """mmrm's ``theta`` of ``sigma^2 Rrel(u)``: ``log sigma`` added to every log-SD."""
        th = self._theta(u)
        k, nsd = self.cov.n_par, self.cov.n_sd
        for g in range(self.n_groups):
            th[g * k:g * k + nsd] += math.log(sigma)
        return th

    def whitener(self, u: np.ndarray) -> tuple[sp.csr_matrix | None, float]:
        """Block-diagonal ``W`` (inverse Cholesky factor per subject) and ``log|Rrel|``."""
        mats = self.matrices(u)
        n = len(self.groups)
        rows_all, cols_all, vals_all = [], [], []
        logdet = 0.0
        for g, vis, rows in self._patterns:
            sub = mats[g][np.ix_(vis, vis)]
            try:
                L = np.linalg.cholesky(sub)
            except np.linalg.LinAlgError:
                return None, math.inf
            Li = np.linalg.inv(L)
            a, b = np.tril_indices(len(Li))
            rows_all.append(rows[:, a].ravel())
            cols_all.append(rows[:, b].ravel())
            vals_all.append(np.tile(Li[a, b], rows.shape[0]))
            logdet += rows.shape[0] * 2.0 * float(np.sum(np.log(np.diag(L))))
        W = sp.csr_matrix((np.concatenate(vals_all),
                           (np.concatenate(rows_all), np.concatenate(cols_all))), shape=(n, n))
        return W, logdet

    def matrix(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``Rrel`` among ``rows`` (dense)."""
        rows = np.asarray(rows, dtype=np.intp)
        mats = self.matrices(u)
        s, v, g = self.groups[rows], self.visit[rows], self.cov_group[rows]
        out = np.zeros((len(rows), len(rows)))
        for i in range(len(rows)):
            same = s == s[i]
            out[i, same] = mats[g[i]][v[i], v[same]]
        return out

    def factors(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``L^{-1}`` of each group's ``Rrel`` (``rows`` ``(k, m)``, data order): with
        no variance function the Pearson residuals are over ``sigma`` only, so
        this also removes the visit SDs."""
        return np.stack([np.linalg.inv(np.linalg.cholesky(self.matrix(u, rr))) for rr in rows])
