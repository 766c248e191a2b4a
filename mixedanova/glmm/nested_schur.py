"""The later terms' Schur complement when its first block is diagonal.

In :class:`~mixedanova.glmm.scalar_blocks.ScalarBlocksGradient`, when the first
term's levels are nested in the first later term's (one level per row, as
grouseticks' ``(1|INDEX)`` in ``(1|BROOD)``), that term's block of the Schur
complement ``S`` is diagonal: :class:`NestedSchur` eliminates it, so that only
``T = F - C' diag(d1)^{-1} C`` is factored densely, and keeps ``C`` on its
pattern.  The gradient reads a few entries of ``S^{-1}``: :class:`InverseEntries`
says where each comes from, so that ``S^{-1}`` is never formed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotri, dpotrs

from ..likelihood.blocked import NotPositiveDefinite

__all__ = ["NestedSchur", "InverseEntries"]


@dataclass
class NestedSchur:
    """The Schur complement ``S = [[diag(d1), C], [C', F]]`` of the later terms
    when its first term's block is diagonal (the first term's levels nested in
    that term's, as grouseticks' one level per row), factored by eliminating that
    diagonal: ``T = F - C' diag(d1)^{-1} C`` is all that is factored densely.

    Attributes
    ----------
    d1 : numpy.ndarray
        The diagonal block.
    g_rows, g_cols, g_vals : numpy.ndarray
        ``G = diag(d1)^{-1} C`` as its entries on the pattern of ``C`` (rows in
        the diagonal block, columns in ``F``'s).
    cT : numpy.ndarray
        Lower Cholesky factor of ``T``.
    """

    d1: np.ndarray
    g_rows: np.ndarray
    g_cols: np.ndarray
    g_vals: np.ndarray
    cT: np.ndarray

    def _g_dense(self) -> np.ndarray:
        G = np.zeros((len(self.d1), len(self.cT)))
        G[self.g_rows, self.g_cols] = self.g_vals
        return G

    def solve(self, x: np.ndarray) -> np.ndarray:
        """``S^{-1} x`` (``x`` a vector or a matrix of columns)."""
        m1, m2 = len(self.d1), len(self.cT)
        x1, x2 = x[:m1], x[m1:]
        if x.ndim == 2:  # the columns at once: flat positions (row * m + column)
            m = x.shape[1]
            j = np.arange(m)
            gx = np.bincount((self.g_cols[:, None] * m + j).ravel(),
                             weights=(self.g_vals[:, None] * x1[self.g_rows]).ravel(),
                             minlength=m2 * m).reshape(m2, m)
        else:
            gx = np.bincount(self.g_cols, weights=self.g_vals * x1[self.g_rows],
                             minlength=m2)
        z2, info = dpotrs(self.cT, x2 - gx, lower=1)
        if info:
            raise NotPositiveDefinite("cannot solve with the Schur complement")
        if x.ndim == 2:
            gz = np.bincount((self.g_rows[:, None] * m + j).ravel(),
                             weights=(self.g_vals[:, None] * z2[self.g_cols]).ravel(),
                             minlength=m1 * m).reshape(m1, m)
            return np.concatenate([x1 / self.d1[:, None] - gz, z2])
        gz = np.bincount(self.g_rows, weights=self.g_vals * z2[self.g_cols], minlength=m1)
        return np.concatenate([x1 / self.d1 - gz, z2])

    def logdet(self) -> float:
        """``log det S``."""
        return float(np.log(self.d1).sum() + 2.0 * np.log(np.diag(self.cT)).sum())

    def _t_inverse(self) -> np.ndarray:
        """``T^{-1}``, valid in its lower triangle."""
        Ti, info = dpotri(self.cT, lower=1)
        if info:
            raise NotPositiveDefinite("cannot invert the Schur complement")
        return Ti

    def inverse(self) -> np.ndarray:
        """``S^{-1}`` (both triangles)."""
        m1 = len(self.d1)
        Ti = self._t_inverse()
        Ti = np.tril(Ti) + np.tril(Ti, -1).T
        G = self._g_dense()
        GT = G @ Ti
        P = np.empty((m1 + len(Ti), m1 + len(Ti)))
        P[:m1, :m1] = GT @ G.T
        P[np.arange(m1), np.arange(m1)] += 1.0 / self.d1
        P[:m1, m1:] = -GT
        P[m1:, :m1] = -GT.T
        P[m1:, m1:] = Ti
        return P

    def entries(self, plan: "InverseEntries") -> np.ndarray:
        """The entries of ``S^{-1}`` that ``plan`` lists (see :class:`InverseEntries`)."""
        Ti = self._t_inverse().ravel()
        out = np.empty(plan.size)
        out[plan.both2] = Ti[plan.both2_at]
        gv = self.g_vals
        out[plan.cross] = -np.bincount(plan.cross_q, weights=gv[plan.cross_e]
                                       * Ti[plan.cross_at], minlength=len(plan.cross))
        out[plan.both1] = np.bincount(plan.both1_q, weights=gv[plan.both1_e]
                                      * gv[plan.both1_f] * Ti[plan.both1_at],
                                      minlength=len(plan.both1))
        out[plan.diag1] += 1.0 / self.d1[plan.diag1_level]
        return out


@dataclass(frozen=True)
class InverseEntries:
    """Where the entries of ``S^{-1}`` that the gradient reads (positions ``(a, b)``,
    ``a >= b``) come from, for a :class:`NestedSchur` whose ``C`` has a fixed
    pattern (entries ``e``: row ``g_rows[e]``, column ``g_cols[e]``); ``Ti`` is
    ``T^{-1}`` flattened, read in its lower triangle:

    * both in ``F``'s block: ``Ti[a', b']``;
    * ``a`` in ``F``'s block, ``b`` in the diagonal one: ``-sum_e G_e Ti[col_e, a']``
      over the entries of ``G``'s row ``b``;
    * both in the diagonal block: ``[a = b] / d1_a + sum_{e, f} G_e G_f Ti[col_e, col_f]``
      over the entries of rows ``a`` and ``b``.
    """

    size: int
    both2: np.ndarray
    both2_at: np.ndarray
    cross: np.ndarray
    cross_q: np.ndarray
    cross_e: np.ndarray
    cross_at: np.ndarray
    both1: np.ndarray
    both1_q: np.ndarray
    both1_e: np.ndarray
    both1_f: np.ndarray
    both1_at: np.ndarray
    diag1: np.ndarray
    diag1_level: np.ndarray

    @classmethod
    def plan(cls, a: np.ndarray, b: np.ndarray, m1: int, m2: int, g_rows: np.ndarray,
             g_cols: np.ndarray, limit: int) -> "InverseEntries | None":
        """The plan for positions ``(a, b)`` (``a >= b``), or None when it would
        take more than ``limit`` products (a dense ``C``: form ``S^{-1}``)."""
        order = np.argsort(g_rows, kind="stable")
        cnt = np.bincount(g_rows, minlength=m1)
        start = np.concatenate([[0], np.cumsum(cnt)[:-1]])

        def expand(rows):
            # (query, entry of G in that query's row) for each query's row
            c = cnt[rows]
            q = np.repeat(np.arange(len(rows)), c)
            within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
            return q, order[start[rows][q] + within]

        def low(i, j):
            return np.maximum(i, j) * m2 + np.minimum(i, j)

        both2 = np.flatnonzero(b >= m1)
        cross = np.flatnonzero((a >= m1) & (b < m1))
        both1 = np.flatnonzero(a < m1)
        if int(cnt[b[cross]].sum()) + int((cnt[a[both1]] * cnt[b[both1]]).sum()) > limit:
            return None
        cq, ce = expand(b[cross])
        qa, ea = expand(a[both1])  # (query, entry of row a)
        # each (query, entry of row a) against the entries of row b
        qf, ef = expand(b[both1][qa])
        q1, e1 = qa[qf], ea[qf]
        diag = both1[a[both1] == b[both1]]
        return cls(len(a), both2, low(a[both2] - m1, b[both2] - m1), cross, cq, ce,
                   low(g_cols[ce], a[cross][cq] - m1), both1, q1, e1, ef,
                   low(g_cols[e1], g_cols[ef]), diag, a[diag])
