"""Level codes of a chunk's values (design.chunked.codes_among, level_codes).

The expected codes are written out by hand: R's ``match(x, levels) - 1`` with
``NA`` as -1, for character, numeric and factor columns whose values include
levels the codebook does not hold (the Dask pass's "unseen level" check reads
the -1) and factors with unused levels.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from mixedanova.design.chunked import codes_among, level_codes


def test_codes_of_values_outside_the_levels_without_a_pandas_warning():
    cases = [
        # match(c("x", "a", NA, "q"), c("a", "x")) - 1
        (pd.Series(["x", "a", None, "q"]), pd.Index(["a", "x"]), [1, 0, -1, -1]),
        # match(c(1, 2, NA, 7), c(2, 1)) - 1
        (pd.Series([1.0, 2.0, np.nan, 7.0]), pd.Index([2.0, 1.0]), [1, 0, -1, -1]),
        # a factor with an unused level "c" and a value "z" not among the levels
        (pd.Series(pd.Categorical(["a", "b", "a", None, "z"],
                                  categories=["a", "b", "c", "z"])),
         pd.Index(["a", "b"]), [0, 1, 0, -1, -1]),
        # integer identifiers as a run of consecutive levels: match(c(5, 3, 9), 3:6) - 1
        (pd.Series([5, 3, 9]), pd.Index([3, 4, 5, 6]), [2, 0, -1]),
    ]
    for values, levels, expected in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            np.testing.assert_array_equal(level_codes(values, levels), expected)
            np.testing.assert_array_equal(codes_among(values, levels), expected)
