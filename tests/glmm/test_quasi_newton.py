"""The seeded BFGS of the Laplace fit (``mixedanova.glmm.quasi_newton``): after a
rejected trial the next one is the minimum of the cubic through the values and
slopes at both ends (Nocedal & Wright, eq. 3.59), kept within a tenth and a half
of the rejected step."""
from __future__ import annotations

import numpy as np
import pytest

from mixedanova.glmm.quasi_newton import backtrack_step


@pytest.mark.parametrize("a,b", [(3.0, 40.0), (20.0, 5.0), (1.0, 30.0)])
def test_backtrack_is_the_minimum_of_the_cubic(a, b):
    # phi(t) = f0 + d0 t + a t^2 + b t^3: its local minimum solves
    # d0 + 2 a t + 3 b t^2 = 0 (the root where phi'' > 0)
    f0, d0, t = 10.0, -2.0, 1.0
    ft = f0 + d0 * t + a * t ** 2 + b * t ** 3
    dt = d0 + 2 * a * t + 3 * b * t ** 2
    tmin = (-2 * a + np.sqrt(4 * a * a - 12 * b * d0)) / (6 * b)
    got = backtrack_step(t, f0, d0, ft, dt)
    assert got == pytest.approx(min(max(tmin, 0.1 * t), 0.5 * t), rel=1e-12)


def test_backtrack_without_a_slope_or_a_value():
    # the quadratic through f0, d0 and ft: minimum -d0 t^2 / (2 (ft - f0 - d0 t))
    assert backtrack_step(1.0, 0.0, -1.0, 4.0, np.nan) == pytest.approx(0.1)
    assert backtrack_step(1.0, 0.0, -1.0, 0.5, np.nan) == pytest.approx(1.0 / 3.0)
    assert backtrack_step(1.0, 0.0, -1.0, np.inf, np.nan) == 0.5  # halve
