"""Results of :func:`~mixedanova.batch.fit.lmm_many` as tidy tables.

The fits come back as stacked arrays (:class:`~mixedanova.batch.engine.ChunkFit`);
the tables are assembled from them with numpy at the end, one row per response
(and term or variance component), with a ``response`` column first.  The
column names are fixed so that scripts can rely on them:

* :meth:`ManyResults.fixed` -- ``response, term, estimate, std_err, df, t, p``;
* :attr:`ManyResults.varcomp` -- ``response, group, var1, var2, vcov, sdcor``
  (lme4's ``as.data.frame(VarCorr(m))`` per response);
* :attr:`ManyResults.fit_info` -- ``response, criterion, converged, singular, nobs``;
* :meth:`ManyResults.anova` -- ``response, term, sum_sq, mean_sq, num_df, den_df, F, p``.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from ..errors import ArgumentError

__all__ = ["ManyResults"]


def _inference_class():
    """A :class:`~mixedanova.inference.tables.FixedInference` whose Satterthwaite
    pieces are those computed by the worker (no objective in this process)."""
    from ..inference.tables import FixedInference

    class StoredInference(FixedInference):
        def __init__(self, res, setup) -> None:
            super().__init__(res)
            self.stored = setup

        @property
        def satterthwaite(self):
            return self.stored

    return StoredInference


class ManyResults:
    """One mixed model fitted to many responses.

    Attributes
    ----------
    names : list
        The responses, in the order of ``responses``' columns.
    method : str
    ddf : str
        The df method the fit prepared (``fixed()``'s default).
    messages : dict
        ``{response: messages}`` for the responses whose convergence check,
        Satterthwaite set-up or fit reported a problem.
    """

    def __init__(self, batch, fit, names: list, Y: np.ndarray | None = None) -> None:
        self.batch = batch
        self.Y = Y  # the responses on the design's rows (for Kenward-Roger refits)
        self.design = batch.design
        self.fit = fit
        self.names = list(names)
        self.method = batch.method
        self.ddf = batch.ddf
        self.messages = {self.names[j]: m for j, m in sorted(fit.messages.items())}

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        nconv = int(self.fit.converged.sum())
        return (f"<ManyResults: {len(self)} responses, {self.method}, "
                f"{nconv} converged, {int(self.fit.failed.sum())} failed>")

    @property
    def _response_col(self) -> pd.Series:
        return pd.Series(self.names, dtype=object)

    def _repeat(self, m: int) -> pd.Series:
        return pd.Series(np.repeat(np.asarray(self.names, dtype=object), m), dtype=object)

    # ------------------------------------------------------------ tables
    @cached_property
    def fit_info(self) -> pd.DataFrame:
        """``response, criterion, converged, singular, nobs``: the REML criterion or
        ML deviance, the convergence check's verdict, lme4's ``isSingular``, rows used."""
        f = self.fit
        return pd.DataFrame({"response": self._response_col, "criterion": f.objective,
                             "converged": f.converged, "singular": f.singular,
                             "nobs": f.nobs})

    @property
    def converged(self) -> np.ndarray:
        return self.fit.converged.copy()

    @property
    def theta(self) -> np.ndarray:
        """``(k, len(theta))`` relative covariance factors per response."""
        return self.fit.theta.copy()

    @property
    def sigma(self) -> np.ndarray:
        return self.fit.sigma.copy()

    @property
    def coef(self) -> pd.DataFrame:
        """Fixed-effect estimates, one row per response (columns the coefficients)."""
        return pd.DataFrame(self.fit.beta, index=pd.Index(self.names, dtype=object),
                            columns=list(self.design.x_names))

    def fixed(self, ddf: str | None = None) -> pd.DataFrame:
        """Fixed-effects tests: ``response, term, estimate, std_err, df, t, p``.

        Parameters
        ----------
        ddf : str, optional
            ``"satterthwaite"`` (lmerTest's ``summary``), ``"kenward-roger"``,
            ``"residual"`` (``n - p``) or ``"none"`` (z tests); the fit's own
            ``ddf`` by default.  Satterthwaite and Kenward-Roger need to have
            been requested in :func:`lmm_many`.
        """
        from scipy import stats

        from ..inference.tables import normalize_ddf

        ddf = self.ddf if ddf is None else normalize_ddf(ddf)
        f = self.fit
        p = f.beta.shape[1]
        se = np.sqrt(np.diagonal(f.vcov, axis1=1, axis2=2))
        if ddf == "satterthwaite":
            self._needs("satterthwaite")
            df = f.df
        elif ddf == "kenward-roger":
            if self.ddf == "kenward-roger":
                se, df = f.kr_se, f.kr_df
            else:
                tabs = self._kr_refits(lambda r: r.fixed("kenward-roger"), "fixed")
                se = np.vstack([t["std_err"].to_numpy() for t in tabs])
                df = np.vstack([t["df"].to_numpy() for t in tabs])
        elif ddf == "residual":
            df = np.repeat((f.nobs - p)[:, None].astype(float), p, axis=1)
        else:
            df = np.full(f.beta.shape, np.inf)
        t = f.beta / se
        with np.errstate(invalid="ignore"):
            pv = np.where(np.isfinite(df), 2.0 * stats.t.sf(np.abs(t), df),
                          2.0 * stats.norm.sf(np.abs(t)))
        terms = np.tile(np.asarray(self.design.x_names, dtype=object), len(self))
        return pd.DataFrame({"response": self._repeat(p), "term": pd.Series(terms, dtype=object),
                             "estimate": f.beta.ravel(), "std_err": se.ravel(),
                             "df": np.asarray(df, dtype=float).ravel(), "t": t.ravel(),
                             "p": pv.ravel()})

    def _needs(self, ddf: str) -> None:
        if self.ddf != ddf:
            raise ArgumentError(f"ddf={ddf!r}: these fits prepared ddf={self.ddf!r}; call "
                                f"lmm_many(..., ddf={ddf!r})")

    @cached_property
    def varcomp(self) -> pd.DataFrame:
        """``response, group, var1, var2, vcov, sdcor`` (lme4's ``as.data.frame(VarCorr)``)."""
        d, f = self.design, self.fit
        layout = d.theta_layout()
        s2 = f.sigma ** 2
        groups, v1, v2, vals, sds = [], [], [], [], []
        for b, name, q, off in zip(d.blocks, d.group_names, layout.qs, layout.offsets):
            r, c = np.tril_indices(q)
            order = np.lexsort((r, c))  # theta runs down each column
            T = np.zeros((len(self), q, q))
            T[:, r[order], c[order]] = f.theta[:, off:off + len(r)]
            cov = s2[:, None, None] * (T @ np.swapaxes(T, 1, 2))
            sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
            for i in range(q):
                groups.append(name), v1.append(b.columns[i]), v2.append(np.nan)
                vals.append(cov[:, i, i]), sds.append(sd[:, i])
            for i in range(q):
                for j in range(i + 1, q):
                    denom = sd[:, i] * sd[:, j]
                    with np.errstate(invalid="ignore", divide="ignore"):
                        corr = np.where(denom > 0, cov[:, j, i] / denom, np.nan)
                    groups.append(name), v1.append(b.columns[i]), v2.append(b.columns[j])
                    vals.append(cov[:, j, i]), sds.append(corr)
        groups.append("Residual"), v1.append(np.nan), v2.append(np.nan)
        vals.append(s2), sds.append(f.sigma)
        m = len(groups)
        tile = lambda seq: pd.Series(np.tile(np.asarray(seq, dtype=object), len(self)),  # noqa: E731
                                     dtype=object)
        return pd.DataFrame({"response": self._repeat(m), "group": tile(groups),
                             "var1": tile(v1), "var2": tile(v2),
                             "vcov": np.column_stack(vals).ravel(),
                             "sdcor": np.column_stack(sds).ravel()})

    def anova(self, type: int | str = 3, ddf: str | None = None) -> pd.DataFrame:
        """F tests of the fixed terms per response (lmerTest's ``anova(m, type)``).

        Returns ``response, term, sum_sq, mean_sq, num_df, den_df, F, p``.
        Satterthwaite tests use the pieces computed at fit time; Kenward-Roger
        tests refit each response (slow).
        """
        from ..inference.hypotheses import hypothesis_matrices
        from ..inference.tables import normalize_ddf
        from ..inference.satterthwaite import SatterthwaiteSetup
        from .engine import FitView, ViewState

        ddf = self.ddf if ddf is None else normalize_ddf(ddf)
        hyps = hypothesis_matrices(self.design, type)
        if ddf == "kenward-roger":
            return self._anova_refit(type)
        if ddf == "satterthwaite":
            self._needs("satterthwaite")
        f = self.fit
        cls = _inference_class()
        cols = ("sum_sq", "mean_sq", "num_df", "den_df", "F", "p")
        out = np.full((len(self), len(hyps), len(cols)), np.nan)
        for j in range(len(self)):
            if f.failed[j]:
                continue
            setup = None
            if ddf == "satterthwaite":
                setup = SatterthwaiteSetup(
                    varpar=np.append(f.theta[j], f.sigma[j]), hessian=np.empty((0, 0)),
                    vcov_varpar=f.vcov_varpar[j], jacobian=f.jacobian[j],
                    vcov_beta=f.vcov[j])
            view = FitView(self.method, float(f.sigma[j]), int(f.nobs[j]),
                           ViewState(f.theta[j], f.beta[j], f.vcov[j]), self.design)
            inf = cls(view, setup)
            for h, L in enumerate(hyps.values()):
                row = inf.f_test(L, ddf)
                out[j, h] = [row[c] for c in cols]
        terms = np.tile(np.asarray(list(hyps), dtype=object), len(self))
        frame = {"response": self._repeat(len(hyps)), "term": pd.Series(terms, dtype=object)}
        for c, name in enumerate(cols):
            frame[name] = out[:, :, c].ravel()
        return pd.DataFrame(frame)

    def _anova_refit(self, type) -> pd.DataFrame:
        """Kenward-Roger F tests per response: pbkrtest's ``KRmodcomp`` through
        lmerTest's ``anova(m, type, ddf = "Kenward-Roger")``, from a single fit of
        each response (``ma.lmm``: the Kenward-Roger adjustment needs the whole
        random-effects system, which the batch does not keep)."""
        from ..inference.hypotheses import hypothesis_matrices

        cols = ("sum_sq", "mean_sq", "num_df", "den_df", "F", "p")
        hyps = list(hypothesis_matrices(self.design, type))
        tabs = self._kr_refits(lambda r: r.anova(type=type, ddf="kenward-roger"), "anova")
        out = np.full((len(self), len(hyps), len(cols)), np.nan)
        for j, tab in enumerate(tabs):
            if tab is not None:
                out[j] = tab.loc[hyps, list(cols)].to_numpy(dtype=float)
        terms = np.tile(np.asarray(hyps, dtype=object), len(self))
        frame = {"response": self._repeat(len(hyps)), "term": pd.Series(terms, dtype=object)}
        for c, name in enumerate(cols):
            frame[name] = out[:, :, c].ravel()
        return pd.DataFrame(frame)

    def _kr_refits(self, table, what: str) -> list:
        """``table(ma.lmm fit)`` for every response (None where the batch fit failed)."""
        import warnings

        from ..model import LinearMixedModel

        if self.method != "REML":
            raise ArgumentError("ddf='kenward-roger' needs method='REML' (the Kenward-Roger "
                                "adjustment is defined for REML fits)")
        if self.Y is None:
            raise ArgumentError(f"{what}(ddf='kenward-roger'): these results do not keep the "
                                "responses; call lmm_many(..., ddf='kenward-roger')")
        d = self.design
        ctl = self.batch.spec
        out = []
        for j in range(len(self)):
            if self.fit.failed[j]:
                out.append(None)
                continue
            data = d.data.copy()
            data[d.formula.response.strip()] = self.Y[:, j]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = LinearMixedModel.from_formula(d.formula.formula, data)
                res = model.fit("REML", optimizer=ctl.optimizer, control=ctl.control, warn=False)
            out.append(table(res))
        if what == "fixed" and any(t is None for t in out):
            p = len(d.x_names)
            nan = pd.DataFrame({"std_err": np.full(p, np.nan), "df": np.full(p, np.nan)})
            out = [nan if t is None else t for t in out]
        return out
