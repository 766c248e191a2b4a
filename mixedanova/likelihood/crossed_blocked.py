"""The crossed layout for designs too large to hold any entry-sized structure.

The crossed layout (:mod:`.crossed`) eliminates the first term level by level and
factors the dense Schur complement of the later terms and ``[X y]``

    S = Lambda_R'(A_RR - B B')Lambda_R + I_R1,   B = [A_R0; A_X0] Lambda_0 L00^{-T}.

Its ways of forming ``B B'`` store something per entry of ``C = A_R0`` or per pair of
entries sharing a first-term level.  At 100 M rows over 100 k x 10 k crossed levels
``C`` has 95 M entries (about 950 per first-term level): the pairs of entries number
about ``4.5e10``, a dense ``C`` 1e9 values, and even the entries' index arrays are
gigabytes.  This layout (a scalar first term, scalar later terms, one response) keeps
no array of its own per entry: ``C`` is read in place from the cross-products' level
pairs (:class:`LevelPairColumns`; ``Z_k'Z_0``'s keys are sorted by later-term level,
so they are ``C`` by rows, and a block of first-term levels is one run per row), and

* ``B B'`` is accumulated block by block: the columns of a block of first-term levels
  are densified (each column scaled by its level's ``T0 = lambda_0 / L00``, the
  ``[X y]`` rows below) and subtracted by BLAS ``syrk`` from the preallocated
  column-major array, giving ``K = A_RR - B B'`` before ``Lambda_R``: ``O(r^2 l0)``
  flops with ``r`` the order of ``S``.  ``K`` is copied into the upper triangle
  (which LAPACK never reads), the lower one scaled by ``Lambda_R`` and factored in
  place: no copy of ``S``.  A factor at the same ``lambda_0`` (only the later terms'
  templates moved) starts from that ``K``: ``O(r^3)``;
* the gradient's ``c~_l' S^{-1} c~_l`` per first-term level (``c~ = C L00^{-1}``) are
  column sums of squares of ``L^{-1} [c~; 0]``, again by blocks (``trmm`` with
  ``L^{-1}``, inverted in place once per factor); the diagonal of ``S^{-1}`` and the
  rows of the ``[X y]`` block come from the same inverse, every product with ``C``
  (solutions, the gradient's rank-one corrections) is a pass over the level pairs.

The per-level quadratic forms are kept on the factor, so the conditional variances
of the random effects (:meth:`BlockedCrossedFactor.omega_inv_diag`) cost nothing
after the gradient at the same ``theta``.  Memory beyond the cross-products: ``S``
(``r^2`` doubles: 0.8 GB at 10^4 later levels), one dense block
(:data:`BLOCK_BYTES`) and level-sized vectors.  A new factor is formed in the memory
of a spare one (:meth:`BlockedCrossedSystem.factor`'s ``spare``, which
:class:`~mixedanova.likelihood.criterion.ProfiledDeviance` hands over when it holds
the previous factor alone), so a fit holds one such array and the Satterthwaite
differences two (the fit's and the moved one).  :func:`use_blocked` decides when
this is the cheaper way.
"""
from __future__ import annotations

import weakref
from collections.abc import Iterator

import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.blas import dsyrk, dtrmm
from scipy.linalg.lapack import dpotrf, dtrtri

from .blocked import FactorBase, NotPositiveDefinite
from .crossprod import CrossProducts

__all__ = ["BlockedCrossedSystem", "BlockedCrossedFactor", "LevelPairColumns",
           "use_blocked", "BLOCK_BYTES"]

BLOCK_BYTES = 64 << 20  # one dense block of C's columns (r x nb doubles)
ENTRY_CHUNK = 1 << 22   # level pairs decoded at a time in products with C
# when crossed.py's ways are cheaper: a dense C up to this many values, a stored pair
# structure up to this many pairs of entries (its own limits)
BLOCKED_MIN_DENSE_C = 25_000_000
BLOCKED_MIN_PAIRS = 8_000_000
# a pair of entries in the sparse product (crossed.py's fallback) costs about as much
# as this many BLAS flops (measured: ~40 ns a pair against ~45 GFLOPS); and that
# product needs about SPARSE_BYTES_PER_ENTRY bytes per entry of C plus ~20 r1^2
BLOCKED_FLOPS_PER_PAIR = 1800.0
SPARSE_BYTES_PER_ENTRY = 40
SPARSE_MAX_BYTES = 2 << 30


def _eligible(cp: CrossProducts) -> bool:
    terms = cp.terms
    return (cp.k == 1 and len(terms) >= 2 and terms[0].q == 1 and terms[0].one_per_row
            and all(t.q == 1 for t in terms[1:]))


def use_blocked(cp: CrossProducts) -> bool:
    """Whether :class:`BlockedCrossedSystem` is the cheaper crossed layout for ``cp``.

    It applies to a scalar first term and scalar later terms with one response.
    :mod:`.crossed` is kept where its stored structures fit (a dense ``C`` of at
    most :data:`BLOCKED_MIN_DENSE_C` values, at most :data:`BLOCKED_MIN_PAIRS` pairs
    of entries); beyond, its sparse product at each evaluation costs about
    ``BLOCKED_FLOPS_PER_PAIR`` flops per pair against ``r^2 l0`` here, and needs
    memory per entry of ``C``, which decides when it would not fit.
    """
    if not _eligible(cp):
        return False
    l0 = cp.terms[0].nlev
    r1 = sum(t.nlev for t in cp.terms[1:])
    if r1 * l0 <= BLOCKED_MIN_DENSE_C:
        return False
    counts = LevelPairColumns(cp).level_counts()
    n_pairs = float(np.sum(counts * (counts + 1.0) / 2.0))
    if n_pairs <= BLOCKED_MIN_PAIRS:
        return False
    r = r1 + cp.p + cp.k
    sparse_bytes = SPARSE_BYTES_PER_ENTRY * float(counts.sum()) + 20.0 * r1 * r1
    return (float(r) * r * l0 <= BLOCKED_FLOPS_PER_PAIR * n_pairs
            or sparse_bytes > SPARSE_MAX_BYTES)


class LevelPairColumns:
    """``C_A = Z_R1' W Z_0`` (``r1 x l0``), read in place from the level pairs of ``cp``.

    Each later term ``k``'s block ``Z_k' W Z_0`` has keys ``l_k * l0 + l_0``, sorted:
    the entries of row ``l_k`` are one run, in first-term order.  Nothing is copied;
    products decode the keys :data:`ENTRY_CHUNK` at a time.
    """

    def __init__(self, cp: CrossProducts) -> None:
        terms = cp.terms
        self.l0 = terms[0].nlev
        self.parts = []  # (keys, values, levels of the term, first row in R1)
        row = 0
        for k in range(1, len(terms)):
            b = cp.pairs[(k, 0)]
            self.parts.append((b.keys, np.asarray(b.vals).reshape(-1), terms[k].nlev, row))
            row += terms[k].nlev
        self.r1 = row

    @property
    def nnz(self) -> int:
        return sum(len(p[0]) for p in self.parts)

    def _chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(first row of the term, row within the term, first-term level, value)``."""
        l0 = self.l0
        for keys, vals, _, off in self.parts:
            for e in range(0, len(keys), ENTRY_CHUNK):
                kk = keys[e:e + ENTRY_CHUNK]
                row = kk // l0
                yield off, row, kk - row * l0, vals[e:e + ENTRY_CHUNK]

    def level_counts(self) -> np.ndarray:
        """Entries of each first-term level (column counts of ``C``)."""
        out = np.zeros(self.l0, dtype=np.int64)
        for _, _, lev, _ in self._chunks():
            out += np.bincount(lev, minlength=self.l0)
        return out

    def matvec(self, V: np.ndarray) -> np.ndarray:
        """``C_A V`` for ``V`` of shape ``(l0, m)``."""
        out = np.zeros((self.r1, V.shape[1]))
        for off, row, lev, val in self._chunks():
            n = int(row[-1]) + 1
            for c in range(V.shape[1]):
                out[off:off + n, c] += np.bincount(row, weights=val * V[lev, c], minlength=n)
        return out

    def rmatvec(self, W: np.ndarray) -> np.ndarray:
        """``C_A' W`` for ``W`` of shape ``(r1, m)``."""
        out = np.zeros((self.l0, W.shape[1]))
        for off, row, lev, val in self._chunks():
            for c in range(W.shape[1]):
                out[:, c] += np.bincount(lev, weights=val * W[off + row, c],
                                         minlength=self.l0)
        return out

    def blocks(self, width: int) -> Iterator[tuple[int, int, list]]:
        """Blocks of ``width`` first-term levels: ``(a, b, entries)`` with ``entries``
        per term ``(rows in R1, first-term level, value)`` of the levels ``[a, b)``."""
        l0 = self.l0
        bases = [np.arange(nlev, dtype=np.int64) * l0 for _, _, nlev, _ in self.parts]
        starts = [np.searchsorted(p[0], base) for p, base in zip(self.parts, bases)]
        for a in range(0, l0, width):
            b = min(a + width, l0)
            out = []
            for i, ((keys, vals, nlev, off), base) in enumerate(zip(self.parts, bases)):
                ends = np.searchsorted(keys, base + b)
                lens = ends - starts[i]
                m = int(lens.sum())
                if m:
                    row = np.repeat(np.arange(nlev, dtype=np.int64), lens)
                    idx = np.repeat(starts[i] - (np.cumsum(lens) - lens), lens)
                    idx += np.arange(m)
                    lev = keys[idx] - row * l0
                    row += off
                    out.append((row, lev, vals[idx]))
                starts[i] = ends
            yield a, b, out


class BlockedCrossedSystem:
    """Crossed cross-products whose ``B B'`` is formed by dense blocks of first-term
    levels (see the module docstring).  Same interface as
    :class:`~mixedanova.likelihood.crossed.CrossedSystem`."""

    def __init__(self, cp: CrossProducts, block_bytes: int | None = None) -> None:
        if not _eligible(cp):
            raise NotImplementedError("the blocked crossed layout takes scalar terms and "
                                      "one response")
        self.terms = cp.terms
        self.p, self.k = cp.p, cp.k
        self.q0, self.l0 = 1, cp.terms[0].nlev
        self.offsets = np.cumsum([0] + [t.nlev for t in self.terms])
        self.r1 = int(self.offsets[-1] - self.offsets[1])
        self.r = self.r1 + self.p + self.k
        size = BLOCK_BYTES if block_bytes is None else int(block_bytes)
        self.width = int(max(1, min(self.l0, size // (8 * self.r))))
        self._made: list[weakref.ref] = []  # the factors made, oldest first (reuse_source)
        self.refresh(cp)

    def refresh(self, cp: CrossProducts) -> None:
        """Take the numbers of ``cp`` (same design and pattern)."""
        self.cp = cp
        self._made = []  # factors of the old numbers are no source
        self.columns = LevelPairColumns(cp)
        self.a00 = cp.diag_blocks(0)[:, 0, 0]
        self.ax0 = cp.zxy[0][:, :, 0]  # (l0, p + k)
        base = self.offsets[1]
        self.term_of_row = np.repeat(np.arange(1, len(self.terms)),
                                     [t.nlev for t in self.terms[1:]])
        self.a1x = np.vstack([cp.zxy_columns(k) for k in range(1, len(self.terms))])
        # A_RR's lower triangle (level pairs of the later terms), column-major positions
        flat, vals = [], []
        for i in range(1, len(self.terms)):
            for j in range(1, i + 1):
                b = cp.pairs[(i, j)]
                li, lj = np.divmod(b.keys, self.terms[j].nlev)
                rows = self.offsets[i] - base + li
                cols = self.offsets[j] - base + lj
                keep = rows >= cols  # a term with itself stores both triangles
                flat.append(rows[keep] + self.r * cols[keep])
                vals.append(b.vals.reshape(-1)[keep])
        self.rr_flat = np.concatenate(flat)
        self.rr_vals = np.concatenate(vals)

    takes_spare = True  # factor() can form the new factor in a spare one's memory

    def reuse_source(self, lambdas: list[np.ndarray]) -> "BlockedCrossedFactor | None":
        """A live factor of this system at the same first-term template, whose
        eliminated part ``K`` (kept in its upper triangle) the factor at ``lambdas``
        can start from: only the later terms' templates differ, and a factorization
        then costs ``O(r^3)`` instead of ``O(r^2 l0)``."""
        lam0 = float(lambdas[0][0, 0])
        for ref in self._made:  # the oldest first: one a caller keeps (a fit's factor)
            f = ref()
            if f is not None and f.store is not None and f.lam0 == lam0:
                return f
        return None

    def factor(self, lambdas: list[np.ndarray],
               spare: "BlockedCrossedFactor | None" = None) -> "BlockedCrossedFactor":
        """Factor the blocked system for the templates ``lambdas``.

        ``spare``: a factor of this system that the caller gives up (no one else may
        hold it): the new factor is formed in its memory, from its ``K`` when the
        first-term templates agree.  Otherwise it starts from any live factor at
        the same first-term template (:meth:`reuse_source`) or forms ``K`` afresh.
        """
        lam0 = float(lambdas[0][0, 0])
        m0 = lam0 * self.a00 * lam0 + 1.0
        if not m0.min() > 0.0:
            raise NotPositiveDefinite
        L00 = np.sqrt(m0)
        T0 = lam0 / L00
        BX = self.ax0 * T0[:, None]
        lam = np.array([0.0] + [float(lambdas[k][0, 0]) for k in range(1, len(self.terms))])
        rs = lam[self.term_of_row]
        S, kdiag = None, None
        if spare is not None and spare.store is not None and \
                any(ref() is spare for ref in self._made):
            S, spare.store = spare.store, None  # spent: its memory is the new factor's
            if spare.lam0 == lam0:  # and so is its K
                _upper_to_lower(S)
                kdiag = spare.kdiag
        if kdiag is None:
            src = self.reuse_source(lambdas)
            if S is None:
                S = np.empty((self.r, self.r), order="F")
            if src is not None:  # K from the upper triangle of a live factor at lam0
                np.copyto(S, src.store)
                _upper_to_lower(S)
                kdiag = src.kdiag
            else:
                kdiag = self._eliminated(S, T0, BX)
        # S = Lambda_R' K Lambda_R + I_R1 on the lower triangle, K kept above it
        _scale_lower(S, np.concatenate([rs, np.ones(self.p + self.k)]), kdiag)
        S[np.arange(self.r1), np.arange(self.r1)] += 1.0
        L, info = dpotrf(S, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            raise NotPositiveDefinite
        f = BlockedCrossedFactor(self, lambdas, L00, T0, BX, rs, L, kdiag)
        self._made = [ref for ref in self._made if ref() is not None] + [weakref.ref(f)]
        return f

    def _eliminated(self, S: np.ndarray, T0: np.ndarray, BX: np.ndarray) -> np.ndarray:
        """``K = A_RR - B B'`` (before ``Lambda_R``) into both triangles of ``S``;
        returns its diagonal.  ``B B'`` by blocks of first-term levels (``syrk`` in
        place on the lower triangle)."""
        r, r1 = self.r, self.r1
        S.fill(0.0)
        S.ravel(order="F")[self.rr_flat] = self.rr_vals
        S[r1:, :r1] = self.a1x.T
        S[r1:, r1:] = self.cp.xy
        W = np.zeros((r, self.width), order="F")
        for a, b, parts in self.columns.blocks(self.width):
            Wb = W[:, :b - a]
            flat = [row + r * (lev - a) for row, lev, _ in parts]
            for f, (_, lev, val) in zip(flat, parts):
                Wb.ravel(order="F")[f] = val * T0[lev]
            Wb[r1:, :] = BX[a:b].T
            out = dsyrk(-1.0, Wb, beta=1.0, c=S, lower=1, overwrite_c=1)
            if not np.shares_memory(out, S):  # pragma: no cover (f2py copied S)
                np.copyto(S, out)
            for f in flat:
                Wb.ravel(order="F")[f] = 0.0
        del W
        _lower_to_upper(S)
        return np.diag(S).copy()


_BAND = 512  # columns moved at a time between the triangles


def _lower_to_upper(S: np.ndarray) -> None:
    """Copy the strict lower triangle of ``S`` onto its strict upper triangle."""
    r = S.shape[0]
    for j0 in range(0, r, _BAND):
        j1 = min(j0 + _BAND, r)
        S[j0:j1, j1:] = S[j1:, j0:j1].T
        d = S[j0:j1, j0:j1]
        iu = np.triu_indices(j1 - j0, 1)
        d[iu] = d.T[iu]


def _upper_to_lower(S: np.ndarray) -> None:
    """Copy the strict upper triangle of ``S`` onto its strict lower triangle."""
    r = S.shape[0]
    for j0 in range(0, r, _BAND):
        j1 = min(j0 + _BAND, r)
        S[j1:, j0:j1] = S[j0:j1, j1:].T
        d = S[j0:j1, j0:j1]
        il = np.tril_indices(j1 - j0, -1)
        d[il] = d.T[il]


def _scale_lower(S: np.ndarray, scale: np.ndarray, diag: np.ndarray) -> None:
    """``S_ij = scale_i K_ij scale_j`` on and below the diagonal (``diag``: ``K``'s)."""
    r = S.shape[0]
    S[np.arange(r), np.arange(r)] = diag
    for j0 in range(0, r, _BAND):
        j1 = min(j0 + _BAND, r)
        blk = S[j1:, j0:j1]
        blk *= scale[j1:, None]
        blk *= scale[None, j0:j1]
        i, j = np.tril_indices(j1 - j0)
        S[j0 + i, j0 + j] *= scale[j0 + i] * scale[j0 + j]


class BlockedCrossedFactor(FactorBase):
    """Factor produced by :class:`BlockedCrossedSystem`.

    One column-major ``r x r`` array holds the factor ``L`` of ``S`` in its lower
    triangle (replaced in place by ``L^{-1}`` the first time an inverse is asked
    for) and the eliminated part ``K = A_RR - B B'`` before ``Lambda_R`` in its strict
    upper triangle (``kdiag``: its diagonal), from which a factor at the same
    first-term template starts.  Also kept: the first term's per-level scalars and,
    once computed, the per-level quadratic forms ``c~_l' S^{-1} c~_l``.
    """

    def __init__(self, system: BlockedCrossedSystem, lambdas, L00, T0, BX, rs, L,
                 kdiag: np.ndarray) -> None:
        self.system = system
        self.lambdas = lambdas
        self.lam0 = float(lambdas[0][0, 0])
        self.L00inv = 1.0 / L00
        self.T0, self.BX, self.rs = T0, BX, rs
        self.p = system.p
        r1, p = system.r1, system.p
        d = np.diag(L)
        self.ldL2 = float(2.0 * np.log(L00).sum()) + float(2.0 * np.log(d[:r1]).sum())
        self.ldRX2 = float(2.0 * np.log(d[r1:r1 + p]).sum())
        self.set_pwrss(np.array([d[-1] ** 2]), system.cp)
        self._rx = np.tril(L[r1:r1 + p, r1:r1 + p])
        self._pivot = float(d[-1])
        self.store = L  # L (or L^{-1}) below the diagonal, K above it
        self.kdiag = kdiag
        self._inverted = False
        self._quad: np.ndarray | None = None
        self._sums = None
        self._omega = None

    # ------------------------------------------------------------ triangular solves
    def _invert(self) -> None:
        """Replace ``L`` by ``L^{-1}`` in place (LAPACK ``dtrtri``, lower triangle only)."""
        if self._inverted:
            return
        inv, info = dtrtri(self.store, lower=1, overwrite_c=1)
        if info != 0:
            raise NotPositiveDefinite
        if not np.shares_memory(inv, self.store):  # pragma: no cover (f2py copied it)
            self.store = inv
        self._inverted = True

    def _solve(self, B: np.ndarray, trans: bool = False) -> np.ndarray:
        """``L^{-1} B`` (or ``L^{-T} B``) for ``B`` with ``r`` rows (the lower
        triangle only: the upper one holds ``K``)."""
        if self._inverted:
            X = np.array(B, dtype=float, order="F", ndmin=2)
            if X.shape[0] != B.shape[0]:
                X = X.T
            out = dtrmm(1.0, self.store, X, lower=1, trans_a=int(trans), overwrite_b=1)
            return out.reshape(B.shape)
        return solve_triangular(self.store, B, lower=True, trans=int(trans),
                                check_finite=False)

    def _padded(self, x: np.ndarray) -> np.ndarray:
        s = self.system
        out = np.zeros((s.r,) + x.shape[1:])
        out[:s.r1] = x
        return out

    def rx(self) -> np.ndarray:
        return self._rx

    def _c_times(self, V: np.ndarray) -> np.ndarray:
        """``C V`` (``C = Lambda_R' A_R0 Lambda_0 L00^{-T}``) for ``V`` ``(l0, m)``."""
        return self.rs[:, None] * self.system.columns.matvec(self.T0[:, None] * V)

    def _ct_times(self, W: np.ndarray) -> np.ndarray:
        """``C' W`` for ``W`` ``(r1, m)``."""
        return self.T0[:, None] * self.system.columns.rmatvec(self.rs[:, None] * W)

    def forward_solve(self, rhs: np.ndarray) -> np.ndarray:
        s = self.system
        v0 = self.L00inv[:, None] * rhs[:s.l0]
        v1 = self._solve(self._padded(rhs[s.l0:] - self._c_times(v0)))[:s.r1]
        return np.vstack([v0, v1])

    def back_solve(self, rhs: np.ndarray) -> np.ndarray:
        s = self.system
        # L' z = [x; 0] has z = [L11^{-T} x; 0]
        w1 = self._solve(self._padded(rhs[s.l0:]), trans=True)[:s.r1]
        w0 = self.L00inv[:, None] * (rhs[:s.l0] - self._ct_times(w1))
        return np.vstack([w0, w1])

    def _solution_std(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.system
        r1, p = s.r1, self.p
        e = np.zeros(s.r)
        e[-1] = 1.0
        # L' z = e_r gives z[:-1] = -L11^{-T} l / L[-1, -1]: the solution's w = L11^{-T} l
        w = -self._solve(e, trans=True)[:-1] * self._pivot
        beta = w[r1:]
        v0 = self.BX[:, p] - self._ct_times(w[:r1, None])[:, 0]
        if p:
            v0 = v0 - self.BX[:, :p] @ beta
        return beta, np.concatenate([self.L00inv * v0, w[:r1]])

    # ------------------------------------------------------------ inverses
    def _quadratic_forms(self) -> np.ndarray:
        """``c~_l' S^{-1} c~_l`` per first-term level (``c~ = C L00^{-1}`` padded with
        zeros in the ``[X y]`` rows): column sums of squares of ``L^{-1} [c~; 0]``,
        by dense blocks of levels."""
        if self._quad is None:
            s = self.system
            self._invert()
            Linv = self.store
            scale = self.T0 * self.L00inv
            q = np.empty(s.l0)
            W = np.empty((s.r, s.width), order="F")
            for a, b, parts in s.columns.blocks(s.width):
                Wb = W[:, :b - a]
                Wb.fill(0.0)
                for row, lev, val in parts:
                    Wb.ravel(order="F")[row + s.r * (lev - a)] = val * self.rs[row] * scale[lev]
                Wb = dtrmm(1.0, Linv, Wb, lower=1, overwrite_b=1)
                q[a:b] = np.einsum("ij,ij->j", Wb, Wb)
            self._quad = q
        return self._quad

    def _inverse_rows(self) -> np.ndarray:
        """``U``: the rows ``r1..r-1`` of ``L^{-1}`` (those of ``[X y]``)."""
        self._invert()
        r1 = self.system.r1
        return np.tril(self.store[r1:, :], r1)

    def _first_term(self, per_level: bool) -> list[np.ndarray]:
        """As :meth:`~mixedanova.likelihood.crossed.CrossedFactor._first_term` for a
        scalar first term: ``L00^{-2} + c~_l'P c~_l`` less the rank-one corrections of
        each variant (``P = S^{-1}``; the rows of ``P`` of the ``[X y]`` block are
        ``U_x' U`` with ``U`` the last ``p + 1`` rows of ``L^{-1}``, so every product
        with ``C`` is one with ``U``'s rows)."""
        s = self.system
        r1, p = s.r1, self.p
        U = self._inverse_rows()
        pairs = self._quadratic_forms()
        base = self.L00inv * self.L00inv
        G = self._ct_times(U[:, :r1].T)  # (l0, p + 1): C' U_c
        V = G * self.L00inv[:, None]  # V_c[l] = sum_e c~_e U_c[row_e]
        corr_y = V[:, p] ** 2
        corr_x = np.sum(V[:, :p] ** 2, axis=1)
        omega = base + pairs - corr_y - corr_x
        if per_level:
            return [omega.reshape(-1, 1, 1)]
        out = [np.array([[omega.sum()]])]
        bt = self.BX * self.L00inv[:, None]
        for variant in (1, 2):
            nx = p if variant == 1 else p + 1
            coef = np.array(U[:, r1:r1 + nx])  # P[r1 + c, :] = sum_c' U[c', r1 + c] U[c', :]
            if variant == 1:
                coef[p] = 0.0  # less U_y' U_y
            Wc = G @ coef  # C' P_{R1, X}' (l0, nx)
            Pxx = coef.T @ U[:, r1:r1 + nx]
            bx = bt[:, :nx]
            cross = float(np.sum(self.L00inv[:, None] * Wc * bx))
            K = float(pairs.sum()) + 2.0 * cross + float(np.einsum("lc,cd,ld->", bx, Pxx, bx))
            out.append(np.array([[base.sum() + K - (corr_y.sum() if variant == 1 else 0.0)]]))
        return out

    def _later_terms(self, variant: int, per_level: bool, diag: np.ndarray,
                     U: np.ndarray) -> list[np.ndarray]:
        s = self.system
        p = self.p
        B = diag.copy()
        if variant < 2:
            B -= U[p, :s.r1] ** 2
        if variant == 0 and p:
            B -= np.sum(U[:p, :s.r1] ** 2, axis=0)
        out = []
        for k in range(1, len(s.terms)):
            blk = B[s.offsets[k] - s.offsets[1]:s.offsets[k + 1] - s.offsets[1]]
            out.append(blk.reshape(-1, 1, 1) if per_level else np.array([[blk.sum()]]))
        return out

    def _inverse_diag(self) -> np.ndarray:
        """Diagonal of ``S^{-1}`` on the R1 rows: column sums of squares of ``L^{-1}``."""
        self._invert()
        r1 = self.system.r1
        out = np.empty(r1)
        for j0 in range(0, r1, _BAND):
            j1 = min(j0 + _BAND, r1)
            blk = np.tril(self.store[j0:, j0:j1])
            out[j0:j1] = np.einsum("ij,ij->j", blk, blk)
        return out

    def omega_inv_diag(self) -> list[np.ndarray]:
        if self._omega is None:
            U = self._inverse_rows()
            self._omega = self._first_term(per_level=True) + self._later_terms(
                0, True, self._inverse_diag(), U)
        return self._omega

    def inverse_block_sums(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._sums is None:
            first = self._first_term(per_level=False)
            diag, U = self._inverse_diag(), self._inverse_rows()
            later = [self._later_terms(v, False, diag, U) for v in range(3)]
            out = [tuple(first)]
            for k in range(len(self.system.terms) - 1):
                out.append(tuple(later[v][k] for v in range(3)))
            self._sums = out
        return self._sums
