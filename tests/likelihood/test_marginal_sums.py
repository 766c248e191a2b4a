"""The marginal criterion from per-pattern sums (likelihood/marginal_sums.py) equals
the in-memory engine on the rows (likelihood/marginal.py) at given parameters.

mmrm's fev data (tests/data/struct/fev.csv); both criteria are evaluated at the
in-memory start and at the in-memory optimum: value, GLS estimates, gradient,
Hessian, ``X'V Sigma_h V X`` and the Kenward-Roger pieces agree to rounding.
Sums of chunks of whole subjects add up to the sums of all rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.likelihood.marginal import kenward_roger_pieces
from mixedanova.likelihood.marginal_sums import (MarginalSums, SummedMarginalCriterion,
                                                 rough_start)
from mixedanova.likelihood.rows import design_rows

DATA = Path(__file__).resolve().parent.parent / "data" / "struct" / "fev.csv"
FORMULA = "FEV1 ~ RACE + SEX + ARMCD * AVISIT"
STRUCTURES = {
    "us_by_arm": ma.Unstructured(group="USUBJID", time="AVISIT", by="ARMCD"),
    "toeph": ma.Toeplitz(group="USUBJID", time="AVISIT", heterogeneous=True),
    "cs": ma.CompSymm(group="USUBJID"),
}


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("kind", sorted(STRUCTURES))
@pytest.mark.parametrize("reml", [True, False])
def test_summed_criterion_equals_the_rows(kind, reml):
    d = pd.read_csv(DATA)
    model = ma.LinearMixedModel.from_formula(FORMULA, d, residual=STRUCTURES[kind],
                                             weights="WEIGHT")
    crit = model.deviance_function(reml)
    st = model._structure
    rows = design_rows(model.design)
    subjects = np.unique(st.subject)
    half = np.isin(st.subject, subjects[::2])  # two chunks of whole subjects, added
    parts = [MarginalSums.from_rows(rows.X[k], rows.y[k], st.subject[k], st.visit[k],
                                    st.cov.m, st.group[k], st.n_groups) for k in (half, ~half)]
    summed = SummedMarginalCriterion((parts[0] + parts[1]).finished(), st.cov, reml)
    theta0 = rough_start(summed.data, st.cov)
    fit = model.fit("REML" if reml else "ML", warn=False)
    for theta in (theta0, fit.state.residual.u):
        e0, e1 = crit.evaluate(theta, order=2), summed.evaluate(theta, order=2)
        # mmrm: -2 * logLik at theta (REML or ML), component(m, "beta_est"), beta_vcov
        assert e1.value == pytest.approx(e0.value, rel=1e-13)
        assert _rel(e1.beta, e0.beta) < 1e-11
        assert _rel(e1.phi, e0.phi) < 1e-12
        # TMB's exact gradient and Hessian of -2 logLik in mmrm's theta (the gradient
        # against the Hessian's size: it is ~0 at the optimum)
        size = max(np.max(np.abs(e0.gradient)), np.max(np.abs(e0.hessian)))
        assert np.max(np.abs(e1.gradient - e0.gradient)) < 1e-10 * size
        assert _rel(e1.hessian, e0.hessian) < 1e-11
        # mmrm's P_h = X' dSigma^-1/dtheta_h X (Satterthwaite, Kenward-Roger)
        assert _rel(e1.PP, e0.PP) < 1e-12
        W = np.linalg.pinv(e0.hessian) * 2.0
        for a, b in zip(kenward_roger_pieces(summed, theta, W),
                        kenward_roger_pieces(crit, theta, W)):
            # mmrm's Kenward-Roger: Phi, P_h and the adjusted covariance Phi_A
            assert _rel(a, b) < 1e-11
