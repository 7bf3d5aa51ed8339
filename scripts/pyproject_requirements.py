"""Print requirement lines from pyproject.toml, so pins live in one place.

The Makefile installs the project's requirements by extra (the stub generator before the project
itself, then each target's extra) and `make lock` resolves the image's lock files from them; reading
them from pyproject.toml keeps grpcio and grpcio-tools pinned together in exactly one file.

Usage: python scripts/pyproject_requirements.py [--extra NAME | --build-system] [--only DIST ...]
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


_SELF_EXTRAS = re.compile(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*\[([^\]]*)\]\s*$")


def requirements(pyproject: dict[str, object], extra: str | None) -> list[str]:
    """Return the runtime dependencies, or those of one optional-dependencies extra.

    An extra that names the project itself (``delegation-service[test]``) is expanded into that
    extra's requirements, so the result installs with ``pip install -r`` beside the project.
    """
    project = pyproject["project"]
    assert isinstance(project, dict)
    if extra is None:
        return [str(requirement) for requirement in project.get("dependencies", [])]
    extras = project.get("optional-dependencies", {})
    own_name = normalize(str(project["name"]))
    selected: list[str] = []

    def add(name: str, seen: tuple[str, ...]) -> None:
        found = extras.get(name)
        if found is None:
            raise KeyError(f"pyproject.toml has no extra {name!r}")
        for requirement in map(str, found):
            own = _SELF_EXTRAS.match(requirement)
            if own is not None and dist_name(requirement) == own_name:
                for inner in (part.strip() for part in own.group(1).split(",")):
                    if inner and inner not in seen:
                        add(inner, (*seen, inner))
            elif requirement not in selected:
                selected.append(requirement)

    add(extra, (extra,))
    return selected


def main(argv: list[str] | None = None) -> int:
    """Print the selected requirements, one a line; fail if an --only name is not found."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", help="an optional-dependencies extra instead of the runtime deps")
    parser.add_argument("--build-system", action="store_true", help="the build backend's requirements")
    parser.add_argument("--only", nargs="+", metavar="DIST", help="keep only these distributions")
    args = parser.parse_args(argv)

    with PYPROJECT.open("rb") as file:
        pyproject = tomllib.load(file)
    try:
        if args.build_system:
            selected = [str(requirement) for requirement in pyproject["build-system"]["requires"]]
        else:
            selected = requirements(pyproject, args.extra)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 1
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
