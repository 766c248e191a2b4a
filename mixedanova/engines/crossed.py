"""Blocked Cholesky factor when grouping factors are crossed.

The first term (the one with most levels) is block diagonal and is eliminated
level by level.  Write ``C`` for the factor block below it (rows: the other
random terms ``R1`` and ``[X y]``); its ``R1`` part is sparse with the pattern of
``Z_R1'Z_0`` -- one entry per pair (level of a later term, level of the first
term) that share an observation.  The Schur complement

    S = Lambda_R'(A_RR)Lambda_R + I_R1 - C C'

is dense and factored by LAPACK.  ``C C'`` is accumulated over the pairs of
entries that share a first-term level (computed once), so an evaluation costs
``O(pairs + r^3 / 3)`` with ``r = sum(nlev_k q_k, k >= 1) + p + 1``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotri

from .blocked import (FactorBase, TermData, bchol, binv_lower, bmm, logdet_stack,
                      lower_chol, per_level)

__all__ = ["CrossedSystem", "CrossedFactor", "DENSE_LIMIT"]

DENSE_LIMIT = 20000  # largest dense Schur complement this layout will form


class CrossedSystem:
    """Cross-products for crossed grouping factors (see the module docstring)."""

    def __init__(self, terms: list[TermData], XY: np.ndarray) -> None:
        self.terms = terms
        self.p = XY.shape[1] - 1
        t0 = terms[0]
        self.q0, self.l0 = t0.q, t0.nlev
        self.offsets = np.cumsum([0] + [t.nlev * t.q for t in terms])
        self.r1 = int(self.offsets[-1] - self.offsets[1])
        self.r = self.r1 + self.p + 1
        if self.r > DENSE_LIMIT:
            raise NotImplementedError(
                f"crossed random effects with {self.r1} columns beyond the first term need a "
                f"dense {self.r} x {self.r} Schur complement, more than this engine forms "
                f"({DENSE_LIMIT}); put the factor with most levels first or simplify the model")
        self.A00 = per_level(t0.codes, t0.zraw, t0.zraw, self.l0)
        self.AX0 = per_level(t0.codes, XY, t0.zraw, self.l0)  # (l0, p+1, q0)
        Zr = sp.hstack([t.sparse_z() for t in terms[1:]], format="csr")
        A11 = (Zr.T @ Zr).toarray()
        A1X = np.asarray(Zr.T @ XY)
        self.ARR = np.ascontiguousarray(np.block([[A11, A1X], [A1X.T, XY.T @ XY]]))
        self._pattern(terms)
        self._pairs()

    # ---------------------------------------------------------------- set-up
    def _pattern(self, terms: list[TermData]) -> None:
        """Entries of ``Z_R1'Z_0``: row, first-term level, ``(nnz, q0)`` values."""
        t0, l0, q0 = terms[0], self.l0, self.q0
        rows, levels, vals, term_of = [], [], [], []
        for k, t in enumerate(terms[1:], start=1):
            key = t.codes.astype(np.int64) * l0 + t0.codes
            uniq, inv = np.unique(key, return_inverse=True)
            inv = inv.ravel()
            v = np.empty((len(uniq), t.q, q0))
            for s in range(t.q):
                for s0 in range(q0):
                    v[:, s, s0] = np.bincount(inv, weights=t.zraw[:, s] * t0.zraw[:, s0],
                                              minlength=len(uniq))
            base = self.offsets[k] - self.offsets[1] + (uniq // l0) * t.q
            rows.append((base[:, None] + np.arange(t.q)[None, :]).ravel())
            levels.append(np.repeat(uniq % l0, t.q))
            vals.append(v.reshape(-1, q0))
            term_of.append(np.full(len(uniq) * t.q, k))
        rows, levels = np.concatenate(rows), np.concatenate(levels)
        order = np.lexsort((rows, levels))
        self.rows = rows[order].astype(np.intp)
        self.levels = levels[order].astype(np.intp)
        self.vals = np.concatenate(vals)[order]
        term_of = np.concatenate(term_of)[order]
        # scaling by Lambda_R': scalar terms entry-wise, vector terms per group of q rows
        self.scalar_entries = {}
        self.vector_groups = {}
        for k, t in enumerate(terms[1:], start=1):
            idx = np.flatnonzero(term_of == k)
            if t.q == 1:
                self.scalar_entries[k] = idx
            else:
                self.vector_groups[k] = idx.reshape(-1, t.q)
        counts = np.bincount(self.levels, minlength=l0)
        self.level_ptr = np.concatenate([[0], np.cumsum(counts)])
        # CSC layout of C (r1 x l0*q0): column (l, s0) holds the entries of level l
        col_len = np.repeat(counts, q0)
        self.csc_indptr = np.concatenate([[0], np.cumsum(col_len)])
        col_of = np.repeat(np.arange(l0 * q0), col_len)
        within = np.arange(len(col_of)) - self.csc_indptr[col_of]
        self.csc_entry = self.level_ptr[col_of // q0] + within
        self.csc_s0 = col_of % q0
        self.csc_indices = self.rows[self.csc_entry]

    def _pairs(self) -> None:
        """Pairs of entries sharing a first-term level (``e1 <= e2``)."""
        nnz = len(self.rows)
        ends = self.level_ptr[1:][self.levels]
        n_after = ends - np.arange(nnz)
        pa = np.repeat(np.arange(nnz), n_after)
        starts = np.cumsum(n_after) - n_after
        pb = pa + (np.arange(len(pa)) - np.repeat(starts, n_after))
        self.pa, self.pb = pa, pb
        self.pdiag = pa == pb
        self.plevel = self.levels[pa]
        ra, rb = self.rows[pa], self.rows[pb]  # ra <= rb: rows sorted within a level
        target = rb.astype(np.int64) * self.r + ra  # lower triangle of the r x r matrix
        self.utarget, tinv = np.unique(target, return_inverse=True)
        self.tinv = tinv.ravel()

    # ------------------------------------------------------------- per theta
    def lambda_r_scale(self, lambdas: list[np.ndarray], M: np.ndarray) -> np.ndarray:
        """``Lambda_R' M Lambda_R`` on the random rows and columns of ``M`` (in place)."""
        base = self.offsets[1]
        for k, t in enumerate(self.terms[1:], start=1):
            a, b = self.offsets[k] - base, self.offsets[k + 1] - base
            lam = lambdas[k]
            if t.q == 1:
                M[:, a:b] *= lam[0, 0]
                M[a:b, :] *= lam[0, 0]
            else:
                cols = M[:, a:b].reshape(M.shape[0], t.nlev, t.q) @ lam
                M[:, a:b] = cols.reshape(M.shape[0], -1)
                rows = lam.T @ M[a:b, :].reshape(t.nlev, t.q, M.shape[1])
                M[a:b, :] = rows.reshape(-1, M.shape[1])
        return M

    def _scaled_entries(self, lambdas: list[np.ndarray], T0: np.ndarray) -> np.ndarray:
        """Values of ``C`` on the R1 pattern: ``Lambda_R' A_R0 Lambda_0 L00^{-T}``."""
        if self.q0 == 1:
            v = self.vals * T0[self.levels, 0, :]
        else:
            v = np.einsum("es,est->et", self.vals, T0[self.levels])
        for k, idx in self.scalar_entries.items():
            v[idx] *= lambdas[k][0, 0]
        for k, groups in self.vector_groups.items():
            v[groups] = lambdas[k].T @ v[groups]
        return v

    def c_matrix(self, cv: np.ndarray) -> sp.csc_matrix:
        """``C`` restricted to the R1 rows as a sparse ``r1 x (l0 q0)`` matrix."""
        data = cv[self.csc_entry, self.csc_s0]
        return sp.csc_matrix((data, self.csc_indices, self.csc_indptr),
                             shape=(self.r1, self.l0 * self.q0))

    def factor(self, lambdas: list[np.ndarray]) -> "CrossedFactor":
        """Factor the blocked system for the templates ``lambdas``."""
        lam0 = lambdas[0]
        M0 = lam0.T @ self.A00 @ lam0
        M0[:, np.arange(self.q0), np.arange(self.q0)] += 1.0
        L00 = bchol(M0)
        L00inv = binv_lower(L00)
        T0 = lam0 @ L00inv.transpose(0, 2, 1)  # Lambda_0 L00^{-T} per level
        BX = bmm(self.AX0, T0)  # (l0, p+1, q0)
        BXf = BX.transpose(1, 0, 2).reshape(self.p + 1, -1)
        r1 = self.r1
        S = self.lambda_r_scale(lambdas, self.ARR.copy())
        cv = self._scaled_entries(lambdas, T0)
        prod = np.einsum("es,es->e", cv[self.pa], cv[self.pb]) if self.q0 > 1 \
            else cv[self.pa, 0] * cv[self.pb, 0]
        S.ravel()[self.utarget] -= np.bincount(self.tinv, weights=prod,
                                               minlength=len(self.utarget))
        C = self.c_matrix(cv)
        S[r1:, :r1] -= np.asarray(C @ BXf.T).T
        S[np.arange(r1), np.arange(r1)] += 1.0
        S[r1:, r1:] -= BXf @ BXf.T
        return CrossedFactor(self, L00, L00inv, cv, C, BX, lower_chol(S))


class CrossedFactor(FactorBase):
    """Factor produced by :class:`CrossedSystem`."""

    def __init__(self, system: CrossedSystem, L00, L00inv, cv, C, BX, L) -> None:
        self.system = system
        self.L00, self.L00inv, self.cv, self.C, self.BX, self.L = L00, L00inv, cv, C, BX, L
        self.p = system.p
        r1 = system.r1
        d = np.diag(L)
        self.ldL2 = logdet_stack(L00) + float(2.0 * np.log(d[:r1]).sum())
        self.ldRX2 = float(2.0 * np.log(d[r1:-1]).sum())
        self.pwrss = float(d[-1] ** 2)
        self._inverses = None

    def rx(self) -> np.ndarray:
        r1 = self.system.r1
        return self.L[r1:-1, r1:-1]

    def forward_solve(self, rhs: np.ndarray) -> np.ndarray:
        s = self.system
        n0 = s.l0 * s.q0
        v0 = (self.L00inv @ rhs[:n0].reshape(s.l0, s.q0, -1)).reshape(n0, -1)
        v1 = solve_triangular(self.L[:s.r1, :s.r1], rhs[n0:] - self.C @ v0, lower=True,
                              check_finite=False)
        return np.vstack([v0, v1])

    def back_solve(self, rhs: np.ndarray) -> np.ndarray:
        s = self.system
        n0 = s.l0 * s.q0
        w1 = solve_triangular(self.L[:s.r1, :s.r1], rhs[n0:], lower=True, trans=1,
                              check_finite=False)
        v0 = rhs[:n0] - self.C.T @ w1
        w0 = (self.L00inv.transpose(0, 2, 1) @ v0.reshape(s.l0, s.q0, -1)).reshape(n0, -1)
        return np.vstack([w0, w1])

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.system
        r1, p = s.r1, self.p
        w = solve_triangular(self.L[:-1, :-1], self.L[-1, :-1], lower=True, trans=1,
                             check_finite=False)
        beta = w[r1:]
        v0 = (self.BX[:, p, :].reshape(-1)
              - self.BX[:, :p, :].transpose(0, 2, 1).reshape(-1, p) @ beta
              - self.C.T @ w[:r1])
        w0 = (self.L00inv.transpose(0, 2, 1) @ v0.reshape(s.l0, s.q0, 1)).reshape(-1)
        return beta, np.concatenate([w0, w[:r1]])

    # ------------------------------------------------------------ inverses
    def _inverse_blocks(self) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        """Diagonal blocks per level of the three inverses (Omega, M_-y, M).

        Returns one ``(first_term_blocks, [later term blocks])`` per variant.
        """
        if self._inverses is not None:
            return self._inverses
        s = self.system
        r, r1, p, q0 = s.r, s.r1, self.p, s.q0
        P, info = dpotri(self.L, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError("cannot invert the Schur complement")
        P = np.tril(P) + np.tril(P, -1).T
        E = np.zeros((r, p + 1))
        E[np.arange(r1, r), np.arange(p + 1)] = 1.0
        U = solve_triangular(self.L, E, lower=True, trans=1,
                             check_finite=False).T  # rows r1.. of L^{-1}
        P_xz = P[:-1, :-1] - np.outer(U[p, :-1], U[p, :-1])
        P_om = P_xz[:r1, :r1] - U[:p, :r1].T @ U[:p, :r1]
        out = []
        for Pv, nx in ((P_om, 0), (P_xz, p), (P, p + 1)):
            out.append((self._first_term_blocks(Pv, nx), self._later_blocks(Pv)))
        self._inverses = out
        return out

    def _first_term_blocks(self, Pv: np.ndarray, nx: int) -> np.ndarray:
        """``L00^{-T} (I + C_l' P C_l) L00^{-1}`` per first-term level."""
        s = self.system
        l0, q0, r1 = s.l0, s.q0, s.r1
        cv, BX = self.cv, self.BX[:, :nx, :]
        w = Pv[s.rows[s.pa], s.rows[s.pb]]
        K = np.zeros((l0, q0, q0))
        for a in range(q0):
            for b in range(q0):
                val = w * (cv[s.pa, a] * cv[s.pb, b]
                           + np.where(s.pdiag, 0.0, cv[s.pb, a] * cv[s.pa, b]))
                K[:, a, b] = np.bincount(s.plevel, weights=val, minlength=l0)
        if nx:
            u = np.einsum("ec,ecs->es", Pv[s.rows, r1:r1 + nx], BX[s.levels])
            for a in range(q0):
                for b in range(q0):
                    val = cv[:, a] * u[:, b] + u[:, a] * cv[:, b]
                    K[:, a, b] += np.bincount(s.levels, weights=val, minlength=l0)
            K += np.einsum("lcs,cd,ldt->lst", BX, Pv[r1:r1 + nx, r1:r1 + nx], BX)
        K[:, np.arange(q0), np.arange(q0)] += 1.0
        Linv = self.L00inv
        return Linv.transpose(0, 2, 1) @ K @ Linv

    def _later_blocks(self, Pv: np.ndarray) -> list[np.ndarray]:
        s = self.system
        out = []
        for k, t in enumerate(s.terms[1:], start=1):
            a = s.offsets[k] - s.offsets[1]
            idx = a + np.arange(t.nlev * t.q).reshape(t.nlev, t.q)
            out.append(Pv[idx[:, :, None], idx[:, None, :]])
        return out

    def omega_inv_diag(self) -> list[np.ndarray]:
        first, later = self._inverse_blocks()[0]
        return [first] + later

    def inverse_block_sums(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        variants = self._inverse_blocks()
        K = len(self.system.terms)
        out = []
        for k in range(K):
            sums = []
            for first, later in variants:
                blocks = first if k == 0 else later[k - 1]
                sums.append(blocks.sum(axis=0))
            out.append(tuple(sums))
        return out
