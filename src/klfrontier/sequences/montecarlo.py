"""Monte Carlo cross-checks of sequence-level best-of-N (theory §7).

The maximum of ``N`` i.i.d. draws of ``S_m`` has CDF ``F^N``, so one BoN
draw costs one uniform ``U`` and one inverse-survival look-up, whatever
``N`` is: the winner's survival is ``S(max) = 1 - U^{1/N} =
-expm1(log U / N)``, computed from ``log N`` (``N = e^{10^4}`` is no
harder than ``N = 2``).  :func:`naive_bon_monte_carlo` is the baseline that
actually draws ``N m`` tokens per BoN draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._logspace import log1mexp
from .._validate import log_n_from
from ..reference import Reference, check_reference
from .memoryless import check_length, sequence_bon

__all__ = ["MonteCarloResult", "bon_monte_carlo", "naive_bon_monte_carlo"]

_Z95 = 1.959963984540054


@dataclass(eq=False)
class MonteCarloResult:
    """Monte Carlo estimate of the BoN reward ``E_{π_N} S_m`` with a 95% CI.

    Attributes
    ----------
    length, log_n, size : sequence length, ``log N``, number of BoN draws.
    mean, stderr : sample mean of the winner's ``S_m`` and its standard error.
    ci : (float, float)
        ``mean ± 1.96 stderr``.
    outside : int
        Draws whose winner fell outside the computed window of the law
        (probability below ~1e-18 each; they are clipped to the window edge).
    method : str
        Engine of the law that was inverted.
    samples : ndarray or None
        The winners' sums (when requested).
    """

    length: int
    log_n: float
    size: int
    mean: float
    stderr: float
    ci: tuple
    outside: int
    method: str
    samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def mean_per_token(self) -> float:
        return self.mean / self.length

    @property
    def ci_per_token(self) -> tuple:
        return (self.ci[0] / self.length, self.ci[1] / self.length)

    def covers(self, value) -> bool:
        """Whether ``value`` (a total reward) lies in the 95% CI."""
        return bool(self.ci[0] <= value <= self.ci[1])


def _log_winner_survival(log_n, e):
    """``log(-expm1(log U / N))`` with ``log U = -e``, ``e ~ Exp(1)``, from ``log N``."""
    ly = np.log(e) - log_n  # log(-log U / N)
    # -expm1(-y) = y (1 - y/2 + ...): for y < e^-40 log(-expm1(-y)) = log y to 1e-18
    return np.where(ly < -40.0, ly, log1mexp(-np.exp(np.minimum(ly, 700.0))))


def bon_monte_carlo(
    ref: Reference,
    length: int,
    n=None,
    *,
    log_n=None,
    size=10_000,
    seed=None,
    method="auto",
    lattice=None,
    return_samples=False,
) -> MonteCarloResult:
    """Sequence-level BoN reward by the order-statistic trick.

    Parameters
    ----------
    ref : Reference
    length : int
        ``m``.
    n, log_n : float
        ``N`` or ``log N`` (exactly one).
    size : int
        Number of BoN draws.
    seed : int, numpy Generator or None
        Anything ``numpy.random.default_rng`` accepts (tests pass an int).
    method, lattice :
        Engine for the law of ``S_m`` (as in :meth:`Memoryless.best_of_n`).

    Returns
    -------
    MonteCarloResult

    Notes
    -----
    ``P(max <= s) = F(s)^N``; with ``U`` uniform, ``max = F^{-1}(U^{1/N})``,
    i.e. the smallest support point ``s`` with ``P(S_m > s) <= -expm1(log U /
    N)``.  The law is the exact engine's window (``method='saddlepoint'``:
    the Lugannani–Rice tail, interpolated), so this checks the BoN reduction
    and the exact expectation, not the law itself — the naive sampler does
    that.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.7, 0.3])
    >>> mc = bon_monte_carlo(ref, 100, log_n=10.0, size=20000, seed=0)
    >>> from klfrontier.sequences import Memoryless
    >>> mc.covers(Memoryless(ref, 100).best_of_n(log_n=10.0).reward)
    True
    """
    check_reference(ref)
    m = check_length(length)
    ln = log_n_from(n, log_n, finite=True)
    size = int(size)
    if size < 2:
        raise ValueError("size must be >= 2")
    gen = np.random.default_rng(seed)
    exact, w = sequence_bon(ref, m, ln, method, lattice)
    if w is None:  # constant reward or N = 1
        if ref.is_constant:
            s = np.full(size, exact.reward)
        else:
            from .memoryless import reward_law

            law = reward_law(ref, m, lattice=lattice)
            idx = gen.choice(law.size, size=size, p=np.exp(law.logpmf) / np.exp(law.logpmf).sum())
            s = law.values[idx]
        return _result(m, ln, s, 0, exact.method, return_samples)
    e = gen.standard_exponential(size)
    log_sigma = _log_winner_survival(ln, e)
    outside = 0
    if w.method == "saddlepoint":
        # logsf decreasing along the grid: interpolate su at log sigma
        s_su = np.interp(-log_sigma, -w.logsf, w.su)
        outside = int(((log_sigma > w.logsf[0]) | (log_sigma < w.logsf[-1])).sum())
        s = w.values[0] + (s_su - w.su[0]) * (w.values[-1] - w.values[0]) / (w.su[-1] - w.su[0])
    else:
        j = np.searchsorted(-w.logsf, -log_sigma, side="left")
        above = j >= w.su.size
        below = np.zeros(size, dtype=bool)
        if not w.complete_low:
            below = (j == 0) & (log_sigma >= np.logaddexp(w.logsf[0], w.logpmf[0]))
        outside = int((above | below).sum())
        s = w.values[np.minimum(j, w.su.size - 1)]
    return _result(m, ln, s, outside, w.method, return_samples)


def _result(m, ln, s, outside, method, keep):
    s = np.asarray(s, dtype=float)
    # sums of rewards near 1e300 square past the float range: their spread is taken on s / max|s|
    big = float(np.max(np.abs(s))) if s.size else 0.0
    scale = big if big > 1e150 else 1.0
    mean = float((s / scale).mean()) * scale
    se = float((s / scale).std(ddof=1) / np.sqrt(s.size)) * scale
    return MonteCarloResult(
        m,
        ln,
        int(s.size),
        mean,
        se,
        (mean - _Z95 * se, mean + _Z95 * se),
        outside,
        method,
        s if keep else None,
    )


def naive_bon_monte_carlo(
    ref: Reference, length: int, n: int, *, size=100, seed=None, max_seconds=None, chunk_tokens=2**22
) -> MonteCarloResult:
    """Baseline: draw ``N`` sequences of ``m`` tokens per BoN draw and keep the best sum.

    Costs ``N m`` token draws per BoN draw (``N`` must be an integer).
    ``max_seconds`` stops early (the result reports the draws completed);
    ``seed`` as in :func:`bon_monte_carlo`.

    Examples
    --------
    >>> ref = Reference([0.0, 1.0], probs=[0.7, 0.3])
    >>> naive_bon_monte_carlo(ref, 10, 4, size=200, seed=0).size
    200
    """
    import time

    check_reference(ref)
    m = check_length(length)
    N = int(n)
    if N < 1 or N != n:
        raise ValueError("n must be a positive integer for the naive sampler")
    gen = np.random.default_rng(seed)
    vals = ref.level_values
    cdf = np.cumsum(np.exp(ref.level_logq))
    cdf /= cdf[-1]
    out = []
    t0 = time.perf_counter()
    rows = max(1, chunk_tokens // m)
    for _ in range(int(size)):
        best = -np.inf
        left = N
        while left > 0:
            r = min(rows, left)
            idx = np.searchsorted(cdf, gen.random((r, m)), side="right")
            best = max(best, float(vals[np.minimum(idx, vals.size - 1)].sum(axis=1).max()))
            left -= r
        out.append(best)
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    if len(out) < 2:
        out = out * 2
    return _result(m, float(np.log(N)), np.array(out), 0, "naive", False)
