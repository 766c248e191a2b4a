"""The Kenward-Roger pieces shared by every covariance model: the adjusted
covariance and information (:class:`KenwardRogerSetup`), the df and F scaling of
Kenward & Roger (1997) as pbkrtest computes them, and the random-effects design
in pbkrtest's parametrization (:func:`z_matrix`, :func:`parameter_blocks`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["KenwardRogerSetup", "z_matrix", "parameter_blocks"]


@dataclass(frozen=True)
class KenwardRogerSetup:
    """The pieces of pbkrtest's ``vcovAdj`` for one fit.

    Attributes
    ----------
    phi : numpy.ndarray
        ``vcov(beta)``.
    phi_adj : numpy.ndarray
        The Kenward-Roger adjusted covariance ``Phi_A``.
    P : numpy.ndarray
        ``(R, p, p)`` stack of the ``P_r``.
    W : numpy.ndarray
        ``(R, R)``: twice the inverse expected information of the variance parameters.
    condition : float
        Smallest absolute eigenvalue of the information (a generalized inverse is
        used below 1e-10, as pbkrtest does).
    """

    phi: np.ndarray
    phi_adj: np.ndarray
    P: np.ndarray
    W: np.ndarray
    condition: float

    def _a1_a2(self, L: np.ndarray) -> tuple[float, float]:
        M = L @ self.phi @ L.T
        theta = L.T @ np.linalg.solve(M, L)
        u = (theta @ self.phi)[None, :, :] @ self.P @ self.phi
        tr = np.einsum("rii->r", u)
        a1 = float(tr @ self.W @ tr)
        cross = np.einsum("rij,sji->rs", u, u)
        a2 = float(np.sum(self.W * cross))
        return a1, a2

    def ddf(self, L: np.ndarray) -> float:
        """Kenward-Roger denominator df for ``L beta`` (pbkrtest's ``Lb_ddf``)."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        return _kr_df(L.shape[0], *self._a1_a2(L))[0]

    def test(self, L: np.ndarray, beta: np.ndarray, beta_h: np.ndarray | float = 0.0) -> dict:
        """The F test of ``L beta = L beta_h`` (pbkrtest's ``.KR_adjust``).

        ``L`` must have full row rank.  Returns ``ndf, ddf, F`` (scaled),
        ``F_unscaled`` (Wald with ``Phi_A`` over ``ndf``), ``scaling``, ``p``.
        """
        from scipy import stats

        L = np.atleast_2d(np.asarray(L, dtype=float))
        q = int(np.linalg.matrix_rank(L))
        a1, a2 = self._a1_a2(L)
        ddf, _ = _kr_df(q, a1, a2)
        if abs(ddf - 2.0) < 1e-2:
            scaling = 1.0
        else:
            scaling = ddf * (1.0 - a2 / q) / (ddf - 2.0)
        diff = L @ (np.asarray(beta, dtype=float) - beta_h)
        wald = float(diff @ np.linalg.solve(L @ self.phi_adj @ L.T, diff))
        f_u = wald / q
        f_s = scaling * f_u
        return {"ndf": q, "ddf": ddf, "F": f_s, "F_unscaled": f_u, "scaling": scaling,
                "p": float(stats.f.sf(f_s, q, ddf)), "A1": a1, "A2": a2}


def _div_zero(x: float, y: float, tol: float = 1e-14) -> float:
    if abs(x) < tol and abs(y) < tol:
        return 1.0
    return x / y


def _kr_df(q: int, a1: float, a2: float) -> tuple[float, float]:
    """``(df2, rho)`` from ``A1``, ``A2`` (Kenward & Roger 1997, as in pbkrtest).
    Every covariance parameter held fixed (``A2 = 0``): infinite df."""
    if a2 == 0.0:
        return math.inf, 1.0 / q
    b = (a1 + 6.0 * a2) / (2.0 * q)
    g = ((q + 1) * a1 - (q + 4) * a2) / ((q + 2) * a2)
    den = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
    v0 = 1.0 + c1 * b
    v1 = 1.0 - c2 * b
    v2 = 1.0 - c3 * b
    if abs(v0) < 1e-10:
        v0 = 0.0
    rho = (1.0 / q) * _div_zero(1.0 - a2 / q, v1) ** 2 * v0 / v2
    with np.errstate(divide="ignore"):
        df2 = 4.0 + (q + 2) / (q * rho - 1.0) if q * rho != 1.0 else math.inf
    return float(df2), float(rho)


def z_matrix(design):
    import scipy.sparse as sp

    from ..likelihood.blocked import TermData
    return sp.hstack([TermData(b.codes, b.zraw, b.nlev).sparse_z() for b in design.blocks],
                     format="csr")


def parameter_blocks(design) -> list[tuple[int, int, int, int, int]]:
    """``(offset, nlev, q, i, j)`` per covariance parameter, pbkrtest's order."""
    out = []
    off = 0
    for b in design.blocks:
        q = b.q
        for j in range(q):
            for i in range(j, q):
                out.append((off, b.nlev, q, i, j))
        off += b.nlev * q
    return out


