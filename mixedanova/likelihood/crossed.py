"""Blocked Cholesky factor when grouping factors are crossed.

The first term (the one with most levels) is block diagonal and is eliminated
level by level.  Write ``C`` for the factor block below it (rows: the other
random terms ``R1`` and ``[X y]``); its ``R1`` part is sparse with the pattern of
``Z_R1'Z_0`` -- one entry per pair (level of a later term, level of the first
term) that share an observation.  The Schur complement

    S = Lambda_R'(A_RR)Lambda_R + I_R1 - C C'

is dense and factored by LAPACK.  ``C C'`` is accumulated over the pairs of
entries that share a first-term level (computed once), so an evaluation costs
``O(pairs + r^3 / 3)`` with ``r = sum(nlev_k q_k, k >= 1) + p + k`` (``k``
response columns).  The number
of pairs grows with the rows per first-term level.  Two level-sized
alternatives replace it when they are cheaper:

* a scalar first term (``(1|g)``): its level weight ``T0_l^2`` depends on theta
  only through ``A00_l`` (an intercept's: the level's count), so the whole
  eliminated part, ``B B'`` with ``B = [A_R0; A_X0] Lambda_0 L00^{-T}`` (the R1
  and ``[X y]`` rows), is ``sum_g w_g M_g`` over the distinct values, with
  ``M_g`` formed once; an evaluation is one weighted sum of ``r x r`` lower
  triangles and touches neither the rows nor the entries of ``C`` (those are
  formed only when a solution or a gradient asks for them);
* otherwise ``C`` is formed densely and ``C C'`` (and the gradient's
  ``C' S^{-1} C`` diagonal blocks) come from BLAS: ``O(r1^2 l0 q0)``.

When neither fits in memory and the pairs are too many to store (10 M rows over
200k x 2k crossed levels have about 250 M pairs, some 90 bytes each), a scalar
first term's ``C C'`` is a sparse product ``C_A diag(T0^2) C_A'`` (``C_A``:
the entries of ``A_R0``, stored once) computed at each evaluation: the pairs'
work without their storage, memory ``O(entries + r^2)``.  Larger still (100 M
rows over 100k x 10k levels: 95 M entries, ~4.5e10 pairs), scalar designs go to
:mod:`.crossed_blocked`, which stores nothing per entry and forms ``C C'`` by
dense blocks of first-term levels (:func:`~.crossed_blocked.use_blocked`).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .blocked import bchol, binv_lower, bmm, response_factor
from .crossed_factor import CrossedFactor
from .crossprod import CrossProducts

__all__ = ["CrossedSystem", "CrossedFactor", "DENSE_LIMIT"]

DENSE_LIMIT = 20000  # largest dense Schur complement this layout will form
_PAIRS_PER_FLOP = 1000  # a pair (numpy, scattered) costs about 1000 dense BLAS flops
_DENSE_C_ENTRIES = 25_000_000  # largest dense C (200 MB) formed for the BLAS path
_GROUPED_ENTRIES = 50_000_000  # largest stack of per-weight r x r lower triangles (400 MB)
_RANK_TABLE_LIMIT = 1 << 26  # keys below this find their distinct values by table
_GROUPED_PER_PAIR = 4  # a stack entry (one BLAS pass) costs about a quarter of a pair
_PAIR_STRUCTURE_LIMIT = 8_000_000  # most entry pairs stored (about 90 bytes each)


def _distinct(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for integer keys in ``[0, size)``:
    by a rank table (no sort) when ``size`` is moderate and not much larger than
    the number of keys, else by sorting (a table of 2^26 entries is 320 MB)."""
    if size > _RANK_TABLE_LIMIT or size > 8 * len(keys):
        uniq, inv = np.unique(keys, return_inverse=True)
        return uniq, inv.ravel()
    seen = np.zeros(size, dtype=bool)
    seen[keys] = True
    uniq = np.flatnonzero(seen)
    rank = np.empty(size, dtype=np.int32)
    rank[uniq] = np.arange(len(uniq), dtype=np.int32)
    return uniq, rank[keys]


class CrossedSystem:
    """Cross-products for crossed grouping factors (see the module docstring)."""

    def __init__(self, cp: CrossProducts) -> None:
        terms = cp.terms
        self.terms = terms
        self.p, self.k = cp.p, cp.k
        t0 = terms[0]
        if not t0.one_per_row:
            raise NotImplementedError("the first (block-diagonal) term must have one level "
                                      "per row")
        self.q0, self.l0 = t0.q, t0.nlev
        self.offsets = np.cumsum([0] + [t.nlev * t.q for t in terms])
        self.r1 = int(self.offsets[-1] - self.offsets[1])
        self.r = self.r1 + self.p + self.k
        if self.r > DENSE_LIMIT:
            raise NotImplementedError(
                f"crossed random effects with {self.r1} columns beyond the first term need a "
                f"dense {self.r} x {self.r} Schur complement, more than this engine forms "
                f"({DENSE_LIMIT}); put the factor with most levels first or simplify the model")
        self._pattern(cp)
        self.refresh(cp)

    def refresh(self, cp: CrossProducts) -> None:
        """Take the numeric blocks of ``cp`` (same design and pattern): no
        sorting or searching beyond what depends on the values (the grouping of
        a scalar first term's level weights)."""
        self.cp = cp
        r, r1 = self.r, self.r1
        self.A00 = cp.diag_blocks(0)
        self.AX0 = cp.zxy[0]  # (l0, p+k, q0)
        self.vals = np.concatenate([cp.pairs[(k, 0)].vals.reshape(-1, self.q0)
                                    for k in range(1, len(self.terms))])[self._order]
        # column-major, as LAPACK factors it in place (r can be 10^4: no copies)
        self.ARR = np.zeros((r, r), order="F")
        base = self.offsets[1]
        for i in range(1, len(self.terms)):
            for j in range(1, i + 1):
                b = cp.pairs[(i, j)]
                ti, tj = self.terms[i], self.terms[j]
                li, lj = np.divmod(b.keys, tj.nlev)
                for a in range(ti.q):
                    for c in range(tj.q):
                        rows = self.offsets[i] - base + li * ti.q + a
                        cols = self.offsets[j] - base + lj * tj.q + c
                        self.ARR[rows, cols] = b.vals[:, a, c]
                        if i != j:
                            self.ARR[cols, rows] = b.vals[:, a, c]
        if r1:
            A1X = np.vstack([cp.zxy_columns(k) for k in range(1, len(self.terms))])
            self.ARR[:r1, r1:] = A1X
            self.ARR[r1:, :r1] = A1X.T
        self.ARR[r1:, r1:] = cp.xy
        self._pairs()

    # ---------------------------------------------------------------- set-up
    def _pattern(self, cp: CrossProducts) -> None:
        """Entries of ``Z_R1'Z_0`` (from the level pairs of ``cp``): row and
        first-term level of each, in level order."""
        terms, l0 = self.terms, self.l0
        n_entries = sum(len(cp.pairs[(k, 0)].keys) * t.q for k, t in enumerate(terms[1:], 1))
        # compact index arrays (there is one entry per level pair sharing a row)
        idx_t = np.int32 if max(self.r, l0 * self.q0, n_entries) < 2**31 - 1 else np.intp
        rows = np.empty(n_entries, dtype=idx_t)
        levels = np.empty(n_entries, dtype=idx_t)
        term_of = np.empty(n_entries, dtype=np.int16)
        at = 0
        for k, t in enumerate(terms[1:], start=1):
            lk, lev = np.divmod(cp.pairs[(k, 0)].keys, l0)
            m = len(lk) * t.q
            base = (self.offsets[k] - self.offsets[1] + lk * t.q).astype(idx_t)
            del lk
            rows[at:at + m] = (base[:, None] + np.arange(t.q, dtype=idx_t)[None, :]).ravel()
            levels[at:at + m] = np.repeat(lev.astype(idx_t), t.q)
            term_of[at:at + m] = k
            at += m
        # the keys are sorted by (later level, first level) within a term and the terms'
        # rows follow each other: rows never decrease, so a stable sort by level gives
        # the (level, row) order
        self._order = np.argsort(levels, kind="stable").astype(idx_t)
        self.rows = rows[self._order]
        del rows
        self.levels = levels[self._order]
        del levels
        term_of = term_of[self._order]
        self.entry_term = term_of
        # scaling by Lambda_R': scalar terms entry-wise, vector terms per group of q rows
        self.scalar_entries = {}
        self.vector_groups = {}
        for k, t in enumerate(terms[1:], start=1):
            if t.q == 1:  # (their entries are found through entry_term)
                self.scalar_entries[k] = True
            else:
                self.vector_groups[k] = np.flatnonzero(term_of == k).reshape(-1, t.q)
        q0 = self.q0
        counts = np.bincount(self.levels, minlength=l0)
        self.level_ptr = np.concatenate([[0], np.cumsum(counts)])
        # CSC layout of C (r1 x l0*q0): column (l, s0) holds the entries of level l
        col_len = np.repeat(counts, q0)
        self.csc_indptr = np.concatenate([[0], np.cumsum(col_len)])
        if q0 == 1:  # the entries are in CSC order already (by level, then row)
            self.csc_entry = self.csc_s0 = None
            self.csc_indices = self.rows
            self.csc_in_order = True
            return
        col_of = np.repeat(np.arange(l0 * q0), col_len)
        within = np.arange(len(col_of)) - self.csc_indptr[col_of]
        self.csc_entry = self.level_ptr[col_of // q0] + within
        self.csc_s0 = col_of % q0
        self.csc_indices = self.rows[self.csc_entry]
        self.csc_in_order = q0 == 1 and np.array_equal(self.csc_entry,
                                                       np.arange(len(self.csc_entry)))

    def _pairs(self) -> None:
        """Pairs of entries sharing a first-term level (``e1 <= e2``).

        ``target`` is the flat index of the pair's rows in the lower triangle of
        the ``r x r`` Schur complement; ``twice`` is 2 for off-diagonal pairs.  For
        a scalar first term, ``C C'`` is linear in one weight per first-term level,
        so it is a sparse operator ``G`` (rows: targets, columns: levels) applied
        to those weights.
        """
        counts = np.diff(self.level_ptr)
        n_pairs = float(np.sum(counts * (counts + 1.0) / 2.0))
        dense_flops = float(self.r1) * self.r1 * self.l0 * self.q0
        fits_dense = self.r1 * self.l0 * self.q0 <= _DENSE_C_ENTRIES
        self.dense_c = n_pairs * self.q0 * self.q0 * _PAIRS_PER_FLOP > dense_flops and fits_dense
        self.G_op = None
        self.groups = None
        self.sparse_cc = False
        if self.q0 == 1 and not self.vector_groups and fits_dense:
            # a scalar first term's level weight T0_l^2 depends on theta only through
            # A00_l (an intercept's: the level's count), so C C' = sum_g w_g M_g with
            # M_g = sum of b_l b_l' over the levels of one A00 value, formed once
            # (with the [X y] rows: the whole of B B')
            uniq, grp = np.unique(self.A00[:, 0, 0], return_inverse=True)
            size = float(len(uniq)) * self.r * (self.r + 1) / 2
            # (worth it when levels share values: not when row weights make them all
            # distinct, as a GLMM's working weights do)
            if (size <= _GROUPED_ENTRIES and size <= _GROUPED_PER_PAIR * n_pairs
                    and 2 * len(uniq) <= self.l0):
                B = np.vstack([self.dense_c_matrix(self.vals), self.AX0[:, :, 0].T])
                # S's lower triangle is all LAPACK reads; row-major, so its first
                # r1 (r1 + 1) / 2 entries are the R1 block's
                low = np.tril_indices(self.r)
                self.groups = (np.unique(grp, return_index=True)[1],
                               np.stack([(B[:, grp == g] @ B[:, grp == g].T)[low]
                                         for g in range(len(uniq))]), low)
                self.dense_c = False
                return
        if self.dense_c:  # C C' by BLAS on a dense C: no pair structure at all
            return
        if self.q0 == 1 and n_pairs > _PAIR_STRUCTURE_LIMIT:
            # too many pairs to store: C C' as a sparse product at each evaluation
            self.sparse_cc = True
            if not hasattr(self, "_c_perm"):  # C by rows: where each entry goes
                by_row = self.c_matrix(np.arange(len(self.vals), dtype=float)[:, None]).tocsr()
                self._c_perm = by_row.data.astype(self.rows.dtype)
                self._c_row_index = (by_row.indices, by_row.indptr)
            return
        if not hasattr(self, "pa"):
            self._pair_structure()
        if self.q0 == 1:
            vv = self.vals[self.pa, 0] * self.vals[self.pb, 0]
            self.G_op = sp.csr_matrix((vv, (self._row_of, self.plevel)),
                                      shape=(len(self.G_rows), self.l0))

    def _pair_structure(self) -> None:
        """The symbolic part of the pairs (kept across refreshes)."""
        nnz = len(self.rows)
        ends = self.level_ptr[1:][self.levels]
        n_after = ends - np.arange(nnz)
        pa = np.repeat(np.arange(nnz), n_after)
        starts = np.cumsum(n_after) - n_after
        pb = pa + (np.arange(len(pa)) - np.repeat(starts, n_after))
        self.pa, self.pb = pa, pb
        self.twice = np.where(pa == pb, 1.0, 2.0)
        self.plevel = self.levels[pa]
        self.ra, self.rb = self.rows[pa], self.rows[pb]  # ra <= rb: rows sorted in a level
        self.target = self.rb.astype(np.int64) * self.r + self.ra
        self.target_f = self.ra.astype(np.int64) * self.r + self.rb  # column-major
        if self.q0 == 1:
            # one operator row per distinct target (in increasing order)
            self.G_rows, self._row_of = _distinct(self.target, self.r * self.r)
            # doubled off-diagonal weights for sums over ordered pairs
            hi, lo = np.divmod(self.G_rows, self.r)
            self.G_rows_f = lo * self.r + hi  # the same entries, column-major
            self.G_twice = np.where(hi == lo, 1.0, 2.0)
            term_of_row = np.repeat(np.arange(len(self.terms) - 1),
                                    [t.nlev * t.q for t in self.terms[1:]])
            self.G_termpair = (term_of_row[hi] * (len(self.terms) - 1)
                               + term_of_row[lo]).astype(np.int32)

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

    def entries(self, lambdas: list[np.ndarray], T0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values of ``C`` on the R1 pattern before and after ``Lambda_R'``:
        ``A_R0 Lambda_0 L00^{-T}`` and ``Lambda_R' A_R0 Lambda_0 L00^{-T}``."""
        if self.q0 == 1:
            raw = self.vals * T0[self.levels, 0, :]
        else:
            raw = np.einsum("es,est->et", self.vals, T0[self.levels])
        if len(self.terms) == 2 and self.scalar_entries:  # one later term, scalar
            v = raw * lambdas[1][0, 0]
        elif self.scalar_entries:  # one multiplication by each entry's term's lambda
            lam = np.ones(len(self.terms))
            for k in self.scalar_entries:
                lam[k] = lambdas[k][0, 0]
            v = raw * lam[self.entry_term][:, None]
        else:
            v = raw.copy()
        for k, groups in self.vector_groups.items():
            v[groups] = lambdas[k].T @ raw[groups]
        return raw, v

    def _csc_data(self, cv: np.ndarray) -> np.ndarray:
        """Entries of ``cv`` in the CSC order of ``C`` (for a scalar first term the
        entries are stored in that order already)."""
        if self.csc_in_order:
            return cv[:, 0]
        return cv[self.csc_entry, self.csc_s0]

    def c_matrix(self, cv: np.ndarray) -> sp.csc_matrix:
        """``C`` restricted to the R1 rows as a sparse ``r1 x (l0 q0)`` matrix."""
        return sp.csc_matrix((self._csc_data(cv), self.csc_indices, self.csc_indptr),
                             shape=(self.r1, self.l0 * self.q0))

    def dense_c_matrix(self, cv: np.ndarray) -> np.ndarray:
        """``C`` on the R1 rows as a dense ``r1 x (l0 q0)`` array."""
        if not hasattr(self, "_dense_flat"):
            col = np.repeat(np.arange(self.l0 * self.q0), np.diff(self.csc_indptr))
            self._dense_flat = self.csc_indices.astype(np.int64) * (self.l0 * self.q0) + col
        out = np.zeros((self.r1, self.l0 * self.q0))
        out.ravel()[self._dense_flat] = self._csc_data(cv)
        return out

    def cct(self, entries: np.ndarray) -> sp.csr_matrix:
        """``C C'`` for a scalar first term with the entries ``entries`` of ``C``
        (in CSC order): a sparse product on the stored index structure."""
        indices, indptr = self._c_row_index
        A = sp.csr_matrix((entries[self._c_perm], indices, indptr), shape=(self.r1, self.l0))
        At = sp.csr_matrix((entries, self.csc_indices, self.csc_indptr),
                           shape=(self.l0, self.r1))  # C's CSC arrays are C' by rows
        return A @ At

    def factor(self, lambdas: list[np.ndarray]) -> "CrossedFactor":
        """Factor the blocked system for the templates ``lambdas``."""
        lam0 = lambdas[0]
        M0 = lam0.T @ self.A00 @ lam0
        M0[:, np.arange(self.q0), np.arange(self.q0)] += 1.0
        L00 = bchol(M0)
        L00inv = binv_lower(L00)
        T0 = lam0 @ L00inv.transpose(0, 2, 1)  # Lambda_0 L00^{-T} per level
        BX = bmm(self.AX0, T0)  # (l0, p+k, q0)
        r1 = self.r1
        # S = Lambda_R'(A_RR - B B')Lambda_R + I_R1, B = A_R0 Lambda_0 L00^{-T} (lower part)
        S = self.ARR.copy(order="F")  # column-major: dpotrf works in place
        g_weights = None
        if self.groups is not None:
            rep, M, low = self.groups
            w = T0[rep, 0, 0] ** 2
            S[low] -= w @ M  # the lower triangle of B B', [X y] rows included
            g_weights = w * L00inv[rep, 0, 0] ** 2
            return self._finish(lambdas, S, L00, L00inv, T0, BX, g_weights)
        BXf = BX.transpose(1, 0, 2).reshape(self.p + self.k, -1)
        if self.sparse_cc:  # the entries of C only (Lambda_R' scaled ones when asked for)
            raw, cv = (self.vals[:, 0] * T0[:, 0, 0][self.levels])[:, None], None
        else:
            raw, cv = self.entries(lambdas, T0)
        if self.dense_c:
            Cr = self.dense_c_matrix(raw)
            S[:r1, :r1] -= Cr @ Cr.T  # numpy hands A @ A.T to BLAS syrk
            S[r1:, :r1] -= BXf @ Cr.T
        elif self.sparse_cc:
            w = T0[:, 0, 0] ** 2
            S[:r1, :r1] -= self.cct(raw[:, 0]).toarray()
            g_weights = w * L00inv[:, 0, 0] ** 2
        elif self.G_op is not None:
            # C C' at the level weights T0^2; the gradient's weights T0^2 / L00^2 in the
            # same pass (reading the operator dominates the cost)
            w = T0[:, 0, 0] ** 2
            both = self.G_op @ np.column_stack([w, w * L00inv[:, 0, 0] ** 2])
            S.ravel(order="F")[self.G_rows_f] -= both[:, 0]  # a view: S is column-major
            g_weights = both[:, 1]
        else:
            prod = np.einsum("es,es->e", raw[self.pa], raw[self.pb])
            S -= np.bincount(self.target, weights=prod,
                             minlength=self.r * self.r).reshape(self.r, self.r)
        if not self.dense_c:
            S[r1:, :r1] -= np.asarray(self.c_matrix(raw) @ BXf.T).T
        S[r1:, r1:] -= BXf @ BXf.T
        if self.vector_groups:  # Lambda_R' mixes rows within a level: needs both triangles
            S[:r1, :r1] = np.tril(S[:r1, :r1]) + np.tril(S[:r1, :r1], -1).T
        return self._finish(lambdas, S, L00, L00inv, T0, BX, g_weights, cv)

    def _finish(self, lambdas, S, L00, L00inv, T0, BX, g_weights, cv=None) -> "CrossedFactor":
        """Scale by ``Lambda_R``, add ``I_R1``, factor."""
        self.lambda_r_scale(lambdas, S)
        S[np.arange(self.r1), np.arange(self.r1)] += 1.0
        L, pwrss = response_factor(S, self.r1 + self.p, self.k)
        fac = CrossedFactor(self, lambdas, L00, L00inv, T0, BX, L, pwrss, cv)
        fac.g_weights = g_weights
        return fac
