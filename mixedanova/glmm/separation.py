"""Separation: fixed effects whose maximum-likelihood estimates are infinite.

For a binomial response, the fixed-effects design ``X`` separates the data when
some direction ``b != 0`` has ``x_i'b >= 0`` on every row whose response is all
successes, ``x_i'b <= 0`` on every row that is all failures and ``x_i'b = 0`` on
the rows with both: moving ``beta`` along ``b`` then never lowers the
likelihood of any row, whatever the random effects, and the likelihood keeps
rising towards an infinite estimate (complete separation when every
inequality can be strict, quasi-complete otherwise).  As the
``safeBinaryRegression`` / ``detectseparation`` packages (Konis 2007), a linear
program finds such a direction: maximize ``sum_i s_i x_i'b`` (``s_i = +1`` for
successes, ``-1`` for failures) subject to the sign constraints and
``-1 <= b_j <= 1`` (columns scaled to a maximum of 1); a positive optimum is a
separating direction, and the coefficients with ``b_j != 0`` are the infinite
ones (``+inf`` or ``-inf`` by the sign of ``b_j``).

Counts with a log link (Poisson, negative binomial) have the same problem when a
direction has ``x_i'b <= 0`` on rows with ``y = 0`` (strict on some) and
``x_i'b = 0`` on the others (e.g. a factor level whose counts are all 0): the
estimate is ``-inf`` there.

When the ordinary fit fails on separated data, the fit at the separation limit
is returned instead (:func:`limit_data`): the separated direction held far out
(the separated rows at least 40 on the link scale on their side, so that they
leave the likelihood), the remaining coefficients free in the complement of the
direction; it equals the fit without the separated rows, and the infinite
coefficients get a NaN standard error.  Complete separation leaves nothing to
fit: an error names the coefficients.

Random effects are not part of the check (their penalty keeps the modes
finite), but levels whose responses are all 0 or all 1 are listed: with a
large variance their modes run far out; that is noted, not an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .families import Family
from .fit import GlmmFit
from .laplace import GlmmData

__all__ = ["SeparationReport", "check_separation", "fixed_separation", "suspected", "LARGE",
           "LimitFit", "limit_data", "expand_limit_fit",
           "separating_direction", "separation_message"]

_TOL = 1e-7
_FULL_RANK = 1e-6  # smallest / largest singular value of X[equal] taken as full rank
LARGE = 100_000  # rows above which the linear program runs only on suspicion
_MODE_RUNS_OFF = 10.0  # |conditional mode| on the link scale worth a note


@dataclass(frozen=True)
class SeparationReport:
    """What the separation check found.

    Attributes
    ----------
    coefficients : dict
        Coefficient name -> ``"+inf"`` or ``"-inf"``: the estimates that are
        infinite (their reported values are just where the optimizer stopped).
    complete : bool
        Complete separation (every row strictly on its side); else quasi-complete.
    extreme_groups : dict
        Grouping factor -> levels whose responses are all 0 or all 1 (binomial)
        or all 0 (counts).
    runaway_groups : dict
        Those of ``extreme_groups`` whose conditional mode exceeds 10 in absolute
        value on the link scale.
    message : str
        The warning text ("" when nothing is worth a warning).
    """

    coefficients: dict = field(default_factory=dict)
    complete: bool = False
    extreme_groups: dict = field(default_factory=dict)
    runaway_groups: dict = field(default_factory=dict)
    message: str = ""

    @property
    def separated(self) -> bool:
        """Some fixed-effect estimate is infinite."""
        return bool(self.coefficients)


def separating_direction(X: np.ndarray, upper: np.ndarray, lower: np.ndarray,
                         equal: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """A direction ``b`` with ``X[upper] b >= 0``, ``X[lower] b <= 0``,
    ``X[equal] b = 0`` and a positive total, or ``None``.

    Returns
    -------
    direction : numpy.ndarray or None
        In the units of ``X``'s columns, entries at rounding level set to 0.
    complete : bool
        Every row of ``upper`` and ``lower`` can be strictly on its side.
    """
    from scipy.optimize import linprog

    if X.shape[1] == 0 or not (upper.any() or lower.any()):
        return None, False
    scale = np.max(np.abs(X), axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    Xs = X / scale
    if equal.sum() >= X.shape[1]:
        # X[equal] b = 0 leaves only b = 0 when those rows have full column rank:
        # no direction, without the linear program (its answer there); only a
        # well-conditioned block is taken as such, else the program decides
        sv = np.linalg.svd(Xs[equal], compute_uv=False)
        if sv[-1] > _FULL_RANK * sv[0]:
            return None, False
    s = np.where(upper, 1.0, np.where(lower, -1.0, 0.0))
    ineq = upper | lower
    A_ub = -(s[ineq, None] * Xs[ineq])          # s_i x_i'b >= 0
    A_eq = Xs[equal] if equal.any() else None
    b_eq = np.zeros(int(equal.sum())) if equal.any() else None
    c = -(s[ineq] @ Xs[ineq])                     # maximize sum s_i x_i'b
    p = X.shape[1]
    res = linprog(c, A_ub=A_ub, b_ub=np.zeros(len(A_ub)), A_eq=A_eq, b_eq=b_eq,
                  bounds=[(-1.0, 1.0)] * p, method="highs")
    if res.status != 0 or -res.fun <= _TOL * max(1, int(ineq.sum())) ** 0.5:
        return None, False
    b = np.where(np.abs(res.x) > 1e-6, res.x, 0.0)
    if not np.any(b):
        return None, False
    # complete: maximize t with s_i x_i'b >= t on every row, t <= 1
    A2 = np.hstack([A_ub, np.ones((len(A_ub), 1))])
    A2eq = None if A_eq is None else np.hstack([A_eq, np.zeros((len(A_eq), 1))])
    c2 = np.zeros(p + 1)
    c2[-1] = -1.0
    r2 = linprog(c2, A_ub=A2, b_ub=np.zeros(len(A2)), A_eq=A2eq, b_eq=b_eq,
                 bounds=[(-1.0, 1.0)] * p + [(None, 1.0)], method="highs")
    complete = bool(r2.status == 0 and -r2.fun > _TOL and not equal.any())
    return b / scale, complete


def _rows(family: Family, data: GlmmData) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    y, pw = data.y, data.pw
    used = pw > 0
    if family.name == "binomial":
        return used & (y >= 1), used & (y <= 0), used & (y > 0) & (y < 1)
    if family.name in ("poisson", "negative_binomial") and family.link.name == "log":
        return np.zeros_like(used), used & (y <= 0), used & (y > 0)
    return None


def _extreme_levels(family: Family, data: GlmmData) -> list[np.ndarray]:
    out = []
    y, used = data.y, data.pw > 0
    for t in data.terms:
        n = np.bincount(t.codes[used], minlength=t.nlev)
        lo = np.bincount(t.codes[used], weights=(y[used] <= 0).astype(float), minlength=t.nlev)
        hi = np.bincount(t.codes[used], weights=(y[used] >= 1).astype(float), minlength=t.nlev)
        ext = (n > 0) & (lo == n)
        if family.name == "binomial":
            ext |= (n > 0) & (hi == n)
        out.append(ext)
    return out


def _first_of_distinct_rows(A: np.ndarray) -> np.ndarray:
    """The first row of each distinct row of ``A``, in the rows' lexicographic
    order (``np.unique(A, axis=0, return_index=True)[1]``, without its slow sort
    of rows: distinct rows by their bytes, -0.0 made 0.0, then sorted)."""
    B = np.ascontiguousarray(A + 0.0, dtype=float)
    rows = B.view(np.dtype((np.void, B.dtype.itemsize * B.shape[1]))).ravel()
    _, first = np.unique(rows, return_index=True)
    return first[np.lexsort(B[first].T[::-1])]


def fixed_separation(family: Family, data: GlmmData, x_names
                     ) -> tuple[dict, bool, np.ndarray | None] | None:
    """The infinite fixed-effect estimates (name -> ``"+inf"``/``"-inf"``),
    whether the separation is complete and the separating direction; None when
    the family has no such check.

    Rows with the same ``x`` and the same side are one constraint (the linear
    program is on the distinct rows).
    """
    rows = _rows(family, data)
    if rows is None:
        return None
    upper, lower, equal = rows
    side = np.where(upper, 1, np.where(lower, -1, np.where(equal, 0, 2)))
    keep = side != 2
    X, side = data.X[keep], side[keep]
    if len(X):
        first = _first_of_distinct_rows(np.column_stack([X, side]))
        X, side = X[first], side[first]
    direction, complete = separating_direction(X, side == 1, side == -1, side == 0)
    if direction is None:
        return {}, False, None
    return ({str(n): ("+inf" if v > 0 else "-inf") for n, v in zip(x_names, direction)
             if v != 0}, complete, direction)


def suspected(fit: GlmmFit | None, X: np.ndarray) -> bool:
    """Symptoms of separation after a fit (for data too large to check always):
    no fit, not converged, or a coefficient moving the linear predictor by more
    than 30 over its column's range."""
    if fit is None or not fit.converged:
        return True
    if X.shape[1] == 0:
        return False
    span = np.max(np.abs(X - X.mean(axis=0)), axis=0)
    span = np.where(span > 0, span, np.max(np.abs(X), axis=0))
    return bool(np.any(np.abs(fit.beta) * span > 30.0))


def separation_message(coefs: dict, complete: bool, direction=None,
                       fitted: bool = True, limit: bool = False) -> str:
    """The text naming the infinite estimates (``fitted``: a fit was returned;
    ``limit``: the fit at the separation limit)."""
    kind = "complete" if complete else "quasi-complete"
    what = ", ".join(f"{n!r} ({v})" for n, v in coefs.items())
    tail = "; the reported value is where the optimizer stopped" if fitted else ""
    if limit:
        tail = ("; reported at a point far along the separating direction, with SE NaN, "
                "and the other estimates at the limit: the fit without the separated rows")
    return (f"{kind} separation: the maximum-likelihood estimate of {what} is infinite "
            f"(the fixed-effects design separates the responses{tail})")


def check_separation(family: Family, data: GlmmData, x_names, fit: GlmmFit,
                     group_levels: list | None = None,
                     group_names: list | None = None,
                     fixed: tuple | None = None,
                     limit: bool = False) -> SeparationReport | None:
    """Separation of the fixed effects and all-0 / all-1 levels (module docstring).

    Parameters
    ----------
    family : Family
    data : GlmmData
    x_names : sequence of str
        Names of ``X``'s columns.
    fit : GlmmFit
        For the conditional modes of the all-0 / all-1 levels.
    group_levels, group_names : list, optional
        Per random-effects term: its level labels and grouping factor name.
    fixed : tuple, optional
        :func:`fixed_separation`'s answer, if already computed.
    limit : bool
        The fit is the one at the separation limit (:func:`limit_data`).

    Returns
    -------
    SeparationReport or None
        None when the family has no such check (Gamma, inverse Gaussian,
        counts with a link other than log).
    """
    if fixed is None:
        fixed = fixed_separation(family, data, x_names)
    if fixed is None:
        return None
    coefs, complete = fixed[0], fixed[1]
    extreme, runaway = {}, {}
    ext = _extreme_levels(family, data)
    templates = data.layout.templates(fit.theta)
    pos = 0
    for k, (t, mask) in enumerate(zip(data.terms, ext)):
        size = t.nlev * t.q
        name = group_names[k] if group_names else f"term{k + 1}"
        levels = (list(group_levels[k]) if group_levels else list(range(t.nlev)))
        if mask.any():
            extreme.setdefault(name, []).extend(levels[i] for i in np.flatnonzero(mask))
            b = fit.state.u[pos:pos + size].reshape(t.nlev, t.q) @ templates[k].T
            far = mask & (np.abs(b[:, 0]) > _MODE_RUNS_OFF)
            if far.any():
                runaway.setdefault(name, []).extend(levels[i] for i in np.flatnonzero(far))
        pos += size
    parts = [separation_message(coefs, complete, limit=limit)] if coefs else []
    if runaway:
        what = "; ".join(f"{g}: {', '.join(map(str, lv[:5]))}"
                         + (f" and {len(lv) - 5} more" if len(lv) > 5 else "")
                         for g, lv in runaway.items())
        parts.append(f"levels whose responses are all 0 or all 1 have conditional modes "
                     f"beyond +-{_MODE_RUNS_OFF:g} on the link scale ({what})")
    return SeparationReport(coefficients=coefs, complete=complete, extreme_groups=extreme,
                            runaway_groups=runaway, message="; ".join(parts))


_LIMIT_ETA = 40.0  # |shift of the linear predictor| on the separated rows


@dataclass(frozen=True)
class LimitFit:
    """The data of the fit at the separation limit.

    ``beta = N gamma + scale * direction``: ``gamma`` the coefficients of the
    reduced design ``X N`` (``N`` a basis of the complement of the separating
    direction), and the separated rows pushed ``_LIMIT_ETA`` or more to their side
    through the offset.
    """

    data: GlmmData
    basis: np.ndarray
    direction: np.ndarray
    scale: float


def limit_data(data: GlmmData, direction: np.ndarray) -> LimitFit:
    """The fit at the limit of separation: the separated direction held far
    out, the other coefficients free (the finite part of the estimates)."""
    from scipy.linalg import null_space

    xb = data.X @ direction
    nz = np.abs(xb) > 1e-9 * max(1.0, float(np.max(np.abs(xb))))
    scale = _LIMIT_ETA / float(np.min(np.abs(xb[nz])))
    N = null_space(direction[None, :])
    return LimitFit(replace(data, X=data.X @ N, offset=data.offset + scale * xb), N,
                    direction, scale)


def expand_limit_fit(fit: GlmmFit, limit: LimitFit) -> GlmmFit:
    """The reduced fit in the original coefficients: ``beta`` at the limit
    point, ``vcov`` ``N V N'`` with NaN rows for the separated coefficients,
    no Hessian, and ``converged=False``."""
    N, b = limit.basis, limit.direction
    k = len(fit.theta)
    p = N.shape[0]
    beta = N @ fit.beta + limit.scale * b
    vcov = N @ fit.vcov_beta @ N.T
    sep = b != 0
    vcov[sep, :] = np.nan
    vcov[:, sep] = np.nan
    free = np.concatenate([fit.free[:k], np.ones(p, bool)])
    return replace(fit, beta=beta, vcov_beta=vcov, hessian=np.full((k + p, k + p), np.nan),
                   free=free, gradient=np.full(k + p, np.nan), converged=False,
                   stage1_beta=None)
