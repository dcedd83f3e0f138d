"""The library's exceptions: one base class, ``KlfrontierError``.

Every exception klfrontier raises on purpose derives from
:class:`KlfrontierError` and from the builtin it refines (``ValueError`` for bad
input, ``RuntimeError`` for a solver that did not converge), so callers can
catch either.

>>> issubclass(ConvergenceError, KlfrontierError), issubclass(NotOnLatticeError, ValueError)
(True, True)
"""

from __future__ import annotations

__all__ = ["KlfrontierError", "ConvergenceError", "NotOnLatticeError", "WindowTooLargeError"]


class KlfrontierError(Exception):
    """Base class of the exceptions klfrontier raises."""


class ConvergenceError(KlfrontierError, RuntimeError):
    """A solver did not converge; ``.partial`` holds its best result."""

    def __init__(self, message, partial=None):
        super().__init__(message)
        self.partial = partial


class NotOnLatticeError(KlfrontierError, ValueError):
    """The values do not lie on the lattice a caller gave (within the tolerance)."""


class WindowTooLargeError(KlfrontierError, ValueError):
    """The tilted law of ``T_m`` is too wide for an FFT window (lattice too fine)."""
