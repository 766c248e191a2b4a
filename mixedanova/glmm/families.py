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

import re
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from scipy.special import betaln, gammaln, xlog1py, xlogy
from scipy.stats import cauchy, norm

from ..errors import ArgumentError

__all__ = ["Link", "Family", "CountGap", "make_family", "LINKS", "FAMILIES", "PARAM_FAMILIES",
           "Binomial", "Poisson", "Gamma", "InverseGaussian", "NegativeBinomial"]

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
    valid_eta: Callable[[np.ndarray], bool] = lambda eta: bool(np.isfinite(eta).all())


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
                 lambda eta: bool(np.isfinite(eta).all() and (eta > 0).all())),
    "inverse": Link("inverse", lambda mu: 1.0 / np.asarray(mu, dtype=float),
                    lambda eta: 1.0 / np.asarray(eta, dtype=float),
                    lambda eta: -1.0 / np.asarray(eta, dtype=float) ** 2,
                    lambda eta: bool(np.isfinite(eta).all() and (eta > 0).all())),
    "1/mu^2": Link("1/mu^2", lambda mu: 1.0 / np.asarray(mu, dtype=float) ** 2,
                   lambda eta: 1.0 / np.sqrt(np.asarray(eta, dtype=float)),
                   lambda eta: -1.0 / (2.0 * np.asarray(eta, dtype=float) ** 1.5),
                   lambda eta: bool(np.isfinite(eta).all() and (eta > 0).all())),
    "identity": Link("identity", lambda mu: np.asarray(mu, dtype=float),
                     lambda eta: np.asarray(eta, dtype=float),
                     lambda eta: np.ones_like(np.asarray(eta, dtype=float)),
                     lambda eta: bool(np.isfinite(eta).all() and (eta > 0).all())),
}


@dataclass(frozen=True)
class CountGap:
    """A binomial log-likelihood that counts other successes than the deviance.

    R's ``binomial()$aic`` (lme4's ``logLik``) counts ``k = round(w y)`` successes
    out of ``m = round(w)`` trials, while the deviance (and so the conditional
    modes) uses ``w y`` out of ``w``: they differ when a stored proportion times
    the trials is not exactly whole (proportions rounded to a few digits) or the
    weights are not whole.  Then ``log p(y | mu) = l_sat - D(mu) / 2 + gap(mu)``
    with ``gap(mu) = sum a1 log(mu / y) + a2 log((1 - mu) / (1 - y))``,
    ``a1 = k - w y`` and ``a2 = (m - k) - w (1 - y)``.

    Attributes
    ----------
    a1, a2 : numpy.ndarray
        The coefficients per row (0 where the counts agree).
    y : numpy.ndarray
        The proportions.
    """

    a1: np.ndarray
    a2: np.ndarray
    y: np.ndarray

    def value(self, mu: np.ndarray) -> float:
        """``gap(mu)``, summed over the rows."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = np.where(self.a1 != 0.0, self.a1 * np.log(mu / self.y), 0.0)
            t2 = np.where(self.a2 != 0.0, self.a2 * np.log((1.0 - mu) / (1.0 - self.y)), 0.0)
        return float(np.sum(t1) + np.sum(t2))

    def slope(self, mu: np.ndarray) -> np.ndarray:
        """``d gap / d mu_i`` per row."""
        return self.a1 / mu - self.a2 / (1.0 - mu)


@dataclass(frozen=True)
class Family:
    """A GLM family with its link (what the Laplace engine needs of it).

    Attributes
    ----------
    name : str
        ``"binomial"``, ``"poisson"``, ``"gamma"``, ``"inverse_gaussian"`` or
        ``"negative_binomial"``.
    link : Link
    canonical : str
        Name of the canonical link (``""`` for the negative binomial: its
        canonical link ``log(mu / (mu + theta))`` is not offered).
    param : float or None
        The family's extra parameter at which it is evaluated: the dispersion
        ``phi`` of Gamma and inverse Gaussian (``Var(y) = phi V(mu) / w``), the
        shape ``k`` of the negative binomial (``Var(y) = mu + mu^2 / k``, R's
        ``theta``); ``None`` for binomial and Poisson (and while not yet set).
    fixed_param : bool
        The parameter was given by the user (not estimated).
    information : str
        ``"expected"`` (lme4: Fisher weights in ``log det``) or ``"observed"``
        (glmmTMB: the negative second derivative of the log-likelihood in
        ``eta`` at the modes); the same for canonical links.
    """

    name: str
    link: Link
    canonical: str
    param: float | None = None
    fixed_param: bool = False
    information: str = "expected"

    # ---------------------------------------------------------------- pieces
    @property
    def has_param(self) -> bool:
        """A family with a dispersion or shape (Gamma, inverse Gaussian, NB)."""
        return self.name in PARAM_FAMILIES

    @property
    def phi(self) -> float:
        """Dispersion in the working weights and the deviance (1 but for Gamma and
        inverse Gaussian)."""
        if self.name in ("gamma", "inverse_gaussian"):
            return self._value()
        return 1.0

    def _value(self) -> float:
        if self.param is None:
            raise ArgumentError(f"the {self.name} family's parameter is not set")
        return float(self.param)

    def with_param(self, value: float) -> "Family":
        """The same family evaluated at another dispersion / shape."""
        return replace(self, param=float(value))

    def variance(self, mu: np.ndarray) -> np.ndarray:
        """``Var(y) / phi`` as a function of the mean (``phi`` included for Gamma
        and inverse Gaussian, so that the working weights carry it)."""
        mu = np.asarray(mu, dtype=float)
        if self.name == "binomial":
            return mu * (1.0 - mu)
        if self.name == "gamma":
            return self.phi * mu * mu
        if self.name == "inverse_gaussian":
            return self.phi * mu ** 3
        if self.name == "negative_binomial":
            return mu + mu * mu / self._value()
        return mu

    def weights(self, mu: np.ndarray, mu_eta: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """Expected-information (Fisher) working weights ``w (dmu/deta)^2 / V(mu)``."""
        return pw * mu_eta * mu_eta / self.variance(mu)

    def observed_weights(self, y: np.ndarray, eta: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """``-d^2 log p(y | eta) / d eta^2`` per row: the Fisher weight minus
        ``w (y - mu) d/deta (mu_eta / V)`` (central difference in ``eta``; 0 for a
        canonical link)."""
        eta = np.asarray(eta, dtype=float)
        mu = self.link.linkinv(eta)
        fisher = self.weights(mu, self.link.mu_eta(eta), pw)
        if self.link.name == self.canonical:
            return fisher
        h = 1e-5 * (1.0 + np.abs(eta))

        def ratio(e):
            return self.link.mu_eta(e) / self.variance(self.link.linkinv(e))

        slope = (ratio(eta + h) - ratio(eta - h)) / (2.0 * h)
        return fisher - pw * (np.asarray(y, dtype=float) - mu) * slope

    def loglik_terms(self, y: np.ndarray, mu: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """``log p(y_i | mu_i)`` per row (lme4's ``logLik`` convention; for Gamma,
        inverse Gaussian and NB the prior weight multiplies the log-density, as
        R's ``family$aic`` and glmmTMB)."""
        y = np.asarray(y, dtype=float)
        mu = np.asarray(mu, dtype=float)
        if self.name == "binomial":
            m = np.round(pw)
            k = np.round(pw * y)
            return (gammaln(m + 1.0) - gammaln(k + 1.0) - gammaln(m - k + 1.0)
                    + xlogy(k, mu) + xlog1py(m - k, -mu))
        if self.name == "gamma":  # dgamma(y, shape = 1/phi, scale = mu phi)
            a = 1.0 / self.phi
            return pw * (-gammaln(a) - a * np.log(mu / a) + (a - 1.0) * np.log(y) - a * y / mu)
        if self.name == "inverse_gaussian":
            phi = self.phi
            return pw * (-0.5 * np.log(2.0 * np.pi * phi * y ** 3)
                         - (y - mu) ** 2 / (2.0 * phi * y * mu * mu))
        if self.name == "negative_binomial":  # dnbinom(y, size = k, mu = mu)
            # log Gamma(y+k) - log Gamma(k) - log y! = -log y - B(k, y) (y > 0), and
            # k log(k/(k+mu)) + y log(mu/(k+mu)) with log1p: no cancellation for a
            # huge shape (the Poisson limit)
            k = self._value()
            yp = np.maximum(y, 1.0)
            comb = np.where(y > 0, -np.log(yp) - (betaln(k, yp) + y * np.log(k)), 0.0)
            return pw * (comb + xlogy(y, mu) - (k + y) * np.log1p(mu / k))
        return pw * (xlogy(y, mu) - mu - gammaln(y + 1.0))

    def loglik(self, y, mu, pw) -> float:
        """``sum_i log p(y_i | mu_i)``."""
        return float(np.sum(self.loglik_terms(y, mu, pw)))

    def count_gap(self, y, pw) -> CountGap | None:
        """Binomial rows whose log-likelihood counts differ from the deviance's
        (see :class:`CountGap`); ``None`` when there are none or another family."""
        if self.name != "binomial":
            return None
        y = np.asarray(y, dtype=float)
        pw = np.asarray(pw, dtype=float)
        k = np.round(pw * y)
        a1 = k - pw * y
        a2 = (np.round(pw) - k) - pw * (1.0 - y)
        ulp = 1e-12 * np.maximum(pw, 1.0)  # w * (s / w) != s by rounding only: no gap
        a1 = np.where(np.abs(a1) > ulp, a1, 0.0)
        a2 = np.where(np.abs(a2) > ulp, a2, 0.0)
        if not (np.any(a1 != 0.0) or np.any(a2 != 0.0)):
            return None
        return CountGap(a1, a2, y)

    def saturated_loglik(self, y, pw) -> float:
        """The log-likelihood at ``mu = y``."""
        return self.loglik(y, np.asarray(y, dtype=float), pw)

    def dev_resids(self, y: np.ndarray, mu: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """Squared deviance residuals ``2 (l_sat - l)`` per row (so divided by
        ``phi`` for Gamma and inverse Gaussian: R's ``dev.resids / phi``).

        Written as ``mu h(y / mu)`` with ``h(t) = t log t - t + 1`` (and the same
        for ``1 - y`` of a binomial), ``h`` from its series near ``t = 1``: no
        cancellation between ``y log(y / mu)`` and ``y - mu`` when counts are huge
        and the fit is close, so the objective keeps its digits there.
        """
        y = np.asarray(y, dtype=float)
        mu = np.asarray(mu, dtype=float)
        if self.name == "binomial":
            if np.all((y == 0.0) | (y == 1.0)):  # 0/1 rows: -2 w log P(y)
                with np.errstate(divide="ignore"):
                    return -2.0 * pw * np.where(y == 1.0, np.log(mu), np.log1p(-mu))
            return 2.0 * pw * (mu * _h(y / mu) + (1.0 - mu) * _h((1.0 - y) / (1.0 - mu)))
        if self.name == "gamma":  # 2 w (-log(y/mu) + (y - mu)/mu)
            s = (y - mu) / mu
            return 2.0 * pw * (s - np.log1p(s)) / self.phi
        if self.name == "inverse_gaussian":
            return pw * (y - mu) ** 2 / (y * mu * mu) / self.phi
        if self.name == "negative_binomial":
            # 2 w (y log(y/mu) - (y + k) log((y + k)/(mu + k)))
            k = self._value()
            return 2.0 * pw * (mu * _h(y / mu) - (mu + k) * _h((y + k) / (mu + k)))
        return 2.0 * pw * mu * _h(y / mu)

    def simulate(self, mu: np.ndarray, pw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One response per row drawn at the means ``mu`` (R's ``family$simulate``).

        Binomial: successes out of ``round(w)`` trials, returned as proportions (the
        scale of the fit); Poisson: ``rpois(mu)``; Gamma: ``rgamma(shape = w / phi,
        rate = w / (phi mu))`` (R's ``Gamma()$simulate``: weights as shape
        multipliers, ``Var = phi mu^2 / w``); inverse Gaussian: mean ``mu``, shape
        ``lambda = w / phi`` (R's ``inverse.gaussian()$simulate`` through
        ``SuppDists::rinvGauss``; ``Var = phi mu^3 / w``); negative binomial:
        ``MASS::rnegbin(mu, theta)`` (``Var = mu + mu^2 / theta``; prior weights are
        ignored, as MASS's ``negative.binomial()$simulate``).

        Parameters
        ----------
        mu : numpy.ndarray
            Means on the response scale.
        pw : numpy.ndarray
            Prior weights (binomial trials).
        rng : numpy.random.Generator

        Returns
        -------
        numpy.ndarray
            The draws (float).
        """
        mu = np.asarray(mu, dtype=float)
        pw = np.broadcast_to(np.asarray(pw, dtype=float), mu.shape)
        if self.name == "binomial":
            trials = np.rint(pw).astype(np.int64)
            succ = rng.binomial(trials, np.clip(mu, 0.0, 1.0))
            return np.divide(succ, trials, out=np.zeros(len(mu)), where=trials > 0)
        if self.name == "poisson":
            return rng.poisson(mu).astype(float)
        if self.name == "gamma":
            shape = pw / self.phi
            return rng.gamma(shape, mu / shape)
        if self.name == "inverse_gaussian":
            return rng.wald(mu, pw / self.phi)
        if self.name == "negative_binomial":
            k = self._value()
            return rng.negative_binomial(k, k / (k + mu)).astype(float)
        raise ArgumentError(f"simulating from the {self.name} family is not available")

    def mustart(self, y: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """R's starting means (``family$initialize``)."""
        if self.name == "binomial":
            return (pw * y + 0.5) / (pw + 1.0)
        if self.name in ("gamma", "inverse_gaussian"):
            return np.asarray(y, dtype=float).copy()
        if self.name == "negative_binomial":
            return y + (y == 0) / 6.0
        return y + 0.1

    def support_error(self, y: np.ndarray) -> str | None:
        """What is wrong with response values outside the family's support, or None."""
        y = np.asarray(y, dtype=float)
        if self.name in ("poisson", "negative_binomial"):
            bad = (y < 0) | (y != np.round(y))
            return "must be whole counts >= 0" if bad.any() else None
        if self.name in ("gamma", "inverse_gaussian"):
            return "must be positive (> 0)" if np.any(y <= 0) else None
        return None

    def support_mask(self, y: np.ndarray) -> np.ndarray:
        """Rows whose response is outside the family's support."""
        y = np.asarray(y, dtype=float)
        if self.name in ("poisson", "negative_binomial"):
            return (y < 0) | (y != np.round(y))
        if self.name in ("gamma", "inverse_gaussian"):
            return ~(y > 0)
        if self.name == "binomial":
            return (y < 0) | (y > 1)
        return np.zeros(len(y), bool)

    @property
    def label(self) -> str:
        """The family as ``summary(m)`` prints it (``Negative Binomial(1.234)``)."""
        if self.name == "negative_binomial":
            k = "?" if self.param is None else f"{self.param:.4g}"
            return f"Negative Binomial({k})"
        return R_NAMES.get(self.name, self.name)

    def __str__(self) -> str:
        return f"{self.label}({self.link.name})"


def _h(t: np.ndarray) -> np.ndarray:
    """``t log t - t + 1`` (1 at ``t = 0``), accurate near ``t = 1``."""
    t = np.asarray(t, dtype=float)
    s = t - 1.0
    near = np.abs(s) < _H_NEAR
    out = xlogy(t, t) - s
    if near.any():
        sn = s[near]
        # sum_{k>=2} (-1)^k s^k / (k (k - 1)) = s^2 sum_j c_j s^j: the powers s^j
        # by a running product, the sum as one product with the coefficients,
        # smallest terms first (the first left-out term is below 1e-16 of the sum
        # for |s| < _H_NEAR)
        powers = np.empty((len(_H_COEF), len(sn)))
        powers[0] = 1.0
        powers[1:] = sn
        np.cumprod(powers, axis=0, out=powers)
        out[near] = (_H_COEF_ARRAY[::-1] @ powers[::-1]) * sn * sn
    return out


_H_NEAR = 0.1
_H_COEF = tuple((1.0 if k % 2 == 0 else -1.0) / (k * (k - 1)) for k in range(2, 20))
_H_COEF_ARRAY = np.array(_H_COEF)


PARAM_FAMILIES = ("gamma", "inverse_gaussian", "negative_binomial")
R_NAMES = {"gamma": "Gamma", "inverse_gaussian": "inverse.gaussian"}

FAMILIES = {"binomial": ("logit", ("logit", "probit", "cauchit", "cloglog")),
            "poisson": ("log", ("log", "sqrt", "identity")),
            "gamma": ("inverse", ("inverse", "log", "identity")),
            "inverse_gaussian": ("1/mu^2", ("1/mu^2", "inverse", "log", "identity")),
            "negative_binomial": ("log", ("log", "sqrt", "identity"))}

ALIASES = {"gamma": "gamma", "inverse_gaussian": "inverse_gaussian",
           "inverse.gaussian": "inverse_gaussian", "inversegaussian": "inverse_gaussian",
           "negative_binomial": "negative_binomial", "negative.binomial": "negative_binomial",
           "negativebinomial": "negative_binomial", "nbinom2": "negative_binomial",
           "negbin": "negative_binomial", "nb": "negative_binomial"}


def make_family(family, link: str | None = None, param: float | None = None) -> Family:
    """A :class:`Family` from a name or a Family.

    Parameters
    ----------
    family : str or Family
        ``"binomial"``, ``"poisson"``, ``"Gamma"``, ``"inverse.gaussian"`` (or
        ``"inverse_gaussian"``), ``"negative_binomial"`` (or ``"nbinom2"``,
        ``"negative.binomial"``), any case; or a :class:`Family` (e.g.
        ``ma.families.Binomial(link="probit")``).
    link : str, optional
        Overrides the family's link.
    param : float, optional
        A fixed dispersion (Gamma, inverse Gaussian) or NB shape; default:
        estimated.

    Raises
    ------
    ArgumentError
        Unknown family, a link the family does not take, or a bad parameter.
    """
    if isinstance(family, Family):
        if link is not None and link != family.link.name:
            family = make_family(family.name, link, family.param if family.fixed_param
                                 else param)
        return family if param is None else make_family(family.name, family.link.name, param)
    if not isinstance(family, str):
        raise ArgumentError(f"family must be a string such as 'binomial' or a Family, not "
                            f"{type(family).__name__}")
    if "(" in family:  # R's call spelling: 'binomial(link = "probit")'
        family, link, param = _r_call(family, link, param)
    key = family.lower().replace(" ", "")
    name = ALIASES.get(key, key)
    if name not in FAMILIES:
        raise ArgumentError(f"family {family!r} is not available; choose one of "
                            f"{', '.join(map(repr, FAMILIES))} (gaussian: use ma.lmm)")
    default, allowed = FAMILIES[name]
    canonical = "" if name == "negative_binomial" else default
    link = default if link is None else link
    if link not in allowed:
        raise ArgumentError(f"link {link!r} is not available for family {name!r}; choose one "
                            f"of {', '.join(map(repr, allowed))}")
    if param is not None:
        if name not in PARAM_FAMILIES:
            raise ArgumentError(f"family {name!r} has no dispersion or shape parameter")
        if not (np.isfinite(param) and param > 0):
            raise ArgumentError(f"the {name} family's parameter must be a positive number, "
                                f"not {param!r}")
        return Family(name, LINKS[link], canonical, float(param), True)
    return Family(name, LINKS[link], canonical)


_R_CALL = re.compile(r"^\s*([A-Za-z_.]+)\s*\((.*)\)\s*$")


def _r_call(text: str, link: str | None, param: float | None
            ) -> tuple[str, str | None, float | None]:
    """``(name, link, param)`` of R's ``family(link = "...")`` spelling: the link as
    the first argument or ``link =`` (quoted or not), and ``theta =`` for
    ``negative.binomial`` (MASS's fixed shape).  A link or parameter also given as an
    argument of :func:`make_family` must agree."""
    m = _R_CALL.match(text)
    if m is None:
        raise ArgumentError(f"family {text!r} is not a family name or an R call such as "
                            "'binomial(link = \"probit\")'")
    name, args = m.group(1), m.group(2).strip()
    got_link, got_param = None, None
    for i, arg in enumerate(a.strip() for a in args.split(",") if a.strip()):
        key, eq, val = arg.partition("=")
        key, val = (key.strip(), val.strip()) if eq else ("link" if i == 0 else "", key.strip())
        val = val.strip("\"'")
        if key == "link":
            got_link = val
        elif key == "theta":
            try:
                got_param = float(val)
            except ValueError:
                raise ArgumentError(f"family {text!r}: theta must be a number, not "
                                    f"{val!r}") from None
        else:
            raise ArgumentError(f"family {text!r}: argument {arg!r} is not understood "
                                "(link = or theta =)")
    for given, parsed, what in ((link, got_link, "link"), (param, got_param, "parameter")):
        if given is not None and parsed is not None and given != parsed:
            raise ArgumentError(f"family {text!r} says {what} {parsed!r} but {what}= says "
                                f"{given!r}")
    return (name, link if got_link is None else got_link,
            param if got_param is None else got_param)


# ------------------------------------------------------------------ objects
def Binomial(link: str = "logit") -> Family:  # noqa: N802 (R's and statsmodels' spelling)
    """``binomial(link)``: ``"logit"``, ``"probit"``, ``"cauchit"``, ``"cloglog"``."""
    return make_family("binomial", link)


def Poisson(link: str = "log") -> Family:  # noqa: N802
    """``poisson(link)``: ``"log"``, ``"sqrt"``, ``"identity"``."""
    return make_family("poisson", link)


def Gamma(link: str = "inverse", dispersion: float | None = None) -> Family:  # noqa: N802
    """``Gamma(link)``: ``"inverse"``, ``"log"``, ``"identity"``; the dispersion
    is estimated unless given."""
    return make_family("gamma", link, dispersion)


def InverseGaussian(link: str = "1/mu^2", dispersion: float | None = None  # noqa: N802
                    ) -> Family:
    """``inverse.gaussian(link)``: ``"1/mu^2"``, ``"inverse"``, ``"log"``,
    ``"identity"``; the dispersion is estimated unless given."""
    return make_family("inverse_gaussian", link, dispersion)


def NegativeBinomial(theta: float | None = None, link: str = "log") -> Family:  # noqa: N802
    """Negative binomial (glmer.nb, glmmTMB's ``nbinom2``): ``Var = mu + mu^2/theta``;
    ``theta`` (the shape) is estimated unless given (then as MASS's
    ``negative.binomial(theta)``)."""
    return make_family("negative_binomial", link, theta)
