"""A blocked system whose terms are factored in another order.

The crossed layout eliminates its first term block-diagonally, so that term
must have one level per row.  After whitening by a residual structure (see
:mod:`mixedanova.likelihood.residual`) a term whose level varies inside the
residual groups has several levels per row; if it is the design's first term,
:class:`PermutedSystem` factors the terms in an order that puts a one-level-per-row
term first and presents the factor in the design's term order (per-term lists
and the random-effects vector permuted back), so that
:class:`~mixedanova.likelihood.criterion.ProfiledDeviance` and the results see
no difference.  The determinants, ``pwrss`` and the fixed-effects block do not
depend on the order.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PermutedSystem", "PermutedFactor"]


class PermutedSystem:
    """Wrap a system built on ``[terms[i] for i in order]``.

    Parameters
    ----------
    inner : object
        The system built on the permuted terms.
    order : list of int
        ``order[s]`` is the design index of the system's term ``s``.
    terms : tuple of TermShape
        The terms in the design's order.
    """

    def __init__(self, inner, order: list[int], terms: list) -> None:
        self.inner = inner
        self.order = list(order)
        self.terms = terms
        self.p, self.k, self.cp = inner.p, inner.k, inner.cp
        sizes = [t.nlev * t.q for t in terms]
        self.offsets = np.cumsum([0] + sizes)
        sys_offsets = np.cumsum([0] + [sizes[i] for i in self.order])
        # design position of every system coordinate of the random-effects vector
        to_design = np.empty(int(self.offsets[-1]), dtype=np.intp)
        for s, i in enumerate(self.order):
            to_design[sys_offsets[s]:sys_offsets[s + 1]] = np.arange(self.offsets[i],
                                                                     self.offsets[i + 1])
        self.sys_to_design = to_design        # u_design[to_design] = u_sys
        self.design_to_sys = np.argsort(to_design)  # u_sys = u_design[design_to_sys]
        self.inverse = np.argsort(self.order)  # system index of design term i

    def factor(self, lambdas: list[np.ndarray]) -> "PermutedFactor":
        return PermutedFactor(self.inner.factor([lambdas[i] for i in self.order]), self)


class PermutedFactor:
    """A factor of the permuted system with design-ordered outputs."""

    def __init__(self, inner, system: PermutedSystem) -> None:
        self._f = inner
        self._s = system

    def __getattr__(self, name):  # ldL2, ldRX2, pwrss, p, rx, vcov_unscaled, ...
        return getattr(self._f, name)

    def _design_list(self, per_term: list) -> list:
        return [per_term[self._s.inverse[i]] for i in range(len(per_term))]

    @property
    def pwrss_std(self) -> float:
        return self._f.pwrss_std

    @pwrss_std.setter
    def pwrss_std(self, value: float) -> None:  # a refined value goes to the inner factor
        self._f.pwrss_std = value

    def _to_design(self, u_sys: np.ndarray) -> np.ndarray:
        u = np.empty_like(u_sys)
        u[self._s.sys_to_design] = u_sys
        return u

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        beta, u_sys = self._f.solution()
        return beta, self._to_design(u_sys)

    def _solution_std(self) -> tuple[np.ndarray, np.ndarray]:
        beta, u_sys = self._f._solution_std()
        return beta, self._to_design(u_sys)

    def forward_solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L^{-1} P rhs`` (system coordinates; pair with :meth:`back_solve`)."""
        return self._f.forward_solve(rhs[self._s.design_to_sys])

    def back_solve(self, rhs: np.ndarray) -> np.ndarray:
        out = np.empty_like(rhs)
        out[self._s.sys_to_design] = self._f.back_solve(rhs)
        return out

    def solve_omega(self, rhs: np.ndarray) -> np.ndarray:
        """``Omega^{-1} rhs`` in the design's order."""
        return self.back_solve(self.forward_solve(rhs))

    def omega_inv_diag(self) -> list[np.ndarray]:
        return self._design_list(self._f.omega_inv_diag())

    def inverse_block_sums(self) -> list:
        return self._design_list(self._f.inverse_block_sums())
