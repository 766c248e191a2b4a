"""What a fit on a Dask data frame computes of the in-memory results' inference,
and what it refuses (issue 19).

:class:`RowlessInference` is mixed into
:class:`~mixedanova.distributed.dask_fit.DistributedLmmResults` before
:class:`~mixedanova.results.lmm.LinearMixedResults`:

* computed as in memory, from level-sized quantities: ``anova()`` of types 1
  and 2 (the summed unweighted ``X'X``) and 3 (one TSQR pass,
  :func:`~mixedanova.distributed.inference_passes.type3_pass`), ``r2()`` and
  ``icc()`` (one pass of prediction moments), ``emmeans()`` (the codebook's
  levels and one pass of covariate means), ``get_prediction()`` and
  ``predict(se_fit=True)`` on a pandas ``newdata``, ``conf_int()`` (Wald and
  profile: the summed system's deviance);
* refused with a :class:`~mixedanova.errors.DesignError` or
  :class:`~mixedanova.errors.FitError` saying why: Kenward-Roger (sums over
  observations), one value per observation (hat values, Cook's distances,
  residual views of a residual structure, ``R``, ``V``), and what simulates
  responses row by row (``simulate``, the parametric bootstrap).

``update()`` / ``ranova()`` / ``ma.compare`` refit other models on the same Dask
frame (each its own two passes, the first model's incomplete rows dropped too);
the model without random terms of ``ranova`` is :meth:`RowlessInference.null_loglik`.
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import pandas as pd

from ..errors import DesignError, FitError

__all__ = ["RowlessInference", "row_sized"]


def row_sized(what: str, instead: str = "residuals(), fittedvalues and predict() "
               "are lazy Dask series") -> DesignError:
    """The :class:`~mixedanova.errors.DesignError` refusing ``what`` (one value per
    observation) on a Dask fit; ``instead`` says what to use."""
    return DesignError(f"{what} is one value per observation; not available for a fit on a "
                       f"Dask data frame ({instead})")


class RowlessInference:
    """The inference methods of a fit without rows (see the module docstring);
    ``self.model`` is a :class:`~mixedanova.distributed.dask_fit.DistributedModel`."""

    @staticmethod
    def _check_ddf(ddf: str) -> None:
        if isinstance(ddf, str) and ddf.lower().replace("_", "-") in ("kenward-roger", "kr"):
            raise DesignError("Kenward-Roger needs the design matrices X and Z row by row "
                              "(its adjusted covariance sums over observations); not "
                              "available for a fit on a Dask data frame: use "
                              "ddf='satterthwaite' (level-sized)")

    def fixed(self, ddf: str = "satterthwaite", level: float = 0.95) -> pd.DataFrame:
        self._check_ddf(ddf)
        return super().fixed(ddf, level)

    def contrast(self, L, ddf: str = "satterthwaite", rhs=0.0, level: float = 0.95):
        self._check_ddf(ddf)
        return super().contrast(L, ddf, rhs=rhs, level=level)

    def anova(self, type=3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """lmerTest's ``anova(m, type, ddf)`` as for an in-memory fit: types 1 and 2
        from the summed ``X'X``, type 3 from one more pass over the partitions
        (:func:`~mixedanova.distributed.inference_passes.type3_pass`); Kenward-Roger
        is refused."""
        self._check_ddf(ddf)
        return super().anova(type, ddf)

    def _hypothesis_source(self):
        """The data's matrices of the ANOVA hypotheses
        (:class:`~mixedanova.inference.hypotheses.GramSource`)."""
        from ..inference.hypotheses import GramSource
        self._check_remembered()
        return GramSource(self.model.xtx, self._type3_matrices)

    def _check_remembered(self) -> None:
        if self.model.xtx is None or self.model.prototype is None:
            raise DesignError("this model was built without the unweighted X'X and the "
                              "codebook's prototype that anova() and emmeans() read "
                              "(DistributedModel.from_formula keeps them: see "
                              "DistributedModel.remember_rows)")

    def _type3_matrices(self, terms, has_intercept: bool):
        key = (tuple(terms), has_intercept)
        cache = self.__dict__.setdefault("_type3_cache", {})
        if key not in cache:
            from .inference_passes import type3_pass
            m = self.model
            cache[key] = type3_pass(m.encoder, m.ddf, np.flatnonzero(m.keep), list(terms),
                                    has_intercept, m.prototype, m.progress)
        return cache[key]

    def _prediction_variances(self, beta: np.ndarray, covs: list) -> tuple[float, list]:
        """Nakagawa's row variances (:func:`mixedanova.inference.r2.row_variances`)
        from one pass over the partitions, cached per estimate."""
        from .inference_passes import prediction_variance_pass
        cache = self.__dict__.setdefault("_r2_cache", {})
        key = (beta.tobytes(), tuple(c.tobytes() for c in covs))
        if key not in cache:
            m = self.model
            cache[key] = prediction_variance_pass(m.encoder, m.ddf, np.flatnonzero(m.keep),
                                                  beta, covs, m.progress)
        mom = cache[key]
        return mom.var_fixed, mom.var_terms

    def get_prediction(self, newdata=None, re_form=None, allow_new_levels: bool = False,
                       ddf: str = "satterthwaite", level: float = 0.95) -> pd.DataFrame:
        """As the in-memory ``get_prediction`` for a pandas ``newdata`` (level-sized
        inputs); the fit's own rows (``newdata=None``) are refused."""
        if not isinstance(newdata, pd.DataFrame):
            raise row_sized("get_prediction() on the fit's rows (or a Dask frame)",
                             "pass newdata as a pandas DataFrame")
        self._check_ddf(ddf)
        return super().get_prediction(newdata, re_form, allow_new_levels, ddf, level)

    def emmeans(self, specs, by=None, ddf: str = "satterthwaite", level: float = 0.95,
                at: dict | None = None):
        """emmeans' marginal means as in memory: the reference grid's levels come from
        the codebook, the covariates' means from one pass over the partitions."""
        self._check_ddf(ddf)
        if self.design.dropped_columns:
            raise DesignError(
                "emmeans() with aliased (dropped) fixed-effect columns checks each grid "
                "row's estimability against the rows of X; not available for a fit on a "
                f"Dask data frame (dropped: {', '.join(self.design.dropped_columns)})")
        return super().emmeans(specs, by=by, ddf=ddf, level=level, at=at)

    @cached_property
    def _reference_data(self) -> pd.DataFrame:
        """A small frame with the fixed part's columns whose distinct values (factors)
        and means (numeric columns) are those of the data's complete rows, for
        emmeans' reference grid (:func:`mixedanova.inference.emmeans.emmeans`)."""
        from .inference_passes import column_means_pass
        self._check_remembered()
        m = self.model
        cols = self.design.needed_columns(include_random=False)
        proto = m.prototype
        numeric = [c for c in cols if c not in m.values and
                   pd.api.types.is_numeric_dtype(proto[c]) and
                   not pd.api.types.is_bool_dtype(proto[c])]
        means = column_means_pass(m.encoder.plan, m.ddf, numeric, m.progress) if numeric \
            else {}
        size = max([1] + [len(m.values[c]) for c in cols if c in m.values])
        out = {}
        for c in cols:
            if c in m.values:
                vals = m.values[c]
                out[c] = pd.Series(np.resize(vals.to_numpy(), size)).astype(vals.dtype)
            elif c in means:
                out[c] = np.full(size, means[c])
            else:
                out[c] = pd.Series(np.resize(proto[c].to_numpy(), size)).astype(proto[c].dtype)
        return pd.DataFrame(out)

    def conf_int(self, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """lme4's ``confint``: ``"wald"`` and ``"profile"`` (the deviance of the summed
        system) as in memory; ``"boot"`` is refused."""
        if isinstance(method, str) and method.lower() in ("boot", "bootstrap"):
            raise FitError("confint(method='boot') simulates responses row by row and "
                           "refits each; not available for a fit on a Dask data frame: use "
                           "method='profile' or 'wald'")
        return super().conf_int(method, level, **kwargs)

    def null_loglik(self, reml: bool) -> tuple[float, int]:
        """R's ``logLik(lm(...), REML = reml)`` of the model without random terms and
        its df (``p + 1``), from the summed cross-products (ranova's last row when
        the one random term is dropped): the residual sum of squares of the
        least-squares fit of the weighted response less the offset (the
        cross-products re-centered on that fit), ``log det(X'WX)`` and ``sum(log w)``."""
        cp = self.model.cp
        st = cp.standardized()
        n, p = cp.n, cp.p
        rss = float(st.scale[0] ** 2 * st.xy[p, p])
        N = n - p if reml else n
        val = 0.5 * (-N * (math.log(2.0 * math.pi) + 1.0 - math.log(N) + math.log(rss)))
        if reml and p:
            chol = np.linalg.cholesky(cp.xy[:p, :p])
            val -= float(np.sum(np.log(np.diag(chol))))
        if self.design.has_weights:
            val += 0.5 * float(self.model.log_w)
        return val, p + 1

    def simulate(self, n: int = 1, seed=None, use_random: bool = False):
        raise row_sized("simulate() (a response per row)")

    def cooks_distance(self):
        raise row_sized("cooks_distance()")

    def influence(self, groups: str | None = None):
        raise FitError("influence() refits the model without each observation or group; "
                       "not available for a fit on a Dask data frame (fit a filtered Dask "
                       "frame with ma.lmm for one deletion)")

    def plot_resid(self, **kwargs):
        raise row_sized("plot_resid() (every residual)",
                         "plot a sample: res.residuals().sample(frac=...).compute()")

    def hatvalues(self):
        raise row_sized("hatvalues()")

    @cached_property
    def residual_sd(self):
        raise row_sized("residual_sd")

    @cached_property
    def resid_pearson(self):
        raise row_sized("resid_pearson")

    @cached_property
    def resid_normalized(self):
        raise row_sized("resid_normalized")

    def residual_covariance(self, rows):
        raise row_sized("residual_covariance (rows of the data)")

    def residual_intervals(self, level: float = 0.95):
        if self.state.residual is None:
            raise DesignError("residual_intervals(): the model has no residual structure "
                              "(residual=)")
        return super().residual_intervals(level)

    def R(self, max_cells=None):
        raise DesignError("R (one row and column per observation) is row-sized; not "
                          "available for a fit on a Dask data frame")

    def V(self, max_cells=None):
        raise DesignError("V (one row and column per observation) is row-sized; not "
                          "available for a fit on a Dask data frame")
