"""Chunk sums of ``Z_i' W Z_j`` that add without merging (likelihood.pair_sums).

Each chunk's :class:`~mixedanova.likelihood.pair_sums.PairSum` (dense counts, or
the rows' keys grouped by bucket) summed in a tree and merged once at the end
must give ``crossprod(Z_i, W %*% Z_j)`` of all rows: the level pairs that share a
row (the pattern, kept even where a sum is 0) in sorted order and their summed
``q_i x q_j`` blocks.  The expected values are scipy sparse products of the
terms' model matrices (``Matrix::crossprod`` in R), independent of the code
under test; counts must be exact.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mixedanova.likelihood import pair_sums
from mixedanova.likelihood.crossprod import PairBlock
from mixedanova.likelihood.pair_sums import KeySpace, PairSum


def _z(codes: np.ndarray, z: np.ndarray, nlev: int) -> sp.csr_matrix:
    """The ``n x (nlev q)`` model matrix of a term (level-major columns)."""
    n, q = z.shape
    cols = (codes[:, None] * q + np.arange(q)[None, :]).ravel()
    return sp.csr_matrix((z.ravel(), (np.repeat(np.arange(n), q), cols)),
                         shape=(n, nlev * q))


def _chunks(rng, sizes, ni, nj, qi, qj, values, skew):
    """Per chunk: level codes of the two terms and their values (None: all ones)."""
    out = []
    for m, with_vals in zip(sizes, values):
        ci = rng.integers(0, ni, m)
        cj = rng.integers(0, nj, m)
        if skew:  # half the rows on a few popular pairs: long buckets, repeated keys
            hot = rng.random(m) < 0.5
            ci[hot] = rng.integers(0, min(ni, 3), hot.sum())
            cj[hot] = rng.integers(0, min(nj, 3), hot.sum())
        zi = rng.normal(size=(m, qi)) if with_vals else np.ones((m, qi))
        zj = rng.normal(size=(m, qj)) if with_vals else np.ones((m, qj))
        out.append((ci, cj, zi, zj, with_vals))
    return out


def _sum(chunks, ni, nj, qi, qj, split: int = 3) -> PairBlock:
    space = KeySpace(ni * nj)
    parts = []
    for ci, cj, zi, zj, with_vals in chunks:
        keys = ci.astype(np.int64) * nj + cj
        vals = zi[:, :, None] * zj[:, None, :] if with_vals else None
        parts.append(PairSum.of_keys(space, keys.astype(space.key_dtype), vals, (qi, qj)))
    while len(parts) > 1:  # a tree sum, `split` at a time
        parts = [PairSum.total(parts[i:i + split]) for i in range(0, len(parts), split)]
    return parts[0].block()


def _check(blk: PairBlock, chunks, ni, nj, qi, qj) -> None:
    ci = np.concatenate([c[0] for c in chunks])
    cj = np.concatenate([c[1] for c in chunks])
    # the pattern: the distinct level pairs that share a row, sorted
    keys = np.unique(ci.astype(np.int64) * nj + cj)
    np.testing.assert_array_equal(blk.keys, keys)
    assert blk.keys.dtype == np.int64 and blk.vals.dtype == np.float64
    assert blk.vals.shape == (len(keys), qi, qj)
    Zi = sp.vstack([_z(c[0], c[2], ni) for c in chunks]).tocsc()
    Zj = sp.vstack([_z(c[1], c[3], nj) for c in chunks]).tocsc()
    ref = (Zi.T @ Zj).tocsr()  # crossprod(Z_i, Z_j)
    li, lj = np.divmod(keys, nj)
    rows = (li[:, None] * qi + np.arange(qi)[None, :])
    cols = (lj[:, None] * qj + np.arange(qj)[None, :])
    R = np.repeat(rows, qj, axis=1).ravel()  # cell (a, b) of each block
    C = np.tile(cols, (1, qi)).ravel()
    got = np.asarray(ref[R, C]).reshape(len(keys), qi, qj)
    if not any(c[4] for c in chunks):  # counts: exact integers
        np.testing.assert_array_equal(blk.vals, got)
    else:
        np.testing.assert_allclose(blk.vals, got, rtol=1e-12, atol=1e-12)


CASES = [
    # levels, chunk sizes: small key space (dense), many levels (bucketed runs),
    # more than 2**32 pairs (64-bit keys, 32-bit local keys)
    ((7, 5), [40, 3, 50]),
    ((300, 200), [5, 4000, 9000, 0, 2500]),
    ((20000, 2000), [30000, 20000, 1, 25000]),
    ((100000, 60000), [20000, 15000, 30000]),
]


@pytest.mark.parametrize("levels,sizes", CASES)
@pytest.mark.parametrize("q", [(1, 1), (2, 1), (2, 3)])
@pytest.mark.parametrize("values", ["none", "all", "some"])
@pytest.mark.parametrize("skew", [False, True])
def test_tree_sum_equals_the_cross_product_of_all_rows(levels, sizes, q, values, skew):
    rng = np.random.default_rng(len(sizes) + 10 * q[0] + q[1])
    ni, nj = levels
    flags = {"none": [False] * len(sizes), "all": [True] * len(sizes),
             "some": [k % 2 == 0 for k in range(len(sizes))]}[values]
    chunks = _chunks(rng, sizes, ni, nj, *q, flags, skew)
    # crossprod(Z_i, Z_j) of all chunks' rows
    _check(_sum(chunks, ni, nj, *q), chunks, ni, nj, *q)


@pytest.mark.parametrize("values", ["none", "all", "some"])
@pytest.mark.parametrize("skew", [False, True])
def test_runs_merged_in_groups_beyond_the_memory_limit(monkeypatch, values, skew):
    # tiny limits: runs merged into one at every addition (counts / blocks carried),
    # several groups of buckets, long buckets sorted on their own
    monkeypatch.setattr(pair_sums, "MERGE_BYTES", 10_000)
    monkeypatch.setattr(pair_sums, "_GROUP_ENTRIES", 5_000)
    monkeypatch.setattr(pair_sums, "_MAX_ROW", 16)
    rng = np.random.default_rng(7)
    sizes = [30000, 20000, 7, 10000, 30001]
    flags = {"none": [False] * 5, "all": [True] * 5, "some": [True, False] * 2 + [True]}
    chunks = _chunks(rng, sizes, 20000, 2000, 2, 1, flags[values], skew)
    for split in (2, 5):
        # crossprod(Z_i, Z_j) of all chunks' rows
        _check(_sum(chunks, 20000, 2000, 2, 1, split), chunks, 20000, 2000, 2, 1)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("values", ["none", "all"])
@pytest.mark.parametrize("skew", [False, True])
def test_final_merge_in_threads(monkeypatch, threads, values, skew):
    # the final merge split into consecutive shares of bucket groups, merged in
    # threads and moved down into place: the same block as crossprod(Z_i, Z_j)
    monkeypatch.setattr(pair_sums, "_PARALLEL_ENTRIES", 0)
    monkeypatch.setattr(pair_sums, "MAX_MERGE_THREADS", threads)
    monkeypatch.setattr(pair_sums, "_GROUP_ENTRIES", 3_000)
    monkeypatch.setattr(pair_sums, "_MAX_ROW", 16)
    monkeypatch.setattr(pair_sums, "merge_threads", lambda: threads)
    rng = np.random.default_rng(11)
    sizes = [30000, 20000, 7, 10000]
    chunks = _chunks(rng, sizes, 20000, 2000, 2, 1, [values == "all"] * 4, skew)
    # crossprod(Z_i, Z_j) of all chunks' rows
    _check(_sum(chunks, 20000, 2000, 2, 1), chunks, 20000, 2000, 2, 1)


def test_a_term_with_itself_keeps_its_block_keys():
    # Z_k' Z_k: the key of level l is l * (nlev + 1) (the diagonal of the level pairs)
    rng = np.random.default_rng(3)
    nlev = 50000
    chunks = [rng.integers(0, nlev, m) for m in (2000, 70000, 10)]
    space = KeySpace(nlev, nlev + 1)
    blk = PairSum.total([PairSum.of_keys(space, c, None, (1, 1)) for c in chunks]).block()
    Z = sp.vstack([_z(c, np.ones((len(c), 1)), nlev) for c in chunks])
    ref = np.asarray(Z.sum(axis=0)).ravel()  # diag(crossprod(Z_k))
    present = np.flatnonzero(ref)
    np.testing.assert_array_equal(blk.keys, present * (nlev + 1))
    np.testing.assert_array_equal(blk.vals[:, 0, 0], ref[present])


def test_sums_of_blocks_and_sums_mix():
    # a PairBlock (a chunk summed by the refreshable pattern) added to a PairSum
    rng = np.random.default_rng(5)
    ni, nj = 3000, 400
    chunks = _chunks(rng, [5000, 6000], ni, nj, 1, 1, [True, False], False)
    space = KeySpace(ni * nj)
    ci, cj, zi, zj, _ = chunks[0]
    keys = ci.astype(np.int64) * nj + cj
    vals = zi[:, :, None] * zj[:, None, :]
    blk0 = PairSum.of_keys(space, keys.astype(space.key_dtype), vals, (1, 1)).block()
    ci, cj, _, _, _ = chunks[1]
    s1 = PairSum.of_keys(space, (ci.astype(np.int64) * nj + cj).astype(space.key_dtype),
                         None, (1, 1))
    for total in (blk0 + s1, s1 + blk0, PairSum.total([blk0, s1])):
        # crossprod(Z_i, Z_j) of both chunks
        _check(total.block(), chunks, ni, nj, 1, 1)
