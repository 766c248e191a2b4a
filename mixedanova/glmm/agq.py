"""Adaptive Gauss-Hermite quadrature for one random-effects term.

With one random-effects term (one grouping factor) the integral over the random
effects factors into one integral per level ``j``, of dimension ``q`` (the
term's columns).  As lme4 (``nAGQ > 1``, which allows only ``q = 1``), each is
taken on the standard-normal Gauss-Hermite rule ``(z_k, w_k)`` (``sum w_k = 1``)
centred at the conditional mode ``u_j`` and scaled by the conditional
covariance at the modes, ``Omega_j^{-1}`` with
``Omega_j = I + Lambda' Z_j' W Z_j Lambda`` (Fisher information, lme4's
weights), through its Cholesky factor ``L_j``:

    -2 log L = -2 sum_j log( |L_j| sum_k w_k p(y_j | u_j + L_j z_k)
                             exp(-(|u_j + L_j z_k|^2 - |z_k|^2) / 2) )

For ``q > 1`` the rule is the tensor product of ``nAGQ`` nodes per dimension
(``nAGQ^q`` nodes, their weights the products; GLMMadaptive's rule, without its
pruning), which integrates exactly every polynomial of degree ``2 nAGQ - 1`` in
each coordinate against the Gaussian centred at the modes.  With one node it is
the Laplace value.  The value keeps the whole log-likelihood (lme4's
``nAGQ > 1`` logLik leaves out the saturated log-likelihood; here the scale is
the Laplace one, so that AIC, BIC and likelihood-ratio tests compare across
``nAGQ``).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.sparse as sp
from numpy.polynomial.hermite_e import hermegauss

from ..errors import FitError
from .laplace import LaplaceObjective

__all__ = ["AgqObjective", "gh_rule", "product_rule", "MAX_NODES"]

MAX_NODES = 10_000  # nAGQ ** q above this is refused (each node is a pass over the rows)
_BLOCK = 1 << 20  # nodes x rows evaluated at once


def gh_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) of the ``n``-point Gauss-Hermite rule for
    the standard normal density (lme4's ``GHrule``)."""
    z, w = hermegauss(n)
    return z, w / math.sqrt(2.0 * math.pi)


def product_rule(n: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``q``-dimensional tensor-product rule: nodes ``(n^q, q)`` and log weights
    ``(n^q,)`` for the standard normal density in ``q`` dimensions."""
    z, w = gh_rule(n)
    idx = np.array(list(itertools.product(range(n), repeat=q)), dtype=np.intp).reshape(-1, q)
    return z[idx], np.log(w)[idx].sum(axis=1)


class AgqObjective:
    """``-2 log L(theta, beta)`` by adaptive Gauss-Hermite quadrature.

    Parameters
    ----------
    laplace : LaplaceObjective
        Its design must have one random-effects term (any number of columns).
    nagq : int
        Number of quadrature nodes per dimension of the term.
    """

    def __init__(self, laplace: LaplaceObjective, nagq: int) -> None:
        terms = laplace.data.terms
        if len(terms) != 1:
            raise FitError("adaptive Gauss-Hermite quadrature needs one random-effects term")
        q = terms[0].q
        if nagq ** q > MAX_NODES:
            raise FitError(f"nAGQ = {nagq} with {q} random effects per level needs "
                           f"{nagq ** q:,} quadrature nodes (limit {MAX_NODES:,}); "
                           "lower nAGQ")
        self.laplace = laplace
        self.nagq = nagq
        self.nodes, self.log_weights = product_rule(nagq, q)
        t = terms[0]
        self._indicator = sp.csr_matrix((np.ones(len(t.codes)), (t.codes, np.arange(len(t.codes)))),
                                        shape=(t.nlev, len(t.codes)))

    def evaluate(self, theta: np.ndarray, beta: np.ndarray) -> float:
        """The quadrature value (raises :class:`FitError` where PIRLS fails)."""
        lap = self.laplace
        d, fam = lap.data, lap.family
        st = lap.pirls(theta, beta)
        t = d.terms[0]
        T = d.layout.templates(theta)[0]
        cov = st.factor.omega_inv_diag()[0]          # (nlev, q, q): Omega_j^{-1}
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise FitError("the conditional covariance of the modes is not positive "
                           "definite") from None
        log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        modes = st.u.reshape(t.nlev, t.q)
        base = d.offset + d.X @ beta
        zt = t.zraw @ T                              # row i: eta += zt[i] . u_j
        logs = np.empty((len(self.nodes), t.nlev))
        # nodes in blocks, each one (nodes x rows) pass: sum_rows -> levels by a
        # sparse indicator product
        step = max(1, _BLOCK // max(d.n, 1))
        for k0 in range(0, len(self.nodes), step):
            z = self.nodes[k0:k0 + step]                          # (K, q)
            uk = modes[None] + np.einsum("jab,kb->kja", chol, z)  # (K, nlev, q)
            eta = base + np.einsum("ia,kia->ki", zt, uk[:, t.codes])
            mu = fam.link.linkinv(eta)
            ll = fam.loglik_terms(np.broadcast_to(d.y, eta.shape), mu,
                                  np.broadcast_to(d.pw, eta.shape))
            logs[k0:k0 + step] = (self.log_weights[k0:k0 + step, None]
                                  + (self._indicator @ ll.T).T
                                  - 0.5 * (np.einsum("kja,kja->kj", uk, uk)
                                           - np.einsum("ka,ka->k", z, z)[:, None]))
        top = logs.max(axis=0)
        per_level = top + np.log(np.exp(logs - top).sum(axis=0)) + log_det
        return float(-2.0 * per_level.sum())

    def __call__(self, theta: np.ndarray, beta: np.ndarray) -> float:
        try:
            return self.evaluate(theta, beta)
        except FitError:
            return math.inf
