"""The interop suite runs only under `make interop` (DELEGATION_INTEROP=1).

It installs packages from the registries (pip builds the client distribution, `npm ci` the Node
example), so the main suite (`make test`) leaves it out; CI runs it right after (`.ci/run`).
"""

from __future__ import annotations

import os

import pytest

ENABLED = os.environ.get("DELEGATION_INTEROP") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="interop: run with `make interop` (installs from PyPI and npm)")
    for item in items:
        if "tests/interop/" in item.nodeid:
            item.add_marker(skip)
