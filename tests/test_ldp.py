"""Large deviations, scaled cumulants and the BoN–RL equivalence (theory §5–§6).

Oracles: mpmath at 50 digits for the rate function, the SCGF and the
cumulants of S_m (brute-force enumeration of all K^m sequences); for the
second-order BoN predictions, the *exact* law of S_m — type enumeration with
log-multinomial weights (non-lattice) or a log-space convolution DP (lattice)
— fed to the exact best-of-N of ``klfrontier.bon``.
"""

import itertools
import math

import mpmath as mp
import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

from klfrontier import Reference, best_of_n, cgf, tilted
from klfrontier._logspace import kl_terms
from klfrontier.equivalence import equivalence
from klfrontier.lattice import detect_lattice
from klfrontier.ldp import cumulants, rate_function, scgf

mp.mp.dps = 50
SQRT2 = math.sqrt(2.0)
P3 = [0.5, 0.3, 0.2]
R_SPEC = [0.0, 1.0, SQRT2]  # theory §6 non-lattice example


def ref_spec():
    return Reference(R_SPEC, probs=P3)


# ---------------------------------------------------------------- mpmath oracles
def mp_cgf(r, p, t):
    t = mp.mpf(t)
    return mp.log(mp.fsum(mp.mpf(q) * mp.exp(t * mp.mpf(v)) for v, q in zip(r, p)))


def mp_mean(r, p, t):
    t = mp.mpf(t)
    w = [mp.mpf(q) * mp.exp(t * mp.mpf(v)) for v, q in zip(r, p)]
    return mp.fsum(x * mp.mpf(v) for x, v in zip(w, r)) / mp.fsum(w)


def mp_rate(r, p, x, lam=0):
    """I_lam(x) = sup_t [t x - Lambda(t)] - lam x + Lambda(lam), t from findroot."""
    x = mp.mpf(x)
    t = mp.findroot(lambda s: mp_mean(r, p, s) - x, mp.mpf(0))
    return t * x - mp_cgf(r, p, t) - mp.mpf(lam) * x + mp_cgf(r, p, lam)


# ---------------------------------------------------------------- exact engines
def types_law(p, r, m):
    """Law of S_m for K = 3 by type enumeration: values and log multinomial probs."""
    n1, n2 = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
    keep = n1 + n2 <= m
    n1, n2 = n1[keep], n2[keep]
    n0 = m - n1 - n2
    lp = np.log(p)
    logw = (
        gammaln(m + 1)
        - gammaln(n0 + 1)
        - gammaln(n1 + 1)
        - gammaln(n2 + 1)
        + n0 * lp[0]
        + n1 * lp[1]
        + n2 * lp[2]
    )
    return n0 * r[0] + n1 * r[1] + n2 * r[2], logw


def lattice_law(p, k, m):
    """Log-pmf of T_m = sum of m i.i.d. integer offsets k (log-space convolution DP)."""
    L = max(k)
    lp1 = np.full(L + 1, -np.inf)
    for kk, pp in zip(k, p):
        lp1[kk] = np.logaddexp(lp1[kk], np.log(pp))
    cur = np.zeros(1)
    for _ in range(m):
        new = np.full(cur.size + L, -np.inf)
        for j in np.flatnonzero(np.isfinite(lp1)):
            new[j : j + cur.size] = np.logaddexp(new[j : j + cur.size], cur + lp1[j])
        cur = new
    return np.arange(cur.size), cur


def _log_neg_log1m(logx):
    """log(-log(1 - x)) from log x, accurate for x down to e^-10^5 (no underflow)."""
    logx = np.asarray(logx, dtype=float)
    with np.errstate(divide="ignore"):
        direct = np.log(-np.log1p(-np.exp(np.minimum(logx, 0.0))))
    # -log(1 - x) = x (1 + x/2 + x^2/3 + ...)
    return np.where(logx < -20, logx + np.log1p(np.exp(logx) / 2), direct)


def exact_bon_law(lp, log_n):
    """Exact law of the max of N = e^{log_n} i.i.d. draws from a law on sorted atoms.

    Self-contained log-space oracle (independent of klfrontier.bon):
    ``log P(M <= s_j) = -N(-log F_j)`` with ``-log F_j = -log(1 - S_j)`` taken
    from the top-down survival ``S_j``, and
    ``d_j = F_j^N (1 - e^{N log(1 - q_j/F_j)})``.
    """
    lp = np.asarray(lp, float)
    down_incl = np.logaddexp.accumulate(lp[::-1])[::-1]  # log P(S >= s_j)
    logS = np.append(down_incl[1:], -np.inf)  # log P(S > s_j)
    up = np.logaddexp.accumulate(lp)  # log F_j from the bottom
    with np.errstate(divide="ignore", over="ignore"):  # N (-log F) = inf: F^N = 0
        L = np.where(logS < -np.log(2), _log_neg_log1m(logS), np.log(-np.minimum(up, 0.0)))
        a = -np.exp(log_n + L)  # log F_j^N
        logF = np.where(logS < -np.log(2), -np.exp(L), up)
        c = -np.exp(log_n + _log_neg_log1m(np.minimum(lp - logF, 0.0)))  # N log(F^-/F)
        logd = a + np.log(-np.expm1(c))
    return logd


def exact_bon(p, r, delta, m, lattice=None):
    """Exact gap R*(δ) - E[S_m]/m and KL(π_N||φ_Δ), KL(π_N||p^m) for N = e^{mδ}."""
    p, r = np.asarray(p, float), np.asarray(r, float)
    if lattice is None:
        vals, logw = types_law(p, r, m)
        order = np.argsort(vals)
        vals, logw = vals[order], logw[order]
    else:
        a, h = lattice
        t, logw = lattice_law(p, np.rint((r - a) / h).astype(int).tolist(), m)
        vals = m * a + h * t
    logw = logw - logsumexp(logw)
    logd = exact_bon_law(logw, m * delta)
    ref1 = Reference(r, probs=p)
    pol = tilted(ref1, kl=delta)
    lam, xstar = pol.lam, pol.reward
    # law of S_m under φ_Δ = φ_λ^{⊗m}: untilt exactly
    logg = logw + lam * vals - m * cgf(ref1, lam)
    d = np.exp(logd)
    kl_phi = float(np.sum(kl_terms(logd, logg)))
    kl_p = float(np.sum(kl_terms(logd, logw)))
    return -float(d @ (vals - m * xstar)) / m, kl_phi, kl_p, lam


@pytest.mark.parametrize("m,delta,lattice", [(60, 0.1, None), (150, 0.8, (0.0, 1.0)), (40, 0.3, None)])
def test_exact_oracle_agrees_with_library_bon(m, delta, lattice):
    """The test's BoN oracle against klfrontier.best_of_n on the law of S_m (log N < 700)."""
    p, r = ([0.7, 0.3], [0.0, 1.0]) if lattice else (P3, R_SPEC)
    p, r = np.asarray(p), np.asarray(r)
    if lattice is None:
        vals, logw = types_law(p, r, m)
    else:
        t, logw = lattice_law(p, [0, 1], m)
        vals = t.astype(float)
    seq = Reference(vals, logprobs=logw, normalize=True)
    b = best_of_n(seq, log_n=m * delta)
    gap, _, kl_p, _ = exact_bon(p, r, delta, m, lattice)
    xstar = tilted(Reference(r, probs=p), kl=delta).reward
    assert xstar - b.reward / m == pytest.approx(gap, rel=1e-9)
    assert b.kl == pytest.approx(kl_p, rel=1e-11)


# =================================================================== rate function
@pytest.mark.parametrize("lam", [0.0, 0.7, -1.3])
def test_rate_function_matches_mpmath(lam):
    ref = ref_spec()
    xs = [0.01, 0.2, 0.5, 0.6828427, 0.9, 1.2, 1.4]
    got = rate_function(ref, xs, lam=lam)
    want = [float(mp_rate(R_SPEC, P3, x, lam)) for x in xs]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_rate_function_small_rates_keep_relative_accuracy():
    # I_0 near the mean ~ (x - mu)^2 / (2 sigma^2): no cancellation allowed
    ref = ref_spec()
    mu = 0.3 + 0.2 * SQRT2
    for eps in (1e-3, 1e-6):
        got = rate_function(ref, mu + eps)
        want = float(mp_rate(R_SPEC, P3, mp.mpf(0.3) + mp.mpf(0.2) * mp.sqrt(2) + eps))
        assert got == pytest.approx(want, rel=1e-9)


def test_rate_function_endpoints_and_outside():
    ref = ref_spec()
    lam = 0.8
    out = rate_function(ref, [-1e-9, 0.0, SQRT2, SQRT2 + 1e-9, np.inf, -np.inf])
    assert out[1] == pytest.approx(-np.log(0.5), rel=1e-15)
    assert out[2] == pytest.approx(-np.log(0.2), rel=1e-15)
    assert np.isinf(out[[0, 3, 4, 5]]).all()
    # I_λ(r_max) = -log φ_λ(A),  I_λ(r_min) = -log φ_λ(argmin)
    lamc = float(mp_cgf(R_SPEC, P3, lam))
    assert rate_function(ref, SQRT2, lam=lam) == pytest.approx(-(np.log(0.2) + lam * SQRT2 - lamc), rel=1e-14)
    assert rate_function(ref, 0.0, lam=lam) == pytest.approx(-(np.log(0.5) - lamc), rel=1e-14)
    # finite inside, continuous at the ends
    inside = np.linspace(0, SQRT2, 41)[1:-1]
    assert np.isfinite(rate_function(ref, inside)).all()
    assert rate_function(ref, SQRT2 - 1e-9) == pytest.approx(-np.log(0.2), rel=1e-6)
    assert rate_function(ref, 1e-9) == pytest.approx(-np.log(0.5), rel=1e-6)


def test_rate_function_shapes_and_identity():
    ref = ref_spec()
    x = np.linspace(0.05, 1.35, 12).reshape(3, 4)
    i0 = rate_function(ref, x)
    assert i0.shape == (3, 4)
    lam = 0.9
    il = rate_function(ref, x, lam=lam)
    # I_λ(x) = I_0(x) - λ x + Λ(λ)
    np.testing.assert_allclose(il, i0 - lam * x + cgf(ref, lam), rtol=1e-10, atol=1e-13)
    assert isinstance(rate_function(ref, 0.5), float)


@pytest.mark.parametrize("delta", [1e-4, 0.1, 0.5, 1.5])
def test_rate_at_frontier_reward_is_delta(delta):
    ref = ref_spec()
    x = tilted(ref, kl=delta).reward
    assert rate_function(ref, x) == pytest.approx(delta, rel=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.4, -2.0, 5.0])
def test_rate_lambda_zero_only_at_tilted_mean(lam):
    ref = ref_spec()
    xm = cumulants(ref, lam, order=1)[0]
    assert abs(rate_function(ref, xm, lam=lam)) < 1e-15
    grid = np.linspace(0, SQRT2, 201)
    grid = grid[np.abs(grid - xm) > 1e-3]
    assert (rate_function(ref, grid, lam=lam) > 0).all()


def test_rate_function_convex():
    ref = Reference([0.0, 1.0, 2.5, 3.0], probs=[0.4, 0.3, 0.2, 0.1])
    x = np.linspace(0.0, 3.0, 601)
    for lam in (0.0, 1.5):
        i = rate_function(ref, x, lam=lam)
        assert np.isfinite(i).all()
        assert (np.diff(i, 2) > -1e-12).all()


def test_rate_function_scale_invariance_and_extremes():
    base = rate_function(ref_spec(), [0.3, 1.1])
    for scale, shift in ((1e300 / 2, 0.0), (1e-300, 0.0), (1e-3, 5.0), (3.0, -1e6)):
        r = np.array(R_SPEC) * scale + shift
        ref = Reference(r, probs=P3)
        x = np.array([0.3, 1.1]) * scale + shift
        np.testing.assert_allclose(rate_function(ref, x), base, rtol=1e-9)
    # a tiny top mass: I_0 close to the top stays finite, reaches -log p(A)
    ref = Reference([0.0, 1.0], probs=[1 - 1e-300, 1e-300])
    assert rate_function(ref, 1.0) == pytest.approx(300 * np.log(10), rel=1e-14)
    assert np.isfinite(rate_function(ref, 1.0 - 1e-12))
    # constant reward and point masses
    const = Reference([2.0, 2.0], probs=[0.5, 0.5])
    assert rate_function(const, [2.0, 2.1]).tolist() == [0.0, np.inf]
    ref = ref_spec()
    assert rate_function(ref, [SQRT2, 1.0], lam=np.inf).tolist() == [0.0, np.inf]


def test_rate_function_near_tied_top_levels():
    """Top levels 1e-9 apart: t(x) ~ 1e10; the tilt must be centred at the top."""
    r = [0.0, 1 - 1e-9, 1.0]
    ref = Reference(r, probs=P3)
    xs = [1 - 5e-10, 1 - 1e-12, 0.9]
    with mp.workdps(60):
        rm = [mp.mpf(v) for v in r]
        want = []
        for x in xs:
            x = mp.mpf(x)
            lo, hi = mp.mpf(-1e3), mp.mpf(1e13)  # bisection: Newton from 0 is hopeless here
            for _ in range(400):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if mp_mean(rm, P3, mid) < x else (lo, mid)
            t = (lo + hi) / 2
            want.append(float(t * x - mp_cgf(rm, P3, t)))
    np.testing.assert_allclose(rate_function(ref, xs), want, rtol=1e-12)


def test_rate_function_bad_input():
    ref = ref_spec()
    with pytest.raises(ValueError, match="x contains NaN"):
        rate_function(ref, [0.1, np.nan])
    with pytest.raises(ValueError, match="lam"):
        rate_function(ref, 0.1, lam=np.nan)
    with pytest.raises(ValueError, match="lam must be a scalar"):
        rate_function(ref, 0.1, lam=[1.0, 2.0])
    with pytest.raises(ValueError, match="ref must be"):
        rate_function([0.5, 0.5], 0.1)
    with pytest.raises(ValueError, match="x is empty"):
        rate_function(ref, [])


# ========================================================================= SCGF
TS = [-3.0, -0.5, -1e-3, -1e-7, 1e-7, 1e-3, 0.5, 2.0, 5.0]


@pytest.mark.parametrize("lam", [0.0, 0.76, -0.4])
def test_scgf_equals_renyi_form_and_mpmath(lam):
    ref = ref_spec()
    a = scgf(ref, TS, lam=lam)
    b = scgf(ref, TS, lam=lam, form="renyi")
    want = [float(mp_cgf(R_SPEC, P3, mp.mpf(lam) + mp.mpf(t)) - mp_cgf(R_SPEC, P3, lam)) for t in TS]
    np.testing.assert_allclose(a, want, rtol=1e-12)
    # The Rényi form is a literal evaluation: log sum_y φ q_r^t with the float
    # φ summing to 1 ± 1e-16, then divided by t -- so its relative error is
    # ~1e-16 / |t Λ'(λ)|: rtol 1e-10 from |t| = 1e-3, 1e-8 at |t| = 1e-7.
    big = np.abs(TS) >= 1e-3
    np.testing.assert_allclose(b[big], np.asarray(want)[big], rtol=1e-10)
    np.testing.assert_allclose(b[~big], np.asarray(want)[~big], rtol=1e-8)
    assert scgf(ref, 0.0, lam=lam) == 0.0
    assert scgf(ref, 0.0, lam=lam, form="renyi") == 0.0


def test_scgf_small_t_and_consistency():
    ref = ref_spec()
    lam = 0.3
    mean = cumulants(ref, lam, order=1)[0]
    assert scgf(ref, 1e-12, lam=lam) == pytest.approx(1e-12 * mean, rel=1e-9)
    t = np.array([[-2.0, 0.1], [0.7, 3.0]])
    out = scgf(ref, t, lam=lam)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, cgf(ref, lam + t) - cgf(ref, lam), rtol=1e-12)
    assert scgf(ref, 2.0, lam=np.inf) == 2.0 * SQRT2
    assert scgf(Reference([3.0], probs=[1.0]), -2.0) == -6.0


def test_scgf_is_cumulant_generating_for_sm():
    # (1/m) log E_{φ_λ^{⊗m}} e^{t S_m} by enumerating all 3^4 sequences
    ref, lam, m = ref_spec(), 0.6, 4
    for t in (-1.0, 0.8):
        tot = mp.mpf(0)
        for seq in itertools.product(range(3), repeat=m):
            w = mp.mpf(1)
            s = mp.mpf(0)
            for i in seq:
                w *= mp.mpf(P3[i]) * mp.exp(mp.mpf(lam) * R_SPEC[i] - mp_cgf(R_SPEC, P3, lam))
                s += R_SPEC[i]
            tot += w * mp.exp(t * s)
        assert scgf(ref, t, lam=lam) == pytest.approx(float(mp.log(tot) / m), rel=1e-13)


def test_scgf_bad_input():
    ref = ref_spec()
    with pytest.raises(ValueError, match="form must be"):
        scgf(ref, 1.0, form="renyii")
    with pytest.raises(ValueError, match="t must be finite"):
        scgf(ref, np.inf)
    with pytest.raises(ValueError, match="t is NaN"):
        scgf(ref, np.nan)
    with pytest.raises(ValueError, match="r_max - r_min < 700"):
        scgf(Reference([0.0, 1e3], probs=[0.5, 0.5]), 1.0, form="renyi")


# =================================================================== cumulants
def mp_cumulants_of_sum(r, p, lam, m, order):
    """Cumulants of S_m under φ_λ^{⊗m} from its exact law (all K^m sequences)."""
    Z = mp.fsum(mp.mpf(q) * mp.exp(mp.mpf(lam) * mp.mpf(v)) for v, q in zip(r, p))
    law = {}
    for seq in itertools.product(range(len(r)), repeat=m):
        w = mp.mpf(1)
        for i in seq:
            w *= mp.mpf(p[i]) * mp.exp(mp.mpf(lam) * mp.mpf(r[i])) / Z
        s = sum(mp.mpf(r[i]) for i in seq)
        law[s] = law.get(s, mp.mpf(0)) + w
    mean = mp.fsum(w * s for s, w in law.items())
    mu = [mp.fsum(w * (s - mean) ** k for s, w in law.items()) for k in range(order + 1)]
    kap = [mp.mpf(0)] * (order + 1)
    kap[1] = mean
    for n in range(2, order + 1):
        kap[n] = mu[n] - mp.fsum(mp.binomial(n - 1, k - 1) * kap[k] * mu[n - k] for k in range(2, n - 1))
    return [float(k) for k in kap[1:]]


@pytest.mark.parametrize("lam", [0.0, 0.76, -1.1])
def test_cumulants_of_sm_are_m_times_derivatives(lam):
    m, order = 5, 5
    want = mp_cumulants_of_sum(R_SPEC, P3, lam, m, order)
    got = m * cumulants(ref_spec(), lam, order=order)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


def test_cumulants_shapes_limits_and_errors():
    ref = ref_spec()
    c = cumulants(ref, [0.0, 1.0, np.inf], order=3)
    assert c.shape == (3, 3)
    np.testing.assert_allclose(c[2], [SQRT2, 0.0, 0.0])
    assert c[0, 0] == pytest.approx(ref.mean_reward, rel=1e-15)
    # Λ''(λ) = derivative of the SCGF's mean: finite difference check
    h = 1e-5
    d = (cumulants(ref, 1.0 + h, order=1)[0] - cumulants(ref, 1.0 - h, order=1)[0]) / (2 * h)
    assert d == pytest.approx(c[1, 1], rel=1e-8)
    assert cumulants(Reference([4.0], probs=[1.0]), 2.0, order=2).tolist() == [4.0, 0.0]
    with pytest.raises(ValueError, match="order must lie"):
        cumulants(ref, 0.0, order=0)
    with pytest.raises(ValueError, match="order must be an integer"):
        cumulants(ref, 0.0, order=2.5)
    with pytest.raises(ValueError, match="lam is NaN"):
        cumulants(ref, np.nan)


# ===================================================================== lattices
def _origin_span(ref, lattice=None):
    """``(a, h)`` of the :class:`~klfrontier.lattice.Lattice` that ``detect_lattice`` finds, or ``None``."""
    lat = detect_lattice(ref, lattice=lattice)
    return None if lat is None else (lat.a, lat.h)


def test_detect_lattice():
    assert _origin_span(Reference([0, 1, 2], probs=P3)) == (0.0, 1.0)
    assert _origin_span(Reference([0.0, 1.0], probs=[0.7, 0.3])) == (0.0, 1.0)
    assert _origin_span(ref_spec()) is None
    a, h = _origin_span(Reference([0.1 * k for k in (-3, 2, 7, 10)], probs=[0.1, 0.2, 0.3, 0.4]))
    assert a == pytest.approx(-0.3) and h == pytest.approx(0.1, rel=1e-12)
    # the maximal span, whatever the grid the data were written on
    assert _origin_span(Reference([0.0, 2.0, 6.0], probs=P3)) == (0.0, 2.0)
    assert _origin_span(Reference([0, 1, 2], probs=P3), lattice=0.5) == (0.0, 1.0)
    assert _origin_span(Reference([0, 1, 2], probs=P3), lattice=False) is None
    assert _origin_span(Reference([5.0, 5.0], probs=[0.5, 0.5])) is None
    with pytest.raises(ValueError, match="lattice=0.3"):
        _origin_span(Reference([0, 1, 2], probs=P3), lattice=0.3)
    with pytest.raises(ValueError, match="lattice must be None, False"):
        _origin_span(Reference([0, 1, 2], probs=P3), lattice=True)
    with pytest.raises(ValueError, match="lattice must be a positive"):
        _origin_span(Reference([0, 1, 2], probs=P3), lattice=-1.0)


# ============================================================== equivalence
def test_equivalence_fields():
    ref = ref_spec()
    eq = equivalence(ref, 0.1)
    pol = tilted(ref, kl=0.1)
    assert eq.lam == pytest.approx(pol.lam, rel=1e-13)
    assert eq.x_star == eq.frontier_reward == pytest.approx(pol.reward, rel=1e-14)
    assert eq.I0_at_x_star == pytest.approx(0.1, rel=1e-13)
    assert eq.sigma2 == pytest.approx(cumulants(ref, eq.lam, order=2)[1], rel=1e-13)
    assert eq.lattice is None and eq.beta is None
    # non-lattice closed forms
    m = np.array([50.0, 200.0])
    a = 0.5 * np.log(2 * np.pi * m * eq.lam**2 * eq.sigma2) - np.euler_gamma
    np.testing.assert_allclose(eq.gap_prediction(m), a / (m * eq.lam), rtol=1e-14)
    np.testing.assert_allclose(eq.kl_to_optimal_prediction(m), a - 1, rtol=1e-14)
    assert isinstance(eq.gap_prediction(100), float)


def test_equivalence_bad_input():
    ref = ref_spec()
    for bad in (0.0, -0.1, -np.log(0.2), 5.0, np.inf):
        with pytest.raises(ValueError, match="delta must lie"):
            equivalence(ref, bad)
    with pytest.raises(ValueError, match="delta is NaN"):
        equivalence(ref, np.nan)
    with pytest.raises(ValueError, match="delta must lie"):
        equivalence(Reference([1.0, 1.0], probs=[0.5, 0.5]), 0.1)
    eq = equivalence(ref, 0.1)
    with pytest.raises(ValueError, match="length must be finite and >= 1"):
        eq.gap_prediction(0.5)
    with pytest.raises(ValueError, match="form must be"):
        eq.gap_prediction(10, form="exact")
    lat = equivalence(Reference([0, 1], probs=[0.7, 0.3]), 0.1)
    with pytest.raises(ValueError, match="length must be an integer"):
        lat.gap_prediction(10.5)
    assert np.isfinite(lat.gap_prediction(10.5, form="averaged"))


# ------------------------------------------- second order: exact vs predicted
SPEC_RATIOS = {25: 1.20, 50: 1.11, 100: 1.05, 200: 1.03}


def test_spec_second_order_claim_non_lattice():
    """theory §6: exact gap / prediction = 1.20, 1.11, 1.05, 1.03 at m = 25..200."""
    ref = ref_spec()
    eq = equivalence(ref, 0.1)
    assert eq.lattice is None
    for m, claimed in SPEC_RATIOS.items():
        gap, kl_phi, kl_p, lam = exact_bon(P3, R_SPEC, 0.1, m)
        ratio = gap / eq.gap_prediction(m)
        assert round(ratio, 2) == claimed, (m, ratio)
        # the §2 identity ties the two exact numbers together
        assert kl_phi == pytest.approx(kl_p - m * 0.1 + lam * m * gap, rel=1e-9)
        # refined (saddle-point) form: within 1.5% from m = 200 on
        sp = gap / eq.gap_prediction(m, form="saddlepoint")
        if m >= 100:
            assert abs(sp - 1) < abs(ratio - 1)
        if m >= 200:
            assert abs(ratio - 1) < 0.05 and abs(sp - 1) < 0.015
            assert kl_phi == pytest.approx(eq.kl_to_optimal_prediction(m), abs=0.07)
            assert kl_phi == pytest.approx(eq.kl_to_optimal_prediction(m, form="saddlepoint"), abs=0.03)


@pytest.mark.parametrize(
    "p,r", [([0.7, 0.3], [0.0, 1.0]), (P3, [0.0, 1.0, 2.0])], ids=["bernoulli", "three-letter"]
)
def test_lattice_second_order_small_delta(p, r):
    ref = Reference(r, probs=p)
    eq = equivalence(ref, 0.1)
    assert eq.lattice == (0.0, 1.0)
    for m in (200, 400, 1000):
        gap, kl_phi, _, _ = exact_bon(p, r, 0.1, m, lattice=eq.lattice)
        assert gap / eq.gap_prediction(m) == pytest.approx(1, abs=0.03)
        assert gap / eq.gap_prediction(m, form="averaged") == pytest.approx(1, abs=0.03)
        assert gap / eq.gap_prediction(m, form="saddlepoint") == pytest.approx(1, abs=0.01)
        assert kl_phi == pytest.approx(eq.kl_to_optimal_prediction(m), abs=0.07)
        assert kl_phi == pytest.approx(eq.kl_to_optimal_prediction(m, form="saddlepoint"), abs=0.01)


def test_lattice_oscillation_is_captured():
    """Bernoulli(0.3), δ = 0.8 (λh ≈ 3): the exact gap oscillates with m.

    The phase-averaged and the non-lattice formulas miss the oscillation
    (ratios spread over ~8% and ~10%); the discretised-Gumbel form tracks it.
    """
    p, r = [0.7, 0.3], [0.0, 1.0]
    eq = equivalence(Reference(r, probs=p), 0.8)
    assert eq.beta == pytest.approx(3.07, abs=0.01)
    ms = np.arange(100, 112)
    exact = np.array([exact_bon(p, r, 0.8, int(m), lattice=eq.lattice)[:2] for m in ms])
    gap, kl_phi = exact[:, 0], exact[:, 1]
    lead = gap / eq.gap_prediction(ms)
    avg = gap / eq.gap_prediction(ms, form="averaged")
    nonlat = gap / equivalence(Reference(r, probs=p), 0.8, lattice=False).gap_prediction(ms)
    sp = gap / eq.gap_prediction(ms, form="saddlepoint")
    # the exact gap is not monotone in m: it oscillates
    assert (np.diff(gap) > 0).any() and (np.diff(gap) < 0).any()
    assert np.ptp(avg) > 0.06 and np.ptp(nonlat) > 0.06
    assert np.abs(lead - 1).max() < 0.03 and np.ptp(lead) < 0.02
    assert np.abs(sp - 1).max() < 0.005
    # KL(π_N||φ_Δ) oscillates too (by ~0.2 nats here) and is tracked
    assert np.ptp(kl_phi) > 0.15
    assert np.abs(kl_phi - eq.kl_to_optimal_prediction(ms)).max() < 0.12
    assert np.abs(kl_phi - eq.kl_to_optimal_prediction(ms, form="saddlepoint")).max() < 0.012
    assert np.corrcoef(kl_phi, eq.kl_to_optimal_prediction(ms))[0, 1] > 0.95


@pytest.mark.slow
def test_lattice_large_m():
    """m = 2000-3000: leading within 1%, saddle point within 0.1%."""
    p, r = [0.7, 0.3], [0.0, 1.0]
    for delta in (0.1, 0.8):
        eq = equivalence(Reference(r, probs=p), delta)
        for m in (2000, 3001):
            gap, kl_phi, _, _ = exact_bon(p, r, delta, m, lattice=eq.lattice)
            assert gap / eq.gap_prediction(m) == pytest.approx(1, abs=0.01)
            assert gap / eq.gap_prediction(m, form="saddlepoint") == pytest.approx(1, abs=1e-3)
            assert kl_phi == pytest.approx(eq.kl_to_optimal_prediction(m, form="saddlepoint"), abs=3e-3)


def test_lattice_forms_tend_to_non_lattice_as_span_shrinks():
    # a fine grid (λh ≈ 0.005): lattice forms ≈ the non-lattice closed forms
    r = [0.0, 0.01, 0.02, 1.0]
    ref = Reference(r, probs=[0.3, 0.3, 0.3, 0.1])
    eq = equivalence(ref, 0.05)
    assert eq.lattice[1] == pytest.approx(0.01) and eq.beta < 0.01
    cont = equivalence(ref, 0.05, lattice=False)
    for form in ("leading", "averaged"):
        assert eq.gap_prediction(300, form=form) == pytest.approx(cont.gap_prediction(300), rel=1e-4)
        assert eq.kl_to_optimal_prediction(300, form=form) == pytest.approx(
            cont.kl_to_optimal_prediction(300), abs=1e-4
        )


def test_averaged_is_the_phase_mean_of_leading():
    eq = equivalence(Reference([0.0, 1.0], probs=[0.7, 0.3]), 0.8)
    ms = np.arange(1000, 1400)  # phases equidistribute (x* irrational)
    g = eq.gap_prediction(ms) * ms
    ga = eq.gap_prediction(ms, form="averaged") * ms
    assert np.mean(g - ga) == pytest.approx(0, abs=2e-3 * np.mean(ga))
    k = eq.kl_to_optimal_prediction(ms)
    ka = eq.kl_to_optimal_prediction(ms, form="averaged")
    assert np.mean(k - ka) == pytest.approx(0, abs=5e-3)


def test_lattice_fourier_form_and_amplitude():
    """docs/second_order.md §3: λ m gap as a Fourier series in the phase f_m."""
    from scipy.special import gamma

    from klfrontier.equivalence import discrete_gumbel as _discrete_gumbel

    for beta in (0.9, 3.07, 8.0):
        for f in (0.0, 0.3, 0.77):
            lhs = f - _discrete_gumbel(f, beta)[0]
            four = (
                0.5
                - np.euler_gamma / beta
                - sum(
                    (np.exp(2j * np.pi * k * f) * gamma(1 - 2j * np.pi * k / beta)).imag / (np.pi * k)
                    for k in range(1, 40)
                )
            )
            assert lhs == pytest.approx(four, abs=1e-12)
    # oscillation amplitude of λ m gap over the phase: 2 sqrt(β) e^{-π²/β} (first harmonic)
    beta = 3.07
    f = np.linspace(0, 1, 401)
    g = beta * np.array([x - _discrete_gumbel(x, beta)[0] for x in f])
    assert np.ptp(g) / 2 == pytest.approx(2 * np.sqrt(beta) * np.exp(-(np.pi**2) / beta), rel=0.03)


def test_equivalence_skewed_reference():
    """p(A) = 1e-12 with almost all mass at the bottom: λ_δ solver must not overshoot."""
    ref = Reference([0.0, 1.0, 2.0], probs=[1 - 2e-12, 1e-12, 1e-12])
    for delta in (1.0, 20.0, 27.0):
        eq = equivalence(ref, delta)
        assert eq.I0_at_x_star == pytest.approx(delta, rel=1e-12)
        assert tilted(ref, lam=eq.lam).kl == pytest.approx(delta, rel=1e-12)
        assert np.isfinite(eq.gap_prediction(100, form="saddlepoint"))
