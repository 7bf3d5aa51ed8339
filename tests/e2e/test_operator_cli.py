"""The operator commands as an operator types them: `delegation-service chain show` and `revoke ...` run
as subprocesses against a real server (in this process, on the suite's Redis).

Exit codes: 0 done, 1 refused by the service, 2 bad usage, 3 unavailable.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from delegation_service.client import DelegationClient
from tests.integration.harness import Harness, start_harness

pytestmark = pytest.mark.redis

CLI = [sys.executable, "-m", "delegation_service.cli"]
CLI_TIMEOUT_SECONDS = 30
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def server(redis_server: object) -> Iterator[Harness]:
    # A key prefix of its own: the horizons these tests set touch no other test's tokens.
    harness = start_harness(redis_server.url, redis_key_prefix="e2e-cli")  # type: ignore[attr-defined]
    yield harness
    harness.server.stop(0)


@pytest.fixture
def client(server: Harness) -> Iterator[DelegationClient]:
    with server.client() as c:
        yield c


def cli(server: Harness, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DELEGATION_ADDRESS": server.address,
        "DELEGATION_OPERATOR_TOKEN": server.operator_secret,
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [*CLI, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


def cli_on_terminal(server: Harness, *args: str, columns: int = 80) -> tuple[int, str]:
    """Run the CLI with its stdout on a pseudo-terminal ``columns`` wide; the exit code and the screen."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "LINES")
    }
    env.update(
        DELEGATION_ADDRESS=server.address,
        DELEGATION_OPERATOR_TOKEN=server.operator_secret,
        TERM="xterm-256color",
    )
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen([*CLI, *args], env=env, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + CLI_TIMEOUT_SECONDS
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end closed when the command exited
                break
            if not data:
                break
            screen += data
        code = process.wait(timeout=CLI_TIMEOUT_SECONDS)
    finally:
        os.close(leader)
        if process.stderr is not None:
            process.stderr.close()
    return code, screen.decode().replace("\r\n", "\n")


@dataclass
class Chain:
    parent: str
    chain_id: str
    root_id: str
    child_ids: list[str]


def a_chain(server: Harness, client: DelegationClient, subject: str = "alice") -> Chain:
    """A root with three children: billing (active), search (revoked), billing (active)."""
    parent = server.parent(subject=subject)
    minted = [
        client.delegate(parent, "billing", ["warehouse.items.r"]),
        client.delegate(parent, "search", ["warehouse.items.r"]),
        client.delegate(parent, "billing", ["directory.person.r"]),
    ]
    client.revoke(minted[1].access_token)
    root_id = client.introspect(parent).token_id
    return Chain(parent, minted[0].chain_id, root_id, [m.token_id for m in minted])


def row(output: str, token_id: str) -> str:
    (line,) = [line for line in output.splitlines() if token_id in line]
    return line


def test_chain_show_draws_the_chain_as_a_tree_table(server: Harness, client: DelegationClient) -> None:
    chain = a_chain(server, client)

    shown = cli(server, "chain", "show", "--chain-id", chain.chain_id)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"Chain {chain.chain_id}  not revoked"
    assert lines[1].split() == ["Token", "Kind", "State", "Client", "Scopes", "Expires"]
    assert lines[-1] == "4 tokens: 3 active, 1 revoked; clients: billing, gateway, search"
    # One row per token, in the service's order (root first, then by issue time), the tree drawn.
    order = [t.token_id for t in client.get_chain(chain.chain_id).tokens]
    assert order[0] == chain.root_id and sorted(order[1:]) == sorted(chain.child_ids)
    rows = [row(shown.stdout, token_id) for token_id in order]
    assert [lines.index(r) for r in rows] == sorted(lines.index(r) for r in rows)
    # A pipe gets no table: one tab-separated line per token (Token, Kind, State, Client, Scopes, Expires).
    assert all(r.count("\t") == 5 for r in rows) and "─" not in lines[1]
    assert rows[0].split("\t")[:3] == [chain.root_id, "upstream", "active"]
    assert [r[:3] for r in rows[1:]] == ["├─ ", "├─ ", "└─ "]
    first, revoked, last = (row(shown.stdout, token_id).split("\t") for token_id in chain.child_ids)
    assert first[1:4] == ["delegated", "active", "billing"]
    assert revoked[2:4] == ["revoked", "search"]
    assert last[2] == "active" and "directory.person.r" in last[4] and "(in 1" in last[5]


def test_chain_show_on_an_80_column_terminal_is_a_coloured_table_that_fits(
    server: Harness, client: DelegationClient
) -> None:
    chain = a_chain(server, client)

    code, screen = cli_on_terminal(server, "chain", "show", "--chain-id", chain.chain_id)

    assert code == 0, screen
    assert "\x1b[" in screen  # colour, on a terminal only
    lines = ANSI_ESCAPE.sub("", screen).splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), "\n".join(lines)
    assert lines[0] == f"Chain {chain.chain_id}  not revoked"
    assert lines[1].split() == ["Token", "Kind", "State", "Client", "Scopes", "Expires"]
    assert set(lines[2]) == {"─"}  # a table, not tab-separated lines
    text = "\n".join(lines)
    for token_id in (chain.root_id, *chain.child_ids):
        assert token_id not in text  # abbreviated, like git's short hashes
        (shown,) = [line for line in lines if f"{token_id[:8]}…" in line]
        # Expiry as a relative time only; the timestamp is for --wide.
        assert re.search(r"\bin \d+[smhd]\s*$", shown) and not re.search(r"\d{4}-\d\d-\d\dT", shown), shown
    revoked = next(line for line in lines if f"{chain.child_ids[1][:8]}…" in line)
    assert "revoked" in revoked and "search" in revoked
    assert "4 tokens: 3 active, 1 revoked; clients: billing, gateway, search" in lines
    assert lines[-1] == "(ids abbreviated: --wide or --output json shows them whole)"


def test_chain_show_wide_shows_whole_ids_and_timestamps(server: Harness, client: DelegationClient) -> None:
    chain = a_chain(server, client)

    code, screen = cli_on_terminal(server, "chain", "show", "--chain-id", chain.chain_id, "--wide")

    assert code == 0, screen
    text = ANSI_ESCAPE.sub("", screen)
    for token_id in (chain.root_id, *chain.child_ids):
        (shown,) = [line for line in text.splitlines() if token_id in line]
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in \d+[smhd]\)", shown), shown
    assert "abbreviated" not in text
    # A pipe always gets whole ids: --wide changes nothing there.
    piped = cli(server, "chain", "show", "--chain-id", chain.chain_id, "--wide")
    assert piped.returncode == 0 and "\x1b[" not in piped.stdout
    assert all(row(piped.stdout, token_id).count("\t") == 5 for token_id in chain.child_ids)


def test_chain_show_by_token_and_as_json(server: Harness, client: DelegationClient) -> None:
    chain = a_chain(server, client)

    shown = cli(server, "chain", "show", "--token", chain.parent, "--output", "json")

    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["chain_id"] == chain.chain_id
    states = {t["token_id"]: t["state"] for t in document["tokens"]}
    assert states == {
        chain.root_id: "TOKEN_STATE_ACTIVE",
        chain.child_ids[0]: "TOKEN_STATE_ACTIVE",
        chain.child_ids[1]: "TOKEN_STATE_REVOKED",
        chain.child_ids[2]: "TOKEN_STATE_ACTIVE",
    }


def test_revoke_chain_dry_run_then_confirmation_then_revocation(
    server: Harness, client: DelegationClient
) -> None:
    chain = a_chain(server, client)

    dry = cli(server, "revoke", "chain", "--chain-id", chain.chain_id, "--dry-run")
    # The blast radius counts the chain's unexpired tokens, the one revoked before included (counting
    # without reading every record), and their clients.
    assert (dry.returncode, dry.stdout.strip()) == (
        0,
        "would revoke 4 live token(s); clients: billing, gateway, search",
    )
    assert client.introspect(chain.parent).active

    unconfirmed = cli(server, "revoke", "chain", "--chain-id", chain.chain_id, stdin="")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert client.introspect(chain.parent).active

    done = cli(server, "revoke", "chain", "--chain-id", chain.chain_id, "--yes", "--justification", "e2e")
    assert (done.returncode, done.stdout.strip()) == (
        0,
        "revoked 4 live token(s); clients: billing, gateway, search",
    )
    shown = cli(server, "chain", "show", "--chain-id", chain.chain_id)
    assert shown.stdout.splitlines()[0] == f"Chain {chain.chain_id}  REVOKED"
    assert shown.stdout.splitlines()[-1] == "4 tokens: 4 revoked; clients: billing, gateway, search"


def test_revoke_subject_and_client_for_scripts(server: Harness, client: DelegationClient) -> None:
    chain = a_chain(server, client, subject="erin")

    subject = cli(server, "revoke", "subject", "erin", "--yes", "--output", "json")
    holder = cli(server, "revoke", "client", "search", "--yes", "--output", "json")

    assert subject.returncode == 0 and holder.returncode == 0, subject.stderr + holder.stderr
    assert json.loads(subject.stdout)["revoke_time"].endswith("Z")
    assert "revoke_time" in json.loads(holder.stdout)
    assert not client.introspect(chain.parent).active


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (("chain", "show", "--chain-id", "no-such-chain"), 1, "CHAIN_NOT_FOUND"),
        (("chain", "show"), 2, "--chain-id or --token"),
        (("revoke", "subject", "bob"), 2, "--yes"),
    ],
)
def test_exit_codes(server: Harness, args: tuple[str, ...], code: int, expected: str) -> None:
    result = cli(server, *args, stdin="")
    assert (result.returncode, expected in result.stderr) == (code, True), result.stderr


def test_a_refusal_for_scripts_is_json_on_stderr(server: Harness) -> None:
    result = cli(server, "chain", "show", "--chain-id", "no-such-chain", "--output", "json")
    assert result.returncode == 1
    assert json.loads(result.stderr)["reason"] == "CHAIN_NOT_FOUND"


def test_an_unreachable_server_exits_3(server: Harness, unused_loopback_port: int) -> None:
    result = cli(
        server,
        "chain",
        "show",
        "--chain-id",
        "x",
        "--address",
        f"127.0.0.1:{unused_loopback_port}",
        "--timeout",
        "1",
    )
    assert result.returncode == 3
