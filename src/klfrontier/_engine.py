"""The tilt engine: exponential tilts of a level law, and the solvers built on them.

Theory §2 and §5.  A *level law* is a set of log-masses ``logq`` on
standardised values ``u`` in ``[-1, 0]`` (one law ``(L,)``; the batch
kernels also take ``(T, L)``).  Tilting by ``lam``,

    phi_lam(j) = q_j exp(lam u_j - Lambda(lam)),   Lambda(lam) = log sum_j q_j e^{lam u_j},

``Lambda'`` is the tilted mean, ``Lambda''`` its variance and
``D(lam) = lam Lambda'(lam) - Lambda(lam) = KL(phi_lam || q)``.

Every caller of the library's tilts goes through this module:

* :class:`LevelLaw` with :func:`tilt_stats` (cumulants 1..3, KL and the
  gain with their relative accuracy from ``|lam| = 1e-300`` up, by the
  cumulant series, the centred sums and the recentring at the mode) and
  :func:`stats4` (cumulants 1..4 in one pass);
* :func:`centred_cgf`, :func:`log_tilt` and :func:`end_rows` for batches of
  tilts (and of laws, ``(T, L)``), with :func:`log1p_rule` the one rule for
  ``log sum q e^x`` (also the empirical tilts' rule, with :func:`cap_shift`);
* :func:`solve_kl` (``D(lam) = target``) and :func:`solve_mean`
  (``Lambda'(t) = x``, or any increasing statistic), both taking a
  statistics callback and vectorised over targets.

The module imports only numpy, scipy, :mod:`klfrontier._logspace` and
:mod:`klfrontier.errors`; the public modules hand it arrays (a
``Reference`` hands its ``level_law``).

>>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
>>> st = tilt_stats(law, [0.0, 1.0])
>>> st.mean.round(12).tolist(), round(float(st.kl[1]), 12)
([-0.5, -0.26894142137], 0.110944071672)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import logsumexp

from ._logspace import kl_terms
from .errors import ConvergenceError

__all__ = [
    "LevelLaw",
    "TiltStats",
    "tilt_stats",
    "series_stats",
    "stats4",
    "level_cumulants",
    "moment_cumulants",
    "series_terms",
    "centres",
    "groups",
    "tilt_sums",
    "cgf_series",
    "cgf_at_mode",
    "centred_cgf",
    "log1p_rule",
    "expm1_sums",
    "cap_shift",
    "LOG1P_MIN",
    "X_CAP",
    "log_tilt",
    "tilted_mean_var",
    "mean_from_ends",
    "end_rows",
    "EndRows",
    "chunks",
    "level_logphi",
    "solve_t",
    "interior_rates",
    "solve_kl",
    "solve_kl_iter",
    "solve_kl_many",
    "solve_mean",
    "SERIES_LAM",
]

_EPS = float(np.finfo(float).eps)

# Below this |lam| the cumulant series (truncated after kappa_6) is exact to
# ~1e-15 and, unlike the direct sums, keeps D ~ lam^2 var / 2 exact.
SERIES_LAM = 1e-3

# log(1 + s) is taken as log1p(s) down to s = -1/2 (:func:`log1p_rule`).
LOG1P_MIN = -0.5
# The largest exponent an empirical tilt forms directly (:func:`cap_shift`).
X_CAP = 50.0
# Exponents of at most this magnitude take ``expm1``, there no dearer than ``exp`` (glibc's fast range).
EXPM1_FAST = 0.3

# Elements of one (rows x levels) tile of the work matrix: small enough to stay
# in cache, large enough that numpy's per-call overhead does not show.
_TILE_ELEMENTS = 2**16
_TILE_COLS = 4096
# Rows x levels processed at once by the batch kernels.
_CHUNK_ELEMENTS = 2**22
_FACT = (1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0)


class LevelLaw:
    """One level law: log-masses ``logq`` on standardised values ``u`` in ``[-1, 0]``.

    Parameters
    ----------
    logq : (L,) array_like
        Log-masses (normalised up to rounding; ``-inf`` not allowed).
    u : (L,) array_like
        Values, ascending, in ``[-1, 0]`` (``(r - r_max) / (r_max - r_min)``).
    mean : float, optional
        ``sum_j q_j u_j`` if known more accurately than the direct sum.

    Notes
    -----
    The derived arrays (``q``, ``log sum q``, the cumulants of ``u``) are
    computed once, on first use.

    >>> law = LevelLaw(np.log([0.25, 0.75]), np.array([-1.0, 0.0]))
    >>> law.mean, law.cumulants[2]
    (-0.25, 0.1875)
    """

    def __init__(self, logq, u, mean=None):
        self.logq = np.asarray(logq, dtype=float)
        self.u = np.asarray(u, dtype=float)
        if self.logq.shape != self.u.shape or self.u.ndim != 1:
            raise ValueError("logq and u must be 1-d arrays of one length")
        self.mean = float(np.exp(self.logq) @ self.u) if mean is None else float(mean)

    @cached_property
    def q(self):
        """``exp(logq)``."""
        return np.exp(self.logq)

    @cached_property
    def logq_min(self) -> float:
        """``min(logq)``."""
        return float(self.logq.min())

    @cached_property
    def log_sum_q(self) -> float:
        """``log sum q`` (0 up to rounding)."""
        return float(np.log(self.q.sum()))

    @property
    def spread(self) -> float:
        """``max(-mean, 1 + mean)``: the largest distance of the mean to an end."""
        return max(-self.mean, 1.0 + self.mean, 1e-300)

    @cached_property
    def cumulants(self):
        """Cumulants ``kappa_2..kappa_6`` of ``u`` (a dict keyed by order)."""
        return level_cumulants(self.logq, self.u, self.mean)

    @cached_property
    def sd(self) -> float:
        """Standard deviation of ``u`` (``>= 1e-150``)."""
        dev = self.u - self.mean
        return float(np.sqrt(max(float(self.q @ (dev * dev)), 1e-300)))


@dataclass
class TiltStats:
    """Exact statistics of ``phi_lam`` at a batch of ``lam`` (standardised units).

    ``cgf`` is ``Lambda(lam)``; ``mean``, ``var``, ``k3`` are the first
    three cumulants of ``u`` under ``phi``; ``kl`` is ``D(lam)``; ``gain`` is
    ``E_phi u - E_q u`` formed as the centred covariance
    ``sum_j q_j (e^{x_j - Lambda} - 1)(u_j - mu)`` (or its cumulant series), not
    as a difference of two rounded means.
    """

    lam_u: np.ndarray
    cgf: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    k3: np.ndarray
    kl: np.ndarray
    gain: np.ndarray


def centres(lam_u, mu):
    """Centre for each tilt: the mean ``mu`` for small ``|lam|``, the active end otherwise.

    Centring at the bulk of the tilted law keeps ``lam (u - c)`` and the
    CGF small, so ``D = lam E(u - c) - Lambda_c`` loses no relative accuracy.

    >>> centres(np.array([0.1, 50.0, -50.0]), -0.5).tolist()
    [-0.5, 0.0, -1.0]
    """
    lam_u = np.asarray(lam_u, dtype=float)
    spread = max(-mu, 1.0 + mu, 1e-300)
    return np.where(np.abs(lam_u) * spread <= 1.0, mu, np.where(lam_u > 0, 0.0, -1.0))


def tilt_sums(law: LevelLaw, lam, centre, centred):
    """``Lambda_c``, raw moments ``E_phi (u - c)^k`` (k = 1..4) and, centred, the gain, for rows ``lam``.

    One pass over (rows x levels) tiles: ``X = lam (u - c)``, then
    ``e^X`` (or ``expm1(X)`` when ``centred``: ``c`` is the mean and
    ``|X| <= 1``, so ``Lambda_c = log1p(sum q expm1(X))`` keeps its relative
    accuracy), and one matrix product with the tile's ``q (u - c)^k`` columns.
    ``lam (u - c) <= 0`` off-centre (``c`` is the active end), so nothing
    overflows; a row whose partition sum would underflow is redone with a
    per-row shift.

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> lc, m, g = tilt_sums(law, np.array([0.0]), -0.5, True)
    >>> float(lc[0]), m[0].tolist()
    (0.0, [0.0, 0.25, 0.0, 0.0625])
    """
    u, logq = law.u, law.logq
    q, logq_min, log_sum_q = law.q, law.logq_min, law.log_sum_q
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
            X = np.multiply(lam_col[r0:r1], uc, out=buf[: r1 - r0, :w])
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
        m[low] = (wts @ np.stack([uc, uc**2, uc**3, uc**4], axis=1)) / tot[:, None]
    return lam_c, m, None


def groups(law: LevelLaw, lam):
    """``(centre, row indices, centred)`` for each distinct centre of the rows ``lam``."""
    c_all = centres(lam, law.mean)
    spread = law.spread
    for centre in np.unique(c_all):
        idx = np.flatnonzero(c_all == centre)
        yield float(centre), idx, bool(np.all(np.abs(lam[idx]) * spread <= 1.0))


def tilt_stats(law: LevelLaw, lam_u, *, accurate=True) -> TiltStats:
    """Cumulants 1..3, KL and gain of the tilted law at inverse temperatures ``lam_u``.

    Parameters
    ----------
    law : LevelLaw
    lam_u : array_like
        Finite inverse temperatures in standardised units (any sign).
    accurate : bool
        Re-evaluate the KL of ill-conditioned rows in the non-negative
        ``sum q h(t)`` form (see :func:`~klfrontier._logspace.kl_terms`).

    Returns
    -------
    TiltStats

    Notes
    -----
    ``|lam| <= SERIES_LAM``: the cumulant series (:func:`series_stats`).
    Otherwise, per row: ``x_j = lam (u_j - c)``, ``Lambda_c = log sum_j q_j
    e^{x_j}`` (as ``log1p(sum q expm1(x))`` when centred at the mean),
    ``phi_j = q_j e^{x_j - Lambda_c}``, raw moments of ``u - c`` by one
    matrix product, ``D = lam m_1 - Lambda_c``.  Rows where that difference
    loses more than four digits are recentred at the mode of ``phi``.

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> float(tilt_stats(law, [1e-8]).kl[0])     # lam^2 var / 2
    1.25e-17
    """
    lam_u = np.atleast_1d(np.asarray(lam_u, dtype=float))
    tiny = np.abs(lam_u) <= SERIES_LAM
    if tiny.any():
        full = TiltStats(lam_u, *(np.empty(lam_u.size) for _ in range(6)))
        ser = series_stats(law, lam_u[tiny])
        rest = tilt_stats(law, lam_u[~tiny], accurate=accurate) if (~tiny).any() else None
        for k in ("cgf", "mean", "var", "k3", "kl", "gain"):
            getattr(full, k)[tiny] = getattr(ser, k)
            if rest is not None:
                getattr(full, k)[~tiny] = getattr(rest, k)
        return full
    u, logq = law.u, law.logq
    mu = law.mean
    out = {k: np.empty(lam_u.size) for k in ("cgf", "mean", "var", "k3", "kl", "gain")}
    for centre, idx, centred in groups(law, lam_u):
        lam = lam_u[idx]
        lc, m, g = tilt_sums(law, lam, centre, centred)
        m1, m2, m3 = m[:, 0], m[:, 1], m[:, 2]
        # centred at mu, the gain is the covariance sum itself (base_1 = sum q (u - mu) is 0 up
        # to rounding, which would swamp a gain ~ lam var); off-centre it is O(spread)
        gain = g if centred else (centre - mu) + m1
        kl = lam * m1 - lc
        var = np.maximum(m2 - m1 * m1, 0.0)
        k3 = m3 - 3 * m1 * m2 + 2 * m1**3
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
                lam_m = xm + np.log1p(rest.sum(axis=1)) - law.log_sum_q
                logphi = x - lam_m[:, None]
                # t = log(phi/q) directly: logphi - logq would round t to eps |log q|
                # absolute, fatal for the small t of a tiny-q level carrying the KL.
                t = lam[bad, None] * dm - lam_m[:, None]
                small = np.abs(t) < 0.1
                terms = np.where(
                    small,
                    law.q[None, :] * kl_terms(np.where(small, t, 0.0), 0.0),
                    kl_terms(logphi, logq[None, :]),
                )
                kl[bad] = terms.sum(axis=1)
                ph = np.exp(logphi)
                e1 = (ph * dm).sum(axis=1)
                e2 = (ph * dm * dm).sum(axis=1)
                var[bad] = np.maximum(e2 - e1 * e1, 0.0)
                gain[bad] = (u[jm] - mu) + e1
                k3[bad] = (ph * dm**3).sum(axis=1) - 3 * e1 * e2 + 2 * e1**3
        out["cgf"][idx] = lc + lam * centre
        out["mean"][idx] = centre + m1
        out["var"][idx] = var
        out["k3"][idx] = k3
        out["kl"][idx] = np.maximum(kl, 0.0)
        out["gain"][idx] = gain
    return TiltStats(lam_u=lam_u, **out)


def series_stats(law: LevelLaw, lam_u) -> TiltStats:
    """Tilt statistics from the cumulants of ``u`` under ``q`` (small ``|lam|``).

    ``Lambda(l) = mu l + sum_k kappa_k l^k / k!``, so
    ``D(l) = sum_{k>=2} (k-1) kappa_k l^k / k!`` with no cancellation
    (truncated after ``kappa_6``: exact to ~1e-15 for ``|l| <= SERIES_LAM``).

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> float(series_stats(law, [1e-4]).kl[0])
    1.2499999984375e-09
    """
    mu, k = law.mean, law.cumulants
    fact = _FACT
    l = np.asarray(lam_u, dtype=float)
    cgf_, gain, var, kl = series_terms(k, l)
    k3 = sum(k[j] * l ** (j - 3) / fact[j - 3] for j in range(3, 7))
    return TiltStats(lam_u=l, cgf=mu * l + cgf_, mean=mu + gain, var=var, k3=k3, kl=kl, gain=gain)


def cgf_series(cumulants, lam):
    """``Lambda(lam) - mu lam = sum_{k=2}^{6} kappa_k lam^k / k!`` (small ``|lam|``).

    >>> float(cgf_series({2: 1.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0}, 1e-3))
    5e-07
    """
    lam = np.asarray(lam, dtype=float)
    return sum(cumulants[j] * lam**j / _FACT[j] for j in range(2, 7))


def level_cumulants(level_logprobs, u, mean):
    """Cumulants ``kappa_2..kappa_6`` of ``u`` under the level law ``e^level_logprobs`` with mean ``mean``.

    From the central moments ``sum_j phi_j d_j^k``, ``d = u - mean``, chunk by
    chunk (no level-sized temporaries; ``d**k`` would be a pow call per
    element).  The rounding of ``mean`` enters at second order only.

    >>> k = level_cumulants(np.log([0.5, 0.5]), np.array([-1.0, 0.0]), -0.5)
    >>> k[2], k[4]
    (0.25, -0.125)
    """
    m = dict.fromkeys(range(1, 7), 0.0)
    for s in range(0, u.size, _TILE_ELEMENTS):
        d = u[s : s + _TILE_ELEMENTS] - mean
        qd = np.exp(level_logprobs[s : s + _TILE_ELEMENTS])
        qd *= d
        m[1] += float(np.sum(qd))
        for j in range(2, 7):
            qd *= d
            m[j] += float(np.sum(qd))
    return moment_cumulants(m)


def moment_cumulants(m):
    """Cumulants ``kappa_2..kappa_6`` from the moments ``m[1..6]`` about a centre (floats or arrays).

    ``m[1]`` is the mean's offset from the centre; the central moments are
    ``c_k = sum_j C(k, j) m_{k-j} (-m_1)^j`` (``m_0 = 1``), then
    ``kappa_4 = c_4 - 3 c_2^2``, ``kappa_5 = c_5 - 10 c_3 c_2``,
    ``kappa_6 = c_6 - 15 c_4 c_2 - 10 c_3^2 + 30 c_2^3``.  With a centre at
    the mean up to rounding, ``m_1`` enters at second order only.

    >>> k = moment_cumulants({1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5, 6: 0.5})   # Bernoulli(1/2)
    >>> [float(k[j]) for j in (2, 4)]
    [0.25, -0.125]
    """
    a = -m[1]
    mom = {0: 1.0, **{j: m[j] for j in range(1, 7)}}
    c = {}
    for k in range(2, 7):
        # Horner in a: sum_j C(k, j) m_{k-j} a^j
        acc = math.comb(k, k) * mom[0]
        for j in range(k - 1, -1, -1):
            acc = acc * a + math.comb(k, j) * mom[k - j]
        c[k] = acc
    return {
        2: c[2],
        3: c[3],
        4: c[4] - 3 * c[2] ** 2,
        5: c[5] - 10 * c[3] * c[2],
        6: c[6] - 15 * c[4] * c[2] - 10 * c[3] ** 2 + 30 * c[2] ** 3,
    }


def series_terms(k, lam):
    """``(K, gain, var, kl)`` of a tilt by small ``lam`` from cumulants ``k[2..6]`` (arrays broadcast).

    ``K = Lambda(lam) - mu lam = sum_{j>=2} kappa_j lam^j / j!``, the gain
    ``Lambda'(lam) - mu``, the variance ``Lambda''(lam)`` and
    ``D = lam Lambda' - Lambda = sum_j (j - 1) kappa_j lam^j / j!``: no
    cancellation (truncated after ``kappa_6``: exact to ~1e-15 for
    ``|lam| span <= SERIES_LAM``).

    >>> [float(v) for v in series_terms({2: 1.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0}, 1e-3)]
    [5e-07, 0.001, 1.0, 5e-07]
    """
    fact = _FACT
    ks = range(2, 7)
    cgf_ = cgf_series(k, lam)
    gain = sum(k[j] * lam ** (j - 1) / fact[j - 1] for j in ks)
    var = sum(k[j] * lam ** (j - 2) / fact[j - 2] for j in ks)
    kl = sum((j - 1) * k[j] * lam**j / fact[j] for j in ks)
    return cgf_, gain, var, kl


def stats4(law: LevelLaw, lam):
    """Cumulants 1..4 of ``u``, ``Lambda`` and ``D`` under ``phi_lam`` (``|lam| > SERIES_LAM``).

    One pass of :func:`tilt_sums`.  ``ok`` flags rows whose ``D = lam m1 -
    Lambda_c`` is well conditioned (the test :func:`tilt_stats` uses to switch
    to the ``q h(t)`` form) and whose variance is positive.

    Returns
    -------
    cgf, mean, var, k3, k4, kl, ok : ndarrays

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> [round(float(v[0]), 12) for v in stats4(law, np.array([0.5]))[2:5]]
    [0.235003712202, -0.057556794852, -0.09635675629]
    """
    lam = np.asarray(lam, dtype=float)
    n = lam.size
    cgf_, mean, var, k3, k4, kl = (np.empty(n) for _ in range(6))
    ok = np.empty(n, dtype=bool)
    for centre, idx, centred in groups(law, lam):
        lm = lam[idx]
        lc, m, _ = tilt_sums(law, lm, centre, centred)
        m1, m2, m3, m4 = m.T
        d = lm * m1 - lc
        ok[idx] = np.abs(d) * 1e4 > np.abs(lm) * np.sqrt(m2) + np.abs(lc)
        kl[idx] = d
        cgf_[idx] = lc + lm * centre
        mean[idx] = centre + m1
        var[idx] = m2 - m1 * m1
        k3[idx] = m3 - 3 * m1 * m2 + 2 * m1**3
        k4[idx] = m4 - 4 * m3 * m1 - 3 * m2 * m2 + 12 * m2 * m1 * m1 - 6 * m1**4
    return cgf_, mean, var, k3, k4, kl, ok & (var > 0)


def cgf_at_mode(law: LevelLaw, lam_u):
    """``(j, Lambda(lam) - lam u_j)``: the CGF about the tilted law's mode level ``j``.

    ``Lambda(lam) = lam u_j + log q_j + log1p(sum_{i != j} e^{lev_i - lev_j})``,
    ``lev = log q + lam u`` and ``j`` its argmax: no term larger than the
    result cancels, so a caller adding ``t r_j`` in its own units keeps full
    accuracy where anchoring at an end would cancel.

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> j, rest = cgf_at_mode(law, 3.0)
    >>> j, round(rest, 12)       # log(0.5 (1 + e^-3))
    (1, -0.644559828986)
    """
    j = int(np.argmax(law.logq + lam_u * law.u))
    d = (law.logq - law.logq[j]) + lam_u * (law.u - law.u[j])
    rest = np.exp(np.delete(d, j))
    return j, float(law.logq[j] + np.log1p(np.sum(rest)))


# ------------------------------------------------------------ batch kernels
def _rows_2d(logq, t):
    """``logq`` as ``(T, L)`` or ``(1, L)`` and ``t`` as ``(T,)``; ValueError on a mismatch."""
    logq = np.asarray(logq, dtype=float)
    t = np.atleast_1d(np.asarray(t, dtype=float))
    if logq.ndim == 2 and logq.shape[0] != t.size:
        raise ValueError(f"logq has {logq.shape[0]} rows for {t.size} tilts")
    return (logq if logq.ndim == 2 else logq[None, :]), t


def cap_shift(top, lam):
    """Shift ``c >= 0`` with ``lam (top - c) <= X_CAP``: ``max(0, top - X_CAP / lam)`` (0 at ``lam = 0``).

    An empirical tilt forms ``e^{lam (d - c)}`` of centred rewards ``d``; the
    shift keeps every exponent at most ``X_CAP`` (no overflow) and moves it
    only where an exponent would pass it.

    >>> cap_shift(np.array([1.0, 100.0]), np.array([1.0, 1.0])).tolist()
    [0.0, 50.0]
    """
    with np.errstate(divide="ignore"):
        return np.maximum(0.0, top - X_CAP / lam)


def expm1_sums(x, q=None, out=None, bound=None):
    """``e = e^x - 1`` of each row of ``x`` ``(T, L)`` and the row sums ``s = sum_j q_j e_j``.

    Parameters
    ----------
    x : (T, L) ndarray
    q : (L,) or (T, L) ndarray, optional
        Weights (default ones: ``s`` is the plain row sum).
    out : (T, L) ndarray, optional
        Receives ``e``.
    bound : (T,) ndarray, optional
        A bound on each row's largest ``|x_j|``, where the caller knows one
        (default: the rows' extremes, one pass over ``x``).

    Returns
    -------
    e : (T, L) ndarray
    s : (T,) ndarray

    Notes
    -----
    Rows whose exponents all lie in ``[-EXPM1_FAST, EXPM1_FAST]`` take
    ``expm1`` (exact to an ulp of each term, and there as fast as ``exp``).
    Elsewhere ``exp(x) - 1`` is about twice as fast as ``expm1`` and rounds
    each term by at most ``2 eps (1 + e^x)``; a row keeps it where that
    bound, summed, is below ``1e-13 |s|``, and is redone with ``expm1``
    elsewhere: rows whose exponents are mostly small, where ``s`` of order
    ``x^2`` would lose its digits.  Each row's form depends on that row
    only.  Past overflow ``s`` is inf or NaN (for :func:`log1p_rule`).

    >>> e, s = expm1_sums(np.array([[1e-9, -1e-9], [2.0, 0.0]]))
    >>> float(s[0]), round(float(s[1]), 12)
    (1e-18, 6.389056098931)
    """
    if bound is None:
        with np.errstate(invalid="ignore"):
            bound = np.maximum(x.max(axis=1, initial=-np.inf), -x.min(axis=1, initial=np.inf))
    small = bound <= EXPM1_FAST  # (NaN: not small)
    if q is None:
        qq = None
        mass = float(x.shape[1])
    else:
        q = np.asarray(q, dtype=float)
        qq = np.broadcast_to(q, x.shape)
        mass = q.sum(axis=-1)  # one total for a shared law, one per row otherwise

    def sums(e):
        return e.sum(axis=1) if qq is None else np.einsum("ij,ij->i", e, qq)

    with np.errstate(over="ignore", invalid="ignore"):
        if small.all():
            e = np.expm1(x, out=out)
            return e, sums(e)
        e = np.exp(x, out=out)
        e -= 1.0
        s = sums(e)
        redo = small | ~(4.0 * _EPS * (2.0 * mass + np.abs(s)) <= 1e-13 * np.abs(s))
        if redo.any():  # row by row: a row's result does not depend on the batch
            rows = np.flatnonzero(redo)
            er = np.expm1(x[rows])
            e[rows] = er
            s[rows] = er.sum(axis=1) if qq is None else np.einsum("ij,ij->i", er, qq[rows])
    return e, s


def log1p_rule(s, fallback):
    """``log(1 + s)`` for sums ``s = sum_j q_j expm1(x_j)``: the one rule of every CGF in the library.

    Parameters
    ----------
    s : ndarray
        Row sums (any shape) of ``q_j expm1(x_j)``, so ``1 + s = sum_j q_j e^{x_j}``.
    fallback : callable
        ``fallback(mask)`` returns ``log(1 + s)`` by another route for the
        entries where ``mask`` is true (typically ``logsumexp(log q + x)``).

    Returns
    -------
    ndarray

    Notes
    -----
    Where ``s >= LOG1P_MIN = -1/2`` (and finite), ``log1p(s)`` is exact to a
    few ulp absolutely and, unlike ``log sum q e^x``, keeps its relative
    accuracy as ``x -> 0``: a row centred at its mean has ``s >= 0`` by
    Jensen's inequality, so its CGF of order ``t^2 var`` keeps its digits.
    Below (a centre above the bulk of the law: ``1 + s`` cancels) or where
    an exponent overflowed, ``fallback``.

    >>> float(log1p_rule(np.array([1e-20]), None)[0])
    1e-20
    """
    s = np.asarray(s, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (s >= LOG1P_MIN) & (s < np.inf)
        # log(1 + s) is about twice as fast as log1p(s) (vectorised log) and, for s >= 1/4, within
        # 2.3 ulp of it (1 + s rounds by eps/2, and |log(1 + s)| >= 0.22); each entry's form depends
        # on its own value only
        k = np.log(1.0 + s)
        small = s < 0.25
        if small.any():
            np.log1p(s, out=k, where=small)
    if not ok.all():
        bad = ~ok
        k[bad] = fallback(bad)
    return k


def centred_cgf(logq, u, t, c):
    """``K_c(t) = log sum_j q_j e^{x_j}``, ``x_j = t (u_j - c)``, per row ``(t, c)``.

    Parameters
    ----------
    logq : (L,) or (T, L) array_like
        One level law, or one per row.
    u : (L,) or (T, L) array_like
    t, c : (T,) array_like
        Tilts and centres.

    Returns
    -------
    K : (T,) ndarray
    x : (T, L) ndarray

    Notes
    -----
    ``K = log1p(sum_j q_j expm1(x_j))`` by :func:`log1p_rule`, which keeps
    ``K`` accurate as ``t -> 0``; rows the rule rejects (a centre at an end of
    the law, with ``sum q e^x`` far below 1) take ``logsumexp(log q + x)``.

    >>> float(centred_cgf(np.log([0.5, 0.5]), np.array([-1.0, 0.0]), [1e-9], [-0.5])[0][0])
    1.25e-19
    """
    lq, t = _rows_2d(logq, t)
    u = np.asarray(u, dtype=float)
    u2 = u if u.ndim == 2 else u[None, :]
    x = t[:, None] * (u2 - np.atleast_1d(np.asarray(c, dtype=float))[:, None])
    _, s = expm1_sums(x, np.exp(lq))  # inf or NaN past overflow: the rule rejects it
    lq2 = np.broadcast_to(lq, x.shape)
    return log1p_rule(s, lambda rows: logsumexp(lq2[rows] + x[rows], axis=1)), x


def log_tilt(logq, v, t):
    """Log-law ``log q_j + t v_j - kappa(t)`` and ``kappa(t) = log sum_j q_j e^{t v_j}``.

    Any values ``v`` (rewards, lattice indices, standardised levels); each
    row is shifted by its largest exponent (the tilted law's mode), so no
    exponent overflows and the log-law keeps full relative accuracy.

    Parameters
    ----------
    logq : (L,) or (T, L) array_like
    v : (L,) array_like
    t : (T,) array_like

    Returns
    -------
    logphi : (T, L) ndarray
    kappa : (T,) ndarray

    >>> lp, k = log_tilt(np.log([0.5, 0.5]), np.array([0.0, 1.0]), [0.0])
    >>> np.exp(lp).tolist(), float(k[0])
    ([[0.5, 0.5]], 0.0)
    """
    lq, t = _rows_2d(logq, t)
    lw = lq + t[:, None] * np.asarray(v, dtype=float)[None, :]
    with np.errstate(invalid="ignore"):
        mx = np.max(lw, axis=1, keepdims=True)
        kap = mx[:, 0] + np.log(np.sum(np.exp(lw - mx), axis=1))
    return lw - kap[:, None], kap


def tilted_mean_var(logq, v, t):
    """``kappa(t)``, tilted mean and variance of ``v`` for an array of tilts (one law ``(L,)``).

    Rows in chunks of ``_CHUNK_ELEMENTS``; each row shifted by its largest
    exponent, as in :func:`log_tilt`.

    >>> k, m, s2 = tilted_mean_var(np.log([0.5, 0.5]), np.array([0.0, 1.0]), [0.0])
    >>> float(k[0]), float(m[0]), float(s2[0])
    (0.0, 0.5, 0.25)
    """
    v = np.asarray(v, dtype=float)
    logq = np.asarray(logq, dtype=float)
    th = np.atleast_1d(np.asarray(t, dtype=float))
    kap, mu, var = (np.empty(th.size) for _ in range(3))
    rows = [slice(None)] if th.size * v.size <= _CHUNK_ELEMENTS else chunks(th.size, v.size)
    for sl in rows:
        lw = logq[None, :] + th[sl, None] * v[None, :]
        mx = lw.max(axis=1, keepdims=True)
        w = np.exp(lw - mx)
        tot = w.sum(axis=1)
        kap[sl] = mx[:, 0] + np.log(tot)
        p = w / tot[:, None]
        mu[sl] = p @ v
        d = v[None, :] - mu[sl, None]
        var[sl] = np.einsum("ij,ij->i", p, d * d)
    return kap, mu, var


def chunks(n, L):
    """Slices of ``range(n)`` rows such that rows x ``L`` levels stay below ``_CHUNK_ELEMENTS``."""
    step = max(1, _CHUNK_ELEMENTS // max(L, 1))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def mean_from_ends(phi, u):
    """``(E(-u), E(1 + u), E u)`` under the level law ``phi`` (last axis).

    The distances of the mean to the two ends are sums of non-negative terms
    (full relative accuracy); the mean is taken from the nearer end.

    >>> [float(x) for x in mean_from_ends(np.array([0.5, 0.5]), np.array([-1.0, 0.0]))]
    [0.5, 0.5, -0.5]
    """
    dtop = phi @ (-u)
    dbot = phi @ (1.0 + u)
    return dtop, dbot, np.where(dtop <= dbot, -dtop, dbot - 1.0)


def level_logphi(law: LevelLaw, t_u):
    """Log level law of ``phi_t`` and ``Lambda(t)`` (one finite ``t_u``).

    >>> lp, k = level_logphi(LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0])), 0.0)
    >>> np.exp(lp).tolist(), float(k)
    ([0.5, 0.5], 0.0)
    """
    c = float(centres(t_u, law.mean))
    k = float(centred_cgf(law.logq, law.u, [t_u], [c])[0][0])
    return law.logq + t_u * (law.u - c) - k, k + t_u * c


@dataclass
class EndRows:
    """Statistics of ``phi_t`` for a batch of ``t`` (standardised units).

    ``dtop = E(-u)`` and ``dbot = E(1 + u)`` are the distances of the mean to
    the two ends (sums of non-negative terms: full relative accuracy);
    ``kl`` holds ``KL(phi_t || phi_lam)`` for each requested ``lam``.
    """

    t: np.ndarray
    dtop: np.ndarray
    dbot: np.ndarray
    var: np.ndarray
    mean: np.ndarray
    kl: list


def end_rows(law: LevelLaw, t_u, kl_to=()) -> EndRows:
    """Tilt statistics at many ``t_u``, in chunks of rows; ``kl_to`` lists ``lam_u``.

    With the row's centre ``c`` and ``K_c`` as in :func:`centred_cgf`,
    ``KL(phi_t || phi_lam) = (t - lam)(Lambda'(t) - c) - K_c(t) + K_c(lam)``;
    rows where that difference loses more than 4 digits are redone in the
    non-negative ``sum q h`` form of :func:`klfrontier._logspace.kl_terms`.

    >>> r = end_rows(LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0])), [0.0], kl_to=(0.0,))
    >>> float(r.dtop[0]), float(r.var[0]), float(r.kl[0][0])
    (0.5, 0.25, 0.0)
    """
    u, logq = law.u, law.logq
    t_all = np.atleast_1d(np.asarray(t_u, dtype=float))
    c_all = centres(t_all, law.mean)
    n = t_all.size
    out = {k: np.empty(n) for k in ("dtop", "dbot", "var", "mean")}
    kls = [np.empty(n) for _ in kl_to]
    # K_c(lam) for each target and each centre in use; the target's log-law
    cs = np.unique(c_all)
    targets = [
        (lv, centred_cgf(logq, u, np.full(cs.size, lv), cs)[0], level_logphi(law, lv)[0]) for lv in kl_to
    ]
    for sl in chunks(n, u.size):
        t = t_all[sl]
        c = c_all[sl]
        k, x = centred_cgf(logq, u, t, c)
        logphi = logq[None, :] + x - k[:, None]
        phi = np.exp(logphi)
        dtop, dbot, mean = mean_from_ends(phi, u)
        near_top = dtop <= dbot
        d = u[None, :] - mean[:, None]
        out["var"][sl] = np.einsum("ij,ij->i", phi, d * d)
        out["dtop"][sl], out["dbot"][sl], out["mean"][sl] = dtop, dbot, mean
        mc = np.where(near_top, -dtop - c, dbot - (1.0 + c))  # mean - c, accurately
        which = np.searchsorted(cs, c)
        for dst, (lv, k_l_by_c, logphi_l) in zip(kls, targets):
            k_l = k_l_by_c[which]
            val = (t - lv) * mc - k + k_l
            scale = np.abs((t - lv) * mc) + np.abs(k) + np.abs(k_l)
            bad = ~(val > 1e-4 * scale)
            if bad.any():
                val[bad] = kl_terms(logphi[bad], logphi_l[None, :]).sum(axis=1)
            dst[sl] = np.maximum(val, 0.0)
    return EndRows(t_all, kl=kls, **out)


def solve_t(law: LevelLaw, x_u, *, ends=None, max_iter=200):
    """``t_u`` with ``Lambda'(t) = x_u`` for ``-1 < x_u < 0`` (any sign of ``t``).

    :func:`solve_mean` on ``log E_t(-u) = log(-x)`` (upper half) or
    ``log E_t(1+u) = log(1+x)`` (lower half): both are close to linear in
    ``t`` far out in the tails, where the plain equation is flat.  The bracket
    starts infinite, steps are capped at ``10 + 2|t|``; ``ends`` gives the
    distances ``(1 + x, -x)`` when they are known more accurately than from
    ``x_u``.  A bracket narrower than ``1e-12 |t|`` also ends a row: ``t``
    enters the rates only at second order.

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> round(float(solve_t(law, np.array([-0.25]))[0]), 12)     # log 3
    1.098612288668
    """
    x_u = np.asarray(x_u, dtype=float)
    top = x_u >= -0.5
    with np.errstate(divide="ignore"):
        if ends is None:
            ltar = np.where(top, np.log(-x_u), np.log1p(x_u))
        else:
            ltar = np.where(top, np.log(ends[1]), np.log(ends[0]))
    sgn = np.where(top, -1.0, 1.0)  # sgn * (log d - ltar) increases with t
    var0 = max(float(end_rows(law, [0.0]).var[0]), 1e-300)

    def stats(t, rows):
        st = end_rows(law, t)
        tp = top[rows]
        dist = np.where(tp, st.dtop, st.dbot)
        with np.errstate(divide="ignore"):
            g = sgn[rows] * (np.log(dist) - ltar[rows])
        return g, st.var / np.maximum(dist, 1e-320)

    return solve_mean(
        stats,
        np.zeros(x_u.size),
        t0=np.clip((x_u - law.mean) / var0, -50.0, 50.0),
        lo=-np.inf,
        hi=np.inf,
        tol=4e-16,
        ftol=8 * _EPS * np.maximum(1.0, np.abs(ltar)),
        btol=1e-12,
        cap=True,
        max_iter=max_iter,
        name="t(x)",
    )


def interior_rates(law: LevelLaw, x_u, lams=(0.0,), ends=None):
    """Rate functions ``I_lam`` (and tilt data) at interior points ``-1 < x_u < 0``.

    Returns ``(rates, t, var)``, one rate array per ``lam_u`` in ``lams``; each
    is ``KL(phi_t || phi_lam) + (t - lam)(x - Lambda'(t))``: the sup in
    ``I_lam(x) = sup_s [s x - Lambda_lam(s)]`` evaluated at the solved
    ``s = t - lam``, so the solver's error enters only at second order.

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> round(float(interior_rates(law, np.array([-0.25]))[0][0][0]), 12)   # KL(Bern(3/4)||Bern(1/2))
    0.130812035941
    """
    t = solve_t(law, x_u, ends=ends)
    st = end_rows(law, t, kl_to=lams)
    if ends is None:
        miss = x_u - st.mean
    else:  # x - Lambda'(t) as a difference of distances to one end
        miss = np.where(x_u >= -0.5, st.dtop - ends[1], ends[0] - st.dbot)
    rates = [np.maximum(k + (t - lv) * miss, 0.0) for k, lv in zip(st.kl, lams)]
    return rates, t, st.var


# ------------------------------------------------------------------ solvers
def solve_mean(
    stats,
    x,
    *,
    t0=None,
    lo=None,
    hi=None,
    tol=1e-14,
    ftol=0.0,
    btol=0.0,
    cap=False,
    max_iter=300,
    strict=True,
    name="mean",
):
    """Solve ``stats(t, rows)[0] = x`` for ``t`` (vectorised): safeguarded Newton in a bracket.

    Parameters
    ----------
    stats : callable
        ``stats(t, rows) -> (value, slope)`` for the tilts ``t`` of the rows
        ``rows`` (indices into ``x``); ``value`` increases with ``t`` and
        ``slope`` is its derivative (for a tilted mean, the variance).
    x : array_like
        Targets.
    t0 : array_like, optional
        Start (default 0, clipped into the bracket).
    lo, hi : array_like, optional
        Bracket (may be infinite).  When not given it is grown by doubling
        from ``[-1, 1]`` until it brackets every target.
    tol : float
        Converged when the Newton step is below ``tol max(1, |t|)``.
    ftol : float or array_like
        ... or when ``|value - x|`` is at most ``ftol`` (per row allowed) ...
    btol : float
        ... or when the bracket is narrower than ``btol max(1, |t|)``: where
        ``value`` is known only to rounding noise, Newton can hop inside the
        noise band for ever.
    cap : bool
        Limit each Newton step to ``10 + 2|t|`` (needed with an infinite bracket).
    max_iter : int
    strict : bool
        After ``max_iter`` iterations raise :class:`~klfrontier.errors.ConvergenceError`
        (``True``) or return the last iterates (``False``: for callers whose
        value is known only to rounding noise near the root, where a relative
        step tolerance like ``1e-15`` need not be reachable).
    name : str
        Named in the :class:`~klfrontier.errors.ConvergenceError`.

    Returns
    -------
    ndarray
        The roots.

    Notes
    -----
    A step that is not finite (a plateau: the slope underflows), leaves the
    bracket, or lands on one of its ends (a 2-cycle between two iterates
    whose values differ by rounding only) is replaced by bisection.  A
    converged row returns its last Newton iterate when that step is small
    (error quadratic in the step), else the current iterate.

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> def mv(t, rows):
    ...     st = tilt_stats(law, t)
    ...     return st.mean, st.var
    >>> t = solve_mean(mv, [-0.5, -0.25])
    >>> [round(float(v), 12) for v in t]     # log(x/(1-x)) for mean x + 1 of Bernoulli
    [0.0, 1.098612288668]
    """
    x = np.atleast_1d(np.asarray(x, dtype=float))
    n = x.size
    all_rows = np.arange(n)
    ftol = np.broadcast_to(np.asarray(ftol, dtype=float), (n,))
    if lo is None or hi is None:
        lo = np.full(n, -1.0) if lo is None else np.array(np.broadcast_to(lo, (n,)), dtype=float)
        hi = np.full(n, 1.0) if hi is None else np.array(np.broadcast_to(hi, (n,)), dtype=float)
        for _ in range(80):
            bad = stats(lo, all_rows)[0] > x
            if not bad.any():
                break
            lo = np.where(bad, 2 * lo, lo)
        for _ in range(80):
            bad = stats(hi, all_rows)[0] < x
            if not bad.any():
                break
            hi = np.where(bad, 2 * hi, hi)
    else:
        lo = np.array(np.broadcast_to(lo, (n,)), dtype=float)
        hi = np.array(np.broadcast_to(hi, (n,)), dtype=float)
    t = np.zeros(n) if t0 is None else np.array(np.broadcast_to(t0, (n,)), dtype=float)
    t = np.clip(t, lo, hi)
    out = np.empty(n)
    active = all_rows
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(max_iter):
            ta = t[active]
            value, slope = stats(ta, active)
            f = value - x[active]
            l_ = np.where(f < 0, np.maximum(lo[active], ta), lo[active])
            h_ = np.where(f > 0, np.minimum(hi[active], ta), hi[active])
            lo[active], hi[active] = l_, h_
            step = -f / slope
            if cap:
                c = 10.0 + 2.0 * np.abs(ta)
                step = np.where(np.isfinite(step), np.clip(step, -c, c), np.where(f > 0, -c, c))
            cand = ta + step
            mid = 0.5 * (l_ + h_)
            # a step that is not finite, leaves the bracket or lands on one of its ends bisects
            nxt = np.where((cand > l_) & (cand < h_), cand, mid)
            nxt = np.where(np.isfinite(nxt), nxt, np.where(np.isfinite(cand), cand, ta))
            scale = np.maximum(1.0, np.abs(ta))
            astep = np.abs(step)
            # converged: the Newton step or the actual move (a bisection inside a bracket
            # closed to the noise band of the value) is below tol, |f| <= ftol, or the
            # bracket is below btol
            done = (
                (astep <= tol * scale)
                | (np.abs(nxt - ta) <= tol * scale)
                | (np.abs(f) <= ftol[active])
                | (f == 0)
                | (h_ - l_ <= btol * scale)
            )
            if done.any():
                keep = np.isfinite(cand) & (astep <= 1e-8 * scale)
                out[active[done]] = np.where(keep, cand, ta)[done]
            t[active] = nxt
            active = active[~done]
            if active.size == 0:
                return out
    if not strict:
        out[active] = t[active]
        return out
    raise ConvergenceError(f"{name} solver did not converge for {active.size} targets", partial=t.copy())


def _log_kl_derivs(lam, var, k3, k4, kl):
    """``f_k = d^k log D / dl^k``, k = 1..3, ``l = log lam``."""
    lam2 = lam * lam
    g1 = lam2 * var / kl
    g2 = (2 * lam2 * var + lam2 * lam * k3) / kl
    g3 = (4 * lam2 * var + 5 * lam2 * lam * k3 + lam2 * lam2 * k4) / kl
    return g1, g2 - g1 * g1, g3 - 3 * g1 * g2 + 2 * g1**3


def solve_kl(stats, target, *, sd, stats4_fn=None, tol=1e-14, max_iter=60):
    """``lam > 0`` with ``D(lam) = target`` (vectorised over targets).

    Parameters
    ----------
    stats : callable
        ``stats(lam) -> TiltStats`` (at least ``lam_u``, ``kl``, ``var``,
        ``k3``, ``mean``; ``kl`` accurate to a few ulp relative).
    target : array_like
        KL targets, ``0 < target < D(inf)``.
    sd : float
        Standard deviation of the untilted law (sets the start of the grid).
    stats4_fn : callable, optional
        ``stats4_fn(lam) -> (cgf, mean, var, k3, k4, kl, ok)`` (one pass,
        as :func:`stats4`).  Given, and with at least 16 targets, the
        one-pass path (:func:`solve_kl_many`) solves most targets; the rest
        go to the iteration.
    tol : float
        Absolute tolerance on ``log lam``.
    max_iter : int

    Returns
    -------
    lam, mean, kl : ndarrays
        The roots and ``Lambda'``, ``D`` there.

    Notes
    -----
    Works in ``(log lam, log D)`` coordinates, where ``D`` is close to linear
    at both ends: a bracketing grid gives a cubic-Hermite start, then
    safeguarded Halley steps on exact evaluations of the unconverged rows
    (bisection where a step is not finite, leaves the bracket or lands on
    one of its ends).

    >>> law = LevelLaw(np.log([0.5, 0.5]), np.array([-1.0, 0.0]))
    >>> lam, mean, kl = solve_kl(lambda l: tilt_stats(law, l), [0.1], sd=law.sd)
    >>> round(float(kl[0]), 15), round(float(lam[0]), 12)
    (0.1, 0.943443117578)
    """
    target = np.atleast_1d(np.asarray(target, dtype=float))
    m = target.size
    lam_u, mean_u, kl_u = np.empty(m), np.empty(m), np.empty(m)
    fast = np.zeros(m, dtype=bool)
    if stats4_fn is not None and m >= _MANY_BUDGETS:
        lam_u, mean_u, kl_u, fast = solve_kl_many(stats4_fn, target, sd)
    if not fast.all():
        lr = solve_kl_iter(stats, target[~fast], sd, tol, max_iter)
        st = stats(lr)
        lam_u[~fast], mean_u[~fast], kl_u[~fast] = lr, st.mean, st.kl
    return lam_u, mean_u, kl_u


def solve_kl_iter(stats, target, sd, tol=1e-14, max_iter=60):
    """The iteration of :func:`solve_kl`: ``lam`` for each target."""

    def g_and_slopes(st):
        lam = st.lam_u
        # lam_u can reach ~1e300 when the top levels nearly tie (relative gap
        # 1e-200): the slopes then overflow to inf/nan and the iteration
        # bisects.
        with np.errstate(over="ignore", invalid="ignore"):
            d1 = lam * lam * st.var  # dD/dl, l = log lam
            d2 = 2 * lam * lam * st.var + lam**3 * st.k3  # d2D/dl2
        return st.kl, d1, d2

    # grid in log lam: start where D is tiny, extend until above all targets.
    tmin = float(target.min())
    lo = np.log(max(np.sqrt(2 * tmin) / max(sd, 1e-150), 1e-300)) - 1.0
    hi = lo + 2.0
    nodes = [np.linspace(lo, hi, 5)]
    # Grid nodes are evaluated accurately: a grid that dips back to 0 above the
    # root would bracket a spurious crossing.
    gs = [g_and_slopes(stats(np.exp(nodes[0])))]
    # A skewed law (tiny variance, heavy top tail) makes the Gaussian start
    # overshoot: extend the grid downwards until its first node is below every target.
    while gs[0][0][0] > tmin and lo > -745:
        new = np.linspace(lo - 2.0, lo, 6)[:-1]
        lo -= 2.0
        nodes.insert(0, new)
        gs.insert(0, g_and_slopes(stats(np.exp(new))))
    while gs[-1][0][-1] < target.max():
        # every non-top level is below e^-745 relative: saturated in floats.
        # (700, not 745: the next nodes reach hi + 2 and exp must not overflow.)
        if hi > 700:
            break
        new = np.linspace(hi, hi + 2.0, 6)[1:]
        hi = hi + 2.0
        nodes.append(new)
        gs.append(g_and_slopes(stats(np.exp(new))))
    ell = np.concatenate(nodes)
    g = np.concatenate([x[0] for x in gs])
    d1 = np.concatenate([x[1] for x in gs])
    with np.errstate(divide="ignore"):
        lg = np.log(np.maximum(g, 1e-320))
    slope = d1 / np.maximum(g, 1e-320)  # d log D / d log lam
    lt = np.log(target)
    k = np.clip(np.searchsorted(lg, lt), 1, lg.size - 1)
    # cubic Hermite inverse interpolation of l(log D) between bracketing nodes
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
    l_cur = np.where(np.isfinite(l_cur), l_cur, 0.5 * (l_lo + l_hi))  # nan slopes
    result = np.empty_like(target)
    active = np.arange(target.size)
    for _ in range(max_iter):
        gv, dg1, dg2 = g_and_slopes(stats(np.exp(l_cur[active])))
        f = np.log(np.maximum(gv, 1e-320)) - lt[active]
        # near the root log(D/target) directly: log D - log target is granular at
        # ulp(log target), which the tolerances cannot beat
        near = np.abs(f) < 0.5
        f[near] = np.log(gv[near] / target[active][near])
        with np.errstate(over="ignore", invalid="ignore"):  # inf slopes: bisection below
            f1 = dg1 / np.maximum(gv, 1e-320)
            f2 = dg2 / np.maximum(gv, 1e-320) - f1 * f1
        above = f > 0
        l_hi[active] = np.where(above, np.minimum(l_hi[active], l_cur[active]), l_hi[active])
        l_lo[active] = np.where(~above, np.maximum(l_lo[active], l_cur[active]), l_lo[active])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            newton = -f / np.maximum(f1, 1e-300)
            denom = 1 + 0.5 * newton * f2 / np.maximum(f1, 1e-300)
            # Halley only while its correction is moderate: on the flat, nearly
            # saturated side of a step-like D the Newton step leaves the bracket
            # and bisection takes over.
            step = np.where((denom > 0.5) & (denom < 2.0), newton / np.where(denom == 0, 1, denom), newton)
        # a vanishing slope (a plateau of D) gives a non-finite step: bisect
        step = np.where(np.isfinite(newton) & np.isfinite(denom), step, np.nan)
        cand = l_cur[active] + step
        # Converged: a step below the resolution of log lam (absolute tol, or a few
        # ulps of log lam), |log(D/target)| at rounding level, or a bracket closed to
        # evaluation noise (where neither the step nor f can reach the tolerances).
        done = (
            (np.abs(step) < np.maximum(tol, 4 * _EPS * np.abs(l_cur[active])))
            | (np.abs(f) < 1e-15)
            | (l_hi[active] - l_lo[active] < 1e-12)
        )
        # A candidate on a bracket end counts as outside: with D granular at rounding
        # level, the step from each end can land on the other, a 2-cycle that never
        # shrinks the bracket.  (Not for converged rows: f = 0 gives a zero step.)
        on_end = (cand == l_lo[active]) | (cand == l_hi[active])
        outside = (cand < l_lo[active]) | (cand > l_hi[active]) | ~np.isfinite(cand) | (on_end & ~done)
        cand = np.where(outside, 0.5 * (l_lo[active] + l_hi[active]), cand)
        # A converged row keeps its last Halley step (error cubic in the step) when it
        # is small; on a flat stretch of D the step is rounding noise and the
        # converged iterate itself is kept.
        keep_step = np.isfinite(step) & (np.abs(step) <= 1e-8)
        result[active[done]] = np.where(keep_step, cand, l_cur[active])[done]
        l_cur[active] = cand
        active = active[~done]
        if active.size == 0:
            return np.exp(result)
    raise ConvergenceError(
        f"lambda solver (kl) did not converge for {active.size} targets", partial=np.exp(l_cur)
    )


# solve_kl_many: node spacing of its grid in log lam, the largest step (in log
# lam) it takes from one exact evaluation, and the relative size of the last
# Taylor terms it accepts (the next ones are smaller still).
_GRID_H = 0.25
_MAX_STEP = 1e-3
_TAYLOR_TOL = 1e-13
_ROUNDS = 4
# solve_kl uses solve_kl_many from this many targets on (its grid costs ~35 rows)
_MANY_BUDGETS = 16


def solve_kl_many(stats4_fn, target, sd):
    """``lam``, ``E_phi u`` and ``D`` at ``D(lam) = target`` for many targets, one pass each.

    A grid in ``l = log lam`` (a few rows) gives a quintic-Hermite start for
    ``l(log D)``; one exact pass at the start yields ``D`` and the cumulants
    1..4, from which a step on the cubic Taylor model of ``log D(l)`` and
    Taylor updates of ``D`` and the mean give the solution without another
    pass.  Rows where the step or the Taylor remainder is not negligible (or
    ``D`` is ill-conditioned) come back with ``ok = False``.
    """
    target = np.asarray(target, dtype=float)
    n = target.size
    lam_out, mean_out, kl_out = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    ok = np.zeros(n, dtype=bool)
    lt = np.log(target)
    l_min = np.log(4 * SERIES_LAM)
    lo = max(np.log(np.sqrt(2 * target.min()) / sd) - 1.0, l_min)

    def nodes_stats(ells):
        lam = np.exp(ells)
        _, _, var, k3, k4, kl, good = stats4_fn(lam)
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
    inside &= good[kk - 1] & good[kk] & (lg[kk] > lg[kk - 1]) & (lg[kk - 1] <= lt) & (lt <= lg[kk])
    if not inside.any():
        return lam_out, mean_out, kl_out, ok
    rows = np.flatnonzero(inside)
    a, b = kk[rows] - 1, kk[rows]
    H = lg[b] - lg[a]
    t = (lt[rows] - lg[a]) / H
    # quintic Hermite for the inverse l(y), y = log D: l' = 1/f1, l'' = -f2/f1^3
    d1a, d1b = 1 / f1[a], 1 / f1[b]
    d2a, d2b = -f2[a] * d1a**3, -f2[b] * d1b**3
    t2, t3 = t * t, t * t * t
    t4, t5 = t3 * t, t3 * t2
    l0 = (
        ell[a] * (1 - 10 * t3 + 15 * t4 - 6 * t5)
        + ell[b] * (10 * t3 - 15 * t4 + 6 * t5)
        + H * d1a * (t - 6 * t3 + 8 * t4 - 3 * t5)
        + H * d1b * (-4 * t3 + 7 * t4 - 3 * t5)
        + H * H * d2a * 0.5 * (t2 - 3 * t3 + 3 * t4 - t5)
        + H * H * d2b * 0.5 * (t3 - 2 * t4 + t5)
    )
    l_lo, l_hi = ell[a], ell[b]
    l0 = np.clip(l0, l_lo, l_hi)
    for _ in range(_ROUNDS):
        lam0 = np.exp(l0)
        _, mean, var, k3, k4, kl, good0 = stats4_fn(lam0)
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
            # Taylor in lam: Lambda' = mean, Lambda'' = var, ...; D' = lam var,
            # D'' = var + lam k3, D''' = 2 k3 + lam k4.
            t_mean = (var * h, k3 * h * h / 2, k4 * h**3 / 6)
            t_kl = (lam0 * var * h, (var + lam0 * k3) * h * h / 2, (2 * k3 + lam0 * k4) * h**3 / 6)
            mean1 = mean + (t_mean[0] + t_mean[1] + t_mean[2])
            kl1 = kl + (t_kl[0] + t_kl[1] + t_kl[2])
            certified = (
                good0
                & (np.abs(d) <= _MAX_STEP)
                & (np.abs(g3 * d**3) <= 6e3 * _TAYLOR_TOL * np.abs(g1 * d) + 1e-300)
                & (np.abs(t_mean[2]) <= _TAYLOR_TOL * np.sqrt(var))
                & (np.abs(t_kl[2]) <= _TAYLOR_TOL * kl1)
                & np.isfinite(lam1 + mean1 + kl1)
            )
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
