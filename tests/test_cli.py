"""The wfdash command line as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

WFDASH = [sys.executable, "-m", "wfdash"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "WFDASH_"))}
    env.update(HOME=str(tmp_path), WFDASH_STATE_DIR=str(tmp_path / "state"), **extra)
    return env


def _run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WFDASH, *args], check=False, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_help_documents_demo_and_environment(tmp_path: Path) -> None:
    result = _run(["--help"], _env(tmp_path))
    assert result.returncode == 0
    for word in ("demo", "--once", "--json", "WFDASH_STATE_DIR", "SKYPILOT_API_SERVER_ENDPOINT"):
        assert word in result.stdout


def test_bad_flag_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _run(["--interval", "0"], _env(tmp_path))
    assert result.returncode == 2
    assert "must be > 0" in result.stderr and "Traceback" not in result.stderr


def test_no_api_server_says_what_to_do_and_starts_nothing(tmp_path: Path) -> None:
    result = _run(["--once"], _env(tmp_path))
    assert result.returncode == 1
    assert "does not start one" in result.stdout and "wfdash demo" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / ".sky" / "api_server").exists()  # no local API server spawned


def test_unreachable_api_server_is_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _env(tmp_path, SKYPILOT_API_SERVER_ENDPOINT=f"http://127.0.0.1:{port}")
    result = _run(["--once", "--json"], env)
    assert result.returncode == 1
    snapshot = json.loads(result.stdout)
    assert snapshot["status_ok"] is False and "unreachable" in snapshot["status_error"]


def test_corrupt_event_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "demo-events.sqlite3").write_text("not a database")
    result = _run(["demo", "--once"], _env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a usable wfdash event database" in result.stderr


def test_demo_once_json_shows_the_sandbox_fleet(tmp_path: Path) -> None:
    result = _run(["demo", "--once", "--json", "--speed", "10", "--interval", "1"], _env(tmp_path))
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    [service] = snapshot["services"]
    assert service["name"] == "wf-bitnet" and service["envs"]["BACKEND"] == "bitnet"
    assert service["envs"]["HF_TOKEN"] == "***"  # the sandbox's fake secret is masked
    assert [r["layer"] for r in service["replicas"]] == ["base"] * 3
    assert snapshot["clusters"][0]["instance_type"] == "c3d-standard-90"
    assert "hf_Sandbox" not in result.stdout


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_stopping_demo_closes_every_port_it_opened(tmp_path: Path, stop_signal: int) -> None:
    args = [*WFDASH, "demo", "--json", "--speed", "10", "--interval", "0.5"]
    proc = subprocess.Popen(
        args, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ports: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while time.monotonic() < deadline and len(ports) < 4:
            line = proc.stdout.readline()
            if not line:
                break
            snapshot = json.loads(line)
            endpoints = [r["endpoint"] for s in snapshot["services"] for r in s["replicas"]]
            endpoints += [c["endpoint"] for c in snapshot["clusters"]]
            ports = {urlparse(e).port for e in endpoints if e} - {None}  # type: ignore[assignment]
        assert len(ports) >= 4, "demo never showed 3 replicas and a cluster with endpoints"
        assert not any(_refused(p) for p in ports)
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all(_refused(p) for p in ports)
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_garbage_collection_is_back_on_however_the_dashboard_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Collection is off from the dashboard's start to its first paint; an app that fails
    before painting must not leave it off."""
    import gc

    from wfdash import cli

    def fails(*_: object) -> int:
        assert not gc.isenabled()
        raise RuntimeError("no terminal")

    monkeypatch.setattr(cli, "_run_app", fails)
    with pytest.raises(RuntimeError):
        cli.run_tui(lambda: (None, None), None, None)  # type: ignore[arg-type,return-value]
    assert gc.isenabled()
