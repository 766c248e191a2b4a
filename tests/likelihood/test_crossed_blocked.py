"""The crossed layout by dense blocks of first-term levels (likelihood/crossed_blocked.py)
against the crossed layout that stores the pairs of entries (likelihood/crossed.py).

The blocked route is chosen only for designs far too large for a test (100 M rows over
100 k x 10 k levels); here its thresholds are lowered so that it runs on small data,
with blocks of a few levels so that every evaluation goes through many blocks and a
partial last one.  At the same theta both layouts must give the same objective,
gradient, conditional variances, solution and fixed-effects covariance; whole fits
must give the same estimates.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
import mixedanova.likelihood.crossed_blocked as cb
from mixedanova.likelihood.crossed import CrossedSystem
from mixedanova.likelihood.crossed_blocked import (BlockedCrossedSystem, LevelPairColumns,
                                                    use_blocked)
from mixedanova.likelihood.criterion import ProfiledDeviance

FORMULAS = [
    "y ~ x + (1 | a) + (1 | b)",
    "y ~ x + (1 | a) + (1 | b) + (1 | c)",
    "y ~ 0 + (1 | a) + (1 | b)",
]


def _crossed_data(n: int = 900, seed: int = 5, na: int = 60, nb: int = 25) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.integers(0, na, n), "b": rng.integers(0, nb, n),
                       "c": rng.integers(0, 6, n), "x": rng.normal(size=n),
                       "w": rng.uniform(0.5, 2.0, n)})
    df["y"] = (2.0 + 0.4 * df.x + rng.normal(size=na)[df.a] + 0.7 * rng.normal(size=nb)[df.b]
               + 0.5 * rng.normal(size=6)[df.c] + rng.normal(size=n))
    return df


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    """Bands of 5 columns between the triangles and 50 level pairs decoded at a time:
    the loops over them run many times on small data."""
    monkeypatch.setattr(cb, "_BAND", 5)
    monkeypatch.setattr(cb, "ENTRY_CHUNK", 50)


@pytest.fixture()
def force_blocked(monkeypatch):
    """Every eligible crossed design takes the blocked route."""
    monkeypatch.setattr(cb, "BLOCKED_MIN_DENSE_C", -1)
    monkeypatch.setattr(cb, "BLOCKED_MIN_PAIRS", -1)
    monkeypatch.setattr(cb, "BLOCKED_FLOPS_PER_PAIR", np.inf)


def _deviances(formula: str, df: pd.DataFrame, weights=None, reml: bool = True):
    model = ma.LinearMixedModel.from_formula(formula, df, weights=weights)
    dev = model.deviance_function(reml)
    cp = dev.cp
    blocked = ProfiledDeviance(cp, dev.layout, reml)
    blocked.system = BlockedCrossedSystem(cp, block_bytes=8 * 7 * (blocked.system.r))
    return dev, blocked


@pytest.fixture()
def pairs_route(monkeypatch):
    """crossed.py stores the pairs of entries (not a dense C, not grouped weights)."""
    import mixedanova.likelihood.crossed as crossed

    monkeypatch.setattr(crossed, "_PAIRS_PER_FLOP", 0.0)
    monkeypatch.setattr(crossed, "_GROUPED_ENTRIES", 0)


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("weighted, reml", [(False, True), (True, True), (False, False)])
def test_blocked_equals_pairs_at_the_same_theta(pairs_route, formula, weighted, reml):
    df = _crossed_data()
    dev, blocked = _deviances(formula, df, "w" if weighted else None, reml)
    system = dev.system
    assert isinstance(system, CrossedSystem) and not system.dense_c and system.groups is None
    assert blocked.system.width == 7 and blocked.system.l0 % 7  # a partial last block
    rng = np.random.default_rng(1)
    for theta in (dev.layout.start(), 0.2 + rng.uniform(size=len(dev.layout.lower))):
        v0, g0 = dev.value_and_gradient(theta)
        v1, g1 = blocked.value_and_gradient(theta)
        assert v1 == pytest.approx(v0, rel=1e-12)  # devfun(theta): REML or ML deviance
        # the gradient of devfun(theta) (lme4 has none; central differences of devfun)
        np.testing.assert_allclose(g1, g0, rtol=1e-9, atol=1e-9)
        f0, f1 = dev.factor(theta), blocked.factor(theta)
        for a, b in zip(f0.omega_inv_diag(), f1.omega_inv_diag()):
            # ranef(m, condVar = TRUE)'s postVar / sigma^2 at theta, per level
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-14)
        b0, u0 = f0.solution()
        b1, u1 = f1.solution()
        np.testing.assert_allclose(b1, b0, rtol=1e-10)  # fixef(m) at theta
        np.testing.assert_allclose(u1, u0, rtol=1e-9, atol=1e-12)  # getME(m, "u") at theta
        # vcov(m) / sigma^2 at theta
        np.testing.assert_allclose(f1.vcov_unscaled(), f0.vcov_unscaled(), rtol=1e-10)
        rhs = rng.normal(size=(int(dev.system.offsets[-1]), 3))
        # solve(L_Z, rhs) and solve(t(L_Z), rhs) (Matrix::solve on getME(m, "L"), system "L")
        np.testing.assert_allclose(f1.forward_solve(rhs), f0.forward_solve(rhs), atol=1e-12)
        np.testing.assert_allclose(f1.back_solve(rhs), f0.back_solve(rhs), atol=1e-12)


def test_blocked_gradient_matches_differences():
    # the blocked route's analytic gradient against central differences of devfun(theta)
    dev = _deviances(FORMULAS[1], _crossed_data(seed=8))[1]
    theta = np.array([0.7, 0.5, 0.3])
    h = 1e-5
    fd = [(dev(theta + h * e) - dev(theta - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(dev.gradient(theta), fd, rtol=1e-6, atol=1e-6)


def test_level_pair_columns_products_and_blocks():
    df = _crossed_data()
    cp = ma.LinearMixedModel.from_formula(FORMULAS[1], df).deviance_function(True).cp
    cols = LevelPairColumns(cp)
    l0 = cp.terms[0].nlev
    dense = np.zeros((cols.r1, l0))  # Z_R1' Z_0 written out from the level pairs
    row = 0
    for k in (1, 2):
        li, l0i = np.divmod(cp.pairs[(k, 0)].keys, l0)
        dense[row + li, l0i] = cp.pairs[(k, 0)].vals[:, 0, 0]
        row += cp.terms[k].nlev
    rng = np.random.default_rng(2)
    V, W = rng.normal(size=(l0, 3)), rng.normal(size=(cols.r1, 2))
    # crossprod(getME(m, "Z")[, R1], getME(m, "Z")[, first term]) %*% V and its transpose
    np.testing.assert_allclose(cols.matvec(V), dense @ V, atol=1e-12)
    np.testing.assert_allclose(cols.rmatvec(W), dense.T @ W, atol=1e-12)
    np.testing.assert_array_equal(cols.level_counts(), (dense != 0).sum(axis=0))
    rebuilt = np.zeros_like(dense)
    for width in (1, 7, l0):  # every entry in exactly one block, in its block's levels
        rebuilt[:] = 0.0
        for a, b, parts in cols.blocks(width):
            for rows, lev, vals in parts:
                assert np.all((lev >= a) & (lev < b))
                np.add.at(rebuilt, (rows, lev), vals)
        np.testing.assert_array_equal(rebuilt, dense)  # the same Z_R1' Z_0


def test_blocked_system_keeps_nothing_per_entry():
    # the point of the route: beyond the cross-products, level-sized arrays only
    df = _crossed_data(n=4000)
    cp = ma.LinearMixedModel.from_formula(FORMULAS[0], df).deviance_function(True).cp
    system = BlockedCrossedSystem(cp)
    nnz = len(cp.pairs[(1, 0)].keys)
    level_sized = sum(t.nlev for t in cp.terms) * (cp.p + cp.k + 1)
    assert nnz > 3 * level_sized
    for name, value in vars(system).items():
        if isinstance(value, np.ndarray):
            assert value.size <= level_sized, name
    for keys, vals, _, _ in system.columns.parts:  # read in place, not copied
        assert keys is cp.pairs[(1, 0)].keys and np.shares_memory(vals, cp.pairs[(1, 0)].vals)


def test_route_choice(monkeypatch):
    df = _crossed_data()
    cp = ma.LinearMixedModel.from_formula(FORMULAS[0], df).deviance_function(True).cp
    assert not use_blocked(cp)  # small: the stored pairs (crossed.py)
    monkeypatch.setattr(cb, "BLOCKED_MIN_DENSE_C", -1)
    monkeypatch.setattr(cb, "BLOCKED_MIN_PAIRS", -1)
    assert use_blocked(cp)  # dense blocks cheaper than the sparse product's pairs
    monkeypatch.setattr(cb, "BLOCKED_FLOPS_PER_PAIR", 0.0)
    assert not use_blocked(cp)  # the sparse product cheaper ...
    monkeypatch.setattr(cb, "SPARSE_MAX_BYTES", 0)
    assert use_blocked(cp)  # ... but would not fit
    for formula in ("y ~ x + (x | a) + (1 | b)", "y ~ x + (1 | a) + (x | b)"):
        vec = ma.LinearMixedModel.from_formula(formula, df).deviance_function(True).cp
        assert not use_blocked(vec)  # vector terms: crossed.py
    assert not use_blocked(dataclasses.replace(cp, k=2))  # two responses: crossed.py


@pytest.mark.parametrize("formula", FORMULAS[:2])
def test_fit_through_the_blocked_route(request, monkeypatch, formula):
    df = _crossed_data(n=1500, seed=9)
    ref = ma.lmm(formula, df)
    assert isinstance(ref.model.deviance_function(True).system, CrossedSystem)
    request.getfixturevalue("force_blocked")
    monkeypatch.setattr(cb, "BLOCK_BYTES", 8 * 11 * 100)
    res = ma.lmm(formula, df)
    assert isinstance(res.model.deviance_function(True).system, BlockedCrossedSystem)
    assert res.converged
    assert res.reml_criterion == pytest.approx(ref.reml_criterion, rel=1e-12)  # REMLcrit(m)
    np.testing.assert_allclose(res.theta, ref.theta, rtol=1e-7)  # getME(m, "theta")
    np.testing.assert_allclose(res.fe_params, ref.fe_params, rtol=1e-8)  # fixef(m)
    np.testing.assert_allclose(res.bse_fe, ref.bse_fe, rtol=1e-8)  # sqrt(diag(vcov(m)))
    for g in ref.random_effects:
        # ranef(m)[[g]] and the conditional SDs of ranef(m, condVar = TRUE)
        np.testing.assert_allclose(res.random_effects[g], ref.random_effects[g],
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(res.random_effects_sd[g], ref.random_effects_sd[g],
                                   rtol=1e-8)
    # lmerTest's summary(m) df (central differences of devfun_vp: their noise is ~1e-6)
    np.testing.assert_allclose(res.fixed()["df"], ref.fixed()["df"], rtol=1e-5)


def test_factor_starts_from_one_at_the_same_first_template():
    # a factor whose first-term template is that of a live factor starts from that
    # factor's eliminated part (kept in its upper triangle, even after the gradient
    # inverted its lower one): the same numbers as a factor formed afresh
    df = _crossed_data(seed=12)
    dev, blocked = _deviances(FORMULAS[1], df)
    fresh = _deviances(FORMULAS[1], df)[1]
    a, b = np.array([0.8, 0.6, 0.4]), np.array([0.8, 0.3, 0.9])
    ga = blocked.gradient(a)  # inverts the factor at a in place
    source = blocked.factor(a)
    assert blocked.system.reuse_source(blocked.layout.templates(b)) is source
    assert blocked.system.reuse_source(blocked.layout.templates(a + 0.1)) is None
    vb, gb = blocked.value_and_gradient(b)  # from the factor at a (kept meanwhile)
    assert blocked._last[1].kdiag is source.kdiag
    # devfun(theta) and its gradient at b, both ways (to the last bit: same K, same steps)
    assert vb == fresh(b) and np.array_equal(gb, fresh.gradient(b))
    assert vb == pytest.approx(dev(b), rel=1e-12)  # devfun(theta) by the pairs route
    assert np.array_equal(ga, fresh.gradient(a))  # the source is unchanged by its use


def test_next_factor_formed_in_the_previous_ones_memory():
    # at 10^4 later levels a factor is 0.8 GB: ProfiledDeviance hands the previous one
    # to the layout, which forms the next in its memory -- unless someone else holds it
    blocked = _deviances(FORMULAS[0], _crossed_data(seed=3))[1]
    fresh = _deviances(FORMULAS[0], _crossed_data(seed=3))[1]
    a, b, c = np.array([0.5, 0.5]), np.array([0.6, 0.5]), np.array([0.6, 0.7])
    blocked(a)
    memory = blocked.factor(a).store  # (the array, not the factor: that is given up)
    assert blocked(b) == fresh(b)  # devfun(theta) at b, formed in a's memory
    assert np.shares_memory(blocked.factor(b).store, memory)
    assert blocked(c) == fresh(c)  # at c from b's K, in place
    assert np.shares_memory(blocked.factor(c).store, memory)
    held = blocked.factor(c)
    value = held.ldL2
    assert blocked(a) == fresh(a)  # devfun(theta) at a: not in held's memory
    assert not np.shares_memory(blocked.factor(a).store, held.store)
    assert held.ldL2 == value and held.store is not None and held.solution() is not None


def test_points_sharing_the_first_template_are_evaluated_together(request, monkeypatch):
    # lmerTest's df (central differences of devfun_vp over theta: six points for two
    # parameters) and the Newton start's value Hessian evaluate the points that keep the
    # first term's theta together, so that they start from one factor
    from mixedanova.likelihood.optimizer import newton_descent

    request.getfixturevalue("force_blocked")
    # more than DENSE_MAX levels: the df from differences of factors, not dense algebra
    res = ma.lmm(FORMULAS[0], _crossed_data(n=3000, seed=9, na=220, nb=30))
    calls = {"factor": 0, "full": 0}
    factor, eliminated = BlockedCrossedSystem.factor, BlockedCrossedSystem._eliminated

    live = []

    def count(name, fun):
        def counted(self, *args, **kwargs):
            calls[name] += 1
            if name == "factor":  # factors holding their memory beyond a spare one
                spare = kwargs.get("spare")
                live.append(sum(ref() is not None and ref() is not spare
                                and ref().store is not None for ref in self._made))
            return fun(self, *args, **kwargs)
        return counted

    monkeypatch.setattr(BlockedCrossedSystem, "factor", count("factor", factor))
    monkeypatch.setattr(BlockedCrossedSystem, "_eliminated", count("full", eliminated))
    res.fixed()  # summary(m)'s Satterthwaite df
    assert calls == {"factor": 6, "full": 2}
    assert max(live) == 1  # the fit's factor only: two r x r arrays at most
    calls.update(factor=0, full=0)
    dev = res.model.deviance_function(True)
    newton_descent(dev, np.array([0.5, 0.5]))  # a start away from the optimum
    # one full factorization at the start and one for the Hessian's three points, then
    # one per step
    assert calls["factor"] - calls["full"] >= 2
