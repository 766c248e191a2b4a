"""``lmm_many``: one mixed model fitted to many responses on one design.

The design is built once (from the right-hand side of the formula and the
covariates, with a placeholder response), and so are the engine's rows
(:func:`~mixedanova.likelihood.rows.design_rows`) and the symbolic part of the
cross-products.  The responses are split into chunks; each chunk's
cross-products are formed in one pass over the rows and every response of it
is then fitted on its own (:mod:`mixedanova.batch.engine`): its own optimum and
its own convergence verdict, exactly the numbers of ``ma.lmm`` on that
response.  Chunks bound the memory (the ``[X Y]' [X Y]`` block is ``k x k`` in
the number of responses) and are the unit of work of the worker processes
(``n_jobs``).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from ..errors import ArgumentError, DesignError

__all__ = ["lmm_many", "prepare_batch", "run_batch", "BatchDesign", "check_jobs"]

_PLACEHOLDER = "lmm_many_response_"
_METHODS = ("REML", "ML")


class BatchDesign:
    """The design of a batch fit, built once.

    Attributes
    ----------
    design : Design
        Built with a placeholder response (``design.y`` holds the positions of
        the rows of ``data`` that were used).
    rows : numpy.ndarray
        Positions (in ``data``) of the design's rows.
    spec : EngineSpec
        What the workers share.
    formula : str
        The right-hand side as given.
    """

    def __init__(self, design, spec, formula: str, method: str, ddf: str) -> None:
        self.design = design
        self.rows = design.y.astype(np.int64)
        self.spec = spec
        self.formula = formula
        self.method = method
        self.ddf = ddf


def _rhs(formula) -> str:
    if not isinstance(formula, str):
        raise ArgumentError(f"formula must be a string such as '~ x + (1|g)', not "
                            f"{type(formula).__name__}")
    text = formula.strip()
    if "~" not in text:
        raise ArgumentError(f"formula must be the right-hand side of a model, starting with "
                            f"'~' (e.g. '~ x + (1|g)'), not {formula!r}")
    lhs, rhs = text.split("~", 1)
    if lhs.strip():
        raise ArgumentError(f"formula must be the right-hand side only ('~ ...'): the "
                            f"responses come from responses=, but {formula!r} names "
                            f"{lhs.strip()!r} on the left")
    if not rhs.strip():
        raise ArgumentError("formula has nothing on the right of '~'")
    return rhs.strip()


def prepare_batch(formula: str, data: pd.DataFrame, *, method: str = "REML",
                  ddf: str = "satterthwaite", optimizer: str = "SLSQP",
                  control=None, fast: bool = True) -> BatchDesign:
    """Build the design, the rows and the workers' shared spec once.

    Parameters
    ----------
    formula : str
        Right-hand side, e.g. ``"~ condition + age + (1|donor) + (1|batch)"``.
    data : pandas.DataFrame
        The covariates (rows with a missing covariate are dropped, as by ``ma.lmm``).
    method, ddf, optimizer, control, fast
        As for :func:`lmm_many`.
    """
    from ..design import build_design
    from ..design.formula import parse_formula
    from ..inference.tables import normalize_ddf
    from ..likelihood.control import check_control
    from ..likelihood.rows import design_rows
    from .engine import EngineSpec

    rhs = _rhs(formula)
    if not isinstance(data, pd.DataFrame):
        raise ArgumentError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise ArgumentError(f"method must be one of {', '.join(_METHODS)}, not {method!r}")
    method = method.upper()
    ddf = normalize_ddf(ddf)
    if ddf == "kenward-roger" and method != "REML":
        raise ArgumentError("ddf='kenward-roger' needs method='REML'")
    if ddf not in ("satterthwaite", "kenward-roger", "residual", "none"):
        raise ArgumentError(f"ddf must be 'satterthwaite', 'kenward-roger', 'residual' or "
                            f"'none', not {ddf!r}")
    canon = {o.lower(): o for o in ("SLSQP", "L-BFGS-B", "Powell", "Nelder-Mead", "COBYQA",
                                     "TNC")}
    if not isinstance(optimizer, str) or optimizer.lower() not in canon:
        raise ArgumentError(f"optimizer must be one of {', '.join(canon.values())}, "
                            f"not {optimizer!r}")
    name = _PLACEHOLDER
    while name in data.columns:
        name += "_"
    frame = data.copy()
    frame[name] = np.arange(len(data), dtype=float)  # row positions: which rows were used
    parsed = parse_formula(f"{name} ~ {rhs}")
    design = build_design(parsed, frame)
    if design.structured:
        raise DesignError(f"{next(b.source for b in design.blocks if b.structure != 'us')}: "
                          "structured random-effect covariances are fitted one response at "
                          "a time (ma.lmm), not in batches")
    rows = design_rows(design)
    spec = EngineSpec(terms=tuple(rows.terms), X=rows.X, layout=design.theta_layout(),
                      reml=method == "REML", optimizer=canon[optimizer.lower()],
                      control=check_control(control), satterthwaite=ddf == "satterthwaite",
                      kenward_roger=ddf == "kenward-roger", design=design,
                      diag=design.theta_layout().diagonal_mask(), fast=fast)
    return BatchDesign(design, spec, formula, method, ddf)


def _responses(responses, n: int) -> tuple[np.ndarray, list]:
    """``(n x k float array, names)`` from an array, Series or DataFrame."""
    if isinstance(responses, pd.DataFrame):
        names = list(responses.columns)
        values = responses.to_numpy()
    elif isinstance(responses, pd.Series):
        names = [responses.name if responses.name is not None else 0]
        values = responses.to_numpy()[:, None]
    else:
        try:
            values = np.asarray(responses)
        except Exception:  # noqa: BLE001 -- anything that is no array
            raise ArgumentError("responses must be an n x k array or a DataFrame") from None
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise ArgumentError(f"responses must be an n x k array or a DataFrame, not an "
                                f"array of shape {values.shape}")
        names = list(range(values.shape[1]))
    try:
        values = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ArgumentError("responses must hold numbers (missing values as NaN)") from None
    if values.shape[0] != n:
        raise ArgumentError(f"responses must have one row per row of data ({n}), not "
                            f"{values.shape[0]}")
    if values.shape[1] == 0:
        raise ArgumentError("responses has no columns")
    if np.any(np.isinf(values)):
        col = int(np.flatnonzero(np.isinf(values).any(axis=0))[0])
        raise ArgumentError(f"responses column {names[col]!r} has infinite values")
    if len(set(map(str, names))) != len(names):
        raise ArgumentError("responses has duplicate column names")
    return values, names


def _tasks(Y: np.ndarray, chunk_size: int) -> list[tuple]:
    """``(columns, Y block, row mask or None)`` per chunk: complete columns together,
    columns with missing values grouped by their pattern of missing rows."""
    miss = np.isnan(Y)
    has = miss.any(axis=0)
    tasks = []
    full = np.flatnonzero(~has)
    for s in range(0, len(full), chunk_size):
        cols = full[s:s + chunk_size]
        tasks.append((cols, Y[:, cols], None))
    groups: dict[bytes, list[int]] = {}
    for j in np.flatnonzero(has):
        groups.setdefault(np.packbits(miss[:, j]).tobytes(), []).append(int(j))
    for cols in groups.values():
        cols = np.asarray(cols)
        mask = ~miss[:, cols[0]]
        for s in range(0, len(cols), chunk_size):
            c = cols[s:s + chunk_size]
            tasks.append((c, Y[np.ix_(mask, c)], mask))
    return tasks


def run_batch(batch: BatchDesign, Y: np.ndarray, *, n_jobs: int = 1,
              progress: bool = False, chunk_size: int | None = None):
    """Fit every column of ``Y`` (rows of the design) and return the stacked
    :class:`~mixedanova.batch.engine.ChunkFit` in column order."""
    from .engine import chunk_concat, fit_columns, init_worker, one_blas_thread, run_task

    k = Y.shape[1]
    if chunk_size is None:
        chunk_size = int(min(max(-(-k // (2 * n_jobs)), 16), 512))
    tasks = _tasks(Y, int(chunk_size))
    parts = []
    t0 = time.perf_counter()
    done = 0

    def report(m: int) -> None:
        nonlocal done
        done += m
        if progress:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            print(f"lmm_many: {done}/{k} responses ({rate:.0f}/s)", file=sys.stderr,
                  flush=True)

    if n_jobs == 1 or len(tasks) == 1:
        with one_blas_thread():
            for t in tasks:
                parts.append(fit_columns(batch.spec, *t))
                report(len(t[0]))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx,
                                    initializer=init_worker, initargs=(batch.spec,)) as pool:
            futures = [pool.submit(run_task, t) for t in tasks]
            for fut in cf.as_completed(futures):
                part = fut.result()
                parts.append(part)
                report(len(part.columns))
    fit = chunk_concat(parts)
    order = np.argsort(fit.columns, kind="stable")
    return _reorder(fit, order)


def _reorder(fit, order: np.ndarray):
    import dataclasses
    fields = {f.name: getattr(fit, f.name)[order] for f in dataclasses.fields(fit)
              if f.name != "messages"}
    return type(fit)(**fields, messages=fit.messages)


def check_jobs(n_jobs) -> int:
    import os
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, (bool, np.bool_)) or not isinstance(n_jobs, (int, np.integer)):
        raise ArgumentError(f"n_jobs must be a whole number (-1: every core), not {n_jobs!r}")
    if n_jobs == -1:
        return os.cpu_count() or 1
    if n_jobs < 1:
        raise ArgumentError(f"n_jobs must be at least 1 (or -1: every core), not {n_jobs}")
    return int(n_jobs)


def lmm_many(formula: str, data: pd.DataFrame, responses, *, method: str = "REML",
             ddf: str = "satterthwaite", n_jobs: int | None = 1, progress: bool = False,
             optimizer: str = "SLSQP", control=None, chunk_size: int | None = None,
             fast: bool = True, restricted: bool = False):
    """Fit the same linear mixed model to many responses (one per column).

    Parameters
    ----------
    formula : str
        Right-hand side in lme4 syntax: ``"~ condition + age + (1|donor) + (1|batch)"``.
    data : pandas.DataFrame
        The covariates, one row per observation.
    responses : array, Series or DataFrame
        ``n x k``: one response per column, rows aligned with ``data``;
        DataFrame columns name the responses (array columns are numbered
        from 0).  A missing value (NaN) drops that row for that response only.
    method : {"REML", "ML"}
    ddf : {"satterthwaite", "kenward-roger", "residual", "none"}
        Denominator df of the fixed-effects tests (Kenward-Roger: a single fit
        per response, slower).
    n_jobs : int
        Worker processes (-1: every core); chunks of responses go to each.
    progress : bool
        Print progress to stderr as chunks finish.
    optimizer, control
        As for ``ma.lmm`` (:class:`~mixedanova.LmmControl`).
    chunk_size : int, optional
        Responses per chunk (cross-products formed in one pass per chunk);
        by default ``k / (2 n_jobs)`` within 16..512.
    fast : bool
        Fit scalar random-intercept models across responses at once
        (:mod:`mixedanova.batch.dense`), handing any response it cannot certify
        to the single-fit engine.  Its criterion, estimates and standard errors
        equal ``ma.lmm``'s to about 1e-12; its Satterthwaite df agree to the
        rounding noise of their finite differences (about 1e-8 typically, 1e-6 at
        worst).  ``fast=False`` runs every response through the single-fit engine
        (``ma.lmm``'s numbers bit for bit, about 30 times slower).

    Returns
    -------
    ManyResults
        ``fixed()``, ``varcomp``, ``fit_info``, ``anova(type=...)`` as tidy DataFrames.

    Examples
    --------
    >>> import numpy as np, mixedanova as ma
    >>> d = ma.load_dataset("sleepstudy")
    >>> Y = d["Reaction"].to_numpy()[:, None] + np.random.default_rng(1).normal(size=(180, 3))
    >>> res = ma.lmm_many("~ Days + (Days | Subject)", d, Y)
    >>> list(res.fit_info.columns)
    ['response', 'criterion', 'converged', 'singular', 'nobs']
    """
    from .results import ManyResults

    n_jobs = check_jobs(n_jobs)
    if not isinstance(progress, (bool, np.bool_)):
        raise ArgumentError(f"progress must be True or False, not {progress!r}")
    if chunk_size is not None and (isinstance(chunk_size, (bool, np.bool_))
                                   or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ArgumentError(f"chunk_size must be a positive whole number, not {chunk_size!r}")
    if not isinstance(fast, (bool, np.bool_)):
        raise ArgumentError(f"fast must be True or False, not {fast!r}")
    if not isinstance(data, pd.DataFrame):
        raise ArgumentError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if not isinstance(restricted, (bool, np.bool_)):
        raise ArgumentError(f"restricted must be True or False, not {restricted!r}")
    if restricted:  # formulas from untrusted sources (docs: trust): checked before use
        from ..design.restricted import check_restricted
        check_restricted(f"y ~ {_rhs(formula)}", columns=[*data.columns, "y"])
    values, names = _responses(responses, len(data))
    batch = prepare_batch(formula, data, method=method, ddf=ddf, optimizer=optimizer,
                          control=control, fast=bool(fast))
    Y = values[batch.rows]
    fit = run_batch(batch, Y, n_jobs=n_jobs, progress=progress, chunk_size=chunk_size)
    return ManyResults(batch, fit, names, Y)
