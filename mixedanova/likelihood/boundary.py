"""The boundary of the positive semidefinite cone, where the Cholesky
parameterization has false stationary points.

Each term's relative covariance is ``Sigma_k = T_k T_k'`` with ``T_k`` lower
triangular.  Where ``T_k`` is singular the map from ``theta`` to ``Sigma_k`` is
not locally onto: with ``T_11 = 0`` the entries below it only rotate within the
same covariance, and a point can be stationary in every entry of ``theta``
although ``Sigma_k + t v v'`` lowers the objective.  The optimum over the cone
satisfies ``G_k >= 0`` (positive semidefinite) and ``G_k Sigma_k = 0`` for the
gradient ``G_k`` of the objective in ``Sigma_k``; :func:`cone_descent` looks for
a violation of either condition and returns a better point, which the optimizer
restarts from and the convergence check reports.  The second condition matters
where a zero diagonal traps the triangular factor: at ``T_11 = 0`` the
covariance ``diag(0, s)`` cannot turn into the nearby rank-one covariance with
correlation +-1 (``T_22 = 0`` instead), though the objective falls linearly
along that turn (stress set e_crossed_10082).
"""
from __future__ import annotations

import math

import numpy as np

from .blocked import NotPositiveDefinite
from .criterion import ProfiledDeviance

__all__ = ["psd_cholesky", "cone_descent", "canonical_theta", "free_mask", "near_singular",
           "ConeDescent"]

SMALL_DIAG = 1e-3   # a template diagonal this small (in units of its column's RMS) is "near 0"
_EPS = 1e-6         # the gradient is taken at Sigma + _EPS D^-2, just inside the cone
_STEPS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
# rotation steps, in units of 1 / max |eigenvalue of the normalized gradient|
_ROTATION_STEPS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
_ROTATION_TOL = 1e-8  # |G T| below this (relative) is complementarity to rounding


class ConeDescent:
    """A direction out of a singular covariance that lowers the objective.

    Attributes
    ----------
    term : int
        Index of the random-effects term.
    slope : float
        Most negative eigenvalue of the normalized gradient ``D^-1 G_k D^-1``
        (for a turn of the range: minus the largest entry of ``|G_k T_k|``, normalized).
    theta : numpy.ndarray
        The best point found along ``Sigma_k + t v v'``.
    gain : float
        How much lower the objective is there.
    """

    def __init__(self, term: int, slope: float, theta: np.ndarray, gain: float) -> None:
        self.term, self.slope, self.theta, self.gain = term, slope, theta, gain


def psd_cholesky(S: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Lower-triangular ``T`` with ``T T' = S`` for a positive semidefinite ``S``.

    A pivot at or below ``tol`` times its own diagonal entry (the share of that
    coordinate's variance not explained by the earlier ones) gives a zero
    column, so a singular ``S`` gets a factor whose zero diagonals have zeros
    below.
    """
    q = S.shape[0]
    A = 0.5 * (S + S.T)
    T = np.zeros_like(A)
    for j in range(q):
        d = A[j, j] - T[j, :j] @ T[j, :j]
        if not d > tol * A[j, j]:
            continue
        T[j, j] = math.sqrt(d)
        T[j + 1:, j] = (A[j + 1:, j] - T[j + 1:, :j] @ T[j, :j]) / T[j, j]
    return T


def near_singular(dev: ProfiledDeviance, k: int, T: np.ndarray) -> bool:
    """Term ``k``'s template has a diagonal near 0 (``SMALL_DIAG`` in units of its
    column's RMS)."""
    return bool(np.min(np.abs(np.diag(T)) * dev.column_scales[k]) < SMALL_DIAG)


def cone_descent(dev: ProfiledDeviance, theta: np.ndarray,
                 f0: float | None = None) -> ConeDescent | None:
    """The best descent out of a (near) singular covariance, or ``None``.

    For each term whose template has a diagonal near 0, the gradient ``G_k`` in
    ``Sigma_k`` is taken just inside the cone, normalized by the RMS of the
    term's columns (``D``), and every negative eigenvalue's direction ``v`` is
    tried as ``Sigma_k + t D^-1 v v' D^-1`` over a range of ``t``.  A point counts
    only when it lowers the objective by more than ``1e-10`` relative.  Where
    ``G_k T_k`` is not 0 (complementarity fails), the full factor moves by a
    gradient step, ``T_k -> (I - t G_k) T_k`` (normalized by ``D``) over a range
    of ``t``, and is re-factored: this turns the covariance's range, which a
    triangular factor with a zero diagonal cannot do.
    """
    layout = dev.layout
    theta = np.asarray(theta, dtype=float)
    f0 = dev(theta) if f0 is None else f0
    noise = 1e-10 * max(1.0, abs(f0))
    best: ConeDescent | None = None
    for k, T in enumerate(layout.templates(theta)):
        if not near_singular(dev, k, T):
            continue
        d = dev.column_scales[k]
        S = T @ T.T
        Dinv2 = np.diag(1.0 / d**2)
        try:
            inside = layout.with_template(theta, k, np.linalg.cholesky(S + _EPS * Dinv2))
            G = dev.covariance_gradient(inside, k)
        except (NotPositiveDefinite, np.linalg.LinAlgError):
            continue
        Gn = G / np.outer(d, d)
        lam, W = np.linalg.eigh(Gn)
        for i in np.flatnonzero(lam < 0):
            v = W[:, i] / d
            for t in _STEPS:
                Snew = S + t * np.outer(v, v) + 1e-3 * t * Dinv2
                cand = layout.with_template(theta, k, np.linalg.cholesky(Snew))
                gain = f0 - dev(cand)
                if gain > noise and (best is None or gain > best.gain):
                    best = ConeDescent(k, float(lam[i]), cand, gain)
        # complementarity (G_k Sigma_k = 0): a gradient step on the full factor,
        # T -> (I - t G_k) T, turns the covariance's range (a correlation moving
        # off +-1 or onto it) where the triangular factor cannot: at a zero
        # diagonal the entries below it get no gradient
        Tn = T * d[:, None]
        GT = Gn @ Tn
        size = float(np.max(np.abs(lam)))
        if not size > 0.0 or not np.max(np.abs(GT)) > _ROTATION_TOL * size * np.max(np.abs(Tn)):
            continue
        for t in _ROTATION_STEPS:
            Tnew = (Tn - (t / size) * GT) / d[:, None]
            cand = layout.with_template(theta, k, psd_cholesky(Tnew @ Tnew.T, tol=1e-14))
            gain = f0 - dev(cand)
            if gain > noise and (best is None or gain > best.gain):
                best = ConeDescent(k, float(-np.max(np.abs(GT))), cand, gain)
    return best


def canonical_theta(dev: ProfiledDeviance, theta: np.ndarray) -> np.ndarray:
    """Re-factor singular templates so that a zero diagonal has zeros below it.

    The covariance, hence the objective, is unchanged (kept only if the
    objective agrees to rounding); the redundant entries a zero diagonal leaves
    are gone, so the free entries have a regular Hessian.
    """
    out = np.asarray(theta, dtype=float).copy()
    for k, T in enumerate(dev.layout.templates(out)):
        if T.shape[0] > 1 and np.any(np.diag(T) == 0.0):
            cand = dev.layout.with_template(out, k, psd_cholesky(T @ T.T, tol=1e-14))
            f_out = dev(out)
            if dev(cand) <= f_out + 1e-12 * max(1.0, abs(f_out)):
                out = cand
    return out


def free_mask(dev: ProfiledDeviance, theta: np.ndarray) -> np.ndarray:
    """Entries of ``theta`` free to move: not in a template column whose
    diagonal is exactly 0 (that column is held at 0 by :func:`canonical_theta`)."""
    layout = dev.layout
    free = np.ones(len(theta), dtype=bool)
    for k, T in enumerate(layout.templates(theta)):
        q, off = layout.qs[k], layout.offsets[k]
        zero = np.diag(T) == 0.0
        free[off:off + q * (q + 1) // 2] = ~zero[layout.template_columns(k)]
    return free
