"""Exact law of ``S_m`` for lattice rewards: tilted FFT with exact untilting (theory §7).

Per-token rewards ``r = a + h k`` with integer ``k`` in ``[0, L]``; the sum
``T_m = k_1 + ... + k_m`` has support in ``[0, mL]``.  A plain FFT
convolution keeps ~16 digits *relative to the peak* and nothing below it,
while best-of-N at ``N = e^{mδ}`` lives in tails like ``e^{-mδ}``.  So each
piece of the support is computed under a tilted per-token law
``q_λ(k) = q(k) e^{λk - κ(λ)}`` whose bulk sits there, and untilted exactly:

    log P(T = t) = log P_λ(T = t) - λ t + m κ(λ).

Numerical design (measured in ``tests/sequences``):

* the tilted law of ``T`` is obtained on an FFT *window* of length ``n``
  centred at its mean: the aliased tails outside the window carry less than
  ``e^{-(τ + 40)}`` of the peak (Chernoff bound, checked), so ``n`` is a few
  dozen standard deviations ``sqrt(m var_λ)`` instead of ``mL``;
* the characteristic function ``φ_λ(ω)^m`` is formed as
  ``exp(m log φ̃(ω))`` with ``φ̃`` centred at the tilted mean and
  ``log φ̃`` evaluated directly (``log1p``/``atan2`` on
  ``Σ q (-2 sin²(ωd/2) - i sin(ωd))``), which keeps its error at a few ulp
  whatever ``m`` (raising an FFT-computed ``φ`` to the power ``m`` would cost
  ``m`` ulp);
* a value is *trusted* where it is within ``e^{-τ}`` of its window's peak
  (``τ = 12``): the inverse FFT's absolute error is ~1e-16 of the peak, so
  trusted values carry relative error ~1e-11;
* tilts are added greedily until every support point of the requested range
  is trusted under some tilt; per point the tilt with the highest score
  (closest to its bulk) wins;
* the exact support (which sums are possible at all) comes from the sumset
  ``A_m = A_{m-1} + K``, iterated with integer bit sets until its edge
  structure stabilises (then it is ``C ∪ [c, mL-d] ∪ (mL - D)`` for every
  larger ``m``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import scipy.fft as sfft
from scipy.special import logsumexp

from ..errors import ConvergenceError, WindowTooLargeError
from ..lattice import Lattice

__all__ = ["LatticeEngine", "lattice_dp"]

#: Trust depth (nats below a window's peak) for the direct characteristic function.
TAU = 12.0
#: Aliasing mass allowed outside an FFT window, relative to the trust threshold.
_ALIAS_MARGIN = 40.0
#: Relative error of a trusted value per unit of e^{-score} (inverse-FFT floor).
_FLOOR = 2e-16
#: Frequencies whose |φ|^m is below e^-800 are dropped (they are exactly 0 in floats).
_LOG_NEGLIGIBLE = -800.0
_MAX_WINDOW = 2**25
#: Work (|K| L m^2) below which untrustable points are taken from the exact DP.
_MAX_DP_WORK = 2e8


# ------------------------------------------------------------------ support
class _Support:
    """Exact support of ``T_m = Σ k_i`` (which sums are possible).

    Iterates the sumset ``A_{j+1} = A_j + K`` with Python integers as bit
    sets until ``j = m`` or until ``A_j = C ∪ [c, jL-d] ∪ (jL - D)`` with
    ``j >= max(c, d)`` and a long enough middle: then the same ``C``, ``D``
    hold for every larger ``m`` (elements below ``c`` use fewer than ``c``
    non-zero summands, and ``A_{j+1} ⊇ (A_j + 0) ∪ (A_j + L)`` fills the
    middle).  Gives up (``kind='unknown'``: every point of ``[0, mL]`` is
    taken as possible) past ``cap_bits``.
    """

    def __init__(self, ks, m, cap_bits=2**22):
        self.m = m
        L = int(ks[-1])
        self.L = L
        self.mL = m * L
        kl = [int(k) for k in ks]
        cur = 0
        for k in kl:
            cur |= 1 << k
        j = 1
        while True:
            nb = j * L + 1
            bits = _int_bits(cur, nb)
            if j == m:
                self.kind, self.bits = "full", bits
                return
            miss = np.flatnonzero(~bits)
            half = j * L / 2.0
            low = miss[miss < half]
            up = miss[miss >= half]
            c = int(low.max()) + 1 if low.size else 0
            d = int(j * L - up.min()) + 1 if up.size else 0
            if j >= max(c, d) and j * L - d >= c + L - 1:
                self.kind = "stable"
                self.c, self.d = c, d
                self.low = bits[:c].copy()
                self.high = bits[j * L - d + 1 :][::-1].copy()  # high[s] <=> jL - s in A_j
                return
            if (j + 1) * L > cap_bits:
                self.kind = "unknown"
                return
            nxt = 0
            for k in kl:
                nxt |= cur << k
            cur = nxt
            j += 1

    def mask(self, t0, t1):
        """Boolean support indicator for ``t = t0..t1``."""
        t = np.arange(t0, t1 + 1)
        out = (t >= 0) & (t <= self.mL)
        if self.kind == "full":
            inside = out.copy()
            out[inside] = self.bits[t[inside]]
        elif self.kind == "stable":
            lo = out & (t < self.c)
            out[lo] = self.low[t[lo]]
            s = self.mL - t
            hi = out & (s < self.d)
            out[hi] = self.high[s[hi]]
        return out


def _int_bits(x, nbits):
    nbytes = (nbits + 7) // 8
    raw = np.frombuffer(x.to_bytes(nbytes, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:nbits].astype(bool)


# ------------------------------------------------------------------- blocks
@dataclass(eq=False)
class _Block:
    """Tilted law of ``T`` on the window ``t = o .. o + n - 1`` (aliased tails < bound)."""

    lam: float
    kap: float
    mu: float
    var: float
    o: int
    n: int
    p: np.ndarray = field(repr=False)
    kref: int = 0
    kap_ref: float = 0.0
    log_peak: float = 0.0
    tau: float = TAU
    direct: bool = True

    def log_untilt(self, t, m):
        """``-λ t + m κ(λ)`` as ``-λ(t - m k_ref) + m(κ(λ) - λ k_ref)`` (no large cancellation)."""
        return -self.lam * (np.asarray(t, dtype=float) - m * self.kref) + m * self.kap_ref


class LatticeEngine:
    """Stitched tilted-FFT law of ``T_m`` for one lattice and one length ``m``.

    Parameters
    ----------
    lat : Lattice
    m : int
    tau : float
        Trust depth in nats below a window's peak.

    Examples
    --------
    >>> from klfrontier import Reference
    >>> from klfrontier.lattice import detect_lattice
    >>> ref = Reference([0.0, 1.0], probs=[0.7, 0.3])
    >>> eng = LatticeEngine(detect_lattice(ref), 50)
    >>> t, logp, score = eng.law(0, 50)
    >>> from scipy.stats import binom
    >>> bool(np.allclose(logp, binom.logpmf(t, 50, 0.3), rtol=1e-12, atol=0))
    True
    """

    def __init__(self, lat: Lattice, m: int, tau: float = TAU):
        if lat.span < 1:
            raise ValueError("the lattice engine needs at least two reward levels")
        self.lat = lat
        self.m = int(m)
        self.tau = float(tau)
        self.mL = self.m * lat.span
        self.support = _Support(lat.ks, self.m)
        self.blocks: list[_Block] = []
        self.fft_lengths: list[int] = []
        self._dp = None
        self.dp_points = 0

    # --------------------------------------------------------------- windows
    def _window(self, lam, mu, var):
        m, mL, lat = self.m, self.mL, self.lat
        full_n = sfft.next_fast_len(mL + 1, real=True)
        if full_n > _MAX_WINDOW and m * var * 2 * (self.tau + _ALIAS_MARGIN + 8.0) * 4 > _MAX_WINDOW**2:
            raise WindowTooLargeError("the tilted law is too wide for an FFT window; the lattice is too fine")
        sd = np.sqrt(m * var)
        log_peak = min(0.0, -0.5 * np.log(2 * np.pi * max(m * var, 1e-300)))
        log_eps = log_peak - self.tau - _ALIAS_MARGIN
        c = m * mu
        a = sd * np.sqrt(2 * (self.tau + _ALIAS_MARGIN + 8.0)) + lat.span + 8
        for _ in range(60):
            if 2 * a + 1 >= full_n:
                return full_n, 0
            hi_t = int(np.ceil(c + a))
            lo_t = int(np.floor(c - a))
            up = lat.log_tail(m, hi_t, upper=True, lam=lam) if hi_t <= mL else -np.inf
            dn = lat.log_tail(m, lo_t, upper=False, lam=lam) if lo_t >= 0 else -np.inf
            if max(up, dn) <= log_eps:
                break
            a *= 1.3
        n = sfft.next_fast_len(int(np.ceil(2 * a)) + 1, real=True)
        if n >= full_n:
            return full_n, 0
        if n > _MAX_WINDOW:
            raise WindowTooLargeError(
                f"the tilted law needs an FFT window of {n} points (> {_MAX_WINDOW}); "
                "the lattice is too fine for this length"
            )
        o = int(np.floor(c)) - n // 2
        o = min(max(o, 0), mL + 1 - n)
        return n, o

    # ---------------------------------------------------------------- blocks
    def block(self, lam) -> _Block:
        """Tilted law of ``T_m`` under per-token tilt ``λ`` on its FFT window."""
        lat, m = self.lat, self.m
        ks = lat.ks
        kap, mu, var = (float(v[0]) for v in lat.stats([lam]))
        n, o = self._window(lam, mu, var)
        self.fft_lengths.append(n)
        # tilted per-token law, shifted by its largest exponent so that no
        # large λk - κ(λ) cancels (which would perturb q_λ by |λk| ulp)
        kref = int(ks[np.argmax(lat.logq + lam * ks)])
        lw = lat.logq + lam * (ks - kref)
        kap_ref = float(logsumexp(lw))  # κ(λ) - λ k_ref, no cancellation
        lqt = lw - kap_ref
        qt = np.exp(lqt)
        nf = n // 2 + 1
        # screen: |phi| on every frequency from one FFT of the folded per-token law
        fold = np.zeros(n)
        np.add.at(fold, ks % n, qt)
        phi = sfft.rfft(fold)
        with np.errstate(divide="ignore"):
            lmag = m * np.log(np.abs(phi))
        sig = np.flatnonzero(lmag > _LOG_NEGLIGIBLE)
        direct = m > 32 and sig.size * ks.size <= 2**26
        spec = np.zeros(nf, dtype=complex)
        if direct:
            d = ks.astype(float) - mu
            # phase e^{-iω(mμ - o)}: mμ split exactly into integer and fraction
            # (a rounded product would shift the whole law by ~m L ulp)
            mmu = Fraction(float(mu)) * m
            cm = round(mmu)
            d_int = cm - o
            d_frac = float(mmu - cm)
            step = max(1, 2**22 // ks.size)
            for s in range(0, sig.size, step):
                f = sig[s : s + step]
                w = 2 * np.pi * f / n
                X = w[:, None] * d[None, :]
                hs = np.sin(0.5 * X)
                re_z = -(2.0 * hs * hs) @ qt
                im_z = -(np.sin(X) @ qt)
                small = (np.abs(re_z) + np.abs(im_z)) < 0.5
                with np.errstate(divide="ignore"):
                    re_l = np.where(
                        small,
                        0.5 * np.log1p(np.where(small, 2 * re_z + re_z * re_z + im_z * im_z, 0.0)),
                        0.5 * np.log((1.0 + re_z) ** 2 + im_z * im_z),
                    )
                im_l = np.arctan2(im_z, 1.0 + re_z)
                phase = 2 * np.pi * ((f * d_int) % n) / n + w * d_frac
                ang = m * im_l - phase
                spec[f] = np.exp(m * re_l) * (np.cos(ang) + 1j * np.sin(ang))
        else:
            f = sig
            ph = 2 * np.pi * ((f * o) % n) / n
            spec[f] = phi[f] ** m * (np.cos(ph) + 1j * np.sin(ph))
        p = sfft.irfft(spec, n)
        pmax = float(p.max())
        blk = _Block(
            lam=float(lam),
            kap=kap,
            mu=mu,
            var=var,
            o=o,
            n=n,
            p=p,
            kref=kref,
            kap_ref=kap_ref,
            log_peak=np.log(pmax),
            direct=direct,
            tau=self.tau if direct else max(4.0, self.tau - np.log(max(1.0, m * np.log2(n)))),
        )
        self.blocks.append(blk)
        return blk

    def lam_for_mean(self, c):
        """Tilt whose law of ``T_m`` has mean ``c`` (clipped inside ``(0, mL)``)."""
        x = min(max(c / self.m, 0.25 / self.m), self.lat.span - 0.25 / self.m)
        return float(self.lat.solve_lam([x])[0])

    def trusted_run(self, blk, start):
        """Last index ``>= start`` such that every support point in ``[start, end]`` is trusted by ``blk``."""
        lo, hi = max(start, blk.o), min(self.mL, blk.o + blk.n - 1)
        if start < blk.o or lo > hi:
            return start - 1
        p = blk.p[lo - blk.o : hi - blk.o + 1]
        sup = self.support.mask(lo, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)) - blk.log_peak, -np.inf)
        bad = sup & (score < -blk.tau)
        nz = np.flatnonzero(bad)
        return lo + (int(nz[0]) - 1 if nz.size else hi - lo)

    # --------------------------------------------------------------- stitch
    def cover(self, A, B, max_blocks=100000, max_untrusted=8):
        """Add tilts until every possible sum in ``[A, B]`` is trusted by some block.

        Raises :class:`~klfrontier.errors.WindowTooLargeError` after
        ``max_untrusted`` sums that no fresh tilt trusts when the exact DP
        that :meth:`law` uses for such sums is unaffordable.
        """
        A, B = max(0, int(A)), min(self.mL, int(B))
        pos = A
        untrusted = 0
        # points already covered by existing blocks
        while pos <= B:
            best_end = pos - 1
            for blk in self.blocks:
                best_end = max(best_end, self.trusted_run(blk, pos))
            if best_end >= pos:
                pos = best_end + 1
                continue
            sup = self.support.mask(pos, min(B, pos + 4 * self.lat.span + 64))
            if not sup.any():
                pos = pos + sup.size
                continue
            if not sup[0]:
                pos = pos + int(np.argmax(sup))
                continue
            if len(self.blocks) >= max_blocks:
                raise ConvergenceError("lattice engine: too many tilts", partial=self)
            # centre the next tilt ~0.8 trust half-widths above pos
            target = float(pos)
            for _ in range(3):
                th = self.lam_for_mean(target)
                _, _, var = self.lat.stats([th])
                hw = np.sqrt(2 * self.tau * self.m * var[0])
                target = pos + 0.8 * hw
            blk = self.block(self.lam_for_mean(target))
            end = self.trusted_run(blk, pos)
            if end < pos:
                blk = self.block(self.lam_for_mean(float(pos)))
                end = self.trusted_run(blk, pos)
            if end < pos:  # cannot trust this point under any tilt: keep best effort
                untrusted += 1
                if untrusted > max_untrusted and not self._dp_affordable():
                    # each such point costs two FFTs of the window: the law of the sum is jagged
                    # on this lattice (few levels, fine span), which tilts cannot resolve
                    raise WindowTooLargeError(
                        f"more than {max_untrusted} possible sums are trusted by no FFT tilt: "
                        "the law of the sum is too jagged on this lattice"
                    )
                pos += 1
            else:
                pos = end + 1
        return self

    def law(self, A, B):
        """Stitched ``(t, logpmf, score)`` on ``[A, B]`` over possible sums only.

        ``score`` is the winning block's ``log p - log peak`` (trusted when
        ``>= -τ``); the estimated relative error of each value is
        ``_FLOOR e^{-score}``.
        """
        A, B = max(0, int(A)), min(self.mL, int(B))
        self.cover(A, B)
        size = B - A + 1
        logp = np.full(size, -np.inf)
        score = np.full(size, -np.inf)
        for blk in self.blocks:
            lo, hi = max(A, blk.o), min(B, blk.o + blk.n - 1)
            if lo > hi:
                continue
            p = blk.p[lo - blk.o : hi - blk.o + 1]
            pos = p > 0
            with np.errstate(divide="ignore"):
                lp = np.log(np.where(pos, p, 1.0))
            sc = np.where(pos, lp - blk.log_peak - (TAU - blk.tau), -np.inf)
            sl = slice(lo - A, hi - A + 1)
            better = sc > score[sl]
            if better.any():
                t = np.arange(lo, hi + 1)
                val = lp + blk.log_untilt(t, self.m)
                logp[sl] = np.where(better, val, logp[sl])
                score[sl] = np.where(better, sc, score[sl])
        sup = self.support.mask(A, B)
        t = np.arange(A, B + 1)
        bad = sup & (score < -TAU)
        if bad.any() and self._dp_affordable():
            # Points below the concave majorant of log P (small m, extreme masses)
            # sit far from the peak of every tilt; the DP gives them exactly.
            if self._dp is None:
                self._dp = lattice_dp(self.lat, self.m)
            full = np.full(self.mL + 1, -np.inf)
            full[self._dp[0]] = self._dp[1]
            logp[bad] = full[t[bad]]
            score[bad] = 0.0
            self.dp_points += int(bad.sum())
        return t[sup], logp[sup], score[sup]

    def _dp_affordable(self):
        return self.lat.ks.size * self.lat.span * self.m**2 <= _MAX_DP_WORK

    def rel_error(self, score):
        """Estimated relative error of values with the given scores."""
        return _FLOOR * np.exp(np.minimum(-np.asarray(score), 700.0)) * 10.0


# ----------------------------------------------------------- reference DP
def lattice_dp(lat: Lattice, m: int):
    """Law of ``T_m`` by the log-space dynamic program (the "direct" engine).

    ``log P(T_j = t) = logsumexp_k [log P(T_{j-1} = t - k) + log q_k]``, exact
    to rounding (relative error ~ ``j`` ulp) at cost ``O(m^2 L |K|)``; the
    baseline a user would write.

    Returns
    -------
    t, logpmf : ndarrays over the possible sums.

    Examples
    --------
    >>> from klfrontier import Reference
    >>> from klfrontier.lattice import detect_lattice
    >>> ref = Reference([0.0, 1.0], probs=[0.5, 0.5])
    >>> t, lp = lattice_dp(detect_lattice(ref), 3)
    >>> np.exp(lp).round(6).tolist()
    [0.125, 0.375, 0.375, 0.125]
    """
    ks, lq = lat.ks, lat.logq
    L = lat.span
    cur = np.full(L + 1, -np.inf)
    cur[ks] = lq
    M = np.empty((ks.size, m * L + 1))
    for j in range(2, m + 1):
        n = j * L + 1
        W = M[:, :n]
        W.fill(-np.inf)
        for i, k in enumerate(ks):
            W[i, k : k + cur.size] = cur + lq[i]
        mx = W.max(axis=0)
        fin = np.isfinite(mx)
        with np.errstate(invalid="ignore"):
            s = np.exp(W - np.where(fin, mx, 0.0)[None, :]).sum(axis=0)
        with np.errstate(divide="ignore"):
            cur = np.where(fin, mx + np.log(np.where(fin, s, 1.0)), -np.inf)
    t = np.flatnonzero(np.isfinite(cur))
    return t, cur[t]
