"""Fixtures shared by the conformance suites: the real `mock-upstream` and `switchyard` binaries.

Binaries: `$MOCK_UPSTREAM_BIN` / `$SWITCHYARD_BIN`, else `$CARGO_TARGET_DIR/debug/<name>` when that is set,
else `<repo>/target/debug/<name>`.

Reuse from another suite:

    def test_x(gateway_factory, mock_upstream):
        gw = gateway_factory(standard_config(mock_upstream.url, models={"claude-x": "claude-sonnet-4-5"}))
        ... gw.url, gw.key ...

`gateway_factory(config_text, env=None)` starts one server per distinct (config, env) for the whole session
and stops them all at the end; `gateway` is the server on `standard_config()`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-conformance-master"
START_TIMEOUT_S = 30.0

# Public model name -> upstream model name (mock-upstream options ride on the name).
STANDARD_MODELS: dict[str, str] = {
    "gpt-mock": "mock-ok",
    "gpt-tools": "mock-ok+tools=1",
    "gpt-429": "mock-ok+status=429+retry_after=7",
    "gpt-500": "mock-ok+status=500",
    "gpt-drop": "mock-ok+drop_after=2+tokens=10",
    "gpt-error-after": "mock-ok+error_after=2+tokens=10",
}


def binary(env_name: str, name: str) -> Path:
    """Where a workspace binary is: `$<env_name>`, else the cargo target dir's debug folder."""
    explicit = os.environ.get(env_name)
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else ROOT / "target"
    return base / "debug" / name


class Process:
    """A child process that prints `... listening on http://ADDR` on stdout once it is ready."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, name: str = "process"):
        self.name = name
        exe = Path(argv[0])
        if not exe.exists():
            pytest.fail(f"{name}: {exe} does not exist; build it first (cargo build --workspace)")
        self.stderr_file = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
            env=full_env,
            text=True,
            start_new_session=True,
        )
        self.url = self._wait_for_url()
        # Keep draining stdout so the child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_url(self) -> str:
        found: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if "listening on " in line:
                    found.append(line.split("listening on ", 1)[1].strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not found:
            self.stop()
            pytest.fail(f"{self.name} did not start; stderr:\n{self.stderr()}")
        return found[0]

    def _drain(self) -> None:
        if self.proc.stdout is None:
            return
        for _ in self.proc.stdout:
            pass

    def stderr(self) -> str:
        try:
            return Path(self.stderr_file.name).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.stderr_file.close()
        try:
            os.unlink(self.stderr_file.name)
        except OSError:
            pass


@dataclass
class MockUpstream:
    process: Process
    url: str  # http://127.0.0.1:PORT (no /v1)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_mock/stats", timeout=10) as r:
            return json.load(r)

    def requests(self, route: str = "POST /v1/chat/completions") -> list[dict]:
        return [r for r in self.stats()["requests"] if r["route"] == route]

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/_mock/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10):
            pass


@dataclass
class Gateway:
    process: Process
    url: str  # http://127.0.0.1:PORT
    key: str | None
    config_path: Path
    extra: dict = field(default_factory=dict)


def standard_config(
    upstream_url: str,
    key: str | None = MASTER_KEY,
    models: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    """A config with a provider `mock` at `upstream_url` and the standard models (plus `models`).

    `extra` is appended verbatim (more providers, models, tables)."""
    lines = [
        "[server]",
        'address = "127.0.0.1:0"',
        "",
        "[auth]",
    ]
    if key:
        lines.append(f'master_key = "{key}"')
    lines += [
        "",
        "# The spine's own answers to each upstream failure; routing is tested in test_routing.py.",
        "[routing]",
        "max_attempts = 1",
        "health_check_interval_ms = 0",
        "[routing.breaker]",
        "failures = 1000000",
        "min_requests = 1000000",
        "",
        "[providers.mock]",
        'kind = "openai"',
        f'base_url = "{upstream_url}/v1"',
        'api_key = "sk-upstream"',
        "",
    ]
    for public, upstream in {**STANDARD_MODELS, **(models or {})}.items():
        lines += [f'[models."{public}"]', 'provider = "mock"', f'model = "{upstream}"', ""]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture(scope="session")
def mock_upstream():
    """One `mock-upstream` binary for the session."""
    exe = binary("MOCK_UPSTREAM_BIN", "mock-upstream")
    proc = Process([str(exe), "--listen", "127.0.0.1:0"], name="mock-upstream")
    try:
        yield MockUpstream(process=proc, url=proc.url)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def gateway_factory(tmp_path_factory):
    """`gateway_factory(config_text, env=None) -> Gateway`: a `switchyard serve` per distinct config."""
    started: dict[tuple, Gateway] = {}
    exe = binary("SWITCHYARD_BIN", "switchyard")

    def start(config_text: str, env: dict[str, str] | None = None, key: str | None = MASTER_KEY) -> Gateway:
        cache_key = (config_text, tuple(sorted((env or {}).items())))
        if cache_key in started:
            return started[cache_key]
        d = tmp_path_factory.mktemp("switchyard")
        path = d / "switchyard.toml"
        path.write_text(config_text)
        child_env = {
            "SWITCHYARD_LOG": os.environ.get("SWITCHYARD_LOG", "warn"),
            "SWITCHYARD_HOME": os.environ.get("SWITCHYARD_HOME", str(d / "home")),
            **(env or {}),
        }
        proc = Process([str(exe), "serve", "--config", str(path)], env=child_env, name="switchyard")
        gw = Gateway(process=proc, url=proc.url, key=key, config_path=path)
        started[cache_key] = gw
        return gw

    try:
        yield start
    finally:
        for gw in started.values():
            gw.process.stop()


@pytest.fixture(scope="session")
def gateway(gateway_factory, mock_upstream) -> Gateway:
    """The gateway on the standard config, in front of the session's mock."""
    return gateway_factory(standard_config(mock_upstream.url))


def wait_until(pred, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
