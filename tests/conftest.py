"""Shared test configuration: the Hypothesis profiles.

``ci`` (the default) is deterministic: derandomized, no deadline (timings on
shared CI machines are noise), no example database.  ``dev`` explores more
(set ``HYPOTHESIS_PROFILE=dev``).
"""

import os

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
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
