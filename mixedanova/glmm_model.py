"""Front door of generalized linear mixed models: :func:`glmm`.

Orchestrates the design stage (:func:`~mixedanova.design.build.build_design`),
the response of the family (a 0/1, boolean or two-level response;
``cbind(successes, failures)``; a proportion with ``weights=`` trials; counts),
the fit (:mod:`mixedanova.glmm`) and the results
(:class:`~mixedanova.results.glmm.GlmmResults`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from typing import TYPE_CHECKING

from .design.build import Design, build_design
from .design.formula import parse_formula
import warnings

from .errors import (ArgumentError, ConvergenceWarning, DesignError, FitError, MixedAnovaWarning,
                     SeparationWarning, SingularFitWarning, user_stacklevel)
from .results.glmm import GlmmResults

if TYPE_CHECKING:  # the engine (scipy) is imported when a fit needs it
    from .glmm.families import Family

__all__ = ["glmm", "GlmmResponse", "GlmmModel", "ResponseReader", "r_spelling"]

_SUCC = "glmm_successes__"
_TRIALS = "glmm_trials__"
_YNUM = "glmm_response__"


@dataclass(frozen=True)
class GlmmResponse:
    """How the response was read: its label, and the columns put in the data."""

    label: str
    kind: str  # "cbind", "binary", "proportion", "count"
    trials_column: str | None


@dataclass(frozen=True)
class GlmmModel:
    """What :func:`glmm` was called with, for refits (the null model of R2, the
    parametric bootstrap, reduced models).

    Attributes
    ----------
    formula : str
    data : pandas.DataFrame
    family : Family
    nagq : int
    weights, offset : str, array or None
    missing : str
    glmm_data : GlmmData or None
        The numbers of the fit (for :meth:`refit` with a new response).
    requested_family : Family or None
        The family as asked for (the NB shape / dispersion unset when estimated,
        the information kind): :meth:`fit` re-estimates what the original fit
        estimated, as R's ``update()``; ``family`` (the fitted one) is what
        :meth:`refit` holds fixed, as lme4's ``refit``.
    """

    formula: str
    data: pd.DataFrame
    family: "Family"
    nagq: int
    weights: object = None
    offset: object = None
    missing: str = "drop"
    glmm_data: object = None
    requested_family: object = None

    def update(self, formula: str) -> "GlmmModel":
        """The same call with another formula."""
        return replace(self, formula=formula, glmm_data=None)

    def fit(self, start_theta=None) -> GlmmResults:
        """Fit the model (:func:`glmm`)."""
        fam = self.family if self.requested_family is None else self.requested_family
        return glmm(self.formula, self.data, fam, nAGQ=self.nagq,
                    weights=self.weights, offset=self.offset, missing=self.missing,
                    start_theta=start_theta, information=fam.information)

    def refit(self, y: np.ndarray, start_theta=None, template: GlmmResults | None = None
              ) -> GlmmResults:
        """Refit to a new response on the scale the engine uses (proportions for a
        binomial response, with the same trials), the rows and design unchanged
        (lme4's ``refit(m, newresp)``).  ``template`` supplies the design (the
        results this model produced)."""
        from .glmm.agq import AgqObjective
        from .glmm.fit import fit_glmm
        from .glmm.laplace import LaplaceObjective
        if self.glmm_data is None or template is None:
            raise ArgumentError("refit() needs the model of a fit and that fit's results")
        gd = replace(self.glmm_data, y=np.asarray(y, dtype=float))
        obj = LaplaceObjective(self.family, gd)
        value = AgqObjective(obj, self.nagq) if self.nagq > 1 else None
        start = None if start_theta is None else np.asarray(start_theta, dtype=float)
        fit = fit_glmm(obj, value=value, start_theta=start, stage1=self.nagq != 0)
        t = template
        return GlmmResults(design=t.design, family=self.family, data=gd, fit=fit,
                           nagq=self.nagq, x_names=t.x_names, response=t.response,
                           objective=obj, agq=value, formula=t.formula, model=self)


def r_spelling(formula: str) -> tuple[str, dict[str, str]]:
    """R's ``I(x^2)`` as Python's ``I(x**2)``: the rewritten formula and the map
    from the rewritten ``I(...)`` text (spaces removed) back to R's spelling."""
    out, names, i = [], {}, 0
    for m in re.finditer(r"\bI\(", formula):
        if m.start() < i:
            continue
        depth, j = 0, m.end() - 1
        while j < len(formula):
            depth += formula[j] == "("
            depth -= formula[j] == ")"
            if depth == 0:
                break
            j += 1
        span = formula[m.start():j + 1]
        if "^" in span:
            new = span.replace("^", "**")
            names[new.replace(" ", "")] = span.replace(" ", "")
            out.append(formula[i:m.start()] + new)
            i = j + 1
    out.append(formula[i:])
    return "".join(out), names


def _split_response(formula: str) -> tuple[str, str]:
    if "~" not in formula:
        raise DesignError(f"formula {formula!r} has no '~' (response ~ terms)")
    lhs, rhs = formula.split("~", 1)
    return lhs.strip(), rhs


def _evaluate(expr: str, data: pd.DataFrame, what: str) -> np.ndarray:
    expr = expr.strip()
    if expr in data.columns:
        col = data[expr]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DesignError(f"{what} column {expr!r} is not numeric (dtype {col.dtype})")
        return col.to_numpy(dtype=float)
    from formulaic import model_matrix
    try:
        mm = model_matrix(f"0 + I({expr})", data, na_action="ignore")
    except Exception as exc:  # formulaic raises many types
        raise DesignError(f"cannot evaluate {what} {expr!r}: {exc}") from None
    return np.asarray(mm, dtype=float).reshape(len(data), -1)[:, 0]


def _cbind_args(lhs: str) -> list[str] | None:
    m = re.fullmatch(r"cbind\s*\((.*)\)", lhs, re.S)
    if m is None:
        return None
    body, depth, parts, cur = m.group(1), 0, [], ""
    for ch in body:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if len(parts) != 2:
        raise DesignError(f"the response {lhs!r} must be cbind(successes, failures)")
    return [p.strip() for p in parts]


def _prepare_response(formula: str, data: pd.DataFrame, family: "Family"
                      ) -> tuple[str, pd.DataFrame, GlmmResponse]:
    lhs, rhs = _split_response(formula)
    args = _cbind_args(lhs)
    if args is not None:
        if family.name != "binomial":
            raise DesignError(f"a cbind() response is for the binomial family, not "
                              f"{family.name}")
        s = _evaluate(args[0], data, "successes")
        f = _evaluate(args[1], data, "failures")
        for vals, expr in ((s, args[0]), (f, args[1])):
            ok = np.isnan(vals) | ((vals >= 0) & (vals == np.round(vals)))
            if not ok.all():
                rows = list(data.index[~ok][:5])
                raise DesignError(f"cbind() counts {expr!r} must be whole numbers >= 0; rows "
                                  f"{rows} have {', '.join(f'{v:g}' for v in vals[~ok][:5])}")
        data = data.assign(**{_SUCC: s, _TRIALS: s + f})
        return f"{_SUCC} ~ {rhs}", data, GlmmResponse(lhs, "cbind", _TRIALS)
    name = lhs.strip("`")
    if name in data.columns:
        col = data[name]
        if family.name == "binomial" and (pd.api.types.is_bool_dtype(col)
                                          or not pd.api.types.is_numeric_dtype(col)):
            cat = pd.Categorical(col)
            if len(cat.categories) > 2 and not pd.api.types.is_bool_dtype(col):
                raise DesignError(f"response {name!r} has {len(cat.categories)} levels; a "
                                  "binomial response has two (the first is failure)")
            vals = np.where(cat.codes < 0, np.nan, (cat.codes >= 1).astype(float))
            if pd.api.types.is_bool_dtype(col):
                vals = np.where(col.isna(), np.nan, col.astype(float))
            data = data.assign(**{_YNUM: vals})
            return f"{_YNUM} ~ {rhs}", data, GlmmResponse(name, "binary", None)
        if family.name != "binomial" and (pd.api.types.is_bool_dtype(col)
                                          or not pd.api.types.is_numeric_dtype(col)):
            raise DesignError(f"{family.label} response {name!r} must be numeric, not "
                              f"{col.dtype} (a two-level response is for the binomial "
                              "family)")
        return formula, data, GlmmResponse(lhs, "value", None)
    # an expression (incidence/size, y > 0): R evaluates it as one numeric column
    vals = _evaluate(lhs, data, "response")
    data = data.assign(**{_YNUM: vals})
    return f"{_YNUM} ~ {rhs}", data, GlmmResponse(lhs, "value", None)


@dataclass(frozen=True)
class ResponseReader:
    """Reads the response of a GLMM formula chunk by chunk (a Dask partition), as
    :func:`glmm` reads it from a whole DataFrame: ``cbind(successes, failures)``
    as successes and trials columns, an expression as one numeric column.

    Attributes
    ----------
    formula : str
        The formula as given (``I(x^2)`` already in Python's spelling).
    family : Family
    """

    formula: str
    family: "Family"

    def __call__(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """``chunk`` with the response's columns added."""
        return _prepare_response(self.formula, chunk, self.family)[1]

    def read(self, meta: pd.DataFrame) -> tuple[str, GlmmResponse]:
        """The engine's formula and the :class:`GlmmResponse` (from a sample of rows,
        ``meta``).  A two-level factor response (a category read per chunk could
        code its levels differently) is refused: give a 0/1 or boolean column."""
        lhs = _split_response(self.formula)[0]
        name = lhs.strip("`")
        if (self.family.name == "binomial" and name in meta.columns
                and not pd.api.types.is_bool_dtype(meta[name])
                and not pd.api.types.is_numeric_dtype(meta[name])):
            raise DesignError(f"binomial response {name!r} is a factor ({meta[name].dtype}); "
                              "on a Dask data frame give it as a 0/1 or boolean column "
                              "(its levels are read chunk by chunk)")
        text, _, response = _prepare_response(self.formula, meta, self.family)
        return text, response


def _check_response(design: Design, family: "Family", response: GlmmResponse,
                    weights_given: bool) -> tuple[np.ndarray, np.ndarray]:
    y = design.y
    pw = design.prior_weights.copy()
    label = response.label
    if response.kind == "cbind":
        trials = design.data[_TRIALS].to_numpy(dtype=float)
        y = np.divide(y, trials, out=np.zeros_like(y), where=trials > 0)
        return y, pw * trials
    if family.name == "binomial":
        bad = (y < 0) | (y > 1)
        if bad.any():
            rows = list(design.row_index[bad][:5])
            raise DesignError(f"binomial response {label!r} must be in [0, 1] (0/1, or a "
                              f"proportion with weights= trials); rows {rows} have "
                              f"{', '.join(f'{v:g}' for v in y[bad][:5])}")
        if weights_given:
            k = y * pw
            if not np.allclose(k, np.round(k), atol=1e-7):
                raise DesignError(f"binomial response {label!r} times the weights (trials) "
                                  "must be whole numbers of successes")
        else:
            frac = (y > 0) & (y < 1)
            if frac.any():
                raise DesignError(f"binomial response {label!r} has proportions between 0 "
                                  "and 1; give the trials as weights= or use "
                                  "cbind(successes, failures)")
        return y, pw
    bad = family.support_mask(y)
    if bad.any():
        rows = list(design.row_index[bad][:5])
        raise DesignError(f"{family.label} response {label!r} "
                          f"{family.support_error(y) or 'is outside the family support'}; "
                          f"rows {rows} have {', '.join(f'{v:g}' for v in y[bad][:5])}")
    if family.name in ("poisson", "negative_binomial") and weights_given:
        nonwhole = pw != np.round(pw)
        if nonwhole.any():
            warnings.warn(f"{family.label} response {label!r}: non-whole prior weights "
                          "(the log-likelihood weights each row's log-density)",
                          MixedAnovaWarning, stacklevel=user_stacklevel())
    return y, pw


def _fit_on(obj, fam: "Family", estimate: bool, nagq: int, start):
    """Fit on one objective: the family's parameter estimated or not, Laplace
    or AGQ; returns the family (at the estimate), the fit, the parameter's fit
    and the AGQ objective (or None)."""
    from .glmm.agq import AgqObjective
    from .glmm.fit import fit_glmm

    value = AgqObjective(obj, int(nagq)) if nagq > 1 else None
    if not estimate:
        return fam, fit_glmm(obj, value=value, start_theta=start, stage1=nagq != 0), None, value
    from .glmm.dispersion import fit_with_param, retarget

    def fit_one(f, th, warm=None):
        retarget(obj, f)
        return fit_glmm(obj, value=value, start_theta=th if th is not None else start,
                        stage1=nagq != 0, warm=warm)

    pf = fit_with_param(obj, fam, fit_one, (lambda: value) if value is not None else None)
    return pf.family, pf.fit, pf, value


def glmm(formula: str, data: pd.DataFrame, family="binomial", link: str | None = None,
         nAGQ: int = 1, weights=None, offset=None, *, missing: str = "drop",
         start_theta=None, restricted: bool = False,
         information: str = "expected", persist: bool | None = None,
         progress: bool | None = None) -> GlmmResults:
    """Fit a generalized linear mixed model by maximum likelihood (lme4's ``glmer``).

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"cbind(incidence, size - incidence) ~ period + (1|herd)"``.
        R's ``I(age^2)`` is accepted (and keeps that name).
    data : pandas.DataFrame
    family : str or Family
        ``"binomial"``, ``"poisson"``, ``"Gamma"``, ``"inverse.gaussian"``,
        ``"negative_binomial"`` (``"nbinom2"``), or an ``ma.families`` object.
        Gamma / inverse Gaussian dispersion and the NB shape are estimated by
        maximum likelihood unless the object fixes them.
    link : str, optional
        Binomial: ``"logit"`` (default), ``"probit"``, ``"cloglog"``, ``"cauchit"``;
        Poisson and NB: ``"log"`` (default), ``"sqrt"``, ``"identity"``; Gamma:
        ``"inverse"`` (default), ``"log"``, ``"identity"``; inverse Gaussian:
        ``"1/mu^2"`` (default), ``"inverse"``, ``"log"``, ``"identity"``.
    nAGQ : int
        0: glmer's ``nAGQ = 0`` (modes of ``beta`` and ``u`` jointly, ``theta``
        optimized); 1: Laplace; > 1: adaptive Gauss-Hermite quadrature with that
        many nodes per random effect, for a model with one random-effects term
        (glmer allows only a scalar one; here a vector term such as ``(x | g)``
        takes the tensor-product rule of ``nAGQ ** q`` nodes, at most 10,000).
    weights : str or array, optional
        Prior weights: for a binomial proportion, the number of trials.
    offset : str or array, optional
        Added to the linear predictor (as ``offset(col)`` in the formula).
    missing : {"drop", "raise"}
    start_theta : array, optional
        Starting ``theta`` (lme4's order).
    information : {"expected", "observed"}
        The information in the Laplace ``log det``: ``"expected"`` (Fisher
        weights, lme4's ``glmer`` / ``glmer.nb``) or ``"observed"`` (the second
        derivative at the modes, glmmTMB's); they agree for canonical links.
    restricted : bool
        Take the formula as untrusted: only column names, numbers, arithmetic and
        the allowed transforms (``cbind``, ``I``, ``np.log``, ...) are accepted,
        checked before anything is evaluated (see the docs page on trust).
    persist, progress : bool, optional
        A Dask data frame only (see the big-data guide): keep the encoded
        partitions between the PIRLS passes (``persist``, default True; False
        re-reads them in every pass) and show Dask's progress bar on each pass
        (``progress``, default False).

    Returns
    -------
    GlmmResults

    Examples
    --------
    >>> import numpy as np, pandas as pd, mixedanova as ma
    >>> rng = np.random.default_rng(1)
    >>> herd = np.repeat(np.arange(12), 4)
    >>> size = rng.integers(5, 25, herd.size)
    >>> p = 1 / (1 + np.exp(-(-1.5 + rng.normal(0, 0.6, 12)[herd])))
    >>> d = pd.DataFrame({"herd": herd, "size": size, "inc": rng.binomial(size, p)})
    >>> res = ma.glmm("cbind(inc, size - inc) ~ 1 + (1|herd)", d, family="binomial")
    >>> res.fixed()[["estimate", "std_err"]].round(1)   # lme4: coef(summary(m))
               estimate  std_err
    Intercept      -1.4      0.3
    >>> round(res.minus_2_loglik, 1)                   # summary(m)'s "deviance"
    180.2
    """
    from .glmm.agq import MAX_NODES, AgqObjective
    from .glmm.families import make_family
    from .glmm.laplace import GlmmData, LaplaceObjective
    from .glmm.separation import (LARGE, check_separation, expand_limit_fit,
                                  fixed_separation, limit_data, separation_message,
                                  suspected)
    from .likelihood.blocked import TermData

    fam = make_family(family, link)
    if information not in ("expected", "observed"):
        raise ArgumentError(f"information must be 'expected' or 'observed', not "
                            f"{information!r}")
    fam = replace(fam, information=information)
    requested = fam
    if not isinstance(nAGQ, (int, np.integer)) or isinstance(nAGQ, bool) or nAGQ < 0:
        raise ArgumentError(f"nAGQ must be a whole number >= 0, not {nAGQ!r}")
    if not isinstance(data, pd.DataFrame):
        mod = type(data).__module__ or ""
        if mod.split(".")[0] in ("dask", "dask_expr") and hasattr(data, "to_delayed"):
            from .distributed.dask_glmm import glmm_dask
            if not isinstance(restricted, (bool, np.bool_)):
                raise ArgumentError(f"restricted must be True or False, not {restricted!r}")
            if restricted:
                from .design.restricted import check_restricted
                check_restricted(formula, columns=data.columns)
            text, names = r_spelling(formula)
            return glmm_dask(formula, ResponseReader(text, fam), data, nagq=int(nAGQ),
                             weights=weights, offset=offset, missing=missing,
                             start_theta=start_theta, names=names,
                             persist=True if persist is None else bool(persist),
                             progress=bool(progress))
        raise DesignError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if persist is not None or progress is not None:
        raise ArgumentError("persist= and progress= apply to a Dask data frame only")
    if not isinstance(restricted, (bool, np.bool_)):
        raise ArgumentError(f"restricted must be True or False, not {restricted!r}")
    if restricted:
        from .design.restricted import check_restricted
        check_restricted(formula, columns=data.columns)
    text, names = r_spelling(formula)
    from .structured import rewrite_structured  # us(x | g), diag(x | g): lme4 spellings
    text = rewrite_structured(text, data, marginal=False)[0]
    text, data2, response = _prepare_response(text, data, fam)
    extra = (response.trials_column,) if response.trials_column else ()
    design = build_design(parse_formula(text), data2, missing=missing, weights=weights,
                          offset=offset, extra_columns=extra, check_levels=False)
    y, pw = _check_response(design, fam, response, weights is not None)
    terms = tuple(TermData(b.codes, b.zraw, b.nlev) for b in design.blocks)
    if design.structured:
        raise DesignError(f"{next(b.source for b in design.blocks if b.structure != 'us')}: "
                          "structured random-effect covariances are available in ma.lmm "
                          "only, not in ma.glmm (its Laplace fit works on theta)")
    layout = design.theta_layout()
    gd = GlmmData(y, pw, design.offset_values, design.X, terms, layout)
    param_fit = None
    if fam.has_param and fam.param is None:
        fam = fam.with_param(1.0)  # a placeholder until estimated
        estimate = True
    else:
        estimate = False
    obj = LaplaceObjective(fam, gd)
    if nAGQ > 1 and len(terms) != 1:
        raise ArgumentError("nAGQ > 1 (adaptive Gauss-Hermite quadrature) needs a single "
                            "random-effects term (one grouping factor)")
    if nAGQ > 1 and nAGQ ** terms[0].q > MAX_NODES:
        raise ArgumentError(f"nAGQ = {nAGQ} with {terms[0].q} random effects per level "
                            f"needs {nAGQ ** terms[0].q:,} quadrature nodes (nAGQ ** "
                            f"{terms[0].q}; limit {MAX_NODES:,}): lower nAGQ")
    start = None if start_theta is None else layout.check_start(start_theta)
    small = gd.n <= LARGE
    fixed_sep = fixed_separation(fam, gd, design.x_names) if small else None
    at_limit = False
    try:
        fam, fit, param_fit, value = _fit_on(obj, fam, estimate, nAGQ, start)
    except FitError as exc:
        if not small:
            fixed_sep = fixed_separation(fam, gd, design.x_names)
        if not (fixed_sep and fixed_sep[0]):
            raise
        # separation: the fit at its limit (separated direction far out, the rest free)
        limit = limit_data(gd, fixed_sep[2])
        try:
            fam, fit, param_fit, _ = _fit_on(LaplaceObjective(fam, limit.data), fam, estimate,
                                             nAGQ, start)
        except FitError:
            raise FitError(f"{separation_message(*fixed_sep, fitted=False)}; the fit failed "
                           f"({exc}): drop or merge the separated terms") from None
        fit = expand_limit_fit(fit, limit)
        at_limit = True
        if param_fit is not None:
            param_fit = replace(param_fit, fit=fit, vcov_beta_joint=None)
        if fam.has_param:
            from .glmm.dispersion import retarget
            retarget(obj, fam)
        value = AgqObjective(obj, int(nAGQ)) if nAGQ > 1 else None
    separation = check_separation(fam, gd, design.x_names, fit,
                                  [b.levels for b in design.blocks],
                                  [b.group for b in design.blocks],
                                  fixed=fixed_sep if small or at_limit or suspected(fit, gd.X)
                                  else ({}, False, None), limit=at_limit)
    x_names = tuple(names.get(n.replace(" ", ""), n) for n in design.x_names)
    model = GlmmModel(formula, data, fam, int(nAGQ), weights, offset, missing, gd, requested)
    res = GlmmResults(design=design, family=fam, data=gd, fit=fit, nagq=int(nAGQ),
                      x_names=x_names, response=response.label, objective=obj, agq=value,
                      formula=formula, model=model, param_fit=param_fit, separation=separation)
    if separation is not None and separation.message:
        warnings.warn(separation.message, SeparationWarning, stacklevel=user_stacklevel())
    if res.is_singular:
        warnings.warn("boundary (singular) fit: a random-effects covariance is singular "
                      f"(theta = {np.round(res.theta, 6).tolist()})", SingularFitWarning,
                      stacklevel=user_stacklevel())
    other = [m for m in res.convergence_messages
             if separation is None or m != separation.message]
    if not res.converged and (other or not (separation and separation.separated)):
        warnings.warn("; ".join(other) or "the fit did not converge",
                      ConvergenceWarning, stacklevel=user_stacklevel())
    return res
