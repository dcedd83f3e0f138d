"""Shared test configuration: the Hypothesis profiles.

``ci`` (the default) is deterministic: derandomized, no deadline (timings on
shared CI machines are noise), no example database.  ``dev`` explores more
(set ``HYPOTHESIS_PROFILE=dev``; add ``--hypothesis-seed=N`` to vary the search),
``long`` more still (2000 examples).  Every bug the longer searches found is kept
as an ``@example`` or a regression test, so the ``ci`` profile replays it.
"""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=60,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=500, print_blob=True)
settings.register_profile(
    "long", deadline=None, max_examples=2000, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _close_figures():
    """Close matplotlib figures a test leaves open (jobs build figures that only a report saves)."""
    yield
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")
