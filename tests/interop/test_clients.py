"""The client packages, installed the way their users install them, against a live dev server.

- Python: `pip install ./clients/python` into a fresh venv (nothing of the service in it), then the
  README's Python block; mypy --strict type-checks a caller against the installed .pyi stubs.
- Node: the README's block (`npm ci` from the committed package-lock.json, then delegate.mjs):
  @grpc/grpc-js delegates, and jose verifies the child token against the JWKS fetched over HTTP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.devserver import REPO, DevServer, start_dev
from tests.operability.readme import block

INSTALL_TIMEOUT_SECONDS = 600
RUN_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def dev() -> Iterator[DevServer]:
    server = start_dev()
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the delegation-client distribution (and its dependencies) installed."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            str(REPO / "clients" / "python"),
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def test_python_client_package_runs_the_readme_block(
    dev: DevServer, client_venv: Path, tmp_path: Path
) -> None:
    # Run outside the repository, so nothing but the installed package can be imported.
    result = subprocess.run(
        [str(client_venv), "-c", block("python")],
        cwd=tmp_path,
        env=dev.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    granted, refused = result.stdout.splitlines()
    assert "['warehouse.items.r', 'directory.person.r']" in granted
    assert refused.startswith("PERMISSION_DENIED SCOPE_NOT_ALLOWED_FOR_CLIENT")
    assert "scopes[0]" in refused


def test_python_client_package_ships_protos_and_type_stubs(client_venv: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [
            str(client_venv),
            "-c",
            "import delegation_client, delegation_client.v1.delegation_pb2_grpc as g, pathlib;"
            "print(sorted(p.name for p in delegation_client.proto_dir().rglob('*.proto')));"
            "print(sorted(p.name for p in pathlib.Path(g.__file__).parent.glob('*.pyi')))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=True,
    )
    protos, stubs = probe.stdout.splitlines()
    assert protos == "['admin.proto', 'delegation.proto']"
    assert stubs == (
        "['admin_pb2.pyi', 'admin_pb2_grpc.pyi', 'delegation_pb2.pyi', 'delegation_pb2_grpc.pyi']"
    )
    caller = tmp_path / "caller.py"
    caller.write_text(
        textwrap.dedent(
            """
            from delegation_client import DelegationClient
            from delegation_client.v1 import delegation_pb2

            def scopes_of(client: DelegationClient, parent: str) -> list[str]:
                response: delegation_pb2.DelegateResponse = client.delegate(parent, "billing", ["a.b.r"])
                return list(response.scopes)

            def token_number(response: delegation_pb2.DelegateResponse) -> int:
                number: int = response.token_id  # wrong on purpose: token_id is a str
                return number
            """
        )
    )
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-executable", str(client_venv), str(caller)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    # The typed stubs are used: only the deliberate mistake is reported.
    assert mypy.returncode == 1, mypy.stdout
    assert 'Incompatible types in assignment (expression has type "str", variable has type "int")' in (
        mypy.stdout
    )
    assert mypy.stdout.count("error:") == 1, mypy.stdout


@pytest.fixture(scope="module")
def node() -> str:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: the Node example needs Node 20+ and npm", pytrace=False)
    return "node"


def test_node_example_delegates_and_jose_verifies_against_the_http_jwks(dev: DevServer, node: str) -> None:
    result = dev.bash(block("node"), timeout=INSTALL_TIMEOUT_SECONDS)

    assert result.returncode == 0, result.stdout + result.stderr
    verified = json.loads(result.stdout.strip().splitlines()[-1])
    assert verified["delegated"] is True and verified["verified_by"] == "jose"
    assert verified["alg"] == "ES256" and verified["iss"] == "https://delegation.dev.localhost"
    assert verified["client_id"] == "billing" and verified["scope"] == "warehouse.items.r"
    assert verified["aud"] == "warehouse"  # checked by jose: the example names its audience
    assert verified["act"] == {"sub": "gateway"}


def test_node_example_decodes_error_info_and_bad_request_from_the_status_details(
    dev: DevServer, node: str
) -> None:
    # After the README block has installed the packages. Two scopes refused for two reasons: the
    # ErrorInfo names the first, the BadRequest has one violation per scope.
    result = subprocess.run(
        [node, "delegate.mjs"],
        cwd=REPO / "examples" / "node",
        env={**dev.env, "DELEGATION_SCOPES": "directory.person.rw Org.warehouse.items.r"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    refused = json.loads(result.stdout)
    assert refused["delegated"] is False
    assert refused["code"] == "INVALID_ARGUMENT"
    assert refused["reason"] == "DIFFERENT_BEARER_TYPES"
    assert refused["domain"] == "delegation-service"
    assert refused["metadata"]["scopes"] == "directory.person.rw Org.warehouse.items.r"
    assert [(v["field"], v["reason"]) for v in refused["violations"]] == [
        ("scopes[0]", "SCOPE_NOT_ALLOWED_FOR_CLIENT"),
        ("scopes[1]", "DIFFERENT_BEARER_TYPES"),
    ]
    assert all(v["description"].startswith("'") for v in refused["violations"])
    # The same details the Python helper decodes from the same refusal.
    python = dev.run(
        "delegate",
        "--client-id",
        "billing",
        "--scope",
        "directory.person.rw",
        "--scope",
        "Org.warehouse.items.r",
    )
    assert python.returncode == 1
    assert python.stderr.splitlines()[0].startswith("error: INVALID_ARGUMENT DIFFERENT_BEARER_TYPES: ")
    assert python.stderr.splitlines()[1:] == [
        f"  {v['field']}: {v['reason']}: {v['description']}" for v in refused["violations"]
    ]


def test_node_example_refuses_a_child_meant_for_another_audience(dev: DevServer, node: str) -> None:
    result = subprocess.run(
        [node, "delegate.mjs"],
        cwd=REPO / "examples" / "node",
        env={**dev.env, "DELEGATION_AUDIENCE": "directory"},  # the child is for warehouse
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout) == {
        "delegated": True,
        "verified": False,
        "error": "ERR_JWT_CLAIM_VALIDATION_FAILED",
        "claim": "aud",
    }
