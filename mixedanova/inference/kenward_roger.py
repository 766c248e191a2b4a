"""Kenward-Roger adjusted covariance, df and F scaling, as pbkrtest computes them.

pbkrtest (``vcovAdj``, ``.KR_adjust``, ``Lb_ddf``) parameterizes the marginal
covariance ``Sigma = sum_r gamma_r G_r`` linearly: one parameter per variance
and covariance entry of each term's ``q x q`` covariance (``G_r = Z_k (I kron E_r) Z_k'``)
plus the residual variance (``G = I``).  With ``W = Sigma^{-1}`` and
``Phi = (X'WX)^{-1}`` it needs

    P_r  = -X'W G_r W X,     Q_rs = X'W G_r W G_s W X,     K_rs = tr(W G_r W G_s),

the information ``IE2_rs = K_rs - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s)``,
``Wg = 2 IE2^{-1}`` and the adjusted covariance
``Phi_A = Phi + 2 Phi [sum_rs Wg_rs (Q_rs - P_r Phi P_s)] Phi``.

Nothing here forms an ``n x n`` matrix.  With ``S = Lambda Omega^{-1} Lambda'``
(``Omega^{-1}`` from the blocked factor), ``A = Z'Z``, ``C = Z'X`` and Woodbury,
``W = sigma^{-2} (I - Z S Z')``, every quantity above is a product of ``Q x Q``,
``Q x p`` and ``p x p`` matrices (``Q`` = number of random effects):
``Z'WZ = sigma^{-2}(A - ASA)``, ``Z'WX = sigma^{-2}(I - AS)C``,
``Z'WWZ = sigma^{-4}(I - AS)A(I - AS)'``, and powers of ``I - ZSZ'`` sandwiched
by ``X`` expand into ``C'S(AS)^k C`` terms.  The cost is ``O(Q^3)`` once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import f as f_dist

__all__ = ["KenwardRogerSetup", "kenward_roger_setup", "KR_ML_MESSAGE"]

KR_ML_MESSAGE = "Kenward-Roger's method is only available for REML model fits"
KR_RESIDUAL_MESSAGE = ("Kenward-Roger's method is not available for models with a residual "
                       "structure (residual=); use ddf='satterthwaite'")
_MAX_Q = 8000  # largest number of random effects for the dense Q x Q algebra


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
                "p": float(f_dist.sf(f_s, q, ddf)), "A1": a1, "A2": a2}


def _div_zero(x: float, y: float, tol: float = 1e-14) -> float:
    if abs(x) < tol and abs(y) < tol:
        return 1.0
    return x / y


def _kr_df(q: int, a1: float, a2: float) -> tuple[float, float]:
    """``(df2, rho)`` from ``A1``, ``A2`` (Kenward & Roger 1997, as in pbkrtest)."""
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


def _z_matrix(design) -> sp.csr_matrix:
    from ..likelihood.blocked import TermData
    return sp.hstack([TermData(b.codes, b.zraw, b.nlev).sparse_z() for b in design.blocks],
                     format="csr")


def _parameter_blocks(design) -> list[tuple[int, int, int, int, int]]:
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


def _apply_d(par: tuple, M: np.ndarray) -> np.ndarray:
    """``D_r M`` for ``D_r = I_nlev kron (e_i e_j' + e_j e_i')`` (``e_i e_i'`` if i = j)."""
    off, nlev, q, i, j = par
    out = np.zeros_like(M)
    rows = np.arange(nlev) * q + off
    out[rows + i] = M[rows + j]
    if i != j:
        out[rows + j] = M[rows + i]
    return out


def kenward_roger_setup(res) -> KenwardRogerSetup:
    """Adjusted covariance and the information pieces for the REML fit ``res``.

    Raises
    ------
    ValueError
        For an ML fit (as lmerTest: ``Kenward-Roger's method is only available
        for REML model fits``).
    """
    if res.method != "REML":
        raise ValueError(KR_ML_MESSAGE)
    if res.state.extra.get("residual") is not None:
        from ..errors import FitError
        raise FitError(KR_RESIDUAL_MESSAGE)
    design = res.design
    X = design.X
    n, p = X.shape
    sigma2 = float(res.sigma) ** 2
    Z = _z_matrix(design)
    if Z.shape[1] > _MAX_Q:
        raise NotImplementedError(
            f"Kenward-Roger needs dense {Z.shape[1]} x {Z.shape[1]} matrices (one row per "
            f"random effect); this implementation stops at {_MAX_Q}. Use "
            "ddf='satterthwaite' for models this large")
    A = (Z.T @ Z).toarray()
    C = np.asarray(Z.T @ X)
    XX = X.T @ X
    Qn = A.shape[0]
    layout = design.theta_layout()
    lam = sp.block_diag([sp.kron(sp.eye(b.nlev), T) for b, T in
                         zip(design.blocks, layout.templates(res.state.theta))], format="csr")
    omega_inv = res.state.factor.solve_omega(np.eye(Qn))
    S = np.asarray(lam @ (lam @ omega_inv.T).T)  # Lambda Omega^{-1} Lambda'
    S = 0.5 * (S + S.T)
    AS = A @ S
    B = np.eye(Qn) - AS
    SC = S @ C
    ASC = A @ SC
    cSc = C.T @ SC
    cSASc = SC.T @ ASC
    cSASASc = ASC.T @ S @ ASC
    s2, s4, s6 = sigma2, sigma2 ** 2, sigma2 ** 3
    F = B @ C / s2                        # Z'WX
    M = (A - AS @ A) / s2                 # Z'WZ
    M = 0.5 * (M + M.T)
    H = B @ (B @ C) / s4                  # Z'WWX
    N = B @ A @ B.T / s4                  # Z'WWZ
    xwx = (XX - cSc) / s2
    xwwx = (XX - 2.0 * cSc + cSASc) / s4
    xwwwx = (XX - 3.0 * cSc + 3.0 * cSASc - cSASASc) / s6
    tr_w2 = (n - 2.0 * np.trace(AS) + np.sum(AS * AS.T)) / s4
    phi = np.linalg.inv(xwx)
    phi = 0.5 * (phi + phi.T)

    pars = _parameter_blocks(design)
    R = len(pars) + 1
    DF = [_apply_d(par, F) for par in pars]          # D_r Z'WX
    DM = [_apply_d(par, M) for par in pars]          # D_r Z'WZ
    P = np.empty((R, p, p))
    for r, dfr in enumerate(DF):
        P[r] = -(F.T @ dfr)
    P[R - 1] = -xwwx
    P = 0.5 * (P + P.transpose(0, 2, 1))
    Qm = np.empty((R, R, p, p))
    K = np.empty((R, R))
    for r in range(R - 1):
        for s in range(r, R - 1):
            Qm[r, s] = DF[r].T @ (M @ DF[s])
            Qm[s, r] = Qm[r, s].T
            K[r, s] = K[s, r] = np.sum(DM[r] * DM[s].T)
        Qm[r, R - 1] = DF[r].T @ H
        Qm[R - 1, r] = Qm[r, R - 1].T
        K[r, R - 1] = K[R - 1, r] = float(np.trace(_apply_d(pars[r], N)))
    Qm[R - 1, R - 1] = xwwwx
    K[R - 1, R - 1] = tr_w2
    IE2 = np.empty((R, R))
    PhiP = np.einsum("ij,rjk->rik", phi, P)
    for r in range(R):
        for s in range(r, R):
            IE2[r, s] = IE2[s, r] = (K[r, s] - 2.0 * np.sum(phi * Qm[r, s])
                                     + np.sum(PhiP[r] * PhiP[s].T))
    condition = float(np.min(np.abs(np.linalg.eigvalsh(IE2))))
    Wg = 2.0 * (np.linalg.inv(IE2) if condition > 1e-10 else np.linalg.pinv(IE2))
    Wg = 0.5 * (Wg + Wg.T)
    UU = np.zeros((p, p))
    for r in range(R):
        for s in range(R):
            UU += Wg[r, s] * (Qm[r, s] - P[r] @ phi @ P[s])
    phi_adj = phi + 2.0 * phi @ UU @ phi
    phi_adj = 0.5 * (phi_adj + phi_adj.T)
    return KenwardRogerSetup(phi=phi, phi_adj=phi_adj, P=P, W=Wg, condition=condition)
