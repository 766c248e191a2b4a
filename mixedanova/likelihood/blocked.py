"""Blocked cross-products of ``[Z X y]``: shared pieces.

The profiled deviance of a linear mixed model needs, for each ``theta``, the
Cholesky factor ``L`` of the augmented matrix

    M = [ Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y ]
        [ X'Z Lambda              X'X          X'y        ]
        [ y'Z Lambda              y'X          y'y        ]

(MixedModels.jl's blocked formulation).  The cross-products are computed once;
an evaluation then costs no O(n) work.  Two layouts cover the designs met in
practice (:func:`mixedanova.likelihood.system.build_system` picks one):

* :class:`~.nested.NestedSystem` -- every term's grouping factor is nested in the
  grouping factor of each later term (one term, ``(1|a/b)``, ``(x||g)``).  Every
  block stays block diagonal: batched small-matrix algebra only.
* :class:`~.crossed.CrossedSystem` -- anything else.  The first term (most
  levels) is eliminated block-diagonally; the other terms and ``[X y]`` form a
  dense Schur complement factored by LAPACK.

Both produce a :class:`FactorBase`.  The residual covariance is the identity
here; a non-identity ``R`` enters by pre-whitening ``[Z X y]`` before the
cross-products are formed, and cross-products accumulated in chunks can be fed
to the same systems, since nothing after set-up touches the rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dpotrf, dtrtri

__all__ = ["TermData", "FactorBase", "NotPositiveDefinite", "response_factor"]


class NotPositiveDefinite(ArithmeticError):
    """The blocked matrix is not positive definite at this theta."""


@dataclass(frozen=True)
class TermData:
    """What the engine needs of one random-effects term.

    Without ``rows`` entry ``i`` is row ``i`` of ``Z_k``: one level per row.  With
    ``rows`` (a whitened term whose level varies inside a residual group, see
    :mod:`mixedanova.likelihood.residual`) the entries ``(rows[e], codes[e],
    zraw[e])`` are summed: a row of ``Z_k`` may then touch several levels.  Only
    the crossed layout accepts such a term, and not as its first term.
    """

    codes: np.ndarray  # (n,) level of each observation (or of each entry)
    zraw: np.ndarray   # (n, q) the term's own model matrix (or each entry's values)
    nlev: int
    rows: np.ndarray | None = None  # row of each entry; None: entry i is row i
    nrows: int | None = None        # rows of Z_k when ``rows`` is given

    @property
    def q(self) -> int:
        return self.zraw.shape[1]

    def sparse_z(self) -> sp.csr_matrix:
        """The ``n x (nlev * q)`` matrix ``Z_k`` (level-major columns)."""
        m, q = self.zraw.shape
        cols = (self.codes[:, None] * q + np.arange(q)[None, :]).ravel()
        r = np.arange(m) if self.rows is None else self.rows
        n = m if self.rows is None else int(self.nrows)
        rows = np.repeat(r, q)
        return sp.csr_matrix((self.zraw.ravel(), (rows, cols)), shape=(n, self.nlev * q))


# --------------------------------------------------------------------- batched helpers
def bchol(M: np.ndarray) -> np.ndarray:
    """Cholesky factors of a stack ``(m, q, q)`` of small SPD matrices."""
    q = M.shape[1]
    if q == 1:
        if not M.min() > 0.0:
            raise NotPositiveDefinite
        return np.sqrt(M)
    if q == 2:
        a, b, c = M[:, 0, 0], M[:, 1, 0], M[:, 1, 1]
        l11 = np.sqrt(a)
        l21 = b / l11
        d = c - l21 * l21
        if not (a.min() > 0.0 and d.min() > 0.0):
            raise NotPositiveDefinite
        L = np.empty_like(M)
        L[:, 0, 0] = l11
        L[:, 0, 1] = 0.0
        L[:, 1, 0] = l21
        L[:, 1, 1] = np.sqrt(d)
        return L
    try:
        return np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        raise NotPositiveDefinite from None


def binv_lower(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular matrices."""
    q = L.shape[1]
    if q == 1:
        return 1.0 / L
    if q == 2:
        out = np.empty_like(L)
        out[:, 0, 0] = 1.0 / L[:, 0, 0]
        out[:, 0, 1] = 0.0
        out[:, 1, 1] = 1.0 / L[:, 1, 1]
        out[:, 1, 0] = -L[:, 1, 0] * out[:, 0, 0] * out[:, 1, 1]
        return out
    return np.linalg.inv(L)


def bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``a @ b`` with a fast path for 1 x 1 inner blocks."""
    if a.shape[2] == 1 and b.shape[1] == 1:
        return a * b[:, 0:1, :]
    return a @ b


def scatter(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Sum the matrices ``values[m]`` into slot ``index[m]`` of a ``size`` stack."""
    shape = values.shape[1:]
    flat = values.reshape(len(values), -1)
    out = np.empty((size, flat.shape[1]))
    for c in range(flat.shape[1]):
        out[:, c] = np.bincount(index, weights=flat[:, c], minlength=size)
    return out.reshape((size,) + shape)


def per_level(codes: np.ndarray, left: np.ndarray, right: np.ndarray,
              nlev: int) -> np.ndarray:
    """``sum over observations of a level of left_i right_i'``: ``(nlev, a, b)``."""
    a, b = left.shape[1], right.shape[1]
    out = np.empty((nlev, a, b))
    for s in range(a):
        for t in range(b):
            out[:, s, t] = np.bincount(codes, weights=left[:, s] * right[:, t],
                                       minlength=nlev)
    return out


def lower_chol(M: np.ndarray) -> np.ndarray:
    """Dense lower Cholesky factor (LAPACK ``dpotrf``), overwriting ``M``."""
    L, info = dpotrf(M, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise NotPositiveDefinite
    return L


def response_factor(S: np.ndarray, lead: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Factor a Schur complement whose last ``k`` rows are the response block.

    For one response the whole matrix is factored (its last pivot squared is the
    penalized residual sum of squares).  For ``k`` responses only the leading
    ``lead`` rows are factored, and each response's sum of squares is its
    diagonal entry less its squared projection: what ``k`` separate factors
    would give, with one factorization.  Returns ``(L, pwrss)``.
    """
    if k == 1:
        L = lower_chol(S)
        return L, np.array([L[-1, -1] ** 2])
    L = lower_chol(np.array(S[:lead, :lead], order="F"))
    # the lower triangle is what the layouts fill (and what LAPACK reads)
    W = solve_triangular(L, S[lead:, :lead].T, lower=True, check_finite=False)
    pwrss = np.diag(S[lead:, lead:]) - np.einsum("ij,ij->j", W, W)
    if not np.all(pwrss > 0.0):
        raise NotPositiveDefinite
    return L, pwrss


def tri_inv(L: np.ndarray) -> np.ndarray:
    """Inverse of a dense lower-triangular matrix (LAPACK ``dtrtri``)."""
    if L.shape[0] == 0:  # no fixed effects
        return np.zeros((0, 0))
    inv, info = dtrtri(L, lower=1)
    if info != 0:
        raise NotPositiveDefinite
    return inv


def logdet_stack(L: np.ndarray) -> float:
    """``log det(L L')`` summed over a stack of triangular factors."""
    return float(2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum())


class FactorBase:
    """Cholesky factor of the blocked system at one ``theta``.

    Attributes
    ----------
    ldL2 : float
        ``log det(Omega)`` with ``Omega = Lambda'Z'Z Lambda + I``.
    ldRX2 : float
        ``log det`` of the fixed-effects block of the Schur complement.
    pwrss_std : float
        Penalized weighted residual sum of squares of the standardized response
        ``(y - X y_shift) / y_scale`` the system was built from; :attr:`pwrss`
        and :meth:`solution` are on the scale of ``y``.
    p : int
        Number of fixed effects.
    """

    ldL2: float
    ldRX2: float
    pwrss_std: float
    p: int
    y_scale: float = 1.0
    y_shift: np.ndarray | None = None

    def set_pwrss(self, pwrss: np.ndarray, cp) -> None:
        """Record the response block's sums of squares (``pwrss_all``, one per
        response column) and, for one response, ``pwrss_std``, ``y_scale`` and
        ``y_shift`` (the standardization of the cross-products ``cp``)."""
        self.pwrss_all = np.asarray(pwrss, dtype=float)
        self.y_scales = np.asarray(cp.scale, dtype=float)
        if cp.k == 1:
            self.pwrss_std = float(self.pwrss_all[0])
            self.y_scale = float(cp.scale[0])
            self.y_shift = cp.shift[:, 0]
        else:
            self.pwrss_std = float("nan")  # k responses: see pwrss_all

    @property
    def pwrss(self) -> float:
        """Penalized residual sum of squares on the scale of the response."""
        return self.y_scale ** 2 * self.pwrss_std

    def _solution_std(self) -> tuple[np.ndarray, np.ndarray]:
        """``(beta, u)`` for the standardized response the system was built from."""
        raise NotImplementedError

    def rx(self) -> np.ndarray:
        """Lower-triangular ``p x p`` factor ``R_X'`` of ``X'V^{-1}X sigma^2``."""
        raise NotImplementedError

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        """``(beta, u)``: fixed effects and spherical random effects (response scale)."""
        beta, u = self._solution_std()
        shift = 0.0 if self.y_shift is None else self.y_shift
        return self.y_scale * beta + shift, self.y_scale * u

    def forward_solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L_Z^{-1} rhs`` for ``rhs`` of shape ``(Q, m)``."""
        raise NotImplementedError

    def back_solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L_Z'^{-1} rhs`` for ``rhs`` of shape ``(Q, m)``."""
        raise NotImplementedError

    def solve_omega(self, rhs: np.ndarray) -> np.ndarray:
        """``Omega^{-1} rhs`` for ``rhs`` of shape ``(Q, m)``."""
        return self.back_solve(self.forward_solve(rhs))

    def omega_inv_diag(self) -> list[np.ndarray]:
        """Diagonal blocks ``(nlev, q, q)`` of ``Omega^{-1}``, per term."""
        raise NotImplementedError

    def inverse_block_sums(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per term, ``sum_l`` of the diagonal ``q x q`` blocks of three inverses.

        Returns ``(S_omega, S_xz, S_full)``: the blocks of ``Omega^{-1}``, of the
        inverse of ``M`` without its ``y`` row and column, and of ``M^{-1}``.  They
        give the gradient of the profiled objective
        (:meth:`~mixedanova.likelihood.criterion.ProfiledDeviance.gradient`).
        """
        raise NotImplementedError

    def vcov_unscaled(self) -> np.ndarray:
        """``(R_X R_X')^{-1}``: ``vcov(beta) / sigma^2``."""
        Linv = tri_inv(self.rx())
        return Linv.T @ Linv
