"""Estimated marginal means and comparisons among them (R's emmeans).

The reference grid holds every combination of the levels of the factors of the
fixed part and each numeric covariate at its mean (emmeans' defaults; ``at``
overrides values).  A marginal mean for ``specs`` (within each ``by`` group)
averages the grid's predictions ``x' beta`` with **equal weights** over the
other factors (emmeans' ``weights = "equal"``).  SEs come from ``vcov(beta)``
(or the Kenward-Roger adjusted covariance) and df from Satterthwaite (lmerTest),
Kenward-Roger (pbkrtest) or none (asymptotic), as emmeans' ``lmer.df``.

Comparisons (:meth:`EmmeansTable.pairs`, :meth:`EmmeansTable.contrast`) form a
family per ``by`` group.  Adjustments: ``"tukey"`` (studentized range with ``k``
means: critical value ``qtukey(level, k, df) / sqrt(2)``, p
``ptukey(|t| sqrt(2), k, df)``), ``"bonferroni"`` (``m`` contrasts), ``"sidak"``,
``"holm"`` (p values; intervals use Bonferroni, as emmeans) and ``"none"``.
Offsets are not added to the marginal means (a decision: the grid is of the
fixed effects only).

GLMMs (emmeans' conventions for ``type = "response"``): the means are formed on
the link scale; with ``type="response"`` each is back-transformed, its SE by
the delta method (``SE |dmu/deta|``) and its confidence limits by
back-transforming the link-scale limits; the z tests stay on the link scale.
Contrasts are formed on the link scale; with ``type="response"`` and a log or
logit link they are back-transformed to ratios (``A / B``: rate ratios or odds
ratios, SE by the delta method, limits back-transformed); with other links they
stay on the link scale, as emmeans.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from ..design import DesignError
from ..errors import MixedAnovaError
from .tables import normalize_ddf

__all__ = ["emmeans", "EmmeansTable", "ContrastTable", "ADJUSTMENTS", "response_name"]

ADJUSTMENTS = ("tukey", "bonferroni", "holm", "sidak", "none")
_ESTIMABLE_TOL = 1e-8


_WIDTH = 80


def _table_text(frame: pd.DataFrame) -> str:
    """Every column, wrapped in blocks of 80 characters; df rounded for display
    only (4 significant digits: a Satterthwaite df of 10.000003 prints as 10)."""
    fmt = {"df": lambda v: f"{v:.4g}"} if "df" in frame.columns else None
    return pd.DataFrame(frame).to_string(line_width=_WIDTH, formatters=fmt)


class ContrastTable(pd.DataFrame):
    """Contrasts of marginal means (:meth:`EmmeansTable.pairs`,
    :meth:`EmmeansTable.contrast`): a DataFrame that prints every column (wrapped
    at 80 characters) and emmeans' notes (confidence level, adjustment)."""

    _metadata = ["notes"]

    @property
    def _constructor(self):
        return ContrastTable

    _gap: tuple = ("",)  # a blank line between the table and its notes

    def __repr__(self) -> str:
        # every column shown, wrapped in blocks at 80 characters (pandas' default
        # display would hide columns behind "..."), then emmeans' notes
        text = _table_text(self)
        notes = [str(n) for n in (getattr(self, "notes", None) or [])]
        return "\n".join([text, *self._gap, *notes]) if notes else text

    __str__ = __repr__

    def _repr_html_(self) -> str:
        """Jupyter display: the table in the reports' style, then emmeans' notes
        (kept, as in the print)."""
        from ..report.tables import frame_html

        return frame_html(pd.DataFrame(self), "", getattr(self, "notes", None) or [])


class EmmeansTable(ContrastTable):
    """Marginal means (one row each) with :meth:`pairs` and :meth:`contrast`.

    Columns: the ``specs`` and ``by`` variables, then ``emmean, SE, df, lower_CL,
    upper_CL, t_ratio, p_value`` (emmeans' ``summary(..., infer = TRUE)``; df is
    ``inf`` for ``ddf="none"``).  ``L`` holds the linear functions of ``beta``.
    """

    _metadata = ["L", "specs", "by", "ddf", "level", "notes", "_res", "link", "type"]

    _gap = ()  # emmeans prints its notes right under the means

    @property
    def _constructor(self):
        return EmmeansTable

    # ----------------------------------------------------------- comparisons
    def pairs(self, adjust: str = "tukey", level: float | None = None) -> pd.DataFrame:
        """All pairwise differences ``A - B`` (levels in table order) within each
        ``by`` group: emmeans' ``pairs(emm, adjust = ...)``."""
        contrasts = {}
        labels = self._labels()
        groups = self._groups()
        size = len(next(iter(groups.values())))
        for i, j in itertools.combinations(range(size), 2):
            w = np.zeros(size)
            w[i], w[j] = 1.0, -1.0
            first = next(iter(groups.values()))
            contrasts[f"{labels[first[i]]} - {labels[first[j]]}"] = w
        if self._ratios():
            contrasts = {k.replace(" - ", " / "): w for k, w in contrasts.items()}
        return self._compare(contrasts, adjust, level, family_means=size)

    def contrast(self, weights: dict, adjust: str = "none",
                 level: float | None = None) -> pd.DataFrame:
        """Custom contrasts: ``{name: coefficients over the means of a by group}``
        (emmeans' ``contrast(emm, list(...))``).  ``adjust="tukey"`` is only for
        pairwise comparisons and is refused here."""
        if adjust == "tukey":
            raise MixedAnovaError("adjust='tukey' applies to pairwise comparisons (pairs()); "
                             "use 'sidak', 'bonferroni', 'holm' or 'none' for custom contrasts")
        size = len(next(iter(self._groups().values())))
        coefs = {}
        for name, w in weights.items():
            w = np.asarray(w, dtype=float).ravel()
            if w.shape != (size,):
                raise MixedAnovaError(f"contrast {name!r} needs {size} coefficients, one per mean "
                                 f"of a group, not {w.size}")
            coefs[str(name)] = w
        return self._compare(coefs, adjust, level, family_means=size)

    # ------------------------------------------------------------- helpers
    def _ratios(self) -> bool:
        """Contrasts back-transformed to ratios (``type="response"``, log/logit link)."""
        link = getattr(self, "link", None)
        return (getattr(self, "type", "link") == "response" and link is not None
                and link.name in ("log", "logit"))

    def _labels(self) -> list[str]:
        cols = list(self.specs)
        return [" ".join(str(v) for v in row) for row in
                pd.DataFrame(self)[cols].itertuples(index=False)]

    def _groups(self) -> dict:
        if not self.by:
            return {(): list(range(len(self)))}
        out: dict = {}
        for i, key in enumerate(pd.DataFrame(self)[list(self.by)].itertuples(index=False)):
            out.setdefault(tuple(key), []).append(i)
        return out

    def _compare(self, contrasts: dict, adjust: str, level: float | None,
                 family_means: int) -> pd.DataFrame:
        adjust = str(adjust).lower()
        if adjust not in ADJUSTMENTS:
            raise MixedAnovaError(f"adjust must be one of {', '.join(ADJUSTMENTS)}, not {adjust!r}")
        level = self.level if level is None else float(level)
        inf = self._res._inference
        rows = []
        for key, idx in self._groups().items():
            Lg = self.L[idx]
            m = len(contrasts)
            for name, w in contrasts.items():
                l = w @ Lg
                r = inf.t_test(l, self.ddf, level=level)
                rows.append((name, key, r["estimate"], r["std_err"], r["df"], r["t"], m))
        est = np.array([r[2] for r in rows])
        se = np.array([r[3] for r in rows])
        df = np.array([r[4] for r in rows], dtype=float)
        t = np.array([r[5] for r in rows])
        crit, p = _adjusted(t, df, level, adjust, len(contrasts), family_means,
                            [r[1] for r in rows])
        out = pd.DataFrame({"contrast": [r[0] for r in rows]})
        for c_i, col in enumerate(self.by or ()):
            out[col] = [r[1][c_i] for r in rows]
        out["estimate"] = est
        out["SE"] = se
        out["df"] = df
        out["lower_CL"] = est - crit * se
        out["upper_CL"] = est + crit * se
        out["t_ratio"] = t
        out["p_value"] = p
        notes = _contrast_notes(level, adjust, len(contrasts), family_means)
        link = getattr(self, "link", None)
        if self._ratios():
            name = "odds_ratio" if link.name == "logit" else "ratio"
            ratio = np.exp(est)
            out = out.rename(columns={"estimate": name})
            out[name] = ratio
            out["SE"] = ratio * se
            out["lower_CL"] = np.exp(est - crit * se)
            out["upper_CL"] = np.exp(est + crit * se)
            notes += [f"Intervals are back-transformed from the "
                      f"{'log odds ratio' if link.name == 'logit' else 'log'} scale",
                      f"Tests are performed on the "
                      f"{'log odds ratio' if link.name == 'logit' else 'log'} scale"]
        elif getattr(self, "type", "link") == "response" and link is not None \
                and link.name != "identity":
            notes.append(f"Note: contrasts are still on the {link.name} scale")
        out = ContrastTable(out)
        out.attrs["adjust"] = adjust
        out.attrs["level"] = level
        out.notes = notes
        return out


def _contrast_notes(level: float, adjust: str, m: int, k: int) -> list[str]:
    """emmeans' notes under a contrast table (``m`` contrasts of ``k`` means)."""
    notes = [f"Confidence level used: {level:g}"]
    if adjust == "none":
        return notes
    if adjust == "tukey":
        family = f"tukey method for comparing a family of {k} estimates"
        return notes + [f"Conf-level adjustment: {family}", f"P value adjustment: {family}"]
    conf = "bonferroni" if adjust == "holm" else adjust  # emmeans: Holm has no intervals
    return notes + [f"Conf-level adjustment: {conf} method for {m} estimates",
                    f"P value adjustment: {adjust} method for {m} tests"]


def _t_crit(level: float, df: np.ndarray) -> np.ndarray:
    a = 1.0 - level
    return np.where(np.isfinite(df), stats.t.ppf(1.0 - a / 2.0, np.where(np.isfinite(df), df, 1)),
                    stats.norm.ppf(1.0 - a / 2.0))


def _t_sf2(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(df), 2.0 * stats.t.sf(np.abs(t), np.where(np.isfinite(df), df, 1)),
                    2.0 * stats.norm.sf(np.abs(t)))


def _adjusted(t, df, level, adjust, m, k, keys) -> tuple[np.ndarray, np.ndarray]:
    """Critical values and p values adjusted within each family of ``m`` contrasts
    among ``k`` means."""
    p_raw = _t_sf2(t, df)
    if adjust == "none":
        return _t_crit(level, df), p_raw
    if adjust == "tukey":
        # the quantile is an expensive inversion: one per distinct df (df that
        # differ only by Satterthwaite's numerical noise, < 1e-6, share one)
        key = np.round(df, 6)
        uniq = {d: stats.studentized_range.ppf(level, k, d) / math.sqrt(2.0)
                for d in np.unique(key)}
        crit = np.array([uniq[d] for d in key])
        p = stats.studentized_range.sf(np.abs(t) * math.sqrt(2.0), k, df)
        return crit, np.clip(p, 0.0, 1.0)
    if adjust == "sidak":
        crit = _t_crit(level ** (1.0 / m), df)
        return crit, 1.0 - (1.0 - p_raw) ** m
    crit = _t_crit(1.0 - (1.0 - level) / m, df)  # Bonferroni intervals (also for holm)
    if adjust == "bonferroni":
        return crit, np.minimum(1.0, m * p_raw)
    p = np.empty_like(p_raw)
    fam: dict = {}
    for i, key in enumerate(keys):
        fam.setdefault(key, []).append(i)
    for idx in fam.values():
        idx = np.array(idx)
        order = np.argsort(p_raw[idx])
        adj = np.maximum.accumulate((len(idx) - np.arange(len(idx))) * p_raw[idx][order])
        out = np.empty(len(idx))
        out[order] = np.minimum(1.0, adj)
        p[idx] = out
    return crit, p


# -------------------------------------------------------------- reference grid
def _parse_specs(specs, by) -> tuple[list[str], list[str]]:
    if isinstance(specs, str):
        text = specs.strip()
        if text.startswith("~"):
            text = text[1:]
        parts = text.split("|")
        if len(parts) > 2:
            raise DesignError(f"specs {specs!r} has more than one '|'")
        spec_vars = [v.strip() for v in parts[0].replace("*", "+").replace(":", "+").split("+")
                     if v.strip()]
        by_vars = [v.strip() for v in parts[1].replace("*", "+").split("+")] \
            if len(parts) == 2 else []
    else:
        spec_vars, by_vars = [str(v) for v in specs], []
    if by is not None:
        by_vars += [by] if isinstance(by, str) else [str(v) for v in by]
    if not spec_vars:
        raise DesignError(f"specs {specs!r} names no variable")
    return spec_vars, by_vars


def _grid_data(res) -> pd.DataFrame:
    """The data whose values make the reference grid: the fit's rows, or for a fit
    without rows (a Dask fit) a small frame with the same distinct values of the
    factors and means of the covariates (``res._reference_data``)."""
    data = res.design.data
    return res._reference_data if data is None else data


def _grid_values(res, at: dict) -> dict[str, list]:
    d = res.design
    data = _grid_data(res)
    offset_vars = set()
    values: dict[str, list] = {}
    for v in d.needed_columns(include_random=False):
        if v in offset_vars:
            continue
        col = data[v]
        if v in at:
            vals = at[v]
            values[v] = list(vals) if np.ndim(vals) else [vals]
        elif pd.api.types.is_bool_dtype(col):
            values[v] = [False, True]
        elif pd.api.types.is_numeric_dtype(col):
            values[v] = [float(col.mean())]
        elif isinstance(col.dtype, pd.CategoricalDtype):
            values[v] = list(col.cat.remove_unused_categories().cat.categories)
        else:
            values[v] = sorted(pd.unique(col.dropna()), key=str)
    unknown = [v for v in at if v not in values]
    if unknown:
        raise DesignError(f"at= names {', '.join(map(repr, unknown))}, which the fixed part "
                          "does not use")
    return values


def _estimable(res, Xg_all: np.ndarray) -> np.ndarray:
    """Rows of the full (all formula columns) grid matrix that are estimable."""
    d = res.design
    if not d.dropped_columns:
        return np.ones(len(Xg_all), dtype=bool)
    X_all = np.asarray(d.fixed_spec.get_model_matrix(d.data), dtype=float)
    _, s, vt = np.linalg.svd(X_all, full_matrices=True)
    rank = int(np.sum(s > s[0] * 1e-10))
    N = vt[rank:].T
    scale = np.maximum(np.abs(Xg_all).max(axis=1), 1.0)
    return np.abs(Xg_all @ N).max(axis=1) <= _ESTIMABLE_TOL * scale


def response_name(family) -> str:
    """emmeans' name of a back-transformed mean: ``prob`` (binomial), ``rate``
    (Poisson), else ``response``."""
    name = getattr(family, "name", "")
    return {"binomial": "prob", "poisson": "rate"}.get(name, "response")


def _to_response(table: "EmmeansTable", family) -> None:
    """Back-transform the means of ``table`` in place (see the module docstring)."""
    link = family.link
    eta = table["emmean"].to_numpy(dtype=float)
    lo = link.linkinv(table["lower_CL"].to_numpy(dtype=float))
    hi = link.linkinv(table["upper_CL"].to_numpy(dtype=float))
    pos = table.columns.get_loc("emmean")
    table.insert(pos, response_name(family), link.linkinv(eta))
    del table["emmean"]
    table["SE"] = table["SE"].to_numpy(dtype=float) * np.abs(link.mu_eta(eta))
    table["lower_CL"] = np.minimum(lo, hi)
    table["upper_CL"] = np.maximum(lo, hi)


def emmeans(res, specs, by=None, ddf: str = "satterthwaite", level: float = 0.95,
            at: dict | None = None, type: str = "link") -> EmmeansTable:
    """Estimated marginal means of ``specs`` (emmeans' ``emmeans(m, specs, by)``).

    Parameters
    ----------
    res : LinearMixedResults
    specs : str or list of str
        ``"Variety"``, ``"~ Variety"``, ``"~ Variety | nitro_f"`` or a list of variables.
    by : str or list of str, optional
        Grouping variables (also written after ``|`` in ``specs``).
    ddf : {"satterthwaite", "kenward-roger", "none"}
        emmeans' ``lmer.df`` (``"none"`` = asymptotic).
    level : float
        Confidence level.
    at : dict, optional
        Values of grid variables (e.g. covariate values).
    type : {"link", "response"}
        For a GLMM (``res.family``): means on the link scale, or back-transformed
        (emmeans' ``type = "response"``; see the module docstring).  A linear
        mixed model's two scales are the same.
    """
    ddf = normalize_ddf(ddf)
    if type not in ("link", "response"):
        raise DesignError(f"type must be 'link' or 'response', not {type!r}")
    spec_vars, by_vars = _parse_specs(specs, by)
    values = _grid_values(res, at or {})
    for v in spec_vars + by_vars:
        if v not in values:
            raise DesignError(f"{v!r} is not a variable of the fixed part "
                              f"({', '.join(values)})")
    names = list(values)
    combos = list(itertools.product(*[values[v] for v in reversed(names)]))
    grid = pd.DataFrame([dict(zip(reversed(names), c)) for c in combos])[names]
    data = _grid_data(res)
    for v in names:  # keep the data's dtypes so that formulaic encodes as in the fit
        col = data[v]
        if isinstance(col.dtype, pd.CategoricalDtype):
            grid[v] = pd.Categorical(grid[v], categories=col.cat.categories)
    Xg_all = np.asarray(res.design.fixed_spec.get_model_matrix(grid), dtype=float)
    ok = _estimable(res, Xg_all)
    Xg = Xg_all[:, res.design.kept_columns]
    keys = spec_vars + by_vars
    table_rows = list(itertools.product(*[values[v] for v in reversed(keys)]))
    L, est_ok, records = [], [], []
    for combo in table_rows:
        rec = dict(zip(reversed(keys), combo))
        mask = np.ones(len(grid), dtype=bool)
        for v in keys:
            mask &= (grid[v] == rec[v]).to_numpy()
        L.append(Xg[mask].mean(axis=0))
        est_ok.append(bool(ok[mask].all()))
        records.append({v: rec[v] for v in keys})
    L = np.array(L)
    inf = res._inference
    stats_rows = []
    for l, good in zip(L, est_ok):
        if not good:
            stats_rows.append(dict(estimate=np.nan, std_err=np.nan, df=np.nan, t=np.nan,
                                   p=np.nan, ci_low=np.nan, ci_high=np.nan))
        else:
            stats_rows.append(inf.t_test(l, ddf, level=level))
    out = pd.DataFrame(records)
    out["emmean"] = [r["estimate"] for r in stats_rows]
    out["SE"] = [r["std_err"] for r in stats_rows]
    out["df"] = [r["df"] for r in stats_rows]
    out["lower_CL"] = [r["ci_low"] for r in stats_rows]
    out["upper_CL"] = [r["ci_high"] for r in stats_rows]
    out["t_ratio"] = [r["t"] for r in stats_rows]
    out["p_value"] = [r["p"] for r in stats_rows]
    table = EmmeansTable(out)
    table.L = L
    table.specs = tuple(spec_vars)
    table.by = tuple(by_vars)
    table.ddf = ddf
    table.level = level
    table._res = res
    family = getattr(res, "family", None)
    table.link = None if family is None else family.link
    table.type = type
    others = [v for v in names if v not in keys and len(values[v]) > 1]
    table.notes = ([f"Results are averaged over the levels of: {', '.join(others)}"]
                   if others else []) + [f"Degrees-of-freedom method: {ddf}",
                                         f"Confidence level used: {level:g}"]
    if not all(est_ok):
        table.notes.append("Non-estimable means are NaN")
    if family is not None and type == "response" and family.link.name != "identity":
        _to_response(table, family)
        table.notes += [f"Intervals are back-transformed from the {family.link.name} scale",
                        f"Tests are performed on the {family.link.name} scale"]
    return table
