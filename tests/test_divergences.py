"""Divergence kernels (theory §5) against 50-digit mpmath, limits, broadcasting, errors."""

import math

import mpmath as mp
import numpy as np
import pytest
from scipy.special import logsumexp

from klfrontier import jeffreys, kl, renyi_cross_entropy, renyi_divergence

# --------------------------------------------------------------------------
# Oracle table.  Produced at 50 digits by (mpmath 1.4.1):
#
#   import mpmath as mp
#   mp.mp.dps = 50
#   M = lambda v: [mp.mpf(x) for x in v]          # exact values of the float inputs
#   def kl(a, b): return mp.fsum(x * mp.log(x / y) for x, y in zip(M(a), M(b)) if x > 0)
#   def jef(a, b): return kl(a, b) + kl(b, a) if min(a) > 0 else mp.inf
#   def renyi(a, b, al):
#       if al == 0: return -mp.log(mp.fsum(y for x, y in zip(M(a), M(b)) if x > 0))
#       if al == mp.inf: return max(mp.log(x / y) for x, y in zip(M(a), M(b)) if x > 0)
#       al = mp.mpf(al)
#       return mp.log(mp.fsum(x**al * y**(1 - al) for x, y in zip(M(a), M(b)) if x > 0)) / (al - 1)
#   def rce(a, b, al):
#       al = mp.mpf(al)
#       return mp.log(mp.fsum(x * y**(al - 1) for x, y in zip(M(a), M(b)) if x > 0)) / (1 - al)
#   D_ALPHAS = (0.0, 0.5, 2.0, 1 + 2.0**-30, mp.inf)
#   H_ALPHAS = (0.0, 0.5, 2.0, 3.0, 1 - 2.0**-40)
#   for k, (a, b) in CASES.items():
#       row = [kl(a, b), jef(a, b)] + [renyi(a, b, al) for al in D_ALPHAS] \
#             + [rce(a, b, al) for al in H_ALPHAS]
#       print(k, [mp.nstr(x, 20) for x in row])
# --------------------------------------------------------------------------
CASES = {
    "A": ([0.5, 0.3, 0.2], [0.1, 0.6, 0.3]),
    "B": ([0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]),
    "C": ([0.0, 0.4, 0.6], [0.2, 0.3, 0.5]),  # a has a zero
    "D": ([1 - 2.0**-10, 2.0**-10], [1e-200, 1.0]),  # huge ratio
    "E": ([0.5, 0.5], [0.5 + 2.0**-20, 0.5 - 2.0**-20]),  # near-equal, KL ~ 1e-12
    "F": (
        [0.375, 0.125, 0.5],  # near-equal, KL ~ 1e-18
        [0.375 + 2.0**-30, 0.125 - 2.0**-31, 0.5 - 2.0**-31],
    ),
}
D_ALPHAS = (0.0, 0.5, 2.0, 1 + 2.0**-30, math.inf)
H_ALPHAS = (0.0, 0.5, 2.0, 3.0, 1 - 2.0**-40)
inf = math.inf
# columns: kl, jeffreys, D_alpha for D_ALPHAS, H_alpha for H_ALPHAS
TABLE = {
    "A": [
        0.51568178042743371202,
        0.89226582995244012377,
        2.7755575615628913896e-17,
        0.22674092910138260166,
        1.0236492501946543777,
        0.51568178098913009299,
        1.6094379124341003191,
        1.8191584434161694085,
        1.6948118831281959137,
        1.2378743560016173734,
        1.0162789778904927989,
        1.545334794492294227,
    ],
    "B": [
        0.42981319461032671313,
        0.87565956707489087279,
        2.7755575615628913896e-17,
        0.22707289024041716094,
        0.67512867505726694462,
        0.42981319494093746458,
        0.91629073187415500967,
        2.0614230361771575635,
        1.964542973080486552,
        1.3862943611198906466,
        1.0201104142632773726,
        1.816107555730540194,
    ],
    "C": [
        0.22446576305708516385,
        inf,
        0.22314355131420976964,
        0.22380211909711831117,
        0.22580666873369347611,
        0.2244657630583257792,
        0.28768207245178101996,
        0.92953595862417573459,
        0.91336164794099069908,
        0.86750056770472308327,
        0.84100430263446791937,
        0.89747743006637008798,
    ],
    "D": [
        460.05954984689103603,
        466.99102165249048912,
        0.0,
        6.9314718055994530942,
        460.5150645195134836,
        460.0595499461595452,
        460.51604155916131021,
        460.51604155916131021,
        460.5150645195134836,
        6.9314718055994530942,
        3.4657359027997265471,
        460.06729494792782593,
    ],
    "E": [
        1.8189894035491651983e-12,
        3.6379788070961245816e-12,
        0.0,
        9.0949470177416900883e-13,
        3.6379788070983303966e-12,
        1.8189894052432310928e-12,
        1.9073504518042165138e-6,
        0.69314718056358328822,
        0.69314718056267379352,
        0.69314718055994530942,
        0.69314718055812632001,
        0.69314718056176429882,
    ],
    "F": [
        2.2406844901773543432e-18,
        4.4813689801677194283e-18,
        0.0,
        1.1203422450419298572e-18,
        4.4813689807286871989e-18,
        2.2406844922641543916e-18,
        3.7252903054008079836e-9,
        1.0986122893924717006,
        1.0292758247448715679,
        0.90078654519490941495,
        0.85826802395474145042,
        0.97431475286943689228,
    ],
}
RTOL = 1e-13
# Near alpha = 1 the value depends on sum(a) - 1 divided by (alpha - 1); the
# kernels take the float sum, so cases whose floats do not sum to exactly 1 in
# real arithmetic would differ from the oracle there by ~1e-19 / 2^-30.  Case D
# therefore uses dyadic a.
# KL-type sums of near-equal laws cancel: sum |a log(a/b)| / KL is ~1e6 for E
# and ~5e8 for F, which bounds the relative accuracy of any evaluation of
# sum a log(a/b) at ~1e-16 times that.
RTOL_NEAR = {"E": 1e-9, "F": 2e-7}


def _check(got, want, rtol, atol=0.0):
    if math.isinf(want):
        assert got == want
    else:
        assert got == pytest.approx(want, rel=rtol, abs=atol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kl_and_jeffreys_match_mpmath(case):
    # KL as sum b h(t) + sum (a - b), Jeffreys as sum (a - b) log(a/b), log-ratios
    # from exact differences: full relative accuracy on the near-equal cases too
    # (the plain sum a log(a/b) was 2e-7 off on F, KL ~ 2e-18)
    a, b = CASES[case]
    _check(kl(a, b), TABLE[case][0], RTOL)
    _check(jeffreys(a, b), TABLE[case][1], RTOL)


def test_kl_of_random_near_equal_laws_against_mpmath():
    """b = a perturbed by 1e-6..1e-14 relative (half of them renormalised, where KL ~
    the perturbation squared): the KL of the float inputs to 1e-12 relative."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        k = int(rng.integers(2, 30))
        a = rng.dirichlet(np.ones(k))
        b = a * (1 + 10.0 ** rng.uniform(-14, -6) * rng.standard_normal(k))
        if _ % 2:
            b /= b.sum()  # both laws sum to 1 up to rounding: KL ~ perturbation^2
        with mp.workdps(60):
            A, B = [mp.mpf(float(x)) for x in a], [mp.mpf(float(x)) for x in b]
            want = mp.fsum(x * mp.log(x / y) for x, y in zip(A, B))
            want_j = mp.fsum((x - y) * mp.log(x / y) for x, y in zip(A, B))
        assert kl(a, b) == pytest.approx(float(want), rel=1e-12, abs=1e-300)
        assert jeffreys(a, b) == pytest.approx(float(want_j), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("j", range(len(D_ALPHAS)))
def test_renyi_divergence_matches_mpmath(case, j):
    a, b = CASES[case]
    rtol = RTOL_NEAR.get(case, RTOL)
    # D_0 = -log(sum b) is ~1e-17 for laws normalised in floats: absolute check there.
    atol = 1e-15 if D_ALPHAS[j] == 0 else 0.0
    _check(renyi_divergence(a, b, alpha=D_ALPHAS[j]), TABLE[case][2 + j], rtol, atol)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("j", range(len(H_ALPHAS)))
def test_renyi_cross_entropy_matches_mpmath(case, j):
    a, b = CASES[case]
    _check(renyi_cross_entropy(a, b, alpha=H_ALPHAS[j]), TABLE[case][2 + len(D_ALPHAS) + j], RTOL)


# ------------------------------------------------------------------ limits
# Dyadic laws (exactly normalised in binary), so the alpha -> 1 limit is exact.
A_DY = [0.5, 0.25, 0.125, 0.125]
B_DY = [0.0625, 0.4375, 0.25, 0.25]
STEPS = [s * 10.0**-k for k in (2, 4, 6, 8, 10, 12, 14, 15) for s in (1, -1)]


def _mp_renyi(a, b, alpha):
    with mp.workdps(50):
        al = mp.mpf(alpha)
        s = mp.fsum(mp.mpf(x) ** al * mp.mpf(y) ** (1 - al) for x, y in zip(a, b) if x > 0)
        return float(mp.log(s) / (al - 1))


def _mp_rce(a, b, alpha):
    with mp.workdps(50):
        al = mp.mpf(alpha)
        s = mp.fsum(mp.mpf(x) * mp.mpf(y) ** (al - 1) for x, y in zip(a, b) if x > 0)
        return float(mp.log(s) / (1 - al))


@pytest.mark.parametrize("h", STEPS)
def test_renyi_divergence_continuous_at_alpha_one(h):
    alpha = 1.0 + h
    assert renyi_divergence(A_DY, B_DY, alpha=alpha) == pytest.approx(_mp_renyi(A_DY, B_DY, alpha), rel=1e-13)
    # and it tends to the KL branch
    assert renyi_divergence(A_DY, B_DY, alpha=alpha) == pytest.approx(kl(A_DY, B_DY), rel=2 * abs(h))


@pytest.mark.parametrize("h", STEPS)
def test_renyi_cross_entropy_continuous_at_alpha_one(h):
    alpha = 1.0 + h
    assert renyi_cross_entropy(A_DY, B_DY, alpha=alpha) == pytest.approx(
        _mp_rce(A_DY, B_DY, alpha), rel=1e-13
    )
    shannon = -sum(x * math.log(y) for x, y in zip(A_DY, B_DY))
    assert renyi_cross_entropy(A_DY, B_DY, alpha=1.0) == pytest.approx(shannon, rel=1e-15)
    assert renyi_cross_entropy(A_DY, B_DY, alpha=alpha) == pytest.approx(shannon, rel=2 * abs(h))


def test_renyi_limits_alpha_zero_and_infinity():
    a, b = [0.0, 0.25, 0.75], [0.5, 0.3, 0.2]
    d0 = renyi_divergence(a, b, alpha=0.0)
    assert d0 == pytest.approx(-math.log(0.5), rel=1e-15)
    assert renyi_divergence(a, b, alpha=1e-12) == pytest.approx(d0, rel=1e-10)
    dinf = renyi_divergence(a, b, alpha=math.inf)
    assert dinf == pytest.approx(math.log(0.75 / 0.2), rel=1e-15)
    assert renyi_divergence(a, b, alpha=1e8) == pytest.approx(dinf, rel=1e-7)
    # D_alpha is non-decreasing in alpha
    alphas = [0.0, 1e-3, 0.1, 0.5, 0.9, 1.0, 1.1, 2.0, 5.0, 50.0, 1e4, math.inf]
    vals = [renyi_divergence(a, b, alpha=al) for al in alphas]
    assert all(x <= y + 1e-15 for x, y in zip(vals, vals[1:]))


def test_renyi_divergence_infinite_off_support():
    a, b = [0.5, 0.5], [1.0, 0.0]
    assert renyi_divergence(a, b, alpha=2.0) == math.inf
    assert renyi_divergence(a, b, alpha=1.0) == math.inf
    assert renyi_divergence(a, b, alpha=1.0 + 1e-9) == math.inf
    assert renyi_divergence(a, b, alpha=math.inf) == math.inf
    assert renyi_divergence(a, b, alpha=0.5) == pytest.approx(-2 * math.log(math.sqrt(0.5)), rel=1e-15)
    assert renyi_divergence(a, b, alpha=1.0 - 1e-9) == pytest.approx(1e9 * math.log(2), rel=1e-6)
    assert kl(a, b) == math.inf and jeffreys(a, b) == math.inf


def test_identical_laws_give_zero():
    a = [0.1, 0.2, 0.3, 0.4]
    for al in (0.0, 0.5, 1.0, 1 + 1e-12, 2.0, math.inf):
        assert renyi_divergence(a, a, alpha=al) == pytest.approx(0.0, abs=1e-15)
    assert kl(a, a) == 0.0 and jeffreys(a, a) == 0.0


# ------------------------------------------------------------ broadcasting
def _laws(rng, *shape):
    x = rng.random(shape) + 1e-3
    return x / x.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 1 + 1e-9, 2.0, math.inf])
def test_broadcasting_and_axis(alpha):
    rng = np.random.default_rng(20240401)
    a = _laws(rng, 4, 5)
    b = _laws(rng, 5)
    fns = [lambda x, y, **k: renyi_divergence(x, y, alpha=alpha, **k)]
    if np.isfinite(alpha):
        fns.append(lambda x, y, **k: renyi_cross_entropy(x, y, alpha=alpha, **k))
    if alpha == 1.0:
        fns += [kl, jeffreys]
    for f in fns:
        rows = np.array([f(a[i], b) for i in range(4)])
        got = f(a, b)
        assert got.shape == (4,)
        np.testing.assert_allclose(got, rows, rtol=1e-14, atol=1e-16)
        np.testing.assert_allclose(f(a.T, b[:, None], axis=0), rows, rtol=1e-14, atol=1e-16)
        # (2, 4, 5) against (4, 5): reduce the last axis
        a3 = np.stack([a, a[::-1]])
        got3 = f(a3, _laws(np.random.default_rng(1), 4, 5))
        assert got3.shape == (2, 4)
        # axis=1 on a (2, 5, 4) stack equals the last-axis result of its transpose
        np.testing.assert_allclose(
            f(np.swapaxes(a3, 1, 2), np.swapaxes(_laws(np.random.default_rng(1), 4, 5), 0, 1), axis=1),
            got3,
            rtol=1e-14,
            atol=1e-16,
        )


def test_scalar_results_are_python_floats():
    for v in (
        kl([0.5, 0.5], [0.9, 0.1]),
        jeffreys([0.5, 0.5], [0.9, 0.1]),
        renyi_divergence([0.5, 0.5], [0.9, 0.1], alpha=2.0),
        renyi_cross_entropy([0.5, 0.5], [0.9, 0.1], alpha=2.0),
    ):
        assert type(v) is float


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "f",
    [
        kl,
        jeffreys,
        lambda a, b, **k: renyi_divergence(a, b, alpha=2.0, **k),
        lambda a, b, **k: renyi_cross_entropy(a, b, alpha=2.0, **k),
    ],
)
def test_bad_inputs(f):
    with pytest.raises(ValueError, match="a is empty"):
        f([], [0.5, 0.5])
    with pytest.raises(ValueError, match="b contains NaN"):
        f([0.5, 0.5], [np.nan, 1.0])
    with pytest.raises(ValueError, match="a contains inf"):
        f([np.inf, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="b contains negative values"):
        f([0.5, 0.5], [1.5, -0.5])
    with pytest.raises(ValueError, match="incompatible shapes"):
        f([0.5, 0.5], [0.2, 0.3, 0.5])
    # a length-1 "law" must not stretch over the summed axis (KL came out -log 2)
    with pytest.raises(ValueError, match=r"different lengths along axis -1 \(2 and 1\)"):
        f([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="different lengths along axis 0"):
        f(np.full((2, 3), 0.5), np.full((1, 3), 1 / 3), axis=0)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        f([0.5, 0.5], [0.5, 0.5], axis=2)


def test_bad_alpha():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        renyi_divergence([0.5, 0.5], [0.9, 0.1], alpha=-0.5)
    with pytest.raises(ValueError, match="alpha is NaN"):
        renyi_divergence([0.5, 0.5], [0.9, 0.1], alpha=math.nan)
    with pytest.raises(ValueError, match="alpha must be finite"):
        renyi_cross_entropy([0.5, 0.5], [0.9, 0.1], alpha=math.inf)
    with pytest.raises(ValueError, match="alpha must be finite"):
        renyi_cross_entropy([0.5, 0.5], [0.9, 0.1], alpha=math.nan)


# ------------------------------------------------------- theory §5 identity
@pytest.mark.parametrize("t", [-3.0, -1.0, -0.25, -1e-9, 1e-12, 1e-6, 0.5, 1.0, 2.5])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 40.0])
def test_cumulant_as_renyi_cross_entropy(t, scale):
    """log E_phi[e^{t r}] = t log Z_r - t H_{1+t}(phi; q_r),  q_r = e^r / Z_r."""
    rng = np.random.default_rng(7)
    r = scale * rng.standard_normal(6)
    # phi exactly normalised (dyadic), so both sides see sum(phi) = 1 exactly
    phi = np.array([3, 1, 7, 2, 2, 1]) / 16.0
    log_z = logsumexp(r)
    q = np.exp(r - log_z)
    rhs = t * log_z - t * renyi_cross_entropy(phi, q, alpha=1.0 + t)
    with mp.workdps(50):
        lhs = float(mp.log(mp.fsum(mp.mpf(f) * mp.exp(mp.mpf(t) * mp.mpf(x)) for f, x in zip(phi, r))))
    # rounding of log Z, log q and H, each O(|log Z| + max|r|), is multiplied by t
    atol = 1e-14 * abs(t) * (abs(log_z) + np.abs(r).max())
    assert rhs == pytest.approx(lhs, rel=1e-12, abs=atol)
