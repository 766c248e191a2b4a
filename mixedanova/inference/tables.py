"""Tests on the fixed effects: coefficient tables, contrasts and ANOVA F tables.

One :class:`FixedInference` per fit (``res._inference``) caches the
Satterthwaite (:mod:`.satterthwaite`) and Kenward-Roger (:mod:`.kenward_roger`)
pieces and implements lmerTest's tests:

* :meth:`FixedInference.t_test` -- ``contest1D``: estimate, SE, df, t, p.
* :meth:`FixedInference.f_test` -- ``contestMD``: for Satterthwaite the contrast
  is rotated to the eigenvectors of ``Var(L beta)``; its F is the mean of the
  squared t statistics and its df combine their df (``get_Fstat_ddf``); for
  Kenward-Roger it is pbkrtest's scaled F with the adjusted covariance
  (``KRmodcomp``).  ``Sum Sq`` and ``Mean Sq`` are lmerTest's
  ``Mean Sq = F sigma^2`` (unscaled F for Kenward-Roger).
* :meth:`FixedInference.anova` -- the type 1/2/3 tables (:mod:`.hypotheses`).

``ddf`` is one of ``"satterthwaite"``, ``"kenward-roger"`` (REML fits only),
``"residual"`` (``n - p`` df, as a linear model) and ``"none"`` (Wald tests:
``t`` holds z statistics with normal p values, F tests have infinite
denominator df).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .hypotheses import hypothesis_matrices
from ..errors import ArgumentError, EstimabilityError, UnknownNameError

__all__ = ["InferenceTable", "ContrastResult", "FixedInference", "normalize_ddf",
           "fstat_ddf", "EstimabilityError", "DDF_LABELS", "check_level"]

DDF_LABELS = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's",
              "residual": "residual", "none": "Wald (normal)"}
_ALIASES = {"satterthwaite": "satterthwaite", "satt": "satterthwaite",
            "kenward-roger": "kenward-roger", "kenward_roger": "kenward-roger",
            "kenwardroger": "kenward-roger", "kr": "kenward-roger",
            "residual": "residual", "resid": "residual",
            "none": "none", "wald": "none", "lme4": "none", "asymptotic": "none"}
_EPS = math.sqrt(np.finfo(float).eps)


def normalize_ddf(ddf: str) -> str:
    """Canonical name of a df method (accepts R's spellings, e.g. ``"Kenward-Roger"``)."""
    key = str(ddf).strip().lower().replace(" ", "") if isinstance(ddf, str) else None
    if key not in _ALIASES:
        raise ArgumentError(f"ddf must be one of {', '.join(DDF_LABELS)}, not {ddf!r}")
    return _ALIASES[key]


def fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Denominator df of an F built from independent t statistics (lmerTest's ``get_Fstat_ddf``)."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    e = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * e / (e - nu.size)


def _t_p(t: float, df: float) -> float:
    from scipy import stats
    if not np.isfinite(df):
        return float(2.0 * stats.norm.sf(abs(t)))
    return float(2.0 * stats.t.sf(abs(t), df))


def _t_quantile(level: float, df: np.ndarray) -> np.ndarray:
    from scipy import stats
    df = np.asarray(df, dtype=float)
    prob = 0.5 + level / 2.0
    out = np.full(df.shape, stats.norm.ppf(prob))
    fin = np.isfinite(df)
    out[fin] = stats.t.ppf(prob, df[fin])
    return out


def _f_p(F: float, ndf: float, ddf: float) -> float:
    from scipy import stats
    if not np.isfinite(F):
        return float("nan")
    if not np.isfinite(ddf):
        return float(stats.chi2.sf(F * ndf, ndf))
    return float(stats.f.sf(F, ndf, ddf))


class InferenceTable(pd.DataFrame):
    """A DataFrame with a heading and notes shown when printed (R's anova tables)."""

    # metadata, not ``attrs``: attrs must stay scalars and strings so that
    # pd.concat of two tables (which compares attrs) works
    _metadata = ["heading", "notes", "hypotheses"]

    @property
    def _constructor(self):
        return InferenceTable

    def __repr__(self) -> str:
        parts = []
        heading = getattr(self, "heading", None)
        if heading:
            parts.append(str(heading))
        parts.append(_text(pd.DataFrame(self)))  # wrapped at 80, every column
        notes = getattr(self, "notes", None)
        if notes:
            parts.extend(str(n) for n in notes)
        return "\n".join(parts)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        """Jupyter display: heading, the table, notes (the reports' style)."""
        from ..report.tables import frame_html

        return frame_html(pd.DataFrame(self), getattr(self, "heading", None) or "",
                          getattr(self, "notes", None) or [])


def _text(frame: pd.DataFrame) -> str:
    """Every column, wrapped at 80 characters; df columns (Satterthwaite's
    17.000007) rounded to 4 significant digits for display only."""
    fmt = {c: (lambda v: f"{v:.4g}") for c in ("df", "den_df", "Df")
           if c in frame.columns and pd.api.types.is_float_dtype(frame[c])}
    return frame.to_string(line_width=80, formatters=fmt or None)


def make_table(frame: pd.DataFrame, heading: str = "", notes=()) -> InferenceTable:
    """Wrap ``frame`` with a heading and notes."""
    out = InferenceTable(frame)
    out.heading = heading
    out.notes = list(notes)
    return out


@dataclass(frozen=True)
class ContrastResult:
    """The test of an estimable function ``L beta`` (``res.contrast``).

    One row of ``L`` gives a t test (``test == "t"``), several an F test.

    Attributes
    ----------
    test : {"t", "F"}
    estimate, std_err : pandas.Series
        ``L beta`` and the SEs of its rows (Kenward-Roger: from the adjusted covariance).
    statistic : float
        ``t`` (z for ``ddf="none"``) or ``F``.
    num_df : int
        Rank of ``L`` (1 for a t test).
    df : float
        Denominator df.
    p : float
    ddf : str
        The df method used.
    ci_low, ci_high : float
        Confidence limits of a t test (NaN for an F test).
    """

    test: str
    estimate: pd.Series
    std_err: pd.Series
    statistic: float
    num_df: int
    df: float
    p: float
    ddf: str
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    extra: dict = field(default_factory=dict, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row: ``estimate, std_err, df, t, p, ci_low, ci_high`` (t test) or
        ``num_df, den_df, F, p`` (F test)."""
        if self.test == "t":
            return pd.DataFrame({"estimate": self.estimate.to_numpy(),
                                 "std_err": self.std_err.to_numpy(), "df": [self.df],
                                 "t": [self.statistic], "p": [self.p],
                                 "ci_low": [self.ci_low], "ci_high": [self.ci_high]},
                                index=self.estimate.index)
        return pd.DataFrame({"num_df": [self.num_df], "den_df": [self.df],
                             "F": [self.statistic], "p": [self.p]}, index=["L"])

    def __repr__(self) -> str:
        head = f"{'t' if self.test == 't' else 'F'} test of a contrast, {DDF_LABELS[self.ddf]} df"
        body = _text(self.to_frame())
        if self.test == "F":
            body += "\n" + _text(pd.DataFrame({"estimate": self.estimate,
                                               "std_err": self.std_err}))
        return f"{head}\n{body}"


class FixedInference:
    """Tests on the fixed effects of one fit; see the module docstring."""

    def __init__(self, res) -> None:
        self.res = res
        self.beta = np.asarray(res.state.beta, dtype=float)
        self.vcov = np.asarray(res.state.vcov_beta, dtype=float)
        self.names = list(res.design.x_names)
        self._satt = None
        self._kr = None

    # ------------------------------------------------------------- set-ups
    @property
    def satterthwaite(self):
        """The cached :class:`~mixedanova.inference.satterthwaite.SatterthwaiteSetup`."""
        if self._satt is None:
            from .satterthwaite import satterthwaite_setup
            self._satt = satterthwaite_setup(self.res)
        return self._satt

    @property
    def kenward_roger(self):
        """The cached :class:`~mixedanova.inference.kenward_roger.KenwardRogerSetup`."""
        if self._kr is None:
            from .kenward_roger import kenward_roger_setup
            self._kr = kenward_roger_setup(self.res)
        return self._kr

    def _ddf(self, ddf: str) -> str:
        ddf = normalize_ddf(ddf)
        if ddf == "kenward-roger" and self.res.method != "REML":
            from .kenward_roger import KR_ML_MESSAGE
            raise ArgumentError(KR_ML_MESSAGE)
        if ddf == "satterthwaite" and self.res.method not in ("REML", "ML"):
            raise ArgumentError(
                f"Satterthwaite df need a REML or ML fit, not {self.res.method!r}; the F tests "
                "of a method-of-moments fit, with their EMS error terms, are in "
                "res.ems_table(), and ddf='residual' or 'none' work here")
        return ddf

    def _resid_df(self) -> float:
        return float(self.res.nobs - self.res.design.p)

    # ------------------------------------------------------------ t tests
    def fixed_table(self, ddf: str = "satterthwaite", level: float = 0.95) -> pd.DataFrame:
        """Coefficient table: ``estimate, std_err, df, t, p, ci_low, ci_high``."""
        ddf = self._ddf(ddf)
        check_level(level)
        p = len(self.beta)
        eye = np.eye(p)
        if ddf == "kenward-roger":
            kr = self.kenward_roger
            se = np.sqrt(np.diag(kr.phi_adj))
            df = np.array([kr.ddf(eye[j]) for j in range(p)])
        else:
            se = np.sqrt(np.diag(self.vcov))
            if ddf == "satterthwaite":
                df = self.satterthwaite.df_many(eye) if p else np.zeros(0)
            elif ddf == "residual":
                df = np.full(p, self._resid_df())
            else:
                df = np.full(p, np.inf)
        t = self.beta / se
        pv = np.array([_t_p(ti, di) for ti, di in zip(t, df)])
        q = _t_quantile(level, df) * se
        return pd.DataFrame({"estimate": self.beta, "std_err": se, "df": df, "t": t,
                             "p": pv, "ci_low": self.beta - q, "ci_high": self.beta + q},
                            index=self.names)

    def t_test(self, l: np.ndarray, ddf: str = "satterthwaite", rhs: float = 0.0,
               level: float = 0.95) -> dict:
        """Test of one contrast ``l'beta = rhs`` (lmerTest's ``contest1D``)."""
        ddf = self._ddf(ddf)
        l = np.asarray(l, dtype=float).ravel()
        est = float(l @ self.beta)
        if ddf == "satterthwaite":
            var, df = self.satterthwaite.df_1d(l)
        elif ddf == "kenward-roger":
            kr = self.kenward_roger
            var, df = float(l @ kr.phi_adj @ l), kr.ddf(l)
        else:
            var = float(l @ self.vcov @ l)
            df = self._resid_df() if ddf == "residual" else math.inf
        se = math.sqrt(var)
        t = (est - rhs) / se
        q = float(_t_quantile(level, np.array([df]))[0]) * se
        return {"estimate": est, "std_err": se, "df": df, "t": t, "p": _t_p(t, df),
                "ci_low": est - q, "ci_high": est + q}

    # ------------------------------------------------------------ F tests
    def f_test(self, L: np.ndarray, ddf: str = "satterthwaite",
               rhs: np.ndarray | float = 0.0) -> dict:
        """Joint test of ``L beta = rhs`` (lmerTest's ``contestMD``).

        Returns ``sum_sq, mean_sq, num_df, den_df, F, p`` (NaN when ``L`` has no
        rows or rank 0).
        """
        ddf = self._ddf(ddf)
        L = np.atleast_2d(np.asarray(L, dtype=float))
        nan = {"sum_sq": np.nan, "mean_sq": np.nan, "num_df": np.nan, "den_df": np.nan,
               "F": np.nan, "p": np.nan}
        if L.shape[0] == 0 or L.shape[1] != len(self.beta):
            return nan
        rhs = np.broadcast_to(np.asarray(rhs, dtype=float), (L.shape[0],))
        beta = self.beta
        if np.any(rhs != 0):
            beta = beta - np.linalg.pinv(L) @ rhs
        s2 = self.res.sigma ** 2
        if ddf == "kenward-roger":
            Lf = _full_row_rank(L)
            if Lf.shape[0] == 0:
                return nan
            out = self.kenward_roger.test(Lf, beta)
            ms = out["F_unscaled"] * s2
            return {"sum_sq": ms * out["ndf"], "mean_sq": ms, "num_df": out["ndf"],
                    "den_df": out["ddf"], "F": out["F"], "p": out["p"]}
        if L.shape[0] == 1:
            rows, d = L, np.array([float(L[0] @ self.vcov @ L[0])])
        else:
            VL = L @ self.vcov @ L.T
            d, P = np.linalg.eigh(0.5 * (VL + VL.T))
            d, P = d[::-1], P[:, ::-1]
            tol = max(_EPS * d[0], 0.0)
            q = int(np.sum(d > tol))
            if q == 0:
                return nan
            rows, d = (P[:, :q].T @ L), d[:q]
        q = rows.shape[0]
        F = float(np.sum((rows @ beta) ** 2 / d) / q)
        if ddf == "satterthwaite":
            den = fstat_ddf(self.satterthwaite.df_many(rows))
        elif ddf == "residual":
            den = self._resid_df()
        else:
            den = math.inf
        ms = F * s2
        return {"sum_sq": ms * q, "mean_sq": ms, "num_df": q, "den_df": den, "F": F,
                "p": _f_p(F, q, den)}

    # ------------------------------------------------------------ tables
    def anova(self, type: int | str = 3, ddf: str = "satterthwaite") -> InferenceTable:
        """ANOVA table of the fixed terms (lmerTest's ``anova(m, type, ddf)``)."""
        ddf = self._ddf(ddf)
        # a fit without rows (a Dask fit) gives the data's matrices its own way
        source = getattr(self.res, "_hypothesis_source", None)
        Ls = hypothesis_matrices(self.res.design, type,
                                 None if source is None else source())
        rows = {term: self.f_test(L, ddf) for term, L in Ls.items()}
        cols = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p"]
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=cols) if rows else \
            pd.DataFrame(columns=cols, dtype=float)
        frame.index.name = "term"
        roman = {"1": "I", "2": "II", "3": "III"}[_type_key(type)]
        heading = f"Type {roman} Analysis of Variance Table with {DDF_LABELS[ddf]} method"
        table = make_table(frame, heading)
        table.hypotheses = Ls
        return table

    # ------------------------------------------------------------ contrasts
    def coerce_contrast(self, L) -> tuple[np.ndarray, list]:
        """``L`` as a ``(m, p)`` matrix on the fitted coefficients, and row labels.

        ``L`` may be a vector or matrix over the fitted coefficients, or over all
        columns of the formula including aliased (dropped) ones, a Series or dict
        keyed by coefficient name, or a DataFrame with coefficient-named columns.
        Over all columns, each row must be estimable (orthogonal to the null space
        of the full fixed-effects matrix), else :class:`EstimabilityError`.
        """
        design = self.res.design
        kept = list(design.x_names)
        full = [str(c) for c in design.fixed_spec.column_names]
        labels: list
        if isinstance(L, dict):
            L = pd.Series(L, dtype=object)
        if isinstance(L, pd.Series):
            L = L.to_frame().T
            L.index = ["contrast"]
        if isinstance(L, pd.DataFrame):
            unknown = [c for c in L.columns if str(c) not in full]
            if unknown:
                raise UnknownNameError(f"L names unknown coefficient(s) "
                                       f"{', '.join(map(repr, unknown))}; the coefficients "
                                       f"are {', '.join(map(repr, full))}")
            labels = list(L.index)
            M = np.zeros((len(L), len(full)))
            for c in L.columns:
                M[:, full.index(str(c))] = _numbers(L[c].to_numpy(), f"L[{str(c)!r}]")
            if all(str(c) in kept for c in L.columns):
                M = M[:, [full.index(k) for k in kept]]
        else:
            M = _numbers(L, "L")
            if M.ndim > 2:
                raise ArgumentError(f"L must be a vector or a matrix, not an array of shape "
                                    f"{M.shape}")
            M = np.atleast_2d(M)
            labels = ["contrast"] if M.shape[0] == 1 else [f"row{i + 1}" for i in
                                                            range(M.shape[0])]
        if M.size == 0:
            raise ArgumentError(f"L is empty (shape {M.shape}); give at least one row over "
                                f"the coefficients {', '.join(map(repr, kept))}")
        if M.shape[1] not in (len(kept), len(full)):
            raise ArgumentError(
                f"L has {M.shape[1]} column{'s' if M.shape[1] != 1 else ''}; expected "
                f"{len(kept)} (the fitted coefficients {', '.join(map(repr, kept))})"
                + (f" or {len(full)} (all columns)" if len(full) != len(kept) else ""))
        if not np.all(np.isfinite(M)):
            raise ArgumentError("L has non-finite values (NaN or inf)")
        zero = [labels[i] for i in np.flatnonzero(~M.any(axis=1))]
        if zero:
            raise ArgumentError(f"L row(s) {', '.join(map(repr, map(str, zero)))} are all "
                                "zeros: nothing to test")
        if M.shape[1] == len(kept):
            return M, labels
        Xfull = np.asarray(design.fixed_spec.get_model_matrix(design.data), dtype=float)
        _, s, vt = np.linalg.svd(Xfull, full_matrices=True)
        rank = int(np.sum(s > s[0] * max(Xfull.shape) * np.finfo(float).eps)) if s.size else 0
        null = vt[rank:].T
        if null.size:
            bad = np.abs(M @ null).max(axis=1) > 1e-8 * np.maximum(np.abs(M).max(axis=1), 1.0)
            if bad.any():
                which = [labels[i] for i in np.flatnonzero(bad)]
                raise EstimabilityError(
                    f"contrast row(s) {which} are not estimable: the fixed-effects matrix "
                    f"is rank deficient (dropped: {', '.join(design.dropped_columns)}) and "
                    "these rows are not linear combinations of its rows")
        return M[:, [full.index(k) for k in kept]], labels

    def contrast(self, L, ddf: str = "satterthwaite", rhs=0.0,
                 level: float = 0.95) -> ContrastResult:
        """t test (one row) or F test (several rows) of ``L beta = rhs``."""
        ddf = self._ddf(ddf)
        check_level(level)
        M, labels = self.coerce_contrast(L)
        rhs_arr = _numbers(rhs, "rhs").ravel()
        if rhs_arr.size not in (1, M.shape[0]) or not np.all(np.isfinite(rhs_arr)):
            raise ArgumentError(f"rhs must be one finite number or {M.shape[0]} (one per row "
                                f"of L), not {rhs!r}")
        rhs = rhs_arr if rhs_arr.size > 1 else float(rhs_arr[0])
        est = pd.Series(M @ self.beta, index=labels, name="estimate")
        V = self.kenward_roger.phi_adj if ddf == "kenward-roger" else self.vcov
        se = pd.Series(np.sqrt(np.einsum("mi,ij,mj->m", M, V, M)), index=labels,
                       name="std_err")
        if M.shape[0] == 1:
            r = float(np.ravel(rhs)[0]) if np.ndim(rhs) else float(rhs)
            out = self.t_test(M[0], ddf, rhs=r, level=level)
            return ContrastResult("t", est, se, out["t"], 1, out["df"], out["p"], ddf,
                                  out["ci_low"], out["ci_high"])
        out = self.f_test(M, ddf, rhs=rhs)
        return ContrastResult("F", est, se, out["F"], int(out["num_df"]), out["den_df"],
                              out["p"], ddf, extra={"sum_sq": out["sum_sq"],
                                                    "mean_sq": out["mean_sq"]})


def check_level(level) -> float:
    """``level`` as a float in (0, 1), else :class:`ArgumentError`."""
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, float, np.number)) \
            or not 0.0 < float(level) < 1.0:
        raise ArgumentError(f"level must be a number in (0, 1), e.g. 0.95, not {level!r}")
    return float(level)


def _numbers(values, name: str) -> np.ndarray:
    """``values`` as a float array, else :class:`ArgumentError` naming ``name``."""
    if isinstance(values, (str, bytes)):
        raise ArgumentError(f"{name} must be numbers, not the string {values!r}")
    try:
        if np.iscomplexobj(values):
            raise TypeError
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ArgumentError(f"{name} must be real numbers, not {values!r}") from None
    return arr


def _type_key(type) -> str:
    key = str(type).strip().upper()
    return {"I": "1", "II": "2", "III": "3"}.get(key, key)


def _full_row_rank(L: np.ndarray) -> np.ndarray:
    """Rows spanning the row space of ``L`` (``L`` itself when it has full row rank)."""
    rank = int(np.linalg.matrix_rank(L))
    if rank == L.shape[0]:
        return L
    return np.linalg.svd(L)[2][:rank]
