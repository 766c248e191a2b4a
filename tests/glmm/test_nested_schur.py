"""The nested Schur complement of the scalar-terms gradient (``NestedSchur``):
its solve, log-determinant and the entries of its inverse that the gradient
reads (``InverseEntries``, never forming ``S^{-1}``) equal dense algebra on the
same ``S`` (R: ``solve(S, x)``, ``determinant(S)$modulus``, ``solve(S)[a, b]``)."""
from __future__ import annotations

import numpy as np
import pytest

from mixedanova.design.theta import ThetaLayout
from mixedanova.glmm.families import make_family
from mixedanova.glmm.laplace import GlmmData, LaplaceObjective
from mixedanova.glmm.nested_schur import NestedSchur
from mixedanova.glmm.scalar_blocks import ScalarBlocksGradient
from mixedanova.likelihood.blocked import TermData


def _nested_gradient(seed: int, n_brood: int, n_loc: int) -> tuple:
    """(1|obs) + (1|brood) + (1|loc), one obs level per row and broods spread over
    one or two locations (grouseticks' shape), Poisson counts."""
    rng = np.random.default_rng(seed)
    n = 6 * n_brood
    brood = np.repeat(np.arange(n_brood), 6)
    loc = (rng.integers(0, n_loc, n_brood)[brood]
           + (rng.random(n) < 0.2) * rng.integers(0, n_loc, n)) % n_loc
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    eta = 0.5 + 0.3 * X[:, 1] + rng.normal(0, 0.5, n_brood)[brood]
    y = rng.poisson(np.exp(eta)).astype(float)
    one = np.ones((n, 1))
    terms = (TermData(np.arange(n), one, n), TermData(brood, one, n_brood),
             TermData(loc, one, n_loc))
    layout = ThetaLayout.from_terms(["obs", "brood", "loc"], [("(Intercept)",)] * 3)
    obj = LaplaceObjective(make_family("poisson", "log"),
                           GlmmData(y, np.ones(n), np.zeros(n), X, terms, layout))
    grad = ScalarBlocksGradient(obj)
    grad.dense_b = False  # the sparse path (grouseticks': B almost empty)
    return obj, grad, rng


@pytest.mark.parametrize("seed,n_loc", [(1, 4), (2, 4), (1, 30), (3, 30)])
def test_nested_schur_equals_dense_algebra(seed, n_loc):
    # n_loc = 4: C' diag(d1)^{-1} C by a dense product; 30: by pairs of entries
    obj, grad, rng = _nested_gradient(seed, n_brood=12, n_loc=n_loc)
    theta = np.array([0.6, 0.8, 0.5])
    c = grad._zlam(obj.data.layout.templates(theta))
    w = rng.uniform(0.5, 3.0, obj.data.n)
    parts = grad._parts(c, w)
    cho = parts.cho
    assert isinstance(cho, NestedSchur)  # the diagonal block (brood) eliminated
    assert grad.nested_plan is not None  # the few-entries plan is the one in use
    assert (grad.nested_pattern[6] is not None) == (n_loc == 30)  # pairs or dense product
    # S itself, densely, from the same pieces: E - B D^{-1} B'
    r, n0 = grad.r, grad.n0
    vals = np.hstack([c[k] for k in grad.rest])
    E = grad._e_dense((w[:, None, None] * vals[:, :, None] * vals[:, None, :]).ravel())
    B = np.zeros(r * n0)
    B[grad.b_flat] = parts.B
    B = B.reshape(r, n0)
    S = E - (B * parts.Dinv[:, 0, 0]) @ B.T
    x = rng.normal(size=r)
    # solve(S, x)
    assert np.max(np.abs(cho.solve(x) - np.linalg.solve(S, x))) <= 1e-12 * np.max(
        np.abs(np.linalg.solve(S, x)))
    # determinant(S)$modulus (log)
    assert abs(cho.logdet() - np.linalg.slogdet(S)[1]) <= 1e-11
    # solve(S)[a, b] at the positions the gradient reads (lower triangle)
    P = np.linalg.inv(S)
    got = cho.entries(grad.nested_plan)
    assert np.max(np.abs(got - P.ravel()[grad.p_need])) <= 1e-12 * np.max(np.abs(P))
    # the dense S^{-1} of the same factor
    assert np.max(np.abs(cho.inverse() - P)) <= 1e-12 * np.max(np.abs(P))
