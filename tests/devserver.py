"""`delegation-service dev` as a subprocess on free loopback ports, with the environment its banner prints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "delegation_service.cli"]
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 20


@dataclass
class DevServer:
    """A running dev server: its banner, the exported variables, and its log so far."""

    process: subprocess.Popen[str]
    banner: str
    env: dict[str, str]
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            if self.reader is not None:
                self.reader.join(timeout=5)
            if self.process.stdout is not None:
                self.process.stdout.close()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the CLI with the banner's exports."""
        return subprocess.run(
            [*CLI, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=30, check=False
        )

    def bash(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell script from the repository root with the banner's exports."""
        return subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def start_dev(redis_url: str | None = None) -> DevServer:
    """Start the dev server (in-memory store, or Redis at ``redis_url``) and wait for its banner."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen(
        [*CLI, "dev", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "now inactive" in line:  # the banner's last command
            break
    banner = "".join(lines)
    exports = dict(re.findall(r"^\s+export (\w+)=(\S+)$", banner, re.MULTILINE))
    if "DELEGATION_ADMIN_URL" not in exports:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
        raise AssertionError(f"the dev server printed no admin URL:\n{banner}")
    server = DevServer(process, banner, {**env, **exports})
    # Keep reading the server's log so a full pipe never blocks it.
    server.reader = threading.Thread(target=lambda: server.log.extend(process.stdout or ()), daemon=True)
    server.reader.start()
    return server
