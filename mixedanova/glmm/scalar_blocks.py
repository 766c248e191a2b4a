"""The Laplace gradient's block algebra for large designs of scalar terms.

:class:`~mixedanova.glmm.gradient.LaplaceGradient` keeps the coupling ``B``
between the first term and the later ones dense and forms ``n x r`` arrays: fine
for thousands of rows, not for a million rows with crossed ``(1|g1) + (1|g2)``
of 20,000 and 2,000 levels.  With every term scalar (one column), ``B`` is kept
sparse (its pattern, the level pairs that share a row, is found once; an
evaluation scatters the weighted products into it), the Schur complement
``S = E - B D^{-1} B'`` is a sparse product, and the entries of
``G = Z Lambda M^{-1}`` on each row's own levels come from gathers:

* later term column ``k`` of row ``i`` (``G_R = (Z_R Lambda_R - K B') P``,
  ``P = S^{-1}``, ``K = Z_0 Lambda_0 D^{-1}``):
  ``sum_j c_ij P[m_ij, k] - c0_i (D^{-1} B' P)[l_i, k]``;
* the first term (``G_0 = K - G_R B D^{-1}``):
  ``K_i (1 + beta_{l_i}) - sum_j c_ij (D^{-1} B' P)[l_i, m_ij]`` with
  ``beta_l = sum_m B[m, l] (D^{-1} B' P)[l, m]``;

so the largest array is ``D^{-1} B' P`` (first-term levels x later columns);
when these gathers are few, only the entries of ``P`` they read are formed.
Where the pairs of entries of ``B`` in one column are few, ``S`` is summed on its
own sparse pattern (``E``'s and ``B D^{-1} B'``'s together, one ``bincount``).
When the first term's levels are nested in the first later term's (one level
per row, as grouseticks' ``(1|INDEX)``), that term's block of ``S`` is diagonal
and is eliminated as well
(:class:`~mixedanova.glmm.nested_schur.NestedSchur`): only the rest is factored
densely, and the entries of ``P`` come from that factor
(:class:`~mixedanova.glmm.nested_schur.InverseEntries`).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.lapack import dpotrf, dpotri

from ..likelihood.blocked import NotPositiveDefinite
from .gradient import BlockParts, LaplaceGradient
from .laplace import LaplaceObjective
from .nested_schur import InverseEntries, NestedSchur

__all__ = ["ScalarBlocksGradient"]

_MAX_R = 6000               # largest dense Schur complement
_MAX_LR = 150_000_000       # largest (first-term levels x later columns) array (1.2 GB)
_DENSE_B = 2_000_000        # B kept dense up to this many entries
_PAIRS = 2_000_000          # B D^{-1} B' by pairs of entries up to this many pairs


def _cholesky(T: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of ``T``.

    Raises
    ------
    NotPositiveDefinite
    """
    # T is symmetric: its transpose is the Fortran-ordered array LAPACK factors in
    # place (no copy); the upper triangle is left as it was (only the lower is read)
    c, info = dpotrf(T.T, lower=1, clean=0, overwrite_a=1)
    if info:
        raise NotPositiveDefinite("the Schur complement is not positive definite")
    return c


def _schur_solve(cho, x: np.ndarray) -> np.ndarray:
    if isinstance(cho, NestedSchur):
        return cho.solve(x)
    return cho_solve(cho, x, check_finite=False)


class ScalarBlocksGradient(LaplaceGradient):
    """:class:`~mixedanova.glmm.gradient.LaplaceGradient` with a sparse ``B``
    (every term scalar; see the module docstring)."""

    def __init__(self, obj: LaplaceObjective) -> None:
        super().__init__(obj)

    def available(self) -> bool:
        d = self.obj.data
        n0 = d.terms[self.k0].nlev
        return (self.family_supported()
                and all(t.rows is None and t.q == 1 for t in d.terms) and len(d.terms) > 1
                and self.r <= _MAX_R and n0 * self.r <= _MAX_LR)

    def _setup(self) -> None:
        d = self.obj.data
        t0 = d.terms[self.k0]
        r, n0 = self.r, t0.nlev
        self.n0 = n0
        rc = self.r_cols  # (n, nR) later column of each row
        nR = rc.shape[1]
        self.e_index = (rc[:, :, None] * r + rc[:, None, :]).reshape(self.n, -1)
        keys = (rc * n0 + t0.codes[:, None]).ravel()  # (row-major: row i, later term j)
        uniq, slot = np.unique(keys, return_inverse=True)
        self.b_slot = slot
        self.b_nnz = len(uniq)
        rows, cols = np.divmod(uniq, n0)
        # CSR (r x n0) in key order: rows sorted, columns sorted within a row
        self.b_indptr = np.searchsorted(rows, np.arange(r + 1)).astype(np.int64)
        self.b_indices = cols.astype(np.int64)
        self.b_rows = rows
        self.b_flat = uniq
        self.nR = nR
        self.rc_flat = rc.ravel()
        # every term's column of u and its z per row, in the terms' order
        self.u_cols = np.column_stack([t.codes + o for t, o in zip(d.terms, self.offsets[:-1])])
        self.z_cols = np.column_stack([t.zraw[:, 0] for t in d.terms])
        self._col_cache: dict = {}
        # dense B when small and not too sparse (one row per first-term level, as
        # grouseticks' (1|INDEX), leaves B almost empty: the sparse product wins)
        self.large = r * n0 > _DENSE_B
        self.dense_b = not self.large and self.b_nnz >= 0.05 * r * n0
        self.bt = None  # the sparse path's patterns, formed at its first use
        # the first later term's block of S is diagonal when every first-term level
        # lies in one level of it (then NestedSchur); its size, else 0
        self.nested_m1 = 0
        if len(self.rest) > 1:
            t1 = d.terms[self.rest[0]]
            pairs = np.unique(t0.codes.astype(np.int64) * t1.nlev + t1.codes)
            if len(pairs) == len(np.unique(t0.codes)):
                self.nested_m1 = t1.nlev

    def _sparse_setup(self) -> None:
        """The fixed patterns of the sparse path, formed once: ``(D^{-1} B')`` as a
        CSR matrix whose values an evaluation overwrites, and, when few, the pairs
        of entries of ``B`` in one column (the entries of ``B D^{-1} B'``)."""
        rows, cols, r, n0 = self.b_rows, self.b_indices, self.r, self.n0
        perm = np.lexsort((rows, cols))  # entries in (column, row) order
        self.bt_perm = perm
        self.bt = sp.csr_matrix((np.zeros(len(perm)), rows[perm].astype(np.int64),
                                 np.searchsorted(cols[perm], np.arange(n0 + 1))
                                 .astype(np.int64)), shape=(n0, r))
        cnt = np.bincount(cols, minlength=n0)
        npairs = int(np.sum(cnt.astype(np.int64) ** 2))
        self.pairs = None
        if npairs <= max(4 * len(rows), _PAIRS):
            start = np.concatenate([[0], np.cumsum(cnt)[:-1]])  # of each column in perm
            rep = cnt[cols[perm]]
            left = np.repeat(perm, rep)
            first = np.repeat(np.arange(len(perm)), rep)
            within = np.arange(npairs) - np.repeat(np.cumsum(rep) - rep, rep)
            right = perm[start[cols[perm]][first] + within] if npairs else perm[:0]
            self.pairs = (left, right, rows[left] * r + rows[right])
        self.s_flat = None
        self.nested_plan = None
        if self.pairs is not None:
            self._pattern_setup()
        self._query_setup(perm, cnt, rows, cols, r)

    def _pattern_setup(self) -> None:
        """The pattern of ``S = E - B D^{-1} B'`` (union of ``E``'s and the pairs'):
        an evaluation sums both into one vector of its entries; with a nested
        first block, the positions of ``d1``, ``C`` and ``F`` in it, and the pairs
        of entries of ``C`` in one row (the entries of ``C' diag(d1)^{-1} C``) when few."""
        r = self.r
        e_flat = self.e_index.ravel()
        p_flat = self.pairs[2]
        diag = np.arange(r, dtype=np.int64) * (r + 1)
        s_flat, pos = np.unique(np.concatenate([e_flat, p_flat, diag]), return_inverse=True)
        self.s_flat = s_flat
        self.s_pos = pos[:len(e_flat) + len(p_flat)]
        self.s_diag = pos[len(e_flat) + len(p_flat):]
        m1 = self.nested_m1
        if not m1:
            return
        m2 = r - m1
        a, b = np.divmod(s_flat, r)
        if np.any((a < m1) & (b < m1) & (a != b)):  # not diagonal after all
            self.nested_m1 = 0
            return
        c_at = np.flatnonzero((a < m1) & (b >= m1))  # C: rows of block 1, columns of F
        f_at = np.flatnonzero((a >= m1) & (b >= m1))
        c_rows, c_cols = a[c_at], b[c_at] - m1
        cnt = np.bincount(c_rows, minlength=m1).astype(np.int64)
        npairs = int(np.sum(cnt ** 2))
        t_pairs = None
        if npairs <= min(_PAIRS, m1 * m2 * m2 // 8):
            order = np.argsort(c_rows, kind="stable")
            start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            rep = cnt[c_rows[order]]
            left = np.repeat(order, rep)
            first = np.repeat(np.arange(len(order)), rep)
            within = np.arange(npairs) - np.repeat(np.cumsum(rep) - rep, rep)
            right = order[start[c_rows[order]][first] + within]
            t_pairs = (left, right, c_cols[left] * m2 + c_cols[right])
        self.nested_pattern = (self.s_diag[:m1], c_at, c_rows, c_cols, f_at,
                               (a[f_at] - m1) * m2 + (b[f_at] - m1), t_pairs)

    def _query_setup(self, perm: np.ndarray, cnt: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray, r: int) -> None:
        """The entries of ``D^{-1} B' P`` the gradient reads (each row's first-term
        level against its later columns, and the pattern of ``B``), each a sum over
        the entries of ``B`` in that level's column: when these products are few,
        they replace the whole ``(l0, r)`` array.  ``P`` is read in its lower part."""
        self.wq = None
        codes = self.obj.data.terms[self.k0].codes
        rc = self.r_cols
        ql = np.concatenate([np.repeat(codes, self.nR), cols])
        qm = np.concatenate([rc.ravel(), rows])
        cq = cnt[ql].astype(np.int64)
        total = int(cq.sum())
        if total > max(8 * len(ql), _PAIRS):
            return
        start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        q_idx = np.repeat(np.arange(len(ql)), cq)
        within = np.arange(total) - np.repeat(np.cumsum(cq) - cq, cq)
        e_idx = perm[start[ql][q_idx] + within]
        a, m = rows[e_idx], qm[q_idx]
        p_low = [[np.maximum(rc[:, j], rc[:, jj]) * r + np.minimum(rc[:, j], rc[:, jj])
                  for j in range(self.nR)] for jj in range(self.nR)]
        # the entries of P read, once each: P is never needed whole
        q_flat = np.maximum(a, m) * r + np.minimum(a, m)
        need = np.unique(np.concatenate([q_flat] + [f for row in p_low for f in row]))
        self.p_need = need
        self.wq = (q_idx, e_idx, np.searchsorted(need, q_flat), len(ql))
        self.p_low = [[np.searchsorted(need, f) for f in row] for row in p_low]
        if self.nested_m1 and self.s_flat is not None:
            _, _, c_rows, c_cols, _, _, _ = self.nested_pattern
            m1 = self.nested_m1
            self.nested_plan = InverseEntries.plan(need // r, need % r, m1, r - m1,
                                                   c_rows, c_cols,
                                                   limit=max(8 * len(need), _PAIRS // 8))

    def _parts(self, c: list[np.ndarray], w: np.ndarray) -> BlockParts:
        d = self.obj.data
        t0 = d.terms[self.k0]
        c0 = c[self.k0][:, 0]
        r, n0 = self.r, self.n0
        D = np.bincount(t0.codes, weights=w * c0 * c0, minlength=n0) + 1.0
        if not D.min() > 0:
            raise NotPositiveDefinite("a first-term block is not positive definite")
        Dinv = 1.0 / D
        logdet = float(np.log(D).sum())
        vals = np.concatenate([c[k] for k in self.rest], axis=1)  # (n, nR)
        wv = w[:, None] * vals
        e_vals = (wv[:, :, None] * vals[:, None, :]).ravel()
        bdata = np.bincount(self.b_slot, weights=(wv * c0[:, None]).ravel(),
                            minlength=self.b_nnz)
        if self.dense_b:  # small: numpy beats building sparse matrices
            B = np.zeros(r * n0)
            B[self.b_flat] = bdata
            B = B.reshape(r, n0)
            BD = B * Dinv
            S = self._e_dense(e_vals) - BD @ B.T
        else:  # B and B D^{-1} as their values on the pattern (see _solve)
            if self.bt is None:
                self._sparse_setup()
            B = bdata
            BD = bdata * Dinv[self.b_indices]
            if self.pairs is not None:  # S on its pattern: E and B D^{-1} B' at once
                left, right, _ = self.pairs
                sv = np.bincount(self.s_pos, weights=np.concatenate(
                    [e_vals, -(BD[left] * bdata[right])]), minlength=len(self.s_flat))
                sv[self.s_diag] += 1.0
                if self.nested_m1:
                    cho = self._nested_pattern_factor(sv)
                    logdet += cho.logdet()
                    return BlockParts(Dinv[:, None, None], B, BD, cho, vals, logdet)
                S = np.zeros(r * r)
                S[self.s_flat] = sv
                S = S.reshape(r, r)
            else:
                Bs = sp.csr_matrix((bdata, self.b_indices, self.b_indptr), shape=(r, n0))
                BDs = sp.csr_matrix((BD, self.b_indices, self.b_indptr), shape=(r, n0))
                S = self._e_dense(e_vals) - (BDs @ Bs.T).toarray()
        if self.nested_m1:
            cho = self._nested_factor(S)
            logdet += cho.logdet()
            return BlockParts(Dinv[:, None, None], B, BD, cho, vals, logdet)
        try:
            cho = cho_factor(S, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise NotPositiveDefinite("the Schur complement is not positive definite") \
                from None
        logdet += float(2.0 * np.log(np.diag(cho[0])).sum())
        return BlockParts(Dinv[:, None, None], B, BD, cho, vals, logdet)

    def _e_dense(self, e_vals: np.ndarray) -> np.ndarray:
        """``E = Z_R'WZ_R + I`` (dense) from the products of each row's later columns."""
        r = self.r
        E = np.bincount(self.e_index.ravel(), weights=e_vals, minlength=r * r).reshape(r, r)
        E[np.arange(r), np.arange(r)] += 1.0
        return E

    def _nested_factor(self, S: np.ndarray) -> NestedSchur:
        """:class:`NestedSchur` of a dense ``S`` (``C`` kept whole)."""
        m1 = self.nested_m1
        m2 = self.r - m1
        d1 = np.diag(S)[:m1].copy()
        if not np.all(d1 > 0):
            raise NotPositiveDefinite("the Schur complement is not positive definite")
        C = S[:m1, m1:]
        G = C / d1[:, None]
        rows, cols = np.divmod(np.arange(m1 * m2), m2)
        return NestedSchur(d1, rows, cols, G.ravel(), _cholesky(S[m1:, m1:] - C.T @ G))

    def _nested_pattern_factor(self, sv: np.ndarray) -> NestedSchur:
        """:class:`NestedSchur` from the entries ``sv`` of ``S`` on its pattern."""
        d1_at, c_at, c_rows, c_cols, f_at, f_dst, t_pairs = self.nested_pattern
        m1 = self.nested_m1
        m2 = self.r - m1
        d1 = sv[d1_at]
        if not d1.min() > 0:
            raise NotPositiveDefinite("the Schur complement is not positive definite")
        cv = sv[c_at]
        gv = cv / d1[c_rows]
        T = np.zeros(m2 * m2)
        T[f_dst] = sv[f_at]
        if t_pairs is not None:
            left, right, flat = t_pairs
            T -= np.bincount(flat, weights=gv[left] * cv[right], minlength=m2 * m2)
            T = T.reshape(m2, m2)
        else:
            C = np.zeros((m1, m2))
            C[c_rows, c_cols] = cv
            T = T.reshape(m2, m2) - (C / d1[:, None]).T @ C
        return NestedSchur(d1, c_rows, c_cols, gv, _cholesky(T))

    def _hat(self, c: list[np.ndarray], G: dict) -> np.ndarray:
        return (np.concatenate(c, axis=1) * np.concatenate([G[k] for k in range(len(c))],
                                                           axis=1)).sum(axis=1)

    def _theta_gradient(self, u: np.ndarray, s: np.ndarray, G: dict, dr: np.ndarray,
                        dvec: np.ndarray, W: np.ndarray) -> np.ndarray:
        # one scalar theta per term: the three sums of the base class as products
        # with the (n, terms) arrays of z, u, s and G on each row's levels
        z = self.z_cols
        Gm = np.concatenate([G[k] for k in range(z.shape[1])], axis=1)
        return ((z * u[self.u_cols]).T @ dr - 0.5 * ((z * s[self.u_cols]).T @ dvec)
                + 2.0 * ((z * Gm).T @ W))

    def _rhs(self, c: list[np.ndarray], v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``Lambda'Z'v`` split as ``(first term (l0, 1), later terms (r,))``."""
        codes = self.obj.data.terms[self.k0].codes
        x0 = np.bincount(codes, weights=c[self.k0][:, 0] * v, minlength=self.n0)
        vals = np.concatenate([c[k] for k in self.rest], axis=1)
        xR = np.bincount(self.rc_flat, weights=(vals * v[:, None]).ravel(), minlength=self.r)
        return x0[:, None], xR

    def _col_index(self, name: str, m: int) -> np.ndarray:
        """``idx * m + j`` for the ``m`` columns ``j``, ``idx`` the index array
        ``name`` (flat positions in a ``(len, m)`` array; cached)."""
        key = (name, m)
        out = self._col_cache.get(key)
        if out is None:
            idx = self.obj.data.terms[self.k0].codes if name == "codes" else getattr(self, name)
            out = self._col_cache[key] = (idx.reshape(-1, 1) * m + np.arange(m)).ravel()
        return out

    def _rhs_cols(self, c: list[np.ndarray], V: np.ndarray) -> np.ndarray:
        m = V.shape[1]
        x0 = np.bincount(self._col_index("codes", m), weights=(c[self.k0] * V).ravel(),
                         minlength=self.n0 * m)
        vals = np.concatenate([c[k] for k in self.rest], axis=1)
        xR = np.bincount(self._col_index("rc_flat", m),
                         weights=(vals[:, :, None] * V[:, None, :]).ravel(),
                         minlength=self.r * m)
        return np.concatenate([x0, xR]).reshape(-1, m)

    def _solve_cols(self, parts: BlockParts, R: np.ndarray) -> np.ndarray:
        n0, r = self.n0, self.r
        m = R.shape[1]
        X0, XR = R[:n0], R[n0:]
        Dinv = parts.Dinv[:, 0, 0]
        if self.dense_b:
            ZR = _schur_solve(parts.cho, XR - parts.BD @ X0)
            Z0 = Dinv[:, None] * (X0 - parts.B.T @ ZR)
            return np.concatenate([Z0, ZR])
        br, bi = self.b_rows, self.b_indices
        ZR = _schur_solve(parts.cho, XR - np.bincount(
            self._col_index("b_rows", m), weights=(parts.BD[:, None] * X0[bi]).ravel(),
            minlength=r * m).reshape(r, m))
        Z0 = Dinv[:, None] * (X0 - np.bincount(
            self._col_index("b_indices", m), weights=(parts.B[:, None] * ZR[br]).ravel(),
            minlength=n0 * m).reshape(n0, m))
        return np.concatenate([Z0, ZR])

    def _solve(self, parts: BlockParts, x0: np.ndarray, xR: np.ndarray):
        Dinv = parts.Dinv[:, 0, 0]
        x0 = x0.reshape(-1)
        if self.dense_b:
            zR = _schur_solve(parts.cho, xR - parts.BD @ x0)
            z0 = Dinv * (x0 - parts.B.T @ zR)
            return z0[:, None], zR
        br, bi = self.b_rows, self.b_indices
        zR = _schur_solve(parts.cho, xR - np.bincount(br, weights=parts.BD * x0[bi],
                                                      minlength=self.r))
        z0 = Dinv * (x0 - np.bincount(bi, weights=parts.B * zR[br], minlength=self.n0))
        return z0[:, None], zR

    def _inverse_rows(self, parts: BlockParts, c: list[np.ndarray]) -> dict:
        d = self.obj.data
        t0 = d.terms[self.k0]
        l = t0.codes
        c0 = c[self.k0][:, 0]
        Dinv = parts.Dinv[:, 0, 0]
        K = c0 * Dinv[l]
        nested = isinstance(parts.cho, NestedSchur)
        if not self.dense_b and self.wq is not None:
            # only the entries of P = S^{-1} that are read
            if nested and self.nested_plan is not None and \
                    parts.cho.g_rows is self.nested_pattern[2]:
                pv = parts.cho.entries(self.nested_plan)
            else:
                pv = self._inverse(parts).ravel()[self.p_need]
            return self._inverse_rows_few(parts, c0, K, l, pv)
        P = self._inverse(parts)
        P = np.tril(P) + np.tril(P, -1).T
        bi, br = self.b_indices, self.b_rows
        if self.dense_b:
            WT = parts.BD.T @ P  # D^{-1} B' P: (n0, r)
            bdata = parts.B[br, bi]
        else:
            self.bt.data = parts.BD[self.bt_perm]
            WT = np.asarray(self.bt @ P)
            bdata = parts.B
        beta = np.bincount(bi, weights=bdata * WT[bi, br], minlength=self.n0)
        rc = self.r_cols
        vals = parts.vals
        G = {}
        g0 = K * (1.0 + beta[l])
        for j in range(self.nR):
            g0 = g0 - vals[:, j] * WT[l, rc[:, j]]
        G[self.k0] = g0[:, None]
        for jj, k in enumerate(self.rest):
            col = rc[:, jj]
            gk = -c0 * WT[l, col]
            for j in range(self.nR):
                gk = gk + vals[:, j] * P[rc[:, j], col]
            G[k] = gk[:, None]
        return G

    @staticmethod
    def _inverse(parts: BlockParts) -> np.ndarray:
        """``P = S^{-1}``, valid in its lower triangle at least."""
        if isinstance(parts.cho, NestedSchur):
            return parts.cho.inverse()
        P, info = dpotri(parts.cho[0], lower=1)  # S^{-1} from its factor (lower part)
        if info:
            raise NotPositiveDefinite("cannot invert the Schur complement")
        return P

    def _inverse_rows_few(self, parts: BlockParts, c0: np.ndarray, K: np.ndarray,
                          l: np.ndarray, pv: np.ndarray) -> dict:
        """:meth:`_inverse_rows` from the few entries of ``D^{-1} B' P`` it reads
        (see :meth:`_query_setup`; ``pv`` the entries of ``P`` at ``p_need``)."""
        q_idx, e_idx, q_at, nq = self.wq
        n, nR = self.n, self.nR
        wq = np.bincount(q_idx, weights=parts.BD[e_idx] * pv[q_at], minlength=nq)
        w_rows = wq[:n * nR].reshape(n, nR)  # (D^{-1} B' P)[l_i, later column j of i]
        beta = np.bincount(self.b_indices, weights=parts.B * wq[n * nR:],
                           minlength=self.n0)
        vals = parts.vals
        G = {}
        g0 = K * (1.0 + beta[l])
        for j in range(nR):
            g0 = g0 - vals[:, j] * w_rows[:, j]
        G[self.k0] = g0[:, None]
        for jj, k in enumerate(self.rest):
            gk = -c0 * w_rows[:, jj]
            for j in range(nR):
                gk = gk + vals[:, j] * pv[self.p_low[jj][j]]
            G[k] = gk[:, None]
        return G
