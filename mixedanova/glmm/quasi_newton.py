"""Quasi-Newton descent seeded with a Hessian from differences of the gradient.

L-BFGS-B starts from a scaled identity and spends most of its evaluations
learning the curvature (about 30 for grouseticks' seven parameters).  Here the
first matrix is the forward-difference Hessian of the analytic gradient at the
start (one evaluation per ``theta`` entry; see :func:`seed_hessian`), then BFGS
updates keep it current at one evaluation per step; a rejected trial is followed
by the minimum of the cubic through the values and slopes at both of its ends
(:func:`backtrack_step`), not by a blind halving.  The run hands over to the
Newton polish (:func:`~mixedanova.glmm.polish.newton_grad`), which retakes
the Hessian and decides convergence, so this stage only has to arrive near the
optimum.  It gives up where a bound is in the way (a parameter at or pushed onto
its bound, as at a singular fit) or where it cannot make progress; the caller
then runs L-BFGS-B from the start (and, if that fails, from where this stopped).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["seeded_bfgs", "seed_hessian", "backtrack_step"]

HANDOVER_DECREMENT = 1e-11  # the decrease a step predicts below which the polish takes over
MAX_HELD = 6  # steps held back from a bound before giving up


def _positive(H: np.ndarray) -> np.ndarray | None:
    """``H`` itself when positive definite, else its eigenvalues made positive
    (absolute values, floored); None when not finite."""
    if not np.all(np.isfinite(H)):
        return None
    try:
        np.linalg.cholesky(H)
        return H
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(H)
        floor = 1e-6 * max(1.0, float(np.max(np.abs(w))))
        return V @ np.diag(np.maximum(np.abs(w), floor)) @ V.T


def seed_hessian(fg_raw: Callable, x: np.ndarray, g: np.ndarray, n_theta: int,
                 h: float = 1e-4) -> np.ndarray:
    """The first matrix: forward differences of the gradient along the ``theta``
    entries (the first ``n_theta``; their columns give the ``theta`` rows too),
    and ``2 I`` for the whitened fixed effects: whitening by the start's ``R_X``
    (``R_X'R_X`` the information for ``beta``, half the Hessian of ``-2 log L``)
    makes that block ``2 I`` there, to a few per cent at the optimum."""
    k = len(x)
    H = 2.0 * np.eye(k)
    for i in range(n_theta):
        e = np.zeros(k)
        e[i] = h
        H[:, i] = (fg_raw(x + e)[1] - g) / h
    H[:n_theta, n_theta:] = H[n_theta:, :n_theta].T
    H[:n_theta, :n_theta] = 0.5 * (H[:n_theta, :n_theta] + H[:n_theta, :n_theta].T)
    return H


def backtrack_step(t: float, f0: float, d0: float, ft: float, dt: float) -> float:
    """The next trial after ``t`` failed: the minimum of the cubic through the
    values ``f0, ft`` and slopes ``d0, dt`` along the step at 0 and ``t`` (the
    quadratic through ``f0, d0, ft`` without a finite ``dt``), kept within
    ``[0.1 t, 0.5 t]``; ``t / 2`` where the value is not finite."""
    if not np.isfinite(ft):
        return 0.5 * t
    lo, hi = 0.1 * t, 0.5 * t
    tq = -d0 * t * t / (2.0 * (ft - f0 - d0 * t))  # quadratic
    if np.isfinite(dt):
        z = 3.0 * (f0 - ft) / t + d0 + dt
        disc = z * z - d0 * dt
        if disc >= 0.0:
            w = np.sqrt(disc)
            denom = dt - d0 + 2.0 * w
            if denom != 0.0:
                tq = t * (1.0 - (dt + w - z) / denom)
    if not np.isfinite(tq):
        return hi
    return float(min(max(tq, lo), hi))


def seeded_bfgs(fg: Callable, fg_raw: Callable, x: np.ndarray, lower: np.ndarray,
                n_theta: int, max_steps: int = 60) -> tuple[np.ndarray, bool]:
    """BFGS from ``x`` with the first matrix the gradient's difference Hessian.

    Parameters
    ----------
    fg, fg_raw : callable
        ``x -> (value, gradient)``; ``fg`` is ``inf`` outside the bounds,
        ``fg_raw`` ignores them (differences may straddle a bound).
    x : numpy.ndarray
        Start, strictly inside the bounds: ``theta`` in working units, then the
        whitened fixed effects.
    lower : numpy.ndarray
        Lower bounds (``-inf`` where none).
    n_theta : int
        Number of ``theta`` entries (see :func:`seed_hessian`).
    max_steps : int

    Returns
    -------
    x : numpy.ndarray
        The last (lowest) point reached.
    done : bool
        True where the predicted decrease there is below ``HANDOVER_DECREMENT``
        (or after ``max_steps``); False where a bound is in the way or no step
        decreases the value (the caller continues from ``x`` by L-BFGS-B).
    """
    f0, g = fg(x)
    if not (np.isfinite(f0) and np.all(np.isfinite(g))) or np.any(x - lower < 1e-6):
        return x, False
    H = _positive(seed_hessian(fg_raw, x, g, n_theta))
    if H is None:
        return x, False
    tol = HANDOVER_DECREMENT * max(1.0, abs(f0))
    held = 0
    for _ in range(max_steps):
        step = -np.linalg.solve(H, g)
        dec = 0.5 * float(-g @ step)
        if not np.isfinite(dec):
            return x, False
        if dec < tol:
            return x, True
        # the largest fraction of the step that stays inside the bounds: halfway
        # to the bound at most; steps held back again and again mean the optimum
        # may be on the bound (L-BFGS-B's case)
        neg = step < 0
        room = float(np.min(np.where(neg, (lower - x) / np.where(neg, step, -1.0),
                                     np.inf)))
        t = 1.0
        if room <= 1.0:
            held += 1
            if held > MAX_HELD:
                return x, False
            t = 0.5 * room
        for _ in range(30):
            xn = x + t * step
            fn, gn = fg(xn)
            if np.isfinite(fn) and np.all(np.isfinite(gn)) and \
                    fn <= f0 - 1e-4 * t * 2.0 * dec:
                break
            t = backtrack_step(t, f0, -2.0 * dec, fn, gn @ step if np.all(np.isfinite(gn))
                           else np.nan)
        else:
            return x, False
        s, yv = xn - x, gn - g
        sy = float(s @ yv)
        x, f0, g = xn, fn, gn
        if sy > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(yv)):
            Hs = H @ s
            H = H - np.outer(Hs, Hs) / float(s @ Hs) + np.outer(yv, yv) / sy
    return x, True
