"""The BoN–RL equivalence and its second-order terms (theory §6).

Memoryless reference ``p^m``, linear reward ``S_m = r(Y_1) + ... + r(Y_m)``,
KL budget ``Δ = m δ`` and best-of-N with ``N = e^{m δ}``.
:func:`equivalence` gives ``λ_δ``, ``x*(δ) = R*(δ)``, ``σ² = Λ''(λ_δ)``, the
lattice of the rewards, and second-order predictions of the BoN reward gap
and of ``KL(π_N || φ_Δ)`` (non-lattice and lattice forms; the derivation is
in ``docs/second_order.md``).  The rate functions it uses are in
:mod:`klfrontier.ldp`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ._engine import end_rows, interior_rates, level_logphi
from ._logspace import log1mexp, log_neg_log1mexp
from ._validate import float_or_array, real_array, real_scalar
from .errors import ConvergenceError
from .lattice import detect_lattice
from .ldp import rate_function, to_reward_power
from .reference import Reference, check_reference
from .tilt import solve_lam_for_kl

__all__ = ["equivalence", "Equivalence", "discrete_gumbel"]

# beta = lambda h below which the lattice is invisible: the oscillation of
# lambda m gap has amplitude 2 sqrt(beta) exp(-pi^2 / beta) and the mean
# correction is log(sinh(beta/2) / (beta/2)) ~ beta^2 / 24.
_BETA_SMOOTH = 1e-3
_BETA_SUM = 1e-2


@dataclass
class Equivalence:
    """The BoN–RL equivalence at per-token budget δ (theory §6).

    Attributes
    ----------
    delta : float
        Per-token KL budget δ (``Δ = m δ``, ``N = e^{m δ}``).
    lam : float
        ``λ_δ`` with ``D(λ) = λΛ'(λ) - Λ(λ) = δ`` (reward units).
    x_star : float
        ``x*(δ)`` solving ``I_0(x*) = δ``; equal to ``R*(δ)``.
    frontier_reward : float
        ``R*(δ) = Λ'(λ_δ)``.
    sigma2 : float
        ``Λ''(λ_δ)``, the per-token reward variance under ``φ_δ`` (``inf``
        when it exceeds the float range, for rewards spread beyond about
        1e154; the predictions work in standardised units and stay finite).
    lattice : (a, h) or None
        Rewards on ``a + hℤ`` with maximal span ``h`` (the origin and span of
        the ``Lattice`` that ``klfrontier.lattice.detect_lattice``
        finds), or ``None``.
    I0_at_x_star : float
        ``I_0(x*)`` evaluated by :func:`rate_function` (equals δ).

    Notes
    -----
    ``gap_prediction(m)`` predicts ``R*(δ) - E_{π_N}[S_m]/m`` and
    ``kl_to_optimal_prediction(m)`` predicts ``KL(π_N || φ_Δ)`` for BoN with
    ``N = e^{m δ}``; see those methods and ``docs/second_order.md``.
    """

    delta: float
    lam: float
    x_star: float
    frontier_reward: float
    sigma2: float
    lattice: tuple | None
    I0_at_x_star: float
    _ref: Reference | None = field(repr=False)  # None for a Markov chain (MarkovEquivalence)
    _lam_u: float = field(repr=False)
    _var_u: float = field(repr=False)
    _dbot: float = field(repr=False)  # x*_u + 1, accurately

    def to_dict(self):
        """Public fields as a plain dict (``lattice`` as a list or ``None``)."""
        return {
            "delta": self.delta,
            "lam": self.lam,
            "x_star": self.x_star,
            "frontier_reward": self.frontier_reward,
            "sigma2": self.sigma2,
            "lattice": None if self.lattice is None else list(self.lattice),
            "I0_at_x_star": self.I0_at_x_star,
        }

    # ------------------------------------------------------------- helpers
    @property
    def beta(self):
        """``λ h`` (dimensionless lattice span; ``None`` without a lattice)."""
        return None if self.lattice is None else self.lam * self.lattice[1]

    def _h_u(self):
        return self.lattice[1] / self._ref.reward_scale

    def _ell(self, m):
        """``log(λσ√(2πm))``: the non-lattice location offset times λ."""
        return 0.5 * np.log(2 * np.pi * m * self._lam_u**2 * self._var_u)

    @cached_property
    def _mean_entropy(self):
        """Phase average of the discretised-Gumbel entropy (independent of m)."""
        f = (np.arange(64) + 0.5) / 64  # periodic: midpoint rule is spectral
        return float(np.mean([discrete_gumbel(x, self.beta)[1] for x in f]))

    def _check_m(self, m, need_int):
        ma = real_array(m, "length")
        if not np.isfinite(ma).all() or (ma < 1).any():
            raise ValueError("length must be finite and >= 1")
        if need_int and (np.rint(ma) != ma).any():
            raise ValueError("length must be an integer for the lattice forms 'leading' and 'saddlepoint'")
        return ma

    def _form(self, form):
        if form not in ("leading", "averaged", "saddlepoint"):
            raise ValueError(f"form must be 'leading', 'averaged' or 'saddlepoint', got {form!r}")
        beta = self.beta
        if beta is None:
            return "continuous", form
        if form == "saddlepoint":
            return ("lattice" if beta >= _BETA_SUM else "continuous"), form
        if form == "leading" and beta < _BETA_SMOOTH:
            return "lattice", "averaged"
        return "lattice", form

    def _predict(self, m, form):
        kind, form = self._form(form)
        ma = self._check_m(m, kind == "lattice" and form != "averaged")
        flat = ma.ravel()
        gl = np.empty(flat.size)  # λ m gap
        kl = np.empty(flat.size)
        for i, mi in enumerate(flat):
            gl[i], kl[i] = self._predict_one(float(mi), kind, form)
        return ma, gl.reshape(ma.shape), kl.reshape(ma.shape)

    def _predict_one(self, m, kind, form):
        ell = self._ell(m)
        if kind == "continuous":
            if form == "saddlepoint":
                g = _continuous_saddlepoint(self, m)
            else:
                g = ell - np.euler_gamma
            return g, g - 1.0
        beta = self.beta
        # location of the max: λ(m x* - μ) = ℓ - log(β / (1 - e^{-β}))
        ell_lat = ell - np.log(beta / -np.expm1(-beta))
        if form == "averaged":
            g = ell - np.euler_gamma + np.log(np.sinh(beta / 2) / (beta / 2))
            return g, -self._mean_entropy + ell - np.log(beta)
        if form == "leading":
            z = m * self._dbot / self._h_u() - ell_lat / beta
            f = z - np.floor(z)
            mfloor, ent = discrete_gumbel(f, beta)
            return ell_lat + beta * (f - mfloor), -ent + ell - np.log(beta)
        return _lattice_saddlepoint(self, m, ell_lat)

    # --------------------------------------------------------- predictions
    def gap_prediction(self, length, *, form="leading"):
        """Predicted BoN reward gap ``R*(δ) - E_{π_N}[S_m]/m`` with ``N = e^{m δ}``, ``m = length``.

        Parameters
        ----------
        length : int or array_like
            Sequence length(s) ``m >= 1`` (integers for the lattice forms
            ``"leading"`` and ``"saddlepoint"``).
        form : {"leading", "averaged", "saddlepoint"}
            ``"leading"``: non-lattice ``[½ log(2π m λ² σ²) - γ] / (m λ)``;
            lattice: ``[ℓ_h + β (f_m - E⌊f_m + G/β⌋)] / (m λ)`` with
            ``ℓ_h = ½ log(2π m λ² σ²) - log(β / (1 - e^{-β}))``, ``β = λh``,
            ``G`` standard Gumbel and ``f_m`` the phase of the Gumbel
            location on the lattice, which moves with ``m``: the prediction
            oscillates with ``m`` as the exact gap does.
            ``"averaged"``: the lattice form averaged over the phase,
            ``[½ log(2π m λ² σ²) - γ + log(sinh(β/2)/(β/2))] / (m λ)``
            (non-lattice: same as ``"leading"``).
            ``"saddlepoint"``: the law of the maximum built from the
            Bahadur–Rao tail ``T(s)`` with the local tilt ``t(s/m)`` at
            every lattice point (or, non-lattice, by quadrature) and
            ``P(max < s) = (1 - T(s))^N``.

        Returns
        -------
        float or ndarray
            Reward units (``±inf`` where the gap exceeds the float range,
            for rewards spread near float max).

        Notes
        -----
        Errors (``docs/second_order.md``): ``"leading"`` is off by
        ``O((log m)^2/m)`` in ``m λ gap`` (relative ``O(log m / m)``),
        ``"saddlepoint"`` by ``O(1/m)``.  Both need ``m δ`` large (``N``
        large), ``2π m λ² σ² ≫ 1`` and, for lattice rewards, ``m σ²/h² ≫ 1``
        (the law of ``S_m`` under ``φ_Δ`` must look locally Gaussian): close
        to saturation (``δ → -log p(A)``, ``σ → 0``) this takes very long
        sequences.  Non-lattice rewards whose top levels are far apart on
        the scale ``1/λ`` behave like a lattice until ``m`` is large.
        Lattices with ``β < 10^{-3}`` use the averaged form (the
        oscillation is ``~e^{-2π²/β}``), and ``β < 10^{-2}`` the
        non-lattice saddle point.

        Examples
        --------
        >>> eq = equivalence(Reference([0.0, 1.0], probs=[0.7, 0.3]), 0.8)
        >>> eq.gap_prediction([100, 101, 102]).round(6).tolist()   # exact: 0.009679, 0.009353, 0.009126
        [0.009599, 0.009233, 0.008949]
        >>> eq.gap_prediction([100, 101, 102], form="saddlepoint").round(6).tolist()
        [0.009657, 0.009329, 0.009099]
        """
        ma, gl, _ = self._predict(length, form)
        with np.errstate(over="ignore", divide="ignore"):  # inf only where the gap passes float max
            return float_or_array(gl / (ma * self.lam))

    def kl_to_optimal_prediction(self, length, *, form="leading"):
        """Predicted total ``KL(π_N || φ_Δ)`` for BoN with ``N = e^{m δ}``.

        Parameters
        ----------
        length, form
            As in :meth:`gap_prediction`.

        Returns
        -------
        float or ndarray
            Nats (total over the sequence, not per token).

        Notes
        -----
        Non-lattice, leading: ``½ log(2π m λ² σ²) - γ - 1``.  Lattice,
        leading: ``log(σ√(2πm)/h) - H_β(f_m)``, with ``H_β(f)`` the Shannon
        entropy of ``⌊f + G/β⌋`` (oscillating with ``m``; ``"averaged"``
        averages it over the phase ``f``).  ``"saddlepoint"``: the KL of the
        saddle-point law of the maximum to the local-limit law of ``S_m``
        under ``φ_Δ`` (lattice), or ``λ m gap - 1`` (non-lattice, where
        ``E[N(1 - F(max))] = 1``).  All forms satisfy theory §2's identity
        ``KL(π_N||φ_Δ) = [KL(π_N||p^m) - mδ] + λ m gap`` with their own
        ``KL(π_N||p^m)``.

        Examples
        --------
        >>> import numpy as np
        >>> eq = equivalence(Reference([0.0, 1.0, np.sqrt(2)], probs=[0.5, 0.3, 0.2]), 0.1)
        >>> round(eq.kl_to_optimal_prediction(400), 4)              # exact: 1.5374
        1.5009
        >>> round(eq.kl_to_optimal_prediction(400, form="saddlepoint"), 4)
        1.5246
        """
        _, _, kl = self._predict(length, form)
        return float_or_array(kl)


def discrete_gumbel(f, beta):
    """Mean of ``floor(f + G/β)`` and its Shannon entropy, ``G`` standard Gumbel.

    ``P(floor = k) = exp(-a_{k+1}) - exp(-a_k)``, ``a_k = e^{-β(k - f)}``;
    ``k`` runs over ``[-4/β - 2, 42/β + 2]`` (tails below 1e-18).
    """
    k = np.arange(-np.ceil(4 / beta) - 2, np.ceil(42 / beta) + 3)
    with np.errstate(over="ignore"):  # a = inf far below: P(floor = k) = 0
        a = np.exp(-beta * (k - f))
        a1 = np.exp(-beta * (k + 1 - f))
        logd = -a1 + log1mexp(-a * -np.expm1(-beta))
    d = np.exp(logd)
    with np.errstate(invalid="ignore"):  # d = 0 where logd = -inf: 0 · -inf is masked out
        ent = -float(np.sum(np.where(d > 0, d * logd, 0.0)))
    return float(d @ k), ent


def _lattice_saddlepoint(eq, m, ell_lat):
    """λ m gap and KL(π_N || φ_Δ) from a sum over lattice points (see module docs)."""
    ref = eq._ref
    h = eq._h_u()
    n_span = int(round(1.0 / h))
    beta = eq.beta
    lam_u = eq._lam_u
    logphi_lam = level_logphi(ref.level_law, lam_u)[0]
    kstar = m * eq._dbot / h  # m x* in lattice index units (from r_min)
    z = kstar - ell_lat / beta
    lo_pad = np.ceil(8 / beta) + 2
    kmax = m * n_span
    log_n = m * eq.delta
    for _ in range(12):
        k0 = max(0, int(np.floor(z - lo_pad)))
        k1 = min(kmax, int(np.ceil(z + 45 / beta)))
        k = np.arange(k0, k1 + 1, dtype=float)
        x_u = -1.0 + h * k / m
        logT = np.zeros(k.size)
        logp = np.empty(k.size)  # log P_p(S = s), local limit
        logg = np.empty(k.size)  # log P_{φ_λ}(S = s)
        inner = (k > 0) & (k < kmax)
        if inner.any():
            (i0, il), t, var = interior_rates(ref.level_law, x_u[inner], (0.0, lam_u))
            base = np.log(h) - 0.5 * np.log(2 * np.pi * m * var)
            logp[inner] = -m * i0 + base
            logg[inner] = -m * il + base
            with np.errstate(divide="ignore"):
                tail = np.where(t > 0, logp[inner] - log1mexp(-t * h), 0.0)
            logT[inner] = np.minimum(tail, 0.0)
        if k[-1] == kmax:  # S = m r_max: exact
            logT[-1] = m * ref.level_logq[-1]
            logg[-1] = m * logphi_lam[-1]
        if k[0] == 0:
            logT[0] = 0.0
            logg[0] = m * logphi_lam[0]
        # A_j = log P(max < s_j) = N log(1 - T_j)
        A = -np.exp(log_n + log_neg_log1mexp(logT))
        low_ok = k0 == 0 or A[0] < -40
        high_ok = k1 == kmax or A[-1] > -1e-17
        if low_ok and high_ok:
            break
        lo_pad *= 2
    else:  # pragma: no cover - the window always closes within a few doublings
        raise ConvergenceError("lattice saddle-point window did not close")
    A_next = np.append(A[1:], 0.0)
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isneginf(A_next), -np.inf, np.minimum(A - A_next, 0.0))
    logd = np.where(np.isneginf(A_next), -np.inf, A_next + log1mexp(diff))
    d = np.exp(logd)
    g = beta * float(d @ (kstar - k))
    on = d > 0
    kl = float(np.sum(d[on] * (logd[on] - logg[on])))
    return g, kl


def _continuous_saddlepoint(eq, m):
    """λ m gap from ``∫ P(max < s) ds`` with the non-lattice Bahadur–Rao tail.

    Parameterised by the tilt: ``s = m Λ_u'(t)``, ``ds = m Λ_u''(t) dt``, so
    no root solving is needed; piecewise Gauss–Legendre on each side of
    ``t = λ`` (where ``s = m x*``).
    """
    ref = eq._ref
    lam_u, var_u = eq._lam_u, eq._var_u
    log_n = m * eq.delta
    xs, ws = np.polynomial.legendre.leggauss(16)
    ell = eq._ell(m)
    w_lo = (ell + 12.0) / lam_u / (m * var_u)
    w_hi = 48.0 / lam_u / (m * var_u)

    def integral(a, b, below):
        edges = np.linspace(a, b, 17)
        mids = 0.5 * (edges[1:] + edges[:-1])[:, None]
        half = 0.5 * (edges[1:] - edges[:-1])[:, None]
        t = (mids + half * xs[None, :]).ravel()
        w = (half * ws[None, :]).ravel()
        st = end_rows(ref.level_law, t, kl_to=(0.0,))
        D = st.kl[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            logT = -m * D - np.log(t) - 0.5 * np.log(2 * np.pi * m * st.var)
        logT = np.where(t > 0, np.minimum(logT, 0.0), 0.0)
        A = -np.exp(log_n + log_neg_log1mexp(logT))  # log P(max < s)
        vals = (np.exp(A) if below else -np.expm1(A)) * m * st.var
        return float(np.sum(w * vals)), vals[0], vals[-1]

    for _ in range(12):
        a = max(lam_u - w_lo, 0.0)
        below, v_lo, _ = integral(a, lam_u, True)
        above, _, v_hi = integral(lam_u, lam_u + w_hi, False)
        # integrand (ds/dt-weighted) negligible at both ends of the window
        if (a == 0.0 or v_lo * w_lo < 1e-16) and v_hi * w_hi < 1e-16:
            return lam_u * (below - above)
        w_lo *= 2
        w_hi *= 2
    raise ConvergenceError("continuous saddle-point window did not close")  # pragma: no cover


def equivalence(ref: Reference, delta, *, lattice=None) -> Equivalence:
    """The BoN–RL equivalence at per-token budget δ and its second-order terms.

    Parameters
    ----------
    ref : Reference
        Per-token reference law and reward (memoryless model, linear reward).
    delta : float
        Per-token KL budget, ``0 < δ < -log p(A)``.
    lattice : None, False, float or Lattice
        Lattice handling, as in ``klfrontier.lattice.detect_lattice``.

    Returns
    -------
    Equivalence

    Notes
    -----
    As ``m → ∞`` with ``Δ = m δ`` and ``N = e^{mδ}``:
    ``E_{π_N}[S_m]/m → x*(δ) = R*(δ)`` and ``KL(π_N||φ_Δ)/m → 0``
    (theory §6).  Second order, non-lattice, with ``σ² = Λ''(λ_δ)``::

        R*(δ) - E[S_m]/m ≈ [½ log(2π m λ² σ²) - γ] / (m λ)
        KL(π_N || φ_Δ)   ≈ ½ log(2π m λ² σ²) - γ - 1

    Lattice rewards (span ``h``, ``β = λh``): the maximum is a discretised
    Gumbel variable whose phase on the lattice moves with ``m``; averaged
    over the phase the gap gains ``log(sinh(β/2)/(β/2)) / (mλ)``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = Reference([0.0, 1.0, np.sqrt(2)], probs=[0.5, 0.3, 0.2])
    >>> eq = equivalence(ref, 0.1)
    >>> eq.lattice is None, round(eq.I0_at_x_star, 12)
    (True, 0.1)
    >>> round(eq.gap_prediction(200), 6)       # exact gap: 0.014582
    0.014187
    >>> equivalence(Reference([0.0, 1.0], probs=[0.7, 0.3]), 0.1).lattice
    (0.0, 1.0)

    A :class:`~klfrontier.Markov` reference is handed to
    ``klfrontier.sequences.markov.markov_equivalence`` (Perron root).
    """
    from .sequences.markov import Markov, markov_equivalence

    if isinstance(ref, Markov):
        return markov_equivalence(ref, delta, lattice=lattice)
    check_reference(ref)
    d = real_scalar(delta, "delta", allow_inf=True)
    if not (0 < d < ref.kl_max):
        raise ValueError(
            f"delta must lie in (0, -log p(A)) = (0, {ref.kl_max:.6g}) for the equivalence, got {d}"
        )
    found = detect_lattice(ref, lattice=lattice)
    lat = None if found is None else (found.a, found.h)
    lam = float(solve_lam_for_kl(ref, d))
    lam_u = float(ref.lam_to_u(lam))
    st = end_rows(ref.level_law, [lam_u])
    x_u = float(st.mean[0])
    var_u = float(st.var[0])
    x_star = ref.to_reward(x_u)
    i0 = float(rate_function(ref, x_star))
    return Equivalence(
        delta=d,
        lam=lam,
        x_star=x_star,
        frontier_reward=x_star,
        sigma2=to_reward_power(var_u, ref.reward_scale, 2),
        lattice=lat,
        I0_at_x_star=i0,
        _ref=ref,
        _lam_u=lam_u,
        _var_u=var_u,
        _dbot=float(st.dbot[0]),
    )
