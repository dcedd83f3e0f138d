"""Log-space kernels against mpmath (50 digits), including extreme arguments.

Every reference value below is computed in the test with mpmath at 50
significant digits from the defining formula; tolerances are relative and
stated per test.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest

from klfrontier._logspace import (
    _CUMSUM_BLOCK,
    kl_terms,
    log1mexp,
    log_bon_kl_bound,
    log_cdf_levels,
    log_cumsum,
)

mp.mp.dps = 50


def _rel(got, exact):
    exact = mp.mpf(exact)
    if exact == 0:
        return abs(mp.mpf(got))
    return float(abs(mp.mpf(got) - exact) / abs(exact))


# ------------------------------------------------------------------ log1mexp
LOG1MEXP_ARGS = [
    -1e-300,
    -1e-200,
    -1e-30,
    -1e-16,
    -1e-10,
    -1e-5,
    -1e-3,
    -0.1,
    -0.5,
    -np.log(2.0),
    np.nextafter(-np.log(2.0), 0.0),
    np.nextafter(-np.log(2.0), -1.0),
    -0.7,
    -1.0,
    -2.0,
    -10.0,
    -36.0,
    -37.0,
    -100.0,
    -700.0,
    -745.0,
    -746.0,
    -1e4,
    -1e300,
]


def _mp_log1mexp(x):
    """log(1 - e^x) at 60 digits: log(-expm1(x)) near 0, log1p(-e^x) below -1
    (mpmath's log1p keeps full relative accuracy for tiny arguments)."""
    x = mp.mpf(x)
    with mp.workdps(60):
        return +(mp.log(-mp.expm1(x)) if x > -1 else mp.log1p(-mp.exp(x)))


@pytest.mark.parametrize("x", LOG1MEXP_ARGS)
def test_log1mexp_matches_mpmath(x):
    # log(1 - e^x); rtol 1e-15 (a few ulps); results below the float range are 0
    exact = _mp_log1mexp(x)
    got = log1mexp(x)
    if abs(exact) < mp.mpf("2.3e-308"):  # subnormal or underflow: absolute check
        assert abs(got - float(exact)) <= 5e-324, (x, got, exact)
    else:
        assert _rel(got, exact) <= 1e-15, (x, got, exact)


def test_log1mexp_limits_and_shapes():
    assert log1mexp(0.0) == -np.inf
    assert log1mexp(-np.inf) == 0.0
    assert isinstance(log1mexp(-1.0), float)
    xs = np.array([[-1.0, -2.0], [-1e-3, -50.0]])
    out = log1mexp(xs)
    assert out.shape == (2, 2)
    for x, g in zip(xs.ravel(), out.ravel()):
        assert _rel(g, _mp_log1mexp(x)) <= 1e-15


# ------------------------------------------------------------ log_cdf_levels
def _mp_cdf(logq):
    """Exact log F, log F^-, log S for float log-masses, side by side with the kernel.

    Float log-masses sum to 1 only up to ~1e-16, so "F = 1 - S" and "F = sum of
    the masses below" differ by that much.  The kernel's contract is that each
    output is accurate relative to the sum it is built from: ``log F_j`` from the
    top (``log(1 - S_j)``, ``S_j = sum_{k>j} q_k``) where ``S_j < 1/2`` and from
    the bottom (``log sum_{k<=j} q_k``) otherwise; ``log S_j`` is always the
    top-down sum (theory §3: "summed from the top").
    """
    with mp.workdps(800):  # 1 - 1e-300 must be visible
        q = [mp.exp(mp.mpf(x)) for x in logq]
        L = len(q)
        below = [mp.fsum(q[: j + 1]) for j in range(L)]
        above = [mp.fsum(q[j + 1 :]) for j in range(L)]
        lg = lambda v: mp.log(v) if v > 0 else -mp.inf  # noqa: E731
        F = [lg(1 - a) if a < 0.5 else lg(b) for a, b in zip(above, below)]
        S = [lg(a) for a in above]
        F[-1], S[-1] = mp.mpf(0), -mp.inf
        return F, [-mp.inf] + F[:-1], S


def _check_log(got, exact, rtol, atol=0.0):
    for g, e in zip(got, exact):
        if np.isfinite(g) and mp.isfinite(e) and abs(g - float(e)) <= atol:
            continue
        if e == -mp.inf:
            assert g == -np.inf
        elif e == 0:
            assert g == 0.0
        elif abs(e) < mp.mpf("2.3e-308"):
            assert abs(g - float(e)) <= 5e-324
        else:
            assert _rel(g, e) <= rtol, (g, e)


CDF_CASES = {
    "plain": np.log([0.5, 0.3, 0.2]),
    "tiny top": np.log([0.5, 0.5 - 1e-300, 1e-300]),
    "tiny bottom": np.log([1e-300, 0.5, 0.5]),
    "tiny middle": np.log([0.25, 1e-250, 0.75]),
    "one dominant": np.array([-1e-200, np.log(1e-200) - np.log(2), np.log(1e-200) - np.log(2)]),
    "dominant top": np.array([np.log(3e-17), np.log(7e-17), np.log1p(-1e-16)]),
    "single": np.array([0.0]),
    "many equal": np.full(1000, -np.log(1000.0)),
}


@pytest.mark.parametrize("name", list(CDF_CASES))
def test_log_cdf_levels_matches_mpmath(name):
    # rtol 1e-13 on log F, log F^-, log S themselves: F^N = exp(N log F) needs
    # log F to relative (not absolute) accuracy when F is near 1.  log S is the
    # top-down log-space sum: relative accuracy where S <= 1/2 (where BoN uses it),
    # absolute ~1e-16 where S ~ 1 (log S can then be +1e-16: S_0 = 1 - 1e-300).
    logq = CDF_CASES[name]
    logF, logFm, logS = log_cdf_levels(logq)
    eF, eFm, eS = _mp_cdf(logq)
    _check_log(logF, eF, 1e-13)
    _check_log(logFm, eFm, 1e-13)
    _check_log(logS, eS, 1e-13, atol=4.5e-16 * len(logq))
    assert logF[-1] == 0.0 and logS[-1] == -np.inf and logFm[0] == -np.inf


def test_log_cdf_levels_random_against_mpmath():
    rng = np.random.default_rng(20240401)
    for _ in range(20):
        L = int(rng.integers(2, 9))
        logq = -rng.uniform(0, 700, size=L) * (rng.uniform(size=L) < 0.5)
        logq -= np.logaddexp.reduce(logq)
        logF, logFm, logS = log_cdf_levels(logq)
        eF, eFm, eS = _mp_cdf(logq)
        _check_log(logF, eF, 1e-13)
        _check_log(logFm, eFm, 1e-13)
        _check_log(logS, eS, 1e-13, atol=4.5e-16 * L)
        assert np.all(logF <= 0)
        half = logS < -np.log(2.0)
        assert np.all(logS[half] <= 0)


# ------------------------------------------------------------------ log_cumsum
def _mp_log_cumsum(logx):
    """Prefix log-sums at 40 digits (exact for the purpose: every term positive)."""
    out, acc = [], mp.mpf(0)
    with mp.workdps(40):
        for v in logx:
            if v != -np.inf:
                acc += mp.exp(mp.mpf(float(v)))
            out.append(float(mp.log(acc)) if acc > 0 else -np.inf)
    return np.array(out)


LOG_CUMSUM_CASES = {
    # several blocks, every block narrow: the linear-space path throughout
    "smooth": lambda rng: np.log(rng.random(3 * _CUMSUM_BLOCK + 17)),
    # a block spanning > 700 nats (fallback), next to narrow ones
    "wide block": lambda rng: np.concatenate(
        [np.log(rng.random(_CUMSUM_BLOCK)), -rng.uniform(0, 2000, _CUMSUM_BLOCK), np.log(rng.random(50))]
    ),
    # a rising law whose first entries are far below the later ones (1e-300 under 1)
    "rising tail": lambda rng: np.linspace(-3000.0, 0.0, 2 * _CUMSUM_BLOCK + 1),
    # -inf entries, a whole -inf block, and magnitudes near the float limits
    "with -inf": lambda rng: np.concatenate(
        [
            np.full(5, -np.inf),
            np.log(rng.random(_CUMSUM_BLOCK)),
            np.full(_CUMSUM_BLOCK, -np.inf),
            rng.uniform(-745, 700, 40),
            [-np.inf],
        ]
    ),
}


@pytest.mark.parametrize("name", list(LOG_CUMSUM_CASES))
def test_log_cumsum_matches_mpmath(name):
    # every prefix to 1e-14 relative in the sum (absolute 1e-14 in its log, or a few
    # ulps of the log where |log| > 1): the blocked linear-space sums hold
    # (B + L/B) eps in the worst case, far less here
    logx = LOG_CUMSUM_CASES[name](np.random.default_rng(7))
    got = log_cumsum(logx)
    want = _mp_log_cumsum(logx)
    assert got.shape == logx.shape
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin) and np.all(got[~fin] == -np.inf)
    assert np.all(np.abs(got[fin] - want[fin]) <= 1e-14 * np.maximum(1.0, np.abs(want[fin])))


def test_log_cumsum_beats_sequential_logaddexp():
    """The reason it exists: 10^5 equal masses, prefix errors vs np.logaddexp.accumulate."""
    logx = np.full(10**5, -np.log(1e5))
    exact = np.log(np.arange(1, 10**5 + 1) / 1e5)  # float64 log of the exact k/K: ~1 ulp
    err_new = np.abs(log_cumsum(logx) - exact).max()
    err_seq = np.abs(np.logaddexp.accumulate(logx) - exact).max()
    assert err_new <= 5e-15 < err_seq


def test_log_cumsum_small_inputs():
    assert log_cumsum(np.array([])).shape == (0,)
    assert log_cumsum(np.array([-np.inf])).tolist() == [-np.inf]
    assert log_cumsum([0.0]).tolist() == [0.0]
    assert log_cumsum(np.log([0.25, 0.25])).tolist() == [np.log(0.25), np.log(0.5)]


# ------------------------------------------------------------------ kl_terms
def _mp_term(la, lb):
    """b h(log(a/b)), h(t) = e^t (t - 1) + 1, with the library's conventions."""
    la, lb = mp.mpf(la), mp.mpf(lb)
    if la == -mp.inf and lb == -mp.inf:
        return mp.mpf(0)
    if lb == -mp.inf:
        return mp.inf
    if la == -mp.inf:
        return mp.exp(lb)
    t = la - lb
    return mp.exp(lb) * (mp.exp(t) * (t - 1) + 1)


KL_TERM_ARGS = [
    (np.log(0.2), np.log(0.1)),
    (0.0, 0.0),
    (-1e-300, 0.0),
    (np.log(0.5) + 1e-12, np.log(0.5)),
    (np.log(0.5) - 1e-8, np.log(0.5)),
    (np.log(0.5) + 0.0999, np.log(0.5)),
    (np.log(0.5) + 0.1001, np.log(0.5)),
    (np.log(0.5) - 0.0999, np.log(0.5)),
    (np.log(0.5) - 0.1001, np.log(0.5)),
    (-700.0, -690.0),
    (-690.0, -700.0),
    (-1.0, -740.0),  # a >> b: term ~ a (t - 1), t = 739
    (-740.0, -1.0),  # a << b: term ~ b
    (-1e-3, -1e5),  # b underflows in floats; t = 1e5 - 1e-3
    (-1e5, -2e5),  # both underflow; t = 1e5
    (700.0, 0.0),  # unnormalised a: must not overflow to inf needlessly
]


@pytest.mark.parametrize("la,lb", KL_TERM_ARGS)
def test_kl_terms_matches_mpmath(la, lb):
    # rtol 1e-13 (the closed form a (t - 1) + b cancels by up to ~1e2 at |t| ~ 0.1)
    exact = _mp_term(la, lb)
    got = kl_terms(la, lb)
    if exact > mp.mpf("1.7e308"):
        assert got == np.inf
    elif exact < mp.mpf("1e-300"):
        assert abs(got) <= 1e-300
    else:
        assert _rel(got, exact) <= 1e-13, (la, lb, got, exact)


def test_kl_terms_conventions_and_sum_is_kl():
    assert kl_terms(-np.inf, -np.inf) == 0.0
    assert kl_terms(-np.inf, np.log(0.3)) == pytest.approx(0.3, rel=1e-15)
    assert kl_terms(np.log(0.3), -np.inf) == np.inf
    assert kl_terms(0.0, 0.0) == 0.0
    rng = np.random.default_rng(7)
    a, b = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    got = kl_terms(np.log(a), np.log(b)).sum()
    exact = mp.fsum(mp.mpf(x) * mp.log(mp.mpf(x) / mp.mpf(y)) for x, y in zip(a, b))
    # a, b sum to 1 only up to rounding: rtol 1e-12
    assert _rel(got, exact) <= 1e-12
    # tiny divergence: a = b (1 + eps t) keeps full relative accuracy
    la = np.log(b) + 1e-9 * (np.arange(6) - 2.5)
    la -= np.logaddexp.reduce(la)
    with mp.workdps(60):
        A = [mp.exp(mp.mpf(x)) for x in la]
        B = [mp.exp(mp.mpf(x)) for x in np.log(b)]
        sa, sb = mp.fsum(A), mp.fsum(B)
        exact = mp.fsum((x / sa) * mp.log((x / sa) / (y / sb)) for x, y in zip(A, B))
    got = kl_terms(la, np.log(b)).sum()
    assert (
        _rel(got, exact) <= 1e-6
    )  # ~1e-18 divergence from float inputs: 1e-6 is the rounding of the inputs' sums
    assert kl_terms(np.zeros((3, 4)), np.zeros(4)).shape == (3, 4)


# ------------------------------------------------------------ log_bon_kl_bound
BOUND_ARGS = [
    0.0,
    1e-300,
    1e-20,
    1e-10,
    1e-5,
    1e-3,
    0.00999,
    0.01,
    0.0101,
    0.1,
    np.log(2.0),
    1.0,
    2.0,
    10.0,
    36.0,
    700.0,
    1e3,
    1e6,
    1e15,
    1e300,
]


@pytest.mark.parametrize("x", BOUND_ARGS)
def test_log_bon_kl_bound_matches_mpmath(x):
    # log N - (N - 1)/N = x + expm1(-x), x = log N.  rtol 5e-14: just above the
    # series switch (x = 1e-2) the closed form cancels by 2/x = 200 (measured
    # 1.3e-14 at x = 0.0101); everywhere else it is a few ulps.
    exact = mp.mpf(x) + mp.expm1(-mp.mpf(x))
    got = log_bon_kl_bound(x)
    assert _rel(got, exact) <= 5e-14, (x, got, exact)


def test_log_bon_kl_bound_is_continuous_at_the_series_switch():
    xs = np.array([np.nextafter(1e-2, 0.0), 1e-2, np.nextafter(1e-2, 1.0)])
    for x, g in zip(xs, log_bon_kl_bound(xs)):
        assert _rel(g, mp.mpf(x) + mp.expm1(-mp.mpf(x))) <= 5e-14
    assert log_bon_kl_bound(np.array([0.0, 1e6])).tolist() == [0.0, 1e6 - 1.0]


def test_chunked_kernels_match_the_unchunked_kernel_exactly():
    """Large inputs run chunk by chunk (cache-sized temporaries): same bits, same shapes."""
    from klfrontier import _logspace as ls

    rng = np.random.default_rng(5)
    n = 3 * ls._ELEMENT_CHUNK + 7
    x = -np.concatenate(
        [
            rng.exponential(size=n - 4) * rng.choice([1e-12, 1.0, 50.0, 1e3], n - 4),
            [0.0, np.inf, 1e-300, 745.5],
        ]
    )
    y = np.log(rng.random(n))
    for fn, args in [
        (log1mexp, (x,)),
        (ls.log_neg_log1mexp, (x,)),
        (kl_terms, (x, y)),
        (kl_terms, (x[: 7 * (n // 7)].reshape(7, -1), np.float64(-0.5))),
    ]:
        got = fn(*args)
        want = fn.__wrapped__(*args)
        assert got.shape == want.shape
        assert np.array_equal(got, want, equal_nan=True)


def test_log_cdf_levels_on_many_blocks_against_mpmath():
    """5000 levels (three blocks of log_cumsum), masses spanning e^-600..1: both sides."""
    rng = np.random.default_rng(17)
    logq = -rng.exponential(20.0, 5000)
    logq[rng.integers(0, 5000, 5)] = 0.0  # a few heavy atoms
    logq -= np.logaddexp.reduce(logq)
    logF, logFm, logS = log_cdf_levels(logq)
    with mp.workdps(40):
        q = [mp.exp(mp.mpf(float(x))) for x in logq]
        up, acc = [], mp.mpf(0)
        for x in q:
            acc += x
            up.append(acc)
        down, acc = [mp.mpf(0)] * len(q), mp.mpf(0)
        for j in range(len(q) - 1, -1, -1):
            down[j] = acc  # sum_{k>j} q_k
            acc += q[j]
        for j in range(0, len(q) - 1, 7):
            eS = mp.log(down[j])
            eF = mp.log(1 - down[j]) if down[j] < 0.5 else mp.log(up[j])
            assert abs(logS[j] - float(eS)) <= 1e-13 * max(1.0, abs(float(eS))), j
            assert abs(logF[j] - float(eF)) <= 1e-13 * max(1e-300, abs(float(eF))), j
    assert np.array_equal(logFm[1:], logF[:-1]) and logFm[0] == -np.inf


def test_log_total_and_log_total_probs_against_mpmath():
    """Totals of laws to 1e-15, including a dominant entry with 1e-100 beside it."""
    from klfrontier._logspace import log_total, log_total_probs

    rng = np.random.default_rng(9)
    cases = [
        np.array([1.0, 1e-100]),
        np.array([0.5, 0.5 + 1e-12]),
        np.array([1e-300, 2e-300]),
        np.array([0.0, 0.3, 0.0, 0.7]),
        rng.exponential(size=50_000) * 1e-5,
        np.full(3, 1e300),
    ]  # the sum overflows: log path
    with mp.workdps(60):
        for p in cases:
            with np.errstate(divide="ignore"):
                lp = np.log(p)
            # each against the exact total of its own float input: the sum to 1e-14
            # relative (pairwise summation of 5e4 terms), i.e. the log to 1e-14 absolute
            want = mp.log(mp.fsum(mp.mpf(float(x)) for x in p))
            want_lp = mp.log(mp.fsum(mp.exp(mp.mpf(float(x))) for x in lp if x > -np.inf))
            for got, w in ((log_total_probs(p), want), (log_total(lp), want_lp)):
                assert abs(got - float(w)) <= 1e-14 * max(1.0, abs(float(w))), (p[:3], got, w)
    # one dominant entry: its neighbours' mass is kept to full relative accuracy
    # (log(1 + 1e-100) = 1e-100, not 0): what makes -log p(A) exact as p(A) -> 1
    assert log_total_probs(np.array([1.0, 1e-100])) == 1e-100
    assert log_total(np.array([0.0, np.log(1e-100)])) == pytest.approx(1e-100, rel=1e-15)
