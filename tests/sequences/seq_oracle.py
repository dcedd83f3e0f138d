"""mpmath oracles for the sequence engines (50 significant digits, definition level).

They share no code with ``klfrontier``: the law of ``S_m`` by brute-force
m-fold convolution, and sequence-level best-of-N from the definitions
``d(s) = F(s)^N - F^-(s)^N``, ``KL = Σ d log(d/q)``, ``φ_Δ ∝ q e^{λ s}``.
"""

from __future__ import annotations

import mpmath as mp

DPS = 50


def lattice_law(ks, probs, m):
    """``[log P(T_m = t)]`` for ``t = 0..m L`` by m-fold convolution (``-inf`` where impossible)."""
    with mp.workdps(DPS):
        L = max(ks)
        base = [mp.mpf(0)] * (L + 1)
        tot = mp.fsum(mp.mpf(p) for p in probs)
        for k, p in zip(ks, probs):
            base[k] += mp.mpf(p) / tot
        cur = base[:]
        for _ in range(m - 1):
            new = [mp.mpf(0)] * (len(cur) + L)
            for i, a in enumerate(cur):
                if a == 0:
                    continue
                for k, b in enumerate(base):
                    if b != 0:
                        new[i + k] += a * b
            cur = new
        return [mp.log(x) if x > 0 else mp.ninf for x in cur]


def count_law(values, probs, m):
    """Law of ``S_m`` for arbitrary level values: convolution over count vectors.

    Returns a list of ``(sum, log P)`` sorted by sum, sums equal to 1e-12 (float grids put lattice ties ulps apart)
    merged.
    """
    with mp.workdps(DPS):
        K = len(values)
        tot = mp.fsum(mp.mpf(p) for p in probs)
        q = [mp.mpf(p) / tot for p in probs]
        cur = {tuple([0] * K): mp.mpf(1)}
        for _ in range(m):
            new = {}
            for key, a in cur.items():
                for j in range(K):
                    k2 = list(key)
                    k2[j] += 1
                    k2 = tuple(k2)
                    new[k2] = new.get(k2, mp.mpf(0)) + a * q[j]
            cur = new
        vals = [mp.mpf(v) for v in values]
        pairs = sorted((mp.fsum(n * v for n, v in zip(key, vals)), p) for key, p in cur.items())
        out = []
        for s, p in pairs:
            if out and abs(s - out[-1][0]) < mp.mpf(10) ** -12:  # float grids: ties off by ulps
                out[-1][1] += p
            else:
                out.append([s, p])
        return [(s, mp.log(p)) for s, p in out]


def sequence_bon(values, logpmf, log_n, lam=None):
    """(reward, KL(π_N||p^m), KL(π_N||φ_λ)) of BoN over a law given by (values, logpmf)."""
    with mp.workdps(DPS):
        vs = [mp.mpf(v) for v in values]
        q = [mp.exp(mp.mpf(x)) for x in logpmf]
        tot = mp.fsum(q)
        q = [x / tot for x in q]
        N = mp.exp(mp.mpf(log_n))
        # survival from the top: F = 1 - S keeps tails like e^-5000 (F^N = exp(N log1p(-S)))
        S, acc = [], mp.mpf(0)
        for x in reversed(q):
            S.append(acc)
            acc += x
        S = S[::-1]
        d = []
        for s_, x in zip(S, q):
            incl = min(s_ + x, mp.mpf(1))
            lo = mp.exp(N * mp.log1p(-incl)) if incl < 1 else mp.mpf(0)
            d.append(mp.exp(N * mp.log1p(-min(s_, mp.mpf(1)))) - lo)
        rew = mp.fsum(x * v for x, v in zip(d, vs))
        kl = mp.fsum(x * mp.log(x / y) for x, y in zip(d, q) if x > 0)
        if lam is None:
            return rew, kl, None
        lam = mp.mpf(lam)
        top = max(vs)
        w = [y * mp.exp(lam * (v - top)) for y, v in zip(q, vs)]
        Z = mp.fsum(w)
        phi = [x / Z for x in w]
        klo = mp.fsum(x * mp.log(x / y) for x, y in zip(d, phi) if x > 0)
        return rew, kl, klo


def lam_for_kl(values, probs, delta):
    """λ with ``KL(φ_λ || p) = δ`` for a per-token law (bisection in 60 digits)."""
    with mp.workdps(DPS + 10):
        vs = [mp.mpf(v) for v in values]
        tot = mp.fsum(mp.mpf(p) for p in probs)
        q = [mp.mpf(p) / tot for p in probs]
        top = max(vs)

        def D(lam):
            w = [x * mp.exp(lam * (v - top)) for x, v in zip(q, vs)]
            Z = mp.fsum(w)
            phi = [x / Z for x in w]
            return mp.fsum(f * mp.log(f / x) for f, x in zip(phi, q) if f > 0)

        lo, hi = mp.mpf(0), mp.mpf(1)
        while D(hi) < delta:
            hi *= 2
        for _ in range(250):
            mid = (lo + hi) / 2
            if D(mid) < delta:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2
