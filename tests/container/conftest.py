"""The image tests run only under `make image-test` (DELEGATION_IMAGE_TEST=1).

They need the built image and a container engine (docker with its daemon, or podman), so the main
suite (`make test`) leaves them out; CI runs `make image-test` after it (`.ci/run`). The HEALTHCHECK
probe's own tests (test_healthcheck_probe.py) need neither and always run.
"""

from __future__ import annotations

import os

import pytest

ENABLED = os.environ.get("DELEGATION_IMAGE_TEST") == "1"
IMAGE_TESTS = ("tests/container/test_image.py", "tests/container/test_compose.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="image: run with `make image-test` (builds and runs the container)")
    for item in items:
        if item.nodeid.startswith(IMAGE_TESTS):
            item.add_marker(skip)
