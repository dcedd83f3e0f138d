"""Exact best-of-N with ties, real N and astronomically large N (theory §3).

Draw N i.i.d. samples from ``p`` and return one with the highest reward, ties
broken uniformly.  With ``F(v) = P(r <= v)``, ``F^-(v) = P(r < v)`` and level
mass ``q(v)``, the reward level of the winner has law

    d(v) = F(v)^N - F^-(v)^N,     pi_N(y) = p(y) d(r(y)) / q(r(y)).

Everything runs in log space from ``log N``:
``log d_j = N log F_j + log(1 - e^{N c_j})`` with ``c_j = log(F^-_j / F_j)
= log(1 - q_j / F_j)`` and ``N x = -exp(log N + log(-x))`` for ``x <= 0``, so
``N = e^{10^6}`` is as easy as ``N = 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._bon_kernel import level_logd
from ._logspace import kl_terms, log1mexp, log_bon_kl_bound
from ._validate import float_or_array, log_n_from
from .policy import BestOfNPolicy
from .reference import Reference, check_reference
from .tilt import solve_lam_for_kl, solve_lam_for_reward

__all__ = [
    "best_of_n",
    "bon_curve",
    "BoNCurve",
    "bon_kl_bound",
    "bon_kl_from_eps",
    "bon_kl_beirami",
]

# Levels whose BoN mass ratio d_j/q_j <= N F_j^{N-1} is below e^-PRUNE add less
# than PRUNE e^-PRUNE (~5e-25) to KL and reward: bon_curve skips them.
_PRUNE = 60.0


# log N beyond this is N = inf for every engine here (the law is p(. | argmax) to the
# last bit long before); N = inf itself is accepted and computed at this cap, so that
# log N + log(-log F) never meets inf - inf.
_LOG_N_CAP = 1e300


def _capped(ln):
    return np.minimum(ln, _LOG_N_CAP)


def _times_n(log_n, x):
    """``N x`` for ``x <= 0`` as ``-exp(log N + log(-x))`` (no overflow of N)."""
    with np.errstate(divide="ignore", over="ignore"):  # N x = -inf is the right limit
        return -np.exp(log_n + np.log(-x))


def _bon_kl_terms(logq, lnl_f, lnl_c, lev, log_n):
    """Terms ``q_j h(t_j)`` of ``KL(pi_N||p)``, ``t_j = log(d_j/q_j)``, ``lev = log d``.

    For ``N < e`` the log-ratio is formed directly,
    ``t_j = (N-1) log F_j + log1p(e^{c_j} expm1((N-1) c_j) / expm1(c_j))`` with
    ``c_j = log(F^-_j/F_j)``: ``lev - log q`` rounds to ``eps |log q|`` absolute,
    which swamps ``t ~ N - 1`` (the KL came out 5e-6 relative off at N = 1 + 1e-10).
    """
    terms = kl_terms(lev, logq)
    if 0 < log_n < 1:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            nm1 = np.expm1(log_n)
            c = -np.exp(lnl_c)  # -inf at the bottom level
            t = nm1 * -np.exp(lnl_f) + np.log1p(np.exp(c) * np.expm1(nm1 * c) / np.expm1(c))
        small = np.abs(t) < 0.1
        terms = np.where(small, np.exp(logq) * kl_terms(np.where(small, t, 0.0), 0.0), terms)
    return terms


def bon_kl_bound(n=None, *, log_n=None):
    """The usual BoN KL formula ``log N - (N - 1)/N`` (an upper bound; theory §3).

    Examples
    --------
    >>> round(float(bon_kl_bound(4)), 12)
    0.636294361120
    >>> float(bon_kl_bound(log_n=1e6))
    999999.0
    """
    ln = log_n_from(n, log_n, allow_array=True)
    out = log_bon_kl_bound(ln)
    return float_or_array(out)


def best_of_n(ref: Reference, n=None, *, log_n=None) -> BestOfNPolicy:
    """Exact law of best-of-N with uniform tie-breaking.

    Parameters
    ----------
    ref : Reference
    n : float, optional
        Number of samples, real ``n >= 1``; ``inf`` is the limit ``p(. | argmax)``.
    log_n : float, optional
        ``log N`` instead of ``n`` (``log_n = 1e6`` and ``inf`` work).

    Returns
    -------
    BestOfNPolicy
        With ``n``, ``log_n``, ``kl_bound`` (``log N -
        (N-1)/N``), ``lam_same_kl`` and ``lam_same_reward`` (the inverse
        temperatures of the tilted policies with the same KL / the same reward:
        the BoN <-> RLHF dictionary; ``inf`` when BoN reaches ``r_max``).

    Notes
    -----
    ``KL(pi_N||p) = sum_v d(v) log(d(v)/q(v))`` and ``E r = sum_v v d(v)``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> b = best_of_n(ref, n=4)
    >>> b.level_probs.round(6).tolist()
    [0.0625, 0.3471, 0.5904]
    >>> round(b.reward, 6), round(b.kl, 6), round(b.kl_bound, 6)
    (1.5279, 0.559751, 0.636294)
    """
    check_reference(ref)
    ln = float(log_n_from(n, log_n))
    lnc = float(_capped(ln))
    tails = ref.bon_tail_logs
    lev = level_logd(ref.level_logq, *tails, lnc)
    kl = float(np.sum(_bon_kl_terms(ref.level_logq, *tails, lev, lnc)))
    reward = ref.to_reward(np.exp(lev) @ ref.level_u)
    lam_kl = float(solve_lam_for_kl(ref, kl)) if kl > 0 else 0.0
    if ref.is_constant or kl == 0:
        lam_rw = 0.0
    elif lev[-1] == 0.0:
        lam_rw = np.inf  # all mass on the top level (E_p r may round to r_max too)
    elif reward <= ref.mean_reward:
        lam_rw = 0.0  # N -> 1: the reward gain (~ N - 1) can round below E_p r
    else:
        lam_rw = float(solve_lam_for_reward(ref, min(reward, ref.r_max)))
    n_val = float(np.exp(ln)) if ln < 709 else np.inf
    return BestOfNPolicy(
        ref=ref,
        level_logprobs=lev,
        kl=kl,
        reward=reward,
        n=n_val,
        log_n=ln,
        kl_bound=float(log_bon_kl_bound(ln)),
        lam_same_kl=lam_kl,
        lam_same_reward=lam_rw,
    )


@dataclass
class BoNCurve:
    """Best-of-N measured at many N: arrays aligned with ``log_n``."""

    log_n: np.ndarray
    kl: np.ndarray
    reward: np.ndarray
    win_rate: np.ndarray
    kl_bound: np.ndarray

    @property
    def n(self):
        with np.errstate(over="ignore"):
            return np.exp(self.log_n)

    def to_dict(self):
        return {k: getattr(self, k).tolist() for k in ("log_n", "kl", "reward", "win_rate", "kl_bound")}


def bon_curve(ref: Reference, n=None, *, log_n=None) -> BoNCurve:
    """Exact BoN KL, reward and win rate at an array of N.

    The level CDF is computed once; for each N only the levels that can
    matter (``log N + (N-1) log F_j > -60``) are visited, so large N cost
    little.

    Notes
    -----
    For ``0.1 <= log N <= 80`` the sums run blocked over (N x levels) tiles
    that stay in cache (``_bon_sums_blocked``): ``d_j = F_j^N -
    F_{j-1}^N``, one exponential per (N, level), and ``KL = sum_j d_j
    log(d_j / q_j)`` with the logarithm in closed form, from one matrix product
    (pruned levels add ``d log(d/q) ~ 0``).  Rows whose KL sum would lose more
    than ~1e-13 to cancellation, N = 1, and other N (near 1, where the ``q
    h(t)`` form avoids cancellation, or huge) take the per-N log-space path.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> bon_curve(ref, n=[1, 4]).reward.round(6).tolist()
    [0.7, 1.5279]
    """
    check_reference(ref)
    ln_in = np.atleast_1d(log_n_from(n, log_n, allow_array=True)).astype(float).ravel()
    ln = _capped(ln_in)
    logq, u = ref.level_logq, ref.level_u
    logF, logFm, _ = ref.level_log_cdf
    kl = np.full(ln.size, np.nan)
    rw = np.full(ln.size, np.nan)
    win = np.full(ln.size, np.nan)
    win_w = None
    fast = np.flatnonzero((ln >= _FAST_LOG_N_MIN) & (ln <= _FAST_LOG_N_MAX))
    if fast.size:
        xf = ln[fast]
        # keep j with (N-1) (-log F_j) < PRUNE + log N; -log F is non-increasing
        j0f = np.searchsorted(logF, -(_PRUNE + xf) / np.expm1(xf), side="right")
        sums = _bon_sums_blocked(np.exp(xf), j0f, logq, logF, logFm, u)
        if sums is not None:
            # the KL sum's rounding error is ~ eps sums[3]: rows whose KL is not >>
            # that (N near 1, or one dominant level) take the exact path below.
            ok = sums[3] <= _MAX_CANCEL * sums[0]
            kl[fast[ok]], rw[fast[ok]], win[fast[ok]] = sums[:3, ok]
    one = ln == 0  # N = 1 is p, exactly (win rate 1/2)
    kl[one], rw[one], win[one] = 0.0, ref.mean_u, 0.5
    rest = np.flatnonzero(~(np.isfinite(kl) & np.isfinite(rw) & np.isfinite(win)))
    if rest.size:
        lnl_f, lnl_c = ref.bon_tail_logs
        log_neg_logF = lnl_f  # decreasing in j; -inf at the top
        j0 = np.zeros(ln.size, dtype=np.intp)
        pos = ln > 0
        # keep j with log N + (N-1) log F_j > -PRUNE  (N-1 = expm1(log N))
        log_nm1 = ln[pos] + np.log(-np.expm1(-ln[pos]))  # log(N - 1) without overflow
        thresh = np.log(_PRUNE + ln[pos]) - log_nm1  # prune where log(-log F_j) > thresh
        j0[pos] = np.searchsorted(-log_neg_logF, -thresh, side="left")
    if win_w is None and rest.size:
        win_w = np.exp(logFm) + 0.5 * np.exp(logq)
    for i in rest:
        assert win_w is not None  # set above whenever rest is non-empty
        x, j = ln[i], int(j0[i])
        sl = slice(j, None)
        lev = level_logd(logq[sl], lnl_f[sl], lnl_c[sl], x)
        d = np.exp(lev)
        # In the sum q h(t) form a level with d = 0 contributes q: add the pruned mass.
        kl[i] = np.sum(_bon_kl_terms(logq[sl], lnl_f[sl], lnl_c[sl], lev, x)) + (
            np.exp(logF[j - 1]) if j > 0 else 0.0
        )
        rw[i] = d @ u[sl]
        win[i] = d @ win_w[sl]
    return BoNCurve(
        log_n=ln_in,
        kl=kl,
        reward=ref.to_reward(rw),
        win_rate=win,
        kl_bound=np.asarray(log_bon_kl_bound(ln_in), dtype=float),
    )


# bon_curve's blocked path: log N range (below: cancellation in sum d log(d/q)
# would cost > 1e-14 relative; above: N^8 overflows and few levels are left),
# tile size in elements, the cancellation it accepts, the series' range
# (N C <= 0.1: truncation < 3e-19) and the levels per block.
_FAST_LOG_N_MIN = 0.1
_FAST_LOG_N_MAX = 80.0  # N^8 (the series' last column) stays finite
_LOG_HALF = -np.log(2.0)
_TILE = 1 << 15
_MAX_CANCEL = 1e3
_SERIES_Y = 0.1
_BLOCK_LEVELS = 4096


def _bon_sums_blocked(N, j0, logq, logF, logFm, u):
    """KL, reward (``u``) and win-rate (``w``) sums of BoN over levels ``j >= j0``, per N.

    With ``A = -log F``, ``C = -log(F^-/F)`` and ``B = log(C/q)``:
    ``d_j = G_j - G_{j-1}``, ``G = F^N = e^{-N A}`` (one exponential per
    (N, level)), and ``log(d_j/q_j) = -N A_j + log N + B_j + s(N C_j)``,
    ``s(y) = log((1 - e^{-y})/y) = -y/2 + y^2/24 - y^4/2880 + y^6/181440 -
    y^8/9676800 + O(y^10)`` for ``y <= 0.1``, so ``sum d log(d/q)`` comes out
    of one matrix product with the columns ``A, B, C, C^2, ..., C^8``.
    Levels with ``N C > 0.1`` in a block take ``log(1 - e^{-N C})`` directly.

    The difference loses nothing: ``G_{j-1} - G_j`` is exact where the two are
    within a factor 2 (Sterbenz), and the rounding of each ``G_j`` enters two
    consecutive ``d`` with opposite signs, so a sum ``sum_j d_j W_j`` is off by
    ``sum_j eps G_j (W_j - W_{j+1})``: small for the slowly varying columns
    here (the product form ``F^N (1 - e^{-N C})`` needed an ``expm1`` as well).

    Rows are sorted by ``j0`` so that the rows active on a block of levels are
    a prefix; a row may also cover a few of its pruned levels, which only adds
    exact (tiny) terms.  Work arrays are allocated once: a fresh (rows x
    levels) array per block costs more than the block.

    The per-level inputs (``C``, ``B``, ``w = F^- + q/2``) are formed block
    by block, for visited blocks only: no level-sized temporaries.

    Returns rows KL, reward, win rate and a bound on the KL's cancellation
    (``|terms| + 2``: its rounding error is ~ eps times that); ``None`` when a
    level mass underflows relative to its CDF (``C = 0``: use the per-N path).
    """
    # by j0, ties by N: the series cut-off of a block uses the last active row's N,
    # which must be the largest (unsorted log_n with equal j0 put N = e after N = 100,
    # whose series was then truncated far past N C = 0.1: KL off by 2.5e-8)
    order = np.lexsort((N, j0))
    j0s = j0[order]
    Ns = N[order][:, None]
    R, L = Ns.shape[0], logF.size
    rb = max(1, _TILE // _BLOCK_LEVELS)  # rows per tile

    def work(block_starts):
        # columns: u, w, 1, A, then (series levels only) B, C, C^2, C^4, C^6, C^8
        acc = np.zeros((R, 10))
        kl_direct = np.zeros(R)  # sum d log(d/q) over levels outside the series
        d_direct = np.zeros(R)
        buf_y = np.empty((rb, _BLOCK_LEVELS))
        buf_z = np.empty((rb, _BLOCK_LEVELS + 1))
        Wb = np.empty((10, _BLOCK_LEVELS))
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            for s in block_starts:
                e = min(L, s + _BLOCK_LEVELS)
                k = int(np.searchsorted(j0s, e - 1, side="right"))  # rows active in [s, e)
                m = e - s
                W = Wb[:, :m]
                lq, lf, lfm = logq[s:e], logF[s:e], logFm[s:e]
                W[0] = u[s:e]
                np.exp(lfm, out=W[1])
                W[1] += 0.5 * np.exp(lq)  # w = F^- + q/2
                W[2] = 1.0
                np.negative(lf, out=W[3])  # A = -log F
                rho = lq - lf  # log(q/F) <= 0
                big = np.flatnonzero(rho >= _LOG_HALF)
                rho[big] = _LOG_HALF
                np.exp(rho, out=rho)
                negC = np.log1p(-rho)  # log(F^-/F) = log(1 - q/F)
                # B = log(C/q) = log(C/rho) - log F, free of log q's rounding
                np.log(negC / -rho, out=W[4])
                W[4] -= lf
                negC[big] = lfm[big] - lf[big]  # -inf at the bottom level
                W[4, big] = np.log(-negC[big]) - lq[big]
                if not negC.max() < -1e-280:
                    return None  # a mass lost to underflow
                np.negative(negC, out=W[5])
                np.multiply(W[5], W[5], out=W[6])
                np.multiply(W[6], W[6], out=W[7])
                np.multiply(W[7], W[6], out=W[8])
                np.multiply(W[7], W[7], out=W[9])
                cols = np.flatnonzero(negC < -_SERIES_Y / Ns[k - 1, 0])
                if cols.size:
                    W[4:, cols] = 0.0
                # log F over [s - 1, e): G_{j-1} - G_j = -d_j with G = F^N
                lf_ext = logF[s - 1 : e] if s > 0 else np.concatenate([[-np.inf], lf])
                for r0 in range(0, k, rb):
                    r1 = min(k, r0 + rb)
                    Nk = Ns[r0:r1]
                    y = buf_y[: r1 - r0, :m]
                    z = buf_z[: r1 - r0, : m + 1]
                    np.multiply(Nk, lf_ext, out=z)
                    np.exp(z, out=z)  # G = F^N
                    np.subtract(z[:, :-1], z[:, 1:], out=y)  # -d
                    if cols.size:
                        nc = Nk * -negC[cols]
                        log_e = np.where(nc > -_LOG_HALF, np.log1p(-np.exp(-nc)), np.log(-np.expm1(-nc)))
                        dd = y[:, cols]
                        # -d (log(1 - e^{-N C}) - log q); the -N A part is in column 3
                        kl_direct[r0:r1] -= np.einsum("ij,ij->i", dd, log_e - lq[cols])
                        d_direct[r0:r1] -= dd.sum(axis=1)
                    acc[r0:r1] -= y @ W.T
        return acc, kl_direct, d_direct

    # One thread: the kernel is bound by memory traffic and per-block overhead (two
    # threads over interleaved blocks measured no faster on 2 cores, and slower with
    # a multithreaded BLAS underneath).
    sums = work(range(int(j0s[0]), L, _BLOCK_LEVELS))
    if sums is None:
        return None
    acc, kl_direct, d_direct = sums
    n_ = Ns[:, 0]
    log_n = np.log(n_)
    d_all, d_a = acc[:, 2], acc[:, 3]
    d_series = d_all - d_direct
    series = n_ * (
        -acc[:, 5] / 2
        + n_
        * (
            acc[:, 6] / 24
            + n_ * n_ * (-acc[:, 7] / 2880 + n_ * n_ * (acc[:, 8] / 181440 - n_ * n_ * acc[:, 9] / 9676800))
        )
    )
    # sum d log(d/q) = -N sum d A + log N sum_series d + sum_series d (B + s) + direct,
    # plus sum q - sum d (= 0 up to rounding: the q h(t) form's normalisation)
    kl = (-n_ * d_a + log_n * d_series + acc[:, 4] + series + kl_direct) + (1.0 - d_all)
    bound = n_ * d_a + log_n * d_series + np.abs(acc[:, 4]) + np.abs(series) + np.abs(kl_direct) + 2.0
    out = np.empty((4, R))
    out[0, order] = kl
    out[1, order] = acc[:, 0]
    out[2, order] = acc[:, 1]
    out[3, order] = bound
    return out


def bon_kl_from_eps(eps, n=None, *, log_n=None):
    """Beirami et al.'s (2024) BoN KL formula ``D_hat(eps)`` as a function of ``eps = p(y)``.

    The closed form, evaluated at given probabilities ``eps`` (no reference
    needed): the KL of best-of-N on a law with an atom of mass ``eps`` on top
    of an atomless rest (theory §3).  :func:`bon_kl_beirami` averages it over
    best-of-N's outputs on a reference.

    ``D_hat = (1-eps)^N [log N + (N-1) log(1-eps) - (N-1)/N]
    + (1 - (1-eps)^N) log((1 - (1-eps)^N)/eps)``, with
    ``0 <= D_hat <= log N - (N-1)/N``.

    Parameters
    ----------
    eps : float or array_like
        Probabilities in ``(0, 1]``.
    n, log_n : float
        ``N >= 1`` or ``log N >= 0`` (exactly one).

    Examples
    --------
    >>> round(float(bon_kl_from_eps(1e-12, n=8)), 9)   # tiny eps: the bound
    1.204441542
    """
    ln = log_n_from(n, log_n)
    eps = np.asarray(eps, dtype=float)
    if np.isnan(eps).any() or (eps <= 0).any() or (eps > 1).any():
        raise ValueError("eps must lie in (0, 1]")
    with np.errstate(divide="ignore"):
        out = _beirami(np.log1p(-eps), np.log(eps), _capped(ln))
    return float_or_array(out)


def _beirami(l1m, log_eps, ln):
    """``D_hat`` from ``log(1 - eps)``, ``log eps`` and ``log N``, as a sum of non-negative terms.

    ``D_hat`` is the KL of best-of-N on a law with an atom ``eps`` on top of an
    atomless mass ``c = 1 - eps``; written as ``int q h(log(pi/q))`` with
    ``h(t) = e^t (t - 1) + 1 >= 0`` it is
    ``c [h(y) + e^y (log N - (N-1)/N)] + eps h(t)``, ``y = (N-1) log c``,
    ``t = log(B/eps) = log1p(c (1 - e^y)/eps)``, ``B = 1 - c^N``.  The textbook
    form cancels to ``O((N-1)^2)`` as N -> 1 (it returned 0 at log N = 1e-12).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_nm1 = ln + np.log(-np.expm1(-ln))  # log(N - 1), -inf at N = 1
        y = np.where(ln > 0, _times_n(log_nm1, l1m), 0.0)  # (N - 1) log(1 - eps) <= 0
        cont = np.exp(l1m) * (kl_terms(y, 0.0) + np.exp(y) * log_bon_kl_bound(ln))
        t = np.logaddexp(0.0, l1m - log_eps + log1mexp(y))  # log(B / eps) >= 0
        B = -np.expm1(_times_n(ln, l1m))  # 1 - (1 - eps)^N
        small = t < 0.1
        atom = np.where(
            small, np.exp(log_eps) * kl_terms(np.where(small, t, 0.0), 0.0), B * (t - 1.0) + np.exp(log_eps)
        )  # eps h(t), e^t never formed
    return np.asarray(cont + atom, dtype=float)


def bon_kl_beirami(ref: Reference, n=None, *, log_n=None, samples=None):
    """Beirami et al.'s (2024) estimate of ``KL(pi_N || p)`` on a reference.

    The per-outcome formula :func:`bon_kl_from_eps` at ``eps = p(y)``,
    averaged over best-of-N's outputs ``y ~ pi_N``.  With ``samples=None``
    the average is exact: ``sum_y pi_N(y) D_hat(p(y))``.  Otherwise
    ``samples`` are outcome indices drawn from BoN and their sample mean is
    returned.  An estimate, not the KL: compare with the exact
    ``best_of_n(...).kl`` (theory §3).

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> round(bon_kl_beirami(ref, n=4), 6) > best_of_n(ref, n=4).kl
    True
    """
    check_reference(ref)
    ln = float(_capped(log_n_from(n, log_n)))
    on = ref.level_index >= 0
    if samples is None:
        pol = best_of_n(ref, log_n=ln)
        lp = pol.logprobs[on]
        lpr = ref.logprobs[on]
        # from log p: p(y) within 1e-16 of 1 still has log(1 - p(y)) = log1mexp(log p)
        est = _beirami(log1mexp(lpr), lpr, ln)
        return float(np.exp(lp) @ est)
    idx = np.asarray(samples)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("samples must be a non-empty 1-D array of outcome indices")
    if (idx < 0).any() or (idx >= ref.size).any() or not on[idx].all():
        raise ValueError("samples contains indices outside the support of ref")
    lpr = ref.logprobs[idx]
    return float(np.mean(_beirami(log1mexp(lpr), lpr, ln)))
