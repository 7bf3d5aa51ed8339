"""The image's lock files (requirements/*.txt, written by `make lock`) stay in step with pyproject.toml.

pyproject.toml says what the service needs; the lock files say exactly which bytes the image
installs (`pip install --require-hashes`). A dependency added to or tightened in pyproject.toml
without `make lock` would build an image without it, or with a version it does not accept: this
fails first, naming the requirement.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {"image": ROOT / "requirements/image.txt", "build": ROOT / "requirements/build.txt"}
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """Each locked distribution: its pinned version and how many hashes it carries."""
    entries = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    pins: dict[str, tuple[str, int]] = {}
    for entry in entries:
        text = entry.split("#", 1)[0].strip()
        if not text:
            continue
        hashes = len(_HASH.findall(text))
        requirement = Requirement(text.split(" --hash", 1)[0])
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {text[:80]} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = (specifier.version, hashes)
    return pins


def wanted(lock: str) -> list[str]:
    """What pyproject.toml asks of each lock file."""
    data = pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    if lock == "image":
        return [str(r) for r in project["dependencies"]]
    build_system = data["build-system"]
    assert isinstance(build_system, dict)
    reflection = [str(r) for r in project["dependencies"] if str(r).startswith("grpcio-reflection")]
    return [*map(str, project["optional-dependencies"]["codegen"]), *reflection, *build_system["requires"]]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_package_is_pinned_and_hashed(lock: str) -> None:
    pins = locked(LOCKS[lock])
    assert pins
    unhashed = sorted(name for name, (_, hashes) in pins.items() if hashes == 0)
    assert not unhashed, f"{lock}: no --hash for {unhashed}"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_satisfies_pyproject(lock: str) -> None:
    pins = locked(LOCKS[lock])
    for text in wanted(lock):
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {name} is not locked: run `make lock`"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock}: {name}=={version} does not satisfy {text}: run `make lock`"
        )
