"""Estimates from samples of a real model (theory §9): the machinery behind ``klfrontier analyze``.

* :func:`analyze` — best-of-N, the tilted policy, the average-KL optimum,
  aligned policies and proxy-vs-gold, with intervals checked by simulation;
* :func:`unbiased_bon_reward`, :func:`tilted_gain_cov` — the single-prompt
  estimators on one array of samples.
"""

from .analysis import TRUST_RULE, Analysis, Table, analyze
from .single import kl_trust_limit, tilted_gain_cov, unbiased_bon_gold, unbiased_bon_reward

__all__ = [
    "analyze",
    "Analysis",
    "Table",
    "TRUST_RULE",
    "unbiased_bon_reward",
    "unbiased_bon_gold",
    "tilted_gain_cov",
    "kl_trust_limit",
]
