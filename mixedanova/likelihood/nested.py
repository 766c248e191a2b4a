"""Blocked Cholesky factor when grouping factors are nested.

If the grouping factor of term ``j`` is nested in that of every later term ``i``
(each level of ``j`` occurs with exactly one level ``f_ij(l)`` of ``i``), then
``Z_i'Z_j`` has one ``q_i x q_j`` block per level of ``j`` and the Cholesky
factor keeps that pattern: no fill-in.  The factorization is a short sequence of
batched small-matrix products, scatters and ``q x q`` Cholesky factors, plus one
dense ``(p + 1) x (p + 1)`` factor for ``[X y]``.
"""
from __future__ import annotations

import numpy as np
from .blocked import (FactorBase, bchol, binv_lower, bmm, logdet_stack, response_factor,
                      scatter, tri_inv)
from .crossprod import CrossProducts

__all__ = ["nesting_maps", "NestedSystem", "NestedFactor"]


def nesting_maps(cp: CrossProducts) -> dict | None:
    """``{(i, j): f}`` with ``f[level of j] = level of i`` when every ``j < i``
    nests in ``i`` (read off the level pairs of ``Z_i'Z_j``); ``None`` otherwise."""
    maps = {}
    terms = cp.terms
    if not all(t.one_per_row for t in terms):  # several levels per row: crossed layout
        return None
    for j in range(len(terms)):
        for i in range(j + 1, len(terms)):
            keys = cp.pairs[(i, j)].keys
            if len(keys) != terms[j].nlev:  # (before decoding: crossed factors have many)
                return None
            li, lj = np.divmod(keys, terms[j].nlev)
            if np.any(np.bincount(lj, minlength=terms[j].nlev) != 1):
                return None
            f = np.empty(terms[j].nlev, dtype=np.intp)
            f[lj] = li
            maps[(i, j)] = f
    return maps


class NestedSystem:
    """Cross-products when each term's factor is nested in every later term's.

    Built from a :class:`~mixedanova.likelihood.crossprod.CrossProducts` (rows are
    never read); :meth:`refresh` takes new values on the same pattern.
    """

    def __init__(self, cp: CrossProducts, maps: dict) -> None:
        self.terms = cp.terms
        self.maps = maps
        self.p, self.k = cp.p, cp.k
        self.offsets = np.cumsum([0] + [t.nlev * t.q for t in self.terms])
        self.refresh(cp)

    def refresh(self, cp: CrossProducts) -> None:
        """Take the numeric blocks of ``cp`` (same design and pattern)."""
        K = len(self.terms)
        self.cp = cp
        self.A_diag = [cp.diag_blocks(k) for k in range(K)]
        self.A_off = {}
        for j in range(K):
            for i in range(j + 1, K):
                b = cp.pairs[(i, j)]
                A = np.empty((self.terms[j].nlev,) + b.vals.shape[1:])
                A[b.keys % self.terms[j].nlev] = b.vals
                self.A_off[(i, j)] = A
        self.A_x = list(cp.zxy)
        self.A_xx = cp.xy

    def factor(self, lambdas: list[np.ndarray]) -> "NestedFactor":
        """Factor the blocked system for the templates ``lambdas``."""
        K = len(self.terms)
        L_diag, L_inv_T, L_off, L_x = [], [], {}, []
        for j in range(K):
            lam = lambdas[j]
            nlev = self.terms[j].nlev
            M = lam.T @ self.A_diag[j] @ lam
            M[:, np.arange(lam.shape[0]), np.arange(lam.shape[0])] += 1.0
            for k in range(j):
                Ljk = L_off[(j, k)]
                M -= scatter(bmm(Ljk, Ljk.transpose(0, 2, 1)), self.maps[(j, k)], nlev)
            Ljj = bchol(M)
            inv_T = binv_lower(Ljj).transpose(0, 2, 1)
            L_diag.append(Ljj)
            L_inv_T.append(inv_T)
            for i in range(j + 1, K):
                T = lambdas[i].T @ self.A_off[(i, j)] @ lam
                for k in range(j):
                    T -= scatter(bmm(L_off[(i, k)], L_off[(j, k)].transpose(0, 2, 1)),
                                 self.maps[(j, k)], nlev)
                L_off[(i, j)] = bmm(T, inv_T)
            T = self.A_x[j] @ lam
            for k in range(j):
                T = T - scatter(bmm(L_x[k], L_off[(j, k)].transpose(0, 2, 1)),
                                self.maps[(j, k)], nlev)
            L_x.append(bmm(T, inv_T))
        S = self.A_xx.copy()
        for Lxj in L_x:
            flat = Lxj.transpose(1, 0, 2).reshape(self.p + self.k, -1)
            S -= flat @ flat.T
        Lxx, pwrss = response_factor(S, self.p, self.k)
        return NestedFactor(self, L_diag, L_inv_T, L_off, L_x, Lxx, pwrss)


class NestedFactor(FactorBase):
    """Factor produced by :class:`NestedSystem`."""

    def __init__(self, system: NestedSystem, L_diag, L_inv_T, L_off, L_x, Lxx,
                 pwrss: np.ndarray) -> None:
        self.system = system
        self.L_diag, self.L_inv_T, self.L_off, self.L_x, self.Lxx = (
            L_diag, L_inv_T, L_off, L_x, Lxx)
        self.p = system.p
        self.ldL2 = sum(logdet_stack(L) for L in L_diag)
        self.ldRX2 = float(2.0 * np.log(np.diag(Lxx)[:self.p]).sum())
        self.set_pwrss(pwrss, system.cp)

    def rx(self) -> np.ndarray:
        return self.Lxx[:self.p, :self.p]

    def _split(self, v: np.ndarray) -> list[np.ndarray]:
        o, terms = self.system.offsets, self.system.terms
        return [v[o[k]:o[k + 1]].reshape(t.nlev, t.q, -1) for k, t in enumerate(terms)]

    def forward_solve(self, rhs: np.ndarray) -> np.ndarray:
        parts = [p.copy() for p in self._split(rhs)]
        terms, maps = self.system.terms, self.system.maps
        for j in range(len(terms)):
            for k in range(j):
                parts[j] -= scatter(self.L_off[(j, k)] @ parts[k], maps[(j, k)],
                                    terms[j].nlev)
            parts[j] = self.L_inv_T[j].transpose(0, 2, 1) @ parts[j]
        return np.concatenate([p.reshape(-1, rhs.shape[1]) for p in parts])

    def back_solve(self, rhs: np.ndarray) -> np.ndarray:
        parts = [p.copy() for p in self._split(rhs)]
        K = len(parts)
        for j in reversed(range(K)):
            for i in range(j + 1, K):
                up = parts[i][self.system.maps[(i, j)]]
                parts[j] -= self.L_off[(i, j)].transpose(0, 2, 1) @ up
            parts[j] = self.L_inv_T[j] @ parts[j]
        return np.concatenate([p.reshape(-1, rhs.shape[1]) for p in parts])

    def _solution_std(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        beta = tri_inv(self.Lxx[:p, :p]).T @ self.Lxx[p, :p]
        cz = np.concatenate([(Lxj[:, p, :] - np.einsum("lcq,c->lq", Lxj[:, :p, :], beta))
                             .reshape(-1) for Lxj in self.L_x])
        u = self.back_solve(cz[:, None])[:, 0]
        return beta, u

    def omega_inv_diag(self) -> list[np.ndarray]:
        terms, maps = self.system.terms, self.system.maps
        K = len(terms)
        out = []
        for j in range(K):
            # column block (j, l) of L^{-1} is nonzero at (j, l) and its ancestors
            cols = {j: self.L_inv_T[j].transpose(0, 2, 1)}
            acc = bmm(cols[j].transpose(0, 2, 1), cols[j])
            for k in range(j + 1, K):
                s = 0.0
                for m in range(j, k):
                    fmj = np.arange(terms[j].nlev) if m == j else maps[(m, j)]
                    s = s + self.L_off[(k, m)][fmj] @ cols[m]
                cols[k] = -(self.L_inv_T[k].transpose(0, 2, 1)[maps[(k, j)]] @ s)
                acc = acc + cols[k].transpose(0, 2, 1) @ cols[k]
            out.append(acc)
        return out

    def inverse_block_sums(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        p = self.p
        # H = L_XY^{-1} L_XZ L_Z^{-1}: (M^{-1})_ZZ = Omega^{-1} + H'H (rows up to p or p+1)
        lxz_t = np.concatenate([Lxj.transpose(0, 2, 1).reshape(-1, p + 1) for Lxj in self.L_x])
        H = tri_inv(self.Lxx) @ self.back_solve(lxz_t).T
        out = []
        for k, (t, oinv) in enumerate(zip(self.system.terms, self.omega_inv_diag())):
            o = self.system.offsets
            Hk = H[:, o[k]:o[k + 1]].reshape(p + 1, t.nlev, t.q)
            s_omega = oinv.sum(axis=0)
            s_xz = s_omega + np.einsum("rls,rlt->st", Hk[:p], Hk[:p])
            s_full = s_xz + np.einsum("ls,lt->st", Hk[p], Hk[p])
            out.append((s_omega, s_xz, s_full))
        return out
