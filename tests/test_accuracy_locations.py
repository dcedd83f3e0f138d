"""Locations and gains keep relative accuracy (issue: accuracy defects), against mpmath.

Rewards stored as offsets from r_max in range units keep only ``eps * range``
absolutely; a mean near r_min, or a gain far below the rewards' magnitude,
must not be formed through them.
"""

import mpmath as mp
import numpy as np
import pytest

import klfrontier as kf
from klfrontier.empirical.single import tilted_gain_cov

mp.mp.dps = 60


def _exact_tilt(r, p, lam):
    """(E_p r, E_phi r, E_phi r - E_p r) in mpmath, from the float inputs exactly."""
    r = [mp.mpf(float(x)) for x in r]
    p = [mp.mpf(float(x)) for x in p]
    z = mp.fsum(p)
    mean = mp.fsum(pi * ri for pi, ri in zip(p, r)) / z
    w = [pi * mp.e ** (mp.mpf(lam) * (ri - mean)) for pi, ri in zip(p, r)]
    tr = mp.fsum(wi * ri for wi, ri in zip(w, r)) / mp.fsum(w)
    return mean, tr, tr - mean


def _rel(x, truth):
    return abs(mp.mpf(float(x)) - truth) / abs(truth)


def test_small_mean_near_r_min():
    ref = kf.Reference([0.0, 1.0], probs=[1 - 1e-12, 1e-12])
    mean, tr, gain = _exact_tilt([0.0, 1.0], ref.probs, 1e-3)
    assert _rel(ref.mean_reward, mean) < 1e-14  # was 2.2e-5
    pol = kf.tilted(ref, lam=1e-3)
    assert _rel(pol.reward, tr) < 1e-14  # was 2.3e-5
    assert _rel(pol.reward_gain, gain) < 1e-12  # was 1.3e-3


def test_gain_far_below_the_rewards_magnitude():
    x = -1e6 + 1e-3 * np.random.default_rng(0).normal(size=1000)
    _, _, gain = _exact_tilt(x, np.full(x.size, 1.0), 1e-6)
    assert float(gain) == pytest.approx(9.54e-13, rel=1e-3)
    pol = kf.tilted(kf.Reference.from_samples(x), lam=1e-6)
    assert _rel(pol.reward_gain, gain) < 1e-9  # was 0
    got = tilted_gain_cov(x, 1e-6)
    assert got > 0 and _rel(got, gain) < 1e-9  # had the wrong sign


@pytest.mark.parametrize("lam", [1e-4, 1e-2, 0.7, 5.0, 40.0])
def test_tilted_gain_matches_mpmath_across_lam(lam):
    rng = np.random.default_rng(3)
    r = np.round(rng.normal(size=30), 3)
    p = rng.dirichlet(np.ones(30))
    ref = kf.Reference(r, probs=p, normalize=True)
    _, tr, gain = _exact_tilt(r, ref.probs, lam)
    pol = kf.tilted(ref, lam=lam)
    assert _rel(pol.reward_gain, gain) < 1e-11
    assert _rel(pol.reward, tr) < 1e-13
    assert pol.reward_gain == pytest.approx(pol.reward - ref.mean_reward, rel=1e-9, abs=1e-15)


def _exact_rate(r, p, x, lam=0):
    """I_lam(x) = sup_t [t x - log E_phi_lam e^{t r}] in mpmath, from the float inputs."""
    r = [mp.mpf(float(v)) for v in r]
    p = [mp.mpf(float(v)) for v in p]
    w = [pi * mp.e ** (lam * ri) for pi, ri in zip(p, r)]
    z = mp.fsum(w)
    q = [wi / z for wi in w]

    def mean(t):
        e = [qi * mp.e ** (t * ri) for qi, ri in zip(q, r)]
        return mp.fsum(ei * ri for ei, ri in zip(e, r)) / mp.fsum(e)

    t = mp.findroot(lambda t: mean(t) - x, -10)
    return t * x - mp.log(mp.fsum(qi * mp.e ** (t * ri) for qi, ri in zip(q, r)))


@pytest.mark.parametrize("lam", [0.0, -1.0])
def test_rate_function_near_r_min(lam):
    """Masses 1e-6, 1e-12, 1e-300 (normalised) and x = 1e-12 above r_min = 0: was 1.1e-9 / 3.1e-9."""
    r, p = [0.0, 1.0, 2.0], [1e-6, 1e-12, 1e-300]
    ref = kf.Reference(r, probs=p, normalize=True)
    truth = _exact_rate(r, p, mp.mpf(1e-12), lam)
    assert _rel(kf.rate_function(ref, 1e-12, lam=lam), truth) < 1e-13


def test_normalised_dominant_mass_keeps_relative_accuracy():
    """log p of a mass 1 - 1e-6 given as (1e-6, 1e-12) unnormalised: -log1p(1e-6), not a difference."""
    ref = kf.Reference([0.0, 1.0], probs=[1e-6, 1e-12], normalize=True)
    truth = -mp.log1p(mp.mpf(1e-12) / mp.mpf(1e-6))
    assert _rel(ref.level_logq[0], truth) < 1e-15
    assert _rel(ref.level_logq[1], mp.log(mp.mpf(1e-12) / (mp.mpf(1e-6) + mp.mpf(1e-12)))) < 1e-15


@pytest.mark.parametrize("t", [5e-19, 1e-15, 1e-12])
def test_scgf_at_tiny_t_agrees_with_cgf_and_mpmath(t):
    """Rewards +-1e6: the direct sum kept the first moment's rounding (1.8e-4 relative at 5e-19)."""
    ref = kf.Reference([-1e6, 0.0, 1e6], probs=[0.3, 0.4, 0.3])
    p = [mp.mpf(0.3), mp.mpf(0.4), mp.mpf(0.3)]
    truth = mp.log(mp.fsum(pi * mp.e ** (mp.mpf(t) * ri) for pi, ri in zip(p, [-1e6, 0.0, 1e6])))
    assert _rel(kf.scgf(ref, t), truth) < 1e-14
    assert _rel(kf.scgf(ref, t), mp.mpf(kf.cgf(ref, t))) < 1e-14


@pytest.mark.parametrize("lam", [0.5, -2.0])
@pytest.mark.parametrize("t", [1e-7, 1e-4, 0.3])
def test_scgf_of_a_tilted_law_against_mpmath(lam, t):
    r, p = [0.0, 1.0, 3.0], [0.5, 0.3, 0.2]
    ref = kf.Reference(r, probs=p)
    w = [mp.mpf(pi) * mp.e ** (mp.mpf(lam) * ri) for pi, ri in zip(p, r)]
    truth = mp.log(mp.fsum(wi * mp.e ** (mp.mpf(t) * ri) for wi, ri in zip(w, r)) / mp.fsum(w))
    assert _rel(kf.scgf(ref, t, lam=lam), truth) < 1e-13


def _exact_soft_bon_kl(r, p, n, lam):
    """KL of soft best-of-n in mpmath: pi_j/q_j = N (1 + w_j J_j) (see soft_bon._soft_bon_near_one)."""
    q = [mp.mpf(v) for v in p]
    top = max(r)
    w = [mp.e ** (mp.mpf(lam) * (ri - top)) for ri in r]
    N = mp.mpf(n)

    def log_m(s):
        return mp.log(mp.fsum(qk * mp.e ** (-s * wk) for qk, wk in zip(q, w)))

    ts = []
    for wj in w:
        f = lambda x, wj=wj: mp.e**x * mp.e ** (-(mp.e**x) * wj) * mp.expm1((N - 1) * log_m(mp.e**x))  # noqa: E731
        ts.append(mp.log(N) + mp.log1p(wj * mp.quad(f, mp.linspace(-60, 60, 61))))
    return mp.fsum(qj * (mp.e**t * (t - 1) + 1) for qj, t in zip(q, ts))


@pytest.mark.parametrize("lam", [0.5, 20.0])
@pytest.mark.parametrize("n", [1 + 1e-9, 1.003])
def test_soft_best_of_n_as_n_tends_to_one(n, lam):
    """Was 6.2e-8 (lam 0.5) and 9.1e-6 (lam 20) relative at n = 1 + 1e-9."""
    r, p = [0.0, 1.0, 2.0], [0.5, 0.3, 0.2]
    with mp.workdps(40):
        truth = _exact_soft_bon_kl(r, p, n, lam)
    got = kf.soft_best_of_n(kf.Reference(r, probs=p), n, lam=lam).kl
    assert _rel(got, truth) < 1e-12


def test_sequence_reward_gap_is_translation_invariant():
    """m = 1e5, log N = 5.57e5 on the unigram x VADER lattice: the BoN window law sums to
    1 - 6e-12; unnormalised, E S_m moved by that share of m r and the gap by 2e-6 relative
    (the issue's 81-level case: 5.9e-5).  Shifting every reward by c leaves the gap unchanged."""
    from klfrontier.instances import load

    ref = load("unigram-vader").ref
    gaps = []
    for c in (0.0, 10.0, -3.0):
        shifted = kf.Reference(ref.rewards + c, logprobs=ref.logprobs)
        b = kf.Memoryless(shifted, length=100_000).best_of_n(log_n=5.57e5)
        assert b.exact and b.error_bound < 1e-9
        gaps.append(b.reward_gap)
    assert np.ptp(gaps) <= 1e-9 * gaps[0]
