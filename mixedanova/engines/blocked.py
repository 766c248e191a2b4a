"""Blocked cross-products of ``[Z X y]`` and their Cholesky factor.

The profiled deviance of a linear mixed model needs, for each ``theta``, the
Cholesky factor ``L`` of

    [ Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y ]
    [ X'Z Lambda              X'X          X'y        ]
    [ y'Z Lambda              y'X          y'y        ]

(MixedModels.jl's blocked formulation).  The cross-products are computed once;
one evaluation then costs no O(n) work.  Two layouts cover the designs met in
practice:

* :class:`NestedSystem` -- every term's grouping factor is nested in the grouping
  factor of each later term (a single term, ``(1|a/b)``, ``(x||g)``).  Every
  random block then stays block diagonal and every off-diagonal block has one
  ``q_i x q_j`` block per level of the finer factor: the whole factorization is
  batched small-matrix algebra.
* :class:`CrossedSystem` -- anything else (crossed factors).  The first term (the
  one with most levels) is eliminated block-diagonally; the remaining random
  terms and ``[X y]`` form a dense Schur complement, factored by LAPACK.

Both return a factor object with the same interface (:class:`FactorBase`).  The
residual covariance is the identity here; a non-identity ``R`` enters by
pre-whitening ``[Z X y]`` before the cross-products are formed, and
:meth:`BlockedSystem.from_crossproducts` style constructors can accept
cross-products accumulated in chunks, since nothing below touches the rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotrf

__all__ = ["TermData", "build_system", "NestedSystem", "CrossedSystem", "FactorBase",
           "NotPositiveDefinite"]

_DENSE_LIMIT = 20000  # largest dense Schur complement the crossed layout will form


class NotPositiveDefinite(ArithmeticError):
    """The blocked matrix is not positive definite at this theta."""


@dataclass(frozen=True)
class TermData:
    """What the engine needs of one random-effects term."""

    codes: np.ndarray  # (n,) level of each observation
    zraw: np.ndarray   # (n, q) the term's own model matrix
    nlev: int

    @property
    def q(self) -> int:
        return self.zraw.shape[1]

    def sparse_z(self) -> sp.csr_matrix:
        """The ``n x (nlev * q)`` indicator-weighted matrix ``Z_k``."""
        n, q = self.zraw.shape
        cols = (self.codes[:, None] * q + np.arange(q)[None, :]).ravel()
        rows = np.repeat(np.arange(n), q)
        return sp.csr_matrix((self.zraw.ravel(), (rows, cols)), shape=(n, self.nlev * q))


def build_system(terms: list[TermData], X: np.ndarray, y: np.ndarray):
    """Pick the layout for ``terms`` and form the cross-products."""
    XY = np.column_stack([X, y])
    maps = _nesting_maps(terms)
    if maps is not None:
        return NestedSystem(terms, XY, maps)
    return CrossedSystem(terms, XY)


def _nesting_maps(terms: list[TermData]) -> dict | None:
    """``{(i, j): f}`` with ``f[level of j] = level of i`` if every j<i nests in i."""
    maps = {}
    for j in range(len(terms)):
        for i in range(j + 1, len(terms)):
            cj, ci = terms[j].codes, terms[i].codes
            f = np.full(terms[j].nlev, -1, dtype=np.intp)
            f[cj] = ci
            if np.any(f[cj] != ci) or np.any(f < 0):
                return None
            maps[(i, j)] = f
    return maps


# --------------------------------------------------------------------- batched helpers
def _bchol(M: np.ndarray) -> np.ndarray:
    """Cholesky factors of a stack of small SPD matrices."""
    if M.shape[1] == 1:
        if np.any(M <= 0.0):
            raise NotPositiveDefinite
        return np.sqrt(M)
    try:
        return np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        raise NotPositiveDefinite from None


def _binv_lower(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular matrices."""
    if L.shape[1] == 1:
        return 1.0 / L
    return np.linalg.inv(L)


def _bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``a @ b`` with fast paths for q = 1."""
    if a.shape[2] == 1 and b.shape[1] == 1:
        return a * b[:, 0:1, :]
    return a @ b


def _scatter(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Sum ``values[m]`` into slot ``index[m]`` (stack of matrices)."""
    shape = values.shape[1:]
    flat = values.reshape(len(values), -1)
    out = np.empty((size, flat.shape[1]))
    for c in range(flat.shape[1]):
        out[:, c] = np.bincount(index, weights=flat[:, c], minlength=size)
    return out.reshape((size,) + shape)


def _per_level(codes: np.ndarray, left: np.ndarray, right: np.ndarray,
               nlev: int) -> np.ndarray:
    """``sum_{obs in level} left_obs right_obs'``: (nlev, a, b)."""
    a, b = left.shape[1], right.shape[1]
    out = np.empty((nlev, a, b))
    for s in range(a):
        for t in range(b):
            out[:, s, t] = np.bincount(codes, weights=left[:, s] * right[:, t],
                                       minlength=nlev)
    return out


def _lower_chol(M: np.ndarray) -> np.ndarray:
    L, info = dpotrf(M, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise NotPositiveDefinite
    return L


def _logdet_stack(L: np.ndarray) -> float:
    return float(2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum())


class FactorBase:
    """Cholesky factor of the blocked system at one ``theta``.

    Attributes
    ----------
    ldL2 : float
        ``log det(Lambda'Z'Z Lambda + I)``.
    ldRX2 : float
        ``log det`` of the fixed-effects block of the Schur complement.
    pwrss : float
        Penalized weighted residual sum of squares.
    """

    ldL2: float
    ldRX2: float
    pwrss: float
    p: int

    def rx(self) -> np.ndarray:
        """Lower-triangular ``p x p`` factor of the fixed-effects Schur complement."""
        raise NotImplementedError

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        """``(beta, u)``: the fixed effects and the spherical random effects."""
        raise NotImplementedError

    def solve_omega(self, rhs: np.ndarray) -> np.ndarray:
        """``(Lambda'Z'Z Lambda + I)^{-1} rhs`` for ``rhs`` of shape ``(Q, m)``."""
        return self.back_solve(self.forward_solve(rhs))

    def omega_inv_diag(self) -> list[np.ndarray]:
        """Diagonal blocks ``(nlev, q, q)`` of ``(Lambda'Z'Z Lambda + I)^{-1}`` per term."""
        raise NotImplementedError

    def vcov_unscaled(self) -> np.ndarray:
        """``(X'V^{-1}X)^{-1} sigma^2``: the inverse of ``RX RX'``."""
        Linv = solve_triangular(self.rx(), np.eye(self.p), lower=True)
        return Linv.T @ Linv


# --------------------------------------------------------------------------- nested
class NestedSystem:
    """Cross-products when each term's factor is nested in every later term's."""

    def __init__(self, terms: list[TermData], XY: np.ndarray, maps: dict) -> None:
        self.terms = terms
        self.maps = maps
        self.p = XY.shape[1] - 1
        self.nobs = XY.shape[0]
        K = len(terms)
        self.offsets = np.cumsum([0] + [t.nlev * t.q for t in terms])
        self.A_diag = [_per_level(t.codes, t.zraw, t.zraw, t.nlev) for t in terms]
        self.A_off = {(i, j): _per_level(terms[j].codes, terms[i].zraw, terms[j].zraw,
                                         terms[j].nlev)
                      for j in range(K) for i in range(j + 1, K)}
        self.A_x = [_per_level(t.codes, XY, t.zraw, t.nlev) for t in terms]
        self.A_xx = XY.T @ XY

    def factor(self, lambdas: list[np.ndarray]) -> "NestedFactor":
        """Factor the blocked system for the templates ``lambdas``."""
        K = len(self.terms)
        L_diag, L_inv, L_off, L_x = [], [], {}, []
        for j in range(K):
            lam = lambdas[j]
            M = lam.T @ self.A_diag[j] @ lam + np.eye(lam.shape[0])
            for k in range(j):
                Ljk = L_off[(j, k)]
                M -= _scatter(_bmm(Ljk, Ljk.transpose(0, 2, 1)), self.maps[(j, k)],
                              self.terms[j].nlev)
            Ljj = _bchol(M)
            Linv_T = _binv_lower(Ljj).transpose(0, 2, 1)
            L_diag.append(Ljj)
            L_inv.append(Linv_T)
            for i in range(j + 1, K):
                T = lambdas[i].T @ self.A_off[(i, j)] @ lam
                for k in range(j):
                    T -= _scatter(_bmm(L_off[(i, k)], L_off[(j, k)].transpose(0, 2, 1)),
                                  self.maps[(j, k)], self.terms[j].nlev)
                L_off[(i, j)] = _bmm(T, Linv_T)
            T = self.A_x[j] @ lam
            for k in range(j):
                T -= _scatter(_bmm(L_x[k], L_off[(j, k)].transpose(0, 2, 1)),
                              self.maps[(j, k)], self.terms[j].nlev)
            L_x.append(_bmm(T, Linv_T))
        S = self.A_xx.copy()
        for Lxj in L_x:
            flat = Lxj.transpose(1, 0, 2).reshape(self.p + 1, -1)
            S -= flat @ flat.T
        Lxx = _lower_chol(S)
        return NestedFactor(self, L_diag, L_inv, L_off, L_x, Lxx)


class NestedFactor(FactorBase):
    """Factor produced by :class:`NestedSystem`."""

    def __init__(self, system, L_diag, L_inv, L_off, L_x, Lxx) -> None:
        self.system = system
        self.L_diag, self.L_inv_T, self.L_off, self.L_x, self.Lxx = (
            L_diag, L_inv, L_off, L_x, Lxx)
        self.p = system.p
        self.ldL2 = sum(_logdet_stack(L) for L in L_diag)
        d = np.diag(Lxx)
        self.ldRX2 = float(2.0 * np.log(d[:-1]).sum())
        self.pwrss = float(d[-1] ** 2)

    def rx(self) -> np.ndarray:
        return self.Lxx[:-1, :-1]

    def _split(self, v: np.ndarray) -> list[np.ndarray]:
        o, terms = self.system.offsets, self.system.terms
        return [v[o[k]:o[k + 1]].reshape(t.nlev, t.q, -1) for k, t in enumerate(terms)]

    def forward_solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L_Z^{-1} rhs``."""
        parts = [p.copy() for p in self._split(rhs)]
        terms = self.system.terms
        for j in range(len(terms)):
            for k in range(j):
                parts[j] -= _scatter(self.L_off[(j, k)] @ parts[k], self.system.maps[(j, k)],
                                     terms[j].nlev)
            parts[j] = self.L_inv_T[j].transpose(0, 2, 1) @ parts[j]
        return np.concatenate([p.reshape(-1, rhs.shape[1]) for p in parts])

    def back_solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L_Z'^{-1} rhs``."""
        parts = [p.copy() for p in self._split(rhs)]
        K = len(parts)
        for j in reversed(range(K)):
            for i in range(j + 1, K):
                up = parts[i][self.system.maps[(i, j)]]
                parts[j] -= self.L_off[(i, j)].transpose(0, 2, 1) @ up
            parts[j] = self.L_inv_T[j] @ parts[j]
        return np.concatenate([p.reshape(-1, rhs.shape[1]) for p in parts])

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        Rx = self.Lxx[:p, :p]
        beta = solve_triangular(Rx.T, self.Lxx[p, :p], lower=False)
        # c_Z - L_XZ' beta, per term: y row of L_x minus X rows times beta
        cz = np.concatenate([(Lxj[:, p, :] - np.einsum("lcq,c->lq", Lxj[:, :p, :], beta))
                             .reshape(-1) for Lxj in self.L_x])
        u = self.back_solve(cz[:, None])[:, 0]
        return beta, u

    def omega_inv_diag(self) -> list[np.ndarray]:
        terms, maps = self.system.terms, self.system.maps
        K = len(terms)
        out = []
        for j in range(K):
            # column block (j, l) of L^{-1}: nonzero at (j, l) and its ancestors
            cols = {j: self.L_inv_T[j].transpose(0, 2, 1)}  # (nlev_j, q_j, q_j)
            acc = _bmm(cols[j].transpose(0, 2, 1), cols[j])
            for k in range(j + 1, K):
                s = 0.0
                for m in range(j, k):
                    fmj = np.arange(terms[j].nlev) if m == j else maps[(m, j)]
                    s = s + self.L_off[(k, m)][fmj] @ cols[m]
                fkj = maps[(k, j)]
                cols[k] = -(self.L_inv_T[k].transpose(0, 2, 1)[fkj] @ s)
                acc = acc + cols[k].transpose(0, 2, 1) @ cols[k]
            out.append(acc)
        return out


# -------------------------------------------------------------------------- crossed
class CrossedSystem:
    """Cross-products when grouping factors are crossed.

    The first term (most levels) is block diagonal; the others and ``[X y]``
    form a dense block of size ``r = sum(nlev_k q_k, k >= 1) + p + 1``.
    """

    def __init__(self, terms: list[TermData], XY: np.ndarray) -> None:
        self.terms = terms
        self.p = XY.shape[1] - 1
        self.nobs = XY.shape[0]
        t0 = terms[0]
        self.q0, self.l0 = t0.q, t0.nlev
        self.offsets = np.cumsum([0] + [t.nlev * t.q for t in terms])
        self.r1 = int(self.offsets[-1] - self.offsets[1])
        if self.r1 + self.p + 1 > _DENSE_LIMIT:
            raise NotImplementedError(
                f"crossed random effects with {self.r1} columns beyond the first term are "
                f"more than the dense engine handles ({_DENSE_LIMIT})")
        self.A00 = _per_level(t0.codes, t0.zraw, t0.zraw, t0.nlev)
        self.AX0 = _per_level(t0.codes, XY, t0.zraw, t0.nlev)  # (l0, p+1, q0)
        Z0 = t0.sparse_z()
        if len(terms) > 1:
            Zr = sp.hstack([t.sparse_z() for t in terms[1:]], format="csr")
            A10 = (Zr.T @ Z0).tocsc()
            A10.sort_indices()
            # entries grouped by level of the first term; q0 columns share rows
            A10 = self._level_pattern(A10)
            A11 = (Zr.T @ Zr).toarray()
            A1X = np.asarray(Zr.T @ XY)
        else:
            A10 = None
            A11 = np.zeros((0, 0))
            A1X = np.zeros((0, self.p + 1))
        self.A10 = A10
        self.ARR = np.block([[A11, A1X], [A1X.T, XY.T @ XY]])

    def _level_pattern(self, A10: sp.csc_matrix):
        """Row indices, level and (nnz, q0) values of ``A_10``, level by level."""
        q0 = self.q0
        rows, levels, vals = [], [], []
        csc = A10
        # union of row patterns over the q0 columns of each level
        pattern = sp.csc_matrix((np.ones_like(csc.data), csc.indices, csc.indptr),
                                shape=csc.shape)
        lev_pat = (pattern @ sp.kron(sp.eye(self.l0), np.ones((q0, 1)), format="csc")).tocsc()
        lev_pat.sort_indices()
        counts = np.diff(lev_pat.indptr)
        rows = lev_pat.indices.astype(np.intp)
        levels = np.repeat(np.arange(self.l0), counts)
        dense_cols = np.empty((len(rows), q0))
        A = csc.tocsr()
        for s in range(q0):
            cols = levels * q0 + s
            dense_cols[:, s] = np.asarray(A[rows, cols]).ravel()
        ptr = np.concatenate([[0], np.cumsum(counts)])
        return {"rows": rows, "levels": levels, "vals": dense_cols, "indptr": ptr}

    def lambda_r_scale(self, lambdas: list[np.ndarray], M: np.ndarray) -> np.ndarray:
        """``Lambda_R' M Lambda_R`` for the random rows/columns of ``M`` (in place)."""
        for k, t in enumerate(self.terms[1:], start=1):
            a, b = self.offsets[k] - self.offsets[1], self.offsets[k + 1] - self.offsets[1]
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

    def factor(self, lambdas: list[np.ndarray]) -> "CrossedFactor":
        """Factor the blocked system for the templates ``lambdas``."""
        lam0 = lambdas[0]
        L00 = _bchol(lam0.T @ self.A00 @ lam0 + np.eye(self.q0))
        L00inv = _binv_lower(L00)
        T0 = lam0 @ L00inv.transpose(0, 2, 1)  # (l0, q0, q0): Lambda0 L00^{-T}
        BX = _bmm(self.AX0, T0)  # (l0, p+1, q0)
        BXf = BX.transpose(1, 0, 2).reshape(self.p + 1, -1)
        r1 = self.r1
        S = self.ARR.copy()
        S[r1:, r1:] -= BXf @ BXf.T
        B1 = None
        if self.A10 is not None:
            pat = self.A10
            vals = np.einsum("es,est->et", pat["vals"], T0[pat["levels"]]) \
                if self.q0 > 1 else pat["vals"] * T0[pat["levels"], 0, :]
            B1 = self._b1_matrix(vals)
            G11 = (B1 @ B1.T).toarray()
            G1X = np.asarray(B1 @ BXf.T)
            S[:r1, :r1] -= G11
            S[:r1, r1:] -= G1X
            S[r1:, :r1] -= G1X.T
            self.lambda_r_scale(lambdas, S)
            S[np.arange(r1), np.arange(r1)] += 1.0
        L = _lower_chol(S)
        return CrossedFactor(self, lambdas, L00, L00inv, B1, BX, L)

    def _b1_matrix(self, vals: np.ndarray) -> sp.csr_matrix:
        pat = self.A10
        q0 = self.q0
        cols = (pat["levels"][:, None] * q0 + np.arange(q0)[None, :]).ravel()
        rows = np.repeat(pat["rows"], q0)
        return sp.csr_matrix((vals.ravel(), (rows, cols)), shape=(self.r1, self.l0 * q0))


class CrossedFactor(FactorBase):
    """Factor produced by :class:`CrossedSystem`."""

    def __init__(self, system, lambdas, L00, L00inv, B1, BX, L) -> None:
        self.system = system
        self.lambdas = lambdas
        self.L00, self.L00inv, self.B1, self.BX, self.L = L00, L00inv, B1, BX, L
        self.p = system.p
        r1 = system.r1
        d = np.diag(L)
        self.ldL2 = _logdet_stack(L00) + float(2.0 * np.log(d[:r1]).sum())
        self.ldRX2 = float(2.0 * np.log(d[r1:-1]).sum())
        self.pwrss = float(d[-1] ** 2)

    def rx(self) -> np.ndarray:
        r1 = self.system.r1
        return self.L[r1:-1, r1:-1]

    def _scaled_b1(self) -> sp.csr_matrix:
        """``Lambda_R' B1``: the factor block below the first term."""
        sysm = self.system
        blocks = []
        for k, t in enumerate(sysm.terms[1:], start=1):
            blocks.append(sp.kron(sp.eye(t.nlev), self.lambdas[k].T))
        lam_rt = sp.block_diag(blocks, format="csr")
        return (lam_rt @ self.B1).tocsr()

    def forward_solve(self, rhs: np.ndarray) -> np.ndarray:
        sysm = self.system
        n0 = sysm.l0 * sysm.q0
        v0 = (self.L00inv @ rhs[:n0].reshape(sysm.l0, sysm.q0, -1))
        v0 = v0.reshape(n0, -1)
        if sysm.r1 == 0:
            return v0
        rhs1 = rhs[n0:] - self._scaled_b1() @ v0
        v1 = solve_triangular(self.L[:sysm.r1, :sysm.r1], rhs1, lower=True)
        return np.vstack([v0, v1])

    def back_solve(self, rhs: np.ndarray) -> np.ndarray:
        sysm = self.system
        n0 = sysm.l0 * sysm.q0
        v0 = rhs[:n0]
        if sysm.r1:
            w1 = solve_triangular(self.L[:sysm.r1, :sysm.r1], rhs[n0:], lower=True, trans=1)
            v0 = v0 - self._scaled_b1().T @ w1
        w0 = (self.L00inv.transpose(0, 2, 1) @ v0.reshape(sysm.l0, sysm.q0, -1))
        w0 = w0.reshape(n0, -1)
        return np.vstack([w0, w1]) if sysm.r1 else w0

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        sysm = self.system
        r1, p = sysm.r1, self.p
        L = self.L
        c_r = L[-1, :-1]
        w_r = solve_triangular(L[:-1, :-1], c_r, lower=True, trans=1)
        beta = w_r[r1:]
        # c0 - B_{R'}' w_R' with the first-term rows
        c0 = self.BX[:, p, :].reshape(-1)
        v0 = c0 - self.BX[:, :p, :].transpose(0, 2, 1).reshape(-1, p) @ beta
        if r1:
            v0 = v0 - self._scaled_b1().T @ w_r[:r1]
        w0 = (self.L00inv.transpose(0, 2, 1) @ v0.reshape(sysm.l0, sysm.q0, 1)).reshape(-1)
        return beta, np.concatenate([w0, w_r[:r1]])

    def omega_inv_diag(self) -> list[np.ndarray]:
        sysm = self.system
        l0, q0, r1 = sysm.l0, sysm.q0, sysm.r1
        inv00 = self.L00inv.transpose(0, 2, 1) @ self.L00inv
        out = [inv00]
        if r1 == 0:
            return out
        L11 = self.L[:r1, :r1]
        # Y = L11^{-1} (Lambda_R' B1) L00^{-1}; block-0 diagonal gains Y_l' Y_l
        B = self._scaled_b1().toarray().reshape(r1, l0, q0)
        BL = np.einsum("rls,lst->rlt", B, self.L00inv)
        Y = solve_triangular(L11, BL.reshape(r1, -1), lower=True).reshape(r1, l0, q0)
        out[0] = inv00 + np.einsum("rls,rlt->lst", Y, Y)
        L11inv = solve_triangular(L11, np.eye(r1), lower=True)
        for k, t in enumerate(sysm.terms[1:], start=1):
            a = sysm.offsets[k] - sysm.offsets[1]
            cols = L11inv[:, a:a + t.nlev * t.q].reshape(r1, t.nlev, t.q)
            out.append(np.einsum("rls,rlt->lst", cols, cols))
        return out
