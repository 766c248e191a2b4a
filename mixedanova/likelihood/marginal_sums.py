"""A marginal model's criterion from per-pattern sums of ``[X y]`` outer products.

The marginal (GLS / mmrm) criterion of :mod:`mixedanova.likelihood.marginal`
touches the rows only through sums over the subjects of one visit pattern (one
covariance group, the same visits present), because those subjects share
``V = Sigma_P^{-1}``.  With ``z_i = [x_i(a), y_i(a)]_a`` the subject's rows in
visit order (``mv (p + 1)`` numbers) the sufficient statistic of a pattern is

``G = sum_i z_i z_i'``   (``mv (p+1) x mv (p+1)``, with the count ``n``),

and with ``Gt[a, b]`` its ``(p+1) x (p+1)`` block of visits ``a, b``:

* ``[X y]'V[X y] = sum_ab V_ab Gt[a, b]`` (so ``X'VX``, ``X'Vy``),
* ``sum_i r_i r_i' = c'Gt[a, b]c`` with ``c = [-beta, 1]``,
* ``sum_i M_i Phi M_i' = V K V``, ``K_ab = <Gt_XX[a, b], Phi>`` (``M_i = V X_i``),
* ``sum_i M_i[a] (x) M_i[b] = (V (x) V) Gt_XX`` (the Hessian's and Kenward-Roger's
  outer sums), ``sum_i M_i[a] v_i[b] = V V Gt_Xr`` (``v_i = V r_i``).

So the criterion, its exact gradient and Hessian and the Kenward-Roger pieces of
:class:`~mixedanova.likelihood.marginal.MarginalCriterion` follow from the sums
(sized patterns x visits^2 x (p+1)^2, never rows).  The sums add up over chunks of
whole subjects (:meth:`MarginalSums.__add__`): a Dask data frame's partitions
(:mod:`mixedanova.distributed.dask_marginal`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .marginal import MarginalCriterion, MarginalEval, PatternEval
from .visit_cov import VisitCovariance

__all__ = ["PatternSums", "MarginalSums", "SummedMarginalData", "SummedMarginalCriterion",
           "rough_start"]


@dataclass(frozen=True)
class PatternSums:
    """The sums of one visit pattern of one covariance group.

    Attributes
    ----------
    group : int
    visits : numpy.ndarray
        Boolean mask of the ``m`` visits present.
    n : int
        Subjects.
    G : numpy.ndarray
        ``sum_i z_i z_i'``, ``(mv (p+1), mv (p+1))``, visit-major.
    """

    group: int
    visits: np.ndarray
    n: int
    G: np.ndarray

    def __add__(self, other: "PatternSums") -> "PatternSums":
        return PatternSums(self.group, self.visits, self.n + other.n, self.G + other.G)

    @functools.cached_property
    def ix(self) -> tuple[np.ndarray, np.ndarray]:
        """``np.ix_`` of the visits present (the submatrix of an ``m x m`` matrix)."""
        return np.ix_(self.visits, self.visits)

    @functools.cached_property
    def blocks(self) -> np.ndarray:
        """``Gt``: ``(mv * mv, (p+1)^2)``, row ``(a, b)`` the block of visits ``a, b``."""
        mv = int(self.visits.sum())
        p1 = self.G.shape[0] // mv
        return np.ascontiguousarray(self.G.reshape(mv, p1, mv, p1).transpose(0, 2, 1, 3)
                                    ).reshape(mv * mv, p1 * p1)

    @functools.cached_property
    def xx_blocks(self) -> np.ndarray:
        """``Gt_XX``: ``(mv * mv, p^2)``."""
        mv = int(self.visits.sum())
        p1 = self.G.shape[0] // mv
        p = p1 - 1
        return np.ascontiguousarray(self.blocks.reshape(mv * mv, p1, p1)[:, :p, :p]
                                    ).reshape(mv * mv, p * p)


@dataclass(frozen=True)
class MarginalSums:
    """Per-pattern sums of some chunks of whole subjects (``a + b`` adds chunks).

    Attributes
    ----------
    patterns : dict
        ``(group, visit bits) -> PatternSums``.
    m, n_groups, nobs, p : int
    """

    patterns: dict
    m: int
    n_groups: int
    nobs: int
    p: int

    def __add__(self, other: "MarginalSums") -> "MarginalSums":
        pats = dict(self.patterns)
        for key, ps in other.patterns.items():
            pats[key] = pats[key] + ps if key in pats else ps
        return MarginalSums(pats, self.m, self.n_groups, self.nobs + other.nobs, self.p)

    @classmethod
    def from_rows(cls, X: np.ndarray, y: np.ndarray, subject: np.ndarray, visit: np.ndarray,
                  m: int, group: np.ndarray, n_groups: int) -> "MarginalSums":
        """The sums of rows ``X, y`` (weights applied) of whole subjects (``subject``
        codes, ``visit`` positions 0..m-1, ``group`` constant within a subject)."""
        subject = np.asarray(subject, dtype=np.intp)
        visit = np.asarray(visit, dtype=np.intp)
        S = int(subject.max()) + 1
        p = X.shape[1]
        Z = np.column_stack([X, y])
        row = np.full((S, m), -1, dtype=np.intp)
        row[subject, visit] = np.arange(len(subject))
        mask = row >= 0
        g = np.zeros(S, dtype=np.intp)
        g[subject] = np.asarray(group, dtype=np.intp)
        present = np.flatnonzero(mask.any(axis=1))
        uniq, inv = np.unique(np.column_stack([g[present], mask[present]]), axis=0,
                              return_inverse=True)
        inv = np.asarray(inv).ravel()
        order = np.argsort(inv, kind="stable")
        cuts = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
        pats = {}
        for i, u in enumerate(uniq):
            subj = present[order[cuts[i]:cuts[i + 1]]]
            vis = u[1:].astype(bool)
            key = (int(u[0]), sum(1 << int(j) for j in np.flatnonzero(vis)))
            rows = row[subj][:, vis]                          # (n, mv)
            Zp = Z[rows].reshape(len(subj), -1)               # (n, mv (p+1)), visit-major
            pats[key] = PatternSums(key[0], vis, len(subj), Zp.T @ Zp)
        return cls(pats, m, n_groups, int(mask.sum()), p)

    def finished(self) -> "SummedMarginalData":
        """The patterns in the in-memory engine's order (group, then visit bits)."""
        return SummedMarginalData(tuple(self.patterns[k] for k in sorted(self.patterns)),
                                  self.m, self.n_groups, self.nobs, self.p)


@dataclass(frozen=True)
class SummedMarginalData:
    """What :class:`SummedMarginalCriterion` reads (as
    :class:`~mixedanova.likelihood.marginal.MarginalData`, sums instead of rows)."""

    patterns: tuple[PatternSums, ...]
    m: int
    n_groups: int
    nobs: int
    p: int


@dataclass
class SummedPatternEval(PatternEval):
    """Per-pattern pieces at one ``theta``: ``V``, ``R = sum_i r_i r_i'``,
    ``K = sum_i X_i Phi X_i'`` (visits by visits) and the pattern's sums."""

    sums: PatternSums | None = None
    R: np.ndarray | None = None


class SummedMarginalCriterion(MarginalCriterion):
    """:class:`~mixedanova.likelihood.marginal.MarginalCriterion` on
    :class:`SummedMarginalData` (same values, gradient, Hessian, Kenward-Roger
    pieces; see the module docstring)."""

    def __init__(self, data: SummedMarginalData, cov: VisitCovariance,
                 reml: bool = True) -> None:
        super().__init__(data, cov, reml)

    def evaluate(self, theta: np.ndarray, order: int = 0) -> MarginalEval | None:
        """Criterion (and gradient, Hessian for ``order`` 1, 2); ``None`` when some
        ``Sigma_i`` is not positive definite."""
        self.nevals += 1
        d = self.data
        theta = np.asarray(theta, dtype=float)
        p, p1 = d.p, d.p + 1
        if order >= 1:
            der = [self.cov.derivatives(theta[s], second=order >= 2) for s in self.slices()]
            sig = [t[0] for t in der]
        else:
            sig = self.sigmas(theta)
        logdet = 0.0
        A = np.zeros(p1 * p1)
        pats = []
        for pat in d.patterns:
            try:
                L = np.linalg.cholesky(sig[pat.group][pat.ix])
            except np.linalg.LinAlgError:
                return None
            Li = np.linalg.inv(L)
            V = Li.T @ Li
            A += V.ravel() @ pat.blocks
            logdet += pat.n * 2.0 * float(np.sum(np.log(np.diag(L))))
            pats.append(SummedPatternEval(V, None, None, sums=pat))
        A = A.reshape(p1, p1)
        XVX, XVy = A[:p, :p], A[:p, p]
        try:
            C = np.linalg.cholesky(XVX)
        except np.linalg.LinAlgError:
            return None
        Ci = np.linalg.inv(C)
        phi = Ci.T @ Ci
        beta = phi @ XVy
        c = np.append(-beta, 1.0)
        cc = np.outer(c, c).ravel()
        q = 0.0
        for pat, pe in zip(d.patterns, pats):
            mv = pe.V.shape[0]
            R = (pat.blocks @ cc).reshape(mv, mv)
            pe.R = 0.5 * (R + R.T)
            q += float(np.sum(pe.V * pe.R))
        return self._finish(theta, C, beta, phi, pats, logdet, q,
                            der if order >= 1 else None, order)

    def nbar(self, pe: SummedPatternEval, phi: np.ndarray) -> np.ndarray:
        """``sum_i M_i Phi M_i' = V K V``."""
        mv = pe.V.shape[0]
        K = (pe.sums.xx_blocks @ phi.ravel()).reshape(mv, mv)
        return pe.V @ (0.5 * (K + K.T)) @ pe.V

    def residual_outer(self, pe: SummedPatternEval) -> np.ndarray:
        """``sum_i v_i v_i' = V R V``."""
        return pe.V @ pe.R @ pe.V

    def design_residual_sums(self, pat, pe: SummedPatternEval,
                             beta: np.ndarray) -> np.ndarray:
        """``sum_i M_i[a, :] v_i[b] = sum_cd V_ac V_bd sum_i X_i[c, :] r_i[d]``."""
        mv, p = pe.V.shape[0], self.data.p
        c = np.append(-beta, 1.0)
        Gxr = (pat.blocks.reshape(mv, mv, p + 1, p + 1)[:, :, :p, :] @ c)   # (c, d, p)
        return np.einsum("ac,bd,cdp->abp", pe.V, pe.V, Gxr).reshape(mv * mv, p)

    def _gradient(self, ev: MarginalEval) -> None:
        m = self.data.m
        B = [np.zeros((m, m)) for _ in range(self.data.n_groups)]
        for pat, pe in zip(self.data.patterns, ev.pats):
            Bs = pat.n * pe.V - pe.V @ pe.R @ pe.V
            if self.reml:
                Bs -= self.nbar(pe, ev.phi)
            B[pat.group][pat.ix] += Bs
        ev.B = B
        g_all = np.zeros(self.k)
        for g, sl in enumerate(self.slices()):
            g_all[sl] = np.tensordot(ev.D1[g], B[g], axes=([1, 2], [0, 1]))
        ev.gradient = g_all

    @staticmethod
    def outer_sums(pe: SummedPatternEval) -> np.ndarray:
        """``sum_i M_i[a, :] (x) M_i[b, :]`` as an ``(mv^2, p^2)`` matrix:
        ``(V (x) V) Gt_XX``; cached."""
        if getattr(pe, "S4", None) is None:
            pe.S4 = np.kron(pe.V, pe.V) @ pe.sums.xx_blocks
        return pe.S4


def rough_start(data: SummedMarginalData, cov: VisitCovariance) -> np.ndarray:
    """The in-memory engine's start (the pairwise covariance of OLS residuals per
    covariance group, mapped to ``theta``) from the sums."""
    p, m = data.p, data.m
    p1 = p + 1
    A = np.zeros((p1, p1))
    for pat in data.patterns:
        mv = int(pat.visits.sum())
        A += pat.blocks.reshape(mv, mv, p1, p1)[np.arange(mv), np.arange(mv)].sum(axis=0)
    beta = np.linalg.lstsq(A[:p, :p], A[:p, p], rcond=None)[0]
    cc = np.outer(np.append(-beta, 1.0), np.append(-beta, 1.0)).ravel()
    out = []
    for g in range(data.n_groups):
        num, cnt = np.zeros((m, m)), np.zeros((m, m))
        for pat in data.patterns:
            if pat.group != g:
                continue
            mv = int(pat.visits.sum())
            R = (pat.blocks @ cc).reshape(mv, mv)
            num[pat.ix] += 0.5 * (R + R.T)
            cnt[pat.ix] += pat.n
        C = num / np.maximum(cnt, 1.0)
        var = np.diag(C).copy()
        bad = var <= 0
        var[bad] = float(np.mean(var[~bad])) if np.any(~bad) else 1.0
        np.fill_diagonal(C, var)
        out.append(cov.start(C))
    return np.concatenate(out)
