"""The lme4 / emmeans / performance workflow on a GLMM fit.

:class:`GlmmWorkflowMixin` is mixed into
:class:`~mixedanova.results.glmm.GlmmResults`; each method is a thin delegation
to :mod:`mixedanova.inference` (the same functions the linear mixed model
uses: ``compare``, ``intervals``, ``emmeans``, ``prediction``, ``r2``,
``simulate``) or to the model that produced the fit (refits).
"""
from __future__ import annotations

import re
import warnings
from functools import cached_property

import numpy as np
import pandas as pd

from ..errors import ArgumentError

__all__ = ["GlmmWorkflowMixin"]

_RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")


class GlmmWorkflowMixin:
    """Methods of :class:`GlmmResults` for the R workflow (see module docstring)."""

    @property
    def method(self) -> str:
        """``"ML"``: a GLMM is fitted by maximum likelihood (Laplace or quadrature)."""
        return "ML"

    # ------------------------------------------------------------ fixed effects
    @cached_property
    def _inference(self):
        """Wald z tests (:class:`mixedanova.inference.wald.WaldInference`)."""
        from ..inference.wald import WaldInference
        return WaldInference(self.fit.beta, self.fit.vcov_beta, list(self.x_names))

    def fixed(self, level: float = 0.95) -> pd.DataFrame:
        """``coef(summary(m))`` with Wald limits: ``estimate, std_err, z, p, ci_low,
        ci_high`` (z tests, normal p values and quantiles, as glmer)."""
        return self._inference.fixed_table(level)

    # ------------------------------------------------------------ random effects
    def conditional_modes(self) -> list[np.ndarray]:
        """``b = Lambda u`` per random term as ``(nlev, q)`` arrays (design order)."""
        return [m.copy() for m in self._modes]

    @property
    def _blups(self) -> list[np.ndarray]:
        # the name the shared prediction code reads (an LMM's BLUPs)
        return self._modes

    def _term_covariances(self) -> list[np.ndarray]:
        """Per random term its ``VarCorr`` matrix ``T T'`` (scale 1)."""
        return [T @ T.T for T in self._templates()]

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-group coefficients (lme4's ``coef(m)``): fixed + random effects per
        level, one DataFrame per grouping factor."""
        beta = self.fe_params
        out = {}
        for group, re_ in self.random_effects.items():
            table = pd.DataFrame(np.tile(beta.to_numpy(), (len(re_), 1)), index=re_.index,
                                 columns=list(beta.index))
            for col in re_.columns:
                name = "Intercept" if col == "(Intercept)" and col not in table.columns \
                    else col
                base = table[name].to_numpy() if name in table.columns else 0.0
                table[name] = base + re_[col].to_numpy()
            out[group] = table
        return out

    # ------------------------------------------------------------ residuals
    def residuals(self, type: str = "deviance") -> pd.Series:
        """``residuals(m, type)``: ``"deviance"`` (glmer's default), ``"pearson"``,
        ``"response"``, ``"working"``."""
        if type not in _RESIDUAL_TYPES:
            raise ArgumentError(f"type must be one of {', '.join(_RESIDUAL_TYPES)}, "
                                f"not {type!r}")
        return self.resid(type).rename(f"resid_{type}")

    # ------------------------------------------------------------ predictions
    def predict(self, newdata: pd.DataFrame | None = None, type: str = "link",
                re_form=None, allow_new_levels: bool = False) -> pd.Series:
        """Predictions (lme4's ``predict(m, newdata, type, re.form, allow.new.levels)``).

        Parameters
        ----------
        newdata : pandas.DataFrame, optional
            Default: the rows of the fit.
        type : {"link", "response"}
            The linear predictor (offset included) or the mean.
        re_form : None or str
            ``None``: all random terms; ``"~0"`` or ``"NA"``: none (population
            level); ``"~(1|herd)"``: those terms.
        allow_new_levels : bool
            A level not in the fit gets random effect 0; else it is an error.

        Rows of ``newdata`` with a missing predictor give NaN.
        """
        from ..inference.prediction import predict
        if type not in ("link", "response"):
            raise ArgumentError(f"type must be 'link' or 'response', not {type!r}")
        eta = predict(self, newdata, re_form, allow_new_levels)
        if type == "link":
            return eta
        vals = eta.to_numpy(dtype=float)
        ok = np.isfinite(vals)
        out = np.full(len(vals), np.nan)
        out[ok] = self.family.link.linkinv(vals[ok])
        return pd.Series(out, index=eta.index, name="predicted")

    # ------------------------------------------------------------ comparisons
    def compare(self, *others, names=None) -> pd.DataFrame:
        """Likelihood-ratio tests against other fits (lme4's ``anova(m0, m1)``);
        see :func:`mixedanova.inference.compare.compare`.  Laplace and
        quadrature fits compare (both keep the whole log-likelihood)."""
        from ..inference.compare import compare
        return compare(self, *others, names=names)

    def conf_int(self, method: str = "wald", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """Confidence intervals (lme4's ``confint(m, method = ...)``): ``"wald"``
        (fixed effects), ``"profile"`` (the Laplace or quadrature ``-2 log L``
        profiled) or ``"boot"`` (parametric bootstrap; ``n_boot``, ``seed``,
        ``progress``).  ``parm`` selects ``"fixed"``, ``"random"`` or names.
        See :mod:`mixedanova.inference.glmm_intervals`."""
        from ..inference.intervals import conf_int
        unknown = sorted(set(kwargs) - {"parm", "n_boot", "seed", "progress"})
        if unknown:
            raise ArgumentError(f"conf_int() got unknown keyword argument(s) "
                                f"{', '.join(map(repr, unknown))}; it takes method, level, "
                                "parm, n_boot, seed, progress")
        return conf_int(self, method, level, **kwargs)

    def profile(self, parm=None, *, level: float = 0.99, npoints: int = 8) -> pd.DataFrame:
        """Profile zeta on a grid (lme4's ``as.data.frame(profile(m))``): columns
        ``parameter, value, zeta``; see :func:`mixedanova.inference.profile.profile_zeta`."""
        from ..inference.profile import profile_zeta
        return profile_zeta(self, parm, level=level, npoints=npoints)

    def plot_profile(self, parm=None, *, level: float = 0.99, npoints: int = 8,
                     profile: pd.DataFrame | None = None):
        """Profile zeta plots (lme4's ``xyplot(profile(m))``), a matplotlib Figure."""
        from ..report.plots import plot_profile
        if profile is None:
            profile = self.profile(parm, level=level, npoints=npoints)
        return plot_profile(profile)

    # ------------------------------------------------------------ marginal means
    def emmeans(self, specs, by=None, level: float = 0.95, at: dict | None = None,
                type: str = "link"):
        """Estimated marginal means on the link scale, or back-transformed with
        ``type="response"`` (emmeans' conventions: delta-method SE, limits
        back-transformed, tests on the link scale); ``.pairs()`` gives odds or
        rate ratios on the response scale of a logit or log link.  See
        :func:`mixedanova.inference.emmeans.emmeans`."""
        from ..inference.emmeans import emmeans
        return emmeans(self, specs, by=by, ddf="none", level=level, at=at, type=type)

    # ------------------------------------------------------------ R2 / ICC
    def r2(self) -> pd.Series:
        """Nakagawa's marginal and conditional R2 (``performance::r2_nakagawa``)."""
        from ..inference.r2 import r2_nakagawa
        return r2_nakagawa(self)

    def icc(self, by_group: bool = False) -> pd.Series:
        """Adjusted and unadjusted ICC (``performance::icc``), or per group."""
        from ..inference.r2 import icc
        return icc(self, by_group=by_group)

    def variance_components(self) -> dict:
        """insight's ``get_variance(m)``: fixed, random, distribution-specific and
        dispersion variances (see :mod:`mixedanova.inference.r2`)."""
        from ..inference.r2 import variance_components
        return variance_components(self)

    # ------------------------------------------------------------ refits
    def null_model(self):
        """The fit with the fixed part reduced to ``1`` (same random terms, offset,
        weights and family): insight's ``null_model(m)``, behind the Poisson R2."""
        if self.model is None:
            raise ArgumentError("this fit carries no model to refit")
        cached = self.__dict__.get("_null_model")
        if cached is not None:
            return cached
        lhs = self.formula.split("~", 1)[0].strip()
        random = list(dict.fromkeys(r.source for r in self.design.formula.random))
        offsets = re.findall(r"offset\([^()]*(?:\([^()]*\)[^()]*)*\)", self.design.formula.fixed)
        rhs = " + ".join(["1", *offsets, *random])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = self.model.update(f"{lhs} ~ {rhs}").fit()
        self.__dict__["_null_model"] = fit
        return fit

    def refit(self, y, start_theta=None):
        """The same model fitted to a new response (lme4's ``refit(m, newresp)``),
        on the engine's scale (proportions for a binomial response)."""
        if self.model is None:
            raise ArgumentError("this fit carries no model to refit")
        y = np.asarray(y, dtype=float)
        if y.shape != (self.nobs,):
            raise ArgumentError(f"the new response needs {self.nobs} values, not {y.shape}")
        return self.model.refit(y, start_theta, template=self)

    # ------------------------------------------------------------ plain data
    def to_dict(self) -> dict:
        """Every table of the fit as plain Python objects (JSON-ready);
        :func:`mixedanova.read_results` reads it back.  The data are not included."""
        from ..report.export import results_to_dict
        return results_to_dict(self)

    def to_json(self, path=None, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text; also written to ``path`` when given."""
        from ..report.export import results_to_json
        text = results_to_json(self, indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def simulate(self, n: int = 1, seed=None, use_random: bool = False) -> pd.DataFrame:
        """Responses drawn from the fit (lme4's ``simulate(m, nsim, seed)``): new
        random effects (or the modes, ``use_random=True``), then the family.
        Binomial draws are returned as proportions of the trials."""
        from ..inference.simulate import simulate
        return simulate(self, n=n, seed=seed, use_random=use_random)
