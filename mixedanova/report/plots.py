"""Diagnostic plots of a fit (matplotlib, the optional ``plot`` extra).

Rendering only: the numbers come from the results object (duck-typed; this
module never imports the results) or from a profile table passed in.
matplotlib is imported inside the functions, so the package imports without it;
each function returns the :class:`matplotlib.figure.Figure` (save it with
``fig.savefig("file.png")``; in a script without a display call
``matplotlib.use("Agg")`` first).

* :func:`plot_ranef`: caterpillar plot, lme4's ``dotplot(ranef(m, condVar = TRUE))``:
  the BLUPs of each grouping factor and column, sorted, with
  ``+- z_{(1+level)/2}`` conditional-SD intervals.
* :func:`plot_resid`: residuals against fitted values, a normal QQ plot of the
  residuals and one of the BLUPs of each random-effect column.
* :func:`plot_profile`: lme4's ``xyplot(profile(m))``: zeta against each
  parameter with the interval cutoffs.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import MixedAnovaError

__all__ = ["plot_ranef", "plot_resid", "plot_profile"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MixedAnovaError("plots need matplotlib: pip install 'mixedanova[plot]'") from exc
    return plt


def _panels(n: int, ncols: int, width: float, height: float):
    plt = _pyplot()
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _ranef_columns(res, group: str | None):
    groups = list(res.random_effects)
    if group is not None and group not in groups:
        raise MixedAnovaError(f"unknown grouping factor {group!r}; available: {', '.join(groups)}")
    out = []
    for g in ([group] if group else groups):
        blups, sds = res.random_effects[g], res.random_effects_sd[g]
        for col in blups.columns:
            out.append((g, col, blups[col], sds[col]))
    return out


def plot_ranef(res, group: str | None = None, level: float = 0.95, max_levels: int = 60):
    """Caterpillar plot of the BLUPs with conditional-SD intervals.

    Parameters
    ----------
    res : results object
        Needs ``random_effects`` and ``random_effects_sd``.
    group : str, optional
        One grouping factor (default: all).
    level : float
        Interval level: ``b ± z sd`` with ``z`` the normal quantile.
    max_levels : int
        Show at most this many levels per panel (those with the largest
        ``|b|``) so that big factors stay readable.

    Returns
    -------
    matplotlib.figure.Figure
    """
    z = stats.norm.ppf(0.5 + level / 2)
    cols = _ranef_columns(res, group)
    nmax = max(min(len(b), max_levels) for _, _, b, _ in cols)
    fig, axes = _panels(len(cols), 3, 4.0, max(2.5, 0.18 * nmax + 1.0))
    # one order of the levels for all panels of a grouping factor (lme4's dotplot):
    # that of its first column, so that a level can be followed across panels
    orders: dict = {}
    for g, col, b, sd in cols:
        if g not in orders:
            first = pd.Series(b)
            if len(first) > max_levels:
                first = first.loc[first.abs().sort_values(ascending=False).index[:max_levels]]
            orders[g] = first.sort_values().index
    for ax, (g, col, b, sd) in zip(axes, cols):
        frame = pd.DataFrame({"b": b, "sd": sd}).loc[orders[g]]
        pos = np.arange(len(frame))
        ax.errorbar(frame["b"], pos, xerr=z * frame["sd"], fmt="o", color="C0", ecolor="C0",
                    elinewidth=1, markersize=4, capsize=0)
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_yticks(pos)
        ax.set_yticklabels([str(i) for i in frame.index], fontsize=7)
        ax.set_title(f"{g}: {col}", fontsize=10)
        ax.set_xlabel(f"BLUP \u00b1 {z:.2f} conditional SD")
    fig.suptitle(f"Random effects ({100 * level:g}% intervals)")
    fig.tight_layout()
    return fig


def _qq(ax, values: np.ndarray, title: str) -> None:
    (osm, osr), (slope, intercept, _) = stats.probplot(np.asarray(values, dtype=float))
    ax.plot(osm, osr, "o", markersize=3, color="C0")
    ax.plot(osm, intercept + slope * osm, color="C1", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("normal quantiles")
    ax.set_ylabel("sample quantiles")


def plot_resid(res, max_ranef_panels: int = 3):
    """Residuals vs fitted, QQ plot of residuals, QQ plots of the BLUPs.

    Parameters
    ----------
    res : results object
        Needs ``fittedvalues``, ``resid``, ``random_effects``.
    max_ranef_panels : int
        At most this many BLUP QQ panels (one per grouping factor and column).

    Returns
    -------
    matplotlib.figure.Figure
    """
    cols = _ranef_columns(res, None)[:max_ranef_panels]
    n = 2 + len(cols)
    fig, axes = _panels(n, 2 if n == 4 else 3, 4.0, 3.4)
    fitted, resid = res.fittedvalues.to_numpy(), res.resid.to_numpy()
    ax = axes[0]
    ax.plot(fitted, resid, "o", markersize=3, color="C0", alpha=0.8)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("fitted values")
    ax.set_ylabel("residuals")
    ax.set_title("Residuals vs fitted", fontsize=10)
    _qq(axes[1], resid, "QQ plot of residuals")
    for ax, (g, col, b, _) in zip(axes[2:], cols):
        _qq(ax, b.to_numpy(), f"QQ plot of BLUPs: {g} {col}")
    fig.tight_layout()
    return fig


def plot_profile(profile: pd.DataFrame, levels=(0.5, 0.8, 0.9, 0.95, 0.99)):
    """zeta against each parameter (lme4's ``xyplot(profile(m))``).

    Parameters
    ----------
    profile : DataFrame
        From :func:`mixedanova.inference.profile.profile_zeta`
        (``parameter, value, zeta``; ``attrs["estimates"]``).
    levels : sequence of float
        Interval levels drawn as horizontal lines at ``+- sqrt(qchisq(level, 1))``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = list(dict.fromkeys(profile["parameter"]))
    if not names:
        raise MixedAnovaError("the profile table is empty")
    fig, axes = _panels(len(names), 3, 3.6, 3.2)
    est = profile.attrs.get("estimates", {})
    cut = [math.sqrt(stats.chi2.ppf(lv, 1)) for lv in levels]
    for ax, name in zip(axes, names):
        part = profile[profile["parameter"] == name].sort_values("value")
        ax.plot(part["value"], part["zeta"], "-o", markersize=3, color="C0")
        for c in cut:
            ax.axhline(c, color="grey", linewidth=0.6, linestyle=":")
            ax.axhline(-c, color="grey", linewidth=0.6, linestyle=":")
        if name in est:
            ax.axvline(est[name], color="C1", linewidth=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("zeta")
    fig.suptitle("Profile zeta (dotted: " + ", ".join(f"{100 * lv:g}%" for lv in levels) + ")")
    fig.tight_layout()
    return fig
