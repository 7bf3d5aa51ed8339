"""Build hook of delegation-client: copy the .proto files and the helper in, generate the stubs.

In a checkout, the .proto files are copied from the repository's ``protos/`` (the one source of
truth) into the package (``src/delegation_client/protos/``, git-ignored), and the helper from the
service's ``delegation_service/client.py`` (its one source) to ``src/delegation_client/_client.py``
(git-ignored); an sdist carries both copies, so a wheel built from it needs nothing else. The stubs are
then generated into ``build/generated/`` with grpcio-tools and mypy-protobuf (both build requirements),
exactly as ``scripts/gen-protos`` does for the service.

The stubs and the helper are this distribution's own: ``delegation_client.v1``, not the service's
``delegation.v1``. Both distributions used to install ``delegation/`` and ``delegation_client/``, so
uninstalling either deleted files the other still listed. The one difference between the copies is
the module path the imports name, rewritten here (:func:`own_stubs`); the stubs register the same
``delegation/v1/*.proto`` descriptors either way, so both may be imported in one process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
REPO_PROTOS = HERE.parent.parent / "protos"
REPO_HELPER = HERE.parent.parent / "delegation_service" / "client.py"
PACKAGED_PROTOS = HERE / "src" / "delegation_client" / "protos"
PACKAGED_HELPER = HERE / "src" / "delegation_client" / "_client.py"
GENERATED = HERE / "build" / "generated"
HEADER = '"""Generated from delegation/v1/*.proto by the delegation-client build; do not edit."""\n'
STUB_IMPORT = re.compile(r"^(\s*)(from|import) delegation\.v1\b", re.MULTILINE)
"""An import of the service's stub package at the start of a line (never a string such as the method
path ``'/delegation.v1.DelegationService/Delegate'``, which must stay as it is)."""


def own_stubs(source: str) -> str:
    """``source`` with its ``delegation.v1`` imports naming this distribution's ``delegation_client.v1``."""
    return STUB_IMPORT.sub(r"\1\2 delegation_client.v1", source)


def sync_protos() -> None:
    """Copy the repository's .proto files into the package, when building from a checkout."""
    if not (REPO_PROTOS / "delegation").is_dir():
        return  # building from an sdist: the copy is already in it
    shutil.rmtree(PACKAGED_PROTOS, ignore_errors=True)
    for proto in sorted((REPO_PROTOS / "delegation").rglob("*.proto")):
        target = PACKAGED_PROTOS / proto.relative_to(REPO_PROTOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto, target)


def sync_helper() -> None:
    """Copy the helper from the service's source, when building from a checkout."""
    if not REPO_HELPER.is_file():
        return  # building from an sdist: the copy is already in it
    header = "# Copied from delegation_service/client.py by the delegation-client build; do not edit.\n"
    PACKAGED_HELPER.write_text(header + own_stubs(REPO_HELPER.read_text(encoding="utf-8")), encoding="utf-8")


def generate() -> None:
    """Generate ``delegation/v1`` (messages, stubs and their .pyi) from the packaged .proto files."""
    protos = sorted(str(p.relative_to(PACKAGED_PROTOS)) for p in PACKAGED_PROTOS.rglob("*.proto"))
    if not protos:
        sys.exit("delegation-client: no .proto files to generate from")
    shutil.rmtree(GENERATED, ignore_errors=True)
    GENERATED.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        # protoc runs plugins as executables; this one runs mypy-protobuf's grpc generator.
        plugin = Path(tmp) / "protoc-gen-mypy_grpc"
        plugin.write_text(f"#!{sys.executable}\nfrom mypy_protobuf.main import grpc\ngrpc()\n")
        plugin.chmod(0o755)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PACKAGED_PROTOS}",
                f"--python_out={GENERATED}",
                f"--pyi_out={GENERATED}",
                f"--grpc_python_out={GENERATED}",
                f"--plugin=protoc-gen-mypy_grpc={plugin}",
                f"--mypy_grpc_out=quiet:{GENERATED}",
                *protos,
            ],
            cwd=PACKAGED_PROTOS,
            check=True,
        )
    stubs = GENERATED / "delegation" / "v1"
    for module in [*stubs.glob("*.py"), *stubs.glob("*.pyi")]:
        module.write_text(own_stubs(module.read_text(encoding="utf-8")), encoding="utf-8")
    (stubs / "__init__.py").write_text(HEADER)
    (stubs / "py.typed").write_text("")


sync_protos()
sync_helper()
generate()
setup()
