"""The HTTP ports' shared socket layer: the listen setting, the port error, the threading server's
error handling."""

from __future__ import annotations

import logging

import pytest

from delegation_service.transport.http_listen import HttpPortServer, cannot_listen, split_listen


@pytest.mark.parametrize(
    ("listen", "address"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)), (":9000", ("", 9000))],
)
def test_split_listen(listen: str, address: tuple[str, int]) -> None:
    assert split_listen(listen) == address


def test_a_taken_port_names_its_setting() -> None:
    error = cannot_listen("127.0.0.1:80", "admin.listen", OSError(98, "Address already in use"))
    assert str(error) == "cannot listen on 127.0.0.1:80 (admin.listen): Address already in use"


def test_a_caller_that_leaves_is_no_traceback_and_a_failure_is_logged(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    server = HttpPortServer(("127.0.0.1", 0), lambda *args: None)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.DEBUG, logger="delegation_service.transport.http_listen"):
            for failure in (ConnectionResetError(), BrokenPipeError(), ValueError("ours")):
                try:
                    raise failure
                except Exception:
                    server.handle_error(None, ("127.0.0.1", 1))
    finally:
        server.server_close()

    assert capsys.readouterr().err == ""
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.DEBUG, "http: the caller left (ConnectionResetError)"),
        (logging.DEBUG, "http: the caller left (BrokenPipeError)"),
        (logging.ERROR, "http: connection failed"),
    ]
