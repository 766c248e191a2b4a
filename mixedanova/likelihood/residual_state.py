"""The fit state of a model with a residual structure, from its criterion over
``(theta, u)``: one step shared by the in-memory model and the fit on a Dask
data frame (whose criterion makes one distributed pass per ``u``)."""
from __future__ import annotations

import dataclasses

import numpy as np

from .control import LmmControl
from .state import FitState

__all__ = ["fit_residual_state", "boundary_messages"]


def fit_residual_state(rdev, structure, optimizer: str, start: np.ndarray | None,
                       control: LmmControl, held: dict[int, float] | None = None
                       ) -> FitState:
    """Optimize ``rdev`` (a
    :class:`~mixedanova.likelihood.residual_fit.ResidualDeviance` or one with its
    protocol) over ``(theta, u)`` and pack the estimates, the residual fit in
    ``FitState.residual``.

    ``start`` may hold ``theta`` or ``(theta, u)``; ``held``: residual parameters
    held at given values (index into ``u``: natural value), as ``fixed=``.
    Convergence messages name the structure's parameters.
    """
    from .convergence import check_convergence
    from .criterion import fit_state
    from .residual_fit import ResidualFit, optimize_residual
    from .threads import engine_threads

    theta0 = u0 = None
    if start is not None:
        start = np.asarray(start, dtype=float)
        theta0 = start[:rdev.k]
        u0 = start[rdev.k:] if len(start) > rdev.k else None
    with engine_threads(None):
        if held:
            from .residual_held import held_unconstrained, optimize_held
            u, opt, info = optimize_held(rdev, held_unconstrained(structure, held), u0, theta0,
                                         method=optimizer, control=control)
        else:
            u, opt, info = optimize_residual(rdev, u0, theta0, method=optimizer,
                                             control=control)
        dev = rdev.at(u)
        conv = check_convergence(dev, opt.theta, opt.hessian, control=control)
    if info["messages"]:
        names = structure.names
        msgs = tuple(m.replace(f"residual parameter {i}", f"residual parameter {n!r}")
                     for m in info["messages"] for i, n in enumerate(names)
                     if f"residual parameter {i} " in m)
        conv = dataclasses.replace(conv, messages=conv.messages + msgs)
    state = fit_state(dev, opt, conv)
    fit = ResidualFit(structure=structure, u=u, info=info)
    return dataclasses.replace(state, residual=fit)


def boundary_messages(fit) -> list[str]:
    """Warnings for a residual correlation (``phi``, ``rho``) within 1e-4 of +-1
    (``fit`` a :class:`~mixedanova.likelihood.residual_fit.ResidualFit`)."""
    s = fit.structure
    return [f"the residual correlation {name} = {value:.6g} is at the boundary of its "
            "range: its estimate and interval are unreliable, and the residual pattern may "
            "be a trend or a periodic effect that belongs in the fixed part (or the "
            "structure is too rich for the data)"
            for name, value in zip(s.names, s.natural(fit.u))
            if name in ("phi", "rho") and abs(value) > 1.0 - 1e-4]
