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
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotri

from .blocked import (FactorBase, bchol, binv_lower, bmm, logdet_stack, response_factor)
from .crossprod import CrossProducts

__all__ = ["CrossedSystem", "CrossedFactor", "DENSE_LIMIT"]

DENSE_LIMIT = 20000  # largest dense Schur complement this layout will form
_PAIRS_PER_FLOP = 1000  # a pair (numpy, scattered) costs about 1000 dense BLAS flops
_DENSE_C_ENTRIES = 25_000_000  # largest dense C (200 MB) formed for the BLAS path
_GROUPED_ENTRIES = 50_000_000  # largest stack of per-weight r x r lower triangles (400 MB)
_RANK_TABLE_LIMIT = 1 << 26  # keys below this find their distinct values by table
_GROUPED_PER_PAIR = 4  # a stack entry (one BLAS pass) costs about a quarter of a pair
_PAIR_STRUCTURE_LIMIT = 8_000_000  # most entry pairs stored (about 90 bytes each)
_PER_LEVEL_BLOCK = 8_000_000  # entries of the dense r1 x levels block of a per-level pass


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


def _lower_entries(P: np.ndarray, flat: np.ndarray, flat_f: np.ndarray) -> np.ndarray:
    """Entries of ``P`` at the row-major flat indices ``flat`` (``flat_f``: the
    same entries column-major), read without copying ``P`` (LAPACK's inverse is
    column-major)."""
    if P.flags.f_contiguous:
        return P.ravel(order="F")[flat_f]
    return P.ravel()[flat]


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

    def _entries(self, lambdas: list[np.ndarray], T0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
            raw, cv = self._entries(lambdas, T0)
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


class CrossedFactor(FactorBase):
    """Factor produced by :class:`CrossedSystem`."""

    def __init__(self, system: CrossedSystem, lambdas, L00, L00inv, T0, BX, L,
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
        cv = self.system._entries(self.lambdas, self.T0)[1]
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
            return np.array([[_lower_entries(P, s.G_rows, s.G_rows_f) @ weight]])
        w = _lower_entries(P, s.target, s.target_f)
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
        step = max(1, _PER_LEVEL_BLOCK // max(r1, 1))
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
