"""The model matrices on show: labelled ``X``, sparse ``Z``, and ``G``, ``R``, ``V``.

The engine never forms ``Z`` (see :mod:`mixedanova.design`); these helpers build
it for a user who wants to see the textbook objects of

    y = X beta + Z b + e,   b ~ N(0, G),   e ~ N(0, R),   V = Z G Z' + R,

with ``R = sigma^2 diag(1 / w)`` (``w`` the prior weights, 1 without them).

``Z`` has one column per level and random-effect column of each term, in
lme4's order (terms as in ``Design.blocks``; within a term level by level,
and within a level the term's columns), so ``b`` lines up with lme4's
``getME(m, "b")``.  Column labels read ``pot[P1]`` for a random intercept and
``Subject[308]:Days`` for another column.

The functions take the design (and the fit's templates) duck-typed; nothing
here imports the model or the results.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["z_names", "z_sparse", "x_frame", "z_frame", "z_dense", "describe",
           "g_matrix", "r_matrix", "v_matrix", "check_size"]

DEFAULT_MAX_CELLS = 4_000_000  # about 32 MB of float64


def check_size(rows: int, cols: int, what: str, max_cells: int | None) -> None:
    """Refuse a dense ``rows x cols`` matrix larger than ``max_cells`` entries."""
    from ..errors import DesignError

    limit = DEFAULT_MAX_CELLS if max_cells is None else max_cells
    if rows * cols > limit:
        raise DesignError(f"{what} would be a dense {rows} x {cols} matrix ({rows * cols} "
                          f"entries, more than max_cells={limit}); use the sparse form or "
                          "raise max_cells")


def z_names(design) -> list[str]:
    """Labels of the columns of ``Z`` (and of ``b``), in lme4's order."""
    names = []
    for b in design.blocks:
        for lev in b.levels:
            for col in b.columns:
                base = f"{b.group}[{lev}]"
                names.append(base if col == "(Intercept)" else f"{base}:{col}")
    return names


def z_sparse(design):
    """``Z`` as a SciPy sparse matrix (``n x q``), lme4's column order."""
    from scipy import sparse

    n = design.nobs
    rows, cols, vals = [], [], []
    offset = 0
    for b in design.blocks:
        q = b.q
        for j in range(q):
            rows.append(np.arange(n))
            cols.append(offset + b.codes * q + j)
            vals.append(b.zraw[:, j])
        offset += b.nlev * q
    if not rows:
        return sparse.csc_array((n, 0))
    return sparse.csc_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(n, offset))


def x_frame(design) -> pd.DataFrame:
    """``X`` with formulaic's column names and the data's row labels."""
    return pd.DataFrame(design.X, index=design.row_index, columns=list(design.x_names))


def z_frame(design) -> pd.DataFrame:
    """``Z`` kept sparse (pandas ``Sparse[float64]`` columns), labelled rows and columns."""
    frame = pd.DataFrame.sparse.from_spmatrix(z_sparse(design), index=design.row_index,
                                              columns=z_names(design))
    return frame


def z_dense(design, max_cells: int | None = None) -> pd.DataFrame:
    """``Z`` as a dense labelled DataFrame (small models only, see :func:`check_size`)."""
    names = z_names(design)
    check_size(design.nobs, len(names), "Z", max_cells)
    return pd.DataFrame(z_sparse(design).toarray(), index=design.row_index, columns=names)


def describe(design) -> pd.DataFrame:
    """One row per term: fixed terms (with their columns in ``X``), then random terms.

    Columns: ``kind`` ("fixed" / "random"), ``term``, ``columns`` (names in
    ``X`` or the term's random-effect columns), ``n_levels`` (random terms:
    levels of the grouping factor), ``levels`` (the first ten, then "...").
    """
    rows = []
    names = list(design.x_names)
    for t in design.fixed_terms:
        cols = [names[i] for i in t.columns]
        rows.append({"kind": "fixed", "term": t.name, "columns": ", ".join(cols),
                     "n_levels": np.nan, "levels": ""})
    for b in design.blocks:
        levs = [str(v) for v in b.levels[:10]] + (["..."] if b.nlev > 10 else [])
        rows.append({"kind": "random", "term": b.source, "columns": ", ".join(b.columns),
                     "n_levels": b.nlev, "levels": ", ".join(levs)})
    out = pd.DataFrame(rows, columns=["kind", "term", "columns", "n_levels", "levels"])
    out["n_levels"] = out["n_levels"].astype("Int64")
    out.attrs["nobs"] = design.nobs
    return out


def _g_sparse(design, templates, sigma: float):
    from scipy import sparse

    blocks = [sparse.kron(sparse.eye_array(b.nlev), sparse.csc_array(sigma**2 * (T @ T.T)))
              for b, T in zip(design.blocks, templates)]
    if not blocks:
        return sparse.csc_array((0, 0))
    return sparse.csc_array(sparse.block_diag(blocks))


def g_matrix(design, templates, sigma: float, max_cells: int | None = None) -> pd.DataFrame:
    """``G = Var(b)``: block diagonal, ``sigma^2 T T'`` for every level of a term."""
    names = z_names(design)
    check_size(len(names), len(names), "G", max_cells)
    return pd.DataFrame(_g_sparse(design, templates, sigma).toarray(), index=names, columns=names)


def _residual_variances(design, sigma: float) -> np.ndarray:
    """``sigma^2 / w_i``: prior weights (lme4's ``weights =``) divide the variance."""
    w = getattr(design, "prior_weights", None)
    w = np.ones(design.nobs) if w is None else np.asarray(w, dtype=float)
    return sigma**2 / w


def r_matrix(design, sigma: float, max_cells: int | None = None) -> pd.DataFrame:
    """``R = Var(e) = sigma^2 diag(1 / w)`` (independent residuals; ``w`` the prior
    weights, all 1 without ``weights=``)."""
    n = design.nobs
    check_size(n, n, "R", max_cells)
    return pd.DataFrame(np.diag(_residual_variances(design, sigma)), index=design.row_index,
                        columns=design.row_index)


def v_matrix(design, templates, sigma: float, max_cells: int | None = None) -> pd.DataFrame:
    """``V = Var(y) = Z G Z' + R``."""
    n = design.nobs
    check_size(n, n, "V", max_cells)
    z = z_sparse(design)
    v = (z @ _g_sparse(design, templates, sigma) @ z.T).toarray()
    v[np.diag_indices(n)] += _residual_variances(design, sigma)
    return pd.DataFrame(v, index=design.row_index, columns=design.row_index)
