"""Covariance matrices over the visits of a subject, in mmrm's parametrization.

One ``m x m`` matrix ``Sigma(theta)`` over the levels of a visit factor; a
subject with visits missing has the submatrix of the visits it has (rows and
columns removed by level position).  The parameters are unconstrained and are
exactly mmrm's (``component(fit, "theta_est")``), so that the Kenward-Roger
adjustment, whose second-derivative term depends on the parametrization,
agrees with mmrm's:

========  ============================================  =====================================
kind      parameters                                    ``Sigma``
========  ============================================  =====================================
us        ``log sd_1..m``, ``l_21, l_31, l_32, ...``    ``L L'``, ``L = diag(sd) Ltilde``,
                                                        ``Ltilde`` unit lower, row by row
toep(h)   log SD (one / per visit), ``x_1..x_{m-1}``    ``sd_i sd_j rho_|i-j|``
ar1(h)    log SD (one / per visit), ``x``               ``sd_i sd_j rho^|i-j|``
cs(h)     log SD (one / per visit), ``x``               ``sd_i sd_j rho`` off the diagonal
ad(h)     log SD (one / per visit), ``x_1..x_{m-1}``    ``sd_i sd_j prod_{k=i}^{j-1} rho_k``
========  ============================================  =====================================

with ``rho = x / sqrt(1 + x^2)`` except compound symmetry's
``rho = plogis(x) (1 + a) - a``, ``a = 1 / (m - 1)``.

Derivatives of ``Sigma`` in ``theta`` (first and second) are taken by central
differences of this closed form (a few hundred ``m x m`` evaluations, accurate
to about 1e-9 relative), which is all the likelihood and Kenward-Roger need.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["VisitCovariance", "KINDS"]

KINDS = ("us", "toep", "toeph", "ar1", "ar1h", "cs", "csh", "ad", "adh", "diag")


def _rho(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(1.0 + x * x)


@dataclass(frozen=True)
class VisitCovariance:
    """The visit covariance of one kind over ``levels`` (one covariance group).

    Parameters
    ----------
    kind : str
        One of :data:`KINDS` (mmrm's names; ``diag``: one SD per visit, no correlation).
    levels : tuple of str
        The visit levels, in position order.
    nugget : bool
        Add ``exp(betad) I``: a structured random effect over the visits plus an
        independent residual (glmmTMB's ``ar1(0 + f | g)``; ``betad = log sigma^2``,
        the last parameter).
    """

    kind: str
    levels: tuple[str, ...]
    nugget: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown visit covariance {self.kind!r}")

    @property
    def m(self) -> int:
        return len(self.levels)

    @property
    def heterogeneous(self) -> bool:
        return self.kind in ("us", "diag") or self.kind.endswith("h")

    @property
    def n_sd(self) -> int:
        return self.m if self.heterogeneous else 1

    @property
    def n_par(self) -> int:
        m = self.m
        base = self.kind.rstrip("h") if self.kind != "us" else "us"
        extra = {"us": m * (m - 1) // 2, "toep": m - 1, "ar1": 1, "cs": 1, "ad": m - 1,
                 "diag": 0}[base]
        return self.n_sd + extra + int(self.nugget)

    @property
    def names(self) -> tuple[str, ...]:
        """mmrm's theta names (``log_sd[V1]``, ``chol_l[V2,V1]``, ``cor_param[lag1]``...)."""
        lv = self.levels
        sd = tuple(f"log_sd[{v}]" for v in lv) if self.heterogeneous else ("log_sd",)
        m = self.m
        if self.nugget:
            return VisitCovariance(self.kind, self.levels).names + ("betad",)
        if self.kind == "diag":
            return sd
        if self.kind == "us":
            return sd + tuple(f"chol_l[{lv[i]},{lv[j]}]" for i in range(1, m) for j in range(i))
        base = self.kind.rstrip("h")
        if base == "toep":
            return sd + tuple(f"cor_param[lag{k}]" for k in range(1, m))
        if base == "ad":
            return sd + tuple(f"cor_param[{lv[k]},{lv[k + 1]}]" for k in range(m - 1))
        if base == "cs":
            return sd + ("cs_cor_param",)
        return sd + ("cor_param",)

    def correlation(self, x: np.ndarray) -> np.ndarray:
        """Correlation matrix of a structured kind from its correlation parameters."""
        m = self.m
        base = self.kind.rstrip("h")
        lag = np.abs(np.arange(m)[:, None] - np.arange(m)[None, :])
        if base == "toep":
            r = np.concatenate([[1.0], _rho(x)])
            return r[lag]
        if base == "ar1":
            return _rho(x[0]) ** lag
        if base == "cs":
            a = 1.0 / max(m - 1, 1)
            r = (1.0 + a) / (1.0 + np.exp(-x[0])) - a
            C = np.full((m, m), r)
            np.fill_diagonal(C, 1.0)
            return C
        # ante-dependence: corr(i, j) = prod_{k=i}^{j-1} rho_k
        r = _rho(x)
        C = np.eye(m)
        for i in range(m):
            acc = 1.0
            for j in range(i + 1, m):
                acc = acc * r[j - 1]
                C[i, j] = C[j, i] = acc
        return C

    def matrix(self, theta: np.ndarray) -> np.ndarray:
        """``Sigma(theta)`` (``m x m``)."""
        theta = np.asarray(theta, dtype=float)
        m = self.m
        if self.nugget:
            return (VisitCovariance(self.kind, self.levels).matrix(theta[:-1])
                    + math.exp(theta[-1]) * np.eye(m))
        if self.kind == "diag":
            return np.diag(np.exp(2.0 * theta[:m]))
        if self.kind == "us":
            sd = np.exp(theta[:m])
            Lt = np.eye(m)
            Lt[np.tril_indices(m, -1)] = theta[m:]
            L = sd[:, None] * Lt
            return L @ L.T
        sd = np.exp(theta[:self.n_sd]) * np.ones(m)
        C = self.correlation(theta[self.n_sd:])
        return sd[:, None] * C * sd[None, :]

    def derivatives(self, theta: np.ndarray, second: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(Sigma, dSigma (k, m, m), d2Sigma (k, k, m, m) or None)`` by central
        differences of :meth:`matrix`."""
        theta = np.asarray(theta, dtype=float)
        if self.kind == "us" and not self.nugget:
            return self._us_derivatives(theta, second)
        k, m = self.n_par, self.m
        S0 = self.matrix(theta)
        h1 = 1e-5 * np.maximum(1.0, np.abs(theta))
        D1 = np.empty((k, m, m))
        for i in range(k):
            e = np.zeros(k)
            e[i] = h1[i]
            D1[i] = (self.matrix(theta + e) - self.matrix(theta - e)) / (2.0 * h1[i])
        if not second:
            return S0, D1, None
        h = 2e-4 * np.maximum(1.0, np.abs(theta))
        D2 = np.empty((k, k, m, m))
        plus, minus = [], []
        for i in range(k):
            e = np.zeros(k)
            e[i] = h[i]
            plus.append(self.matrix(theta + e))
            minus.append(self.matrix(theta - e))
            D2[i, i] = (plus[i] - 2.0 * S0 + minus[i]) / h[i] ** 2
        for i in range(k):
            for j in range(i + 1, k):
                e = np.zeros(k)
                e[i], e[j] = h[i], h[j]
                f = np.zeros(k)
                f[i], f[j] = h[i], -h[j]
                val = (self.matrix(theta + e) - self.matrix(theta + f)
                       - self.matrix(theta - f) + self.matrix(theta - e)) / (4.0 * h[i] * h[j])
                D2[i, j] = D2[j, i] = val
        return S0, D1, D2

    def _us_derivatives(self, theta: np.ndarray, second: bool):
        """Exact derivatives of ``Sigma = L L'``, ``L = diag(sd) Ltilde``."""
        m, k = self.m, self.n_par
        sd = np.exp(theta[:m])
        Lt = np.eye(m)
        rows, cols = np.tril_indices(m, -1)
        Lt[rows, cols] = theta[m:]
        L = sd[:, None] * Lt
        dL = np.zeros((k, m, m))
        dL[np.arange(m), np.arange(m), :] = L              # d/dlog sd_i: row i of L
        dL[m + np.arange(len(rows)), rows, cols] = sd[rows]  # d/dl_ij: sd_i at (i, j)
        X1 = dL @ L.T
        D1 = X1 + X1.transpose(0, 2, 1)
        if not second:
            return L @ L.T, D1, None
        cross = np.matmul(dL[:, None], dL.transpose(0, 2, 1)[None])
        D2 = cross + cross.transpose(0, 1, 3, 2)
        idx = np.arange(m)
        D2[idx, idx] += D1[:m]
        lidx = m + np.arange(len(rows))
        D2[rows, lidx] += D1[lidx]
        D2[lidx, rows] += D1[lidx]
        return L @ L.T, D1, D2

    def start(self, cov: np.ndarray) -> np.ndarray:
        """Starting ``theta`` from a rough covariance estimate ``cov`` (``m x m``)."""
        m = self.m
        if self.nugget:  # half of the variance to the random effect, half to the nugget
            half = float(np.mean(np.diag(cov))) / 2.0
            base = VisitCovariance(self.kind, self.levels).start(cov / 2.0)
            return np.concatenate([base, [math.log(max(half, 1e-8))]])
        if self.kind == "diag":
            return 0.5 * np.log(np.maximum(np.diag(cov), 1e-8))
        sd = np.sqrt(np.maximum(np.diag(cov), 1e-8 * max(float(np.max(np.diag(cov))), 1e-300)))
        if self.kind == "us":
            C = cov / np.outer(sd, sd)
            w, V = np.linalg.eigh(0.5 * (C + C.T))
            C = (V * np.maximum(w, 0.05)) @ V.T
            d = np.sqrt(np.diag(C))
            C = C / np.outer(d, d)
            L = np.linalg.cholesky(C)
            dl = np.diag(L)
            Lt = L / dl[:, None]
            return np.concatenate([np.log(sd * dl), Lt[np.tril_indices(m, -1)]])
        logsd = np.log(sd) if self.heterogeneous else np.array([np.log(np.sqrt(np.mean(sd**2)))])
        base = self.kind.rstrip("h")
        n_cor = self.n_par - self.n_sd
        if base == "cs":
            # rho = 0.1 -> plogis(x) = (0.1 + a) / (1 + a)
            a = 1.0 / max(m - 1, 1)
            pr = (0.1 + a) / (1.0 + a)
            return np.concatenate([logsd, [np.log(pr / (1.0 - pr))]])
        return np.concatenate([logsd, np.full(n_cor, 0.1)])
