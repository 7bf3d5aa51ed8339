"""``python -m bench`` (``make bench``): see :mod:`bench.orchestrator` and ``--help``."""

from __future__ import annotations

import sys

from bench.orchestrator import main

if __name__ == "__main__":
    sys.exit(main())
