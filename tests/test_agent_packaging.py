"""The agent ships on its own: the standard library and aiohttp, nothing else of wfdash.

Replicas get `wfdash/agent/` copied by `file_mounts` (skypilot/README.md), with an empty
`wfdash/__init__.py` above it, and run it with `python -m wfdash.agent`. These tests build
that layout in a temporary folder and run the agent from there as a process.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_agent_proxy import free_port

ROOT = Path(__file__).resolve().parents[1]
AGENT_DIR = ROOT / "wfdash" / "agent"
# aiohttp and the two libraries its public types come from (its own dependencies).
ALLOWED_THIRD_PARTY = {"aiohttp", "multidict", "yarl"}
FORBIDDEN = ("wfdash.collect", "wfdash.sandbox", "wfdash.ui", "wfdash.control")
FORBIDDEN_ROOTS = ("pydantic", "textual", "rich", "sky", "httpx", "prometheus_client")

PROBE = """
import json, sys
import wfdash.agent, wfdash.agent.cli, wfdash.agent.__main__
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_agent_loads_no_wfdash_core_ui_or_skypilot() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(out.stdout)
    bad = [
        name
        for name in loaded
        if name.split(".")[0] in FORBIDDEN_ROOTS or name.startswith(FORBIDDEN)
    ]
    assert bad == []
    assert "aiohttp" in loaded


def test_agent_modules_import_only_the_standard_library_aiohttp_and_each_other() -> None:
    offenders = []
    for path in sorted(AGENT_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue  # relative imports stay inside the package
            for root in roots - ALLOWED_THIRD_PARTY - set(sys.stdlib_module_names):
                if root != "__future__":
                    offenders.append(f"{path.name}: {root}")
    assert offenders == []


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    """The agent as file_mounts puts it on a replica: only wfdash/agent/, plus setup's
    empty wfdash/__init__.py."""
    target = tmp_path / "agent-src" / "wfdash"
    shutil.copytree(AGENT_DIR, target / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    (target / "__init__.py").touch()
    return tmp_path


def _env(copied: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFDASH_")}
    return env | {"PYTHONPATH": str(copied / "agent-src"), "HOME": str(copied)} | extra


def test_the_copied_agent_runs_alone_and_explains_itself(copied: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wfdash.agent", "--help"],
        cwd=copied,
        env=_env(copied),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "usage: wfdash-agent" in out.stdout
    for words in ("--backend", "WFDASH_BUILD_INFO", "WFDASH_METRICS_TOKEN", "/metrics"):
        assert words in out.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import wfdash.agent; print(wfdash.agent.__file__)"],
        cwd=copied,
        env=_env(copied),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert where.stdout.startswith(str(copied / "agent-src"))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_agent_process_serves_build_info_and_stops_on_sigterm(copied: Path) -> None:
    build_info = copied / ".wfdash" / "build-info.json"
    build_info.parent.mkdir()
    build_info.write_text(
        json.dumps(
            {"backend": "bitnet", "cache_version": "v3", "cache_hit": True, "build_seconds": 2}
        )
    )
    port = free_port()
    backend = f"http://127.0.0.1:{free_port()}"  # nothing there
    agent = subprocess.Popen(
        [sys.executable, "-m", "wfdash.agent", "--port", str(port), "--backend", backend],
        cwd=copied,
        env=_env(copied, WFDASH_AGENT_HOST="127.0.0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert agent.poll() is None, agent.communicate()[0]
                assert time.monotonic() < deadline, "the agent did not start listening"
                time.sleep(0.05)
        assert status == 200
        assert 'cache_version="v3"' in body and 'cache="hit"' in body
        assert "wfdash_agent_backend_metrics_up 0" in body
        assert _get(f"http://127.0.0.1:{port}/health")[0] == 503
    finally:
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=20)
    assert agent.returncode == 0, output
    assert "Traceback" not in output
