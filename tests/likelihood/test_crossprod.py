"""Cross-products that add up chunk by chunk (issue 17).

The engine's only input after set-up is a
:class:`~mixedanova.likelihood.crossprod.CrossProducts`.  These tests check that
the data split into chunks of random sizes (rows shuffled) give the same
objective and optimum as one piece, also for a response shifted by 1e8 SDs;
that a k-column response block gives k criteria equal to k separate
evaluations; and that a refresh with new weights equals a rebuild.  The
comparisons are between the package's own fits of the same model on the same
rows, so the expected values are the one-piece fits (lme4 is matched by those
elsewhere: tests/test_lmer_reference.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.likelihood.blocked import TermData
from mixedanova.likelihood.criterion import ProfiledDeviance
from mixedanova.likelihood.crossprod import CrossProductPattern, CrossProducts, cross_products
from mixedanova.likelihood.optimizer import optimize_theta


def _data(seed: int = 3, n: int = 1200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 40, n)
    b = rng.integers(0, 15, n)
    df = pd.DataFrame({"a": a, "b": b, "c": a // 4, "x": rng.normal(size=n),
                       "w": rng.uniform(0.5, 2.0, n), "off": rng.normal(size=n)})
    df["y"] = (1 + 0.5 * df.x + rng.normal(size=40)[a] + 0.7 * rng.normal(size=15)[b]
               + 0.4 * rng.normal(size=40)[a] * df.x + rng.normal(size=10)[df.c]
               + rng.normal(size=n))
    return df


MODELS = {
    "nested": ("y ~ x + (1 | c/a)", {}),
    "crossed": ("y ~ x + (1 | a) + (1 | b)", {}),
    "slopes": ("y ~ x + (x | a) + (1 | b)", {}),
    "weighted": ("y ~ x + (1 | a) + (1 | b)", {"weights": "w"}),
    "offset": ("y ~ x + (1 | c/a)", {"offset": "off"}),
}


def _pieces(model: ma.LinearMixedModel):
    """The engine's rows of a design: terms, X, response less offset, weights."""
    d = model.design
    terms = [TermData(b.codes, b.zraw, b.nlev) for b in d.blocks]
    w = d.weights if d.has_weights else None
    return terms, d.X, d.y - d.offset_values, w


def _chunked(model: ma.LinearMixedModel, nchunks: int, seed: int,
             shift: float = 0.0) -> CrossProducts:
    """Sum of the cross-products of ``nchunks`` chunks of random sizes of shuffled rows."""
    terms, X, y, w = _pieces(model)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    cuts = np.sort(rng.choice(np.arange(1, len(y)), nchunks - 1, replace=False))
    total = None
    for idx in np.split(perm, cuts):
        sub = [TermData(t.codes[idx], t.zraw[idx], t.nlev) for t in terms]
        part = CrossProductPattern(sub, len(idx)).evaluate(
            [t.zraw for t in sub], X[idx], y[idx] + shift,
            None if w is None else w[idx], standardize=False)
        total = part if total is None else total + part
    return total


def _one_piece(model: ma.LinearMixedModel, shift: float = 0.0) -> CrossProducts:
    terms, X, y, w = _pieces(model)
    return cross_products(terms, X, y + shift, weights=w)


def _fit(cp: CrossProducts, model, reml: bool = True):
    dev = ProfiledDeviance(cp, model.design.theta_layout(), reml)
    opt = optimize_theta(dev)
    return opt.theta, dev(opt.theta)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("nchunks", [1, 7, 100])
def test_chunks_give_the_one_piece_fit(name, nchunks):
    formula, kw = MODELS[name]
    model = ma.LinearMixedModel.from_formula(formula, _data(), **kw)
    # the one-piece objective through this path is the lmm fit's (no weights constant)
    full = model.fit(warn=False)
    theta1, crit1 = _fit(_one_piece(model), model)
    assert crit1 + model.weights_constant() == pytest.approx(full.reml_criterion, rel=1e-12)
    thetak, critk = _fit(_chunked(model, nchunks, seed=nchunks), model)
    assert critk == pytest.approx(crit1, rel=1e-12)
    np.testing.assert_allclose(thetak, theta1, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("nchunks", [7, 100])
def test_chunks_with_a_response_shifted_by_1e8_sds(name, nchunks):
    formula, kw = MODELS[name]
    model = ma.LinearMixedModel.from_formula(formula, _data(), **kw)
    sd = float(np.std(model.design.y))
    shift = 1e8 * sd
    theta1, crit1 = _fit(_one_piece(model, shift), model)
    thetak, critk = _fit(_chunked(model, nchunks, seed=nchunks + 1, shift=shift), model)
    assert critk == pytest.approx(crit1, rel=1e-9)
    np.testing.assert_allclose(thetak, theta1, rtol=1e-6, atol=1e-6)
    # and the unshifted fit: only the constant 2 nu log(s) may move, never theta
    theta0, _ = _fit(_one_piece(model), model)
    np.testing.assert_allclose(thetak, theta0, rtol=1e-6, atol=1e-6)


def test_sum_of_two_chunks_equals_the_union():
    model = ma.LinearMixedModel.from_formula("y ~ x + (x | a) + (1 | b)", _data())
    terms, X, y, w = _pieces(model)
    idx = np.arange(len(y))
    parts = []
    for sel in (idx[: len(y) // 3], idx[len(y) // 3:]):
        sub = [TermData(t.codes[sel], t.zraw[sel], t.nlev) for t in terms]
        parts.append(CrossProductPattern(sub, len(sel)).evaluate(
            [t.zraw for t in sub], X[sel], y[sel], standardize=False))
    union = CrossProductPattern(terms, len(y)).evaluate([t.zraw for t in terms], X, y,
                                                        standardize=False)
    a = (parts[0] + parts[1]).standardized()
    b = union.standardized()
    assert a.n == b.n and a.pairs.keys() == b.pairs.keys()
    for key in a.pairs:
        np.testing.assert_array_equal(a.pairs[key].keys, b.pairs[key].keys)
        np.testing.assert_allclose(a.pairs[key].vals, b.pairs[key].vals, rtol=1e-12,
                                   atol=1e-12)
    np.testing.assert_allclose(a.xy, b.xy, rtol=1e-10, atol=1e-10)
    for u, v in zip(a.zxy, b.zxy):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.shift, b.shift, rtol=1e-12)
    np.testing.assert_allclose(a.scale, b.scale, rtol=1e-12)
    for s, t in zip(a.stats, b.stats):
        np.testing.assert_allclose(s.mean, t.mean, rtol=1e-12)
        np.testing.assert_allclose(s.std, t.std, rtol=1e-12)
        np.testing.assert_allclose(s.rms, t.rms, rtol=1e-12)


@pytest.mark.parametrize("name", ["nested", "crossed", "slopes", "weighted"])
@pytest.mark.parametrize("reml", [True, False])
def test_k_column_response_block(name, reml):
    # one evaluation of a k-column block gives the k criteria of k separate evaluations
    formula, kw = MODELS[name]
    model = ma.LinearMixedModel.from_formula(formula, _data(), **kw)
    terms, X, y, w = _pieces(model)
    rng = np.random.default_rng(5)
    Y = np.column_stack([y, y + rng.normal(size=len(y)), 3.0 * rng.normal(size=len(y)),
                         1e6 + y])
    layout = model.design.theta_layout()
    block = ProfiledDeviance(cross_products(terms, X, Y, weights=w), layout, reml)
    single = [ProfiledDeviance(cross_products(terms, X, Y[:, j], weights=w), layout, reml)
              for j in range(Y.shape[1])]
    for theta in (layout.start(), layout.start() * 0.6 + 0.2 * (layout.lower == 0)):
        crit = block.criteria(theta)
        expected = np.array([dev(theta) for dev in single])
        np.testing.assert_allclose(crit, expected, rtol=1e-12)
    # one column of the block is the one-column object
    one = ProfiledDeviance(cross_products(terms, X, Y, weights=w).select(2), layout, reml)
    assert one(layout.start()) == pytest.approx(single[2](layout.start()), rel=1e-12)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | c/a)", "y ~ x + (1 | a) + (1 | b)",
                                     "y ~ x + (x | a) + (1 | b)", "y ~ x + (1 | b) + (x | a)"])
def test_refresh_with_new_weights_equals_a_rebuild(formula):
    model = ma.LinearMixedModel.from_formula(formula, _data())
    terms, X, y, _ = _pieces(model)
    layout = model.design.theta_layout()
    pattern = CrossProductPattern(terms, len(y))
    zraws = [t.zraw for t in terms]
    dev = ProfiledDeviance(pattern.evaluate(zraws, X, y), layout)
    theta = layout.start() * 0.7 + 0.1 * (layout.lower == 0)
    rng = np.random.default_rng(9)
    for _ in range(3):
        w = rng.uniform(0.2, 3.0, len(y))
        cp = pattern.evaluate(zraws, X, y, weights=w)  # numeric only: same pattern
        dev.system.refresh(cp.standardized())
        dev.cp, dev._last = cp.standardized(), None
        rebuilt = ProfiledDeviance(cross_products(terms, X, y, weights=w), layout)
        f_ref, f_new = rebuilt.factor(theta), dev.factor(theta)
        assert f_new.ldL2 == pytest.approx(f_ref.ldL2, rel=1e-12)
        assert f_new.ldRX2 == pytest.approx(f_ref.ldRX2, rel=1e-12)
        assert f_new.pwrss_std == pytest.approx(f_ref.pwrss_std, rel=1e-12)
        np.testing.assert_allclose(np.concatenate(f_new.solution()),
                                   np.concatenate(f_ref.solution()), rtol=1e-10, atol=1e-10)


def test_permuted_cross_products_keep_every_block():
    model = ma.LinearMixedModel.from_formula("y ~ x + (x | a) + (1 | b) + (1 | c)", _data())
    terms, X, y, _ = _pieces(model)
    cp = cross_products(terms, X, y)
    back = cp.permuted([2, 0, 1]).permuted([1, 2, 0])
    for key, blk in cp.pairs.items():
        np.testing.assert_array_equal(back.pairs[key].keys, blk.keys)
        np.testing.assert_array_equal(back.pairs[key].vals, blk.vals)
