"""Power by simulation (simr's ``powerSim`` and ``powerCurve``), on the batch engine.

For each design size (``breaks`` of a grouping factor ``along``, extended as
simr's ``extend`` does), ``nsim`` responses are simulated from a
:class:`~mixedanova.batch.simulation.SimulationModel` and fitted together by
:func:`~mixedanova.batch.fit.lmm_many` (a simulation is many responses on one
design).  The test of each simulated data set is

* a fixed-effect coefficient (its t test) or a fixed term (its type III F
  test), with Satterthwaite or Kenward-Roger df;
* a random term: the likelihood-ratio test of the model without it, as
  lmerTest's ``ranova(m, reduce.terms = FALSE)`` (both models fitted by the
  model's method, REML or ML; chi-square on the difference in parameters);
* with ``method="ANOVA"``: the EMS F test of that source (method of moments).

Power is the share of significant tests among the fits that succeeded and
converged; the others are counted in ``n_failed``, never dropped silently.
``ci_low``/``ci_high`` are the Clopper-Pearson (exact binomial) interval.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd

from ..errors import ArgumentError, UnknownNameError

__all__ = ["power", "PowerTable", "resolve_test"]

_LOG2PI = math.log(2.0 * math.pi)


class PowerTable(pd.DataFrame):
    """Power estimates, one row per break: ``power, ci_low, ci_high, nsim, n_failed``
    (and the size column when ``along=`` was given); :meth:`plot_curve` draws them."""

    _metadata = ["along", "test"]

    @property
    def _constructor(self):
        return PowerTable

    def plot_curve(self, ax=None, *, alpha_line: float | None = 0.8):
        """The power curve with its binomial intervals (matplotlib, imported here).

        Parameters
        ----------
        ax : matplotlib Axes, optional
        alpha_line : float, optional
            Draw a dashed reference line at this power (None: none).
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        along = getattr(self, "along", None)
        x = self[along].to_numpy() if along and along in self.columns else \
            np.arange(1, len(self) + 1)
        y = self["power"].to_numpy()
        err = np.vstack([y - self["ci_low"].to_numpy(), self["ci_high"].to_numpy() - y])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3)
        if alpha_line is not None:
            ax.axhline(alpha_line, linestyle="--", color="grey", linewidth=1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(along or "break")
        ax.set_ylabel("power")
        ax.set_title(f"Power for {getattr(self, 'test', '')}")
        return ax


@dataclasses.dataclass(frozen=True)
class TestSpec:
    """What one simulated data set's test is: ``kind`` in ``"t"``, ``"F"``, ``"LRT"``,
    ``"EMS"``; the coefficient index, the hypothesis matrix, the reduced model's
    formula and the number of parameters it lacks, or the EMS source."""

    kind: str
    label: str
    index: int = -1
    L: np.ndarray | None = None
    reduced: str | None = None
    df: int = 0


def _random_labels(design) -> list[tuple[set, int]]:
    from ..design.formula import grouping_text

    out = []
    for k, r in enumerate(design.formula.random):
        group = grouping_text(r.factors)
        src = r.source.strip()
        inner = src[1:-1] if src.startswith("(") and src.endswith(")") else src
        names = {group, src, inner.strip(), f"({inner.strip()})",
                 "(" + " | ".join(s.strip() for s in inner.split("|", 1)) + ")",
                 " | ".join(s.strip() for s in inner.split("|", 1))}
        out.append((names, k))
    return out


def resolve_test(test: str, design, method: str) -> TestSpec:
    """The :class:`TestSpec` of ``test`` on ``design`` (names checked here)."""
    from ..design.formula import grouping_text
    from ..inference.hypotheses import hypothesis_matrices

    if not isinstance(test, str):
        raise ArgumentError(f"test must name a fixed-effect term or a random term, not "
                            f"{test!r}")
    randoms = _random_labels(design)
    if method == "ANOVA":
        for names, k in randoms:
            if test in names:
                return TestSpec("EMS", test, L=None, reduced=grouping_text(
                    design.formula.random[k].factors))
        fixed_terms = [":".join(t.variables) for t in design.fixed_terms if t.variables]
        if test in fixed_terms:
            return TestSpec("EMS", test, reduced=test)
        raise UnknownNameError(f"test={test!r} is not a source of the model; with "
                               f"method='ANOVA' it is one of "
                               f"{', '.join(map(repr, fixed_terms + [grouping_text(r.factors) for r in design.formula.random]))}")
    names = list(design.x_names)
    if test in names:
        return TestSpec("t", test, index=names.index(test))
    hyps = hypothesis_matrices(design, 3)
    if test in hyps:
        return TestSpec("F", test, L=np.asarray(hyps[test], dtype=float))
    for labels, k in randoms:
        if test in labels:
            f = design.formula
            rest = [r for j, r in enumerate(f.random) if j != k]
            parts = [f.fixed] + [f"({r.expr} | {grouping_text(r.factors)})" for r in rest]
            q = _term_q(design, k)
            return TestSpec("LRT", test, reduced="~ " + " + ".join(parts) if rest else None,
                            df=q * (q + 1) // 2)
    raise UnknownNameError(
        f"test={test!r} is neither a fixed effect ({', '.join(map(repr, names))}), a fixed "
        f"term ({', '.join(map(repr, hyps))}) nor a random term "
        f"({', '.join(repr(grouping_text(r.factors)) for r in design.formula.random)})")


def _term_q(design, k: int) -> int:
    """Columns of the ``k``-th random term of the formula."""
    r = design.formula.random[k]
    for b in design.blocks:
        if tuple(b.factors) == tuple(r.factors) and b.expr == r.expr:
            return len(b.columns)
    raise ArgumentError(f"the random term {r.source} has no block in the design")


def _clopper_pearson(x: int, n: int, level: float) -> tuple[float, float]:
    from scipy import stats

    if n == 0:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo = 0.0 if x == 0 else float(stats.beta.ppf(a, x, n - x + 1))
    hi = 1.0 if x == n else float(stats.beta.ppf(1.0 - a, x + 1, n - x))
    return lo, hi


def _lm_criteria(X: np.ndarray, Y: np.ndarray, reml: bool) -> np.ndarray:
    """-2 log-likelihood of linear models (R's ``logLik(lm, REML = reml)``), per column."""
    n, p = X.shape
    q, r = np.linalg.qr(X)
    resid = Y - q @ (q.T @ Y)
    rss = np.sum(resid * resid, axis=0)
    N = n - p if reml else n
    val = 0.5 * (-N * (_LOG2PI + 1.0 - math.log(N) + np.log(rss)))
    if reml:
        val -= float(np.sum(np.log(np.abs(np.diag(r)))))
    return -2.0 * val


def _p_values(model, spec: TestSpec, batch, Y: np.ndarray, ddf: str, n_jobs: int,
              progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """p value and failure flag of each simulated response (columns of ``Y``)."""
    from scipy import stats

    from .fit import prepare_batch, run_batch
    from .results import ManyResults

    if spec.kind == "EMS":
        return _ems_p_values(batch.design, spec, Y)
    full = ManyResults(batch, run_batch(batch, Y, n_jobs=n_jobs, progress=progress),
                       list(range(Y.shape[1])))
    failed = full.fit.failed | ~full.fit.converged
    if spec.kind == "t":
        tab = full.fixed(ddf)
        p = tab["p"].to_numpy().reshape(Y.shape[1], -1)[:, spec.index]
    elif spec.kind == "F":
        tab = full.anova(3, ddf)
        p = tab.loc[tab["term"] == spec.label, "p"].to_numpy()
    else:
        reml = model.method == "REML"
        if spec.reduced is None:
            crit0 = _lm_criteria(batch.design.X, Y, reml)
        else:
            rb = prepare_batch(spec.reduced, batch.design.data, method=model.method,
                               ddf="none")
            red = run_batch(rb, Y, n_jobs=n_jobs, progress=progress)
            crit0 = red.objective
            failed = failed | red.failed | ~red.converged
        lrt = crit0 - full.fit.objective
        with np.errstate(invalid="ignore"):
            p = stats.chi2.sf(lrt, spec.df)
    p = np.where(failed, np.nan, p)
    return p, failed | ~np.isfinite(p)


def _ems_p_values(design, spec: TestSpec, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EMS F test of one source per response (the method-of-moments engine)."""
    from ..design import DesignError
    from ..moments.anova_data import AnovaData
    from ..moments.moments import fit_anova_data

    fixed, intercept = [], False
    for t in design.fixed_terms:
        if not t.variables:
            intercept = bool(t.columns)
            continue
        fixed.append(t.variables)
    random = [b.factors for b in design.blocks]
    for b in design.blocks:
        if b.columns != ("(Intercept)",):
            raise DesignError(f"method='ANOVA' needs random intercepts (1 | g) only; "
                              f"{b.source} has columns {', '.join(b.columns)}")
    names = dict.fromkeys(v for t in fixed + random for v in t)
    coded = AnovaData(y=Y[:, 0], response="y",
                      variables=tuple(design.variable(v) for v in names))
    k = Y.shape[1]
    p = np.full(k, np.nan)
    failed = np.zeros(k, bool)
    for j in range(k):
        try:
            st = fit_anova_data(dataclasses.replace(coded, y=Y[:, j]), fixed, random,
                                intercept=intercept)
            p[j] = float(st.table.loc[spec.reduced, "p"])
        except (ValueError, KeyError, ArithmeticError, np.linalg.LinAlgError):
            failed[j] = True
    failed |= ~np.isfinite(p)
    return p, failed


def power(model, test: str, *, nsim: int = 1000, alpha: float = 0.05, seed=None,
          along: str | None = None, breaks=None, ddf: str = "satterthwaite",
          n_jobs: int | None = 1, progress: bool = False,
          level: float = 0.95) -> PowerTable:
    """Power of a test by simulation (simr's ``powerSim`` / ``powerCurve``).

    Parameters
    ----------
    model : SimulationModel
        From :func:`~mixedanova.batch.simulation.simulation_model`.
    test : str
        For a GLMM (``simulation_model(..., family=)``): a fixed-effect
        coefficient, by its Wald z test (each data set fitted by ``ma.glmm``,
        one at a time).  Otherwise a fixed-effect coefficient (``"x"``, ``"trt[T.B]"``: t test), a fixed
        term (``"trt"``: type III F test), or a random term (``"block"``,
        ``"(1 | block)"``: likelihood-ratio test as ``ranova``; with
        ``method="ANOVA"`` the EMS F test of that source).
    nsim : int
        Simulations per break.
    alpha : float
        Significance level.
    seed : int or numpy.random.Generator, optional
    along : str, optional
        A grouping factor (a column of the design) to extend, or
        ``"replicates"`` (each row repeated); ``breaks`` are its sizes.
    breaks : sequence of int, optional
        Sizes along ``along`` (default: the design as it is).
    ddf : {"satterthwaite", "kenward-roger"}
        Denominator df of the fixed-effect tests.
    n_jobs, progress
        As for :func:`~mixedanova.batch.fit.lmm_many`.
    level : float
        Level of the binomial (Clopper-Pearson) interval.

    Returns
    -------
    PowerTable
        One row per break: ``power, ci_low, ci_high, nsim, n_failed`` (after a
        column named ``along`` holding the size, when given).
    """
    from .fit import check_jobs, prepare_batch
    from .simulation import SimulationModel

    if not isinstance(model, SimulationModel):
        raise ArgumentError(f"model must be a SimulationModel (ma.simulation_model), not "
                            f"{type(model).__name__}")
    if isinstance(nsim, (bool, np.bool_)) or not isinstance(nsim, (int, np.integer)) \
            or nsim < 1:
        raise ArgumentError(f"nsim must be a positive whole number, not {nsim!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ArgumentError(f"alpha must be between 0 and 1, not {alpha!r}")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ArgumentError(f"level must be between 0 and 1, not {level!r}")
    n_jobs = check_jobs(n_jobs)
    if along is None and breaks is not None:
        raise ArgumentError("breaks= needs along= (a grouping factor or 'replicates')")
    if along is not None and breaks is None:
        raise ArgumentError("along= needs breaks= (the sizes)")
    sizes = [None] if along is None else list(np.atleast_1d(breaks))
    if along is not None and not sizes:
        raise ArgumentError("breaks is empty")
    rng = np.random.default_rng(seed)
    method = model.method
    rows = []
    for size in sizes:
        m = model if size is None else model.extended(along, size)
        if m.family is not None:  # a GLMM: ma.glmm per data set, Wald z test
            from .looped import check_glmm_test, glmm_p_values

            batch = prepare_batch(m.formula, m.data, ddf="none")
            check_glmm_test(test, batch.design)
            Y = m.simulate(int(nsim), rng, batch=batch)
            p, failed = glmm_p_values(m.with_data(batch.design.data), test, Y, progress,
                                      "" if size is None else f" ({along} = {size})")
        elif m.residual is not None:  # a residual structure: ma.lmm per data set
            from .looped import residual_p_values

            batch = prepare_batch(m.formula, m.data, method=method, ddf=ddf)
            spec = resolve_test(test, batch.design, method)
            Y = m.simulate(int(nsim), rng, batch=batch)
            used = m.data.iloc[batch.rows].reset_index(drop=True)
            p, failed = residual_p_values(m.with_data(used), spec, Y, batch.ddf, progress,
                                          "" if size is None else f" ({along} = {size})")
        else:
            batch = prepare_batch(m.formula, m.data,
                                  method="REML" if method == "ANOVA" else method,
                                  ddf="satterthwaite" if method == "ANOVA" else ddf)
            spec = resolve_test(test, batch.design, method)
            Y = m.simulate(int(nsim), rng, batch=batch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, failed = _p_values(m, spec, batch, Y, batch.ddf, n_jobs, progress)
        ok = ~failed
        x, n = int(np.sum(p[ok] < alpha)), int(ok.sum())
        lo, hi = _clopper_pearson(x, n, level)
        row = {"power": x / n if n else float("nan"), "ci_low": lo, "ci_high": hi,
               "nsim": int(nsim), "n_failed": int(failed.sum())}
        if along is not None:
            row = {along: int(size), **row}
        rows.append(row)
    out = PowerTable(pd.DataFrame(rows))
    out.along = along
    out.test = test
    return out
