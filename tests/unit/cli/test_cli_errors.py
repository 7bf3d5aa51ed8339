"""The CLI answers bad input with a one-line error and an exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from delegation_service import cli


def test_keys_generate_into_a_missing_folder_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "signing.pem"

    assert cli.main(["keys", "generate", "--out", str(target)]) == cli.EXIT_USAGE

    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(target) in error and "Traceback" not in error


def test_keys_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "signing.pem"
    assert cli.main(["keys", "generate", "--out", str(target)]) == cli.EXIT_OK
    assert cli.main(["keys", "generate", "--out", str(target)]) == cli.EXIT_USAGE
    assert cli.main(["keys", "generate", "--out", str(target), "--force"]) == cli.EXIT_OK


def test_unreachable_server_names_the_code_without_an_empty_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["introspect", "x", "--address", "127.0.0.1:9", "--timeout", "1"]) == cli.EXIT_UNAVAILABLE
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: ")
