"""Exact derivatives of lmerTest's variance-parameter pieces for small designs.

lmerTest's Satterthwaite df need, at the estimates, the Hessian of the
deviance in ``varpar = (theta, sigma)`` and the Jacobian of ``vcov(beta)``.
With the deviance split as ``a(theta) + dof log(2 pi sigma^2) + r(theta) /
sigma^2`` (:mod:`mixedanova.inference.satterthwaite`) and ``vcov(beta) =
sigma^2 U(theta)``, everything follows from the first and second derivatives of
``a`` and ``r`` and the first derivatives of ``U`` in ``theta``.  lmerTest takes
them by Richardson-extrapolated differences; central differences (the
fallback for large designs) carry their rounding noise into the df at about
1e-6.  Here they are exact, from dense matrices.

With ``M = [Z X y]' W [Z X y]``, ``S = diag(Lambda', I, 1)`` and
``A = S M S' + diag(I_q, 0, 0)``, the leading blocks of ``A`` are ``Omega``
(order ``q``) and ``B`` (order ``q + p``); ``log|Omega| = ldL2``,
``log|B| = ldL2 + ldRX2``, ``log|A| - log|B| = log pwrss`` and
``U = (B^{-1})_{XX}``.  ``Lambda`` is linear in ``theta``; with ``D_j`` the
derivative of ``S`` in ``theta_j``,

* ``dA_j = D_j M S' + S M D_j'`` and ``d2A_ij = D_i M D_j' + D_j M D_i'``;
* for each leading block ``K``: ``d log|K| = tr(K^{-1} dK_j)`` and
  ``d2 log|K| = -tr(K^{-1} dK_i K^{-1} dK_j) + tr(K^{-1} d2K_ij)``;
* ``dU_j = -(B^{-1} dB_j B^{-1})_{XX}``.

All responses of a batch are done together (stacks of matrices), each at its
own ``theta``; the cost is ``O(len(theta) d^3)`` per response for ``d = q + p +
1``, so this is for designs with few random-effect levels (:data:`DENSE_MAX`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["DENSE_MAX", "DenseVarpar", "VarparDerivatives", "varpar_order",
           "exact_polish", "interior"]

# q + p + 1 above this: central differences for the df and no exact polish of the
# optimum (the cost is O(len(theta) (q + p)^3) per response: ~1 ms at 200)
DENSE_MAX = 200


@dataclass(frozen=True)
class VarparDerivatives:
    """Derivatives in ``theta`` of lmerTest's pieces, one row per response.

    Attributes
    ----------
    grad_a, hess_a : numpy.ndarray
        ``(m, t)`` and ``(m, t, t)``: of ``a = log|B|`` (REML) or ``log|Omega|`` (ML).
    grad_logr, hess_logr : numpy.ndarray
        Of ``log pwrss`` (free of the response's scale).
    grad_u : numpy.ndarray
        ``(m, t, p, p)``: ``dU / dtheta_j``.
    """

    grad_a: np.ndarray
    hess_a: np.ndarray
    grad_logr: np.ndarray
    hess_logr: np.ndarray
    grad_u: np.ndarray

    def pwrss_derivatives(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradient and Hessian of ``r = pwrss`` given its values ``r`` (``(m,)``)."""
        g = self.grad_logr
        hess = self.hess_logr + g[:, :, None] * g[:, None, :]
        return r[:, None] * g, r[:, None, None] * hess


class DenseVarpar:
    """The dense ``[Z X Y]' W [Z X Y]`` of a set of cross-products and its derivatives.

    Parameters
    ----------
    cp : CrossProducts
        Cross-products of the design (any shift or scale of the responses: the
        derivatives of ``a``, ``log pwrss`` and ``U`` do not depend on them).
        ``theta`` follows the terms of ``cp`` in order, each term's
        lower-triangular template by columns (:class:`~mixedanova.design.theta.ThetaLayout`).
    """

    def __init__(self, cp) -> None:
        terms = cp.terms
        self.p, self.k = cp.p, cp.k
        self.qs = [t.q for t in terms]
        self.nlevs = [t.nlev for t in terms]
        sizes = [t.nlev * t.q for t in terms]
        self.offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        Q = int(self.offs[-1])
        self.Q = Q
        size = Q + cp.p + cp.k
        M = np.zeros((size, size))
        for (i, j), blk in cp.pairs.items():
            qi, qj = self.qs[i], self.qs[j]
            li, lj = np.divmod(blk.keys, self.nlevs[j])
            rows = self.offs[i] + li[:, None] * qi + np.arange(qi)[None, :]
            cols = self.offs[j] + lj[:, None] * qj + np.arange(qj)[None, :]
            M[rows[:, :, None], cols[:, None, :]] = blk.vals
            M[cols[:, :, None], rows[:, None, :]] = blk.vals.transpose(0, 2, 1)
        for i in range(len(terms)):
            zc = cp.zxy_columns(i)
            M[self.offs[i]:self.offs[i + 1], Q:] = zc
            M[Q:, self.offs[i]:self.offs[i + 1]] = zc.T
        M[Q:, Q:] = cp.xy
        self.M = M
        # each theta entry: its term and the (row, column) of its template
        self.entries: list[tuple[int, int, int]] = []
        for t, q in enumerate(self.qs):
            for c in range(q):
                for r in range(c, q):
                    self.entries.append((t, r, c))
        self.diagonal = np.array([r == c for (_, r, c) in self.entries])  # template diagonals
        # D_i M D_j' lives in the block (term of i) x (term of j) of the Z part and
        # does not depend on theta: kept, for i <= j
        self.second: dict[tuple[int, int], np.ndarray] = {}
        for i, (ti, ri, ci) in enumerate(self.entries):
            for j in range(i, len(self.entries)):
                tj, rj, cj = self.entries[j]
                blk = M[self.offs[ti]:self.offs[ti + 1], self.offs[tj]:self.offs[tj + 1]]
                blk = blk.reshape(self.nlevs[ti], self.qs[ti], self.nlevs[tj], self.qs[tj])
                # (E_i' per level) M (E_j per level): E' has its 1 at (c, r)
                g = np.zeros((self.nlevs[ti], self.qs[ti], self.nlevs[tj], self.qs[tj]))
                g[:, ci, :, cj] = blk[:, ri, :, rj]
                self.second[(i, j)] = g.reshape(blk.shape[0] * blk.shape[1], -1)

    @property
    def order(self) -> int:
        """``q + p + 1``: the order of the matrices per response."""
        return self.Q + self.p + 1

    def _templates(self, theta: np.ndarray) -> list[np.ndarray]:
        """Per term ``(m, q, q)`` lower-triangular templates."""
        m = theta.shape[0]
        out = [np.zeros((m, q, q)) for q in self.qs]
        for j, (t, r, c) in enumerate(self.entries):
            out[t][:, r, c] = theta[:, j]
        return out

    def _left(self, X: np.ndarray, mats: list[np.ndarray | None]) -> np.ndarray:
        """Rows of each term's block multiplied, level by level, by ``mats[t]``
        (``(m, q, q)``; ``None``: rows set to zero); other rows kept."""
        out = X.copy()
        m, _, c = X.shape
        for t, T in enumerate(mats):
            a, b = self.offs[t], self.offs[t + 1]
            if T is None:
                out[:, a:b] = 0.0
                continue
            q = self.qs[t]
            if q == 1:
                out[:, a:b] *= T[:, 0, 0][:, None, None]
                continue
            blk = X[:, a:b].reshape(m, self.nlevs[t], q, c)
            out[:, a:b] = np.einsum("mab,mlbc->mlac", T, blk).reshape(m, b - a, c)
        return out

    def derivatives(self, theta: np.ndarray, cols: np.ndarray,
                    reml: bool) -> VarparDerivatives:
        """Exact derivatives at ``theta`` (``(m, t)``) of response columns ``cols``."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        cols = np.atleast_1d(np.asarray(cols, dtype=int))
        m, nt = theta.shape
        Q, p = self.Q, self.p
        base = Q + p
        d = base + 1
        M = np.empty((m, d, d))
        M[:, :base, :base] = self.M[:base, :base]
        M[:, :base, base] = self.M[:base, base + cols].T
        M[:, base, :base] = M[:, :base, base]
        M[:, base, base] = self.M[base + cols, base + cols]
        T = self._templates(theta)
        Tt = [np.swapaxes(x, 1, 2) for x in T]
        N = np.swapaxes(self._left(M, Tt), 1, 2)  # M S'  (M symmetric)
        A = self._left(N, Tt)  # S M S'
        idx = np.arange(Q)
        A[:, idx, idx] += 1.0
        # dA_j = C_j + C_j' with C_j = D_j M S' nonzero only in the rows R_j (row c
        # of each level of theta_j's term, as E' has its 1 at (c, r)): kept as
        # those rows, C_j[R_j] = (M S')[rows r of the levels], (m, nlev, d)
        blocks = [slice(self.offs[t], self.offs[t + 1]) for (t, _, _) in self.entries]
        R, CR = [], []
        for (t, r, c) in self.entries:
            start = self.offs[t] + self.qs[t] * np.arange(self.nlevs[t])
            R.append(start + c)
            CR.append(N[:, start + r, :])

        def second(X: np.ndarray, i: int, j: int) -> np.ndarray:
            """``sum(X * (D_i M D_j'))`` per response, for ``X`` (m, ., .)."""
            return np.einsum("mab,ab->m", X[:, blocks[i], blocks[j]], self.second[(i, j)])

        def logdet_derivs(n: int):
            """Derivatives of ``log|K|`` for the leading block ``K`` of order ``n``."""
            Kinv = np.linalg.inv(A[:, :n, :n])
            Kinv = 0.5 * (Kinv + np.swapaxes(Kinv, 1, 2))
            P = []  # K^{-1} dK_j
            for j in range(nt):
                rows, Cj = R[j], CR[j][:, :, :n]
                Pj = Kinv[:, :, rows] @ Cj
                Pj[:, :, rows] += np.swapaxes(Cj @ Kinv, 1, 2)
                P.append(Pj)
            g = np.stack([np.trace(Pj, axis1=1, axis2=2) for Pj in P], axis=1)
            H = np.empty((m, nt, nt))
            for i in range(nt):
                for j in range(i, nt):
                    two = 2.0 * second(Kinv, i, j)
                    H[:, i, j] = H[:, j, i] = two - np.einsum("mab,mba->m", P[i], P[j])
            return g, H, Kinv, P

        gB, HB, Binv, PB = logdet_derivs(base)
        if reml:
            ga, Ha = gB, HB
        else:
            ga, Ha, _, _ = logdet_derivs(Q)
        # pwrss = min_b [b; -1]' A [b; -1]: with u = [B^{-1} a_y; -1] at the minimum,
        # dr_j = u' dA_j u and d2r_ij = u' d2A_ij u - 2 w_i' B^{-1} w_j, w_j = (dA_j u)_B
        # (no difference of two log-determinant traces: that would cost digits)
        u = np.empty((m, d))
        u[:, :base] = np.einsum("mab,mb->ma", Binv, A[:, :base, base])
        u[:, base] = -1.0
        r = np.einsum("ma,mab,mb->m", u, A, u)
        w = []
        for j in range(nt):
            rows = R[j]
            wj = np.einsum("mra,mr->ma", CR[j], u[:, rows])  # C_j' u
            wj[:, rows] += np.einsum("mra,ma->mr", CR[j], u)  # C_j u
            w.append(wj)
        dr = np.stack([np.einsum("ma,ma->m", u, w[j]) for j in range(nt)], axis=1)
        d2r = np.empty((m, nt, nt))
        for i in range(nt):
            bw = np.einsum("mab,mb->ma", Binv, w[i][:, :base])
            for j in range(i, nt):
                uGu = np.einsum("ma,ab,mb->m", u[:, blocks[i]], self.second[(i, j)],
                                u[:, blocks[j]])
                val = (2.0 * uGu
                       - 2.0 * np.einsum("ma,ma->m", bw, w[j][:, :base]))
                d2r[:, i, j] = d2r[:, j, i] = val
        g_logr = dr / r[:, None]
        h_logr = d2r / r[:, None, None] - g_logr[:, :, None] * g_logr[:, None, :]
        xs = slice(Q, base)
        dU = np.stack([-(PB[j][:, xs, :] @ Binv[:, :, xs]) for j in range(nt)], axis=1)
        dU = 0.5 * (dU + np.swapaxes(dU, 2, 3))
        return VarparDerivatives(grad_a=ga, hess_a=Ha, grad_logr=g_logr, hess_logr=h_logr,
                                 grad_u=dU)


def varpar_order(cp) -> int:
    """``q + p + 1`` of a set of cross-products (the order :class:`DenseVarpar` works at)."""
    return int(sum(t.nlev * t.q for t in cp.terms)) + cp.p + 1


def interior(dense: DenseVarpar, theta: np.ndarray, tiny: float = 1e-4) -> np.ndarray:
    """Per row of ``theta``: every template diagonal entry at least ``tiny`` (where
    :func:`exact_polish` applies)."""
    return np.all(np.atleast_2d(theta)[:, dense.diagonal] >= tiny, axis=1)


def exact_polish(dense: DenseVarpar, theta: np.ndarray, cols: np.ndarray, reml: bool,
                 dof: int, value: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 max_iter: int = 1) -> np.ndarray:
    """Newton steps with the exact gradient and Hessian of the profiled criterion
    ``a + dof log(pwrss)`` (+ a constant), for rows of ``theta`` already near an
    interior optimum.

    A quasi-Newton optimum, or a Newton step with a finite-difference Hessian,
    leaves ``theta`` within about 1e-8 along flat directions (a small variance);
    quantities that depend on ``theta`` to first order (the Satterthwaite df)
    keep that error.  Steps are taken only where the Hessian is positive
    definite, the step is small (a polish, relative 1e-3 at most), no entry
    crosses a template diagonal's bound 0, and ``value`` (the criterion of the
    rows at their ``theta``, ``(m,)``) does not rise beyond rounding.  Each row
    stops when its step falls below 1e-12 (relative).
    """
    x = np.array(np.atleast_2d(theta), dtype=float)
    cols = np.atleast_1d(np.asarray(cols, dtype=int))
    active = np.ones(len(x), bool)
    f = value(x, cols)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        d = dense.derivatives(x[idx], cols[idx], reml)
        g = d.grad_a + dof * d.grad_logr
        H = d.hess_a + dof * d.hess_logr
        xn = x[idx].copy()
        ok = np.ones(len(idx), bool)
        size = np.zeros(len(idx))
        for i in range(len(idx)):
            try:
                np.linalg.cholesky(H[i])
            except np.linalg.LinAlgError:
                ok[i] = False
                continue
            step = -np.linalg.solve(H[i], g[i])
            size[i] = float(np.max(np.abs(step) / np.maximum(np.abs(xn[i]), 1e-2)))
            ok[i] = size[i] <= 1e-3
            xn[i] += step
        ok &= np.all(xn[:, dense.diagonal] > 0.0, axis=1)
        fn = np.full(len(idx), np.inf)
        if ok.any():
            fn[ok] = value(xn[ok], cols[idx[ok]])
        ok &= fn <= f[idx] + 1e-13 * np.maximum(1.0, np.abs(f[idx]))
        take = idx[ok]
        x[take], f[take] = xn[ok], fn[ok]
        active[idx[~ok]] = False
        active[idx[ok & (size < 1e-12)]] = False
    return x
