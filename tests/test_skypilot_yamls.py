"""Offline checks of the SkyPilot YAMLs under ``skypilot/`` against the installed SkyPilot.

Every YAML goes through ``sky.Task.from_yaml`` (JSON schema + service section) and the
service through ``sky.serve.validate_service_task``: what ``sky serve up`` checks before
it needs credentials. Nothing calls ``task.validate()`` or reads a property that infers
from the catalog (``Resources.cpus``/``memory``/``repr`` with only an instance type,
``to_yaml_config``): those download catalogs. Sockets to anything but loopback are refused
while the tests run, so a regression that reaches the network fails here instead of
hanging offline.

The setup/run scripts are checked with ``bash -n`` and then run against stub binaries
(fake llama-server/vllm and agent, apt-get/git/... that fail) in a temporary HOME: the
cache key, the cache hit/miss paths, the build info setup writes for the agent, and the
command lines: the wfdash agent on the public port, the backend behind it on loopback.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sky
import yaml
from sky.serve.serve_utils import validate_service_task  # = sky.serve.validate_service_task

ROOT = Path(__file__).resolve().parents[1]
SKYPILOT_DIR = ROOT / "skypilot"
SERVICE = SKYPILOT_DIR / "service.yaml"
INFERENCE = {
    "gcp_c3d.yaml": ("GCP", "c3d-standard-90"),
    "gcp_h3.yaml": ("GCP", "h3-standard-88"),
    "runpod_cpu.yaml": ("RunPod", None),
}
ALL_TASK_YAMLS = [SERVICE, *(SKYPILOT_DIR / "inference" / name for name in INFERENCE)]
INFERENCE_ENVS = ("MODEL_REPO", "QUANT_TYPE", "NUM_THREADS", "CTX_SIZE", "PORT", "CACHE_VERSION")
AGENT_MOUNT = "~/.wfdash/agent-src/wfdash/agent"
STUB_FAIL_RC = 97
BASH = "/bin/bash" if Path("/bin/bash").exists() else "bash"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No telemetry, and no connection or DNS lookup beyond loopback."""
    monkeypatch.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
    monkeypatch.setenv("SKYPILOT_DISABLE_LOCAL_API_SERVER", "1")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("localhost", "127.0.0.1", "::1", None):
            raise socket.gaierror(f"test is offline: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test is offline: connection to {address!r} refused")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


def _raw(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _task(path: Path) -> Any:
    return sky.Task.from_yaml(str(path))


# --- every YAML ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_TASK_YAMLS, ids=lambda p: p.name)
def test_yaml_loads_as_task(path: Path) -> None:
    task = _task(path)
    assert task.run and task.setup
    assert len(task.resources) >= 1


@pytest.mark.parametrize("path", ALL_TASK_YAMLS, ids=lambda p: p.name)
@pytest.mark.parametrize("section", ["setup", "run"])
def test_scripts_parse_with_bash_n(path: Path, section: str) -> None:
    script = _raw(path)[section]
    proc = subprocess.run([BASH, "-n"], input=script, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", ALL_TASK_YAMLS, ids=lambda p: p.name)
def test_the_agent_is_copied_to_every_replica(path: Path) -> None:
    mounts = _task(path).file_mounts
    assert mounts == {AGENT_MOUNT: "wfdash/agent"}
    # Relative to where `sky serve up` / `sky launch` run: the repository's root.
    assert (ROOT / mounts[AGENT_MOUNT] / "__main__.py").is_file()


def test_ssh_node_pools_example_is_a_hetzner_base_pool() -> None:
    pools = _raw(SKYPILOT_DIR / "ssh_node_pools.yaml.example")
    pool = pools["hetzner-base"]
    assert pool["user"] and (pool.get("identity_file") or pool.get("password"))
    hosts = pool["hosts"]
    # One base replica per host: min_replicas is the host count.
    assert len(hosts) == _task(SERVICE).service.min_replicas
    for host in hosts:
        ip = host["ip"] if isinstance(host, dict) else host
        assert str(ip).startswith("203.0.113."), "placeholders only (RFC 5737)"


# --- service.yaml --------------------------------------------------------------------


def test_service_passes_serve_validation() -> None:
    task = _task(SERVICE)
    validate_service_task(task, pool=False)


def test_service_replica_policy_is_what_the_dashboard_expects() -> None:
    spec = _task(SERVICE).service
    assert spec.readiness_path == "/health"
    assert spec.initial_delay_seconds >= 900  # cache-miss BitNet.cpp build + model
    assert spec.min_replicas == 3  # Hetzner hosts
    assert spec.max_replicas == 8
    assert spec.target_qps_per_replica == pytest.approx(0.1)
    assert spec.base_ondemand_fallback_replicas == spec.min_replicas
    assert not spec.dynamic_ondemand_fallback
    assert spec.upscale_delay_seconds == 120
    assert spec.downscale_delay_seconds == 1200
    assert spec.load_balancing_policy == "least_load"


def test_service_is_ssh_pool_first_then_cloud_spot() -> None:
    resources = _task(SERVICE).resources
    assert isinstance(resources, list), "`ordered`, not `any_of`"
    clouds = [str(r.cloud) for r in resources]
    assert clouds == ["SSH", "GCP", "AWS"]
    assert resources[0].region == "ssh-hetzner-base"
    assert [r.instance_type for r in resources[1:]] == ["c3d-standard-16", "r7a.4xlarge"]
    # The validator's rule; the base replicas get use_spot=False from the autoscaler.
    assert all(r.use_spot for r in resources)
    assert all(r.ports == ["8080"] for r in resources)
    pod_config = resources[0].cluster_config_overrides["ssh"]["pod_config"]
    mounts = pod_config["spec"]["containers"][0]["volumeMounts"]
    assert mounts[0]["mountPath"] == "/wf-cache"


def test_mixing_on_demand_ssh_with_spot_cloud_is_rejected(tmp_path: Path) -> None:
    """Why service.yaml needs base_ondemand_fallback_replicas instead of use_spot: false."""
    raw = _raw(SERVICE)
    raw["resources"]["ordered"][0]["use_spot"] = False
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="either all use spot or none"):
        validate_service_task(_task(path), pool=False)


def test_service_envs_the_dashboard_relies_on() -> None:
    envs = _task(SERVICE).envs
    assert envs["BACKEND"] in {"bitnet", "vllm"}
    assert envs["CACHE_VERSION"]
    assert envs["LLAMA_ARG_ENDPOINT_METRICS"] == "1"
    assert int(envs["LLAMA_ARG_N_PARALLEL"]) >= 1
    for name in ("MODEL_PATH", "NUM_THREADS", "CONTEXT_SIZE"):
        assert name in envs


def test_service_yaml_has_no_rejected_or_deprecated_keys() -> None:
    def keys(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key)
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    found = set(keys(_raw(SERVICE)))
    assert "period_seconds" not in found
    assert "spot_recovery" not in found
    assert "job_recovery" not in found  # SkyServe refuses it too


# --- inference/*.yaml ----------------------------------------------------------------


@pytest.mark.parametrize("name", INFERENCE)
def test_inference_yaml_resources(name: str) -> None:
    cloud, instance_type = INFERENCE[name]
    task = _task(SKYPILOT_DIR / "inference" / name)
    assert task.service is None
    (resources,) = task.resources
    assert str(resources.cloud) == cloud
    assert resources.instance_type == instance_type
    assert resources.ports == ["8080"]
    if cloud == "RunPod":
        assert resources.accelerators == {"A40": 2}


@pytest.mark.parametrize("name", INFERENCE)
def test_inference_yaml_envs(name: str) -> None:
    envs = _task(SKYPILOT_DIR / "inference" / name).envs
    for env in INFERENCE_ENVS:
        assert envs.get(env), env
    assert envs["PORT"] == "8080"
    assert envs["LLAMA_ARG_ENDPOINT_METRICS"] == "1"


# --- the scripts, run against stubs --------------------------------------------------


def _write_exe(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# The agent's venv python as setup leaves it: `-c 'import aiohttp'` works; started as the
# agent, it writes down its command line and environment.
FAKE_AGENT_PYTHON = """\
if [ "$1" = -c ]; then exit 0; fi
{ printf "AGENT %s\\n" "$@"; echo "AGENT_PYTHONPATH=$PYTHONPATH"; } > "$HOME/agent-args.tmp"
mv "$HOME/agent-args.tmp" "$HOME/agent-args"
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A HOME with the agent's venv, and a PATH whose network/package tools fail loudly."""
    home = tmp_path / "home"
    home.mkdir()
    for tool in ("apt-get", "sudo", "git", "wget", "python3", "python", "pip", "curl"):
        _write_exe(tmp_path / "stubs" / tool, f'echo "stub {tool} $*" >&2\nexit {STUB_FAIL_RC}\n')
    _write_exe(home / ".wfdash/agent-venv/bin/python", FAKE_AGENT_PYTHON)
    return tmp_path


def _run(sandbox: Path, script: str, envs: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(sandbox / "home"),
        "PATH": f"{sandbox / 'stubs'}:/usr/bin:/bin",
        **envs,
    }
    return subprocess.run(
        [BASH, "-c", script], env=env, text=True, capture_output=True, timeout=30, check=False
    )


FAKE_SERVER = (
    # The agent starts in the background first: wait until it has written its arguments.
    'for _ in $(seq 100); do [ -f "$HOME/agent-args" ] && break; sleep 0.05; done\n'
    'printf "ARG %s\\n" "$@"\n'
    'echo "ENV_METRICS=$LLAMA_ARG_ENDPOINT_METRICS"\n'
    'echo "ENV_PARALLEL=$LLAMA_ARG_N_PARALLEL"\n'
)


def _args(stdout: str) -> list[str]:
    return [line[4:] for line in stdout.splitlines() if line.startswith("ARG ")]


def _agent_args(sandbox: Path) -> tuple[list[str], str]:
    """The agent's command line and PYTHONPATH, as the fake agent wrote them down."""
    lines = (sandbox / "home/agent-args").read_text().splitlines()
    args = [line[6:] for line in lines if line.startswith("AGENT ")]
    (pythonpath,) = [
        line.split("=", 1)[1] for line in lines if line.startswith("AGENT_PYTHONPATH=")
    ]
    return args, pythonpath


def _check_agent_in_front(sandbox: Path, backend_args: list[str]) -> None:
    """The agent listens on the public port (8080, the probed one) and relays to the
    backend, which listens on loopback only, on another port."""
    args, pythonpath = _agent_args(sandbox)
    assert args[:2] == ["-m", "wfdash.agent"]
    assert args[args.index("--port") + 1] == "8080"
    backend_port = backend_args[backend_args.index("--port") + 1]
    assert backend_port != "8080"
    assert backend_args[backend_args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--backend") + 1] == f"http://127.0.0.1:{backend_port}"
    assert pythonpath == str(sandbox / "home/.wfdash/agent-src")


def _build_info(sandbox: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((sandbox / "home/.wfdash/build-info.json").read_text())
    return info


def _bitnet_dir(sandbox: Path, envs: dict[str, str], version: str | None = None) -> Path:
    name = envs["MODEL_REPO"].rsplit("/", 1)[-1].removesuffix("-gguf").removesuffix("-GGUF")
    return (
        sandbox
        / "home/.cache/wf-bitnet"
        / (version or envs["CACHE_VERSION"])
        / f"{name}-{envs['QUANT_TYPE']}"
        / "BitNet"
    )


def _fake_build(sandbox: Path, envs: dict[str, str]) -> Path:
    bitnet = _bitnet_dir(sandbox, envs)
    _write_exe(bitnet / "build/bin/llama-server", FAKE_SERVER)
    (bitnet.parent / ".complete").touch()
    return bitnet


@pytest.mark.parametrize("path", ALL_TASK_YAMLS, ids=lambda p: p.name)
def test_setup_cache_hit_skips_the_build_and_new_version_rebuilds(
    sandbox: Path, path: Path
) -> None:
    raw = _raw(path)
    envs = {k: str(v) for k, v in raw["envs"].items()}
    _fake_build(sandbox, envs)

    hit = _run(sandbox, raw["setup"], envs)
    assert hit.returncode == 0, hit.stderr
    assert "cache hit" in hit.stdout
    assert "stub" not in hit.stderr
    info = _build_info(sandbox)
    assert info == {
        "backend": "bitnet",
        "model": envs["MODEL_REPO"],
        "quant_type": envs["QUANT_TYPE"],
        "cache_version": envs["CACHE_VERSION"],
        "cache_hit": True,
        "build_seconds": info["build_seconds"],
    }
    assert isinstance(info["build_seconds"], int) and 0 <= info["build_seconds"] < 30
    assert (sandbox / "home/.wfdash/agent-src/wfdash/__init__.py").is_file()

    # `--env CACHE_VERSION=v2`: a cache miss that starts a fresh build (here: the first
    # stubbed package/network tool fails).
    miss = _run(sandbox, raw["setup"], {**envs, "CACHE_VERSION": "v2-test"})
    assert miss.returncode == STUB_FAIL_RC, miss.stderr
    assert "cache miss (v2-test)" in miss.stdout
    assert "stub" in miss.stderr


@pytest.mark.parametrize("path", ALL_TASK_YAMLS, ids=lambda p: p.name)
def test_setup_installs_the_agent_when_its_venv_is_missing(sandbox: Path, path: Path) -> None:
    raw = _raw(path)
    envs = {k: str(v) for k, v in raw["envs"].items()}
    _fake_build(sandbox, envs)
    (sandbox / "home/.wfdash/agent-venv/bin/python").unlink()
    proc = _run(sandbox, raw["setup"], envs)
    assert proc.returncode == STUB_FAIL_RC
    assert "stub python3 -m venv" in proc.stderr


@pytest.mark.parametrize("path", ALL_TASK_YAMLS, ids=lambda p: p.name)
def test_run_puts_the_agent_on_8080_in_front_of_llama_server(sandbox: Path, path: Path) -> None:
    raw = _raw(path)
    envs = {k: str(v) for k, v in raw["envs"].items()}
    bitnet = _fake_build(sandbox, envs)

    proc = _run(sandbox, raw["run"], envs)
    assert proc.returncode == 0, proc.stderr
    args = _args(proc.stdout)
    model = args[args.index("-m") + 1]
    quant = envs["QUANT_TYPE"]
    assert model.startswith(str(bitnet / "models")) and model.endswith(f"ggml-model-{quant}.gguf")
    _check_agent_in_front(sandbox, args)
    # The opened port (probed by SkyServe, scraped by wfdash) is the agent's.
    assert all(r.ports == ["8080"] for r in _task(path).resources)
    assert int(args[args.index("-t") + 1]) >= 1  # NUM_THREADS=auto resolved
    ctx = envs.get("CONTEXT_SIZE") or envs["CTX_SIZE"]
    assert args[args.index("-c") + 1] == ctx
    # Metrics and slots via env, not flags (a flag would override the env var).
    assert "ENV_METRICS=1" in proc.stdout
    assert f"ENV_PARALLEL={envs['LLAMA_ARG_N_PARALLEL']}" in proc.stdout
    assert "--metrics" not in args and "-np" not in args


def test_service_run_with_backend_vllm(sandbox: Path) -> None:
    raw = _raw(SERVICE)
    envs = {k: str(v) for k, v in raw["envs"].items()} | {"BACKEND": "vllm"}
    venv_bin = sandbox / "home/.cache/wf-bitnet" / envs["CACHE_VERSION"] / "vllm-venv/bin"
    _write_exe(venv_bin / "vllm", FAKE_SERVER)

    hit = _run(sandbox, raw["setup"], envs)
    assert hit.returncode == 0, hit.stderr
    assert "vLLM cache hit" in hit.stdout

    info = _build_info(sandbox)
    assert (info["backend"], info["model"], info["quant_type"]) == ("vllm", envs["VLLM_MODEL"], "")
    assert info["cache_hit"] is True

    proc = _run(sandbox, raw["run"], envs)
    assert proc.returncode == 0, proc.stderr
    args = _args(proc.stdout)
    assert args[:2] == ["serve", envs["VLLM_MODEL"]]
    _check_agent_in_front(sandbox, args)


@pytest.mark.parametrize("section", ["setup", "run"])
def test_service_rejects_an_unknown_backend(sandbox: Path, section: str) -> None:
    raw = _raw(SERVICE)
    envs = {k: str(v) for k, v in raw["envs"].items()} | {"BACKEND": "tgi"}
    proc = _run(sandbox, raw[section], envs)
    assert proc.returncode == 1
    assert "BACKEND must be bitnet or vllm" in proc.stderr


def test_offline_guard_is_active() -> None:
    with pytest.raises(OSError, match="offline"):
        socket.getaddrinfo("raw.githubusercontent.com", 443)
    assert os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] == "1"
