"""Kenward-Roger for structured random-effect covariances and held parameters.

The marginal covariance is ``V = Z G(psi) Z' + sigma^2 W^{-1}`` (``W`` the prior
weights, the identity without them), ``G`` block diagonal over the random terms,
``I kron Sigma_t`` for term ``t``.  The covariance parameters ``psi`` are the
*free* parameters of the fit, in the parametrization ``varcomp`` reports:

* a structured fit (``diag``, ``cs``, ``ar1``, ``toep``, ``us`` terms, or held
  variance components): each term's free variances and correlations as
  :class:`~mixedanova.design.covstruct.TermCovariance` names them (a ``us``
  term's first-row correlations and partial correlations, ``toep``'s lag-1
  correlation and partial autocorrelations), then ``sigma^2`` unless held;
* ``sigma`` held and nothing else (``fixed={"sigma": s}``): pbkrtest's
  parameters (every variance and covariance entry of each term) without
  ``sigma^2``.

Held parameters are constants (no derivative).  ``dSigma_t / dpsi`` and the
second derivatives within a term are fourth-order central differences of the
``q x q`` map ``psi_t -> Sigma_t`` (the structure's own map, through its
unconstrained parameters); the ``n x n`` algebra is
:func:`~mixedanova.inference.kenward_roger_residual.dense_block_kenward_roger`,
per block of rows linked by a random-effect level.
"""
from __future__ import annotations

import numpy as np

from ..errors import MixedAnovaError
from .kenward_roger_core import KenwardRogerSetup, z_matrix
from .kenward_roger_residual import dense_block_kenward_roger, level_pattern, linked_blocks

__all__ = ["structured_kenward_roger", "TermParameters", "term_parameters"]

_MAX_ROWS = 6000  # largest block of linked rows for the dense algebra
_REL_STEP = 1e-3


class TermParameters:
    """The free parameters of one random term and ``Sigma_t`` as their function.

    Parameters
    ----------
    term : TermCovariance or None
        The structure (``None``: pbkrtest's linear parametrization by the
        entries of ``Sigma_t``).
    q : int
        Columns of the term.
    x : numpy.ndarray
        The term's unconstrained parameters at the estimates (held ones included).
    free : numpy.ndarray
        True for the estimated parameters.
    sigma_t : numpy.ndarray
        ``Sigma_t`` at the estimates (used when ``term`` is ``None``).
    """

    def __init__(self, term, q: int, x: np.ndarray, free: np.ndarray,
                 sigma_t: np.ndarray) -> None:
        self.term, self.q = term, q
        self.x = np.asarray(x, dtype=float)
        self.free = np.asarray(free, dtype=bool)
        self.sigma_t = np.asarray(sigma_t, dtype=float)
        if term is None:
            self.pairs = [(i, j) for j in range(q) for i in range(j, q)]
            self.psi = np.array([self.sigma_t[i, j] for i, j in self.pairs])
        else:
            self.psi = self._natural(self.x)[self.free]

    def _natural(self, x: np.ndarray) -> np.ndarray:
        t = self.term
        corr = t.correlation(x)  # the natural correlation parameters come from x alone
        out = []
        for i in range(t.n_par):
            if t.is_variance(i):
                out.append(float(np.exp(2.0 * x[i])))
            elif t.kind == "cs":
                out.append(float(corr[0, 1]))
            else:
                out.append(float(np.tanh(x[i])))
        return np.array(out)

    @property
    def k(self) -> int:
        """Number of free parameters."""
        return len(self.psi)

    @property
    def linear(self) -> bool:
        """``Sigma_t`` is linear in the parameters (no second derivatives)."""
        return self.term is None or self.term.kind == "diag"

    def sigma(self, psi: np.ndarray) -> np.ndarray:
        """``Sigma_t`` at free parameters ``psi``."""
        if self.term is None:
            S = np.zeros((self.q, self.q))
            for v, (i, j) in zip(psi, self.pairs):
                S[i, j] = S[j, i] = v
            return S
        x = self.x.copy()
        for pos, v in zip(np.flatnonzero(self.free), psi):
            x[pos] = self.term.to_parameter(int(pos), float(v))
        T = self.term.cholesky(x)
        return T @ T.T

    def steps(self) -> np.ndarray:
        """Difference steps kept inside the parameter space."""
        if self.term is None:
            return _REL_STEP * np.maximum(np.abs(self.psi), 1e-2)
        out = []
        lo = -1.0 / (self.q - 1) if self.term.kind == "cs" and self.q > 1 else -1.0
        for pos, v in zip(np.flatnonzero(self.free), self.psi):
            if self.term.is_variance(int(pos)):
                out.append(min(_REL_STEP * v, v / 8.0))
            else:
                out.append(min(_REL_STEP, (1.0 - v) / 8.0, (v - lo) / 8.0))
        return np.array(out)

    def derivatives(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``dSigma_t / dpsi`` ``(k, q, q)`` and the second derivatives ``(k, k, q, q)``
        (``None`` when linear), by fourth-order central differences."""
        k, q = self.k, self.q
        h = self.steps()
        d1 = np.empty((k, q, q))
        for a in range(k):
            d1[a] = _d1(self.sigma, self.psi, a, h[a])
        if self.linear:
            return d1, None
        d2 = np.empty((k, k, q, q))
        for a in range(k):
            for b in range(a, k):
                e = np.zeros(k)
                e[b] = h[b]
                w = (-1.0, 8.0, -8.0, 1.0)
                val = sum(c * _d1(self.sigma, self.psi + m * e, a, h[a])
                          for c, m in zip(w, (2.0, 1.0, -1.0, -2.0))) / (12.0 * h[b])
                d2[a, b] = d2[b, a] = val
        return d1, d2


def _d1(f, psi: np.ndarray, a: int, h: float) -> np.ndarray:
    e = np.zeros(len(psi))
    e[a] = h
    return (-f(psi + 2 * e) + 8 * f(psi + e) - 8 * f(psi - e) + f(psi - 2 * e)) / (12.0 * h)


def term_parameters(res) -> list[TermParameters]:
    """The :class:`TermParameters` of every random term of ``res``."""
    design = res.design
    st = res.state.structured
    s2 = float(res.sigma) ** 2
    templates = design.theta_layout().templates(res.state.theta)
    out = []
    if st is None:
        for b, T in zip(design.blocks, templates):
            out.append(TermParameters(None, b.q, np.zeros(0), np.zeros(0, dtype=bool),
                                      s2 * (T @ T.T)))
        return out
    x = np.array(st.x, dtype=float)
    if not st.absolute:  # SDs relative to sigma: make them absolute
        x[st.parameters.variance_mask()] += 0.5 * np.log(s2)
    pos = 0
    for t, T in zip(st.parameters.terms, templates):
        sl = slice(pos, pos + t.n_par)
        pos += t.n_par
        out.append(TermParameters(t, t.q, x[sl], st.free[sl], s2 * (T @ T.T)))
    return out


def structured_kenward_roger(res, linear: bool = False) -> KenwardRogerSetup:
    """:class:`~mixedanova.inference.kenward_roger_core.KenwardRogerSetup` of a REML fit
    with structured random terms or held parameters (see the module docstring);
    ``linear`` drops the second-derivative term."""
    design = res.design
    X = np.asarray(design.X, dtype=float)
    n = X.shape[0]
    s2 = float(res.sigma) ** 2
    held_sigma = res.state.fixed_sigma is not None
    Z = z_matrix(design)
    terms = term_parameters(res)
    # every random effect's term, level and column within the term
    tid = np.concatenate([np.full(b.nlev * b.q, k) for k, b in enumerate(design.blocks)])
    lev = np.concatenate([np.repeat(np.arange(b.nlev), b.q) for b in design.blocks])
    col = np.concatenate([np.tile(np.arange(b.q), b.nlev) for b in design.blocks])
    # the free parameters: (term, dSigma_t / dpsi), and each term's second derivatives
    first, second = [], []
    for k, tp in enumerate(terms):
        d1, d2 = tp.derivatives()
        if d2 is not None and tp.k:
            second.append((k, np.arange(len(first), len(first) + tp.k), d2))
        first.extend((k, d1[a]) for a in range(tp.k))
    ng = len(first)
    R = ng + (0 if held_sigma else 1)
    w = np.asarray(design.weights, dtype=float) if getattr(design, "has_weights", False) \
        else np.ones(n)
    blocks = linked_blocks(level_pattern(design), None, n)
    largest = max(len(b) for b in blocks)
    if largest > _MAX_ROWS:
        raise MixedAnovaError(
            f"Kenward-Roger for structured random-effect covariances needs the dense "
            f"inverse of the {largest} x {largest} covariance of rows linked by random "
            f"effects; this implementation stops at {_MAX_ROWS} rows. Use ddf='satterthwaite'")

    def pieces(rows):
        m = len(rows)
        Zr = Z[rows]
        cols = np.unique(Zr.indices)
        Zb = Zr[:, cols].toarray()
        t_c, j_c = tid[cols], col[cols]
        same = (t_c[:, None] == t_c[None, :]) & (lev[cols][:, None] == lev[cols][None, :])

        def zsz(k: int, S: np.ndarray) -> np.ndarray:
            # Z (I kron S, on term k) Z' on the block's rows
            jc = np.minimum(j_c, S.shape[0] - 1)
            mask = same & (t_c[:, None] == k)
            return Zb @ np.where(mask, S[jc[:, None], jc[None, :]], 0.0) @ Zb.T

        Vc = sum(zsz(k, tp.sigma_t) for k, tp in enumerate(terms)) + np.diag(s2 / w[rows])
        Vr = np.empty((R, m, m))
        for a, (k, D) in enumerate(first):
            Vr[a] = zsz(k, D)
        if not held_sigma:
            Vr[ng] = np.diag(1.0 / w[rows])
        d2 = []
        for k, idx, D in second:
            out = np.empty((len(idx), len(idx), m, m))
            for a in range(len(idx)):
                for c in range(a, len(idx)):
                    out[a, c] = out[c, a] = zsz(k, D[a, c])
            d2.append((idx, out))
        return Vc, Vr, d2

    return dense_block_kenward_roger(X, blocks, pieces, R, linear=linear)
