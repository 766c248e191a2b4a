"""Residual covariance structures: ``R = sigma^2 Rrel(rho)`` and its whitening.

``Rrel = D C D`` with ``D = diag(s_i)`` a variance function (nlme's ``varIdent``,
``varPower``, ``varExp``) and ``C`` a block-diagonal correlation matrix, one block
per residual group (``corAR1``, ``corCAR1``, ``corCompSymm``).  The model is fitted
on the whitened data ``W y, W X, W Z`` with ``W = C^{-1/2} D^{-1}`` (``W'W =
Rrel^{-1}``); the profiled criterion then gains ``log|Rrel|``.  Every ``W`` here
costs ``O(n)`` to form and apply (``O(sum m_g^2)`` for compound symmetry):

* AR(1) on integer positions and CAR(1) on real times, ``corr = phi^|t_i - t_j|``:
  the process is Markov, so the inverse Cholesky factor is bidiagonal in time
  order -- the first observation of a group stays, each later one becomes
  ``(x_t - r x_prev) / sqrt(1 - r^2)`` with ``r = phi^(t - t_prev)`` (gaps count);
* compound symmetry, ``C_g = (1 - rho) I + rho J``: ``C_g^{-1/2} = a I + b_g J``
  (a rank-one update of the identity);
* variance functions: diagonal.

The parameters are optimized on nlme's unconstrained scale, which is also the
scale of nlme's Wald intervals (``intervals()``):

=========  ===================  ===========================================
structure  natural parameter    unconstrained ``u``
=========  ===================  ===========================================
AR1        phi in (-1, 1)       ``log((1 + phi) / (1 - phi))``
CAR1       phi in (0, 1)        ``log(phi / (1 - phi))``
CompSymm   rho in (-1/(M-1), 1) ``log((rho + 1/(M-1)) / (1 - rho))``, ``M`` the
                                largest group
VarIdent   SD ratio per level   ``log(ratio)`` (reference level fixed at 1)
VarPower   power delta          ``delta`` (SD ``|v|^delta``)
VarExp     expon t              ``t`` (SD ``exp(t v)``)
=========  ===================  ===========================================

A visit covariance (``ma.Unstructured``, ``ma.Toeplitz``, ...) combined with
random terms is the correlation part
:class:`~mixedanova.likelihood.visit_correlation.VisitCorrelation` (mmrm's
parameters relative to the first log-SD; block-diagonal whitener).  Without
random terms those structures are fitted by :mod:`mixedanova.likelihood.marginal`.

Nothing here knows about data frames: :mod:`mixedanova.residual` binds the
user's specification to arrays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .blocked import TermData

MAX_DENSE_GROUP = 3000  # largest correlation group factored densely (normalized residuals)

__all__ = ["SerialCorrelation", "CompoundSymmetry", "VarianceFunction",
           "ResidualStructure", "whiten_terms", "apply_whitener"]


# ------------------------------------------------------------------ correlation
@dataclass(frozen=True)
class SerialCorrelation:
    """``corr = phi^|t_i - t_j|`` within groups (nlme's corAR1 / corCAR1).

    Parameters
    ----------
    kind : {"AR1", "CAR1"}
    groups : numpy.ndarray
        Integer group code per row.
    times : numpy.ndarray
        Position (AR1, integers) or time (CAR1) per row; distinct within a group.
    """

    kind: str
    groups: np.ndarray
    times: np.ndarray
    _order: np.ndarray = field(init=False, repr=False)
    _prev: np.ndarray = field(init=False, repr=False)
    _cur: np.ndarray = field(init=False, repr=False)
    _gap: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        order = np.lexsort((self.times, self.groups))
        g, t = self.groups[order], self.times[order]
        same = g[1:] == g[:-1]
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_prev", order[:-1][same])
        object.__setattr__(self, "_cur", order[1:][same])
        object.__setattr__(self, "_gap", (t[1:] - t[:-1])[same].astype(float))

    @property
    def names(self) -> tuple[str, ...]:
        return ("phi",)

    @property
    def n_par(self) -> int:
        return 1

    def natural(self, u: np.ndarray) -> np.ndarray:
        """``phi`` from the unconstrained parameter."""
        if self.kind == "AR1":
            return np.tanh(np.asarray(u) / 2.0)
        return 1.0 / (1.0 + np.exp(-np.asarray(u)))

    def unconstrained(self, phi: np.ndarray) -> np.ndarray:
        phi = np.asarray(phi, dtype=float)
        if self.kind == "AR1":
            return np.log((1.0 + phi) / (1.0 - phi))
        return np.log(phi / (1.0 - phi))

    def start(self) -> np.ndarray:
        """nlme's start: phi = 0 (AR1), 0.2 (CAR1)."""
        return self.unconstrained(np.array([0.0 if self.kind == "AR1" else 0.2]))

    def whitener(self, u: np.ndarray) -> tuple[sp.csr_matrix, float]:
        """``C^{-1/2}`` (bidiagonal in time order) and ``log|C|``."""
        n = len(self.groups)
        phi = float(self.natural(u)[0])
        r = phi ** self._gap  # integer gaps for AR1 (phi may be < 0); phi > 0 for CAR1
        one_m = 1.0 - r * r
        if np.any(one_m <= 0.0):
            return None, math.inf
        scale = 1.0 / np.sqrt(one_m)
        diag = np.ones(n)
        diag[self._cur] = scale
        rows = np.concatenate([np.arange(n), self._cur])
        cols = np.concatenate([np.arange(n), self._prev])
        vals = np.concatenate([diag, -r * scale])
        W = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
        return W, float(np.log(one_m).sum())

    def factors(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """nlme's ``corFactor`` of groups of equal size, ``rows`` ``(k, m)`` in data
        order: ``L^{-1}`` with ``L`` the lower Cholesky factor of each group's
        correlation matrix (in time order, AR(1)'s is the bidiagonal whitener)."""
        C = np.stack([self.matrix(u, rr) for rr in rows])
        L = np.linalg.cholesky(C)
        return np.linalg.inv(L)

    def matrix(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Dense correlation matrix of the given rows (tests, first-group checks)."""
        phi = float(self.natural(u)[0])
        t = self.times[rows].astype(float)
        same = self.groups[rows][:, None] == self.groups[rows][None, :]
        return np.where(same, phi ** np.abs(t[:, None] - t[None, :]), 0.0)


@dataclass(frozen=True)
class CompoundSymmetry:
    """Equal correlation ``rho`` within groups (nlme's corCompSymm).

    ``largest``: the size of the largest group of the whole data when these rows
    are one chunk of it (the lower bound ``-1/(M-1)`` of ``rho``, and so the
    unconstrained scale, depend on it); 0: these rows' own largest group.
    """

    groups: np.ndarray
    largest: int = 0
    _pairs: tuple = field(init=False, repr=False)
    _sizes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        codes = np.unique(self.groups, return_inverse=True)[1].ravel()
        sizes = np.bincount(codes)
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        # all ordered pairs (i, j) within a group, and the group's size per pair
        m_pair = np.repeat(sizes, sizes * sizes)
        blk = np.repeat(np.arange(len(sizes)), sizes * sizes)
        within = np.arange(len(m_pair)) - np.repeat(np.cumsum(sizes * sizes) - sizes * sizes,
                                                      sizes * sizes)
        a, b = within // m_pair, within % m_pair
        i = order[starts[blk] + a]
        j = order[starts[blk] + b]
        object.__setattr__(self, "_pairs", (i, j, m_pair, i == j))
        object.__setattr__(self, "_sizes", sizes)

    @property
    def names(self) -> tuple[str, ...]:
        return ("rho",)

    @property
    def n_par(self) -> int:
        return 1

    @property
    def _inf(self) -> float:
        own = int(self._sizes.max()) if len(self._sizes) else 0
        return -1.0 / (max(own, self.largest, 2) - 1)

    def natural(self, u: np.ndarray) -> np.ndarray:
        e = np.exp(np.asarray(u, dtype=float))
        return (e + self._inf) / (e + 1.0)

    def unconstrained(self, rho: np.ndarray) -> np.ndarray:
        rho = np.asarray(rho, dtype=float)
        return np.log((rho - self._inf) / (1.0 - rho))

    def start(self) -> np.ndarray:
        """nlme's start: rho = 0."""
        return self.unconstrained(np.array([0.0]))

    def whitener(self, u: np.ndarray) -> tuple[sp.csr_matrix, float]:
        """``C^{-1/2} = a I + b_g J`` per group and ``log|C|``."""
        rho = float(self.natural(u)[0])
        m = self._sizes.astype(float)
        big = 1.0 + (m - 1.0) * rho
        if rho >= 1.0 or np.any(big <= 0.0):
            return None, math.inf
        a = 1.0 / math.sqrt(1.0 - rho)
        i, j, m_pair, diag = self._pairs
        b = (1.0 / np.sqrt(1.0 + (m_pair - 1.0) * rho) - a) / m_pair
        vals = b + np.where(diag, a, 0.0)
        n = len(self.groups)
        W = sp.csr_matrix((vals, (i, j)), shape=(n, n))
        logdet = float(np.sum((m - 1.0) * math.log(1.0 - rho) + np.log(big)))
        return W, logdet

    def factors(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """nlme's ``corFactor`` of groups of ``m`` rows (``rows`` ``(k, m)``): not the
        Cholesky inverse but a Helmert transform, the first row the scaled mean
        ``1 / sqrt(m (1 + (m - 1) rho))``, row ``i`` the contrast of entry ``i``
        with those before it over ``sqrt((1 - rho) i (i + 1))``."""
        rho = float(self.natural(u)[0])
        k, m = rows.shape
        W = np.zeros((m, m))
        W[0, :] = 1.0 / math.sqrt(m * (1.0 + (m - 1.0) * rho))
        for i in range(1, m):
            a = 1.0 / math.sqrt((1.0 - rho) * i * (i + 1.0))
            W[i, :i] = -a
            W[i, i] = i * a
        return np.broadcast_to(W, (k, m, m))

    def matrix(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rho = float(self.natural(u)[0])
        g = self.groups[rows]
        C = np.where(g[:, None] == g[None, :], rho, 0.0)
        np.fill_diagonal(C, 1.0)
        return C


# ------------------------------------------------------------ variance functions
@dataclass(frozen=True)
class VarianceFunction:
    """Residual SD ``sigma * s_i(u)`` (nlme's varIdent, varPower, varExp).

    Parameters
    ----------
    kind : {"VarIdent", "VarPower", "VarExp"}
    values : numpy.ndarray
        Stratum code per row (VarIdent, reference level coded 0) or the covariate.
    labels : tuple of str
        VarIdent's levels, reference first.
    """

    kind: str
    values: np.ndarray
    labels: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        if self.kind == "VarIdent":
            return tuple(self.labels[1:])
        return ("power",) if self.kind == "VarPower" else ("expon",)

    @property
    def n_par(self) -> int:
        return len(self.names)

    def natural(self, u: np.ndarray) -> np.ndarray:
        """SD ratios (VarIdent) or the power / exponent itself."""
        u = np.asarray(u, dtype=float)
        return np.exp(u) if self.kind == "VarIdent" else u

    def unconstrained(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        return np.log(v) if self.kind == "VarIdent" else v

    def start(self) -> np.ndarray:
        return np.zeros(self.n_par)

    def sd(self, u: np.ndarray) -> np.ndarray:
        """Relative residual SD ``s_i`` of every row."""
        u = np.asarray(u, dtype=float)
        if self.kind == "VarIdent":
            return np.exp(np.concatenate([[0.0], u]))[self.values]
        if self.kind == "VarPower":
            return np.abs(self.values) ** u[0]
        return np.exp(u[0] * self.values)


# -------------------------------------------------------------------- combined
@dataclass(frozen=True)
class ResidualStructure:
    """One correlation structure and/or one variance function.

    ``u`` stacks the correlation's parameter(s), then the variance function's.
    """

    correlation: SerialCorrelation | CompoundSymmetry | None = None  # or VisitCorrelation
    variance: VarianceFunction | None = None
    labels: tuple[str, ...] = ()  # user-facing names of the parts, e.g. "AR1(Mare)"

    @property
    def parts(self) -> list:
        return [p for p in (self.correlation, self.variance) if p is not None]

    @property
    def n_par(self) -> int:
        return sum(p.n_par for p in self.parts)

    @property
    def names(self) -> tuple[str, ...]:
        """``var1`` of the structure's varcomp rows (phi, rho, levels, power, expon)."""
        return tuple(n for p in self.parts for n in p.names)

    def split(self, u: np.ndarray) -> list[np.ndarray]:
        u = np.asarray(u, dtype=float)
        out, k = [], 0
        for p in self.parts:
            out.append(u[k:k + p.n_par])
            k += p.n_par
        return out

    def natural(self, u: np.ndarray) -> np.ndarray:
        """Natural parameters (phi / rho, SD ratios, power, expon) in ``u``'s order."""
        return np.concatenate([p.natural(v) for p, v in zip(self.parts, self.split(u))])

    def unconstrained(self, natural: np.ndarray) -> np.ndarray:
        return np.concatenate([p.unconstrained(v) for p, v in
                               zip(self.parts, self.split(natural))])

    def start(self) -> np.ndarray:
        return np.concatenate([p.start() for p in self.parts])

    def whitener(self, u: np.ndarray, n: int) -> tuple[object, float]:
        """``W`` with ``W'W = Rrel^{-1}`` (sparse, or a vector for a diagonal ``W``)
        and ``log|Rrel|``; ``(None, inf)`` outside the parameter space."""
        pieces = dict(zip([id(p) for p in self.parts], self.split(u)))
        W, logdet = None, 0.0
        if self.correlation is not None:
            W, logdet = self.correlation.whitener(pieces[id(self.correlation)])
            if W is None:
                return None, math.inf
        if self.variance is not None:
            s = self.variance.sd(pieces[id(self.variance)])
            if not np.all(np.isfinite(s)) or np.any(s <= 0.0):
                return None, math.inf
            logdet += 2.0 * float(np.log(s).sum())
            W = 1.0 / s if W is None else W @ sp.diags(1.0 / s)
        return (np.ones(n) if W is None else W), logdet

    def relative_sd(self, u: np.ndarray, n: int) -> np.ndarray:
        """Per-row residual SD over ``sigma`` (the variance function; ones without)."""
        if self.variance is None:
            return np.ones(n)
        parts = dict(zip([id(p) for p in self.parts], self.split(u)))
        return self.variance.sd(parts[id(self.variance)])

    def covariance(self, u: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``Rrel`` restricted to ``rows`` (dense)."""
        parts = dict(zip([id(p) for p in self.parts], self.split(u)))
        C = np.eye(len(rows))
        if self.correlation is not None:
            C = self.correlation.matrix(parts[id(self.correlation)], rows)
        if self.variance is not None:
            s = self.variance.sd(parts[id(self.variance)])[rows]
            C = s[:, None] * C * s[None, :]
        return C

    def decorrelate(self, u: np.ndarray, r: np.ndarray,
                    max_group: int = MAX_DENSE_GROUP) -> np.ndarray:
        """``W_g r_g`` in every correlation group, ``W_g`` nlme's factor of the
        group's correlation matrix (``W_g' W_g = C_g^{-1}``; see each structure's
        ``factors``) with its rows in data order: nlme's
        ``residuals(m, type = "normalized")`` from the Pearson residuals ``r``.

        Groups of one size are factored together; a group of more than
        ``max_group`` rows raises ``ValueError`` (a dense factor per group).
        """
        r = np.asarray(r, dtype=float)
        if self.correlation is None:
            return r.copy()
        cu = self.split(u)[0]
        codes = np.unique(self.correlation.groups, return_inverse=True)[1].ravel()
        sizes = np.bincount(codes)
        if sizes.max() > max_group:
            raise ValueError(f"a correlation group has {int(sizes.max())} rows; normalized "
                             f"residuals factor each group densely (at most {max_group})")
        order = np.argsort(codes, kind="stable")  # data order within each group
        starts = np.concatenate([[0], np.cumsum(sizes)])
        out = np.empty_like(r)
        for m in np.unique(sizes):
            groups = np.flatnonzero(sizes == m)
            rows = order[starts[groups][:, None] + np.arange(m)[None, :]]  # (k, m)
            W = self.correlation.factors(cu, rows)
            out[rows] = (W @ r[rows][:, :, None])[:, :, 0]
        return out

    def constant_within(self, codes: np.ndarray) -> bool:
        """True when ``codes`` take one value inside every correlation group."""
        if self.correlation is None:
            return True
        g = self.correlation.groups
        first = np.full(int(g.max()) + 1, -1, dtype=np.int64)
        first[g] = codes
        return bool(np.all(first[g] == codes))


def apply_whitener(W, A: np.ndarray) -> np.ndarray:
    """``W A`` for a sparse ``W`` or a diagonal one given as a vector."""
    if isinstance(W, np.ndarray):
        return W[:, None] * A if A.ndim == 2 else W * A
    return np.asarray(W @ A)


def whiten_terms(structure: ResidualStructure, u: np.ndarray, terms: list[TermData],
                 X: np.ndarray, y: np.ndarray, constant: list[bool]):
    """Whitened ``(terms, X, y)`` and ``log|Rrel|`` at ``u``; ``None`` if ``u`` is
    outside the parameter space.

    A term whose level is constant inside every residual group keeps its codes
    (``W`` only mixes rows of one level); any other term becomes a list of
    entries ``(row, level, values)`` read off the nonzeros of ``W`` (see
    :class:`~mixedanova.likelihood.blocked.TermData`).
    """
    n = len(y)
    W, logdet = structure.whitener(u, n)
    if not math.isfinite(logdet):
        return None
    out = []
    coo = None
    for t, const in zip(terms, constant):
        if const:
            out.append(TermData(t.codes, apply_whitener(W, t.zraw), t.nlev))
            continue
        if coo is None:
            coo = sp.coo_matrix(W)
        out.append(TermData(t.codes[coo.col], coo.data[:, None] * t.zraw[coo.col], t.nlev,
                            rows=coo.row.astype(np.intp), nrows=n))
    return out, apply_whitener(W, X), apply_whitener(W, y), logdet
