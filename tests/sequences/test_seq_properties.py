"""Property tests: tilted FFT = log-space DP on random lattices; BoN identities over sequences."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from klfrontier import Reference
from klfrontier.sequences import Memoryless, reward_law
from klfrontier.testing import prob_vectors


@st.composite
def lattice_refs(draw):
    L = draw(st.integers(1, 12))
    inner = draw(st.lists(st.integers(1, max(1, L - 1)), max_size=6, unique=True)) if L > 1 else []
    ks = sorted({0, L, *inner})
    probs = draw(prob_vectors(len(ks)))
    h = draw(st.sampled_from([0.1, 0.25, 1.0, 3.0]))
    a = draw(st.sampled_from([-2.0, 0.0, 0.5]))
    return Reference([a + h * k for k in ks], probs=probs)


@given(lattice_refs(), st.integers(1, 40))
def test_fft_law_equals_dp(ref, m):
    law = reward_law(ref, m)
    dp = reward_law(ref, m, method="direct")
    assert law.method == "lattice-fft" and dp.method == "direct"
    assert law.size == dp.size
    np.testing.assert_allclose(law.values, dp.values, rtol=1e-13, atol=1e-12)
    err = np.abs(law.logpmf - dp.logpmf) / np.maximum(1.0, np.abs(dp.logpmf))
    assert err.max() <= 1e-8


@given(lattice_refs(), st.integers(2, 60), st.floats(0.01, 3.0))
def test_sequence_bon_identities(ref, m, delta):
    """KL <= log N - (N-1)/N, reward between the mean and the optimum, §2 identity."""
    seq = Memoryless(ref, m)
    b = seq.best_of_n(log_n=m * delta)
    assert abs(b.details["mass"] - 1) < 1e-9
    assert -1e-12 <= b.kl <= b.kl_bound * (1 + 1e-12) + 1e-12
    assert b.reward >= m * ref.mean_reward - 1e-9 * (1 + abs(m * ref.mean_reward))
    if np.isfinite(b.kl_to_optimal):
        # no policy with KL <= Δ beats m R*(δ)
        assert b.reward <= b.optimal_reward + 1e-9 * (1 + abs(b.optimal_reward))
        ident = b.details["kl_to_optimal_identity"]
        assert abs(b.kl_to_optimal - ident) <= 1e-7 * (1 + b.kl)
