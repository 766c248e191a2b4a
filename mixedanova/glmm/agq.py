"""Adaptive Gauss-Hermite quadrature for one scalar random-effects term.

With one scalar term the integral over the random effects factors into one
integral per level ``j``.  As lme4 (``nAGQ > 1``), each is taken on the
standard-normal Gauss-Hermite rule ``(z_k, w_k)`` (``sum w_k = 1``) centred at
the conditional mode ``u_j`` and scaled by the conditional SD
``s_j = (1 + theta^2 sum_i W_i z_i^2)^{-1/2}`` from the Fisher information at
the modes:

    -2 log L = -2 sum_j log( s_j sum_k w_k p(y_j | u_j + s_j z_k)
                             exp(-((u_j + s_j z_k)^2 - z_k^2) / 2) )

With one node this is the Laplace value.  The value keeps the whole
log-likelihood (lme4's ``nAGQ > 1`` logLik leaves out the saturated
log-likelihood; here the scale is the Laplace one, so that AIC, BIC and
likelihood-ratio tests compare across ``nAGQ``).
"""
from __future__ import annotations

import math

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from ..errors import FitError
from .laplace import LaplaceObjective

__all__ = ["AgqObjective", "gh_rule"]


def gh_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) of the ``n``-point Gauss-Hermite rule for
    the standard normal density (lme4's ``GHrule``)."""
    z, w = hermegauss(n)
    return z, w / math.sqrt(2.0 * math.pi)


class AgqObjective:
    """``-2 log L(theta, beta)`` by adaptive Gauss-Hermite quadrature.

    Parameters
    ----------
    laplace : LaplaceObjective
        Its design must have one random-effects term with one column.
    nagq : int
        Number of quadrature nodes.
    """

    def __init__(self, laplace: LaplaceObjective, nagq: int) -> None:
        terms = laplace.data.terms
        if len(terms) != 1 or terms[0].q != 1:
            raise FitError("adaptive Gauss-Hermite quadrature needs one scalar random term")
        self.laplace = laplace
        self.nagq = nagq
        self.nodes, self.weights = gh_rule(nagq)

    def evaluate(self, theta: np.ndarray, beta: np.ndarray) -> float:
        """The quadrature value (raises :class:`FitError` where PIRLS fails)."""
        lap = self.laplace
        d, fam = lap.data, lap.family
        st = lap.pirls(theta, beta)
        t = d.terms[0]
        th = float(theta[0])
        sd = np.sqrt(st.factor.omega_inv_diag()[0][:, 0, 0])
        base = d.offset + d.X @ beta
        zcol = t.zraw[:, 0] * th
        logs = np.empty((len(self.nodes), t.nlev))
        for k, (z, w) in enumerate(zip(self.nodes, self.weights)):
            uk = st.u + sd * z
            mu = fam.link.linkinv(base + zcol * uk[t.codes])
            ll = np.bincount(t.codes, weights=fam.loglik_terms(d.y, mu, d.pw),
                             minlength=t.nlev)
            logs[k] = math.log(w) + ll - 0.5 * (uk * uk - z * z)
        top = logs.max(axis=0)
        per_level = top + np.log(np.exp(logs - top).sum(axis=0)) + np.log(sd)
        return float(-2.0 * per_level.sum())

    def __call__(self, theta: np.ndarray, beta: np.ndarray) -> float:
        try:
            return self.evaluate(theta, beta)
        except FitError:
            return math.inf
