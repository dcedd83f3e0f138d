"""The empirical best-of-N kernel lives in the shared level-law module: one home, agreeing with level_logd and mpmath."""

import mpmath as mp
import numpy as np
import pytest

from klfrontier import _bon_kernel as BK
from klfrontier.empirical import kernels as K


def _count_table(n):
    """All levels ``(c, k)`` with ``1 <= k <= c <= n``, as flat arrays."""
    c, k = np.meshgrid(np.arange(1.0, n + 1), np.arange(1.0, n + 1), indexing="ij")
    ok = k <= c
    return c[ok], k[ok]


def test_bon_plugin_uses_the_shared_count_kernel():
    assert K.count_level_logd is BK.count_level_logd
    assert "count_level_logd" in BK.__all__


@pytest.mark.parametrize("big_n", [1.0, 2.0, 3.7, 16.0, 100.0, 1e4])
@pytest.mark.parametrize("n", [2, 5, 40, 300])
def test_count_level_logd_agrees_with_level_logd(n, big_n):
    c, k = _count_table(n)
    got = BK.count_level_logd(c, k, n, np.log(big_n))
    ln = np.log(n)
    logq = np.log(k) - ln
    with np.errstate(divide="ignore"):
        tails = BK.tail_logs(logq, np.log(c) - ln, np.log(n - c) - ln)
    want = BK.level_logd(logq, *tails, np.log(big_n))
    live = want > -700.0
    assert np.all(np.abs(np.expm1(got[live] - want[live])) < 1e-11)
    # n distinct samples (k = 1 at every c): the masses telescope to one
    assert abs(np.exp(got[k == 1.0]).sum() - 1.0) < 1e-12


def test_count_level_logd_bottom_level_is_a_power_and_matches_mpmath():
    # k = c: the mass is (c/n)^N exactly
    c = np.arange(1.0, 41.0)
    got = BK.count_level_logd(c, c, 40, np.log(7.0))
    assert np.allclose(got, 7.0 * np.log(c / 40.0), rtol=0.0, atol=1e-14)  # relative error of the mass
    with mp.workdps(40):
        rng = np.random.default_rng(3)
        for _ in range(300):
            n = int(rng.integers(2, 200))
            ci = int(rng.integers(1, n + 1))
            ki = int(rng.integers(1, ci + 1))
            big_n = float(rng.choice([2.0, 16.0, 100.0, 1e4]))
            val = float(BK.count_level_logd(np.array(float(ci)), np.array(float(ki)), n, np.log(big_n)))
            nn = mp.mpf(float(np.exp(np.log(big_n))))  # N as the kernel sees it
            exact = mp.log((mp.mpf(ci) / n) ** nn - (mp.mpf(ci - ki) / n) ** nn)
            if exact < -700:
                continue
            assert abs(float(mp.expm1(mp.mpf(val) - exact))) < 1e-10
