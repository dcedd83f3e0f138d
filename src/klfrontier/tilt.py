"""Optimal KL-constrained RL: the exponentially tilted policy and its frontier.

Theory §2.  With ``Lambda(lam) = log E_p e^{lam r}``,

    phi_lam(y) = p(y) exp(lam r(y) - Lambda(lam)),
    KL(phi_lam || p) = lam Lambda'(lam) - Lambda(lam) =: D(lam),
    E_{phi_lam} r = Lambda'(lam).

All computations run on reward levels in standardised units ``u`` (see
:class:`~klfrontier.reference.Reference`); ``lam_u = lam (r_max - r_min)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._logspace import kl_terms
from ._validate import one_of, real_scalar
from .errors import ConvergenceError
from .policy import Policy
from .reference import Reference, check_reference

__all__ = [
    "tilted",
    "frontier",
    "Frontier",
    "cgf",
    "tilt_stats",
    "solve_lam_for_kl",
    "solve_lam_for_reward",
    "ConvergenceError",
]


_EPS = float(np.finfo(float).eps)

# Rows of the (budgets x levels) work matrix processed at once.
_CHUNK_ELEMENTS = 2**22


@dataclass
class TiltStats:
    """Exact statistics of ``phi_lam`` at a batch of ``lam`` (standardised units).

    ``cgf`` is ``Lambda_u(lam_u)``; ``mean``, ``var``, ``k3`` are the first
    three cumulants of ``u`` under ``phi``; ``kl`` is ``D(lam)``; ``gain`` is
    ``E_phi u - E_p u`` formed as the centred covariance
    ``sum_j q_j (e^{x_j - Lambda} - 1)(u_j - mu)`` (or its cumulant series), not
    as a difference of two rounded means.
    """

    lam_u: np.ndarray
    cgf: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    k3: np.ndarray
    kl: np.ndarray
    gain: np.ndarray = None


def _centres(lam_u, mu):
    """Centre for each row: the p-mean for small |lam|, the active end otherwise.

    Centring at the bulk of the tilted law keeps ``lam (u - c)`` and the
    CGF small, so ``D = lam E(u - c) - Lambda_c`` loses no relative accuracy.
    """
    spread = max(-mu, 1.0 + mu, 1e-300)
    c = np.where(np.abs(lam_u) * spread <= 1.0, mu, np.where(lam_u > 0, 0.0, -1.0))
    return c


# Elements of one (rows x levels) tile of the work matrix: small enough to stay
# in cache, large enough that numpy's per-call overhead does not show.
_TILE_ELEMENTS = 2**16
_TILE_COLS = 4096


def _level_q(ref: Reference):
    """``q = exp(level_logq)``, ``min(level_logq)``, ``log sum q``, cached on ``ref``."""
    cached = ref.__dict__.get("_level_q")
    if cached is None:
        q = np.exp(ref.level_logq)
        cached = (q, float(ref.level_logq.min()), float(np.log(q.sum())))
        ref.__dict__["_level_q"] = cached
    return cached


def _tilt_sums(ref: Reference, lam, centre, centred):
    """``Lambda_c``, raw moments ``E_phi (u - c)^k`` (k = 1..4) and, centred, the gain, for rows ``lam``.

    One pass over (rows x levels) tiles: ``X = lam (u - c)``, then
    ``e^X`` (or ``expm1(X)`` when ``centred``: ``c`` is the p-mean and
    ``|X| <= 1``, so ``Lambda_c = log1p(sum q expm1(X))`` keeps its relative
    accuracy), and one matrix product with the tile's ``q (u - c)^k`` columns.
    ``lam (u - c) <= 0`` off-centre (``c`` is the active end), so nothing
    overflows; a row whose partition sum would underflow is redone with a
    per-row shift.
    """
    u, logq = ref.level_u, ref.level_logq
    q, logq_min, log_sum_q = _level_q(ref)
    lam = np.asarray(lam, dtype=float)
    R, L = lam.size, u.size
    lam_col = lam[:, None]
    # off-centre, weights e^{lam (u-c)} q need q > 0 in floats: else put log q in the exponent
    use_q = centred or logq_min > -300.0
    S = np.zeros((R, 5))
    base = np.zeros(5)
    # column tiles of >= _TILE_COLS levels (long inner loops), row blocks to fill a tile
    cols = min(L, max(_TILE_COLS, _TILE_ELEMENTS // max(R, 1)))
    rb = max(1, _TILE_ELEMENTS // cols)
    P = np.empty((5, cols))
    buf = np.empty((min(rb, R), cols))
    for s in range(0, L, cols):
        e = min(L, s + cols)
        w = e - s
        Pt = P[:, :w]
        uc = u[s:e] - centre
        if use_q:
            Pt[0] = q[s:e]
        else:
            Pt[0] = 1.0
        np.multiply(Pt[0], uc, out=Pt[1])
        np.multiply(Pt[1], uc, out=Pt[2])
        np.multiply(Pt[2], uc, out=Pt[3])
        np.multiply(Pt[3], uc, out=Pt[4])
        if centred:
            base += Pt.sum(axis=1)
        for r0 in range(0, R, rb):
            r1 = min(R, r0 + rb)
            X = np.multiply(lam_col[r0:r1], uc, out=buf[:r1 - r0, :w])
            if centred:
                np.expm1(X, out=X)
            else:
                if not use_q:
                    X += logq[s:e]
                np.exp(X, out=X)
            S[r0:r1] += X @ Pt.T
    if centred:
        # normalise by sum q (= 1 up to rounding, which would swamp a tiny Lambda_c)
        Z = base[0] + S[:, 0]
        lam_c = np.log1p(S[:, 0] / base[0])
        m = (base[1:] + S[:, 1:]) / Z[:, None]
        return lam_c, m, S[:, 1] / Z
    Z = S[:, 0]
    low = ~(Z > 1e-280)
    with np.errstate(divide="ignore"):
        lam_c = np.log(Z) - log_sum_q
    # Z ~ sum q (p(A) ~ 1): log Z keeps only absolute accuracy, ~1e-10 relative
    # in D = lam m1 - Lambda_c.  X <= 0 here, so sum q expm1(X) has same-sign
    # terms and full relative accuracy.
    near = np.flatnonzero(~low & (np.abs(lam_c) < 0.5))
    if near.size:
        acc = np.zeros(near.size)
        for s in range(0, L, cols):
            e = min(L, s + cols)
            acc += np.expm1(lam[near, None] * (u[s:e] - centre)) @ q[s:e]
        lam_c[near] = np.log1p(acc / np.exp(log_sum_q))
    m = S[:, 1:] / np.where(low, 1.0, Z)[:, None]
    if low.any():
        # partition sum below the normal range: shift each row by its max exponent
        uc = u - centre
        a = lam[low, None] * uc[None, :] + logq[None, :]
        amax = a.max(axis=1, keepdims=True)
        wts = np.exp(a - amax)
        tot = wts.sum(axis=1)
        lam_c[low] = amax[:, 0] + np.log(tot) - log_sum_q
        m[low] = (wts @ np.stack([uc, uc ** 2, uc ** 3, uc ** 4], axis=1)) / tot[:, None]
    return lam_c, m, None


def tilt_stats(ref: Reference, lam_u, *, accurate=True) -> TiltStats:
    """Cumulants and KL of the tilted law at standardised inverse temperatures.

    Parameters
    ----------
    ref : Reference
    lam_u : array_like
        Finite inverse temperatures in standardised units (any sign).
    accurate : bool
        Re-evaluate the KL of ill-conditioned rows in the non-negative
        ``sum q h(t)`` form (see :func:`~klfrontier._logspace.kl_terms`).

    Notes
    -----
    Per row: ``x_j = lam (u_j - c)``, ``Lambda_c = log sum_j q_j e^{x_j}``
    (as ``log1p(sum q expm1(x))`` when ``|lam| <= 0.1``), ``phi_j = q_j
    e^{x_j - Lambda_c}``, raw moments of ``u - c`` by one matrix product,
    ``D = lam m_1 - Lambda_c``.
    """
    check_reference(ref)
    lam_u = np.atleast_1d(np.asarray(lam_u, dtype=float))
    tiny = np.abs(lam_u) <= _SERIES_LAM
    if tiny.any():
        full = TiltStats(lam_u, *(np.empty(lam_u.size) for _ in range(6)))
        ser = _series_stats(ref, lam_u[tiny])
        rest = tilt_stats(ref, lam_u[~tiny], accurate=accurate) if (~tiny).any() else None
        for k in ("cgf", "mean", "var", "k3", "kl", "gain"):
            getattr(full, k)[tiny] = getattr(ser, k)
            if rest is not None:
                getattr(full, k)[~tiny] = getattr(rest, k)
        return full
    u, logq = ref.level_u, ref.level_logq
    mu = ref.mean_u
    spread = max(-mu, 1.0 + mu, 1e-300)
    c_all = _centres(lam_u, mu)
    out = {k: np.empty(lam_u.size) for k in ("cgf", "mean", "var", "k3", "kl", "gain")}
    for centre in np.unique(c_all):
        idx = np.flatnonzero(c_all == centre)
        lam = lam_u[idx]
        centred = bool(np.all(np.abs(lam) * spread <= 1.0))
        lc, m, g = _tilt_sums(ref, lam, centre, centred)
        m1, m2, m3 = m[:, 0], m[:, 1], m[:, 2]
        # centred at mu, the gain is the covariance sum itself (base_1 = sum q (u - mu) is 0 up
        # to rounding, which would swamp a gain ~ lam var); off-centre it is O(spread)
        gain = g if centred else (centre - mu) + m1
        kl = lam * m1 - lc
        var = np.maximum(m2 - m1 * m1, 0.0)
        k3 = m3 - 3 * m1 * m2 + 2 * m1 ** 3
        if accurate:
            scale = np.abs(lam) * np.sqrt(m2) + np.abs(lc)
            bad = ~(np.abs(kl) * 1e4 > scale)
            if bad.any():
                # Recentre each row at its mode u_m: lam (u - c) - Lambda_c and m1 carry
                # only absolute accuracy ~ eps lam, which swamps D and Var when phi sits
                # on an interior level (e.g. q_m ~ 1 with 1e-200 masses above it).
                # About the mode, log(phi_j/q_j) = lam (u_j - u_m) - Lambda_m is exact.
                x = lam[bad, None] * u[None, :] + logq[None, :]
                jm = np.argmax(x, axis=1)
                dm = u[None, :] - u[jm][:, None]
                x = lam[bad, None] * dm + logq[None, :]
                xm = x[np.arange(x.shape[0]), jm]
                rest = np.exp(x - xm[:, None])
                rest[np.arange(x.shape[0]), jm] = 0.0
                lam_m = xm + np.log1p(rest.sum(axis=1)) - _level_q(ref)[2]
                logphi = x - lam_m[:, None]
                # t = log(phi/q) directly: logphi - logq would round t to eps |log q|
                # absolute, fatal for the small t of a tiny-q level carrying the KL.
                t = lam[bad, None] * dm - lam_m[:, None]
                small = np.abs(t) < 0.1
                terms = np.where(small, np.exp(logq)[None, :] * kl_terms(np.where(small, t, 0.0), 0.0),
                                 kl_terms(logphi, logq[None, :]))
                kl[bad] = terms.sum(axis=1)
                ph = np.exp(logphi)
                e1 = (ph * dm).sum(axis=1)
                e2 = (ph * dm * dm).sum(axis=1)
                var[bad] = np.maximum(e2 - e1 * e1, 0.0)
                gain[bad] = (u[jm] - mu) + e1
                k3[bad] = (ph * dm ** 3).sum(axis=1) - 3 * e1 * e2 + 2 * e1 ** 3
        out["cgf"][idx] = lc + lam * centre
        out["mean"][idx] = centre + m1
        out["var"][idx] = var
        out["k3"][idx] = k3
        out["kl"][idx] = np.maximum(kl, 0.0)
        out["gain"][idx] = gain
    return TiltStats(lam_u=lam_u, **out)


# Below this |lam_u| the cumulant series (truncated after kappa_6) is exact
# to ~1e-15 and, unlike the direct sums, keeps D ~ lam^2 var / 2 exact.
_SERIES_LAM = 1e-3


def _series_stats(ref: Reference, lam_u) -> TiltStats:
    """Tilt statistics from the cumulants of ``u`` under ``p`` (small ``|lam|``).

    ``Lambda(l) = mu l + sum_k kappa_k l^k / k!``, so
    ``D(l) = sum_{k>=2} (k-1) kappa_k l^k / k!`` with no cancellation.
    """
    mu, k = ref.mean_u, _cumulants_u(ref)
    fact = np.array([1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0])
    l = np.asarray(lam_u, dtype=float)
    ks = range(2, 7)
    cgf_ = mu * l + sum(k[j] * l**j / fact[j] for j in ks)
    mean = mu + sum(k[j] * l**(j - 1) / fact[j - 1] for j in ks)
    var = sum(k[j] * l**(j - 2) / fact[j - 2] for j in ks)
    k3 = sum(k[j] * l**(j - 3) / fact[j - 3] for j in range(3, 7))
    kl = sum((j - 1) * k[j] * l**j / fact[j] for j in ks)
    gain = sum(k[j] * l**(j - 1) / fact[j - 1] for j in ks)
    return TiltStats(lam_u=l, cgf=cgf_, mean=mean, var=var, k3=k3, kl=kl, gain=gain)


def _cumulants_u(ref: Reference):
    """Cumulants kappa_2..kappa_6 of the standardised reward under ``p``."""
    cached = ref.__dict__.get("_cumulants_u")
    if cached is not None:
        return cached
    k = level_cumulants(ref.level_logq, ref.level_u, ref.mean_u)
    ref.__dict__["_cumulants_u"] = k
    return k


def level_cumulants(level_logprobs, u, mean):
    """Cumulants ``kappa_2..kappa_6`` of ``u`` under the level law ``e^level_logprobs`` with mean ``mean``.

    From the central moments ``sum_j phi_j d_j^k``, ``d = u - mean``, chunk by
    chunk (no level-sized temporaries; ``d**k`` would be a pow call per
    element: 2.3 s at 9e6 levels).  The rounding of ``mean`` enters at second
    order only.

    >>> k = level_cumulants(np.log([0.5, 0.5]), np.array([-1.0, 0.0]), -0.5)
    >>> k[2], k[4]
    (0.25, -0.125)
    """
    m = dict.fromkeys(range(1, 7), 0.0)
    for s in range(0, u.size, _TILE_ELEMENTS):
        d = u[s:s + _TILE_ELEMENTS] - mean
        qd = np.exp(level_logprobs[s:s + _TILE_ELEMENTS])
        qd *= d
        m[1] += float(np.sum(qd))
        for j in range(2, 7):
            qd *= d
            m[j] += float(np.sum(qd))
    m1 = m[1]
    # central moments about the exact mean (mean + m1) from those about ``mean``
    c2 = m[2] - m1 ** 2
    c3 = m[3] - 3 * m1 * m[2] + 2 * m1 ** 3
    c4 = m[4] - 4 * m1 * m[3] + 6 * m1 ** 2 * m[2] - 3 * m1 ** 4
    c5, c6 = m[5], m[6]                      # m1 ~ eps: its corrections there are below rounding
    return {2: c2, 3: c3, 4: c4 - 3 * c2 ** 2, 5: c5 - 10 * c3 * c2,
            6: c6 - 15 * c4 * c2 - 10 * c3 ** 2 + 30 * c2 ** 3}


def cgf(ref: Reference, t):
    """Cumulant generating function ``Lambda(t) = log E_p e^{t r(Y)}``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> round(float(cgf(ref, 1.0)), 12)    # log((1 + e)/2)
    0.620114506958
    """
    check_reference(ref)
    t = np.asarray(t, dtype=float)
    if not np.isfinite(t).all():
        raise ValueError("t must be finite")
    if ref.is_constant:
        out = t * ref.r_max
    else:
        tt = t.ravel()
        lam = np.atleast_1d(ref.lam_to_u(tt))
        out = np.empty(tt.size)
        # Lambda(t) = t r_c + log E e^{t (r - r_c)}, anchored where the tilted law sits
        # (the p-mean for small |lam|, the active end otherwise, as in tilt_stats).  The
        # shortcut t r_max + Lambda_u(lam) cancels to eps |t| (r_max - r_min) absolute:
        # relative 7e-7 at t = 1e-10 for rewards +-1 of mean 0, 6e-11 at t = -1e6.
        tiny = np.abs(lam) <= _SERIES_LAM
        if tiny.any():
            k, l = _cumulants_u(ref), lam[tiny]
            fact = (1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0)
            out[tiny] = tt[tiny] * ref.mean_reward + sum(k[j] * l**j / fact[j] for j in range(2, 7))
        rest = np.flatnonzero(~tiny)
        if rest.size:
            mu = ref.mean_u
            spread = max(-mu, 1.0 + mu, 1e-300)
            c_all = _centres(lam[rest], mu)
            for centre in np.unique(c_all):
                idx = rest[c_all == centre]
                lc, _, _ = _tilt_sums(ref, lam[idx], centre, bool(np.all(np.abs(lam[idx]) * spread <= 1.0)))
                r_c = ref.mean_reward if centre == mu else ref.to_reward(centre)
                out[idx] = tt[idx] * r_c + lc
                # The anchor can sit far from the tilted law (a p with one outcome of mass
                # 1 - 1e-297 below the top: the active end is chosen, yet the law stays put),
                # and then t r_c + lc cancels.  Such rows are recomputed at the mode of the
                # tilted law (sweep_numerics: relative 3e-5 at Lambda = 1e-9 before).
                with np.errstate(invalid="ignore"):
                    cancel = np.abs(out[idx]) < 1e-3 * np.abs(tt[idx] * r_c)
                for i in idx[cancel]:
                    out[i] = _cgf_at_mode(ref, tt[i], lam[i])
        out = out.reshape(t.shape)
    return float(out) if out.ndim == 0 else out


def _cgf_at_mode(ref, t, lam_u):
    """``Λ(t) = t r_j + log q_j + log1p(Σ_{i≠j} e^{lev_i - lev_j})``, ``lev = log q + λ_u u`` and
    ``j`` its argmax (the mode of the tilted law): no term larger than the result cancels."""
    j = int(np.argmax(ref.level_logq + lam_u * ref.level_u))
    d = (ref.level_logq - ref.level_logq[j]) + lam_u * (ref.level_u - ref.level_u[j])
    rest = np.exp(np.delete(d, j))
    return float(t * ref.level_values[j] + ref.level_logq[j] + np.log1p(np.sum(rest)))


# --------------------------------------------------------------------- solvers
def _solve_increasing(ref, target, kind, lam_hint_max=None, tol=1e-14, max_iter=60):
    """Solve ``g(lam_u) = target`` for ``lam_u > 0``, g increasing from 0.

    ``kind='kl'``: g = D; ``kind='reward'``: g = mean - mu.  Works in
    (log lam, log g) coordinates, where g is close to linear at both ends:
    a bracketing grid gives a cubic-Hermite start, then safeguarded Halley
    steps on exact evaluations of only the unconverged rows.
    """
    target = np.asarray(target, dtype=float)
    mu = ref.mean_u

    def g_and_slopes(st):
        lam = st.lam_u
        # lam_u can reach ~1e300 when the top levels nearly tie (relative gap
        # 1e-200): the slopes then overflow to inf/nan and the iteration below
        # falls back to bisection.
        with np.errstate(over="ignore", invalid="ignore"):
            if kind == "kl":
                g = st.kl
                d1 = lam * lam * st.var                        # dD/dl, l = log lam
                d2 = 2 * lam * lam * st.var + lam ** 3 * st.k3  # d2D/dl2
            else:
                g = st.mean - mu
                d1 = lam * st.var
                d2 = lam * st.var + lam * lam * st.k3
        return g, d1, d2

    # grid in log lam_u: start where g is tiny, double until above all targets.
    sig = np.sqrt(max(tilt_stats(ref, [0.0]).var[0], 1e-300))
    tmin = float(target.min())
    lo = np.log(max((np.sqrt(2 * tmin) if kind == "kl" else tmin) / sig, 1e-300)) - 1.0
    hi = lo + 2.0
    nodes = [np.linspace(lo, hi, 5)]
    # Grid nodes are evaluated accurately: the plain D = lam m1 - Lambda_c can come
    # out as 0 (clamped noise) where D is tiny, and a grid that dips back to 0 above
    # the root brackets a spurious crossing (a budget of 1e-151 solved to D = 7e-49).
    st = tilt_stats(ref, np.exp(nodes[0]), accurate=True)
    gs = [g_and_slopes(st)]
    # A skewed p (tiny variance, heavy top tail) makes the Gaussian start overshoot:
    # extend the grid downwards until its first node lies below every target.
    while gs[0][0][0] > tmin and lo > -745:
        new = np.linspace(lo - 2.0, lo, 6)[:-1]
        lo -= 2.0
        nodes.insert(0, new)
        gs.insert(0, g_and_slopes(tilt_stats(ref, np.exp(new), accurate=True)))
    while gs[-1][0][-1] < target.max():
        # every non-top level is below e^-745 relative: saturated in floats.
        # (700, not 745: the next nodes reach hi + 2 and exp must not overflow.)
        if hi > 700:
            break
        new = np.linspace(hi, hi + 2.0, 6)[1:]
        hi = hi + 2.0
        st = tilt_stats(ref, np.exp(new), accurate=True)
        nodes.append(new)
        gs.append(g_and_slopes(st))
    ell = np.concatenate(nodes)
    g = np.concatenate([x[0] for x in gs])
    d1 = np.concatenate([x[1] for x in gs])
    with np.errstate(divide="ignore"):
        lg = np.log(np.maximum(g, 1e-320))
    slope = d1 / np.maximum(g, 1e-320)             # d log g / d log lam
    lt = np.log(target)
    k = np.clip(np.searchsorted(lg, lt), 1, lg.size - 1)
    # cubic Hermite inverse interpolation of l(log g) between bracketing nodes
    x0, x1 = lg[k - 1], lg[k]
    y0, y1 = ell[k - 1], ell[k]
    s0 = 1 / np.maximum(slope[k - 1], 1e-300)
    s1 = 1 / np.maximum(slope[k], 1e-300)
    h = np.where(x1 > x0, x1 - x0, 1.0)
    tt = np.clip((lt - x0) / h, 0.0, 1.0)
    h00, h10 = 2 * tt**3 - 3 * tt**2 + 1, tt**3 - 2 * tt**2 + tt
    h01, h11 = -2 * tt**3 + 3 * tt**2, tt**3 - tt**2
    l_cur = h00 * y0 + h10 * h * s0 + h01 * y1 + h11 * h * s1
    l_lo, l_hi = y0.copy(), y1.copy()
    l_cur = np.clip(l_cur, l_lo, l_hi)
    l_cur = np.where(np.isfinite(l_cur), l_cur, 0.5 * (l_lo + l_hi))   # nan slopes
    result = np.empty_like(target)
    active = np.arange(target.size)
    for _ in range(max_iter):
        st = tilt_stats(ref, np.exp(l_cur[active]), accurate=True)
        gv, dg1, dg2 = g_and_slopes(st)
        f = np.log(np.maximum(gv, 1e-320)) - lt[active]
        # near the root log(g/target) directly: log g - log target is granular at
        # ulp(log target) (3.6e-15 at D ~ 1e-12), which the tolerances cannot beat
        near = np.abs(f) < 0.5
        f[near] = np.log(gv[near] / target[active][near])
        with np.errstate(over="ignore", invalid="ignore"):   # inf slopes: bisection below
            f1 = dg1 / np.maximum(gv, 1e-320)
            f2 = dg2 / np.maximum(gv, 1e-320) - f1 * f1
        # bracket update
        above = f > 0
        l_hi[active] = np.where(above, np.minimum(l_hi[active], l_cur[active]), l_hi[active])
        l_lo[active] = np.where(~above, np.maximum(l_lo[active], l_cur[active]), l_lo[active])
        with np.errstate(over="ignore", invalid="ignore"):
            newton = -f / np.maximum(f1, 1e-300)
            denom = 1 + 0.5 * newton * f2 / np.maximum(f1, 1e-300)
            # Halley only while its correction is moderate: a huge denominator (the flat,
            # nearly saturated side of a step-like D) shrinks the step to a crawl, where
            # the Newton step leaves the bracket and bisection takes over.
            step = np.where((denom > 0.5) & (denom < 2.0), newton / np.where(denom == 0, 1, denom),
                            newton)
        # A vanishing slope (a plateau of D where the tilted variance underflows)
        # overflows the Halley correction to a spurious zero step: bisect instead.
        step = np.where(np.isfinite(newton) & np.isfinite(denom), step, np.nan)
        cand = l_cur[active] + step
        # g = mean - mu (kind "reward") cancels: its absolute error is a few eps
        # (|u| <= 1), so near the root |f| cannot be driven below ~eps/target.  (The floor is
        # taken at the target, not at the iterate's g: far below the root g can be 1e-300,
        # and eps/g would declare a wrong iterate converged -- found by sweep_numerics on a
        # reference with one outcome of probability 1 and the rest at 1e-300.)
        f_floor = (1e-15 if kind == "kl"
                   else np.maximum(1e-15, 8 * _EPS / np.maximum(target[active], 1e-300)))
        # the bracket test stops a 2-cycle between iterates whose g values differ
        # only by evaluation noise (~1e-13 relative for small D), where neither
        # the step nor f can reach the tolerances above.
        # (tol is absolute in log lam: at |log lam| > ~45 a step below a few ulps
        # of log lam cannot move the iterate, so it counts as converged too.)
        done = ((np.abs(step) < np.maximum(tol, 4 * _EPS * np.abs(l_cur[active])))
                | (np.abs(f) < f_floor)
                | (l_hi[active] - l_lo[active] < 1e-12))
        # a candidate on a bracket end counts as outside: with D granular at ~1e-15 the
        # Newton step from each end can land exactly on the other, a 2-cycle that
        # never shrinks the bracket (found by Hypothesis: BoN's lam_same_kl on a
        # plateau of D, slope 3e-7, where |f| stayed at 1.3e-15 > f_floor)
        # (not for converged rows: f = 0 exactly gives a zero step from a bracket end)
        on_end = (cand == l_lo[active]) | (cand == l_hi[active])
        outside = ((cand < l_lo[active]) | (cand > l_hi[active]) | ~np.isfinite(cand)
                   | (on_end & ~done))
        cand = np.where(outside, 0.5 * (l_lo[active] + l_hi[active]), cand)
        # converged rows keep their last Halley step (error cubic in the step) when it
        # is small; on a flat, saturated stretch of D (slope ~1e-16) the step is made of
        # rounding noise and could be large: there the converged iterate itself is kept
        # (a budget 1 ulp below kl_max was moved to a lam whose deficit was 1e4 x too big)
        keep_step = np.isfinite(step) & (np.abs(step) <= 1e-8)
        result[active[done]] = np.where(keep_step, cand, l_cur[active])[done]
        l_cur[active] = cand
        active = active[~done]
        if active.size == 0:
            return np.exp(result)
    partial = np.exp(l_cur)
    raise ConvergenceError(f"lambda solver ({kind}) did not converge for {active.size} targets",
                           partial=partial)


def _stats4(ref: Reference, lam):
    """Cumulants 1..4 of ``u``, ``Lambda_u`` and ``D`` under ``phi_lam`` (``lam > _SERIES_LAM``).

    One pass of :func:`_tilt_sums`.  ``ok`` flags rows whose ``D = lam m1 -
    Lambda_c`` is well conditioned (the test :func:`tilt_stats` uses to switch
    to the ``q h(t)`` form).
    """
    mu = ref.mean_u
    spread = max(-mu, 1.0 + mu, 1e-300)
    c_all = _centres(lam, mu)
    n = lam.size
    cgf_, mean, var, k3, k4, kl = (np.empty(n) for _ in range(6))
    ok = np.empty(n, dtype=bool)
    for centre in np.unique(c_all):
        idx = np.flatnonzero(c_all == centre)
        lm = lam[idx]
        lc, m, _ = _tilt_sums(ref, lm, centre, bool(np.all(np.abs(lm) * spread <= 1.0)))
        m1, m2, m3, m4 = m.T
        d = lm * m1 - lc
        ok[idx] = np.abs(d) * 1e4 > np.abs(lm) * np.sqrt(m2) + np.abs(lc)
        kl[idx] = d
        cgf_[idx] = lc + lm * centre
        mean[idx] = centre + m1
        var[idx] = m2 - m1 * m1
        k3[idx] = m3 - 3 * m1 * m2 + 2 * m1 ** 3
        k4[idx] = m4 - 4 * m3 * m1 - 3 * m2 * m2 + 12 * m2 * m1 * m1 - 6 * m1 ** 4
    return cgf_, mean, var, k3, k4, kl, ok & (var > 0)


def _log_kl_derivs(lam, var, k3, k4, kl):
    """``f_k = d^k log D / dl^k``, k = 1..3, ``l = log lam``."""
    lam2 = lam * lam
    g1 = lam2 * var / kl
    g2 = (2 * lam2 * var + lam2 * lam * k3) / kl
    g3 = (4 * lam2 * var + 5 * lam2 * lam * k3 + lam2 * lam2 * k4) / kl
    return g1, g2 - g1 * g1, g3 - 3 * g1 * g2 + 2 * g1 ** 3


# _solve_kl_many: node spacing of its grid in log lam, the largest step (in log
# lam) it takes from one exact evaluation, and the relative size of the last
# Taylor terms it accepts (the next ones are smaller still).
_GRID_H = 0.25
_MAX_STEP = 1e-3
_TAYLOR_TOL = 1e-13
_ROUNDS = 4
# frontier uses _solve_kl_many from this many budgets on (its grid costs ~35 rows)
_MANY_BUDGETS = 16


def _solve_kl_many(ref: Reference, target):
    """``lam_u``, ``E_phi u`` and ``D`` at ``D(lam_u) = target`` for many targets.

    Built for :func:`frontier`: a grid in ``l = log lam`` (cheap: a few rows)
    gives a quintic-Hermite start for ``l(log D)``; one exact pass at the
    start yields ``D`` and the cumulants 1..4, from which a step on the cubic
    Taylor model of ``log D(l)`` and Taylor updates of ``D`` and the mean give
    the solution without another pass.  Rows where the step or the Taylor
    remainder is not negligible (or ``D`` is ill-conditioned) come back with
    ``ok = False``: solve those with :func:`_solve_increasing`.
    """
    target = np.asarray(target, dtype=float)
    n = target.size
    lam_out, mean_out, kl_out = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)
    lt = np.log(target)
    q, _, _ = _level_q(ref)
    dev = ref.level_u - ref.mean_u
    sig = np.sqrt(max(float(q @ (dev * dev)), 1e-300))      # sd of u under p
    l_min = np.log(4 * _SERIES_LAM)
    lo = max(np.log(np.sqrt(2 * target.min()) / sig) - 1.0, l_min)

    def nodes_stats(ells):
        lam = np.exp(ells)
        _, _, var, k3, k4, kl, good = _stats4(ref, lam)
        with np.errstate(all="ignore"):
            f1, f2, _ = _log_kl_derivs(lam, var, k3, k4, kl)
            lg = np.log(kl)
        return lg, f1, f2, good & (f1 > 0) & np.isfinite(f1 + f2 + lg)

    ell = lo + _GRID_H * np.arange(9)
    lg, f1, f2, good = nodes_stats(ell)
    while lg[0] > lt.min() and ell[0] > l_min:
        new = ell[0] - _GRID_H * np.arange(8, 0, -1)
        new = new[new >= l_min]
        if new.size == 0:
            break
        st = nodes_stats(new)
        ell = np.concatenate([new, ell])
        lg, f1, f2, good = (np.concatenate([a, b]) for a, b in zip(st, (lg, f1, f2, good)))
    while lg[-1] < lt.max() and ell[-1] < 690.0:
        new = ell[-1] + _GRID_H * np.arange(1, 9)
        st = nodes_stats(new)
        ell = np.concatenate([ell, new])
        lg, f1, f2, good = (np.concatenate([a, b]) for a, b in zip((lg, f1, f2, good), st))
    # targets bracketed by two good nodes with increasing log D
    k = np.searchsorted(lg, lt)
    inside = (k > 0) & (k < lg.size)
    kk = np.clip(k, 1, lg.size - 1)
    inside &= (good[kk - 1] & good[kk] & (lg[kk] > lg[kk - 1])
               & (lg[kk - 1] <= lt) & (lt <= lg[kk]))
    if not inside.any():
        return lam_out, mean_out, kl_out, ok
    rows = np.flatnonzero(inside)
    a, b = kk[rows] - 1, kk[rows]
    H = lg[b] - lg[a]
    t = (lt[rows] - lg[a]) / H
    # quintic Hermite for the inverse l(y), y = log D: l' = 1/f1, l'' = -f2/f1^3
    d1a, d1b = 1 / f1[a], 1 / f1[b]
    d2a, d2b = -f2[a] * d1a ** 3, -f2[b] * d1b ** 3
    t2, t3 = t * t, t * t * t
    t4, t5 = t3 * t, t3 * t2
    l0 = (ell[a] * (1 - 10 * t3 + 15 * t4 - 6 * t5) + ell[b] * (10 * t3 - 15 * t4 + 6 * t5)
          + H * d1a * (t - 6 * t3 + 8 * t4 - 3 * t5) + H * d1b * (-4 * t3 + 7 * t4 - 3 * t5)
          + H * H * d2a * 0.5 * (t2 - 3 * t3 + 3 * t4 - t5) + H * H * d2b * 0.5 * (t3 - 2 * t4 + t5))
    l_lo, l_hi = ell[a], ell[b]
    l0 = np.clip(l0, l_lo, l_hi)
    for _ in range(_ROUNDS):
        lam0 = np.exp(l0)
        _, mean, var, k3, k4, kl, good0 = _stats4(ref, lam0)
        with np.errstate(all="ignore"):
            g1, g2, g3 = _log_kl_derivs(lam0, var, k3, k4, kl)
            f = np.log(kl) - lt[rows]
            # cubic model f + g1 d + g2 d^2/2 + g3 d^3/6 = 0: Halley, then Newton on the model
            d = -f / g1
            d = d / (1 + 0.5 * d * g2 / g1)
            for _ in range(3):
                d -= (f + d * (g1 + d * (g2 / 2 + d * g3 / 6))) / (g1 + d * (g2 + d * g3 / 2))
            lam1 = lam0 * np.exp(d)
            h = lam1 - lam0
            # Taylor in lam: Lambda' = mean, Lambda2 = var, ...; D' = lam var,
            # D2 = var + lam k3, D3 = 2 k3 + lam k4.
            t_mean = (var * h, k3 * h * h / 2, k4 * h ** 3 / 6)
            t_kl = (lam0 * var * h, (var + lam0 * k3) * h * h / 2,
                    (2 * k3 + lam0 * k4) * h ** 3 / 6)
            mean1 = mean + (t_mean[0] + t_mean[1] + t_mean[2])
            kl1 = kl + (t_kl[0] + t_kl[1] + t_kl[2])
            certified = (good0 & (np.abs(d) <= _MAX_STEP)
                         & (np.abs(g3 * d ** 3) <= 6e3 * _TAYLOR_TOL * np.abs(g1 * d) + 1e-300)
                         & (np.abs(t_mean[2]) <= _TAYLOR_TOL * np.sqrt(var))
                         & (np.abs(t_kl[2]) <= _TAYLOR_TOL * kl1)
                         & np.isfinite(lam1 + mean1 + kl1))
            done = rows[certified]
            lam_out[done] = lam1[certified]
            mean_out[done] = mean1[certified]
            kl_out[done] = kl1[certified]
            ok[done] = True
            # the rest: keep the bracket, step again from the model's root
            keep = ~certified & good0 & np.isfinite(d)
            above = f > 0
            l_hi = np.where(above, np.minimum(l_hi, l0), l_hi)
            l_lo = np.where(above, l_lo, np.maximum(l_lo, l0))
            l_next = l0 + d
            l_next = np.where((l_next > l_lo) & (l_next < l_hi), l_next, 0.5 * (l_lo + l_hi))
        rows, l0, l_lo, l_hi = rows[keep], l_next[keep], l_lo[keep], l_hi[keep]
        if rows.size == 0:
            break
    return lam_out, mean_out, kl_out, ok


def solve_lam_for_kl(ref: Reference, kl):
    """``lam`` (reward units) with ``D(lam) = kl``; ``inf`` when saturated.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> lam = solve_lam_for_kl(ref, 0.1)
    >>> round(float(tilted(ref, lam=lam).kl), 12)
    0.1
    """
    check_reference(ref)
    kl = np.asarray(kl, dtype=float)
    if np.isnan(kl).any():
        raise ValueError("kl is NaN")
    if (kl < 0).any():
        raise ValueError("kl must be >= 0")
    flat = kl.ravel()
    out = np.zeros(flat.size)
    if not ref.is_constant:
        sat = flat >= ref.kl_max
        out[sat] = np.inf
        mid = (flat > 0) & ~sat
        if mid.any():
            out[mid] = ref.lam_from_u(_solve_increasing(ref, flat[mid], "kl"))
    out = out.reshape(kl.shape)
    return float(out) if out.ndim == 0 else out


def solve_lam_for_reward(ref: Reference, reward):
    """``lam >= 0`` (reward units) with ``Lambda'(lam) = reward``.

    ``reward`` must lie in ``[E_p r, r_max]``; ``r_max`` gives ``inf``.
    """
    check_reference(ref)
    reward = np.asarray(reward, dtype=float)
    flat = reward.ravel()
    if ref.is_constant:
        out = np.zeros(flat.size)
    else:
        x = (flat / 2 - ref.r_max / 2) / ref._half_range    # standardised target (no overflow near float max)
        gap = x - ref.mean_u
        if np.any(gap < -1e-12 * max(1.0, abs(ref.mean_u))) or np.any(x > 1e-15):
            raise ValueError("reward must lie in [E_p r, r_max] for lam >= 0")
        out = np.zeros(flat.size)
        top = x >= 0
        out[top] = np.inf
        mid = (gap > 0) & ~top
        if mid.any():
            out[mid] = ref.lam_from_u(_solve_increasing(ref, gap[mid], "reward"))
    out = out.reshape(reward.shape)
    return float(out) if out.ndim == 0 else out


# ------------------------------------------------------------------- policies
def _saturated_policy(ref: Reference, kl_budget):
    lev = np.full(ref.n_levels, -np.inf)
    lev[-1] = 0.0
    return Policy(ref, "tilted", lev, kl=ref.kl_max, reward=ref.r_max,
                  params={"lam": np.inf, "saturated": True, "kl_budget": kl_budget})


def tilted(ref: Reference, *, kl=None, beta=None, lam=None) -> Policy:
    """Optimal KL-constrained policy ``phi_lam(y) = p(y) e^{lam r(y) - Lambda(lam)}``.

    Give exactly one of

    * ``kl``: the budget Δ; solves ``D(lam) = Δ``.  For ``Δ >= -log p(A)`` the
      optimum is ``p(. | A)`` (``saturated=True``, ``lam=inf``; the budget is
      not used up);
    * ``beta``: the KL-regularised form ``max E r - beta KL``, ``lam = 1/beta``;
    * ``lam``: the inverse temperature itself (``inf`` allowed).

    Returns
    -------
    Policy
        ``method="tilted"``, with ``lam``, ``saturated``, ``kl_budget`` and
        ``regularized_value`` (``beta Lambda(1/beta)`` when ``lam > 0``).

    Notes
    -----
    ``KL = lam Lambda'(lam) - Lambda(lam)``, reward ``Lambda'(lam)``; a constant
    reward returns ``p`` with ``lam = 0``.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> pol = tilted(ref, kl=0.1)
    >>> round(pol.kl, 12), round(pol.reward, 6), round(pol.lam, 6)
    (0.1, 1.059857, 0.546514)
    >>> tilted(ref, kl=5.0).saturated
    True
    """
    check_reference(ref)
    name, val = one_of(kl=kl, beta=beta, lam=lam)
    val = real_scalar(val, name, allow_inf=True)
    if name == "kl":
        if val < 0:
            raise ValueError("kl must be >= 0")
        # (a constant reward returns p with lam = 0 for every budget, inf included)
        if not ref.is_constant and val >= ref.kl_max:
            return _saturated_policy(ref, val)
        lam_val = float(solve_lam_for_kl(ref, val))
        budget = val
    elif name == "beta":
        if not val > 0:
            raise ValueError("beta must be > 0")
        lam_val = 1.0 / val
        budget = None
    else:
        if val < 0:
            raise ValueError("lam must be >= 0 (negative lam lowers the reward)")
        lam_val = val
        budget = None
    if ref.is_constant or lam_val == 0:
        return Policy(ref, "tilted", ref.level_logq.copy(), kl=0.0, reward=ref.mean_reward,
                      params={"lam": 0.0, "saturated": False, "kl_budget": budget})
    lam_u = ref.lam_to_u(lam_val)
    if not np.isfinite(lam_u) or lam_u > 1e300:
        return _saturated_policy(ref, budget)
    st = tilt_stats(ref, [lam_u])
    lev = ref.level_logq + lam_u * ref.level_u - st.cgf[0]
    params = {"lam": lam_val, "saturated": False, "kl_budget": budget}
    if lam_val > 0:
        # beta Lambda(1/beta) = r_max + Lambda_u(lam_u) / lam = r_max + 2 h Lambda_u / lam_u, in
        # halves h: Lambda_u / lam alone overflows for rewards near float max (sweep_numerics)
        c = float(st.cgf[0]) / lam_u
        params["regularized_value"] = (ref.r_max + c * ref._half_range) + c * ref._half_range
    # gain_u * (r_max - r_min) through the half range: the range itself overflows for rewards
    # near ±float max, where reward_scale is inf (sweep_numerics)
    gain = float(st.gain[0]) * 2.0 * ref._half_range
    if np.isfinite(gain):
        reward = ref.mean_reward + gain
    else:
        reward = 2.0 * (ref.mean_reward / 2 + float(st.gain[0]) * ref._half_range)
    reward = min(max(reward, ref.r_min), ref.r_max)
    return Policy(ref, "tilted", lev, kl=float(st.kl[0]), reward=reward, params=params, gain=gain)


@dataclass
class Frontier:
    """The reward-KL frontier ``R*(Δ)`` sampled at budgets ``kl``.

    Attributes
    ----------
    kl : ndarray
        Requested budgets Δ.
    kl_used : ndarray
        ``min(Δ, -log p(A))``: the KL the optimal policy actually spends.
    reward : ndarray
        ``R*(Δ) = Lambda'(lam_Δ)``.
    lam : ndarray
        ``lam_Δ`` (``inf`` where saturated); ``dR*/dΔ = 1/lam_Δ``.
    saturated : ndarray of bool
    """

    kl: np.ndarray
    kl_used: np.ndarray
    reward: np.ndarray
    lam: np.ndarray
    saturated: np.ndarray

    @property
    def slope(self):
        """``dR*/dΔ = 1/lam`` (0 where saturated, ``inf`` at Δ = 0)."""
        with np.errstate(divide="ignore"):
            return np.where(self.saturated, 0.0, 1.0 / self.lam)

    def as_dict(self):
        """The arrays as plain Python lists, keyed by field name."""
        return {k: getattr(self, k).tolist() for k in ("kl", "kl_used", "reward", "lam", "saturated")}


def frontier(ref: Reference, kl) -> Frontier:
    """Reward-KL frontier ``R*(Δ)`` at many budgets at once.

    Parameters
    ----------
    ref : Reference
    kl : array_like
        Budgets Δ >= 0 (any shape; flattened).

    Examples
    --------
    >>> ref = Reference([0.0, 1.0, 2.0], probs=[0.5, 0.3, 0.2])
    >>> fr = frontier(ref, [0.0, 0.1, 10.0])
    >>> fr.reward.round(6).tolist(), fr.saturated.tolist()
    ([0.7, 1.059857, 2.0], [False, False, True])
    """
    check_reference(ref)
    budgets = np.asarray(kl, dtype=float).ravel()
    if budgets.size == 0:
        raise ValueError("kl is empty")
    if np.isnan(budgets).any():
        raise ValueError("kl contains NaN")
    if (budgets < 0).any():
        raise ValueError("kl must be >= 0")
    n = budgets.size
    lam = np.zeros(n)
    reward = np.full(n, ref.mean_reward)
    used = np.zeros(n)
    sat = np.zeros(n, dtype=bool)
    if not ref.is_constant:
        sat = budgets >= ref.kl_max
        lam[sat] = np.inf
        reward[sat] = ref.r_max
        used[sat] = ref.kl_max
        mid = (budgets > 0) & ~sat
        if mid.any():
            m = int(mid.sum())
            lam_u, mean_u, kl_u = np.empty(m), np.empty(m), np.empty(m)
            fast = np.zeros(m, dtype=bool)
            if m >= _MANY_BUDGETS:
                # one exact pass per budget, statistics returned by the solver
                lam_u, mean_u, kl_u, fast = _solve_kl_many(ref, budgets[mid])
            if not fast.all():
                lr = _solve_increasing(ref, budgets[mid][~fast], "kl")
                st = tilt_stats(ref, lr)
                lam_u[~fast], mean_u[~fast], kl_u[~fast] = lr, st.mean, st.kl
            lam[mid] = ref.lam_from_u(lam_u)
            reward[mid] = ref.to_reward(mean_u)
            used[mid] = kl_u
    return Frontier(kl=budgets, kl_used=used, reward=reward, lam=lam, saturated=sat)
