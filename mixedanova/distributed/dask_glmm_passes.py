"""The per-partition work of a GLMM fitted to a Dask data frame (issue 19).

Every function here runs on one partition (on a worker) and returns a small,
level-sized object that adds to the others' in a tree:

* :func:`encode_glmm_chunk`: the partition's rows as the engine needs them
  (:class:`GlmmChunk`: level codes and values of the random terms, all of
  formulaic's fixed-effect columns, the response on the engine's scale, the prior
  weights times the trials, the offset), with the checks ``ma.glmm`` makes on the
  response;
* :func:`setup_sums`: what the start needs (:class:`SetupSums`: the unweighted
  ``X'X`` for the rank rule, the mean squares of the random terms' columns for the
  working units of ``theta``, the saturated log-likelihood, the normal equations
  of the GLM start);
* :func:`pirls_sums`: one PIRLS step at given ``(theta, beta, u)``
  (:class:`PirlsSums`: the linear predictor, means, working weights and working
  response of the rows, their weighted cross-products of ``[Z X z]`` as
  :func:`~mixedanova.likelihood.chunk_products.chunk_sums` computes them for the
  LMM, and the sum of the deviance residuals);
* :func:`fitted_part`: fitted values and residuals of the rows, for lazy series.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..design.chunked import ChunkEncoder
from ..design.data_checks import missing_mask
from ..errors import DesignError, FitError
from ..likelihood.blocked import TermData
from ..likelihood.chunk_products import chunk_sums, column_gram
from ..likelihood.crossprod import CrossProducts

__all__ = ["ChunkInfo", "GlmmChunk", "SetupSums", "PirlsSums", "StepArgs", "SumsList",
           "add_sums", "pirls_sums_many", "encode_glmm_chunk", "setup_sums", "pirls_sums",
           "fitted_part", "linear_part"]


@dataclass(frozen=True)
class ChunkInfo:
    """How a partition is read: the encoder, the reader of the response, the family,
    the response's kind and label, the trials column (``cbind``) and whether
    weights were given."""

    encoder: ChunkEncoder
    reader: object
    family: object
    kind: str
    label: str
    trials_column: str | None
    weights_given: bool


@dataclass(frozen=True)
class GlmmChunk:
    """One partition's complete rows on the engine's scale."""

    terms: tuple[TermData, ...]
    X: np.ndarray
    y: np.ndarray
    pw: np.ndarray
    offset: np.ndarray
    index: pd.Index
    gap: object  # CountGap or None

    @property
    def n(self) -> int:
        return len(self.y)


def _bad(index: pd.Index, mask: np.ndarray, vals: np.ndarray) -> str:
    return (f"rows {list(index[mask][:5])} have "
            f"{', '.join(f'{v:g}' for v in vals[mask][:5])}")


def check_response(info: ChunkInfo, y: np.ndarray, pw: np.ndarray, index: pd.Index) -> None:
    """The checks of ``ma.glmm`` on one partition's response (as in memory).

    Raises
    ------
    DesignError
    """
    fam, label = info.family, info.label
    if info.kind == "cbind":
        return
    if fam.name == "binomial":
        bad = (y < 0) | (y > 1)
        if bad.any():
            raise DesignError(f"binomial response {label!r} must be in [0, 1] (0/1, or a "
                              f"proportion with weights= trials); {_bad(index, bad, y)}")
        if info.weights_given:
            k = y * pw
            if not np.allclose(k, np.round(k), atol=1e-7):
                raise DesignError(f"binomial response {label!r} times the weights (trials) "
                                  "must be whole numbers of successes")
        elif ((y > 0) & (y < 1)).any():
            raise DesignError(f"binomial response {label!r} has proportions between 0 "
                              "and 1; give the trials as weights= or use "
                              "cbind(successes, failures)")
        return
    bad = fam.support_mask(y)
    if bad.any():
        raise DesignError(f"{fam.label} response {label!r} "
                          f"{fam.support_error(y) or 'is outside the family support'}; "
                          f"{_bad(index, bad, y)}")


def encode_glmm_chunk(info: ChunkInfo, chunk: pd.DataFrame) -> GlmmChunk | None:
    """The complete rows of ``chunk`` (the response's columns already added by the
    reader) as a :class:`GlmmChunk`; None when it has none."""
    enc = info.encoder
    e = enc.encode(chunk)
    if e is None:
        return None
    y = np.asarray(e.y, dtype=float)
    pw = np.ones(e.n) if e.weights is None else np.asarray(e.weights, dtype=float)
    if info.trials_column is not None:
        na, _ = missing_mask(chunk, list(enc.plan.used))
        trials = chunk[info.trials_column].to_numpy(dtype=float)[~na]
        y = np.divide(y, trials, out=np.zeros_like(y), where=trials > 0)
        pw = pw * trials
    check_response(info, y, pw, e.index)
    terms = tuple(TermData(c, z, b.nlev) for c, z, b in zip(e.codes, e.zraws, enc.blocks))
    off = np.zeros(e.n) if e.offset is None else np.asarray(e.offset, dtype=float)
    return GlmmChunk(terms, e.X, y, pw, off, e.index, info.family.count_gap(y, pw))


@dataclass(frozen=True)
class SetupSums:
    """The sums the start needs (see the module docstring)."""

    n: int
    xx: np.ndarray
    zsq: tuple[np.ndarray, ...]
    saturated: float
    xwx: np.ndarray
    xwz: np.ndarray

    def __add__(self, other: "SetupSums") -> "SetupSums":
        return SetupSums(self.n + other.n, self.xx + other.xx,
                         tuple(a + b for a, b in zip(self.zsq, other.zsq)),
                         self.saturated + other.saturated, self.xwx + other.xwx,
                         self.xwz + other.xwz)


def setup_sums(family, c: GlmmChunk | None) -> SetupSums | None:
    """One partition's :class:`SetupSums` (the GLM start as
    :meth:`~mixedanova.glmm.laplace.LaplaceObjective.start_beta`: weighted least
    squares of the linearized starting means on all of ``X``'s columns)."""
    if c is None:
        return None
    mu = family.mustart(c.y, c.pw)
    eta = family.link.linkfun(mu)
    w = family.weights(mu, family.link.mu_eta(eta), c.pw)
    wx = w[:, None] * c.X
    return SetupSums(c.n, column_gram(c.X), tuple(np.sum(t.zraw ** 2, axis=0) for t in c.terms),
                     float(family.saturated_loglik(c.y, c.pw)), column_gram(wx, c.X),
                     wx.T @ (eta - c.offset))


@dataclass(frozen=True)
class StepArgs:
    """What a PIRLS pass sends to the partitions (level-sized): the kept fixed
    columns, ``beta``, the random effects ``b = Lambda u`` per term (levels x q),
    whether ``X`` joins the system (the joint modes of ``(beta, u)``), and for the
    joint convergence test the point the step starts from and the step itself."""

    keep: np.ndarray
    beta: np.ndarray
    bs: tuple[np.ndarray, ...]
    joint: bool
    beta_from: np.ndarray | None = None
    bs_from: tuple[np.ndarray, ...] | None = None
    dbeta: np.ndarray | None = None
    dbs: tuple[np.ndarray, ...] | None = None


@dataclass(frozen=True)
class PirlsSums:
    """One PIRLS step summed over partitions: the weighted cross-products of
    ``[Z X z]`` (``X`` only for the joint system), the deviance, the count gap of
    binomial log-likelihoods, and the largest ``|eta|`` and joint step
    ``|Z Lambda du + X dbeta|`` (the joint convergence test); ``valid`` False when
    some row's linear predictor is outside the link's domain."""

    cp: CrossProducts | None
    deviance: float
    gap: float
    valid: bool
    amax_eta: float = 0.0
    amax_step: float = 0.0

    def __add__(self, other: "PirlsSums") -> "PirlsSums":
        if not (self.valid and other.valid):
            return PirlsSums(None, np.nan, np.nan, False)
        return PirlsSums(self.cp + other.cp, self.deviance + other.deviance,
                         self.gap + other.gap, True, max(self.amax_eta, other.amax_eta),
                         max(self.amax_step, other.amax_step))


def add_sums(items: list):
    """The sum of a node's items (None entries, partitions without rows, skipped)."""
    total = None
    for x in items:
        if x is not None:
            total = x if total is None else total + x
    return total


def _zb(c: GlmmChunk, bs) -> np.ndarray:
    out = np.zeros(c.n)
    for t, b in zip(c.terms, bs):
        out += np.einsum("ij,ij->i", t.zraw, b[t.codes])
    return out


def linear_part(c: GlmmChunk, keep: np.ndarray, beta: np.ndarray, bs) -> np.ndarray:
    """``offset + X beta + Z b`` of the partition's rows."""
    return c.offset + c.X[:, keep] @ beta + _zb(c, bs)


def pirls_sums(family, a: StepArgs, c: GlmmChunk | None) -> PirlsSums | None:
    """One partition's :class:`PirlsSums` at ``a`` (see the module docstring).

    Raises
    ------
    FitError
        The working response is not finite (as the in-memory cross-products).
    """
    if c is None:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        X = c.X[:, a.keep]
        fixed = c.offset + X @ a.beta
        eta = fixed + _zb(c, a.bs)
        if not family.link.valid_eta(eta):
            return PirlsSums(None, np.nan, np.nan, False)
        mu = family.link.linkinv(eta)
        mueta = family.link.mu_eta(eta)
        w = family.weights(mu, mueta, c.pw)
        dev = float(np.sum(family.dev_resids(c.y, mu, c.pw)))
        base = c.offset if a.joint else fixed
        z = eta - base + (c.y - mu) / mueta
        cp = chunk_sums(list(c.terms), X if a.joint else np.zeros((c.n, 0)), z, weights=w)
        gap = 0.0 if c.gap is None else float(c.gap.value(mu))
        amax_eta = amax_step = 0.0
        if a.dbeta is not None:
            eta0 = c.offset + X @ a.beta_from + _zb(c, a.bs_from)
            step = _zb(c, a.dbs) + X @ a.dbeta
            amax_eta = float(np.abs(eta0).max())
            amax_step = float(np.abs(step).max())
    if not np.isfinite(dev):
        raise FitError("PIRLS: the deviance is not finite")
    return PirlsSums(cp, dev, gap, True, amax_eta, amax_step)


@dataclass(frozen=True)
class SumsList:
    """:class:`PirlsSums` of several points at once (one pass for all), added
    point by point."""

    items: tuple

    def __add__(self, other: "SumsList") -> "SumsList":
        return SumsList(tuple(a + b for a, b in zip(self.items, other.items)))


def pirls_sums_many(family, args: list, c: GlmmChunk | None) -> SumsList | None:
    """One partition's :class:`PirlsSums` at each of several :class:`StepArgs`."""
    if c is None:
        return None
    return SumsList(tuple(pirls_sums(family, a, c) for a in args))


def fitted_part(chunk: pd.DataFrame, info: ChunkInfo, keep: np.ndarray, beta: np.ndarray,
                bs, what: str) -> pd.Series:
    """Per row of a partition (complete rows; its response's columns added by the
    reader): the linear predictor (``"link"``), the mean (``"fitted"``) or a
    residual (``"deviance"``, ``"pearson"``, ``"response"``, ``"working"``), as
    :class:`~mixedanova.results.glmm.GlmmResults`."""
    c = encode_glmm_chunk(info, chunk)
    if c is None:
        return pd.Series(np.zeros(0), index=chunk.index[:0], name=what)
    fam = info.family
    eta = linear_part(c, keep, beta, bs)
    mu = fam.link.linkinv(eta)
    if what == "link":
        out = eta
    elif what == "fitted":
        out = mu
    elif what == "deviance":
        out = np.sign(c.y - mu) * np.sqrt(np.maximum(fam.dev_resids(c.y, mu, c.pw), 0.0))
    elif what == "pearson":
        out = (c.y - mu) * np.sqrt(c.pw) / np.sqrt(fam.variance(mu))
    elif what == "response":
        out = c.y - mu
    else:
        out = (c.y - mu) / fam.link.mu_eta(eta)
    return pd.Series(out, index=c.index, name=what)
