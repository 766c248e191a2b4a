"""What a GLMM fit found (:class:`GlmmFit`) and the working coordinates the
optimizers share: ``theta`` in units of its column's root mean square and the
fixed effects whitened (:class:`Whitened`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .laplace import LaplaceObjective, PirlsState

__all__ = ["GlmmFit", "Whitened", "theta_scales", "DECREMENT_TOL", "START_MULTIPLIERS"]

DECREMENT_TOL = 1e-10
START_MULTIPLIERS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 3.0)


@dataclass
class GlmmFit:
    """What the optimizer found.

    Attributes
    ----------
    theta, beta : numpy.ndarray
    value : float
        ``-2 log L`` at the estimates (Laplace or AGQ).
    state : PirlsState
        Modes at the estimates.
    hessian : numpy.ndarray
        Hessian of ``-2 log L`` over ``(theta, beta)`` (finite differences).
    free : numpy.ndarray
        Parameters not on a bound (where the Hessian applies).
    vcov_beta : numpy.ndarray
        ``beta`` block of ``2 H^{-1}``.
    gradient : numpy.ndarray
        Central-difference gradient at the estimates.
    newton_decrement : float
    converged : bool
    messages : list of str
    stage1_theta, stage1_beta : numpy.ndarray
    nevals : int
    """

    theta: np.ndarray
    beta: np.ndarray
    value: float
    state: PirlsState
    hessian: np.ndarray
    free: np.ndarray
    vcov_beta: np.ndarray
    gradient: np.ndarray
    newton_decrement: float
    converged: bool
    messages: list = field(default_factory=list)
    stage1_theta: np.ndarray | None = None
    stage1_beta: np.ndarray | None = None
    nevals: int = 0


class Whitened:
    """``x = (t, gamma)`` <-> ``(theta, beta)``: ``theta = s t`` (``s`` the
    working scale of each entry) and ``beta = b0 + A gamma``."""

    def __init__(self, scale: np.ndarray, b0: np.ndarray, A: np.ndarray) -> None:
        self.k, self.s, self.b0, self.A = len(scale), scale, b0, A

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.s * x[:self.k], self.b0 + self.A @ x[self.k:]

    def to_x(self, theta: np.ndarray, beta: np.ndarray) -> np.ndarray:
        gamma = np.linalg.solve(self.A, beta - self.b0) if len(beta) else beta
        return np.concatenate([theta / self.s, gamma])

    def jacobian(self) -> np.ndarray:
        p = len(self.b0)
        J = np.eye(self.k + p)
        J[:self.k, :self.k] = np.diag(self.s)
        J[self.k:, self.k:] = self.A
        return J


def theta_scales(obj: LaplaceObjective) -> np.ndarray:
    """Working unit of each ``theta`` entry: ``T[i, j]`` multiplies column ``i`` of
    the term's model matrix, so its unit is 1 / (root mean square of that column)."""
    out = []
    for t, q in zip(obj.data.terms, obj.data.layout.qs):
        rms = np.sqrt(np.mean(t.zraw ** 2, axis=0))
        rms = np.where(rms > 0, rms, 1.0)
        for j in range(q):
            for i in range(j, q):
                out.append(1.0 / rms[i])
    return np.asarray(out)
