"""Residual-structure parameters held at given values (``fixed=`` with random terms).

The criterion :class:`~mixedanova.likelihood.residual_fit.ResidualDeviance` is a
function of ``(theta, u)``; :class:`HeldResidualDeviance` is the same criterion
as a function of ``(theta, u_free)``, the held components of ``u`` set to the
given values mapped to the unconstrained scale.  :func:`optimize_held` minimizes
it with :func:`~mixedanova.likelihood.residual_fit.optimize_residual` (or, when
every structure parameter is held, over ``theta`` alone) and returns the full ``u``.
"""
from __future__ import annotations

import math

import numpy as np

from .control import LmmControl
from .optimizer import optimize_theta
from .residual_fit import ResidualDeviance, WhitenedDeviance, optimize_residual
from .state import OptimizerSummary
from ..errors import ArgumentError

__all__ = ["HeldResidualDeviance", "held_unconstrained", "optimize_held"]


def held_unconstrained(structure, held: dict[int, float]) -> dict[int, float]:
    """The held natural values (phi, rho, SD ratio, power, expon by position in
    ``structure.names``) on the structure's unconstrained scale.

    Raises
    ------
    ArgumentError
        A value outside the parameter's space (e.g. ``phi`` not in (-1, 1)).
    """
    natural = np.array(structure.natural(structure.start()), dtype=float)
    for i, v in held.items():
        natural[i] = v
    with np.errstate(all="ignore"):
        u = np.asarray(structure.unconstrained(natural), dtype=float)
    out = {}
    for i in held:
        if not math.isfinite(u[i]):
            raise ArgumentError(f"fixed[{structure.names[i]!r}] = {held[i]!r} is outside the "
                                "parameter's space (a correlation must lie strictly between "
                                "-1 and 1, an SD ratio must be positive)")
        out[i] = float(u[i])
    return out


class HeldResidualDeviance:
    """:class:`ResidualDeviance` as a function of ``x = (theta, u_free)``.

    Parameters
    ----------
    rdev : ResidualDeviance
    held : dict
        Position in ``u`` -> value on the unconstrained scale.
    """

    def __init__(self, rdev: ResidualDeviance, held: dict[int, float]) -> None:
        self.rdev = rdev
        self.structure = rdev.structure
        self.layout, self.k, self.reml = rdev.layout, rdev.k, rdev.reml
        n = rdev.structure.n_par
        self.free = np.array([i not in held for i in range(n)])
        self._full = np.zeros(n)
        for i, v in held.items():
            self._full[i] = v

    @property
    def dof(self) -> int:
        return self.rdev.dof

    def expand(self, u_free: np.ndarray) -> np.ndarray:
        """The full ``u``: the free components from ``u_free``, the held ones set."""
        u = self._full.copy()
        u[self.free] = np.asarray(u_free, dtype=float)
        return u

    def start(self) -> np.ndarray:
        return np.asarray(self.structure.start(), dtype=float)[self.free]

    def at(self, u_free: np.ndarray) -> WhitenedDeviance | None:
        return self.rdev.at(self.expand(u_free))

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=float)
        return x[:self.k], x[self.k:]

    def __call__(self, x: np.ndarray) -> float:
        theta, u = self.split(x)
        dev = self.at(u)
        return math.inf if dev is None else dev(theta)


def optimize_held(rdev: ResidualDeviance, held: dict[int, float], u0: np.ndarray | None,
                  theta0: np.ndarray | None, *, method: str, control: LmmControl
                  ) -> tuple[np.ndarray, OptimizerSummary, dict]:
    """Minimize the criterion over ``theta`` and the free components of ``u``, the
    components in ``held`` (position -> unconstrained value) kept there.

    ``u0`` is a full ``u`` (its held components are ignored).  Returns the full
    ``u``, the inner optimization at it and the information dict of
    :func:`~mixedanova.likelihood.residual_fit.optimize_residual` with ``free``
    (a boolean mask over ``u``) added; its messages number the free parameters
    by their position in ``u``.
    """
    hdev = HeldResidualDeviance(rdev, held)
    free_pos = np.flatnonzero(hdev.free)
    if free_pos.size == 0:  # every structure parameter held: theta only
        u = hdev.expand(np.empty(0))
        dev = rdev.at(u)
        if dev is None:
            raise ArgumentError("fixed= holds the residual structure outside its space")
        opt = optimize_theta(dev, theta0, method=method, control=control)
        return u, opt, {"outer_evals": 0, "profile_min": opt.fmin, "polish": [],
                        "messages": (), "free": hdev.free}
    start = hdev.start() if u0 is None else np.asarray(u0, dtype=float)[hdev.free]
    u_free, opt, info = optimize_residual(hdev, start, theta0, method=method, control=control)
    msgs = []
    for m in info["messages"]:  # "residual parameter j" of u_free -> its position in u
        for j, i in enumerate(free_pos):
            if f"residual parameter {j} " in m:
                m = m.replace(f"residual parameter {j} ", f"residual parameter {i} ")
                break
        msgs.append(m)
    info = dict(info, messages=tuple(msgs), free=hdev.free)
    return hdev.expand(u_free), opt, info
