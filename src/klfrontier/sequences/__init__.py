"""Length-``m`` sequences: the law of ``S_m``, the optimal policy, exact BoN.

theory §6–§8 (memoryless and Markov references).  See :func:`reward_law`, :class:`Memoryless`,
:func:`convergence` and :func:`bon_monte_carlo`.
"""

from ..lattice import Lattice, detect_lattice
from .convergence import ConvergenceTable, convergence
from .markov import BackoffTransition, Markov, MarkovBoN, MarkovTilted
from .memoryless import Memoryless, RewardLaw, SequenceBoN, SequenceTilted, reward_law
from .montecarlo import MonteCarloResult, bon_monte_carlo, naive_bon_monte_carlo

__all__ = [
    "Memoryless",
    "Markov",
    "BackoffTransition",
    "MarkovTilted",
    "MarkovBoN",
    "reward_law",
    "RewardLaw",
    "SequenceTilted",
    "SequenceBoN",
    "convergence",
    "ConvergenceTable",
    "bon_monte_carlo",
    "naive_bon_monte_carlo",
    "MonteCarloResult",
    "detect_lattice",
    "Lattice",
]
