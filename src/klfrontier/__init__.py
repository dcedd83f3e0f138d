"""klfrontier: the reward-KL geometry of language-model alignment.

The public API, in names of the theory (docs/theory.md).  Optional parts (plots, reports, real
instances, language models) live in submodules and are imported on use.
"""

from typing import TYPE_CHECKING

from .bon import best_of_n, bon_curve, bon_kl_beirami, bon_kl_bound, bon_kl_from_eps
from .divergences import jeffreys, kl, renyi_cross_entropy, renyi_divergence
from .empirical import Analysis, analyze
from .equivalence import Equivalence, equivalence
from .errors import ConvergenceError, KlfrontierError, NotOnLatticeError, WindowTooLargeError
from .ldp import cumulants, rate_function, scgf
from .optimality import Optimality, optimality
from .policy import BestOfNPolicy, Policy, SoftBestOfNPolicy, TiltedPolicy
from .reference import Reference
from .soft_bon import soft_best_of_n
from .tilt import Frontier, cgf, frontier, solve_lam_for_kl, solve_lam_for_reward, tilted

if TYPE_CHECKING:
    from .sequences.convergence import ConvergenceTable, convergence
    from .sequences.markov import Markov
    from .sequences.memoryless import Memoryless, RewardLaw, reward_law
    from .sequences.montecarlo import bon_monte_carlo

#: Names served by :mod:`klfrontier.sequences`, imported on first use: the sequence engines are
#: not loaded by a command that does not need them (0.3 s of every CLI start).
_LAZY = frozenset(
    ("ConvergenceTable", "Markov", "Memoryless", "RewardLaw", "bon_monte_carlo", "convergence", "reward_law")
)


def __getattr__(name):
    if name in _LAZY:
        from . import sequences

        value = getattr(sequences, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'klfrontier' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    # single step (theory §1-§5)
    "Reference",
    "Policy",
    "TiltedPolicy",
    "BestOfNPolicy",
    "SoftBestOfNPolicy",
    "tilted",
    "frontier",
    "Frontier",
    "cgf",
    "solve_lam_for_kl",
    "solve_lam_for_reward",
    "ConvergenceError",
    "best_of_n",
    "bon_curve",
    "bon_kl_bound",
    "bon_kl_from_eps",
    "bon_kl_beirami",
    "soft_best_of_n",
    "optimality",
    "Optimality",
    "kl",
    "renyi_divergence",
    "renyi_cross_entropy",
    "jeffreys",
    # sequences and asymptotics (theory §6-§7)
    "rate_function",
    "scgf",
    "cumulants",
    "equivalence",
    "Equivalence",
    "Memoryless",
    "reward_law",
    "RewardLaw",
    "convergence",
    "ConvergenceTable",
    "bon_monte_carlo",
    "Markov",
    # samples from real models (theory §9)
    "analyze",
    "Analysis",
    # errors (klfrontier.errors)
    "KlfrontierError",
    "NotOnLatticeError",
    "WindowTooLargeError",
]
__version__ = "0.1.0"
