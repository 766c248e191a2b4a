"""Structured random-effect covariances and the parameters that can be held fixed.

A random term written ``us(1 + x | g)`` (the default ``(1 + x | g)``),
``diag(...)``, ``cs(...)``, ``ar1(...)`` or ``toep(...)`` (glmmTMB's and lme4
2.0's spellings) has a ``q x q`` covariance ``Sigma = D C D``, ``D`` the diagonal
of standard deviations and ``C`` a correlation matrix, each a function of a few
unconstrained parameters (one object per term, as MixedModels.jl keeps one per
random-effects term).  The engines still see only lme4's ``theta`` (the
lower-triangular templates of :class:`~mixedanova.design.theta.ThetaLayout`):
:meth:`CovarianceParameters.theta` maps the parameters to it,
``T = chol(Sigma) / scale``.

Per kind (glmmTMB 1.1.5's definitions of the models; ``q`` columns):

* ``us``: one SD per column and the correlations, through the canonical partial
  correlations ``z_ij = tanh(x_ij)`` (any value gives a positive definite matrix;
  ``z_1j`` is the correlation of the first column with column ``j``, the others
  are partial correlations given the earlier columns);
* ``diag``: one SD per column, no correlation;
* ``cs``: heterogeneous compound symmetry, one SD per column and one correlation
  ``rho = plogis(x) (1 + a) - a``, ``a = 1 / (q - 1)`` (glmmTMB's ``cs``);
* ``ar1``: one SD for all columns and ``corr(i, j) = rho^|i - j|``,
  ``rho = tanh(x)``, over the column positions (``ar1(0 + visit | g)``: the
  levels of the visit factor in order);
* ``toep``: heterogeneous Toeplitz, one SD per column and the correlations by lag
  through the partial autocorrelations ``a_k = tanh(x_k)`` (Durbin-Levinson: any
  value gives a positive definite matrix; ``a_1`` is the lag-1 correlation).

SDs are ``exp(x)``.  The names of the parameters (``fixed=`` takes them) follow
``varcomp``: ``"g: col"`` is the variance of column ``col`` of the term of group
``g`` (``"g: variance"`` for ``ar1``'s common variance), ``"g: corr(a, b)"`` a
correlation of a ``us`` term, ``"g: pcorr(a, b)"`` its partial correlations,
``"g: corr"`` the correlation of ``cs`` and ``ar1``, ``"g: corr(lag 1)"`` and
``"g: pacf(lag k)"`` those of ``toep``.  Values are given as ``varcomp`` shows
them: variances (not SDs) and correlations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError, DesignError
from .theta import ThetaLayout

__all__ = ["KINDS", "KIND_LABELS", "TermCovariance", "CovarianceParameters"]

KINDS = ("us", "diag", "cs", "ar1", "toep")
KIND_LABELS = {"us": "us (unstructured)", "diag": "diag (independent, one variance per column)",
               "cs": "cs (heterogeneous compound symmetry)",
               "ar1": "ar1 (one variance, corr rho^|i-j|)",
               "toep": "toep (heterogeneous Toeplitz)"}
CORR_BOUND = 12.0   # |x| of a correlation parameter (tanh(12) = 1 - 8e-11)
LOGSD_BOUNDS = (-25.0, 15.0)


@dataclass(frozen=True)
class TermCovariance:
    """The covariance structure of one random-effects term.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    group : str
        The term's group name as ``varcomp`` shows it (``"Subject"``, ``"Subject.1"``).
    columns : tuple of str
        The term's columns.
    """

    kind: str
    group: str
    columns: tuple[str, ...]

    @property
    def q(self) -> int:
        """Columns of the term."""
        return len(self.columns)

    def _n_sd(self) -> int:
        return 1 if self.kind == "ar1" else self.q

    def _corr_names(self) -> list[str]:
        g, c, q = self.group, self.columns, self.q
        if self.kind == "us":
            return [f"{g}: corr({c[0]}, {c[j]})" if i == 0 else f"{g}: pcorr({c[i]}, {c[j]})"
                    for i in range(q) for j in range(i + 1, q)]
        if self.kind in ("cs", "ar1"):
            return [f"{g}: corr"] if q > 1 else []
        if self.kind == "toep":
            return [f"{g}: corr(lag 1)" if k == 1 else f"{g}: pacf(lag {k})" for k in range(1, q)]
        return []

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names (``fixed=`` takes them): variances, then correlations."""
        sd = [f"{self.group}: variance"] if self.kind == "ar1" else \
            [f"{self.group}: {c}" for c in self.columns]
        return tuple(sd + self._corr_names())

    @property
    def n_par(self) -> int:
        """Number of parameters."""
        return len(self.names)

    def is_variance(self, i: int) -> bool:
        """Parameter ``i`` is a log SD (else a correlation parameter)."""
        return i < self._n_sd()

    def lower_upper(self) -> list[tuple[float, float]]:
        """Bounds that keep the maps finite."""
        return [LOGSD_BOUNDS if self.is_variance(i) else (-CORR_BOUND, CORR_BOUND)
                for i in range(self.n_par)]

    def correlation(self, x: np.ndarray) -> np.ndarray:
        """The ``q x q`` correlation matrix at parameters ``x``."""
        q, z = self.q, np.asarray(x, dtype=float)[self._n_sd():]
        if self.kind == "diag" or q == 1:
            return np.eye(q)
        if self.kind == "cs":
            a = 1.0 / (q - 1)
            rho = (1.0 + a) / (1.0 + math.exp(-z[0])) - a
            return (1.0 - rho) * np.eye(q) + rho
        lags = np.abs(np.subtract.outer(np.arange(q), np.arange(q)))
        if self.kind == "ar1":
            return np.tanh(z[0]) ** lags
        if self.kind == "toep":
            r = _pacf_to_acf(np.tanh(z))
            return np.r_[1.0, r][lags]
        W = _cpc_factor(np.tanh(z), q)
        return W @ W.T

    def cholesky(self, x: np.ndarray) -> np.ndarray:
        """Lower-triangular ``T`` with ``T T' = Sigma`` at parameters ``x``."""
        x = np.asarray(x, dtype=float)
        sd = np.exp(x[:self._n_sd()]) * np.ones(self.q)
        if self.kind == "us":
            return sd[:, None] * _cpc_factor(np.tanh(x[self.q:]), self.q)
        if self.kind == "diag":
            return np.diag(sd)
        C = self.correlation(x)
        return sd[:, None] * np.linalg.cholesky(C)

    def to_parameter(self, i: int, value: float) -> float:
        """The unconstrained value of parameter ``i`` whose natural value (a
        variance or a correlation, as ``varcomp`` shows) is ``value``."""
        name = self.names[i]
        if self.is_variance(i):
            if not value > 0:
                raise ArgumentError(f"fixed[{name!r}] is a variance and must be positive, "
                                    f"not {value!r}")
            return 0.5 * math.log(value)
        lo = -1.0 / (self.q - 1) if self.kind == "cs" else -1.0
        if not lo < value < 1.0:
            raise ArgumentError(f"fixed[{name!r}] is a correlation and must lie in "
                                f"({lo:.6g}, 1), not {value!r}")
        if self.kind == "cs":
            a = 1.0 / (self.q - 1)
            t = (value + a) / (1.0 + a)
            return math.log(t / (1.0 - t))
        return math.atanh(value)


def _cpc_factor(z: np.ndarray, q: int) -> np.ndarray:
    """Cholesky factor ``W`` (rows of unit length) of the correlation matrix with
    canonical partial correlations ``z`` (pairs ``(i, j)``, ``i < j``, row-major)."""
    Z = np.zeros((q, q))
    Z[np.triu_indices(q, 1)] = z
    W = np.zeros((q, q))
    W[0, 0] = 1.0
    for i in range(1, q):
        rest = 1.0
        for j in range(i):
            W[i, j] = Z[j, i] * math.sqrt(rest)
            rest = max(rest - W[i, j] ** 2, 0.0)
        W[i, i] = math.sqrt(rest)
    return W


def _pacf_to_acf(a: np.ndarray) -> np.ndarray:
    """Autocorrelations at lags ``1..m`` of the stationary process with partial
    autocorrelations ``a`` (Durbin-Levinson run backwards)."""
    m = len(a)
    r = np.zeros(m)
    phi = np.zeros(0)
    v = 1.0
    for k in range(m):
        r[k] = float(phi @ r[:k][::-1]) + a[k] * v if k else a[0]
        phi = np.r_[phi - a[k] * phi[::-1], a[k]]
        v *= 1.0 - a[k] ** 2
    return r


@dataclass(frozen=True)
class CovarianceParameters:
    """The parameters of every random term and the map to lme4's ``theta``.

    Attributes
    ----------
    terms : tuple of TermCovariance
        In the design's term order.
    layout : ThetaLayout
        Where the templates go.
    """

    terms: tuple[TermCovariance, ...]
    layout: ThetaLayout

    @classmethod
    def from_blocks(cls, kinds: list[str], groups: list[str],
                    columns: list[tuple[str, ...]], layout: ThetaLayout) -> "CovarianceParameters":
        """Parameters for terms of the given kinds, group names and columns."""
        for k in kinds:
            if k not in KINDS:
                raise DesignError(f"unknown covariance structure {k!r}; one of {', '.join(KINDS)}")
        return cls(tuple(TermCovariance(k, g, tuple(c)) for k, g, c in
                         zip(kinds, groups, columns)), layout)

    @classmethod
    def for_design(cls, design) -> "CovarianceParameters":
        """The parameters of a design's random terms (its ``blocks``)."""
        blocks = design.blocks
        return cls.from_blocks([b.structure for b in blocks], design.group_names,
                               [b.columns for b in blocks], design.theta_layout())

    @property
    def structured(self) -> bool:
        """Some term has a structure other than ``us``."""
        return any(t.kind != "us" for t in self.terms)

    @property
    def names(self) -> tuple[str, ...]:
        """All parameter names, terms in order."""
        return tuple(n for t in self.terms for n in t.names)

    @property
    def n_par(self) -> int:
        """Number of parameters."""
        return sum(t.n_par for t in self.terms)

    def _slices(self) -> list[slice]:
        out, pos = [], 0
        for t in self.terms:
            out.append(slice(pos, pos + t.n_par))
            pos += t.n_par
        return out

    def variance_mask(self) -> np.ndarray:
        """True for the log-SD parameters."""
        return np.array([t.is_variance(i) for t in self.terms for i in range(t.n_par)])

    def bounds(self) -> list[tuple[float, float]]:
        """Per parameter, bounds that keep the maps finite."""
        return [b for t in self.terms for b in t.lower_upper()]

    def start(self, log_scale: float = 0.0) -> np.ndarray:
        """SDs ``exp(log_scale)``, correlations 0 (lme4's identity start when 0)."""
        return np.where(self.variance_mask(), log_scale, 0.0)

    def theta(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """lme4's ``theta`` (templates ``chol(Sigma) / scale``) at parameters ``x``."""
        theta = np.zeros(self.layout.size)
        for k, (t, sl) in enumerate(zip(self.terms, self._slices())):
            theta = self.layout.with_template(theta, k, t.cholesky(x[sl]) / scale)
        return theta

    def natural(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Variances (times ``scale^2``) and correlations at ``x``, in :attr:`names` order."""
        out = []
        for t, sl in zip(self.terms, self._slices()):
            xt = np.asarray(x[sl], dtype=float)
            for i in range(t.n_par):
                if t.is_variance(i):
                    out.append(math.exp(2.0 * xt[i]) * scale ** 2)
                else:
                    out.append(_natural_corr(t, xt, i))
        return np.array(out)

    def bind_fixed(self, fixed: dict[str, float]) -> dict[int, float]:
        """Positions and unconstrained values of the parameters named in ``fixed``
        (``"sigma"`` excepted); an unknown name is an :class:`ArgumentError` listing
        the valid ones."""
        names = self.names
        out = {}
        for name, value in fixed.items():
            if name == "sigma":
                continue
            if name not in names:
                raise ArgumentError(
                    f"fixed= names unknown parameter {name!r}; the parameters are 'sigma', "
                    f"{', '.join(map(repr, names))} (variances as variances, correlations "
                    "as correlations)")
            pos = names.index(name)
            k = next(j for j, sl in enumerate(self._slices()) if sl.start <= pos < sl.stop)
            out[pos] = self.terms[k].to_parameter(pos - self._slices()[k].start, value)
        return out

    def check_start(self, start) -> np.ndarray:
        """A user's ``start`` for a structured fit: one number per parameter."""
        try:
            arr = np.asarray(start, dtype=float).ravel()
        except (TypeError, ValueError):
            arr = np.zeros(0)
        if arr.size != self.n_par or not np.all(np.isfinite(arr)):
            raise ArgumentError(f"start of a structured fit must be {self.n_par} finite "
                                f"numbers, the unconstrained parameters "
                                f"({', '.join(self.names)}); got {start!r}")
        return arr


def _natural_corr(t: TermCovariance, x: np.ndarray, i: int) -> float:
    """The correlation (or partial correlation) that parameter ``i`` of ``t`` is."""
    v = float(x[i])
    if t.kind == "cs":
        a = 1.0 / (t.q - 1)
        return (1.0 + a) / (1.0 + math.exp(-v)) - a
    return math.tanh(v)
