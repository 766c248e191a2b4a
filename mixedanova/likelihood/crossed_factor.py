"""The factor of a crossed layout (:class:`~.crossed.CrossedSystem`): the blocked
Cholesky factor at one theta and what the estimates, the gradient and the
conditional variances read from it (the solution, ``C``, the diagonal blocks of
the inverse).  See :mod:`.crossed` for the layout.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotri

from .blocked import FactorBase, logdet_stack

if TYPE_CHECKING:
    from .crossed import CrossedSystem

__all__ = ["CrossedFactor", "PER_LEVEL_BLOCK", "lower_entries"]

PER_LEVEL_BLOCK = 8_000_000  # entries of the dense r1 x levels block of a per-level pass


def lower_entries(P: np.ndarray, flat: np.ndarray, flat_f: np.ndarray) -> np.ndarray:
    """Entries of ``P`` at the row-major flat indices ``flat`` (``flat_f``: the
    same entries column-major), read without copying ``P`` (LAPACK's inverse is
    column-major)."""
    if P.flags.f_contiguous:
        return P.ravel(order="F")[flat_f]
    return P.ravel()[flat]


class CrossedFactor(FactorBase):
    """Factor produced by :class:`CrossedSystem`."""

    def __init__(self, system: "CrossedSystem", lambdas, L00, L00inv, T0, BX, L,
                 pwrss: np.ndarray, cv: np.ndarray | None = None) -> None:
        self.system = system
        self.lambdas = lambdas
        self.L00, self.L00inv, self.T0, self.BX, self.L = L00, L00inv, T0, BX, L
        self._cv, self._C = cv, None
        self.p = system.p
        r1 = system.r1
        d = np.diag(L)
        self.ldL2 = logdet_stack(L00) + float(2.0 * np.log(d[:r1]).sum())
        self.ldRX2 = float(2.0 * np.log(d[r1:r1 + self.p]).sum())
        self.set_pwrss(pwrss, system.cp)
        self._inverses = None
        self.g_weights = None

    @property
    def cv(self) -> np.ndarray:
        """Entries of ``C`` (``Lambda_R' A_R0 Lambda_0 L00^{-T}``), formed on first use
        (and, when the system stores no pairs to save memory, at every use: a
        factor does not keep an entry-sized array)."""
        s = self.system
        if self._cv is not None:
            return self._cv
        if s.sparse_cc and len(s.terms) == 2 and s.scalar_entries:
            v = self.T0[:, 0, 0].take(s.levels)  # in place: one entry-sized array
            v *= s.vals[:, 0]
            v *= self.lambdas[1][0, 0]
            return v[:, None]
        cv = self.system.entries(self.lambdas, self.T0)[1]
        if not s.sparse_cc:
            self._cv = cv
        return cv

    @property
    def C(self) -> sp.csc_matrix:
        """``C`` on the R1 rows as a sparse matrix, formed on first use (at every
        use without a stored pair structure, as :attr:`cv`)."""
        if self._C is not None:
            return self._C
        C = self.system.c_matrix(self.cv)
        if not self.system.sparse_cc:
            self._C = C
        return C

    def rx(self) -> np.ndarray:
        r1 = self.system.r1
        return self.L[r1:r1 + self.p, r1:r1 + self.p]

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

    def _solution_std(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.system
        r1, p = s.r1, self.p
        w = solve_triangular(self.L[:-1, :-1], self.L[-1, :-1], lower=True, trans=1,
                             check_finite=False)
        beta = w[r1:]
        v0 = self.BX[:, p, :].reshape(-1) - self.C.T @ w[:r1]
        if p:  # no fixed effects (p = 0): nothing to take off
            v0 = v0 - self.BX[:, :p, :].transpose(0, 2, 1).reshape(-1, p) @ beta
        w0 = (self.L00inv.transpose(0, 2, 1) @ v0.reshape(s.l0, s.q0, 1)).reshape(-1)
        return beta, np.concatenate([w0, w[:r1]])

    # ------------------------------------------------------------ inverses
    def _inverse_parts(self):
        """Lower triangle of ``S^{-1}`` and the rows ``r1..r-1`` of ``L^{-1}``.

        With ``U`` those rows, the inverse of the leading ``r - 1`` block of ``S``
        (``M`` without ``y``) is ``P - U_y'U_y`` and that of the leading ``r1``
        block (``Omega``'s) is ``P - U'U``, restricted to the leading rows.
        """
        if self._inverses is None:
            s = self.system
            P, info = dpotri(self.L, lower=1)
            if info != 0:
                raise np.linalg.LinAlgError("cannot invert the Schur complement")
            E = np.zeros((s.r, self.p + 1))
            E[np.arange(s.r1, s.r), np.arange(self.p + 1)] = 1.0
            U = solve_triangular(self.L, E, lower=True, trans=1, check_finite=False).T
            self._inverses = (P, U)
        return self._inverses

    def _pairs_part(self, ct: np.ndarray, per_level: bool) -> np.ndarray:
        """``C~_l' P C~_l`` over the R1 entries of each level (``C~ = C L00^{-1}``),
        ``P = S^{-1}``: a ``(l0, q0, q0)`` stack, or its sum over levels."""
        s = self.system
        q0, l0 = s.q0, s.l0
        if s.groups is not None and not per_level:
            # sum_l w2_l c_l' (Lambda_R P Lambda_R) c_l = sum_g w2_g <Lambda_R P Lambda_R, M_g>
            P, _ = self._inverse_parts()
            _, M, low = s.groups
            n1 = s.r1 * (s.r1 + 1) // 2  # the R1 block: the first n1 entries of the stack
            i, j = low[0][:n1], low[1][:n1]
            lam = np.concatenate([np.full(t.nlev, self.lambdas[k][0, 0])
                                  for k, t in enumerate(s.terms[1:], start=1)])
            # <A, M_g> over the lower triangles, off-diagonal entries counted twice
            A = P[i, j] * lam[i] * lam[j] * np.where(i == j, 1.0, 2.0)
            return np.array([[(M[:, :n1] @ A) @ self.g_weights]])
        if s.dense_c or s.groups is not None:
            # c~_l' P c~_l = |L^{-1} [c~_l; 0]|^2 with L the factor of S (P = S^{-1})
            rhs = np.zeros((s.r, l0 * q0))
            rhs[:s.r1] = s.dense_c_matrix(ct)
            W = solve_triangular(self.L, rhs, lower=True, check_finite=False)
            W = W.reshape(s.r, l0, q0)
            K = np.einsum("rla,rlb->lab", W, W)
            return K if per_level else K.sum(axis=0)
        P, _ = self._inverse_parts()
        if s.sparse_cc:
            return self._pairs_sparse(P, ct, per_level)
        if not per_level and s.G_op is not None and not s.vector_groups:
            # sum over ordered pairs of P * C~ C~' = <Lambda_R P Lambda_R, G f>, with G the
            # operator that builds C C' in the factorization and f the level weights
            lam = np.array([self.lambdas[k][0, 0] for k in range(1, len(s.terms))])
            weight = self.g_weights * s.G_twice * np.outer(lam, lam).ravel()[s.G_termpair]
            return np.array([[lower_entries(P, s.G_rows, s.G_rows_f) @ weight]])
        w = lower_entries(P, s.target, s.target_f)
        K = np.zeros((l0, q0, q0)) if per_level else np.zeros((q0, q0))
        for a in range(q0):
            for b in range(a, q0):
                z = ct[s.pa, a] * ct[s.pb, b]
                z = z * s.twice if a == b else z + ct[s.pb, a] * ct[s.pa, b] * (s.twice - 1)
                if per_level:
                    K[:, a, b] = np.bincount(s.plevel, weights=w * z, minlength=l0)
                else:
                    K[a, b] = w @ z
        upper = np.triu(np.ones((q0, q0)), 1)  # filled a < b only: mirror it
        return K + np.swapaxes(K * upper, -1, -2)

    def _pairs_sparse(self, P: np.ndarray, ct: np.ndarray, per_level: bool) -> np.ndarray:
        """:meth:`_pairs_part` for a scalar first term without a stored pair
        structure: ``c~_l' P c~_l`` from the sparse ``C~`` (per level: blocks of
        levels against the dense ``P``; summed: ``<P, C~ C~'>``)."""
        s = self.system
        r1, l0 = s.r1, s.l0
        Ps = np.tril(P[:r1, :r1])
        Ps += np.tril(Ps, -1).T
        Ct = s.c_matrix(ct)
        if not per_level:
            return np.array([[float(np.vdot(Ps, s.cct(ct[:, 0]).toarray()))]])
        K = np.empty(l0)
        step = max(1, PER_LEVEL_BLOCK // max(r1, 1))
        for a in range(0, l0, step):
            Cb = Ct[:, a:a + step]
            K[a:a + step] = np.asarray(Cb.multiply(Ps @ Cb).sum(axis=0)).ravel()
        return K.reshape(l0, 1, 1)

    def _tilde(self) -> tuple[np.ndarray, np.ndarray]:
        """``C L00^{-1}`` on the R1 entries and ``B_X L00^{-1}`` per level."""
        s = self.system
        if s.q0 > 1:
            ct = np.einsum("es,est->et", self.cv, self.L00inv[s.levels])
        else:  # in place on the gathered level factors: one entry-sized array
            ct = self.L00inv[:, 0, 0].take(s.levels)
            ct *= self.cv[:, 0]
            ct = ct[:, None]
        bt = self.BX @ self.L00inv
        return ct, bt

    def _x_coupling(self, variant: int) -> tuple[np.ndarray, np.ndarray]:
        """``S^{-1}`` rows of the X (and y) rows against R1 rows, and the X-X block."""
        s = self.system
        P, U = self._inverse_parts()
        r1, p = s.r1, self.p
        nx = (0, p, p + 1)[variant]
        PxR = P[r1:r1 + nx, :r1]
        Pxx = np.tril(P[r1:r1 + nx, r1:r1 + nx])
        Pxx = Pxx + np.tril(Pxx, -1).T
        if variant == 1:
            PxR = PxR - np.outer(U[p, r1:r1 + nx], U[p, :r1])
            Pxx = Pxx - np.outer(U[p, r1:r1 + nx], U[p, r1:r1 + nx])
        return PxR, Pxx

    def _first_term(self, per_level: bool) -> list[np.ndarray]:
        """Diagonal blocks for the first term: ``L00^{-T}(I + C_l'P C_l)L00^{-1}``.

        ``P`` is the inverse of the Schur complement's leading block of each
        variant: ``S^{-1}`` (M), ``S^{-1} - U_y'U_y`` (M without y) and
        ``S^{-1} - U'U`` (Omega), ``U`` the last ``p + 1`` rows of ``L^{-1}``.  The
        rank-one corrections reduce to per-level sums
        ``V_c[l] = sum_e C~[e] U_c[row_e]``.  ``per_level`` gives the
        ``(l0, q0, q0)`` stack of the Omega variant; otherwise the sums over
        levels of the three variants (Omega, M_-y, M).
        """
        s = self.system
        q0, l0, p = s.q0, s.l0, self.p
        _, U = self._inverse_parts()
        ct, bt = self._tilde()  # C L00^{-1}, B_X L00^{-1}
        base = self.L00inv.transpose(0, 2, 1) @ self.L00inv
        total = (lambda A: A) if per_level else (lambda A: A.sum(axis=0))
        pairs = self._pairs_part(ct, per_level)

        def correction(c: int) -> np.ndarray:
            V = np.empty((l0, q0))
            for a in range(q0):
                w = U[c].take(s.rows)
                w *= ct[:, a]
                V[:, a] = np.bincount(s.levels, weights=w, minlength=l0)
            return total(V[:, :, None] * V[:, None, :])

        corr_y = correction(p)
        corr_x = sum((correction(c) for c in range(p)), np.zeros_like(pairs))
        out = [total(base) + pairs - corr_y - corr_x]
        if per_level:
            return out
        for variant in (1, 2):
            nx = (0, p, p + 1)[variant]
            PxR, Pxx = self._x_coupling(variant)
            # sum over entries of C~' P_{R1,X} B~_X, level by level, through sparse C
            W = np.asarray(self.C.T @ PxR.T).reshape(l0, q0, nx)
            bx = bt[:, :nx, :]
            cross = np.einsum("lsc,lct->st", self.L00inv.transpose(0, 2, 1) @ W, bx)
            K = pairs + cross + cross.T + np.einsum("lcs,cd,ldt->st", bx, Pxx, bx)
            out.append(total(base) + K - (corr_y if variant == 1 else 0.0))
        return out

    def _later_terms(self, variant: int, per_level: bool) -> list[np.ndarray]:
        """Diagonal blocks of ``S^{-1}`` (variant) for the terms after the first."""
        s = self.system
        P, U = self._inverse_parts()
        p = self.p
        out = []
        for k, t in enumerate(s.terms[1:], start=1):
            a = s.offsets[k] - s.offsets[1]
            idx = a + np.arange(t.nlev * t.q).reshape(t.nlev, t.q)
            hi, lo = np.maximum(idx[:, :, None], idx[:, None, :]), \
                np.minimum(idx[:, :, None], idx[:, None, :])
            B = P[hi, lo]
            if variant < 2:
                B = B - U[p][idx][:, :, None] * U[p][idx][:, None, :]
            if variant == 0 and p:
                Ux = U[:p][:, idx]  # (p, nlev, q)
                B = B - np.einsum("cls,clt->lst", Ux, Ux)
            out.append(B if per_level else B.sum(axis=0))
        return out

    def omega_inv_diag(self) -> list[np.ndarray]:
        return self._first_term(per_level=True) + self._later_terms(0, per_level=True)

    def inverse_block_sums(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        first = self._first_term(per_level=False)
        later = [self._later_terms(v, per_level=False) for v in range(3)]
        out = [tuple(first)]
        for k in range(len(self.system.terms) - 1):
            out.append(tuple(later[v][k] for v in range(3)))
        return out
