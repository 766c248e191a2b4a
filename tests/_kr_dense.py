"""A brute-force Kenward-Roger (1997) on dense matrices, written from the paper's
formulas (not from the package): the reference the Kenward-Roger tests of
residual structures and structured random terms compare with."""
from __future__ import annotations

import numpy as np

__all__ = ["kr_dense"]


def kr_dense(X, V, dV, d2V):
    """Kenward & Roger (1997) on dense matrices: ``Phi_A`` and a function giving the
    df of ``L beta`` (their eq. for ``m``), with ``W`` the inverse expected REML
    information ``I_ij = tr(P V_i P V_j) / 2``."""
    Vi = np.linalg.inv(V)
    phi = np.linalg.inv(X.T @ Vi @ X)
    Pm = Vi - Vi @ X @ phi @ X.T @ Vi
    k = len(dV)
    PV = [Pm @ dV[i] for i in range(k)]
    info = np.array([[0.5 * np.sum(PV[i] * PV[j].T) for j in range(k)] for i in range(k)])
    W = np.linalg.inv(info)
    XV = X.T @ Vi
    P = [-XV @ dV[i] @ XV.T for i in range(k)]
    Q = [[XV @ dV[i] @ Vi @ dV[j] @ XV.T for j in range(k)] for i in range(k)]
    R = [[XV @ d2V[i][j] @ XV.T for j in range(k)] for i in range(k)]
    lam = sum(W[i, j] * (Q[i][j] - P[i] @ phi @ P[j] - 0.25 * R[i][j])
              for i in range(k) for j in range(k))
    phi_a = phi + 2.0 * phi @ lam @ phi

    def ddf(L):
        L = np.atleast_2d(L)
        q = L.shape[0]
        theta = L.T @ np.linalg.inv(L @ phi @ L.T) @ L
        a1 = sum(W[i, j] * np.trace(theta @ phi @ P[i] @ phi) * np.trace(theta @ phi @ P[j] @ phi)
                 for i in range(k) for j in range(k))
        a2 = sum(W[i, j] * np.trace(theta @ phi @ P[i] @ phi @ theta @ phi @ P[j] @ phi)
                 for i in range(k) for j in range(k))
        b = (a1 + 6 * a2) / (2 * q)
        g = ((q + 1) * a1 - (q + 4) * a2) / ((q + 2) * a2)
        c1 = g / (3 * q + 2 * (1 - g))
        c2 = (q - g) / (3 * q + 2 * (1 - g))
        c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
        e_star = 1.0 / (1.0 - a2 / q)
        v_star = (2.0 / q) * (1 + c1 * b) / ((1 - c2 * b) ** 2 * (1 - c3 * b))
        rho = v_star / (2 * e_star ** 2)
        return 4 + (q + 2) / (q * rho - 1)

    return phi_a, ddf
