"""Working coordinates for the optimizer: random-effects columns centered and scaled.

A term ``(1 + x | g)`` with ``x`` far from 0 or on an odd scale has a badly
conditioned ``theta``: the intercept (at ``x = 0``, far from the data) and the
slope are almost collinear, and a local optimizer stops at false optima.  The
same model is ``(1 + x* | g)`` with ``x* = (x - m) / s``: ``Z* = Z C`` with ``C``
upper triangular, and the covariances map exactly,
``Sigma = C Sigma* C'``.  The optimizer works on ``Z*`` and maps its optimum
back to lme4's ``theta`` (a Cholesky factor of ``Sigma``); the objective is
the same function of the covariance, so nothing else changes.
"""
from __future__ import annotations

import numpy as np

from .boundary import psd_cholesky
from .criterion import ProfiledDeviance
from .crossprod import ColumnStats

__all__ = ["WorkingCoordinates"]


_OFF_CENTER = 2.0     # |mean| / SD beyond which a column is centered
_OFF_SCALE = 10.0     # SD (or RMS) beyond this factor of 1 is rescaled


def _column_map(st: ColumnStats) -> np.ndarray:
    """``C`` with ``zraw @ C`` centered (if the term has an intercept column) and
    scaled to unit SD (unit root mean square without an intercept), or the
    identity when every column is already within ``_OFF_CENTER`` SDs of 0 and
    on a scale within a factor ``_OFF_SCALE`` of 1 (the reference designs: then
    the second set of cross-products is not worth forming)."""
    q = len(st.ones)
    C = np.eye(q)
    ones = [j for j in range(q) if st.ones[j]]
    i0 = ones[0] if ones else None
    needed = False
    for j in range(q):
        if j == i0:
            continue
        if i0 is not None:
            m, s = float(st.mean[j]), float(st.std[j])
        else:
            m, s = 0.0, float(np.sqrt(st.sumsq[j] / st.count))
        if not s > 0.0:
            continue
        needed |= abs(m) > _OFF_CENTER * s or not 1.0 / _OFF_SCALE <= s <= _OFF_SCALE
        C[j, j] = 1.0 / s
        if i0 is not None:
            C[i0, j] = -m / s
    return C if needed else np.eye(q)


class WorkingCoordinates:
    """The deviance in working coordinates and the maps of ``theta`` both ways.

    Parameters
    ----------
    dev : ProfiledDeviance
        The objective in lme4's coordinates.

    Attributes
    ----------
    dev : ProfiledDeviance
        The objective in working coordinates (``dev`` itself when no column
        needs centering or scaling).
    maps : list of numpy.ndarray
        Per term, ``C`` with ``Z* = Z C``.
    """

    def __init__(self, dev: ProfiledDeviance) -> None:
        self.raw = dev
        self.maps = [_column_map(st) for st in dev.cp.stats]
        self.identity = all(np.array_equal(C, np.eye(len(C))) for C in self.maps)
        if self.identity:
            self.dev = dev
        else:
            self.dev = dev.transformed(self.maps)

    def _map(self, theta: np.ndarray, to_raw: bool) -> np.ndarray:
        if self.identity:
            return np.asarray(theta, dtype=float).copy()
        layout = self.raw.layout
        out = np.asarray(theta, dtype=float).copy()
        for k, (T, C) in enumerate(zip(layout.templates(out), self.maps)):
            M = C @ T if to_raw else np.linalg.solve(C, T)
            out = layout.with_template(out, k, psd_cholesky(M @ M.T, tol=1e-10))
        return out

    def to_raw(self, theta: np.ndarray) -> np.ndarray:
        """lme4's ``theta`` for working ``theta``: ``T = chol(C T* T*' C')``."""
        return self._map(theta, to_raw=True)

    def from_raw(self, theta: np.ndarray) -> np.ndarray:
        """Working ``theta`` for lme4's ``theta``."""
        return self._map(theta, to_raw=False)
