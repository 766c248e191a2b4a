"""A marginal model's residual structure: a visit covariance per subject.

:class:`VisitStructure` is what :func:`mixedanova.residual.bind_marginal` makes
of the user's ``residual=`` in a model without random terms: the subject and
visit position of every row, the covariance group of every row (``by``), and
the :class:`~mixedanova.likelihood.visit_cov.VisitCovariance`.  Its parameters
``u`` are mmrm's ``theta`` of every covariance group, stacked in group order,
and give the residual covariance itself (``sigma`` is 1: nothing is profiled).
It offers what the results read from a residual structure (names, per-row
SDs, covariances among rows, normalized residuals) and builds the engine's
:class:`~mixedanova.likelihood.marginal.MarginalData`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .marginal import MarginalData
from .visit_cov import VisitCovariance

__all__ = ["VisitStructure"]


@dataclass(frozen=True)
class VisitStructure:
    """Visit covariance of a marginal model.

    Parameters
    ----------
    cov : VisitCovariance
    subject, visit, group : numpy.ndarray
        Per row: subject code, visit position, covariance-group code.
    group_levels : tuple of str
        Labels of the covariance groups (``("",)`` for one group).
    labels : tuple of str
        The specification as the user wrote it.
    """

    cov: VisitCovariance
    subject: np.ndarray
    visit: np.ndarray
    group: np.ndarray
    group_levels: tuple[str, ...]
    labels: tuple[str, ...] = ()
    variance = None          # no separate variance function (results read this)
    correlation = None
    marginal = True

    @property
    def n_groups(self) -> int:
        return len(self.group_levels)

    @property
    def n_par(self) -> int:
        return self.cov.n_par * self.n_groups

    @property
    def names(self) -> tuple[str, ...]:
        """mmrm's theta names, prefixed ``group:`` for a covariance per group."""
        if self.n_groups == 1:
            return self.cov.names
        return tuple(f"{g}:{n}" for g in self.group_levels for n in self.cov.names)

    def natural(self, u: np.ndarray) -> np.ndarray:
        """The parameters themselves (mmrm's ``theta``)."""
        return np.asarray(u, dtype=float)

    def unconstrained(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(u, dtype=float)

    def matrices(self, u: np.ndarray) -> list[np.ndarray]:
        """The ``m x m`` visit covariance of every covariance group."""
        u = np.asarray(u, dtype=float)
        k = self.cov.n_par
        return [self.cov.matrix(u[g * k:(g + 1) * k]) for g in range(self.n_groups)]

    def data(self, X: np.ndarray, y: np.ndarray) -> MarginalData:
        """The engine's arrangement of the (weighted) rows ``X, y``."""
        return MarginalData.from_rows(X, y, self.subject, self.visit, self.cov.m,
                                      group=self.group, n_groups=self.n_groups)

    def relative_sd(self, u: np.ndarray, n: int) -> np.ndarray:
        """Residual SD of every row (sigma is 1)."""
        sds = [np.sqrt(np.diag(S)) for S in self.matrices(u)]
        return np.array([sds[g][v] for g, v in zip(self.group, self.visit)])

    def covariance(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Residual covariance among ``rows``."""
        rows = np.asarray(rows, dtype=np.intp)
        mats = self.matrices(u)
        s, v, g = self.subject[rows], self.visit[rows], self.group[rows]
        out = np.zeros((len(rows), len(rows)))
        for i in range(len(rows)):
            same = s == s[i]
            out[i, same] = mats[g[i]][v[i], v[same]]
        return out

    def _subject_blocks(self, mats: list[np.ndarray]):
        """Per subject, its rows in visit order and their covariance ``Sigma_i``."""
        order = np.lexsort((self.visit, self.subject))
        s = self.subject[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        ends = np.r_[starts[1:], len(s)]
        for a, b in zip(starts, ends):
            rows = order[a:b]
            yield rows, mats[self.group[rows[0]]][np.ix_(self.visit[rows], self.visit[rows])]

    def decorrelate(self, u: np.ndarray, r: np.ndarray, max_group: int = 0) -> np.ndarray:
        """``L_i^{-1} r_i`` per subject, ``L_i`` the Cholesky factor of the subject's
        correlation matrix in visit order (normalized residuals from Pearson ones)."""
        r = np.asarray(r, dtype=float)
        out = np.empty_like(r)
        mats = self.matrices(u)
        for rows, S in self._subject_blocks(mats):
            d = np.sqrt(np.diag(S))
            L = np.linalg.cholesky(S / np.outer(d, d))
            out[rows] = np.linalg.solve(L, r[rows])
        return out

    def draw(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw of the residuals of every row, ``N(0, Sigma_i)`` per subject."""
        mats = self.matrices(u)
        out = np.empty(len(self.subject))
        for rows, S in self._subject_blocks(mats):
            out[rows] = np.linalg.cholesky(S) @ rng.standard_normal(len(rows))
        return out

    def constant_within(self, codes: np.ndarray) -> bool:
        g = self.subject
        first = np.full(int(g.max()) + 1, -1, dtype=np.int64)
        first[g] = codes
        return bool(np.all(first[g] == codes))


def marginal_state(crit, structure: VisitStructure, start: np.ndarray | None = None,
                   control=None, fixed: dict[int, float] | None = None):
    """Fit the marginal model (:func:`~mixedanova.likelihood.marginal.fit_marginal`)
    and pack a :class:`~mixedanova.likelihood.state.FitState`: ``theta`` empty,
    ``sigma`` 1, the visit covariance's parameters in ``residual.u`` (``fixed``:
    positions held at values)."""
    from .marginal import fit_marginal
    from .residual_fit import ResidualFit
    from .state import ConvergenceReport, FitState, OptimizerSummary

    maxiter = 200 if control is None else max(int(getattr(control, "maxiter", 200)), 50)
    fit = fit_marginal(crit, start, maxiter=maxiter, fixed=fixed)
    opt = OptimizerSummary(method="trust-exact (exact gradient and Hessian) + Newton",
                           theta0=np.zeros(0), theta=np.zeros(0), f0=np.nan, fmin=fit.value,
                           feval=crit.nevals, niter=fit.iterations, converged=fit.converged,
                           message=fit.message, seconds=fit.seconds, hessian=fit.hessian)
    messages = () if fit.converged else (fit.message,)
    conv = ConvergenceReport(gradient=fit.gradient, scaled_gradient=float(
        np.max(np.abs(np.linalg.lstsq(fit.hessian, fit.gradient, rcond=None)[0]))),
        hessian=fit.hessian, at_boundary=np.zeros(0, dtype=bool), is_singular=False,
        messages=messages)
    return FitState(method="REML" if crit.reml else "ML", theta=np.zeros(0), sigma=1.0,
                    beta=fit.beta, u=np.zeros(0), objective=fit.value,
                    vcov_beta=fit.vcov_beta, factor=None, optimizer=opt, convergence=conv,
                    residual=ResidualFit(structure=structure, u=fit.theta,
                                         info={"marginal": fit}))
