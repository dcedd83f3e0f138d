"""Markov reference models: the exact optimum, best-of-N and the Perron-root asymptotics.

theory §8.  ``p(y^m) = μ(y_1) Π_t P(y_t, y_{t+1})`` over ``K`` states, with a
per-token reward ``S_m = Σ_{t=1}^m r(y_t)`` or a per-transition reward
``S_m = Σ_{t=1}^{m-1} r(y_t, y_{t+1})`` (``m - 1`` terms: the first token has
no predecessor).

* :meth:`Markov.tilted` — the optimal policy ``φ ∝ p e^{λ S_m}`` over whole
  sequences, a non-homogeneous Markov chain from the backward recursion
  ``β_m ≡ 1``, ``β_t(y) = Σ_{y'} P(y, y') e^{λ r(y')} β_{t+1}(y')`` and
  ``φ(y' | y, t) = P(y, y') e^{λ r(y')} β_{t+1}(y') / β_t(y)``.  One sweep
  (``O(m nnz)`` sparse, ``O(m K²)`` dense) gives ``log Z = log E_p e^{λ S}``,
  ``E_φ S`` and ``Var_φ S`` (expected reward-to-go and its conditional
  variance ride along the recursion), so ``KL(φ||p) = λ E_φ S - log Z``.
* :meth:`Markov.best_of_n` — exact sequence-level best-of-N for lattice
  rewards from the law of ``S_m``, computed by a dynamic program over
  (state, reward level) under tilted path measures and untilted exactly.
* :meth:`Markov.perron`, :meth:`Markov.doob`, :meth:`Markov.rate_function`
  — ``Λ(t) = log ρ(P_t)``, ``P_t(y, y') = P(y, y') e^{t r}``, its
  derivatives from the left/right Perron vectors and the Poisson equation of
  the Doob transform ``Q(y, y') = P_t(y, y') v(y') / (ρ v(y))``, and the
  Gärtner–Ellis rate function by Legendre transform.
* :func:`markov_equivalence`, :func:`markov_convergence` — what
  :func:`klfrontier.equivalence` and :func:`klfrontier.convergence` call for
  a :class:`Markov` reference.

Numerics: the recursions work with a tilted matrix ``T̂`` whose rows are
scaled to a largest entry of 1 (row log-scale ``s(y)``) and with ``log β``
renormalised to a maximum of 0 at every step (the normaliser accumulates
into ``log Z``); rows whose partition sum falls below ``1e-280`` are redone
by a per-row log-sum-exp.  Rewards are shifted by ``r_max`` (``λ >= 0``) so
that no exponent is positive.  ``KL = λ E S - log Z`` keeps relative
accuracy ``~ eps (r_max - E r)/(λ Var r)`` per token: full accuracy at
moderate λ, degrading like ``1/λ`` as ``λ → 0`` (tested to 1e-10 for
``λ (r_max - r_min) >= 1e-3``).

The scalar root finder for ``D(λ) = Δ`` and ``Λ'(t) = x`` is
:func:`klfrontier._engine.solve_mean` (safeguarded Newton on a
statistics callback), used in ``log λ`` coordinates for ``D``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from .._engine import solve_mean
from .._logspace import log_bon_kl_bound, log_total_probs, total_rest, unit_exponent
from .._validate import float_or_array, log_n_from, one_of, real_scalar
from ..equivalence import Equivalence, discrete_gumbel
from ..errors import ConvergenceError
from ..lattice import resolve_lattice
from ..tilt import Frontier
from ._window import LOG_LOW_ENOUGH, LOG_OUTSIDE, WindowLaw, bon_on_window, tails
from .convergence import ConvergenceTable, convergence_row
from .memoryless import PerToken, RewardLaw, SequenceBoN, check_length

__all__ = [
    "Markov",
    "BackoffTransition",
    "MarkovTilted",
    "MarkovBoN",
    "PerronRoot",
    "DoobChain",
    "MarkovEquivalence",
    "markov_equivalence",
    "markov_convergence",
]

#: Row partition sums below this are recomputed by a per-row log-sum-exp.
_TINY = 1e-280
#: The lattice DP drops reward levels whose tilted path mass is below e^-_TRUNC of the peak.
_TRUNC = 130.0
#: A final level is trusted when its tilted mass is within e^-_TRUST of the peak.
_TRUST = 75.0
#: States up to which the Perron root is found by a dense eigendecomposition.
_DENSE_EIG = 1500
#: Tolerance on row sums of the transition matrix and on the initial law.
_SUM_TOL = 1e-9


# ============================================================ transitions
class BackoffTransition:
    """A transition matrix ``P = S + diag(weight) 1 backoff^T``: sparse part plus a rank-one backoff.

    The form of interpolated / backoff n-gram smoothing (absolute
    discounting, Kneser–Ney): ``P(y'|y) = S(y, y') + w(y) b(y')`` with
    ``S`` the discounted observed bigrams and ``b`` a unigram-like law.
    ``P`` is dense (every transition possible) but costs ``O(nnz(S) + K)``
    per matrix-vector product; the recursions treat the rank-one term
    exactly.

    Parameters
    ----------
    sparse : scipy.sparse matrix, (K, K)
        Non-negative.
    weight : (K,) array
        Non-negative backoff weight of each row.
    backoff : (K,) array
        A probability vector.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> bt = BackoffTransition(sp.csr_matrix([[0.5, 0.0], [0.0, 0.0]]), [0.5, 1.0], [0.25, 0.75])
    >>> bt.toarray().tolist()
    [[0.625, 0.375], [0.25, 0.75]]
    """

    def __init__(self, sparse, weight, backoff):
        S = sp.csr_matrix(sparse, dtype=float, copy=True)  # never modify the caller's matrix
        S.eliminate_zeros()
        S.sort_indices()
        K = S.shape[0]
        if S.shape != (K, K):
            raise ValueError(f"sparse must be square, got shape {S.shape}")
        w = np.asarray(weight, dtype=float).ravel()
        b = np.asarray(backoff, dtype=float).ravel()
        if w.shape != (K,) or b.shape != (K,):
            raise ValueError(f"weight and backoff must have shape ({K},)")
        for name, a in (("sparse", S.data), ("weight", w), ("backoff", b)):
            if not np.isfinite(a).all() or (a < 0).any():
                raise ValueError(f"{name} must be finite and non-negative")
        if abs(b.sum() - 1.0) > _SUM_TOL:
            raise ValueError(f"backoff must sum to 1, sums to {float(b.sum())!r}")
        self.sparse, self.weight, self.backoff = S, w, b / b.sum()

    @property
    def shape(self):
        return self.sparse.shape

    def toarray(self):
        """The dense ``K × K`` matrix."""
        return self.sparse.toarray() + self.weight[:, None] * self.backoff[None, :]


def _row_ids(indptr):
    return np.repeat(np.arange(indptr.size - 1), np.diff(indptr))


def _row_argmax(csr, values, row_max, K):
    """Per-row index into ``values`` (aligned with ``csr.data``) of an entry equal to ``row_max``
    (any one of tied entries); ``-1`` for empty rows."""
    rows = _row_ids(csr.indptr)
    hit = np.flatnonzero(values == row_max[rows])
    at = np.full(K, -1)
    at[rows[hit]] = hit
    return at


def _row_max(csr, values, K):
    """Per-row max of ``values`` (aligned with ``csr.data``); ``-inf`` for empty rows."""
    out = np.full(K, -np.inf)
    nz = np.flatnonzero(np.diff(csr.indptr) > 0)
    if nz.size:
        out[nz] = np.maximum.reduceat(values, csr.indptr[nz])
    return out


class _Chain:
    """Validated transition structure and rewards (internal).

    ``kind``: ``"dense"`` (``P`` an ndarray), ``"sparse"`` (CSR) or
    ``"backoff"`` (CSR part plus ``a b^T``).  Rewards: ``r`` of shape
    ``(K,)`` (per token) or ``R`` on the transitions (dense ``(K, K)``, or
    values aligned with the CSR data).
    """

    def __init__(self, transition, rewards):
        if isinstance(transition, BackoffTransition):
            self.kind = "backoff"
            S = transition.sparse
            self.a, self.b = transition.weight.copy(), transition.backoff.copy()
        elif sp.issparse(transition):
            self.kind = "sparse"
            S = sp.csr_matrix(transition, dtype=float, copy=True)
            S.eliminate_zeros()
            S.sort_indices()
            self.a = self.b = None
        else:
            self.kind = "dense"
            try:
                S = np.array(transition, dtype=float)
            except (TypeError, ValueError) as exc:
                raise ValueError("transition must be a real matrix") from exc
            self.a = self.b = None
        if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 1:
            raise ValueError(f"transition must be a square matrix, got shape {S.shape}")
        K = S.shape[0]
        self.K = K
        data = S if self.kind == "dense" else S.data
        if not np.isfinite(data).all() or (data < 0).any():
            raise ValueError("transition must be finite and non-negative")
        rows = S.sum(axis=1) if self.kind == "dense" else np.asarray(S.sum(axis=1)).ravel()
        if self.kind == "backoff":
            rows = rows + self.a
        if np.abs(rows - 1.0).max() > _SUM_TOL:
            i = int(np.argmax(np.abs(rows - 1.0)))
            raise ValueError(f"transition rows must sum to 1 (row {i} sums to {float(rows[i])!r})")
        # rounding-level renormalisation so that every row is a law
        if self.kind == "dense":
            self.P = S / rows[:, None]
        else:
            S = S.multiply(1.0 / rows[:, None]).tocsr()
            S.sort_indices()
            self.P = S
            if self.kind == "backoff":
                self.a = self.a / rows
        self._top_logs(self.P)
        # rewards
        if sp.issparse(rewards):
            if self.kind == "backoff":
                raise ValueError(
                    "per-transition rewards need a dense or sparse transition (not a BackoffTransition)"
                )
            Rm = sp.csr_matrix(rewards, dtype=float)
            if Rm.shape != (K, K):
                raise ValueError(f"rewards must have shape ({K},) or ({K}, {K})")
            R = np.asarray(Rm[self._support()]).ravel()
            self.per_token = False
        else:
            try:
                R = np.array(rewards, dtype=float)
            except (TypeError, ValueError) as exc:
                raise ValueError("rewards must be real numbers") from exc
            if R.shape == (K,):
                self.per_token = True
            elif R.shape == (K, K):
                if self.kind == "backoff":
                    raise ValueError(
                        "per-transition rewards need a dense or sparse transition (not a BackoffTransition)"
                    )
                self.per_token = False
                if self.kind == "sparse":
                    R = R[self._support()]
            else:
                raise ValueError(f"rewards must have shape ({K},) or ({K}, {K}), got {R.shape}")
        if not np.isfinite(R).all():
            raise ValueError("rewards must be finite")
        self.R = R
        if self.per_token:
            vals = R
        elif self.kind == "dense":
            vals = R[self.P > 0]
        else:
            vals = R
        self.r_min, self.r_max = float(vals.min()), float(vals.max())

    def _top_logs(self, S):
        """Each row's largest entry and its normalised log-mass ``-log1p(rest / top)``.

        ``rest`` is the sum of the row's other entries (with the backoff weight), formed
        without the top entry, so a row ``7e-111, 1`` has log-masses ``log 7e-111 - 7e-111``
        and ``-7e-111`` (not ``0``): the KL of a policy on the chain is of the order of the
        small masses, at every length.  ``top_at`` indexes the dense row, or ``P.data``;
        ``top_is_a`` marks backoff rows whose largest component is the weight ``a``.
        """
        K = self.K
        ar = np.arange(K)
        if self.kind == "dense":
            col = np.argmax(S, axis=1)
            top = S[ar, col].copy()
            S[ar, col] = 0.0
            rest = S.sum(axis=1)
            S[ar, col] = top
            self.top_at = col
            self.top_is_a = None
        else:
            data = S.data
            nz = np.diff(S.indptr) > 0
            top = _row_max(S, data, K)
            at = _row_argmax(S, data, top, K)
            top = np.where(nz, top, 0.0)
            saved = data[at[nz]].copy()
            data[at[nz]] = 0.0
            rest = np.asarray(S.sum(axis=1)).ravel()
            data[at[nz]] = saved
            self.top_is_a = None
            if self.kind == "backoff":
                self.top_is_a = self.a > top
                rest = rest + np.where(self.top_is_a, top, self.a)
                top = np.where(self.top_is_a, self.a, top)
            self.top_at = at
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_top = -np.log1p(rest / top)

    def log_dense(self):
        """``log P`` of a dense chain, each row's largest entry with full relative accuracy."""
        with np.errstate(divide="ignore"):
            X = np.log(self.P)
        X[np.arange(self.K), self.top_at] = self.log_top
        return X

    def log_data(self):
        """``log P.data`` of a sparse or backoff chain (largest entries as in :meth:`log_dense`)."""
        with np.errstate(divide="ignore"):
            x = np.log(self.P.data)
        on = self.top_at >= 0
        if self.top_is_a is not None:
            on &= ~self.top_is_a
        x[self.top_at[on]] = self.log_top[on]
        return x

    def log_a(self):
        """``log a`` of a backoff chain (rows whose largest component is ``a`` as in :meth:`log_dense`)."""
        with np.errstate(divide="ignore"):
            la = np.log(self.a)
        return np.where(self.top_is_a, self.log_top, la)

    def _support(self):
        coo = self.P.tocoo()
        return coo.row, coo.col

    def values_on_support(self):
        """Reward values that a path can collect (for lattice detection)."""
        if self.per_token:
            return self.R
        return self.R[self.P > 0] if self.kind == "dense" else self.R

    # -------------------------------------------------------------- tilt
    def tilt(self, lam):
        return _Tilt(self, float(lam))

    def dense_matrix(self):
        if self.kind == "dense":
            return self.P
        out = self.P.toarray()
        if self.kind == "backoff":
            out += self.a[:, None] * self.b[None, :]
        return out


class _Tilt:
    """``T̂ = exp(log P + λ (R - c) - s(row))``: the tilted matrix, rows scaled to max 1.

    ``c = r_max`` for ``λ >= 0`` and ``r_min`` otherwise, so ``λ (R - c) <= 0``.
    Each row's largest term is exactly ``1``: in the dense matrix or ``M.data``
    (``dom_at``), or, in a backoff row where the rank-one part is larger
    (``dom_b``), ``ah(y) bh(jb) = 1``.  :meth:`mm_off` multiplies by ``T̂``
    without those terms, so that a row sum ``1 + 1e-111`` keeps its ``1e-111``.
    """

    def __init__(self, ch: _Chain, lam):
        self.ch, self.lam = ch, lam
        self.c = ch.r_max if lam >= 0 else ch.r_min
        K = ch.K
        ar = np.arange(K)
        self.dom_b = None
        with np.errstate(divide="ignore"):
            if ch.kind == "dense":
                X = ch.log_dense()
                Rt = (ch.R[None, :] if ch.per_token else ch.R) - self.c
                if lam != 0:
                    X += lam * np.where(ch.P > 0, Rt, 0.0)
                col = np.argmax(X, axis=1)
                s = X[ar, col]
                X -= s[:, None]
                self.M = np.exp(X, out=X)
                self.Rt = np.broadcast_to(Rt, (K, K)) if ch.per_token else np.where(ch.P > 0, Rt, 0.0)
                self.dom_at = col  # the dense column
                self.dom_col = col
            else:
                P = ch.P
                cols = P.indices
                rows = _row_ids(P.indptr)
                Rt = (ch.R[cols] if ch.per_token else ch.R) - self.c
                x = ch.log_data() + lam * Rt if lam != 0 else ch.log_data()
                s = _row_max(P, x, K)
                at = _row_argmax(P, x, s, K)  # any entry at the row max will do (ties: each is 1 in M)
                if ch.kind == "backoff":
                    rt = ch.R - self.c
                    lb = _log_initial(ch.b) + lam * rt
                    self.jb = int(np.argmax(lb))
                    self.lb_max = float(lb[self.jb])
                    self.lb = lb - self.lb_max
                    la = ch.log_a() + self.lb_max
                    self.dom_b = la > s  # ties: the sparse entry is the row's dominant term
                    s = np.maximum(s, la)
                    at[self.dom_b] = -1
                self.M = sp.csr_matrix((np.exp(x - s[rows]), cols, P.indptr), shape=(K, K))
                self.Rt = Rt
                if ch.kind == "backoff":
                    self.ah = np.exp(la - s)  # â(y) b̂(y') with b̂ = e^{lb}
                    self.bh = np.exp(self.lb)
                self.dom_at = at  # index into M.data (-1: the backoff term)
                jb = self.jb if self.dom_b is not None else 0
                self.dom_col = np.where(at >= 0, cols[np.maximum(at, 0)], jb)
        self.s = s
        if not ch.per_token:
            if ch.kind == "dense":
                self.MR = self.M * self.Rt
                self.MR2 = self.MR * self.Rt
                self.rt_dom = self.Rt[ar, self.dom_col]
            else:
                self.MR = sp.csr_matrix((self.M.data * Rt, cols, ch.P.indptr), shape=(K, K))
                self.MR2 = sp.csr_matrix((self.M.data * Rt * Rt, cols, ch.P.indptr), shape=(K, K))
                self.rt_dom = Rt[self.dom_at]
        self.rt = ch.R - self.c if ch.per_token else None
        # The dominant terms apart (M is 1 there): the dense matrices are zeroed there for each
        # product and restored (no K x K copy); sparse ones get data copies without them.
        self._dom_b_rows = None if self.dom_b is None else np.flatnonzero(self.dom_b)
        mats = [self.M] + ([] if ch.per_token else [self.MR, self.MR2])
        if ch.kind == "dense":
            self._off = (ar, self.dom_at)
            self._restore = [m[self._off].copy() for m in mats]
            self._off_mats = None
        else:
            off = self.dom_at[self.dom_at >= 0]
            self._off_mats = []
            for m in mats:
                data = m.data.copy()
                data[off] = 0.0
                self._off_mats.append(sp.csr_matrix((data, m.indices, m.indptr), shape=m.shape))
        if ch.kind == "backoff":
            self._bh_off = self.bh.copy()
            self._bh_off[self.jb] = 0.0

    def mm_off(self, rows):
        """``[(T̂ - D) @ x for x in rows]`` with ``D`` each row's dominant term (``1`` at ``dom_col``).

        ``rows`` is a ``(c, K)`` array of vectors; returns ``(c, K)``.  With rewards on the
        transitions (not per token) also ``(MR - D R) @ rows[:2]`` and ``(MR2 - D R²) @ rows[0]``.
        """
        ch = self.ch
        reward_rows = not ch.per_token
        if ch.kind == "dense":  # one BLAS product per matrix
            mats = [self.M] + ([self.MR, self.MR2] if reward_rows else [])
            for m in mats:
                m[self._off] = 0.0
            try:
                Y = (self.M @ rows.T).T.copy()
                if reward_rows:
                    extra = ((self.MR @ rows[:2].T).T.copy(), self.MR2 @ rows[0])
            finally:
                for m, v in zip(mats, self._restore):
                    m[self._off] = v
        else:  # separate matrix-vector products beat a (K, 3) block product here
            M = self._off_mats
            Y = np.stack([M[0] @ x for x in rows])
            if reward_rows:
                extra = (np.stack([M[1] @ x for x in rows[:2]]), M[2] @ rows[0])
        if ch.kind == "backoff":
            # the rank-one part a(y) b(y'): without its b(jb) term in the rows it dominates (ah = 1)
            dom = self._dom_b_rows
            u_off = rows @ self._bh_off
            u = u_off + rows[:, self.jb]
            kept = Y[:, dom] + u_off[:, None]
            Y += u[:, None] * self.ah[None, :]
            Y[:, dom] = kept
        return (Y, *extra) if reward_rows else Y

    def mm(self, X):
        """``T̂ @ X`` for a (K, c) block."""
        out = np.asarray(self.M @ X)
        if self.ch.kind == "backoff":
            u = self.bh @ X
            if out.ndim == 1:
                out = out + self.ah * u
            else:
                for k in range(out.shape[1]):
                    out[:, k] += self.ah * u[k]
        return out

    def rmm(self, X):
        """``T̂^T @ X``."""
        out = self.M.T @ X
        if self.ch.kind == "backoff":
            out = out + self.bh[:, None] * (self.ah @ X)[None, :]
        return np.asarray(out)

    def log_rows(self, rows):
        """``log T̂[rows, :]`` as a dense (len(rows), K) array (``-inf`` for zeros)."""
        rows = np.asarray(rows)
        with np.errstate(divide="ignore"):
            if self.ch.kind == "dense":
                return np.log(self.M[rows])
            sub = np.log(self.M[rows].toarray())
            if self.ch.kind == "backoff":
                sub = np.logaddexp(sub, np.log(self.ah[rows])[:, None] + self.lb[None, :])
            return sub

    def rt_rows(self, rows):
        """``R - c`` on the rows (per-token: broadcast)."""
        if self.ch.per_token:
            return np.broadcast_to(self.rt, (len(rows), self.ch.K))
        if self.ch.kind == "dense":
            return self.Rt[rows]
        return sp.csr_matrix((self.Rt, self.ch.P.indices, self.ch.P.indptr), shape=(self.ch.K, self.ch.K))[
            rows
        ].toarray()


def _unit_chain(ch: _Chain):
    """``(chain with rewards R / s, s)``: ``s`` a power of two bringing ``max |R|`` to ``[1/2, 1)``.

    Only when ``max |R|`` lies outside ``[2^-64, 2^64]`` (else ``s = 1`` and the chain itself):
    the sweep's second moments of rewards near ``1e300`` overflow and its ``λ`` near ``1e300``
    (rewards near ``1e-300``) does too.  Division by a power of two is exact.
    """
    e = unit_exponent(max(abs(ch.r_min), abs(ch.r_max)))
    if e == 0:
        return ch, 1.0
    scale = math.ldexp(1.0, e)
    unit = copy.copy(ch)
    unit.R = ch.R / scale
    unit.r_min, unit.r_max = ch.r_min / scale, ch.r_max / scale
    return unit, scale


# ======================================================= backward sweep
@dataclass
class _Sweep:
    """One backward sweep at ``λ``: shifted-reward totals and (optionally) the ``ℓ_t`` table."""

    lam: float
    c: float
    log_z: float  # log E_p e^{λ (S - n c)}
    mean: float  # E_φ S (reward units)
    var: float  # Var_φ S
    kl: float
    logphi1: np.ndarray  # log φ(y_1)
    ell: np.ndarray | None = None  # (m, K): ℓ_t, t = 1..m (ℓ_m = 0)
    logE: np.ndarray | None = None  # (m-1, K): log partition of row y at step t (incl. s)


def _step_stats(tl: _Tilt, ell, B, C):
    """One backward step: ``log Σ_{y'} T̂ e^{ℓ}``, the mean and variance of the reward-to-go.

    ``B`` is the reward-to-go of each next state (per token: including its
    reward), ``C`` its conditional variance.  Returns ``(logE, mean, var)``
    (``logE`` without the row scale ``s``).

    Each row is split into its dominant term (weight ``w_d = e^{ℓ(d)}``, value
    ``a_d``) and the rest (:meth:`_Tilt.mm_off`, total ``Y0``):
    ``log E = log1p(expm1(ℓ(d)) + Y0)`` where ``|log E| < 1e-3`` (``log E`` elsewhere:
    there ``eps`` absolute is ``eps`` relative), the mean is ``a_d + δ`` with
    ``δ = Σ' w (a - a_d) / E`` and the variance
    ``(w_d C_d + Σ' w (C + (a - a_d)²)) / E - δ²``, so a rest of relative size
    ``1e-111`` keeps its digits in all three.
    """
    ch = tl.ch
    w = np.exp(ell)
    kappa = float(w @ B / w.sum())
    Bc = B - kappa  # centred: the products below hold no large common offset
    d = tl.dom_col
    mean_d = B[d]
    if ch.per_token:
        Y0, Y1, Y2 = tl.mm_off(np.stack([w, w * Bc, w * (C + Bc * Bc)]))
    else:
        (Y0, Y1, Y2), YR, YR2 = tl.mm_off(np.stack([w, w * Bc, w * (C + Bc * Bc)]))
        Y1 += YR[0]
        Y2 += YR2 + 2 * YR[1]
        mean_d += tl.rt_dom
    a_d = mean_d - kappa
    w_d = w[d]
    E = w_d + Y0
    with np.errstate(divide="ignore", invalid="ignore"):
        logE = np.log(E)
        # log E = log(w_d + Y0) to eps absolutely; where it is small, relatively too:
        # log1p(expm1(ℓ(d)) + Y0) keeps a rest Y0 far below eps when w_d = 1
        near = np.flatnonzero(np.abs(logE) < 1e-3)
        if near.size:
            logE[near] = np.log1p(np.expm1(ell[d[near]]) + Y0[near])
        dev = Y1 - a_d * Y0  # Σ' w (a - a_d)
        delta = dev / E
        # (w_d C_d + Σ' w (C + (a - a_d)²)) / E - δ², with Σ' w (a - a_d)² = Y2 - a_d (Y1 + dev)
        Y1 += dev
        Y1 *= a_d
        Y2 -= Y1
        Y2 += w_d * C[d]
        Y2 /= E
        var = Y2 - delta * delta
    mean = mean_d + delta
    bad = np.flatnonzero(~(E > _TINY))
    if bad.size:
        # per-row log-sum-exp for rows whose partition sum underflows; the same split at each
        # row's largest term
        for chunk in np.array_split(bad, max(1, bad.size * ch.K // 2**22)):
            x = tl.log_rows(chunk) + ell[None, :]
            k = np.argmax(x, axis=1)
            ar = np.arange(chunk.size)
            mx = x[ar, k]
            fin = np.isfinite(mx)
            ww = np.exp(x - np.where(fin, mx, 0.0)[:, None])
            ww[ar, k] = 0.0
            rest = ww.sum(axis=1)
            a = tl.rt_rows(chunk) + B[None, :] if not ch.per_token else np.broadcast_to(B, x.shape)
            a_k = a[ar, k]
            dev = a - a_k[:, None]
            dl = (ww * dev).sum(axis=1) / (1.0 + rest)
            q = (C[k] + (ww * (C[None, :] + dev * dev)).sum(axis=1)) / (1.0 + rest)
            mean[chunk] = np.where(fin, a_k + dl, 0.0)
            var[chunk] = np.where(fin, q - dl * dl, 0.0)
            logE[chunk] = np.where(fin, mx + np.log1p(rest), -np.inf)
    return logE, mean, np.maximum(var, 0.0)


def _sweep(ch: _Chain, log_mu, lam, m, *, store=False):
    """Backward recursion at ``λ`` for length ``m`` (see module notes)."""
    tl = ch.tilt(lam)
    K = ch.K
    ell = np.zeros(K)
    Rg = np.zeros(K)  # E[reward after t | y_t]
    Cg = np.zeros(K)  # Var[reward after t | y_t]
    log_c = 0.0
    ell_tab = np.empty((m, K)) if store else None
    logE_tab = np.empty((max(m - 1, 0), K)) if store else None
    if ell_tab is not None:  # store
        ell_tab[m - 1] = 0.0
    for t in range(m - 2, -1, -1):
        B = (tl.rt + Rg) if ch.per_token else Rg
        logE, Rg, Cg = _step_stats(tl, ell, B, Cg)
        lt = tl.s + logE
        if logE_tab is not None:
            logE_tab[t] = lt
        c = float(lt.max())
        ell = lt - c
        log_c += c
        if ell_tab is not None:
            ell_tab[t] = ell
    with np.errstate(divide="ignore"):
        x = log_mu + ell + (lam * tl.rt if (ch.per_token and lam != 0) else 0.0)
    k = int(np.argmax(x))
    lz0 = float(x[k]) + float(np.log1p(total_rest(x, k)))  # the largest term apart: 1 + 1e-111 kept
    logphi1 = x - lz0
    phi1 = np.exp(logphi1)
    A = (tl.rt + Rg) if ch.per_token else Rg
    mean_s = float(A[k]) + float(phi1 @ (A - A[k]))
    var = float(phi1 @ (Cg + (A - mean_s) ** 2))
    log_z = 0.0 if lam == 0 else lz0 + log_c  # λ = 0: Z = Σ p = 1 exactly
    n_terms = m if ch.per_token else m - 1
    kl = 0.0 if lam == 0 else max(lam * mean_s - log_z, 0.0)
    return _Sweep(
        lam=lam,
        c=tl.c,
        log_z=log_z,
        mean=mean_s + n_terms * tl.c,
        var=var,
        kl=kl,
        logphi1=logphi1,
        ell=ell_tab,
        logE=logE_tab,
    )


# ============================================================== results
@dataclass(eq=False)
class MarkovTilted(PerToken):
    """The optimal KL-constrained policy over length-``m`` sequences of a Markov reference.

    ``φ(y^m) = p(y^m) e^{λ S_m} / Z``: a non-homogeneous Markov chain (theory §8).

    Attributes
    ----------
    length : int
    lam : float
        ``λ`` (reward units; ``inf`` when saturated).
    reward : float
        ``E_φ S_m``.
    kl : float
        ``KL(φ || p)`` (total over the sequence).
    reward_variance : float
        ``Var_φ S_m`` (``= d E_φ S / dλ``).
    log_partition : float
        ``log Z = log E_p e^{λ S_m}`` (``nan`` when saturated).
    saturated : bool
        The budget reached ``-log P(S_m = max)``: ``φ = p(· | S_m = max)``.
    kl_budget : float or None
        The budget asked for, when given.
    """

    length: int
    lam: float
    reward: float
    kl: float
    reward_variance: float
    log_partition: float
    saturated: bool
    kl_budget: float | None = None
    _markov: object = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """Plain fields plus per-token values (JSON-ready with :mod:`klfrontier._json`)."""
        keys = ("length", "lam", "reward", "kl", "reward_variance", "log_partition", "saturated", "kl_budget")
        out = {k: getattr(self, k) for k in keys}
        out.update(reward_per_token=self.reward_per_token, kl_per_token=self.kl_per_token)
        return out

    def sample(self, n, *, seed=None):
        """``n`` sequences drawn from the policy: an ``(n, length)`` array of state indices.

        Exact: at step ``t`` each distinct current state's row
        ``φ(· | y, t)`` is formed in log space and sampled by inverse CDF.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        return self._markov._sample(self, n, np.random.default_rng(seed))

    def logprob(self, seqs):
        """``log φ(y^m)`` of state sequences (rows of an ``(n, length)`` integer array).

        Summed from the chain's factors ``log φ(y_1) + Σ_t log φ(y_{t+1} | y_t, t)``.
        """
        y = np.atleast_2d(np.asarray(seqs))
        if y.ndim != 2 or y.shape[1] != self.length or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"seqs must be an integer array of shape (n, {self.length})")
        if (y < 0).any() or (y >= self._markov.n_states).any():
            raise ValueError("seqs holds a state index out of range")
        return self._markov._logprob(self, y)

    def position_rewards(self):
        """``E_φ r`` at each position ``t = 1..m`` (per token) or of each transition (per transition).

        The policy is not stationary: the first and last positions differ
        from the middle, where the Doob transform's stationary value holds.
        """
        return self._markov._position_rewards(self)


@dataclass(eq=False)
class MarkovBoN(SequenceBoN):
    """Exact best-of-N over length-``m`` sequences of a Markov reference.

    The fields of :class:`~klfrontier.sequences.memoryless.SequenceBoN`,
    with ``optimal_reward = E_{φ_Δ} S_m`` and ``lam`` those of the exact
    finite-``m`` optimum at ``Δ = log N`` (``D_m(λ) = log N``), so
    ``kl_to_optimal = KL(π_N || φ_Δ)`` and ``reward_gap`` are measured
    against it; ``exact`` is always True (non-lattice rewards are refused)
    and ``method`` is ``"markov-dp"``.  ``error_bound``: the BoN-weighted
    relative error of the law on the window (truncation, rounding) plus the
    BoN mass outside it.
    """


@dataclass(eq=False)
class PerronRoot:
    """``Λ(t) = log ρ(P_t)`` and its derivatives at one tilt ``t`` (the argument of :meth:`Markov.scgf`).

    Attributes
    ----------
    t : float
    log_rho : float
        ``Λ(t)`` (per step).
    derivative : float
        ``Λ'(t) = u^T P'_t v / (ρ u^T v)``: the stationary reward per step of
        the Doob transform.
    variance : float
        ``Λ''(t)``: the asymptotic variance per step (Poisson equation).
    right, left : (K,) ndarray
        Perron vectors ``v`` (``P_t v = ρ v``) and ``u`` (``u^T P_t = ρ u^T``),
        non-negative, ``max v = 1``, ``u^T v = 1``.
    stationary : (K,) ndarray
        ``π = u ⊙ v``: the stationary law of the Doob transform.
    """

    t: float
    log_rho: float
    derivative: float
    variance: float
    right: np.ndarray = field(repr=False)
    left: np.ndarray = field(repr=False)
    stationary: np.ndarray = field(repr=False)


@dataclass(eq=False)
class DoobChain:
    """The optimal stationary tilted chain: the Doob transform of ``P_λ``.

    ``Q(y, y') = P(y, y') e^{λ r} v(y') / (ρ v(y))`` is a stochastic matrix
    on the support of ``v``; its stationary law is ``π = u ⊙ v``.

    Attributes
    ----------
    lam : float
    reward_rate : float
        ``Λ'(λ)``: stationary reward per step under ``Q``.
    kl_rate : float
        ``λ Λ'(λ) - Λ(λ)``: the KL rate (relative entropy rate of ``Q``
        with respect to ``P``).
    kl_rate_direct : float
        ``Σ_y π(y) Σ_{y'} Q log(Q / P)`` summed term by term (a check).
    variance_rate : float
        ``Λ''(λ)``.
    perron : PerronRoot
    """

    lam: float
    reward_rate: float
    kl_rate: float
    kl_rate_direct: float
    variance_rate: float
    perron: PerronRoot = field(repr=False)
    _markov: object = field(default=None, repr=False)

    @property
    def stationary(self):
        return self.perron.stationary

    def transition(self):
        """``Q`` as a dense array (``K <= 1500``) or in the form of the reference's transition."""
        return self._markov._doob_matrix(self.perron)


# ================================================================ object
def _check_initial(initial, K):
    try:
        mu = np.array(initial, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise ValueError("initial must be a probability vector") from exc
    if mu.shape != (K,):
        raise ValueError(f"initial must have shape ({K},), got {mu.shape}")
    if not np.isfinite(mu).all() or (mu < 0).any():
        raise ValueError("initial must be finite and non-negative")
    if abs(mu.sum() - 1.0) > _SUM_TOL:
        raise ValueError(f"initial must sum to 1, sums to {float(mu.sum())!r}")
    return mu


def _log_initial(mu):
    """Normalised ``log mu`` with the largest entry as ``-log1p(rest)``: full relative accuracy.

    A law ``1, 7e-111`` has log-masses ``log(7e-111) - 7e-111`` and ``-7e-111``, not ``0``
    (the KL of a policy on it is of the order of the small mass).
    """
    with np.errstate(divide="ignore"):
        lp = np.log(mu) - log_total_probs(mu)
    i = int(np.argmax(lp))
    lp[i] = -np.log1p(total_rest(lp, i))
    return lp


def _real(x, name):
    return real_scalar(x, name, allow_inf=True)


class Markov:
    """A Markov reference over length-``m`` sequences with an additive reward (theory §8).

    Parameters
    ----------
    initial : (K,) array
        Law ``μ`` of the first token.
    transition : (K, K) ndarray, scipy.sparse matrix or BackoffTransition
        Row-stochastic ``P(y, y')`` (rows must sum to 1 within ``1e-9``;
        rounding is renormalised away).
    rewards : (K,) or (K, K) array
        Per-token ``r(y)`` (``S_m = Σ_{t=1}^m r(y_t)``) or per-transition
        ``r(y, y')`` (``S_m = Σ_{t=1}^{m-1} r(y_t, y_{t+1})``; a sparse matrix
        is read on the transition's support).
    length : int
        ``m >= 1``.
    lattice : None, False or float
        Lattice of the reward values for :meth:`best_of_n` (``None``:
        detect; as ``klfrontier.lattice.resolve_lattice``).

    Examples
    --------
    >>> mk = Markov([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [0.0, 1.0], length=50)
    >>> opt = mk.tilted(kl=5.0)
    >>> round(opt.kl, 12), round(opt.reward_per_token, 6)
    (5.0, 0.848379)
    >>> b = mk.best_of_n(log_n=5.0)               # exact, from the law of S_m
    >>> round(b.reward_per_token, 6), round(b.kl_to_optimal, 4)
    (0.781439, 0.5434)
    >>> round(mk.doob(lam=opt.lam).reward_rate, 6)    # the stationary optimum at the same λ
    0.859692
    """

    def __init__(self, initial, transition, rewards, *, length, lattice=None):
        self._ch = _Chain(transition, rewards)
        self._uch, self._scale = _unit_chain(self._ch)
        mu = _check_initial(initial, self._ch.K)
        self._log_mu = _log_initial(mu)
        self.initial = mu / mu.sum()
        self.length = check_length(length)
        if not self._ch.per_token and self.length < 2:
            raise ValueError("per-transition rewards need length >= 2")
        self.lattice = lattice
        self._lat = None
        self._lat_done = False
        self._cache = {}

    # ---------------------------------------------------------- basics
    @property
    def n_states(self) -> int:
        return self._ch.K

    @property
    def per_token(self) -> bool:
        """True for a per-token reward ``r(y)``, False for ``r(y, y')``."""
        return self._ch.per_token

    @property
    def n_terms(self) -> int:
        """Number of reward terms in ``S_m``: ``m`` (per token) or ``m - 1``."""
        return self.length if self._ch.per_token else self.length - 1

    @property
    def transition_kind(self) -> str:
        """``"dense"``, ``"sparse"`` or ``"backoff"``."""
        return self._ch.kind

    def with_length(self, length) -> Markov:
        """The same chain and reward at another length (shares the validated matrices)."""
        new = object.__new__(Markov)
        new.__dict__.update(self.__dict__)
        new.length = check_length(length)
        new._cache = {}
        return new

    def __repr__(self):
        kind = "per-token" if self.per_token else "per-transition"
        return f"Markov(K={self.n_states}, length={self.length}, transition={self._ch.kind}, rewards={kind})"

    def _lattice(self):
        if not self._lat_done:
            self._lat = resolve_lattice(self._ch.values_on_support(), self.lattice)
            self._lat_done = True
        return self._lat

    def lattice_span(self):
        """``(a, h)`` of the reward lattice, or ``None``."""
        fit = self._lattice()
        return None if fit is None else (float(fit.a), float(fit.h))

    def _tilt(self, lam):
        key = ("tilt", float(lam))
        tl = self._cache.get(key)
        if tl is None:
            tl = self._cache[key] = self._ch.tilt(float(lam))
        return tl

    def _sweep(self, lam, store=False):
        """The sweep at ``λ`` (reward units), computed in the unit chain's units."""
        sw = self._sweep_u(float(lam) * self._scale, store)
        if self._scale == 1.0:
            return sw
        s = self._scale
        return replace(
            sw, lam=float(lam), c=float(sw.c) * s, mean=float(sw.mean) * s, var=float(sw.var) * s * s
        )

    def _sweep_u(self, lam_u, store=False):
        """The sweep of the unit chain (rewards ``R / scale``) at ``λ_u = λ scale``."""
        key = (float(lam_u), store)
        hit = self._cache.get(key) or (self._cache.get((float(lam_u), True)) if not store else None)
        if hit is None:
            hit = _sweep(self._uch, self._log_mu, float(lam_u), self.length, store=store)
            if len(self._cache) > 64:
                for k in [k for k in self._cache if k[0] not in ("max_path", "tilt")]:
                    del self._cache[k]
            self._cache[key] = hit
        return hit

    @property
    def mean_reward(self) -> float:
        """``E_p S_m``."""
        return self._sweep(0.0).mean

    # -------------------------------------------------- saturation (λ = ∞)
    def _max_path(self, sign=1):
        """Max-plus recursion: largest (``sign=-1``: smallest) ``S_m``, ``log P(S_m = it)``, tables.

        Returns ``(extreme S_m, -log P, V tables, G tables, values, tol)``
        with ``V_t(y)`` the best (sign-adjusted) reward-to-go and ``G_t(y)``
        the log-probability of achieving it; lattice rewards compare integer
        level indices (exact ties).
        """
        key = ("max_path", sign)
        if key in self._cache:
            return self._cache[key]
        ch, m = self._ch, self.length
        fit = self._lattice()
        if fit is not None:  # integer lattice indices: exact ties
            val = sign * np.rint((np.asarray(ch.R, dtype=float) - fit.a) / fit.h)
            tol = 0.5
        else:
            val = sign * np.asarray(ch.R, dtype=float)
            tol = 64 * np.finfo(float).eps * m * max(abs(ch.r_max), abs(ch.r_min), 1e-300)
        K = ch.K
        V = np.zeros(K)
        G = np.zeros(K)
        Vs, Gs = [V], [G]
        for _ in range(m - 1):
            V, G = self._maxplus_step(val, V, G, tol)
            Vs.append(V)
            Gs.append(G)
        x = (val + V) if ch.per_token else V
        x = np.where(self.initial > 0, x, -np.inf)
        vmax = float(x.max())
        on = x >= vmax - tol
        g = float(logsumexp(self._log_mu[on] + G[on]))
        smax = (sign * vmax * fit.h + self.n_terms * fit.a) if fit is not None else sign * vmax
        out = (smax, -g, Vs[::-1], Gs[::-1], val, tol)
        self._cache[key] = out
        return out

    def _maxplus_step(self, val, V, G, tol):
        ch, K = self._ch, self._ch.K
        with np.errstate(divide="ignore"):
            if ch.kind == "dense":
                x = np.where(ch.P > 0, (val[None, :] if ch.per_token else val) + V[None, :], -np.inf)
                Vn = x.max(axis=1)
                on = x >= Vn[:, None] - tol
                Gn = logsumexp(np.where(on, ch.log_dense() + G[None, :], -np.inf), axis=1)
                return Vn, Gn
            P = ch.P
            cols = P.indices
            xe = (val[cols] if ch.per_token else val) + V[cols]
            Vn = _row_max(P, xe, K)
            if ch.kind == "backoff":
                xb = np.where(ch.b > 0, val + V, -np.inf)
                vb = float(xb.max())
                Vn = np.where(ch.a > 0, np.maximum(Vn, vb), Vn)
            rows = _row_ids(P.indptr)
            on = xe >= Vn[rows] - tol
            le = np.where(on, ch.log_data() + G[cols], -np.inf)
            mx = _row_max(P, le, K)
            fin = np.isfinite(mx)
            tot = np.zeros(K)
            np.add.at(tot, rows, np.exp(le - np.where(fin, mx, 0.0)[rows]))
            Gn = np.where(fin, mx + np.log(np.where(fin, tot, 1.0)), -np.inf)
            if ch.kind == "backoff":
                onb = xb >= vb - tol
                gb = float(logsumexp(_log_initial(ch.b)[onb] + G[onb]))
                use = (ch.a > 0) & (vb >= Vn - tol)
                Gn = np.where(use, np.logaddexp(Gn, np.where(use, ch.log_a(), 0.0) + gb), Gn)
            return Vn, Gn

    @property
    def kl_max(self) -> float:
        """``-log P_p(S_m = max S_m)``: the KL at which the optimum saturates."""
        return self._max_path()[1]

    @property
    def max_reward(self) -> float:
        """The largest ``S_m`` any path of positive probability collects."""
        return self._max_path()[0]

    @property
    def min_reward(self) -> float:
        """The smallest ``S_m`` any path of positive probability collects."""
        return self._max_path(-1)[0]

    # --------------------------------------------------------- the optimum
    def _lam_for_kl(self, delta):
        """``λ`` with ``D_m(λ) = λ E_λ S - log Z(λ) = Δ`` (``0 < Δ < kl_max``)."""
        base = self._sweep_u(0.0)  # unit-chain units throughout: lam = lam_u / scale
        lam0 = np.sqrt(2.0 * delta / max(base.var, 1e-300))
        lam0 = min(max(lam0, 1e-300), 1e300)

        def mean_var(s):
            out_m, out_v = np.empty(s.size), np.empty(s.size)
            for i, si in enumerate(s):
                lam = lam0 * math.exp(min(si, 700.0))
                sw = self._sweep_u(lam)
                with np.errstate(divide="ignore", invalid="ignore"):
                    out_m[i] = np.log(sw.kl) if sw.kl > 0 else -np.inf
                    out_v[i] = lam * lam * sw.var / sw.kl if sw.kl > 0 else np.nan
            return out_m, out_v

        s = float(
            solve_mean(
                lambda t, _rows: mean_var(t), np.array([np.log(delta)]), tol=1e-14, max_iter=200, strict=False
            )[0]
        )
        return lam0 * math.exp(min(s, 700.0)) / self._scale

    def tilted(self, *, kl=None, beta=None, lam=None) -> MarkovTilted:
        """The exact optimal policy over whole sequences: budget ``kl = Δ`` (total), or ``lam`` / ``beta``.

        Parameters
        ----------
        kl : float, optional
            Total KL budget ``Δ`` (nats over the whole sequence); solves
            ``D_m(λ) = λ E_λ S_m - log E_p e^{λ S_m} = Δ``.  ``Δ >=``
            :attr:`kl_max` gives the saturated optimum ``p(· | S_m = max)``.
        lam : float, optional
            Inverse temperature ``λ >= 0`` (``inf`` allowed).
        beta : float, optional
            KL-regularised form ``max E S - β KL``: ``λ = 1/β``.

        Returns
        -------
        MarkovTilted

        Notes
        -----
        ``φ(y^m) = p(y^m) e^{λ S_m}/Z`` is the non-homogeneous chain
        ``φ(y' | y, t) = P(y, y') e^{λ r(y')} β_{t+1}(y') / β_t(y)`` (theory
        §8); ``D_m'(λ) = λ Var_λ S_m``, so the solver steps on
        ``log D`` against ``log λ`` with that slope.
        """
        one_of(kl=kl, lam=lam, beta=beta)
        budget = None
        if kl is not None:
            d = _real(kl, "kl")
            if d < 0:
                raise ValueError("kl must be >= 0")
            budget = d
            if d == 0:
                lam_v = 0.0
            elif d >= self.kl_max:
                return self._saturated(budget)
            else:
                lam_v = self._lam_for_kl(d)
        elif lam is not None:
            lam_v = _real(lam, "lam")
            if lam_v < 0:
                raise ValueError("lam must be >= 0 (negative lam lowers the reward)")
        else:
            b = _real(beta, "beta")
            if not b > 0:
                raise ValueError("beta must be > 0")
            lam_v = 1.0 / b
        if np.isinf(lam_v):
            return self._saturated(budget)
        sw = self._sweep(lam_v)
        log_z = sw.log_z + lam_v * self.n_terms * sw.c
        return MarkovTilted(
            length=self.length,
            lam=float(lam_v),
            reward=sw.mean,
            kl=sw.kl,
            reward_variance=sw.var,
            log_partition=log_z,
            saturated=False,
            kl_budget=budget,
            _markov=self,
        )

    def _saturated(self, budget):
        smax, klm = self._max_path()[:2]
        return MarkovTilted(
            length=self.length,
            lam=np.inf,
            reward=smax,
            kl=klm,
            reward_variance=0.0,
            log_partition=np.nan,
            saturated=True,
            kl_budget=budget,
            _markov=self,
        )

    def frontier(self, kl) -> Frontier:
        """The sequence-level frontier ``R*_m(Δ)`` at total budgets ``kl`` (a :class:`~klfrontier.Frontier`).

        Examples
        --------
        >>> mk = Markov([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [0.0, 1.0], length=20)
        >>> fr = mk.frontier([0.0, 2.0, 100.0])
        >>> fr.saturated.tolist(), round(float(fr.reward[-1]), 12)
        ([False, False, True], 20.0)
        """
        budgets = np.asarray(kl, dtype=float).ravel()
        if budgets.size == 0:
            raise ValueError("kl is empty")
        if np.isnan(budgets).any() or (budgets < 0).any():
            raise ValueError("kl must be >= 0 (no NaN)")
        pols = [self.tilted(kl=float(d)) for d in budgets]
        return Frontier(
            kl=budgets,
            kl_used=np.array([p.kl for p in pols]),
            reward=np.array([p.reward for p in pols]),
            lam=np.array([p.lam for p in pols]),
            saturated=np.array([p.saturated for p in pols]),
        )

    # ------------------------------------------------- sampling / forward
    def _row_law(self, pol, t, states):
        """``log φ(· | y, t)`` for each ``y`` in ``states`` (rows), positions ``t = 1..m-1``."""
        if pol.saturated:
            _, _, Vs, Gs, val, tol = self._max_path()
            tl = self._tilt(0.0)
            lp = tl.log_rows(states) + tl.s[states][:, None]  # log P rows
            vv = (val[None, :] if self._ch.per_token else self._row_vals(val, states)) + Vs[t][None, :]
            with np.errstate(invalid="ignore"):
                ok = vv >= Vs[t - 1][states][:, None] - tol
            x = np.where(ok, lp + Gs[t][None, :], -np.inf)
        else:
            sw = self._sweep(pol.lam, store=True)
            tl = self._tilt(pol.lam)
            x = tl.log_rows(states) + sw.ell[t][None, :]
        return x - logsumexp(x, axis=1, keepdims=True)

    def _row_vals(self, val, states):
        ch = self._ch
        if ch.kind == "dense":
            return val[states]
        return sp.csr_matrix((val, ch.P.indices, ch.P.indptr), shape=(ch.K, ch.K))[states].toarray()

    def _first_law(self, pol):
        if pol.saturated:
            _, _, Vs, Gs, val, tol = self._max_path()
            x = (val + Vs[0]) if self._ch.per_token else Vs[0]
            x = np.where(self.initial > 0, x, -np.inf)
            on = x >= x.max() - tol
            lp = np.where(on, self._log_mu + Gs[0], -np.inf)
            return lp - logsumexp(lp)
        return self._sweep(pol.lam, store=True).logphi1

    def _sample(self, pol, n, rng):
        m, K = self.length, self._ch.K
        out = np.empty((n, m), dtype=np.int64)
        if n == 0:
            return out
        p1 = np.exp(self._first_law(pol))
        out[:, 0] = rng.choice(K, size=n, p=p1 / p1.sum())
        for t in range(1, m):
            cur = out[:, t - 1]
            states, inv = np.unique(cur, return_inverse=True)
            law = np.exp(self._row_law(pol, t, states))
            cdf = np.cumsum(law, axis=1)
            u = rng.random(n) * cdf[inv, -1]
            out[:, t] = np.minimum(
                np.array([np.searchsorted(cdf[i], x, side="right") for i, x in zip(inv, u)]), K - 1
            )
        return out

    def _logprob(self, pol, y):
        out = self._first_law(pol)[y[:, 0]]
        for t in range(1, self.length):
            states, inv = np.unique(y[:, t - 1], return_inverse=True)
            out = out + self._row_law(pol, t, states)[inv, y[:, t]]
        return out

    def _position_rewards(self, pol):
        """Forward marginals ``π_t`` and the expected reward at each position.

        ``π_{t+1} = e^{ℓ_{t+1}} ⊙ T̂^T (π_t / E_t)`` by one transposed product per
        step (``E_t`` the row partition sums of the backward sweep), scaled by
        its maximum; rows whose partition sum underflowed, and the saturated
        policy, go through the exact per-row laws.
        """
        ch, m = self._ch, self.length
        pi = np.exp(self._first_law(pol))
        res = [float(pi @ ch.R)] if ch.per_token else []
        if pol.saturated:
            for t in range(1, m):
                states = np.flatnonzero(pi > 0)
                law = np.exp(self._row_law(pol, t, states))
                if not ch.per_token:
                    res.append(float(np.sum(pi[states, None] * law * self._rewards_rows(states))))
                pi = pi[states] @ law
                if ch.per_token:
                    res.append(float(pi @ ch.R))
            return np.array(res)
        sw = self._sweep(pol.lam, store=True)
        tl = self._tilt(pol.lam)
        for t in range(1, m):
            logE = sw.logE[t - 1] - tl.s  # log Σ_{y'} T̂(y, y') e^{ℓ_{t+1}(y')}
            with np.errstate(divide="ignore"):
                lu = np.log(pi) - logE
            bad = np.flatnonzero((logE < np.log(_TINY)) & (pi > 0))
            lu[bad] = -np.inf
            M = float(lu.max())
            u = np.exp(lu - M)
            w = np.exp(sw.ell[t])
            nxt = w * tl.rmm(u[:, None])[:, 0] * np.exp(M)
            if not ch.per_token:
                # E r(y_t, y_{t+1}) = c + Σ_y u(y) [(T̂ ⊙ (R - c)) e^{ℓ_{t+1}}](y)
                r_next = float(u @ np.asarray(tl.MR @ w)) * np.exp(M) + tl.c * float(pi[lu > -np.inf].sum())
            if bad.size:
                law = np.exp(self._row_law(pol, t, bad))
                nxt = nxt + pi[bad] @ law
                if not ch.per_token:
                    r_next += float(np.sum(pi[bad, None] * law * self._rewards_rows(bad)))
            if not ch.per_token:
                res.append(r_next)
            pi = nxt
            if ch.per_token:
                res.append(float(pi @ ch.R))
        return np.array(res)

    def _rewards_rows(self, states):
        ch = self._ch
        if ch.kind == "dense":
            return ch.R[states]
        return self._row_vals(ch.R, states)

    # ------------------------------------------------------ law of S_m
    def _dp_block(self, theta, trunc=_TRUNC):
        """Tilted DP over (state, level) at ``θ``: ``(j0, log P_p(T = j), score, info)``.

        Path weights ``p(path) e^{θ h (T - nL)}``; cells are pruned when their
        tilted path mass ``α_t(y, j) e^{ℓ_t(y)}`` falls below ``e^{-trunc}``
        of the step's peak.  Returns the untilted log-law over levels
        ``j0 .. j0 + len - 1`` and each level's score ``log P_θ(T = j) -
        max``.
        """
        fit = self._lattice()
        ch, m = self._ch, self.length
        K = ch.K
        L = int(fit.ks.max())
        h = fit.h
        sw = self._sweep(theta, store=True)
        tl = self._tilt(theta)
        ell = sw.ell
        # shifted lattice index of every reward value; c = a + h L (θ >= 0) or a (θ < 0)
        ks = fit.ks
        shift = L if theta >= 0 else 0
        if ch.per_token:
            groups = [(int(k), np.flatnonzero(ks == k)) for k in np.unique(ks)]
            alpha = np.zeros((K, L + 1))
            with np.errstate(divide="ignore"):
                lw = self._log_mu + theta * h * (ks - shift)
            # the first token: α_1(y, k(y)) = μ(y) e^{θh(k(y) - shift)}
            mx = lw.max()
            alpha[np.arange(K), ks] = np.exp(lw - mx)
            log_scale = float(mx)
            j0 = 0
        else:
            mats = {}
            if ch.kind == "dense":
                kk = np.zeros((K, K), dtype=np.int64)
                kk[ch.P > 0] = ks
                for k in np.unique(ks):
                    mats[int(k)] = np.where((ch.P > 0) & (kk == k), tl.M, 0.0)
            else:
                for k in np.unique(ks):
                    sel = np.where(ks == k, tl.M.data, 0.0)
                    # copy: eliminate_zeros works in place on the (shared) index arrays
                    Mk = sp.csr_matrix((sel, ch.P.indices, ch.P.indptr), shape=(K, K), copy=True)
                    Mk.eliminate_zeros()
                    mats[int(k)] = Mk
            alpha = np.exp(self._log_mu - self._log_mu.max())[:, None]
            log_scale = float(self._log_mu.max())
            j0 = 0
        for t in range(1, m):
            # fold the row scale e^{s(y)} into the mass before moving
            with np.errstate(divide="ignore"):
                occ = alpha.max(axis=1)
                lo = np.where(occ > 0, np.log(np.where(occ > 0, occ, 1.0)) + tl.s, -np.inf)
            smax = float(lo.max())
            a2 = alpha * np.exp(np.where(np.isfinite(lo), tl.s - smax, -np.inf))[:, None]
            W = a2.shape[1]
            if ch.per_token:
                N = tl.rmm(a2)
                new = np.zeros((K, W + L))
                for k, idx in groups:
                    new[idx, k : k + W] = N[idx]
            else:
                new = np.zeros((K, W + L))
                for k, Mk in mats.items():
                    new[:, k : k + W] += np.asarray(Mk.T @ a2)
            # the next token's tilt e^{θ h (k - shift)} is inside T̂ (up to the row scale)
            peak = float(new.max())
            if not peak > 0:
                raise ConvergenceError("lattice DP lost all mass (underflow)")
            new /= peak
            log_scale += smax + np.log(peak)
            # prune levels by tilted path mass α e^{ℓ_t}
            imp = (new * np.exp(ell[t])[:, None]).max(axis=0)
            keep = np.flatnonzero(imp >= np.exp(-trunc) * imp.max())
            a, b = int(keep[0]), int(keep[-1])
            alpha = new[:, a : b + 1]
            j0 += a
        f = alpha.sum(axis=0)
        with np.errstate(divide="ignore"):
            lf = np.log(f)
        j = j0 + np.arange(f.size)
        n = self.n_terms
        # untilt: P_p(T = j) = [tilted unnormalised mass] e^{-θ h (j - shift n)}
        logp = lf + log_scale - theta * h * (j - shift * n)
        score = lf - lf.max()
        info = {
            "theta": float(theta),
            "log_total_tilted": float(logsumexp(lf) + log_scale),
            "log_z_sweep": float(sw.log_z),
            "width": int(f.size),
        }
        return j0, logp, score, info

    def reward_law(self, *, lam=0.0) -> RewardLaw:
        """Exact law of ``S_m`` (lattice rewards) by the state-augmented DP under the tilt ``lam``.

        Values are exact to rounding wherever they lie within ``e^{-130}`` of
        the tilted law's peak (``lam = 0``: the bulk of ``p``); levels
        further out are not returned.  The DP costs ``O(m · nnz · W)`` with
        ``W`` the number of levels kept.

        Examples
        --------
        >>> mk = Markov([1.0, 0.0], [[0.5, 0.5], [0.5, 0.5]], [0.0, 1.0], length=3)
        >>> law = mk.reward_law()
        >>> law.values.tolist(), np.exp(law.logpmf).round(12).tolist()
        ([0.0, 1.0, 2.0], [0.25, 0.5, 0.25])
        """
        fit = self._lattice()
        if fit is None:
            raise ValueError("reward_law needs lattice rewards (none detected; pass lattice=h)")
        t0 = time.perf_counter()
        j0, logp, score, info = self._dp_block(_real(lam, "lam"), trunc=700.0)
        on = np.isfinite(logp)
        j = (j0 + np.arange(logp.size))[on]
        lp = logp[on]
        lp = lp - logsumexp(lp) if lam == 0 else lp
        values = self.n_terms * fit.a + fit.h * j
        logsf = tails(lp, True)[0]
        info["seconds"] = time.perf_counter() - t0
        return RewardLaw(
            self.length,
            values,
            lp,
            logsf,
            True,
            "markov-dp",
            (float(fit.a), float(fit.h)),
            64 * self.length * np.finfo(float).eps,
            info,
        )

    # --------------------------------------------------------- best of N
    def _theta_for_level(self, s_target):
        """Tilt whose finite-``m`` tilted mean of ``S_m`` is ``s_target`` (reward units)."""

        def mean_var(th):
            mv = np.empty(th.size)
            vv = np.empty(th.size)
            for i, x in enumerate(th):
                sw = self._sweep(float(x))
                mv[i], vv[i] = sw.mean, sw.var
            return mv, vv

        return float(
            solve_mean(
                lambda t, _rows: mean_var(t),
                np.array([float(s_target)]),
                tol=1e-10,
                max_iter=100,
                strict=False,
            )[0]
        )

    def best_of_n(self, n=None, *, log_n=None) -> MarkovBoN:
        """Exact best-of-N over whole sequences (ties broken uniformly), lattice rewards.

        Parameters
        ----------
        n : float, optional
            ``N >= 1`` (real ``N`` allowed).
        log_n : float, optional
            ``log N`` (``m δ`` in the equivalence regime).

        Returns
        -------
        MarkovBoN

        Raises
        ------
        ValueError
            For non-lattice rewards: there is no exact engine for them (the
            DP runs over lattice levels); pass ``lattice=h`` to the
            constructor if the rewards lie on a grid.

        Notes
        -----
        BoN depends on the sequence only through ``S_m`` (theory §7), so with
        the exact law ``q`` of ``S_m``: ``d = F^N - F^-^N``, ``E S = Σ s d``,
        ``KL(π_N || p) = Σ d log(d/q)`` and ``KL(π_N || φ_Δ) = Σ d log(d /
        (q e^{λ s} / Z_m(λ)))`` with ``φ_Δ`` the exact finite-``m`` optimum
        at ``Δ = log N``.  The law is computed where BoN lives by tilted
        dynamic programs over (state, reward level), each exact within
        ``e^{-75}`` of its peak, stitched and untilted exactly.
        """
        ln = log_n_from(n, log_n, finite=True)
        m = self.length
        n_val = float(np.exp(ln)) if ln < 709 else np.inf
        kl_bound = float(log_bon_kl_bound(ln))
        if ln == 0 or self._ch.r_min == self._ch.r_max or self.min_reward == self.max_reward:
            r = self.mean_reward
            return MarkovBoN(
                m,
                n_val,
                ln,
                ln / m,
                r,
                0.0,
                0.0,
                0.0,
                r,
                kl_bound,
                True,
                "markov-dp",
                details={"kl_to_optimal_identity": 0.0},
            )
        fit = self._lattice()
        if fit is None:
            raise ValueError(
                "Markov.best_of_n needs lattice rewards: the exact law of S_m comes "
                "from a DP over (state, reward level); none was detected "
                "(pass lattice=h if the rewards lie on a grid)"
            )
        t0 = time.perf_counter()
        saturated = ln >= self.kl_max
        if saturated:
            lam, opt_reward = np.inf, self.max_reward
            theta0 = self._theta_for_level(self.max_reward - 2.0 * fit.h)
        else:
            opt = self.tilted(kl=ln)
            lam, opt_reward = opt.lam, opt.reward
            theta0 = lam
        w = self._bon_window(theta0, ln)
        c = self._ch.r_max
        n_t = self.n_terms
        if np.isfinite(lam):
            sw = self._sweep(lam)
            lam_u, m_cgf = lam, sw.log_z  # log E e^{λ(S - n c)}
        else:
            lam_u, m_cgf = np.inf, np.nan
        b = bon_on_window(w, ln, lam_u, m_cgf)
        d = np.exp(b.logd)
        # BoN-weighted relative error of the law on the window, plus the mass outside it
        err = float(d @ w.info.pop("rel")) / max(float(d.sum()), 1e-300)
        outside = np.exp(ln + max(w.log_above, w.log_missing))
        details = {
            "kl_to_optimal_identity": b.kl_to_optimal_identity,
            "mass": b.mass,
            "window_size": int(w.su.size),
            "log_above": w.log_above,
            "seconds": time.perf_counter() - t0,
            "shift": c * n_t,
            **w.info,
        }
        return MarkovBoN(
            m,
            n_val,
            ln,
            ln / m,
            b.reward,
            b.kl,
            b.kl_to_optimal,
            lam,
            opt_reward,
            kl_bound,
            True,
            "markov-dp",
            err + float(outside),
            details=details,
        )

    def _bon_window(self, theta0, log_n, max_blocks=40):
        """Stitch tilted DP blocks until the window holds the BoN law (see :meth:`best_of_n`)."""
        fit = self._lattice()
        n = self.n_terms
        top = int(round((self.max_reward - n * fit.a) / fit.h))
        bottom = int(round((self.min_reward - n * fit.a) / fit.h))
        blocks = []

        def add(theta):
            j0, lp, sc, info = self._dp_block(theta)
            blocks.append((j0, lp, sc, info))

        add(theta0)
        hw = np.sqrt(2 * _TRUST)  # trusted half-width of a block, in its sds
        for _ in range(max_blocks):
            A, B, wlp, sc = self._stitch(blocks)
            logsf, logcdf = tails(wlp, A <= bottom)
            log_above = self._log_tail(blocks, B, upper=True)
            log_below = self._log_tail(blocks, A, upper=False)
            ok_hi = B >= top or log_n + log_above <= LOG_OUTSIDE
            ok_lo = A <= bottom or log_n + logsf[0] >= LOG_LOW_ENOUGH or log_below <= LOG_OUTSIDE
            if ok_hi and ok_lo:
                break
            thetas = [b[3]["theta"] for b in blocks]
            if not ok_hi:
                sd = np.sqrt(max(self._sweep(max(thetas)).var, 1e-300))
                target = min(n * fit.a + fit.h * B + 0.8 * hw * sd, self.max_reward - 0.5 * fit.h)
                add(self._theta_for_level(target))
            if not ok_lo:
                if min(thetas) > 0:  # the bulk of p bounds P(S < A) from below
                    add(0.0)
                else:
                    sd = np.sqrt(max(self._sweep(min(thetas)).var, 1e-300))
                    target = max(n * fit.a + fit.h * A - 0.8 * hw * sd, self.min_reward + 0.5 * fit.h)
                    add(self._theta_for_level(target))
        else:  # pragma: no cover - a few blocks always suffice
            raise ConvergenceError("Markov BoN window did not close", partial=blocks)
        j = np.arange(A, B + 1)
        vals = n * fit.a + fit.h * j
        shift = n * self._ch.r_max
        # relative error of each level: pruned tilted mass (at most K W m e^{-TRUNC}) against
        # the level's own tilted mass, plus rounding along m steps
        width = max(b[3]["width"] for b in blocks)
        log_pruned = np.log(10.0 * self._ch.K * width * self.length) - _TRUNC
        rel = np.exp(np.minimum(log_pruned - sc, 0.0)) + 64 * self.length * np.finfo(float).eps
        return WindowLaw(
            su=vals - shift,
            values=vals,
            logpmf=wlp,
            logsf=logsf,
            logcdf=logcdf,
            complete_low=A <= bottom,
            complete_high=B >= top,
            method="markov-dp",
            exact=True,
            log_above=log_above,
            log_q_outside=float(np.logaddexp(log_above, log_below)),
            rel_error=64 * self.length * np.finfo(float).eps,
            info={
                "tilts": len(blocks),
                "thetas": [b[3]["theta"] for b in blocks],
                "window": (int(A), int(B)),
                "dp_width": [b[3]["width"] for b in blocks],
                "rel": rel,
            },
        )

    @staticmethod
    def _stitch(blocks):
        """Window ``[A, B]``: the connected union of the blocks' trusted spans around block 0's.

        Inside a block's trusted span a level with no mass is structurally
        impossible (the DP computed every contribution); each level takes
        the value of the block where it scores highest (closest to that
        block's peak).
        """
        spans = []
        for j0, _, sc, _ in blocks:
            idx = np.flatnonzero(sc >= -_TRUST)
            spans.append((j0 + int(idx[0]), j0 + int(idx[-1])))
        A, B = spans[0]
        grew = True
        while grew:
            grew = False
            for a, b in spans:
                if a <= B + 1 and b >= A - 1 and (a < A or b > B):
                    A, B, grew = min(A, a), max(B, b), True
        lp = np.full(B - A + 1, -np.inf)
        sc = np.full(B - A + 1, -np.inf)
        for j0, blp, bsc, _ in blocks:
            lo, hi = max(A, j0), min(B, j0 + blp.size - 1)
            if lo > hi:
                continue
            src = slice(lo - j0, hi - j0 + 1)
            dst = slice(lo - A, hi - A + 1)
            better = bsc[src] > sc[dst]
            lp[dst] = np.where(better, blp[src], lp[dst])
            sc[dst] = np.where(better, bsc[src], sc[dst])
        return A, B, lp, sc

    def _log_tail(self, blocks, j, upper):
        """Bound on ``log P_p(T > j)`` (``upper``) or ``log P_p(T < j)`` from the blocks' tilted tails.

        For a block at ``θ`` (``θ >= 0`` above, ``θ <= 0`` below) the untilting
        factor is monotone, so ``P_p(T > j) <= P_p(T = j) / P_θ(T = j) ×
        [P_θ(T > j) + pruned]``, all in logs.
        """
        best = 0.0
        for j0, lp, sc, info in blocks:
            th = info["theta"]
            if (upper and th < 0) or (not upper and th > 0):
                continue
            i = j - j0
            if not 0 <= i < lp.size or not np.isfinite(lp[i]):
                continue
            tail = sc[i + 1 :] if upper else sc[:i]
            lt = float(
                np.logaddexp(
                    logsumexp(tail) if tail.size else -np.inf,
                    -_TRUNC + np.log(10.0 * self._ch.K * self.length * max(lp.size, 1)),
                )
            )
            lt -= float(logsumexp(sc))
            best = min(best, lp[i] - (sc[i] - float(logsumexp(sc))) + lt)
        return best

    # ----------------------------------------------------- Perron root
    def _dense_rewards(self):
        """``r(y')`` broadcast or ``r(y, y')`` as a dense (K, K) array (0 off the support)."""
        ch = self._ch
        if ch.per_token:
            return np.broadcast_to(ch.R, (ch.K, ch.K))
        if ch.kind == "dense":
            return np.where(ch.P > 0, ch.R, 0.0)
        return sp.csr_matrix((ch.R, ch.P.indices, ch.P.indptr), shape=(ch.K, ch.K)).toarray()

    def _dense_p_theta(self, theta, c):
        P = self._ch.dense_matrix()
        return np.where(P > 0, P * np.exp(theta * (self._dense_rewards() - c)), 0.0)

    def _op_p_theta(self, theta, c):
        """``x -> P_θ x`` and ``x -> P_θ^T x`` (shifted by ``c``) as closures over sparse parts."""
        ch = self._ch
        P = ch.P
        if ch.per_token:
            e = np.exp(theta * (ch.R - c))
            M = P.multiply(e[None, :]).tocsr()
            if ch.kind == "backoff":
                be = ch.b * e
                return (lambda x: M @ x + ch.a * (be @ x)), (lambda x: M.T @ x + be * (ch.a @ x)), M
            return (lambda x: M @ x), (lambda x: M.T @ x), M
        M = sp.csr_matrix((P.data * np.exp(theta * (ch.R - c)), P.indices, P.indptr), shape=P.shape)
        return (lambda x: M @ x), (lambda x: M.T @ x), M

    def perron(self, t) -> PerronRoot:
        """``Λ(t) = log ρ(P_t)`` with ``Λ'(t)``, ``Λ''(t)`` and the Perron vectors.

        ``P_t(y, y') = P(y, y') e^{t r(y')}`` (or ``e^{t r(y, y')}``); ``Λ`` is
        the scaled cumulant generating function (:meth:`scgf`).
        Dense eigendecomposition up to 1500 states, ARPACK (``eigs``,
        largest real part) beyond.  ``Λ'(t) = u^T P'_t v / (ρ u^T v)``;
        ``Λ''(t)`` is the asymptotic variance of the reward under the Doob
        transform, ``E_π[f̄²] + 2 E_π[f̄(Y_0, Y_1) g(Y_1)]`` with ``g`` the
        solution of the Poisson equation ``(I - Q + 1π^T) g = Q f - π f``.
        For a reducible chain the largest class wins (``u`` or ``v`` vanish
        elsewhere); for a periodic chain ``ρ`` is still the largest real
        eigenvalue.

        Examples
        --------
        >>> mk = Markov([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [0.0, 1.0], length=1)
        >>> pr = mk.perron(1.0)                   # memoryless: log E e^{t r} = log((1 + e)/2)
        >>> round(pr.log_rho, 12), round(pr.derivative, 12)
        (0.620114506958, 0.731058578630)
        """
        theta = _real(t, "t")
        if not np.isfinite(theta):
            raise ValueError("t must be finite")
        ch = self._ch
        c = ch.r_max if theta >= 0 else ch.r_min
        K = ch.K
        if K <= _DENSE_EIG:
            Pt = self._dense_p_theta(theta, c)
            w, V = np.linalg.eig(Pt)
            i = int(np.argmax(w.real))
            rho = float(w[i].real)
            v = np.abs(V[:, i].real)
            wl, U = np.linalg.eig(Pt.T)
            u = np.abs(U[:, int(np.argmax(wl.real))].real)
            matvec = lambda x: Pt @ x  # noqa: E731
            rmatvec = lambda x: Pt.T @ x  # noqa: E731
            Msp = None
        else:
            from scipy.sparse.linalg import LinearOperator, eigs

            matvec, rmatvec, Msp = self._op_p_theta(theta, c)
            op = LinearOperator((K, K), matvec=matvec, dtype=float)
            opT = LinearOperator((K, K), matvec=rmatvec, dtype=float)
            v0 = np.full(K, 1.0)
            w, V = eigs(op, k=1, which="LR", v0=v0, tol=0)
            rho = float(w[0].real)
            v = np.abs(V[:, 0].real)
            _, U = eigs(opT, k=1, which="LR", v0=v0, tol=0)
            u = np.abs(U[:, 0].real)
        v = v / v.max()
        u = u / (u @ v)
        if not rho > 0:
            raise ConvergenceError("Perron root is not positive", partial=rho)
        log_rho = float(np.log(rho)) + theta * c
        pi = u * v
        pi = pi / pi.sum()
        deriv, var = self._perron_derivs(theta, c, rho, u, v, pi, matvec, rmatvec)
        return PerronRoot(
            t=theta, log_rho=log_rho, derivative=deriv, variance=var, right=v, left=u, stationary=pi
        )

    def _doob_edges(self, theta, c, rho, v):
        """Per-transition Doob chain on the support: ``(rows, cols, Q(y, y'), R(y, y'))``."""
        ch = self._ch
        if ch.kind == "dense":
            rows, cols = np.nonzero(ch.P)
            P, R = ch.P[rows, cols], ch.R[rows, cols]
        else:
            rows, cols, P, R = _row_ids(ch.P.indptr), ch.P.indices, ch.P.data, ch.R
        vs = np.where(v > 0, v, 1.0)
        return rows, cols, P * np.exp(theta * (R - c)) * v[cols] / (rho * vs)[rows], R

    def _perron_derivs(self, theta, c, rho, u, v, pi, matvec, rmatvec):
        ch = self._ch
        K = ch.K
        vs = np.where(v > 0, v, 1.0)

        def qmul(x):  # Q x
            return np.where(v > 0, matvec(v * x) / (rho * vs), 0.0)

        if ch.per_token:
            f = ch.R
            mu = float(pi @ f)
            fbar = f - mu
            rhs = fbar
            base = float(pi @ (fbar * fbar))
        else:
            rows, cols, q, R = self._doob_edges(theta, c, rho, v)
            w = pi[rows] * q  # stationary edge law
            mu = float(w @ R)
            Fq = np.bincount(rows, weights=q * R, minlength=K)  # F(y) = Σ_{y'} Q(y,y') R(y,y')
            rhs = np.where(v > 0, Fq - mu, 0.0)
            base = float(w @ (R - mu) ** 2)
        # Poisson equation (I - Q + 1 π^T) g = rhs
        if K <= _DENSE_EIG:
            Qd = self._dense_p_theta(theta, c) * v[None, :] / (rho * vs)[:, None]
            A = np.eye(K) - Qd + np.outer(np.ones(K), pi)
            g = np.linalg.solve(A, rhs)
        else:
            from scipy.sparse.linalg import LinearOperator, gmres

            op = LinearOperator((K, K), matvec=lambda x: x - qmul(x) + pi @ x, dtype=float)
            g, info = gmres(op, rhs, rtol=1e-13, atol=0.0, restart=60, maxiter=2000)
            if info != 0:
                raise ConvergenceError("Poisson equation (GMRES) did not converge", partial=g)
        if ch.per_token:
            # S = Σ f(Y_t): σ² = 2 <f̄, g>_π - Var_π f with (I - Q) g = f̄
            var = 2.0 * float(pi @ (fbar * g)) - base
        else:
            var = base + 2.0 * float(w @ ((R - mu) * g[cols]))
        return mu, max(var, 0.0)

    def scgf(self, t):
        """``Λ(t) = log ρ(P_t) = lim (1/m) log E_p e^{t S_m}`` (irreducible chains), per step.

        The argument is named as in :func:`klfrontier.scgf` (``t``, an array allowed).
        """
        th = np.atleast_1d(np.asarray(t, dtype=float))
        out = np.array([self.perron(float(x)).log_rho for x in th.ravel()]).reshape(th.shape)
        return float_or_array(out.reshape(np.shape(t)))

    def _kl_rate(self, lam):
        pr = self.perron(lam)
        return lam * pr.derivative - pr.log_rho, pr

    def doob(self, *, lam=None, kl_rate=None) -> DoobChain:
        """The optimal stationary tilted chain (Doob transform) at ``lam`` or at KL rate ``kl_rate``.

        ``kl_rate = δ`` solves ``λ Λ'(λ) - Λ(λ) = δ``.  Its per-step reward
        ``Λ'(λ)`` and KL rate are the limits of the finite-``m`` optimum's
        per-token reward and KL (irreducible aperiodic chains).
        """
        one_of(lam=lam, kl_rate=kl_rate)
        if kl_rate is not None:
            d = _real(kl_rate, "kl_rate")
            if not d > 0:
                raise ValueError("kl_rate must be > 0")
            lam_v = self._lam_for_rate(d)
        else:
            lam_v = _real(lam, "lam")
            if not (np.isfinite(lam_v) and lam_v >= 0):
                raise ValueError("lam must be finite and >= 0")
        klr, pr = self._kl_rate(lam_v)
        direct = self._kl_rate_direct(pr)
        return DoobChain(
            lam=lam_v,
            reward_rate=pr.derivative,
            kl_rate=max(klr, 0.0),
            kl_rate_direct=direct,
            variance_rate=pr.variance,
            perron=pr,
            _markov=self,
        )

    def _kl_rate_direct(self, pr):
        """``Σ π(y) Σ Q(y,y') log(Q/P)`` with ``log(Q/P) = t r + log v(y') - log v(y) - log ρ`` per edge."""
        ch = self._ch
        theta = pr.t
        v = pr.right
        pi = pr.stationary
        c = ch.r_max if theta >= 0 else ch.r_min
        log_rho_c = pr.log_rho - theta * c
        with np.errstate(divide="ignore", invalid="ignore"):
            lv = np.log(v)
        if ch.kind == "dense" or ch.K <= _DENSE_EIG:
            Pd = ch.dense_matrix()
            Rd = self._dense_rewards()
            on = (Pd > 0) & (v[None, :] > 0) & (v[:, None] > 0)
            lv0 = np.where(v > 0, lv, 0.0)
            x = np.where(on, theta * (Rd - c) + lv0[None, :] - lv0[:, None] - log_rho_c, 0.0)
            Q = np.where(on, Pd * np.exp(x), 0.0)
            return float(np.sum(pi[:, None] * Q * x))
        # large sparse / backoff: separable form (Q is stochastic on the support of v)
        matvec, _, _ = self._op_p_theta(theta, c)
        rt = (ch.R - c) if ch.per_token else None
        if ch.per_token:
            vs = np.where(v > 0, v, 1.0)
            q_rt = matvec(v * rt) / (np.exp(log_rho_c) * vs)
            q_lv = matvec(v * np.where(v > 0, lv, 0.0)) / (np.exp(log_rho_c) * vs)
            on = v > 0
            return float(np.sum(pi[on] * (theta * q_rt[on] + q_lv[on] - lv[on] - log_rho_c)))
        raise ValueError("kl_rate_direct for per-transition rewards needs K <= 1500")  # pragma: no cover

    def _doob_matrix(self, pr):
        ch = self._ch
        theta = pr.t
        c = ch.r_max if theta >= 0 else ch.r_min
        rho = np.exp(pr.log_rho - theta * c)
        v = pr.right
        vs = np.where(v > 0, v, np.inf)
        if ch.kind == "dense" or ch.K <= _DENSE_EIG:
            return self._dense_p_theta(theta, c) * v[None, :] / (rho * vs)[:, None]
        _, _, M = self._op_p_theta(theta, c)
        Sq = sp.csr_matrix(M.multiply(v[None, :]).multiply(1.0 / (rho * vs)[:, None]))
        if ch.kind == "backoff":
            be = ch.b * np.exp(theta * (ch.R - c)) * v
            tot = be.sum()
            return BackoffTransition(Sq, ch.a * tot / (rho * vs), be / tot)
        return Sq

    def _lam_for_rate(self, delta):
        """``λ`` with ``λ Λ'(λ) - Λ(λ) = δ`` (Perron root), in ``log λ`` coordinates."""
        pr0 = self.perron(0.0)
        lam0 = np.sqrt(2.0 * delta / max(pr0.variance, 1e-300))
        spread = max(self._ch.r_max - self._ch.r_min, 1e-300)
        sat, _ = self._kl_rate(min(700.0 / spread, 1e6))
        if not delta < sat:
            raise ValueError(
                f"delta must lie below the saturation KL rate (about {sat:.6g} nats "
                f"per step for this chain), got {delta}"
            )

        def mean_var(s):
            mm, vv = np.empty(s.size), np.empty(s.size)
            for i, si in enumerate(s):
                lam = lam0 * np.exp(min(si, 50.0))
                d, pr = self._kl_rate(lam)
                with np.errstate(divide="ignore", invalid="ignore"):
                    mm[i] = np.log(d) if d > 0 else -np.inf
                    vv[i] = lam * lam * pr.variance / d if d > 0 else np.nan
            return mm, vv

        s = float(
            solve_mean(
                lambda t, _rows: mean_var(t), np.array([np.log(delta)]), tol=1e-13, max_iter=200, strict=False
            )[0]
        )
        return lam0 * np.exp(s)

    def rate_function(self, x):
        """Gärtner–Ellis rate ``I(x) = sup_t [t x - Λ(t)]`` of ``S_m / n_terms`` under ``p``.

        ``t(x)`` solves ``Λ'(t) = x``; ``+inf`` outside the range of ``Λ'``
        (the extreme cycle means).  Valid as the large-deviation rate for
        irreducible chains (where ``Λ`` is differentiable); for a reducible
        chain it is the convex hull of the classes' rates.

        Examples
        --------
        >>> mk = Markov([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [0.0, 1.0], length=1)
        >>> round(mk.rate_function(0.75), 12)          # KL(Bern(3/4) || Bern(1/2))
        0.130812035941
        """
        xa = np.atleast_1d(np.asarray(x, dtype=float))
        if np.isnan(xa).any():
            raise ValueError("x contains NaN")
        spread = max(self._ch.r_max - self._ch.r_min, 1e-300)
        big = 700.0 / spread
        lo_x = self.perron(-big).derivative
        hi_x = self.perron(big).derivative
        out = np.full(xa.size, np.inf)
        for i, xi in enumerate(xa.ravel()):
            if not lo_x < xi < hi_x:
                continue

            def mean_var(th):
                mm, vv = np.empty(th.size), np.empty(th.size)
                for k, t in enumerate(th):
                    pr = self.perron(float(np.clip(t, -big, big)))
                    mm[k], vv[k] = pr.derivative, pr.variance
                return mm, vv

            th = float(
                solve_mean(
                    lambda t, _rows: mean_var(t), np.array([xi]), tol=1e-14, max_iter=200, strict=False
                )[0]
            )
            out[i] = max(th * xi - self.perron(th).log_rho, 0.0)
        out = out.reshape(xa.shape)
        return float_or_array(out.reshape(np.shape(x)))

    # ------------------------------------------------------ structure
    def structure(self) -> dict:
        """Irreducibility and period of the transition graph.

        Returns ``{"irreducible", "n_classes", "period"}`` (strongly
        connected components; the period is the gcd of
        ``level(y) + 1 - level(y')`` over edges of the class containing
        state 0 reachable by BFS, for irreducible chains).
        """
        from math import gcd

        from scipy.sparse.csgraph import breadth_first_order, connected_components

        ch = self._ch
        if ch.kind == "dense":
            G = sp.csr_matrix(ch.P > 0)
        else:
            G = sp.csr_matrix((np.ones(ch.P.nnz), ch.P.indices, ch.P.indptr), shape=(ch.K, ch.K), copy=True)
            if ch.kind == "backoff":
                G = (G + sp.csr_matrix(np.outer(ch.a > 0, ch.b > 0))).tocsr()
        n_cls, _ = connected_components(G, directed=True, connection="strong")
        period = None
        if n_cls == 1:
            order, pred = breadth_first_order(G, 0, directed=True, return_predecessors=True)
            level = np.full(ch.K, -1)
            level[0] = 0
            for node in order[1:]:
                level[node] = level[pred[node]] + 1
            coo = G.tocoo()
            diffs = np.abs(level[coo.row] + 1 - level[coo.col])
            period = 0
            for d in np.unique(diffs):
                period = gcd(period, int(d))
        return {"irreducible": n_cls == 1, "n_classes": int(n_cls), "period": period}


# =========================================================== equivalence
@dataclass
class MarkovEquivalence(Equivalence):
    """The BoN–RL equivalence for a Markov reference (theory §8): Perron root, Doob chain, predictions.

    Same fields as :class:`~klfrontier.equivalence.Equivalence` (``lam``,
    ``x_star``, ``sigma2`` from ``Λ = log ρ(P_t)``), plus ``doob`` (the
    optimal stationary tilted chain) and ``structure``.

    Second-order predictions.  Sequence-level BoN depends on ``y^m`` only
    through ``S_m``, and the tilts of the law of ``S_m`` are the laws of
    ``S_m`` under the finite-``m`` optima; so the memoryless derivation
    (``docs/second_order.md``) applies verbatim with the finite-``m``
    quantities ``λ_m`` (``D_m(λ_m) = mδ``) and ``V_m = Var_{λ_m} S_m``:
    ``"leading"`` gives ``[½ log(2π λ_m² V_m) - γ]/(m λ_m)`` for the gap to
    the finite-``m`` optimum (lattice: the discretised-Gumbel form with the
    phase of ``E_{φ_Δ} S_m``), ``"averaged"`` the phase-averaged lattice
    form, and ``"asymptotic"`` the non-lattice form with the Perron
    quantities ``λ_δ``, ``m Λ''(λ_δ)``.
    """

    doob: DoobChain | None = field(default=None, repr=False)
    structure: dict = field(default_factory=dict)
    _markov: object = field(default=None, repr=False)

    def to_dict(self):
        """Public fields as a plain dict, with ``structure`` and the Doob chain's rates."""
        out = super().to_dict()
        out.update(
            structure=self.structure,
            doob={
                "reward_rate": self.doob.reward_rate,
                "kl_rate": self.doob.kl_rate,
                "variance_rate": self.doob.variance_rate,
            },
        )
        return out

    def _predict_m(self, m, form, mk=None):
        if form not in ("leading", "averaged", "asymptotic"):
            raise ValueError(
                f"form must be 'leading', 'averaged' or 'asymptotic' for a Markov reference, got {form!r}"
            )
        if form == "asymptotic":
            ell = 0.5 * np.log(2 * np.pi * m * self.lam**2 * self.sigma2)
            g = ell - np.euler_gamma
            return g / (m * self.lam), g - 1.0
        mk = self._markov.with_length(int(m)) if mk is None else mk
        opt = mk.tilted(kl=m * self.delta)
        lam, V = opt.lam, opt.reward_variance
        ell = 0.5 * np.log(2 * np.pi * lam * lam * V)
        if self.lattice is None:
            g = ell - np.euler_gamma
            return g / (m * lam), g - 1.0
        a, h = self.lattice
        beta = lam * h
        ell_lat = ell - np.log(beta / -np.expm1(-beta))
        if form == "averaged":
            g = ell - np.euler_gamma + np.log(np.sinh(beta / 2) / (beta / 2))
            f_avg = (np.arange(64) + 0.5) / 64
            ent = float(np.mean([discrete_gumbel(x, beta)[1] for x in f_avg]))
            return g / (m * lam), -ent + ell - np.log(beta)
        z = (opt.reward - mk.n_terms * a) / h - ell_lat / beta
        f = z - np.floor(z)
        mfloor, ent = discrete_gumbel(f, beta)
        return (ell_lat + beta * (f - mfloor)) / (m * lam), -ent + ell - np.log(beta)

    def _many(self, m, form, which):
        ma = np.atleast_1d(np.asarray(m, dtype=float))
        if not np.isfinite(ma).all() or (ma < 1).any() or (np.rint(ma) != ma).any():
            raise ValueError("length must be integers >= 1")
        out = np.array([self._predict_m(int(x), form)[which] for x in ma.ravel()]).reshape(ma.shape)
        return float_or_array(out.reshape(np.shape(m)))

    def gap_prediction(self, length, *, form="leading"):
        """Predicted per-token gap ``[E_{φ_Δ} S_m - E_{π_N} S_m]/m`` at ``N = e^{mδ}``, ``m = length``.

        See the class notes.
        """
        return self._many(length, form, 0)

    def kl_to_optimal_prediction(self, length, *, form="leading"):
        """Predicted total ``KL(π_N || φ_Δ)`` at ``N = e^{mδ}``, ``m = length`` (see class notes)."""
        return self._many(length, form, 1)


def markov_equivalence(mk: Markov, delta, *, lattice=None) -> MarkovEquivalence:
    """:func:`klfrontier.equivalence` for a :class:`Markov` reference.

    ``λ_δ`` solves ``λ Λ'(λ) - Λ(λ) = δ`` with ``Λ = log ρ(P_t)``;
    ``x*(δ) = Λ'(λ_δ)`` is the optimal stationary reward per step (the Doob
    chain's), ``σ² = Λ''(λ_δ)`` and ``I_0(x*) = δ`` is re-evaluated by the
    Legendre transform (a check).

    Examples
    --------
    >>> mk = Markov([0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]], [0.0, 1.0], length=10)
    >>> eq = markov_equivalence(mk, 0.1)
    >>> round(eq.I0_at_x_star, 10), eq.lattice
    (0.1, (0.0, 1.0))
    """
    d = _real(delta, "delta")
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"delta must be a positive finite number, got {delta!r}")
    if lattice is not None:
        mk = mk.with_length(mk.length)
        mk.lattice, mk._lat_done = lattice, False
    lam = mk._lam_for_rate(d)
    doob = mk.doob(lam=lam)
    x = doob.reward_rate
    i0 = float(mk.rate_function(x))
    lat = mk.lattice_span()
    return MarkovEquivalence(
        delta=d,
        lam=float(lam),
        x_star=x,
        frontier_reward=x,
        sigma2=doob.variance_rate,
        lattice=lat,
        I0_at_x_star=i0,
        _ref=None,
        _lam_u=np.nan,
        _var_u=np.nan,
        _dbot=np.nan,
        doob=doob,
        structure=mk.structure(),
        _markov=mk,
    )


@dataclass(eq=False)
class MarkovConvergenceTable(ConvergenceTable):
    """:class:`~klfrontier.sequences.ConvergenceTable` for a Markov reference.

    ``optimal_reward`` (table) is the stationary ``x*(δ)`` of the Doob
    chain; in each row ``optimal_reward`` is the exact finite-``m`` optimum
    per token at ``Δ = mδ`` and ``gap`` is measured against it.  Extra row
    keys: ``lam_m`` (the finite-``m`` λ) and ``stationary_reward``.
    """

    def to_dict(self) -> dict:
        """Columns as plain lists (JSON-ready), with ``lam_m`` and ``stationary_reward``."""
        out = super().to_dict()
        for c in ("lam_m", "stationary_reward"):
            out[c] = [r[c] for r in self.rows]
        return out


def markov_convergence(
    mk: Markov, delta, lengths=(10, 20, 50, 100, 200), *, predictions=True, form="leading"
) -> MarkovConvergenceTable:
    """Exact sequence-level BoN at ``N = e^{mδ}`` against the finite-``m`` optimum, for several ``m``.

    What :func:`klfrontier.convergence` calls for a :class:`Markov`
    reference; the rows have the memoryless table's columns (see
    :class:`MarkovConvergenceTable`).
    """
    d = _real(delta, "delta")
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"delta must be a positive finite number, got {delta!r}")
    ms = [int(x) for x in np.atleast_1d(lengths)]
    if not ms or any(x < 1 for x in ms):
        raise ValueError("lengths must be positive integers")
    eq = markov_equivalence(mk, d)
    table = MarkovConvergenceTable(
        delta=d, lam=eq.lam, optimal_reward=eq.x_star, lattice=eq.lattice, predictions=predictions
    )
    for m in ms:
        t0 = time.perf_counter()
        mk_m = mk.with_length(m)
        b = mk_m.best_of_n(log_n=m * d)
        secs = time.perf_counter() - t0
        if predictions:
            gp, kp = (float(v) for v in eq._predict_m(m, form, mk_m))
        else:
            gp = kp = np.nan
        gap = b.reward_gap_per_token
        table.rows.append(
            convergence_row(
                m,
                b,
                b.reward_per_token,
                b.optimal_reward / m,
                gap,
                gp,
                kp,
                secs,
                lam_m=b.lam,
                stationary_reward=eq.x_star,
            )
        )
    return table
