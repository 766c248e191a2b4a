"""Power by simulation where the batch engine does not apply: one fit per data set.

GLMMs (simr's ``powerSim`` on a ``glmer`` model): each simulated data set (:meth:`~mixedanova.batch.simulation.SimulationModel.simulate`
with ``family=``) is fitted on its own by ``ma.glmm`` (Laplace, lme4's
``glmer``): GLMMs have no batch engine yet, so this is a loop, with progress.
A fit that raises or does not converge counts in ``n_failed``; power is the
share of ``p < alpha`` among the others.

Linear mixed models with a residual structure (``residual=``): each data set is
fitted by ``ma.lmm(..., residual=)``, with the same counting.
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from ..errors import ArgumentError, MixedAnovaError, UnknownNameError

__all__ = ["glmm_p_values", "check_glmm_test", "residual_p_values"]

_RESPONSE = "power_response_"


def check_glmm_test(test: str, design) -> int:
    """Index of the coefficient ``test`` (a Wald z test) among ``design.x_names``."""
    names = list(design.x_names)
    if not isinstance(test, str):
        raise ArgumentError(f"test must name a fixed-effect coefficient, not {test!r}")
    if test not in names:
        raise UnknownNameError(f"test={test!r}: power for a GLMM tests one fixed-effect "
                               f"coefficient by its Wald z test (glmer's summary); the "
                               f"coefficients are {', '.join(map(repr, names))}")
    return names.index(test)


def _loop(model, Y: np.ndarray, fit, p_value, progress: bool, label: str, what: str
          ) -> tuple[np.ndarray, np.ndarray]:
    """Fit each column of ``Y`` as the response of ``model.formula`` on
    ``model.data`` with ``fit(formula, data)``; ``p_value(res)`` of each converged
    fit, a failure flag for the others (and for fits that raise)."""
    name = _RESPONSE
    while name in model.data.columns:
        name += "_"
    formula = f"{name} {model.formula}"
    k = Y.shape[1]
    p = np.full(k, np.nan)
    failed = np.zeros(k, bool)
    data = model.data.copy()
    t0 = time.perf_counter()
    every = max(1, k // 10)
    for j in range(k):
        data[name] = Y[:, j]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = fit(formula, data)
            if not res.converged:
                failed[j] = True
            else:
                p[j] = p_value(res)
        except (MixedAnovaError, np.linalg.LinAlgError, ValueError, ArithmeticError):
            failed[j] = True
        if progress and ((j + 1) % every == 0 or j + 1 == k):
            rate = (j + 1) / max(time.perf_counter() - t0, 1e-9)
            print(f"power{label}: {j + 1}/{k} {what} ({rate:.1f}/s)", file=sys.stderr,
                  flush=True)
    failed |= ~np.isfinite(p)
    return p, failed


def glmm_p_values(model, test: str, Y: np.ndarray, progress: bool = False,
                  label: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Wald z p value of ``test`` and a failure flag for each column of ``Y``
    (rows of ``model.data``)."""
    from ..glmm_model import glmm

    return _loop(model, Y, lambda f, d: glmm(f, d, family=model.family),
                 lambda res: float(res.fixed().loc[test, "p"]), progress, label,
                 "GLMM fits")


def residual_p_values(model, spec, Y: np.ndarray, ddf: str, progress: bool = False,
                      label: str = "") -> tuple[np.ndarray, np.ndarray]:
    """p value of a fixed-effect test (``spec``: a coefficient's t test or a term's
    type III F test) and a failure flag for each column of ``Y``, each fitted by
    ``ma.lmm(..., residual=model.residual)`` (the batch engine has no residual
    structures)."""
    from ..model import lmm

    if spec.kind not in ("t", "F"):
        raise ArgumentError(f"test={spec.label!r}: with residual= power tests fixed effects "
                            f"(t or F tests), not random terms")

    def p_value(res) -> float:
        if spec.kind == "t":
            return float(res.fixed(ddf)["p"].iloc[spec.index])
        return float(res.anova(3, ddf).loc[spec.label, "p"])

    return _loop(model, Y, lambda f, d: lmm(f, d, model.method, residual=model.residual),
                 p_value, progress, label, "fits")
