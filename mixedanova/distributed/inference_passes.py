"""Passes over a Dask frame's partitions for the inference of a fit (issue 19).

The fit itself needs the summed cross-products only; two results need one more
look at the rows, each a single distributed pass whose per-partition results are
level-sized (fixed-effects-sized) and summed in a tree:

* :func:`type3_pass`: the type 3 hypotheses (lmerTest's
  ``get_contrasts_type3``) are least-squares fits of the over-parameterized
  design (an intercept plus full dummy coding of every fixed term) on its
  treatment-coded columns and on ``X``.  Each partition returns the R factor of
  the QR decomposition of ``[rdX X]``; R factors are combined by a QR of the
  two stacked (TSQR), so the client receives the R factor of all rows, which
  has the Gram matrix of the rows and gives the same least-squares solutions
  and the same rank decisions as the rows themselves
  (:class:`~mixedanova.inference.hypotheses.Type3Matrices`).
* :func:`column_means_pass`: the means of numeric columns over the complete rows
  (emmeans' reference grid puts a covariate at its mean).
* :func:`prediction_variance_pass`: Nakagawa's R2 and the ICC
  (:mod:`mixedanova.inference.r2`) read the sample variance of the fixed-effect
  predictions ``X beta`` and, per random term, the mean over rows of
  ``z_i' Sigma z_i``; each partition returns its count, mean and sum of squared
  deviations (merged by the pairwise formulas of Chan, Golub and LeVeque, so a
  response shifted far from 0 loses no precision) and its sums of the quadratic
  forms.

Dask is imported only when a pass runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..design.chunked import ChunkEncoder
from ..design.term_matrices import model_matrix_like
from ..inference.hypotheses import TermInfo, Type3Layout, Type3Matrices
from .passes import run_pass

__all__ = ["RFactor", "FactorEncodings", "type3_pass", "EtaMoments",
           "prediction_variance_pass", "ColumnSums", "column_means_pass"]


@dataclass(frozen=True)
class RFactor:
    """The R factor of the QR decomposition of some rows (``a + b``: the R factor of
    both sets of rows, by a QR of the two stacked)."""

    r: np.ndarray

    def __add__(self, other: "RFactor") -> "RFactor":
        if other is None:
            return self
        return RFactor(np.linalg.qr(np.vstack([self.r, other.r]), mode="r"))

    def __radd__(self, other):
        return self if other in (0, None) else NotImplemented


class FactorEncodings:
    """The columns of each factor of the fixed terms, as
    :func:`~mixedanova.inference.hypotheses.Type3Layout.build` asks for them
    (R's ``model.matrix(~ 0 + f)``: every level of a categorical factor), with
    formulaic's specs learnt once on the codebook's prototype frame (every level
    of the data), so that every partition gets the same columns in the same order
    as the in-memory design of all rows."""

    def __init__(self, terms: list[TermInfo], prototype: pd.DataFrame) -> None:
        from formulaic import model_matrix

        self.specs = {}
        for t in terms:
            for f, cat in zip(t.factors, t.categorical):
                if (f, cat) not in self.specs:
                    mm = model_matrix(f"0 + {f}", prototype, ensure_full_rank=not cat)
                    self.specs[(f, cat)] = mm.model_spec

    def matrix(self, data: pd.DataFrame, expr: str, categorical: bool) -> np.ndarray:
        """Factor ``expr``'s columns on ``data``'s rows."""
        mm = model_matrix_like(self.specs[(expr, categorical)], data,
                               f"the type 3 columns of {expr!r}")
        return np.asarray(mm, dtype=float).reshape(len(data), -1)


def _type3_part(encoder: ChunkEncoder, args: tuple, chunk: pd.DataFrame) -> RFactor | None:
    keep, terms, has_intercept, enc = args
    data, _, _ = encoder.plan.complete(chunk)
    if len(data) == 0:
        return None
    cache: dict = {}

    def factor_matrix(expr: str, cat: bool) -> np.ndarray:
        if (expr, cat) not in cache:
            cache[(expr, cat)] = enc.matrix(data, expr, cat)
        return cache[(expr, cat)]

    lay = Type3Layout.build(terms, has_intercept, data, factor_matrix)
    X = model_matrix_like(encoder.fixed_spec, data, "fixed effects")[:, keep]
    return RFactor(np.linalg.qr(np.hstack([lay.rdx, X]), mode="r"))


def type3_pass(encoder: ChunkEncoder, ddf, keep: np.ndarray, terms: list[TermInfo],
               has_intercept: bool, prototype: pd.DataFrame,
               progress: bool = False) -> Type3Matrices:
    """The :class:`~mixedanova.inference.hypotheses.Type3Matrices` of all rows of
    ``ddf`` (complete rows, as the fit): the layout from the codebook's prototype,
    the matrices the R factor of ``[rdX X]`` (see the module docstring)."""
    from dask import delayed

    enc = FactorEncodings(terms, prototype)
    cache: dict = {}
    layout = Type3Layout.build(
        terms, has_intercept, prototype,
        lambda e, c: cache.setdefault((e, c), enc.matrix(prototype, e, c)))
    d_enc = delayed(encoder, pure=True, traverse=False)
    args = delayed((np.asarray(keep), terms, has_intercept, enc), pure=True, traverse=False)
    parts = [delayed(_type3_part, pure=True)(d_enc, args, part) for part in ddf.to_delayed()]
    total = run_pass(parts, progress)
    k = layout.rdx.shape[1]
    return Type3Matrices(layout, total.r[:, :k], total.r[:, k:])


@dataclass(frozen=True)
class EtaMoments:
    """Count, mean and sum of squared deviations of ``X beta`` over some rows, and
    per random term the sum of ``z_i' Sigma z_i`` (``a + b`` merges two sets of
    rows)."""

    n: int
    mean: float
    m2: float
    zsz: np.ndarray

    def __add__(self, other: "EtaMoments") -> "EtaMoments":
        if other is None or other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta * delta * (self.n * other.n / n)
        return EtaMoments(n, mean, m2, self.zsz + other.zsz)

    def __radd__(self, other):
        return self if other in (0, None) else NotImplemented

    @property
    def var_fixed(self) -> float:
        """Sample variance (``n - 1``) of ``X beta``."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @property
    def var_terms(self) -> list[float]:
        """Per term the mean of ``z_i' Sigma z_i``."""
        return [float(v) / self.n for v in self.zsz]


def _moments_part(encoder: ChunkEncoder, args: tuple, chunk: pd.DataFrame):
    keep, beta, covs = args
    e = encoder.encode(chunk)
    if e is None:
        return None
    eta = e.X[:, keep] @ beta
    mean = float(np.mean(eta))
    d = eta - mean
    zsz = np.array([float(np.sum(np.einsum("ij,jk,ik->i", z, S, z)))
                    for z, S in zip(e.zraws, covs)])
    return EtaMoments(e.n, mean, float(d @ d), zsz)


def prediction_variance_pass(encoder: ChunkEncoder, ddf, keep: np.ndarray,
                             beta: np.ndarray, covs: list[np.ndarray],
                             progress: bool = False) -> EtaMoments:
    """The :class:`EtaMoments` of all complete rows of ``ddf`` (``covs``: each
    random term's ``VarCorr`` matrix, in the design's order)."""
    from dask import delayed

    d_enc = delayed(encoder, pure=True, traverse=False)
    args = delayed((np.asarray(keep), np.asarray(beta, dtype=float), list(covs)),
                   pure=True, traverse=False)
    parts = [delayed(_moments_part, pure=True)(d_enc, args, part) for part in ddf.to_delayed()]
    return run_pass(parts, progress)


@dataclass(frozen=True)
class ColumnSums:
    """Row count and column sums of some rows (``a + b``)."""

    n: int
    sums: np.ndarray

    def __add__(self, other: "ColumnSums") -> "ColumnSums":
        if other is None:
            return self
        return ColumnSums(self.n + other.n, self.sums + other.sums)

    def __radd__(self, other):
        return self if other in (0, None) else NotImplemented


def _sums_part(plan, columns: list[str], chunk: pd.DataFrame) -> ColumnSums | None:
    data, _, _ = plan.complete(chunk)
    if len(data) == 0:
        return None
    return ColumnSums(len(data), np.array([float(np.sum(data[c].to_numpy(dtype=float)))
                                           for c in columns]))


def column_means_pass(plan, ddf, columns: list[str], progress: bool = False) -> dict:
    """``{column: mean}`` over the complete rows of ``ddf`` (those the fit used)."""
    from dask import delayed

    d_plan = delayed(plan, pure=True, traverse=False)
    parts = [delayed(_sums_part, pure=True)(d_plan, list(columns), part)
             for part in ddf.to_delayed()]
    total = run_pass(parts, progress)
    return {c: float(v) / total.n for c, v in zip(columns, total.sums)}
