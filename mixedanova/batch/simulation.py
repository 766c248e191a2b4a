"""Models with parameters given by the user, for power by simulation (issue 20).

:func:`simulation_model` is simr's ``makeLmer`` (a design, no response, and the
parameters) and its ``fixef(m)["x"] <- ...`` (a fitted result with some
parameters changed).  :meth:`SimulationModel.simulate` draws responses
``X beta + sum_k Z_k b_k + e`` with ``b_k ~ N(0, G_k)`` per level and
``e ~ N(0, sigma^2)``; :meth:`SimulationModel.extended` grows a grouping factor
(or the replicates) as simr's ``extend`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import ArgumentError, UnknownNameError

__all__ = ["SimulationModel", "simulation_model", "extend_data"]

_METHODS = ("REML", "ML", "ANOVA")
_FAMILIES = ("binomial", "poisson")


@dataclass(frozen=True)
class SimulationModel:
    """A mixed model with known parameters on a design.

    Attributes
    ----------
    formula : str
        Right-hand side (``"~ trt + (1|block)"``).
    data : pandas.DataFrame
        The design (no response needed).
    fixed : dict
        ``{fixed-effect name: value}``, names as fits report them (``"Intercept"``,
        ``"trt[T.B]"``).
    varcomp : dict
        ``{group: variance}`` or ``{group: covariance matrix}`` for a vector term.
    sigma : float
        Residual standard deviation.
    method : {"REML", "ML", "ANOVA"}
        How the simulated data are fitted by :func:`~mixedanova.batch.power.power`.
    family : {None, "binomial", "poisson"}
        A GLMM (canonical link: logit, log) instead of a linear mixed model;
        ``sigma`` is then unused.
    residual : structure or tuple of structures, optional
        A residual covariance structure (``ma.AR1("subject", "time")``, ...).
    residual_par : dict, optional
        Its parameters by name (``{"phi": 0.5}``; the names of its varcomp rows).
    """

    formula: str
    data: pd.DataFrame = field(repr=False)
    fixed: dict
    varcomp: dict
    sigma: float
    method: str = "REML"
    family: str | None = None
    residual: object = None
    residual_par: dict | None = None

    def with_data(self, data: pd.DataFrame) -> "SimulationModel":
        """The same parameters on another design (e.g. an extended one)."""
        return replace(self, data=data)

    def extended(self, along: str, size: int) -> "SimulationModel":
        """The model on :func:`extend_data` ``(data, along, size)``."""
        return self.with_data(extend_data(self.data, along, size))

    def design(self):
        """The batch design of :attr:`data` (placeholder response)."""
        from .fit import prepare_batch
        return prepare_batch(self.formula, self.data, method="REML", ddf="none")

    def simulate(self, nsim: int, seed=None, batch=None) -> np.ndarray:
        """``(n, nsim)`` simulated responses on the rows of the design.

        Parameters
        ----------
        nsim : int
        seed : int or numpy.random.Generator, optional
        batch : BatchDesign, optional
            The design of :attr:`data` when already built.
        """
        rng = np.random.default_rng(seed)
        batch = self.design() if batch is None else batch
        d = batch.design
        beta = _fixed_vector(self.fixed, d.x_names)
        n = d.nobs
        Y = np.repeat((d.X @ beta)[:, None], nsim, axis=1)
        for b, name in zip(d.blocks, d.group_names):
            G = _covariance(self.varcomp, name, b.columns)
            if not np.any(G):
                continue
            L = _psd_root(G, name)
            u = rng.standard_normal((b.nlev, nsim, L.shape[1])) @ L.T  # (nlev, nsim, q)
            Y += np.einsum("iq,iqs->is", b.zraw, u[b.codes].transpose(0, 2, 1))
        if self.family == "binomial":  # Bernoulli draws with the logit link
            return (rng.random((n, nsim)) < 1.0 / (1.0 + np.exp(-Y))).astype(float)
        if self.family == "poisson":  # log link
            return rng.poisson(np.exp(Y)).astype(float)
        if self.residual is not None:
            Y += self.sigma * self._residual_draws(d, nsim, rng)
            return Y
        Y += self.sigma * rng.standard_normal((n, nsim))
        return Y

    def residual_structure(self, design):
        """The residual structure bound to ``design``'s rows and its parameter
        vector ``u`` (the engine's unconstrained scale)."""
        from ..residual import bind_residual

        outer = design.blocks[-1].factors if design.blocks else None
        # the design keeps the formula's columns; the structure's (time, group) come
        # from the data rows it used (the placeholder response holds their positions)
        rows = self.data.iloc[np.asarray(design.y, dtype=np.int64)].reset_index(drop=True)
        st = bind_residual(self.residual, rows, outer)
        par = dict(self.residual_par or {})
        unknown = sorted(set(par) - set(st.names))
        missing = [nm for nm in st.names if nm not in par]
        if unknown or missing:
            raise ArgumentError(f"residual_par must give the residual structure's parameters "
                                f"{', '.join(map(repr, st.names))}"
                                + (f"; unknown {', '.join(map(repr, unknown))}" if unknown else "")
                                + (f"; missing {', '.join(map(repr, missing))}" if missing else ""))
        nat = np.array([float(par[nm]) for nm in st.names])
        with np.errstate(all="ignore"):
            u = st.unconstrained(nat)
        if not np.all(np.isfinite(u)):
            raise ArgumentError(f"residual_par {par} is outside the structure's parameter space")
        return st, u

    def _residual_draws(self, design, nsim: int, rng) -> np.ndarray:
        """``(n, nsim)`` errors with covariance ``Rrel`` (correlation groups
        factored one at a time)."""
        st, u = self.residual_structure(design)
        n = design.nobs
        if st.correlation is None:
            return st.relative_sd(u, n)[:, None] * rng.standard_normal((n, nsim))
        if not hasattr(st.correlation, "matrix"):
            raise ArgumentError(f"residual={self.residual!r}: simulation supports AR1, CAR1 "
                                f"and CompSymm correlations (with a variance function), "
                                f"not {type(st.correlation).__name__}")
        groups = np.asarray(st.correlation.groups)
        out = np.empty((n, nsim))
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            L = np.linalg.cholesky(st.covariance(u, rows))
            out[rows] = L @ rng.standard_normal((len(rows), nsim))
        return out


def _fixed_vector(fixed: dict, names) -> np.ndarray:
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise UnknownNameError(f"fixed names {', '.join(map(repr, unknown))} are not fixed "
                               f"effects of the model; they are {', '.join(map(repr, names))}")
    missing = [n for n in names if n not in fixed]
    if missing:
        raise ArgumentError(f"fixed must give every fixed effect; missing "
                            f"{', '.join(map(repr, missing))}")
    return np.array([float(fixed[n]) for n in names])


def _covariance(varcomp: dict, group: str, columns) -> np.ndarray:
    q = len(columns)
    if group not in varcomp:
        raise ArgumentError(f"varcomp has no entry for the random term of group {group!r} "
                            f"(columns {', '.join(columns)}); give its variance"
                            + (" or covariance matrix" if q > 1 else ""))
    G = np.atleast_2d(np.asarray(varcomp[group], dtype=float))
    if G.shape == (1, 1) and q > 1:
        raise ArgumentError(f"varcomp[{group!r}] must be a {q} x {q} covariance matrix "
                            f"(columns {', '.join(columns)}), not one number")
    if G.shape != (q, q):
        raise ArgumentError(f"varcomp[{group!r}] must be {q} x {q}, not {G.shape}")
    if not np.allclose(G, G.T):
        raise ArgumentError(f"varcomp[{group!r}] must be symmetric")
    return G


def _psd_root(G: np.ndarray, group: str) -> np.ndarray:
    vals, vecs = np.linalg.eigh(G)
    if vals.min() < -1e-10 * max(vals.max(), 1.0):
        raise ArgumentError(f"varcomp[{group!r}] is not a covariance matrix (negative "
                            f"eigenvalue {vals.min():.3g})")
    return vecs * np.sqrt(np.maximum(vals, 0.0))


def extend_data(data: pd.DataFrame, along: str, size: int) -> pd.DataFrame:
    """``data`` with ``size`` levels of the grouping factor ``along`` (simr's ``extend``).

    The first ``size`` levels (in order of appearance) are kept when ``size`` is
    at most their number; otherwise new levels are made by copying the rows of
    the existing levels in turn (new labels ``"<level>.<copy>"``).  With
    ``along="replicates"`` every row is repeated ``size`` times.
    """
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) \
            or size < 1:
        raise ArgumentError(f"breaks must be positive whole numbers, not {size!r}")
    size = int(size)
    if along == "replicates":
        return data.loc[data.index.repeat(size)].reset_index(drop=True)
    if along not in data.columns:
        raise UnknownNameError(f"along={along!r} is not a column of data (or 'replicates')")
    col = data[along]
    levels = list(pd.unique(col.dropna()))
    if size <= len(levels):
        keep = col.isin(levels[:size])
        out = data.loc[keep].copy()
        if isinstance(out[along].dtype, pd.CategoricalDtype):
            out[along] = out[along].cat.remove_unused_categories()
        return out.reset_index(drop=True)
    parts, labels = [], []
    for i in range(size):
        src = levels[i % len(levels)]
        block = data.loc[col == src].copy()
        label = src if i < len(levels) else f"{src}.{i // len(levels)}"
        block[along] = str(label) if i >= len(levels) else src
        parts.append(block)
        labels.append(label)
    out = pd.concat(parts, ignore_index=True)
    out[along] = pd.Categorical(out[along].astype(str),
                                categories=list(dict.fromkeys(map(str, labels))))
    return out


def simulation_model(formula, data: pd.DataFrame | None = None, *, fixed: dict | None = None,
                     varcomp: dict | None = None, sigma: float | None = None,
                     method: str = "REML", residual=None,
                     family: str | None = None,
                     residual_par: dict | None = None) -> SimulationModel:
    """A model with known parameters, to simulate from (simr's ``makeLmer``).

    Parameters
    ----------
    formula : str or LinearMixedResults
        The right-hand side (``"~ trt + (1|block)"``; a response on the left is
        ignored), or a fitted result whose estimates are the defaults of the
        parameters not given here (simr's ``fixef(m)["x"] <- ...``).
    data : pandas.DataFrame
        The design (no response needed); a fitted result's data by default.
    fixed : dict
        ``{name: value}`` keyed by the fixed-effect names fits report
        (``"Intercept"``, ``"trt[T.B]"``); all of them for a new model, any of
        them for a fitted one.
    varcomp : dict
        ``{group: variance}`` (``{"block": 0.5}``), or a covariance matrix for a
        vector term (``{"subject": [[1, 0.2], [0.2, 0.5]]}``).
    sigma : float
        Residual standard deviation.
    method : {"REML", "ML", "ANOVA"}
        How :func:`~mixedanova.batch.power.power` fits the simulated data
        (``"ANOVA"``: EMS F tests).
    residual : structure or tuple of structures, optional
        A residual covariance structure (``ma.AR1("subject", "time")``,
        ``ma.CompSymm(...)``, ``ma.CAR1(...)``, optionally with a variance
        function such as ``ma.VarIdent(...)``): errors are drawn with
        covariance ``sigma^2 Rrel`` within each correlation group, and
        :func:`~mixedanova.batch.power.power` fits each data set with
        ``ma.lmm(..., residual=)`` (one at a time).
    residual_par : dict
        The structure's parameters by the names of its varcomp rows
        (``{"phi": 0.5}``, ``{"rho": 0.3}``, VarIdent's levels, ...).
    family : {None, "binomial", "poisson"}
        Simulate a GLMM (Bernoulli responses with the logit link, or counts with
        the log link) from ``fixed`` and ``varcomp`` on the linear-predictor
        scale; :func:`~mixedanova.batch.power.power` then fits each data set with
        ``ma.glmm`` (Laplace) and tests a coefficient by its Wald z test.
        ``sigma`` is not used (leave it out).  From a string formula only.
    """
    if residual is not None and family is not None:
        raise ArgumentError("residual= and family= cannot be combined")
    if residual is None and residual_par is not None:
        raise ArgumentError("residual_par= needs residual= (a residual structure)")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise ArgumentError(f"method must be one of {', '.join(_METHODS)}, not {method!r}")
    method = method.upper()
    if family is not None:
        if not isinstance(family, str) or family.lower() not in _FAMILIES:
            raise ArgumentError(f"family must be one of {', '.join(map(repr, _FAMILIES))} "
                                f"(canonical links) or None, not {family!r}")
        family = family.lower()
        if not isinstance(formula, str):
            raise ArgumentError("family= needs a string formula ('~ x + (1|g)'), not a "
                                "fitted result")
        if method == "ANOVA":
            raise ArgumentError("method='ANOVA' is for linear mixed models, not family=")
        if sigma is not None:
            raise ArgumentError(f"sigma is not a parameter of a {family} GLMM; leave it out")
        sigma = 1.0  # unused
    fixed = dict(fixed or {})
    varcomp = dict(varcomp or {})
    if not isinstance(formula, str):
        res = formula
        if not hasattr(res, "design") or not hasattr(res, "fe_params"):
            raise ArgumentError("formula must be a string ('~ x + (1|g)') or a fitted result "
                                f"of ma.lmm, not {type(formula).__name__}")
        d = res.design
        text = d.formula.formula
        rhs = "~ " + text.split("~", 1)[1].strip()
        base = {n: float(v) for n, v in res.fe_params.items()}
        unknown = sorted(set(fixed) - set(base))
        if unknown:
            raise UnknownNameError(f"fixed names {', '.join(map(repr, unknown))} are not fixed "
                                   f"effects of the model; they are "
                                   f"{', '.join(map(repr, base))}")
        base.update(fixed)
        s2 = float(res.sigma) ** 2
        layout = d.theta_layout()
        vc = {}
        for b, name, T in zip(d.blocks, d.group_names, layout.templates(res.state.theta)):
            G = s2 * T @ T.T
            vc[name] = float(G[0, 0]) if b.q == 1 else G
        unknown = sorted(set(varcomp) - set(vc))
        if unknown:
            raise UnknownNameError(f"varcomp groups {', '.join(map(repr, unknown))} are not "
                                   f"random terms of the model; they are "
                                   f"{', '.join(map(repr, vc))}")
        vc.update(varcomp)
        model = SimulationModel(rhs, d.data if data is None else data, base, vc,
                                float(res.sigma) if sigma is None else float(sigma), method)
    else:
        if not isinstance(data, pd.DataFrame):
            raise ArgumentError(f"data must be a pandas DataFrame (the design), not "
                                f"{type(data).__name__}")
        if sigma is None:
            raise ArgumentError("sigma (the residual standard deviation) is required")
        rhs = "~ " + formula.split("~", 1)[1].strip() if "~" in formula else formula
        model = SimulationModel(rhs, data, fixed, varcomp, float(sigma), method, family,
                                residual, residual_par)
    if not (np.isfinite(model.sigma) and model.sigma > 0):
        raise ArgumentError(f"sigma must be a positive number, not {sigma!r}")
    batch = model.design()  # checks the names and shapes now, not at simulation time
    d = batch.design
    _fixed_vector(model.fixed, d.x_names)
    unknown = sorted(set(model.varcomp) - set(d.group_names))
    if unknown:
        raise UnknownNameError(f"varcomp groups {', '.join(map(repr, unknown))} are not random "
                               f"terms of the model; they are "
                               f"{', '.join(map(repr, d.group_names))}")
    for b, name in zip(d.blocks, d.group_names):
        _psd_root(_covariance(model.varcomp, name, b.columns), name)
    if residual is not None:
        if model.method == "ANOVA":
            raise ArgumentError("method='ANOVA' (EMS tests) assumes independent errors; "
                                "use method='REML' or 'ML' with residual=")
        model = replace(model, residual=residual, residual_par=residual_par)
        model.residual_structure(d)  # names and values checked now
    return model
