"""The README's shell blocks, run top to bottom in one shell against one dev server (issue 14.1).

Every ``sh`` block of "Two commands" and "Quickstart" and the "Operators" block, in their order, as a
reader pastes them into the second shell. Only two things are done for the reader: ``make run`` (the
first block's server) is the dev server this test starts, on free ports, and the ``export
DELEGATION_...=`` lines take the values its banner prints, as the README says to paste them. So a
block that breaks a later one (revoking the demo's chain early did) fails here. The Node block needs
``npm ci`` (a registry): it runs with ``DELEGATION_INTEROP=1`` (``make interop``), and is otherwise
replaced by ``true``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.devserver import REPO, DevServer, start_dev
from tests.operability.readme import README, commands

SERVER_LINES = ("make run", "make test")
FENCE = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXPORT = re.compile(r"^export (DELEGATION_\w+)=(\S*)")
INTROSPECT_CHILD = '.venv/bin/delegation-service introspect "$CHILD"'
NODE_BLOCK = "cd examples/node && npm ci && node delegate.mjs"
BUF_PERMISSION_DENIED_EXIT = 8 * 7
# What `make run` prints on its default ports; the README's literal values must be those.
DEFAULT_EXPORTS = {
    "DELEGATION_ADDRESS": "127.0.0.1:50051",
    "DELEGATION_ADMIN_URL": "http://127.0.0.1:50052",
    "DELEGATION_OAUTH_URL": "http://127.0.0.1:50053",
}


def section(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin + len(start))]


def readme_blocks() -> list[list[str]]:
    """The commands of each block in scope, in README order."""
    text = README.read_text(encoding="utf-8")
    scope = section(text, "## Two commands\n", "\n## Calling it\n") + section(
        text, "**Operators.**", "\n### "
    )
    return [commands(block) for block in FENCE.findall(scope)]


@pytest.fixture(scope="module")
def dev() -> Iterator[DevServer]:
    server = start_dev()
    yield server
    assert server.stop() == 0


def as_pasted(command: str, dev: DevServer) -> str:
    """The command as the reader runs it in the second shell."""
    export = EXPORT.match(command)
    if export is None:
        if command == NODE_BLOCK and not os.environ.get("DELEGATION_INTEROP"):
            return "true"
        return command
    name, value = export.groups()
    assert name in dev.env, f"the README exports {name}, which make run does not print"
    if not value.endswith("..."):  # a literal, not a placeholder for a token
        assert DEFAULT_EXPORTS.get(name) == value, f"make run prints {name}={DEFAULT_EXPORTS.get(name)}"
    return f"export {name}={dev.env[name]}"


def server_lines(block: list[str]) -> list[str]:
    return [line.split("#")[0].strip() for line in block]


def test_the_blocks_cover_the_demo_in_order() -> None:
    blocks = readme_blocks()
    assert server_lines(blocks[0]) == list(SERVER_LINES)
    flat = [command.split("#")[0].strip() for block in blocks for command in block]
    assert flat.index('.venv/bin/delegation-service revoke token "$CHILD"') < len(flat) - 5
    assert "revoke chain" in flat[-3] and "revoke client" in flat[-1]


def test_the_readme_runs_top_to_bottom_in_one_shell(dev: DevServer) -> None:
    server_block, *blocks = readme_blocks()
    assert server_lines(server_block) == list(SERVER_LINES)
    lines = [as_pasted(command, dev) for block in blocks for command in block]
    # Exactly as written; after each command only its exit code is recorded, on both streams.
    script = "\n".join(
        f'{command}\n__rc=$?; echo "@@{index}:$__rc@@"; echo "@@{index}:$__rc@@" >&2'
        for index, command in enumerate(lines)
    )
    # The second shell starts with nothing of the demo: only the README's export lines give it values.
    env = {k: v for k, v in dev.env.items() if not k.startswith("DELEGATION_")}
    result = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )

    outputs = re.split(r"@@\d+:\d+@@\n", result.stdout)
    exits = [int(code) for code in re.findall(r"@@\d+:(\d+)@@", result.stdout)]
    assert len(exits) == len(lines), result.stdout + result.stderr
    introspections = [i for i, line in enumerate(lines) if line.startswith(INTROSPECT_CHILD)]
    refused = [i for i, line in enumerate(lines) if "buf curl" in line and "directory.person.rw" in line]
    expected = [
        BUF_PERMISSION_DENIED_EXIT if i in refused else 1 if i == introspections[-1] else 0
        for i in range(len(lines))
    ]
    report = "\n".join(f"{code} {line[:90]}" for code, line in zip(exits, lines, strict=True))
    assert exits == expected, report + "\n" + result.stderr

    # The child alone was revoked: the parent still delegated in the Quickstart, and the operator's
    # chain revocation (last) reported the demo's chain.
    assert [outputs[i].splitlines()[0] for i in introspections] == ["active      true", "active      false"]
    granted = [i for i, line in enumerate(lines) if "buf curl" in line and "warehouse.items.r" in line]
    assert '"accessToken"' in outputs[granted[0]]
    (chain_revoked,) = [i for i, line in enumerate(lines) if "revoke chain" in line and "--yes" in line]
    assert outputs[chain_revoked].startswith("revoked ")
    (subject_revoked,) = [i for i, line in enumerate(lines) if "revoke subject" in line]
    assert '"revoke_time"' in outputs[subject_revoked]
    # OAuth over HTTP: the refused exchange names its reason; the revoked child is inactive; the first
    # DPoP-proved exchange is bound and the replay of its proof refused.
    refused_http = [
        i for i, line in enumerate(lines) if "scope=directory.person.rw" in line and "curl" in line
    ]
    assert '"reason":"SCOPE_NOT_ALLOWED_FOR_CLIENT"' in outputs[refused_http[0]]
    http_introspections = [i for i, line in enumerate(lines) if "/oauth2/introspect" in line]
    assert '"active":true' in outputs[http_introspections[0]]
    assert outputs[http_introspections[-1]].strip() == '{"active":false}'
    proved = [i for i, line in enumerate(lines) if 'DPoP: $PROOF"' in line]
    assert '"token_type":"DPoP"' in outputs[proved[0]]
    assert '"error":"invalid_dpop_proof"' in outputs[proved[1]]
    (subsystem_bound,) = [i for i, line in enumerate(lines) if "dpop_jkt=" in line]
    assert '"token_type":"DPoP"' in outputs[subsystem_bound]
