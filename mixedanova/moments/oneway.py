"""Closed forms of the one-way random-effects model ``y_ij = mu + a_j + e_ij``.

With ``J`` groups of sizes ``n_j``, ``n = sum n_j``, group means ``ybar_j``
and the grand mean ``ybar`` of all observations:

* within (residual) estimator ``s2_e = sum_j sum_i (y_ij - ybar_j)^2 / (n - J)``;
* ``S^2 = sum_j n_j (ybar_j - ybar)^2 / (J - 1)`` (the between mean square);
* the unbiased ANOVA estimator of the group variance, valid for unequal
  ``n_j`` (Searle, Casella & McCulloch, *Variance Components*, sec. 3.5):
  ``s2_a = (S^2 - s2_e) * n (J - 1) / (n^2 - sum n_j^2)``, reported raw and
  truncated at 0.  Its divisor ``n0 = (n^2 - sum n_j^2) / (n (J - 1))`` is
  the common group size when the design is balanced;
* the weighted mean ``mu = sum w_j ybar_j / sum w_j`` with
  ``w_j = (s2_a + s2_e / n_j)^-1`` (``s2_a`` truncated), the generalized
  least-squares estimate of ``mu`` at these variance components, with
  ``SE(mu) = (sum w_j)^(-1/2)``.

These agree with ``fit_anova`` (Henderson Method III) on one-way data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DesignError

__all__ = ["OnewayResult", "oneway"]


@dataclass(frozen=True, eq=False)
class OnewayResult:
    """Estimates of the one-way random model (see the module docstring).

    Attributes
    ----------
    n_groups, nobs : int
        ``J`` and ``n``.
    group_sizes, group_means : Series
        ``n_j`` and ``ybar_j`` indexed by the sorted group labels.
    grand_mean : float
        Mean of all observations.
    ms_between, df_between : float
        ``S^2`` and ``J - 1``.
    s2_e, df_within : float
        Within-group mean square and ``n - J``.
    n0 : float
        ``(n^2 - sum n_j^2) / (n (J - 1))``.
    s2_a_raw, s2_a : float
        Raw and truncated (at 0) estimate of the group variance.
    negative : bool
        The raw estimate was negative.
    weights : Series
        Normalized weights of the weighted mean (sum to 1).
    weighted_mean, weighted_mean_se : float
    """

    n_groups: int
    nobs: int
    group_sizes: pd.Series
    group_means: pd.Series
    grand_mean: float
    ms_between: float
    df_between: float
    s2_e: float
    df_within: float
    n0: float
    s2_a_raw: float
    s2_a: float
    negative: bool
    weights: pd.Series
    weighted_mean: float
    weighted_mean_se: float

    def table(self) -> pd.Series:
        """The scalar estimates, one per row (what ``repr`` shows)."""
        return pd.Series({
            "groups (J)": self.n_groups, "observations (n)": self.nobs,
            "grand mean": self.grand_mean,
            "weighted mean": self.weighted_mean, "SE of weighted mean": self.weighted_mean_se,
            "MS between (S^2)": self.ms_between, "df between": self.df_between,
            "s2_e (MS within)": self.s2_e, "df within": self.df_within, "n0": self.n0,
            "s2_a (raw)": self.s2_a_raw, "s2_a (truncated)": self.s2_a,
            "negative": self.negative}, dtype=object, name="estimate")

    def groups(self) -> pd.DataFrame:
        """Per group: size, mean and weight in the weighted mean."""
        return pd.concat([self.group_sizes, self.group_means, self.weights], axis=1)

    def __repr__(self) -> str:
        return ("One-way random-effects ANOVA (closed forms)\n" + self.table().to_string()
                + "\n\nGroups:\n" + self.groups().to_string())

    def _repr_html_(self) -> str:
        return ("<p>One-way random-effects ANOVA (closed forms)</p>"
                + self.table().to_frame().to_html() + "<p>Groups:</p>" + self.groups().to_html())


def oneway(y, group) -> OnewayResult:
    """One-way random-effects ANOVA estimates in closed form.

    Parameters
    ----------
    y : array-like of float
        Responses.
    group : array-like
        Group label of each response (same length as ``y``).

    Returns
    -------
    OnewayResult

    Raises
    ------
    DesignError
        Non-numeric ``y``, different lengths, missing values, fewer than 2 groups, or no
        within-group degrees of freedom (every group has one observation).
    """
    if y is None or group is None or np.ndim(y) != 1 or np.ndim(group) != 1:
        raise DesignError("y and group must be one-dimensional sequences of equal length, not "
                          f"{type(y).__name__} of shape {np.shape(y)} and "
                          f"{type(group).__name__} of shape {np.shape(group)}")
    try:
        if np.iscomplexobj(y):
            raise TypeError
        y_arr = np.asarray(pd.to_numeric(pd.Series(np.asarray(y).ravel()), errors="raise"),
                           dtype=float)
    except (TypeError, ValueError):
        raise DesignError("y must be numbers; it has values such as "
                          f"{np.asarray(y).ravel()[:3].tolist()}") from None
    g = pd.Series(np.asarray(group).ravel())
    if y_arr.size != g.size:
        raise DesignError(f"y has {y_arr.size} values but group has {g.size}")
    if np.isnan(y_arr).any():
        raise DesignError(f"y has {int(np.isnan(y_arr).sum())} missing value(s); drop them first")
    if g.isna().any():
        raise DesignError(f"group has {int(g.isna().sum())} missing label(s); drop them first")
    frame = pd.DataFrame({"y": y_arr, "g": g.to_numpy()})
    grouped = frame.groupby("g", sort=True)["y"]
    sizes = grouped.size().astype(float)
    means = grouped.mean()
    n_groups = int(sizes.size)
    nobs = int(y_arr.size)
    if n_groups < 2:
        raise DesignError(f"need at least 2 groups, got {n_groups}")
    if nobs <= n_groups:
        raise DesignError("no within-group degrees of freedom: every group has a single observation")
    grand = float(y_arr.mean())
    df_b = float(n_groups - 1)
    df_w = float(nobs - n_groups)
    ms_b = float(np.sum(sizes * (means - grand) ** 2) / df_b)
    resid = y_arr - frame["g"].map(means).to_numpy(dtype=float)
    s2_e = float(np.sum(resid**2) / df_w)
    n0 = float((nobs**2 - np.sum(sizes**2)) / (nobs * df_b))
    s2_a_raw = (ms_b - s2_e) / n0
    s2_a = max(s2_a_raw, 0.0)
    if s2_a == 0.0 and s2_e == 0.0:
        raw_w = sizes.copy()
        se = 0.0
    else:
        raw_w = 1.0 / (s2_a + s2_e / sizes)
        se = float(np.sqrt(1.0 / raw_w.sum()))
    weights = (raw_w / raw_w.sum()).rename("weight")
    mu = float(np.sum(weights * means))
    return OnewayResult(
        n_groups=n_groups, nobs=nobs, group_sizes=sizes.astype(int).rename("n"),
        group_means=means.rename("mean"), grand_mean=grand, ms_between=ms_b, df_between=df_b,
        s2_e=s2_e, df_within=df_w, n0=n0, s2_a_raw=float(s2_a_raw), s2_a=float(s2_a),
        negative=bool(s2_a_raw < 0), weights=weights, weighted_mean=mu, weighted_mean_se=se)
