"""Optimizer settings of a likelihood fit, in one object (lme4's ``lmerControl``).

:class:`LmmControl` holds the tolerances and iteration limits of the optimizer
(:func:`~mixedanova.likelihood.optimizer.optimize_theta`), of the convergence
check (:func:`~mixedanova.likelihood.convergence.check_convergence`) and of the
residual-structure fit (:mod:`mixedanova.likelihood.residual_fit`).  Its
defaults are the values the package has always used, so
``lmm(..., control=ma.LmmControl())`` is the default fit, bit for bit.

This module imports nothing heavy: it is exported as ``mixedanova.LmmControl``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import ArgumentError

__all__ = ["LmmControl", "check_control"]


@dataclass(frozen=True)
class LmmControl:
    """Tolerances and iteration limits of a REML / ML fit.

    Parameters
    ----------
    tol : float
        Tolerance of the local optimizer over ``theta`` (scipy's ``ftol``;
        scaled by the objective for SLSQP).
    maxiter : int
        Iteration limit of each local optimizer run.
    max_restarts : int
        Escapes from a singular covariance or a saddle point tried at most
        (lme4's ``restart_edge``, repeated).
    grad_tol : float
        Largest Newton step ``|H^{-1} g|`` accepted at the optimum (lme4's
        ``check.conv.grad`` tolerance, ``2e-3``).
    decrement_tol : float
        Largest decrease of the criterion a Newton step may predict at the
        optimum, relative to ``max(1, |f|)``.
    noise_tol : float
        A predicted decrease below this (relative) is rounding, whatever the step.
    singular_tol : float
        A template diagonal below this makes the fit singular (lme4's
        ``isSingular`` tolerance, ``1e-4``).
    residual_inner_tol : float
        With ``residual=``: the optimizer tolerance over ``theta`` while the
        residual parameters are searched on the profile (the final fit uses ``tol``).
    residual_maxiter : int
        With ``residual=``: iteration limit of the joint stage over ``(theta, u)``.

    Raises
    ------
    ArgumentError
        A field that is not a positive number (a non-negative integer for
        ``max_restarts``, a positive integer for the iteration limits), naming it.

    Examples
    --------
    >>> import mixedanova as ma
    >>> ctl = ma.LmmControl(grad_tol=1e-3)
    >>> res = ma.lmm("Reaction ~ Days + (Days | Subject)", ma.load_dataset("sleepstudy"),
    ...              control=ctl)
    >>> res.converged
    True
    """

    tol: float = 1e-12
    maxiter: int = 10000
    max_restarts: int = 8
    grad_tol: float = 2e-3
    decrement_tol: float = 1e-8
    noise_tol: float = 1e-9
    singular_tol: float = 1e-4
    residual_inner_tol: float = 1e-9
    residual_maxiter: int = 500

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("maxiter", "max_restarts", "residual_maxiter"):
                least = 0 if f.name == "max_restarts" else 1
                if isinstance(value, bool) or not _is_int(value) or value < least:
                    what = "a non-negative" if least == 0 else "a positive"
                    raise ArgumentError(f"LmmControl: {f.name} must be {what} integer, "
                                        f"not {value!r}")
                object.__setattr__(self, f.name, int(value))
            else:
                if isinstance(value, bool) or not _is_real(value) or not math.isfinite(value) \
                        or value <= 0:
                    raise ArgumentError(f"LmmControl: {f.name} must be a positive finite "
                                        f"number, not {value!r}")
                object.__setattr__(self, f.name, float(value))


def _is_int(value) -> bool:
    try:
        return int(value) == value and not isinstance(value, float)
    except (TypeError, ValueError):
        return False


def _is_real(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bytes, complex))


def check_control(control) -> LmmControl:
    """``control`` as an :class:`LmmControl` (None: the defaults)."""
    if control is None:
        return LmmControl()
    if not isinstance(control, LmmControl):
        raise ArgumentError(f"control must be an ma.LmmControl, not {type(control).__name__}")
    return control
