"""klfrontier: the reward-KL geometry of language-model alignment."""
from .reference import Reference
from .policy import Policy
from .tilt import tilted, frontier, Frontier, cgf, ConvergenceError
from .divergences import kl, renyi_divergence, renyi_cross_entropy, jeffreys
from .bon import best_of_n, bon_curve, bon_kl_bound, bon_kl_estimator, bon_kl_estimate

__all__ = ["Reference", "Policy", "tilted", "frontier", "Frontier", "cgf", "ConvergenceError",
           "best_of_n", "bon_curve", "bon_kl_bound", "bon_kl_estimator", "bon_kl_estimate",
           "kl", "renyi_divergence", "renyi_cross_entropy", "jeffreys"]
__version__ = "0.1.0"
