"""Write ``tables.json``: 50-digit mpmath reference values for test_tilt / test_bon.

Run from the repository root (takes a few minutes; the output is committed):

    .venv/bin/python tests/oracles/make_tables.py

Every number is produced by the definition-level functions of
``mp_oracle.py`` (no klfrontier code is imported) and stored as a decimal
string with 40 significant digits.  Probabilities are given as floats (the
exact binary values are what the oracle uses; the library normalises them by
their float sum, a relative change of ~1e-16).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mpmath as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mp_oracle as O  # noqa: E402

mp.mp.dps = 60
DIG = 40


def s(x):
    return mp.nstr(mp.mpf(x), DIG) if mp.isfinite(x) else str(x)


# name -> (rewards, probs); the probabilities sum to 1 in floats up to rounding
CASES = {
    "three": ([0.0, 1.0, 2.0], [0.5, 0.3, 0.2]),
    "ties": ([0.0, 1.0, 1.0, 2.0, 2.0, 0.5], [0.1, 0.15, 0.2, 0.05, 0.25, 0.25]),
    "negative": ([-5.0, -3.0, -4.5, -3.0], [0.4, 0.1, 0.3, 0.2]),
    "tiny_probs": ([0.0, 1.0, 2.0, 3.0], [0.5, 0.5 - 2e-300, 1e-300, 1e-300]),
    "tiny_top": ([0.0, 1.0, 2.0], [0.6, 0.4, 1e-300]),
    "interior_mass": ([0.0, 1.0, 2.0], [1e-200, 1.0, 1e-200]),
    "top_near_one": ([0.0, 1.0], [1e-100, 1.0]),
    "huge_rewards": ([-1e300, 3e299, 1e300, 1e300], [0.25, 0.25, 0.3, 0.2]),
    "tiny_rewards": ([1e-300, 2e-300, 3.5e-300], [0.3, 0.3, 0.4]),
    "random7": ([0.3, -1.2, 2.2, 0.7, 2.2, -0.1, 1.9], [0.11, 0.2, 0.03, 0.26, 0.05, 0.3, 0.05]),
}

# KL budgets: absolute small ones (continuity at 0) and fractions of -log p(A)
ABS_BUDGETS = ["1e-14", "1e-8", "1e-4"]
FRACTIONS = ["0.01", "0.1", "0.5", "0.9", "0.999", "0.999999", "0.9999999999"]
LAMBDAS = ["0.1", "1", "10"]  # in units of 1/(r_max - r_min)
NS = ["1", "1.5", "2", "2.5", "4", "7", "100", "1e6"]
LOG_NS = ["1e-10", "50", "700", "1e6"]


def tilt_rows(r, p, klmax, scale):
    rows = []
    budgets = [mp.mpf(b) for b in ABS_BUDGETS if mp.mpf(b) < klmax / 2]
    budgets += [mp.mpf(f) * klmax for f in FRACTIONS]
    for d in budgets:
        d = mp.mpf(float(d))  # the float budget the test passes
        lam = O.lam_for_kl(r, p, d)
        kl, rew, L, var, _ = O.tilt_all(r, p, lam)
        cond = kl / (lam**2 * var)  # d log lam / d log D
        rows.append({"kl": s(d), "lam": s(lam), "reward": s(rew), "cgf": s(L), "cond": s(cond)})
    return rows


def lam_rows(r, p, scale):
    rows = []
    for lu in LAMBDAS:
        lam = mp.mpf(float(mp.mpf(lu) / scale))
        kl, rew, L, var, _ = O.tilt_all(r, p, lam)
        rows.append(
            {"lam": s(lam), "kl": s(kl), "reward": s(rew), "cgf": s(L), "regularized_value": s(L / lam)}
        )
        # negative t for the CGF only
        rows[-1]["cgf_neg"] = s(O.cgf(r, p, -lam))
    return rows


def bon_rows(r, p, klmax):
    rows = []
    specs = [("n", x) for x in NS] + [("log_n", x) for x in LOG_NS]
    for kind, x in specs:
        ln = mp.log(mp.mpf(float(x))) if kind == "n" else mp.mpf(float(x))
        kl, rew, win, d = O.bon(r, p, log_n=ln)
        row = {
            kind: x,
            "kl": s(kl),
            "reward": s(rew),
            "win_rate": s(win),
            "levels": [s(v) for v in d],
            "bound": s(O.bon_kl_bound(log_n=ln)),
            "estimate": s(O.beirami_expectation(r, p, log_n=ln)),
        }
        if mp.mpf("1e-100") < kl < klmax * mp.mpf("0.999"):
            row["lam_same_kl"] = s(O.lam_for_kl(r, p, kl))
        mean = O.tilt_all(r, p, 0)[1]
        vs, _ = O.levels(r, p)
        if mean < rew < max(vs) and (rew - mean) > mp.mpf("1e-12") * (max(vs) - min(vs)):
            row["lam_same_reward"] = s(O.lam_for_reward(r, p, rew))
        rows.append(row)
    return rows


def main():
    out = {"dps": O.DPS, "cases": {}}
    for name, (r, p) in CASES.items():
        with mp.workdps(O._start_dps(p)):  # q_top = 1 - 1e-100 must not round to 1
            vs, qs = O.levels(r, p)
            klmax = -mp.log(qs[-1])
        scale = max(vs) - min(vs)
        print(name, file=sys.stderr)
        out["cases"][name] = {
            "rewards": r,
            "probs": p,
            "kl_max": s(klmax),
            "tilt": tilt_rows(r, p, klmax, scale),
            "lam": lam_rows(r, p, scale),
            "bon": bon_rows(r, p, klmax),
        }
    # the Beirami per-sample estimator on a grid of (eps, log N)
    est = []
    for eps in ["1", "0.9999999999999999", "0.9", "0.5", "0.1", "1e-3", "1e-10", "1e-300"]:
        for ln in ["0", "1e-12", "1e-4", "0.9162907318741551", "3", "40", "700", "1e6"]:
            est.append(
                {"eps": eps, "log_n": ln, "value": s(O.beirami(mp.mpf(float(eps)), log_n=mp.mpf(float(ln))))}
            )
    out["beirami"] = est
    path = Path(__file__).resolve().parent / "tables.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
