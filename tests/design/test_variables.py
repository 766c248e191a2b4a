"""Integer level codes of the design's variables (:mod:`mixedanova.design.variables`)."""
from __future__ import annotations

import numpy as np
import pytest

from mixedanova.design.variables import row_codes


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ncol", [1, 2, 3])
def test_row_codes_equal_numpy_unique_rows(seed, ncol):
    # the grouping factor's levels of an interaction g1:g2 (lme4's factor(g1:g2),
    # levels in lexicographic order): np.unique(keys, axis=0, return_inverse=True)
    rng = np.random.default_rng(seed)
    keys = rng.integers(-1, rng.integers(2, 40), (rng.integers(1, 400), ncol))
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    n, codes = row_codes(keys)
    assert n == len(uniq)
    assert np.array_equal(codes, inverse.ravel())


def test_row_codes_wide_ranges_fall_back():
    # columns whose ranges cannot be packed into one integer: the same answer
    keys = np.array([[0, 2 ** 40], [2 ** 40, 0], [0, 2 ** 40], [5, 5]], dtype=np.int64)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    n, codes = row_codes(keys)
    assert n == len(uniq) and np.array_equal(codes, inverse.ravel())
    assert row_codes(np.zeros((0, 2), dtype=np.int64))[0] == 0
