"""Response families and link functions of generalized linear mixed models.

The link functions copy R's (``stats::make.link``, which lme4's C++ ``glmFamily``
mirrors), including their guards: the logit inverse is ``DBL_EPSILON`` below
``eta = -30`` and ``1 - DBL_EPSILON`` above 30, and its derivative is
``DBL_EPSILON`` there; probit and cauchit clamp ``eta`` where the quantile of
``DBL_EPSILON`` lies; cloglog clamps ``mu`` to ``[eps, 1 - eps]``; the log
link's inverse is at least ``DBL_EPSILON``.  The log-likelihood is the one of
lme4's ``logLik`` (R's ``family$aic``): binomial coefficients and ``log(y!)``
included.

A binomial response is the proportion ``y`` with the trials as prior weights
``w`` (``cbind(s, f)`` gives ``y = s / (s + f)``, ``w = s + f``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import gammaln, xlog1py, xlogy
from scipy.stats import cauchy, norm

from ..errors import ArgumentError

__all__ = ["Link", "Family", "make_family", "LINKS", "FAMILIES"]

EPS = float(np.finfo(float).eps)
_THRESH = 30.0
_PROBIT_T = -float(norm.ppf(EPS))
_CAUCHIT_T = -float(cauchy.ppf(EPS))


@dataclass(frozen=True)
class Link:
    """A link function ``eta = g(mu)`` with its inverse and ``dmu/deta``."""

    name: str
    linkfun: Callable[[np.ndarray], np.ndarray]
    linkinv: Callable[[np.ndarray], np.ndarray]
    mu_eta: Callable[[np.ndarray], np.ndarray]
    valid_eta: Callable[[np.ndarray], bool] = lambda eta: bool(np.all(np.isfinite(eta)))


def _logit_inv(eta):
    eta = np.asarray(eta, dtype=float)
    tmp = np.where(eta < -_THRESH, EPS, np.where(eta > _THRESH, 1.0 / EPS,
                                                  np.exp(np.clip(eta, -_THRESH, _THRESH))))
    return tmp / (1.0 + tmp)


def _logit_mu_eta(eta):
    eta = np.asarray(eta, dtype=float)
    e = np.exp(np.clip(eta, -_THRESH, _THRESH))
    return np.where(np.abs(eta) > _THRESH, EPS, e / (1.0 + e) ** 2)


def _probit_inv(eta):
    return norm.cdf(np.clip(eta, -_PROBIT_T, _PROBIT_T))


def _cauchit_inv(eta):
    return cauchy.cdf(np.clip(eta, -_CAUCHIT_T, _CAUCHIT_T))


def _cloglog_inv(eta):
    return np.clip(-np.expm1(-np.exp(eta)), EPS, 1.0 - EPS)


def _cloglog_mu_eta(eta):
    eta = np.minimum(eta, 700.0)
    return np.maximum(np.exp(eta) * np.exp(-np.exp(eta)), EPS)


LINKS: dict[str, Link] = {
    "logit": Link("logit", lambda mu: np.log(mu / (1.0 - mu)), _logit_inv, _logit_mu_eta),
    "probit": Link("probit", norm.ppf, _probit_inv,
                   lambda eta: np.maximum(norm.pdf(eta), EPS)),
    "cauchit": Link("cauchit", cauchy.ppf, _cauchit_inv,
                    lambda eta: np.maximum(cauchy.pdf(eta), EPS)),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-mu)), _cloglog_inv,
                    _cloglog_mu_eta),
    "log": Link("log", np.log, lambda eta: np.maximum(np.exp(eta), EPS),
                lambda eta: np.maximum(np.exp(eta), EPS)),
    "sqrt": Link("sqrt", np.sqrt, lambda eta: np.asarray(eta, dtype=float) ** 2,
                 lambda eta: 2.0 * np.asarray(eta, dtype=float),
                 lambda eta: bool(np.all(np.isfinite(eta)) and np.all(eta > 0))),
    "identity": Link("identity", lambda mu: np.asarray(mu, dtype=float),
                     lambda eta: np.asarray(eta, dtype=float),
                     lambda eta: np.ones_like(np.asarray(eta, dtype=float)),
                     lambda eta: bool(np.all(np.isfinite(eta)) and np.all(eta > 0))),
}


@dataclass(frozen=True)
class Family:
    """A GLM family with its link (what the Laplace engine needs of it).

    Attributes
    ----------
    name : str
        ``"binomial"`` or ``"poisson"``.
    link : Link
    canonical : str
        Name of the canonical link.
    """

    name: str
    link: Link
    canonical: str

    # ---------------------------------------------------------------- pieces
    def variance(self, mu: np.ndarray) -> np.ndarray:
        """``Var(y) / phi`` as a function of the mean."""
        if self.name == "binomial":
            return mu * (1.0 - mu)
        return np.asarray(mu, dtype=float)

    def weights(self, mu: np.ndarray, mu_eta: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """Expected-information (Fisher) working weights ``w (dmu/deta)^2 / V(mu)``."""
        return pw * mu_eta * mu_eta / self.variance(mu)

    def loglik_terms(self, y: np.ndarray, mu: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """``log p(y_i | mu_i)`` per row (lme4's ``logLik`` convention)."""
        if self.name == "binomial":
            m = np.round(pw)
            k = np.round(pw * y)
            return (gammaln(m + 1.0) - gammaln(k + 1.0) - gammaln(m - k + 1.0)
                    + xlogy(k, mu) + xlog1py(m - k, -mu))
        return pw * (xlogy(y, mu) - mu - gammaln(y + 1.0))

    def loglik(self, y, mu, pw) -> float:
        """``sum_i log p(y_i | mu_i)``."""
        return float(np.sum(self.loglik_terms(y, mu, pw)))

    def saturated_loglik(self, y, pw) -> float:
        """The log-likelihood at ``mu = y``."""
        return self.loglik(y, np.asarray(y, dtype=float), pw)

    def dev_resids(self, y: np.ndarray, mu: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """Squared deviance residuals ``2 w (l_sat - l)`` per row.

        Written as ``mu h(y / mu)`` with ``h(t) = t log t - t + 1`` (and the same
        for ``1 - y`` of a binomial), ``h`` from its series near ``t = 1``: no
        cancellation between ``y log(y / mu)`` and ``y - mu`` when counts are huge
        and the fit is close, so the objective keeps its digits there.
        """
        y = np.asarray(y, dtype=float)
        mu = np.asarray(mu, dtype=float)
        if self.name == "binomial":
            return 2.0 * pw * (mu * _h(y / mu) + (1.0 - mu) * _h((1.0 - y) / (1.0 - mu)))
        return 2.0 * pw * mu * _h(y / mu)

    def mustart(self, y: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """R's starting means (``family$initialize``)."""
        if self.name == "binomial":
            return (pw * y + 0.5) / (pw + 1.0)
        return y + 0.1

    def __str__(self) -> str:
        return f"{self.name}({self.link.name})"


def _h(t: np.ndarray) -> np.ndarray:
    """``t log t - t + 1`` (1 at ``t = 0``), accurate near ``t = 1``."""
    t = np.asarray(t, dtype=float)
    s = t - 1.0
    near = np.abs(s) < 0.1
    out = xlogy(t, t) - s
    if np.any(near):
        sn = s[near]
        acc = np.zeros_like(sn)
        power = sn * sn
        for k in range(2, 20):  # sum_k (-1)^k s^k / (k (k - 1))
            acc += (1.0 if k % 2 == 0 else -1.0) * power / (k * (k - 1))
            power = power * sn
        out[near] = acc
    return out


FAMILIES = {"binomial": ("logit", ("logit", "probit", "cauchit", "cloglog")),
            "poisson": ("log", ("log", "sqrt", "identity"))}


def make_family(family, link: str | None = None) -> Family:
    """A :class:`Family` from a name (``"binomial"``, ``"poisson"``) or a Family.

    Raises
    ------
    ArgumentError
        Unknown family or a link the family does not take.
    """
    if isinstance(family, Family):
        if link is None or link == family.link.name:
            return family
        family = family.name
    if not isinstance(family, str):
        raise ArgumentError(f"family must be a string such as 'binomial' or a Family, not "
                            f"{type(family).__name__}")
    name = family.lower()
    if name not in FAMILIES:
        raise ArgumentError(f"family {family!r} is not available; choose one of "
                            f"{', '.join(map(repr, FAMILIES))} (Gamma, inverse Gaussian and "
                            "negative binomial are not built yet)")
    canonical, allowed = FAMILIES[name]
    link = canonical if link is None else link
    if link not in allowed:
        raise ArgumentError(f"link {link!r} is not available for family {name!r}; choose one "
                            f"of {', '.join(map(repr, allowed))}")
    return Family(name, LINKS[link], canonical)
