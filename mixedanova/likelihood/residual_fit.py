"""Profiled criterion and optimization with a residual structure.

With ``R = sigma^2 Rrel(u)`` the REML criterion / ML deviance of the whitened
data plus ``log|Rrel(u)|`` is the criterion of the original data (``sigma``
and ``beta`` are profiled out exactly as for ``R = sigma^2 I``; REML's
``log|X'V^{-1}X|`` is that of the whitened ``X``).

Optimization has two stages.  (1) One bounded L-BFGS-B run over ``(theta, u)``
jointly (``u``: the residual parameters on nlme's unconstrained scale, see
:mod:`mixedanova.likelihood.residual`), with the analytic gradient in
``theta`` and central differences in ``u``; every new ``u`` whitens ``[Z X y]``
(``O(n)``) and forms the blocked cross-products again.  (2) The profile
``h(u) = min_theta f(theta, u)`` -- each value one
:func:`~mixedanova.likelihood.optimizer.optimize_theta` from the previous
``theta`` -- is polished by Newton steps on central differences, each accepted
only if it lowers ``h``; since every inner optimum is accurate to about 1e-13
relative, the differences are accurate and the polish reaches the optimum to
the precision of the objective.  If stage 1 fails, ``u`` is searched on the
profile instead (Brent for one parameter, Nelder-Mead for more);
``strategy="nested"`` always does so.  A final check of the profile's slope and
curvature in each ``u_i`` reports a missed optimum.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from .blocked import TermData
from .control import LmmControl, check_control
from .criterion import ProfiledDeviance
from .crossprod import CrossProducts, RowBlock, cross_products
from .optimizer import optimize_theta
from .residual import ResidualStructure, apply_whitener, whiten_terms
from .state import OptimizerSummary
from ..design.theta import ThetaLayout

__all__ = ["WhitenedDeviance", "ResidualDeviance", "ResidualFit", "optimize_residual",
           "gls_fit"]


@dataclass(frozen=True)
class ResidualFit:
    """The residual structure and its estimates (kept in ``FitState.residual``)."""

    structure: ResidualStructure
    u: np.ndarray
    info: dict = field(default_factory=dict, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return self.structure.names

    @property
    def natural(self) -> np.ndarray:
        """phi / rho, SD ratios, power, expon (in :attr:`names` order)."""
        return self.structure.natural(self.u)


class WhitenedDeviance(ProfiledDeviance):
    """:class:`ProfiledDeviance` of whitened data plus the constant ``log|Rrel|``."""

    def __init__(self, cp: CrossProducts, layout: ThetaLayout, reml: bool, logdet: float,
                 rows: tuple[RowBlock, ...] = ()) -> None:
        super().__init__(cp, layout, reml, rows=rows)
        self.logdet_r = float(logdet)

    def transformed(self, maps: list[np.ndarray]) -> "WhitenedDeviance":
        return type(self)(self.cp.transformed(maps), self.layout, self.reml, self.logdet_r,
                          rows=tuple(b.transformed(maps) for b in self.rows))

    def from_factor(self, f) -> float:
        return super().from_factor(f) + self.logdet_r

    def at_sigma(self, theta: np.ndarray, sigma: float) -> float:
        return super().at_sigma(theta, sigma) + self.logdet_r


class _ShiftedFactor:
    """A factor whose ``ldL2`` carries ``log|Rrel|`` (so that the pieces used by
    the Satterthwaite machinery, ``ldL2 + ldRX2`` and ``pwrss``, give the full
    criterion)."""

    def __init__(self, f, logdet: float) -> None:
        self._f = f
        self.ldL2 = f.ldL2 + logdet

    def __getattr__(self, name):
        return getattr(self._f, name)


class ResidualDeviance:
    """The criterion as a function of ``x = (theta, u)``.

    Parameters
    ----------
    terms, layout, X, y, reml
        As for :class:`ProfiledDeviance` (unwhitened).
    structure : ResidualStructure
    """

    def __init__(self, terms: list[TermData], layout: ThetaLayout, X: np.ndarray,
                 y: np.ndarray, reml: bool, structure: ResidualStructure) -> None:
        self.terms, self.layout, self.X, self.y = terms, layout, X, y
        self.reml = reml
        self.structure = structure
        self.n, self.p = X.shape
        self.k = layout.size
        self.constant = [structure.constant_within(t.codes) for t in terms]
        self._cache: dict[bytes, WhitenedDeviance | None] = {}
        self.nevals = 0

    @property
    def dof(self) -> int:
        return self.n - self.p if self.reml else self.n

    def at(self, u: np.ndarray) -> WhitenedDeviance | None:
        """The whitened criterion at ``u`` (``None`` outside the parameter space)."""
        u = np.asarray(u, dtype=float)
        key = u.tobytes()
        if key in self._cache:
            self._cache[key] = self._cache.pop(key)  # most recently used last
            return self._cache[key]
        while len(self._cache) >= 8:  # each holds O(n) arrays
            self._cache.pop(next(iter(self._cache)))
        w = whiten_terms(self.structure, u, self.terms, self.X, self.y, self.constant)
        self._cache[key] = None if w is None else WhitenedDeviance(
            cross_products(w[0], w[1], w[2]), self.layout, self.reml, w[3],
            rows=(RowBlock(tuple(w[0]), w[1], w[2]),))
        return self._cache[key]

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=float)
        return x[:self.k], x[self.k:]

    def __call__(self, x: np.ndarray) -> float:
        theta, u = self.split(x)
        dev = self.at(u)
        return math.inf if dev is None else dev(theta)

    def factor(self, x: np.ndarray):
        """Factor at ``x`` with ``log|Rrel|`` folded into ``ldL2``."""
        theta, u = self.split(x)
        dev = self.at(u)
        if dev is None:
            raise ArithmeticError("residual parameters outside their space")
        return _ShiftedFactor(dev.factor(theta), dev.logdet_r)

    def at_sigma(self, x: np.ndarray, sigma: float) -> float:
        theta, u = self.split(x)
        dev = self.at(u)
        return math.inf if dev is None else dev.at_sigma(theta, sigma)


def optimize_residual(rdev: ResidualDeviance, u0: np.ndarray | None = None,
                      theta0: np.ndarray | None = None, *, method: str = "SLSQP",
                      polish_steps: int = 6, strategy: str = "joint",
                      control: LmmControl | None = None
                      ) -> tuple[np.ndarray, OptimizerSummary, dict]:
    """Minimize the criterion over ``(theta, u)`` (nested; see the module docstring).

    ``control`` (:class:`~mixedanova.likelihood.control.LmmControl`, None: the
    defaults) sets the inner optimizer's settings and the joint stage's iteration limit.

    Returns
    -------
    u : numpy.ndarray
        Residual parameters at the optimum (unconstrained scale).
    opt : OptimizerSummary
        The inner optimization at that ``u`` (``feval`` counts all inner
        evaluations).
    info : dict
        ``outer_evals``, ``profile_min`` and the Newton ``polish`` record.
    """
    import time

    t0 = time.perf_counter()
    u0 = rdev.structure.start() if u0 is None else np.asarray(u0, dtype=float)
    best = {"theta": theta0, "f": math.inf}
    count = {"outer": 0, "inner": 0}

    control = check_control(control)
    # loose while Nelder-Mead explores, tight for the polish
    tol = {"inner": control.residual_inner_tol}

    def profile(u: np.ndarray) -> float:
        count["outer"] += 1
        dev = rdev.at(u)
        if dev is None:
            return math.inf
        start = best["theta"] if best["theta"] is not None else None
        try:
            opt = optimize_theta(dev, start, method=method, tol=tol["inner"], control=control)
        except (ValueError, FloatingPointError):
            return math.inf
        count["inner"] += opt.feval
        if not math.isfinite(opt.fmin):
            return math.inf
        if opt.fmin < best["f"]:
            best.update(theta=opt.theta, f=opt.fmin, u=np.array(u, dtype=float))
        return float(opt.fmin)

    k = len(u0)
    joint = _joint_stage(rdev, u0, theta0, count, control.residual_maxiter) \
        if strategy == "joint" else None
    if joint is not None:
        best.update(theta=joint[0], u=joint[1])
    else:
        simplex = np.vstack([u0] + [u0 + 0.5 * np.eye(k)[i] for i in range(k)])
        f0 = profile(u0)
        # Nelder-Mead gets close (u to 1e-5); the Newton polish below does the rest.
        # Its f tolerance is relative: the inner optima are accurate to ~1e-13 relative.
        fatol = 1e-12 * (1.0 + abs(f0)) if math.isfinite(f0) else 1e-8
        if k == 1:  # Brent on a wide interval (phi within 1 - 1e-6 of +-1)
            minimize_scalar(lambda v: profile(np.array([v])),
                            bounds=(u0[0] - 15.0, u0[0] + 15.0), method="bounded",
                            options={"xatol": 1e-5, "maxiter": 200})
        else:
            minimize(profile, u0, method="Nelder-Mead",
                     options={"initial_simplex": simplex, "xatol": 1e-5, "fatol": fatol,
                              "maxiter": 400 * k, "maxfev": 800 * k})
    tol["inner"] = control.tol
    u = np.asarray(best.get("u", u0), dtype=float)
    best["f"] = math.inf
    f = profile(u)
    polish = []
    h = 1e-4
    for _ in range(polish_steps):
        g = np.empty(k)
        H = np.empty((k, k))
        fp = np.empty(k)
        fm = np.empty(k)
        for i in range(k):
            e = np.zeros(k)
            e[i] = h
            fp[i], fm[i] = profile(u + e), profile(u - e)
            g[i] = (fp[i] - fm[i]) / (2 * h)
            H[i, i] = (fp[i] - 2 * f + fm[i]) / h**2
        for i in range(k):
            for j in range(i + 1, k):
                e = np.zeros(k)
                e[i], e[j] = h, h
                H[i, j] = H[j, i] = (profile(u + e) + profile(u - e) - fp[i] - fm[i]
                                     - fp[j] - fm[j] + 2 * f) / (2 * h * h)
        if not np.all(np.isfinite(g)) or not np.all(np.isfinite(H)):
            break
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.linalg.eigvalsh(H) > 0):
            break
        step_ok = False
        for shrink in (1.0, 0.5, 0.25):
            cand = u + shrink * step
            fc = profile(cand)
            if fc <= f:
                polish.append((float(np.max(np.abs(step))), f - fc))
                u, f, step_ok = cand, fc, True
                break
        if not step_ok or np.max(np.abs(step)) < 1e-7:
            break
    if best["f"] < f:  # a difference point of the polish was lower still
        u, f = best["u"], best["f"]
    messages = _check_outer(profile, u, f, h)
    dev = rdev.at(u)
    opt = optimize_theta(dev, best["theta"], method=method, control=control)
    # the inner summary at u, relabelled with the whole run's counts and time
    opt = dataclasses.replace(
        opt, method=f"{method} (theta); joint L-BFGS-B + Newton polish (residual)",
        feval=count["inner"] + opt.feval, niter=count["outer"],
        seconds=time.perf_counter() - t0)
    return u, opt, {"outer_evals": count["outer"], "profile_min": f, "polish": polish,
                    "messages": messages}


def _joint_stage(rdev: ResidualDeviance, u0: np.ndarray, theta0: np.ndarray | None,
                 count: dict, maxiter: int = 500) -> tuple[np.ndarray, np.ndarray] | None:
    """A first, cheap approach to the optimum: one bounded quasi-Newton run (L-BFGS-B)
    over ``(theta, u)`` with the analytic gradient in ``theta`` and central
    differences in ``u``.  It needs far fewer ``theta`` gradients than one inner
    optimization per ``u``; the nested Newton polish then makes the optimum exact.
    Returns ``(theta, u)``, or ``None`` when it fails (the caller then searches
    ``u`` by Brent / Nelder-Mead)."""
    k = rdev.k
    dev0 = rdev.at(u0)
    if dev0 is None:
        return None
    theta_start = dev0.start if theta0 is None else np.asarray(theta0, dtype=float)
    x0 = np.concatenate([theta_start, u0])

    def fun_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        count["outer"] += 1
        theta, u = rdev.split(x)
        dev = rdev.at(u)
        if dev is None:
            return math.inf, np.zeros_like(x)
        value, g_theta = dev.value_and_gradient(theta)
        g = np.empty_like(x)
        g[:k] = g_theta
        for i in range(len(u)):
            h = 1e-6 * (1.0 + abs(u[i]))
            e = np.zeros(len(u))
            e[i] = h
            fp = rdev(np.concatenate([theta, u + e]))
            fm = rdev(np.concatenate([theta, u - e]))
            g[k + i] = (fp - fm) / (2 * h)
        if not (math.isfinite(value) and np.all(np.isfinite(g))):
            return math.inf, np.zeros_like(x)
        return value, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in rdev.layout.lower]
    bounds += [(-15.0, 15.0)] * len(u0)
    try:
        res = minimize(fun_and_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-12, "gtol": 1e-7, "maxiter": maxiter})
    except (ValueError, FloatingPointError, ArithmeticError):
        return None
    if not np.isfinite(res.fun):
        return None
    theta, u = rdev.split(res.x)
    return theta, u


def _check_outer(profile, u: np.ndarray, f: float, h: float) -> tuple[str, ...]:
    """Central-difference slope and curvature of the profile in each ``u_i``:
    a Newton step ``|g_i / H_ii|`` above 1e-3 (unconstrained scale) or a
    non-positive curvature is reported."""
    out = []
    for i in range(len(u)):
        e = np.zeros(len(u))
        e[i] = h
        fp, fm = profile(u + e), profile(u - e)
        g = (fp - fm) / (2 * h)
        c = (fp - 2 * f + fm) / h**2
        if not (np.isfinite(c) and c > 0):
            out.append(f"the objective is flat or not convex in residual parameter {i} at the "
                       f"optimum (curvature {c:.3g}); its estimate is not well determined")
        elif abs(g / c) > 1e-3:
            out.append(f"failed to converge: residual parameter {i} is {abs(g / c):.3g} "
                       "(Newton step, unconstrained scale) from the optimum")
    return tuple(out)


def gls_fit(structure: ResidualStructure, X: np.ndarray, y: np.ndarray,
            reml: bool) -> tuple[float, np.ndarray]:
    """``-2 log-likelihood`` (REML: restricted) of ``y = X beta + e``, ``e ~ N(0,
    sigma^2 Rrel(u))``, minimized over ``u`` (nlme's ``gls``); returns ``(value, u)``.

    For the likelihood-ratio test of the last random-effects term of a model
    with a residual structure (``ranova``).
    """
    n, p = X.shape
    N = n - p if reml else n

    def crit(u: np.ndarray) -> float:
        W, logdet = structure.whitener(u, n)
        if not math.isfinite(logdet):
            return math.inf
        q, r = np.linalg.qr(apply_whitener(W, X))
        yw = apply_whitener(W, y)
        resid = yw - q @ (q.T @ yw)
        val = N * (math.log(2 * math.pi) + 1.0 - math.log(N) + math.log(float(resid @ resid)))
        val += logdet
        if reml:
            val += 2.0 * float(np.sum(np.log(np.abs(np.diag(r)))))
        return val

    u0 = structure.start()
    k = len(u0)
    res = minimize(crit, u0, method="Nelder-Mead",
                   options={"initial_simplex": np.vstack([u0] + [u0 + 0.5 * np.eye(k)[i]
                                                                 for i in range(k)]),
                            "xatol": 1e-9, "fatol": 1e-13 * (1.0 + abs(crit(u0))),
                            "maxiter": 2000 * k, "maxfev": 4000 * k})
    return float(res.fun), np.asarray(res.x, dtype=float)
