"""Build hook of delegation-client: copy the .proto files in and generate the stubs from them.

In a checkout, the .proto files are copied from the repository's ``protos/`` (the one source of
truth) into the package (``src/delegation_client/protos/``, git-ignored); an sdist carries that copy,
so a wheel built from it needs nothing else. The stubs are then generated into ``build/generated/``
with grpcio-tools and mypy-protobuf (both build requirements), exactly as ``scripts/gen-protos`` does
for the service.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
REPO_PROTOS = HERE.parent.parent / "protos"
PACKAGED_PROTOS = HERE / "src" / "delegation_client" / "protos"
GENERATED = HERE / "build" / "generated"
HEADER = '"""Generated from delegation/v1/*.proto by the delegation-client build; do not edit."""\n'


def sync_protos() -> None:
    """Copy the repository's .proto files into the package, when building from a checkout."""
    if not (REPO_PROTOS / "delegation").is_dir():
        return  # building from an sdist: the copy is already in it
    shutil.rmtree(PACKAGED_PROTOS, ignore_errors=True)
    for proto in sorted((REPO_PROTOS / "delegation").rglob("*.proto")):
        target = PACKAGED_PROTOS / proto.relative_to(REPO_PROTOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto, target)


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
    for package in (GENERATED / "delegation", GENERATED / "delegation" / "v1"):
        (package / "__init__.py").write_text(HEADER)
        (package / "py.typed").write_text("")


sync_protos()
generate()
setup()
