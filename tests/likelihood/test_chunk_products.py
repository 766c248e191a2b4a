"""One-shot chunk cross-products and in-memory fits summed in chunks (issue 19).

:func:`~mixedanova.likelihood.chunk_products.chunk_cross_products` (the Dask
pass's per-partition work) must give the cross-products of the refreshable
pattern and of the dense matrices (R: ``crossprod(Z, W %*% Z)``,
``crossprod(Z, W %*% X)``); :func:`sum_cross_products` the sum of the chunks
added two at a time; and an in-memory ``ma.lmm`` whose rows are summed in chunks
(``criterion.CHUNK_ROWS`` small) the fit of one piece at the issue's tolerances:
criterion 1e-10 relative, theta, fixed effects, SEs and BLUPs 1e-8, and with the
response shifted by 1e8 SDs 1e-9 and 1e-6.  The expected values are the
package's one-piece fits (matched against lme4 in tests/test_lmer_reference.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedanova as ma
from mixedanova.likelihood import chunk_products, criterion
from mixedanova.likelihood.blocked import TermData
from mixedanova.likelihood.chunk_products import (accumulate_rows, chunk_cross_products,
                                                  sum_cross_products)
from mixedanova.likelihood.crossprod import CrossProductPattern


def _rows(seed: int, n: int, q1: int, slope2: bool, weighted: bool):
    rng = np.random.default_rng(seed)
    n1, n2 = 37, 211
    c1 = rng.integers(0, n1, n)
    c2 = rng.integers(0, n2, n)
    z1 = np.ones((n, 1)) if q1 == 1 else np.column_stack([np.ones(n), rng.normal(size=n)])
    z2 = rng.normal(size=(n, 1)) if slope2 else np.ones((n, 1))
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = X @ [1.0, 0.5] + rng.normal(size=n1)[c1] + rng.normal(size=n2)[c2] + rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    return [TermData(c2, z2, n2), TermData(c1, z1, n1)], X, y, w


SHAPES = [(1, False, False), (2, False, False), (1, True, False), (1, False, True),
          (2, True, True)]


def _dense(blk, ni: int, nj: int, qi: int, qj: int) -> np.ndarray:
    """A pair block as the dense ``(ni qi) x (nj qj)`` matrix (level-major)."""
    out = np.zeros((ni * qi, nj * qj))
    li, lj = np.divmod(blk.keys, nj)
    for m, (a, b) in enumerate(zip(li, lj)):
        out[a * qi:(a + 1) * qi, b * qj:(b + 1) * qj] = blk.vals[m]
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_chunk_cross_products_equal_the_pattern_and_the_dense_products(shape):
    terms, X, y, w = _rows(1, 1500, *shape)
    got = chunk_cross_products(terms, X, y, weights=w)
    ref = CrossProductPattern(terms, len(y)).evaluate([t.zraw for t in terms], X, y,
                                                      weights=w, standardize=False)
    sw = np.ones(len(y)) if w is None else np.sqrt(w)
    Z = [t.sparse_z().toarray() * sw[:, None] for t in terms]
    for (i, j), blk in got.pairs.items():
        # the same level pairs as the pattern, values of crossprod(Z_i, W %*% Z_j)
        np.testing.assert_array_equal(blk.keys, ref.pairs[(i, j)].keys)
        np.testing.assert_allclose(blk.vals, ref.pairs[(i, j)].vals, rtol=1e-13, atol=1e-12)
        dense = _dense(blk, terms[i].nlev, terms[j].nlev, terms[i].q, terms[j].q)
        np.testing.assert_allclose(dense, Z[i].T @ Z[j], rtol=1e-12, atol=1e-10)
    XYw = np.column_stack([X, y - X @ got.shift[:, 0]]) * sw[:, None]
    for k, a in enumerate(got.zxy):
        # crossprod(Z_k, W %*% cbind(X, y - X %*% shift)) level by level
        np.testing.assert_allclose(got.zxy_columns(k), Z[k].T @ XYw, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(a, ref.zxy[k], rtol=1e-12, atol=1e-9)
    # crossprod(cbind(X, y - X %*% shift)) with weights; the chunk's shift as the pattern's
    np.testing.assert_allclose(got.xy, XYw.T @ XYw, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(got.shift, ref.shift)
    for s, t in zip(got.stats, ref.stats):  # colMeans / column SDs of each term's Z
        np.testing.assert_allclose(s.mean, t.mean, rtol=1e-13)
        np.testing.assert_allclose(s.std, t.std, rtol=1e-12)
        np.testing.assert_array_equal(s.ones, t.ones)


@pytest.mark.parametrize("shape", SHAPES)
def test_sum_of_many_chunks_equals_pairwise_sums_and_the_union(shape):
    terms, X, y, w = _rows(2, 2000, *shape)
    rng = np.random.default_rng(3)
    cuts = np.sort(rng.choice(np.arange(1, len(y)), 11, replace=False))
    parts = []
    for r in np.split(np.arange(len(y)), cuts):
        parts.append(chunk_cross_products([TermData(t.codes[r], t.zraw[r], t.nlev)
                                           for t in terms], X[r], y[r],
                                          None if w is None else w[r]))
    pairwise = parts[0]
    for p in parts[1:]:
        pairwise = pairwise + p
    many = sum_cross_products(parts)
    union = chunk_cross_products(terms, X, y, weights=w)
    a, b, c = many.standardized(), pairwise.standardized(), union.standardized()
    assert a.n == c.n == len(y)
    for key in c.pairs:  # crossprod(Z_i, W %*% Z_j) of all rows
        np.testing.assert_array_equal(a.pairs[key].keys, c.pairs[key].keys)
        np.testing.assert_allclose(a.pairs[key].vals, c.pairs[key].vals, rtol=1e-12,
                                   atol=1e-11)
        np.testing.assert_allclose(a.pairs[key].vals, b.pairs[key].vals, rtol=1e-13,
                                   atol=1e-12)
    np.testing.assert_allclose(a.xy, c.xy, rtol=1e-10, atol=1e-9)
    for u, v in zip(a.zxy, c.zxy):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(a.scale, c.scale, rtol=1e-12)  # sigma of lm(y ~ X, weights)


def _crossed(seed: int = 4, n: int = 1500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 60, n)
    b = rng.integers(0, 25, n)
    x = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    off = rng.normal(size=n)
    y = (1 + 0.5 * x + rng.normal(size=60)[a] + 0.4 * rng.normal(size=60)[a] * x
         + 0.7 * rng.normal(size=25)[b] + off + rng.normal(size=n) / np.sqrt(w))
    return pd.DataFrame({"y": y, "x": x, "a": a, "b": b, "w": w, "off": off})


CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", {}),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin", {}),
    "crossed_slopes_weights_offset": ("y ~ x + (x | a) + (1 | b)", None,
                                      {"weights": "w", "offset": "off"}),
}


def _blups(res) -> np.ndarray:
    return np.concatenate([res.random_effects[g].sort_index().to_numpy().ravel()
                           for g in sorted(res.random_effects)])


def _compare(r1, r0, crit_rel: float, tol: float) -> None:
    assert r1.nobs == r0.nobs
    # REMLcrit(m), getME(m, "theta"), fixef(m), sqrt(diag(vcov(m))), sigma(m), ranef(m)
    assert r1.reml_criterion == pytest.approx(r0.reml_criterion, rel=crit_rel)
    np.testing.assert_allclose(r1.theta, r0.theta, rtol=tol, atol=tol)
    np.testing.assert_allclose(r1.fe_params.to_numpy(), r0.fe_params.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)
    np.testing.assert_allclose(r1.bse_fe.to_numpy(), r0.bse_fe.to_numpy(), rtol=tol,
                               atol=tol * r0.sigma)
    assert r1.sigma == pytest.approx(r0.sigma, rel=tol)
    np.testing.assert_allclose(_blups(r1), _blups(r0), rtol=tol, atol=tol * r0.sigma)


def _case(name: str, sleepstudy, penicillin) -> tuple[str, pd.DataFrame, dict]:
    formula, data, kw = CASES[name]
    df = {"sleepstudy": sleepstudy, "penicillin": penicillin}.get(data)
    df = _crossed() if df is None else df
    # rows shuffled, so that every chunk mixes the levels
    return formula, df.sample(frac=1.0, random_state=5).reset_index(drop=True), kw


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("chunk", [7, 50, 1000])
def test_in_memory_fit_summed_in_chunks_equals_one_piece(name, chunk, monkeypatch,
                                                         sleepstudy, penicillin):
    formula, df, kw = _case(name, sleepstudy, penicillin)
    r0 = ma.lmm(formula, df, **kw)
    monkeypatch.setattr(criterion, "CHUNK_ROWS", chunk)
    calls = []

    def counted(terms, X, y, chunk_rows):
        calls.append(chunk_rows)
        return accumulate_rows(terms, X, y, chunk_rows)

    monkeypatch.setattr(chunk_products, "accumulate_rows", counted)
    r1 = ma.lmm(formula, df, **kw)
    # the rows were summed in chunks exactly when there are more than CHUNK_ROWS
    assert calls == ([chunk] if len(df) > chunk else [])
    _compare(r1, r0, 1e-10, 1e-8)


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_memory_chunks_with_a_response_shifted_by_1e8_sds(name, monkeypatch, sleepstudy,
                                                             penicillin):
    formula, df, kw = _case(name, sleepstudy, penicillin)
    yname = formula.split("~")[0].strip()
    df[yname] = df[yname] + 1e8 * float(df[yname].std())
    r0 = ma.lmm(formula, df, **kw)
    monkeypatch.setattr(criterion, "CHUNK_ROWS", 13)
    r1 = ma.lmm(formula, df, **kw)
    _compare(r1, r0, 1e-9, 1e-6)
