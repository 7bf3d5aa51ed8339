"""Print requirement lines from pyproject.toml, so pins live in one place.

The Dockerfile and the Makefile install a subset of the project's requirements (the stub generator
before the project itself, the runtime dependencies in their own cached layer); reading them from
pyproject.toml keeps grpcio and grpcio-tools pinned together in exactly one file.

Usage: python scripts/pyproject_requirements.py [--extra NAME] [--only DIST ...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """Return the PEP 503 normalized form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_name(requirement: str) -> str:
    """Return the normalized distribution name a PEP 508 requirement string names."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a PEP 508 requirement: {requirement!r}")
    return normalize(match.group(1))


def requirements(pyproject: dict[str, object], extra: str | None) -> list[str]:
    """Return the runtime dependencies, or those of one optional-dependencies extra."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    if extra is None:
        found = project.get("dependencies", [])
    else:
        found = project.get("optional-dependencies", {}).get(extra)
        if found is None:
            raise KeyError(f"pyproject.toml has no extra {extra!r}")
    return [str(requirement) for requirement in found]


def main(argv: list[str] | None = None) -> int:
    """Print the selected requirements, one a line; fail if an --only name is not found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", help="an optional-dependencies extra instead of the runtime deps")
    parser.add_argument("--only", nargs="+", metavar="DIST", help="keep only these distributions")
    args = parser.parse_args(argv)

    with PYPROJECT.open("rb") as file:
        selected = requirements(tomllib.load(file), args.extra)
    if args.only:
        wanted = {normalize(name) for name in args.only}
        selected = [req for req in selected if dist_name(req) in wanted]
        missing = wanted - {dist_name(req) for req in selected}
        if missing:
            print(f"error: not in pyproject.toml: {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
    print("\n".join(selected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
