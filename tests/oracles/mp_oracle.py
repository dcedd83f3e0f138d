"""mpmath reference implementations of theory §2-§3, good to 50 significant digits.

Deliberately naive, definition-level formulas (no log-space tricks, no
shared code with ``klfrontier``) evaluated in arbitrary precision.  Two
devices make "50 correct digits" true even for extreme inputs:

* the working precision starts above the dynamic range of the inputs
  (``-log10`` of the smallest probability and of ``|lam| * reward range``),
  so that ``1 - 1e-300`` is never rounded to 1; and
* every result is recomputed at doubled precision until two runs agree to
  ``DPS + 5`` digits (:func:`_autoprec`).

``make_tables.py`` uses these functions to write ``tables.json``; the tests
also call them directly for small cases.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import mpmath as mp

DPS = 50


# ----------------------------------------------------------------- plumbing
def _digits_below_one(x):
    """Number of decimal digits needed to see ``x`` next to 1 (0 if x >= 1)."""
    x = abs(mp.mpf(x))
    if x == 0 or x >= 1:
        return 0
    return int(mp.ceil(-mp.log10(x)))


def _start_dps(probs, *small):
    nz = [mp.mpf(p) for p in probs if mp.mpf(p) != 0]
    extra = max(_digits_below_one(p) for p in nz)
    for s in small:
        extra += _digits_below_one(s)
    return DPS + 20 + extra


def _flat(res):
    out = []
    for x in res:
        out.extend(x if isinstance(x, list) else [x])
    return out


def _autoprec(fn, start, *args):
    """``fn(*args)`` at rising precision until two runs agree to DPS + 5 digits.

    Agreement is relative, plus an absolute floor ``10^-(p - 10)`` at the lower
    precision ``p`` (>= 70 digits), so that exact zeros (KL of N = 1) settle.
    """
    prec = start
    with mp.workdps(prec):
        prev = fn(*args)
    while True:
        floor = mp.mpf(10) ** (-(prec - 10))
        prec *= 2
        with mp.workdps(prec):
            cur = fn(*args)
            ok = all(
                abs(a - b) <= mp.mpf(10) ** (-(DPS + 5)) * abs(b) + floor
                for a, b in zip(_flat(prev), _flat(cur))
            )
        if ok:
            return cur
        if prec > 40000:
            raise RuntimeError("oracle precision did not settle")
        prev = cur


def levels(rewards, probs):
    """Distinct reward levels (ascending) and their masses; zero-probability outcomes dropped.

    Masses are normalised by their (current-precision) sum.
    """
    acc = {}
    for r, p in zip(rewards, probs):
        p = mp.mpf(p)
        if p == 0:
            continue
        r = mp.mpf(r)
        acc[r] = acc.get(r, mp.mpf(0)) + p
    vs = sorted(acc)
    tot = mp.fsum(acc.values())
    return vs, [acc[v] / tot for v in vs]


def _range(rewards, probs):
    vs = [mp.mpf(r) for r, p in zip(rewards, probs) if mp.mpf(p) != 0]
    return max(vs) - min(vs)


# ------------------------------------------------------------ tilted policy
def _cgf(rewards, probs, t):
    vs, qs = levels(rewards, probs)
    t = mp.mpf(t)
    m = max(t * v for v in vs)
    return (m + mp.log(mp.fsum(q * mp.exp(t * v - m) for v, q in zip(vs, qs))),)


def cgf(rewards, probs, t):
    """``Lambda(t) = log E_p e^{t r}``."""
    start = _start_dps(probs, abs(mp.mpf(t)) * _range(rewards, probs))
    return _autoprec(_cgf, start, rewards, probs, t)[0]


def _tilt(rewards, probs, lam):
    vs, qs = levels(rewards, probs)
    lam = mp.mpf(lam)
    m = max(lam * v for v in vs)
    w = [q * mp.exp(lam * v - m) for v, q in zip(vs, qs)]
    Z = mp.fsum(w)
    phi = [x / Z for x in w]
    kl = mp.fsum(f * mp.log(f / q) for f, q in zip(phi, qs) if f != 0)
    rew = mp.fsum(f * v for f, v in zip(phi, vs))
    var = mp.fsum(f * (v - rew) ** 2 for f, v in zip(phi, vs))
    return kl, rew, m + mp.log(Z), var, phi


def tilt_all(rewards, probs, lam):
    """``(KL, reward, Lambda, variance, level law)`` of ``phi_lam``."""
    start = _start_dps(probs, abs(mp.mpf(lam)) * _range(rewards, probs))
    return _autoprec(_tilt, start, rewards, probs, lam)


def tilt(rewards, probs, lam):
    """``(KL, reward, Lambda, level law)`` of ``phi_lam`` from the definitions."""
    kl, rew, L, _, phi = tilt_all(rewards, probs, lam)
    return kl, rew, L, phi


def _solve_log(g, dlog_g, target):
    """Solve ``g(e^l) = target``, g increasing: bisection, then safeguarded Newton."""
    lt = mp.log(target)
    lo, hi = mp.mpf(-1600), mp.mpf(5)
    while g(mp.exp(hi)) < target:
        lo = hi
        hi += 5
    for _ in range(60):
        mid = (lo + hi) / 2
        if g(mp.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    ell = (lo + hi) / 2
    for _ in range(200):
        lam = mp.exp(ell)
        gv = g(lam)
        if gv <= 0:
            lo, ell = ell, (ell + hi) / 2
            continue
        f = mp.log(gv) - lt
        if f < 0:
            lo = ell
        else:
            hi = ell
        new = ell - f / dlog_g(lam)
        if not lo <= new <= hi:
            new = (lo + hi) / 2
        if abs(new - ell) < mp.mpf(10) ** (-(DPS + 3)):
            return mp.exp(new)
        ell = new
    raise RuntimeError("oracle root finder did not converge")


def lam_for_kl(rewards, probs, delta):
    """``lam`` with ``KL(phi_lam || p) = delta`` (``0 < delta < -log p(A)``)."""
    with mp.workdps(DPS + 15):

        def g(lam):
            return tilt_all(rewards, probs, lam)[0]

        def dlog(lam):  # d log D / d log lam = lam^2 Var / D
            kl, _, _, var, _ = tilt_all(rewards, probs, lam)
            return lam**2 * var / kl

        return _solve_log(g, dlog, mp.mpf(delta))


def lam_for_reward(rewards, probs, reward):
    """``lam > 0`` with ``E_{phi_lam} r = reward`` (``E_p r < reward < r_max``)."""
    with mp.workdps(DPS + 15):
        mean = tilt_all(rewards, probs, 0)[1]

        def g(lam):
            return tilt_all(rewards, probs, lam)[1] - mean

        def dlog(lam):  # d log(m - mean) / d log lam = lam Var / (m - mean)
            _, rew, _, var, _ = tilt_all(rewards, probs, lam)
            return lam * var / (rew - mean)

        return _solve_log(g, dlog, mp.mpf(reward) - mean)


# -------------------------------------------------------------- best-of-N
def _n_digits(log_n):
    """Guard digits for N = e^{log_n}: F^N = exp(N log F) needs log F to
    ``log10(N |log F|)`` extra digits; N - 1 ~ log_n -> 0 makes d - q cancel."""
    log_n = abs(mp.mpf(log_n))
    extra = 10
    if log_n > 1:
        extra += int(mp.ceil(mp.log10(log_n)))
    elif log_n > 0:
        extra += 2 * int(mp.ceil(-mp.log10(log_n)))
    return extra


def _pow(x, n):
    """``x^n`` for ``0 <= x <= 1``; values below ``e^-1e5`` are returned as 0
    (mpmath would spend minutes on the exponent of ``e^{-e^{10^6}}``)."""
    if x == 0 or x == 1:
        return x**1
    e = n * mp.log(x)
    return mp.exp(e) if e > -1e5 else mp.mpf(0)


def _bon(rewards, probs, log_n):
    vs, qs = levels(rewards, probs)
    n = mp.exp(mp.mpf(log_n))
    F, Fm, acc = [], [], mp.mpf(0)
    for q in qs:
        Fm.append(acc)
        acc += q
        F.append(acc)
    F[-1] = mp.mpf(1)  # the top level's CDF is 1 exactly
    d = [_pow(f, n) - _pow(fm, n) for f, fm in zip(F, Fm)] if log_n != 0 else list(qs)
    kl = mp.fsum(x * mp.log(x / q) for x, q in zip(d, qs) if x != 0)
    rew = mp.fsum(x * v for x, v in zip(d, vs))
    win = mp.fsum(x * (fm + q / 2) for x, fm, q in zip(d, Fm, qs))
    return kl, rew, win, d


def bon(rewards, probs, n=None, log_n=None):
    """Exact BoN: ``(KL, reward, win rate, level law d_j = F_j^N - F^-_j^N)``; real N."""
    if log_n is None:
        log_n = mp.log(mp.mpf(n))
    log_n = mp.mpf(log_n)
    # N F^{N-1} q: need the smallest survival next to 1, and log N's own digits.
    start = _start_dps(probs) + _n_digits(log_n)
    return _autoprec(_bon, start, rewards, probs, log_n)


def bon_kl_bound(n=None, log_n=None):
    """``log N - (N - 1)/N``."""
    with mp.workdps(DPS + 20):
        if log_n is None:
            log_n = mp.log(mp.mpf(n))
        log_n = mp.mpf(log_n)
        return log_n + mp.expm1(-log_n)


def _beirami(eps, log_n):
    eps = mp.mpf(eps)
    n = mp.exp(mp.mpf(log_n))
    A = _pow(1 - eps, n)
    t1 = A * (mp.log(n) + (n - 1) * mp.log(1 - eps) - (n - 1) / n) if A != 0 else mp.mpf(0)
    B = 1 - A
    t2 = B * mp.log(B / eps) if B != 0 else mp.mpf(0)
    return (t1 + t2,)


def beirami(eps, n=None, log_n=None):
    """``D_hat(eps)`` of Beirami et al. (arXiv 2401.01879), theory §3."""
    if log_n is None:
        log_n = mp.log(mp.mpf(n))
    eps = mp.mpf(eps)  # (at the caller's precision: 1 - eps may be 1e-200)
    start = _start_dps([eps, 1 - eps]) + _n_digits(log_n)
    return _autoprec(_beirami, start, eps, log_n)[0]


def beirami_expectation(rewards, probs, n=None, log_n=None):
    """``E_{y ~ pi_N} D_hat(p(y))`` exactly (the sum over outcomes)."""
    if log_n is None:
        log_n = mp.log(mp.mpf(n))
    _, _, _, d = bon(rewards, probs, log_n=log_n)
    start = _start_dps(probs) + _n_digits(log_n)
    with mp.workdps(start):
        vs, qs = levels(rewards, probs)
        idx = {v: j for j, v in enumerate(vs)}
        tot = mp.fsum(mp.mpf(p) for p in probs)
        s = mp.mpf(0)
        for r, p in zip(rewards, probs):
            p = mp.mpf(p) / tot
            if p == 0:
                continue
            j = idx[mp.mpf(r)]
            s += p * d[j] / qs[j] * beirami(p, log_n=log_n)
        return +s


def brute_force_bon(rewards, probs, n):
    """Exact BoN outcome law by enumerating all ``K^n`` ordered tuples (integer n).

    ``probs`` are Fractions (exact arithmetic); ties among the maxima are
    broken uniformly at random.  Returns Fractions aligned with the outcomes.
    """
    K = len(rewards)
    out = [Fraction(0)] * K
    for tup in itertools.product(range(K), repeat=n):
        w = Fraction(1)
        for i in tup:
            w *= probs[i]
        if w == 0:
            continue
        best = max(rewards[i] for i in tup)
        winners = [i for i in tup if rewards[i] == best]
        share = w / len(winners)
        for i in winners:
            out[i] += share
    return out


def extreme_laws(seed, count, k_min=1):
    """Seeded (rewards, probs) arrays mixing plain laws, masses down to 1e-260,
    reward scales 1e+-280 and ties (the inputs of the random mpmath sweeps)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in range(count):
        K = int(rng.integers(k_min, 8))
        kind = i % 4
        if kind == 0:
            p, r = rng.dirichlet(np.ones(K)), rng.normal(size=K)
        elif kind == 1:
            lp = -rng.uniform(0, 600, size=K)
            p = np.exp(lp - lp.max())
            r = rng.normal(size=K) * 10.0 ** rng.uniform(-280, 280)
        elif kind == 2:
            p, r = rng.dirichlet(np.ones(K)), rng.integers(0, 3, size=K).astype(float)
        else:
            p, r = rng.dirichlet(0.1 * np.ones(K)), rng.normal(size=K)
        p = np.maximum(p, 1e-300)
        yield r, p / p.sum()
