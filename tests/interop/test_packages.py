"""The two distributions install disjoint files (issue 14.8): both in one fresh venv, then each uninstalled
in turn, and the other still imports and works.

delegation-service used to ship ``delegation_client`` and the client ``delegation/`` too, so uninstalling
either deleted files the other's RECORD still listed. Built and installed with pip, as users do.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.devserver import REPO

INSTALL_TIMEOUT_SECONDS = 900
RUN_TIMEOUT_SECONDS = 120

SERVICE_WORKS = (
    "import delegation_service.app, delegation_service.cli\n"
    "from delegation.v1 import delegation_pb2\n"
    "from delegation_service.client import DelegationClient, error_details\n"
    "assert delegation_pb2.DelegateRequest(client_id='billing').client_id == 'billing'\n"
    "print('service ok')\n"
)
CLIENT_WORKS = (
    "import delegation_client\n"
    "from delegation_client import DelegationClient, error_details, proto_dir\n"
    "from delegation_client.v1 import admin_pb2_grpc, delegation_pb2\n"
    "assert (proto_dir() / 'delegation' / 'v1' / 'delegation.proto').is_file()\n"
    "with DelegationClient('127.0.0.1:9', timeout=0.1) as client:\n"
    "    assert client.public is not None\n"
    "print('client ok')\n"
)


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def run(python: Path, code: str, cwd: Path) -> str:
    # Outside the repository, so only what is installed can be imported.
    result = subprocess.run(
        [str(python), "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def installed_files(python: Path, distribution: str) -> set[str]:
    shown = pip(python, "show", "--files", distribution).stdout
    listed = shown.split("Files:", 1)[1].splitlines()
    return {line.strip() for line in listed if line.strip() and not line.strip().startswith("..")}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with both distributions built from this checkout and installed by pip."""
    root = tmp_path_factory.mktemp("packages-venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    pip(python, "install", str(REPO / "clients" / "python"), str(REPO))
    return python


def test_the_two_distributions_share_no_file(venv: Path) -> None:
    service = installed_files(venv, "delegation-service")
    client = installed_files(venv, "delegation-client")

    assert not {f for f in service & client if "dist-info" not in f}, "installed by both"
    assert any(f.startswith("delegation/v1/") for f in service)
    assert any(f.startswith("delegation_client/v1/") for f in client)
    assert not any(f.startswith(("delegation/", "delegation_service/")) for f in client)
    assert not any(f.startswith("delegation_client/") for f in service)


def test_both_import_in_one_process(venv: Path, tmp_path: Path) -> None:
    # Each registers the same delegation/v1/*.proto descriptors; the pool accepts identical ones twice.
    assert run(venv, SERVICE_WORKS + CLIENT_WORKS, tmp_path) == "service ok\nclient ok"


def test_uninstalling_either_leaves_the_other_working(venv: Path, tmp_path: Path) -> None:
    pip(venv, "uninstall", "--yes", "delegation-client")
    assert run(venv, SERVICE_WORKS, tmp_path) == "service ok"
    cli = subprocess.run(
        [str(venv.parent / "delegation-service"), "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert cli.returncode == 0 and cli.stdout.startswith("delegation-service "), cli.stderr

    pip(venv, "install", "--no-deps", str(REPO / "clients" / "python"))
    pip(venv, "uninstall", "--yes", "delegation-service")
    assert run(venv, CLIENT_WORKS, tmp_path) == "client ok"
