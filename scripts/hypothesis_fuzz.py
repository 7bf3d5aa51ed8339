"""A pytest plugin for `make fuzz`: runs the Hypothesis properties with a much larger budget.

Loaded with `-p hypothesis_fuzz` and selected with `--hypothesis-profile=fuzz`; the Hypothesis pytest
plugin applies the command-line profile after conftest.py has run, so a profile the test suite loads
for itself does not override this one. FUZZ_EXAMPLES sets the examples per property (default 10000).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "10000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
