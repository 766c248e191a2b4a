"""Systems with no fixed effects (p = 0): what a GLMM's PIRLS solves with beta
held in the offset.  Solution and log-determinant against dense algebra, for the
nested and the crossed layout, with row weights."""
from __future__ import annotations

import numpy as np
import pytest

from mixedanova.likelihood.blocked import TermData
from mixedanova.likelihood.crossprod import CrossProductPattern
from mixedanova.likelihood.system import build_system


@pytest.mark.parametrize("crossed", [False, True])
@pytest.mark.parametrize("p", [0, 2])
def test_solution_and_logdet_match_dense(crossed, p):
    rng = np.random.default_rng(4)
    n = 300
    g, h = rng.integers(0, 15, n), rng.integers(0, 6, n)
    x = rng.normal(size=n)
    terms = [TermData(g, np.column_stack([np.ones(n), x]), 15)]
    if crossed:
        terms.append(TermData(h, np.ones((n, 1)), 6))
    X = np.column_stack([np.ones(n), x])[:, :p]
    z, w = rng.normal(size=n), rng.uniform(0.05, 2.0, n)
    T = [np.array([[0.9, 0.0], [0.4, 0.5]]), np.array([[1.7]])][:len(terms)]
    cp = CrossProductPattern(terms, n).evaluate([t.zraw for t in terms], X, z, weights=w,
                                                standardize=False, shift=np.zeros((p, 1)))
    system = build_system(cp.standardized())
    assert type(system).__name__ == ("CrossedSystem" if crossed else "NestedSystem")
    f = system.factor(T)
    beta, u = f.solution()
    blocks = []
    for t, Tk in zip(terms, T):
        Z = np.zeros((n, t.nlev * t.q))
        for j in range(t.q):
            Z[np.arange(n), t.codes * t.q + j] = t.zraw[:, j]
        blocks.append(Z @ np.kron(np.eye(t.nlev), Tk))
    ZL = np.hstack(blocks)
    A = np.column_stack([ZL, X])
    q = ZL.shape[1]
    M = A.T @ (w[:, None] * A)
    M[:q, :q] += np.eye(q)
    sol = np.linalg.solve(M, A.T @ (w * z))
    assert np.allclose(u, sol[:q], atol=1e-12, rtol=1e-10)
    assert np.allclose(beta, sol[q:], atol=1e-12, rtol=1e-10)
    assert abs(f.ldL2 - np.linalg.slogdet(M[:q, :q])[1]) <= 1e-10
