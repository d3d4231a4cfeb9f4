"""Contract tests of wfdash's real control path: the real ``sky`` client over HTTP.

``SkyPilotControlPlane`` calls ``sky.serve.update`` / ``sky.launch`` / ``sky.cancel`` /
``sky.serve.terminate_replica`` / ``sky.serve.down``, ``sky.stream_and_get`` and
``sky.api_cancel``; here they talk to :mod:`tests.skypilot_api_server` on 127.0.0.1,
which answers with SkyPilot's own encoders, request records and exception serialisation.
The tests read back what the server received (the task YAML's service spec and envs) and
how failures come back.

Two stand-ins, both for things that would leave 127.0.0.1: the route's core functions
(no controller, no cloud), and the instance catalog the client reads when it serialises a
task (``Resources.to_yaml_config`` looks up vCPUs/memory of an instance type in a CSV
SkyPilot downloads from GitHub): :func:`offline_catalog` serves a few rows from memory.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sky
import yaml
from sky import exceptions
from sky.catalog import common as catalog_common
from sky.server.requests import payloads
from sky.utils import dag_utils

from tests import records
from tests import test_skypilot_contract as read_path
from tests.skypilot_api_server import FakeSkyPilotApiServer
from tests.test_skypilot_contract import (
    DISABLE_LOCAL_ENV,
    ENDPOINT_ENV,
    LOCAL_PORT,
    LOCAL_PORT_BUSY_BEFORE,
    _listening,
    _reset_sky_client,
)
from wfdash.collect.kinds import EventKind
from wfdash.collect.mapping import map_clusters, map_services
from wfdash.collect.snapshot import ClusterView, ServiceView, Snapshot
from wfdash.collect.store import EventStore
from wfdash.control.actions import (
    Action,
    Down,
    LaunchReplica,
    RebuildCache,
    Scale,
    SwitchBackend,
    TerminateReplica,
)
from wfdash.control.errors import ActionError
from wfdash.control.plan import DeploymentFiles, Plan, plan_action
from wfdash.control.runner import ActionRecord, ActionRunner
from wfdash.control.skypilot_plane import SkyPilotControlPlane

# The read path's fixtures: a client with no user config, credentials or telemetry, and a
# check that nothing started a local API server.
sky_env = read_path.sky_env
_no_api_server_started = read_path._no_api_server_started

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "wf-bitnet"
HF_TOKEN = "hf_contractContractContract0123"  # in the deployed task; SkyPilot returns it
WANDB = "0123456789abcdef0123"

# vCPUs / memory of the instance types the YAMLs name, as SkyPilot's catalogs list them.
_CATALOG = {
    "gcp/vms.csv": [
        ("c3d-standard-16", 16, 64, 0.726, 0.110, "us-central1", "us-central1-a"),
        ("c3d-standard-90", 90, 360, 4.09, 0.62, "us-central1", "us-central1-a"),
        ("h3-standard-88", 88, 352, 1.76, None, "us-central1", "us-central1-a"),
    ],
    "aws/vms.csv": [("r7a.4xlarge", 16, 128, 1.217, 0.45, "us-east-1", "us-east-1a")],
}
_COLUMNS = [
    "InstanceType",
    "vCPUs",
    "MemoryGiB",
    "Price",
    "SpotPrice",
    "Region",
    "AvailabilityZone",
]


@pytest.fixture(autouse=True)
def offline_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalog rows from memory instead of a download from raw.githubusercontent.com."""

    def load(self: catalog_common.LazyDataFrame) -> pd.DataFrame:
        name = "/".join(Path(self._filename).parts[-2:])
        if name not in _CATALOG:
            raise AssertionError(f"the client read a catalog this test has no rows for: {name}")
        frame = pd.DataFrame(_CATALOG[name], columns=_COLUMNS)
        frame["AcceleratorName"] = None
        frame["AcceleratorCount"] = None
        return frame

    monkeypatch.setattr(catalog_common.LazyDataFrame, "_load_df", load)


# --- the deployment the tests act on ---------------------------------------------------


def deployed_yaml(tmp_path: Path, **env: str) -> str:
    """``yaml_content`` as SkyServe stores it: ``task.to_yaml_config()`` of what was deployed
    (skypilot/service.yaml plus a token), ``_user_specified_yaml`` and all."""
    tree = yaml.safe_load((ROOT / "skypilot" / "service.yaml").read_text())
    tree["envs"].update({"HF_TOKEN": HF_TOKEN, **env})
    source = tmp_path / "deployed.yaml"
    source.write_text(yaml.safe_dump(tree, sort_keys=False))
    return yaml.safe_dump(sky.Task.from_yaml(str(source)).to_yaml_config(), sort_keys=False)


def snapshot(tmp_path: Path, **service_fields: Any) -> Snapshot:
    record = records.service(yaml_content=deployed_yaml(tmp_path), **service_fields)
    record["policy"] = "Autoscaling from 3 to 8 replicas (target QPS per replica: 0.1)"
    clusters = map_clusters(
        [
            {
                "name": "ie-c3d",
                "status": "UP",
                "cloud": "GCP",
                "region": "us-central1",
                "resources_str": "1x(cpus=90, mem=360, c3d-standard-90, ...)",
                "last_creation_yaml": yaml.safe_dump(
                    {
                        "name": "ie-c3d",
                        "envs": {"CACHE_VERSION": "v1", "MODEL_REPO": "microsoft/x-gguf"},
                    }
                ),
            }
        ]
    )
    return Snapshot(
        taken_at=time.time(),
        source="skypilot",
        services=tuple(ServiceView(s, ()) for s in map_services([record])),
        status_ok=True,
        clusters=tuple(ClusterView(cluster=c) for c in clusters),
    )


@pytest.fixture
def deploy() -> DeploymentFiles:
    return DeploymentFiles(ROOT / "skypilot", environ={"HF_TOKEN": HF_TOKEN})


# --- the server side ---------------------------------------------------------------------


class Controller:
    """Stand-ins for the server's core functions, recording what they were handed."""

    def __init__(self, server: FakeSkyPilotApiServer) -> None:
        self.server = server
        self.tasks: list[sky.Task] = []
        self.version = 3

    def update(self, body: payloads.ServeUpdateBody) -> None:
        self.tasks.extend(dag_utils.load_chain_dag_from_yaml_str(body.task).tasks)
        self.server.emit_status("Initializing service")
        self.version += 1
        self.server.emit(f"Service {body.service_name!r} update scheduled.")
        self.server.emit(
            f"\x1b[32m✓ Successfully updated service {body.service_name!r} "
            f"to version {self.version}.\x1b[0m"
        )

    def launch(self, body: payloads.LaunchBody) -> tuple[int, None]:
        self.tasks.extend(dag_utils.load_chain_dag_from_yaml_str(body.task).tasks)
        self.server.emit_status("Launching on GCP us-central1 (us-central1-a)")
        self.server.emit("BitNet.cpp cache miss (v2): building in ~/.cache/wf-bitnet/v2/...")
        self.server.emit(f"Job submitted, ID: 1, token={HF_TOKEN}")
        return 1, None


@pytest.fixture
def server(sky_env: pytest.MonkeyPatch) -> Iterator[FakeSkyPilotApiServer]:
    with FakeSkyPilotApiServer() as fake:
        controller = Controller(fake)
        fake.core.update(
            {
                "optimize": lambda body: None,
                "serve.update": controller.update,
                "launch": controller.launch,
                "cancel": lambda body: None,
                "serve.terminate_replica": lambda body: None,
                "serve.down": lambda body: None,
            }
        )
        fake.controller = controller  # type: ignore[attr-defined]
        sky_env.setenv(ENDPOINT_ENV, fake.url)
        _reset_sky_client()
        yield fake


def controller(server: FakeSkyPilotApiServer) -> Controller:
    found: Controller = server.controller  # type: ignore[attr-defined]
    return found


def execute(
    plan: Plan, deploy: DeploymentFiles, cancel: threading.Event | None = None
) -> tuple[str, list[str]]:
    lines: list[str] = []
    result = SkyPilotControlPlane(deploy).execute(plan, lines.append, cancel or threading.Event())
    return result, lines


def failure(plan: Plan, deploy: DeploymentFiles) -> str:
    with pytest.raises(ActionError) as info:
        execute(plan, deploy)
    message = str(info.value)
    assert message and "\n" not in message and "\x1b" not in message
    return message


def plan_for(action: Action, tmp_path: Path, deploy: DeploymentFiles, **fields: Any) -> Plan:
    return plan_action(action, snapshot(tmp_path, **fields), deploy, pool_hosts=3)


def posted(server: FakeSkyPilotApiServer) -> list[str]:
    return [r.path for r in server.seen if r.method == "POST"]


# --- each action issues the right request with the right task ----------------------------


def test_scale_updates_the_service_with_the_deployed_task_and_new_policy(
    server: FakeSkyPilotApiServer, deploy: DeploymentFiles, tmp_path: Path
) -> None:
    plan = plan_for(Scale(service=SERVICE, min_replicas=5, max_replicas=8), tmp_path, deploy)
    result, lines = execute(plan, deploy)

    assert result == "update scheduled as version 4; replicas update in the background"
    # validate + optimize before the update, as `sky serve update` does them.
    assert posted(server) == ["/validate", "/optimize", "/upload_v2", "/serve/update"]
    [body] = server.bodies("/serve/update")
    assert (body["service_name"], body["mode"]) == (SERVICE, "rolling")
    # The request id from the response header: its log streamed, then its result fetched.
    update_id = server.calls("/serve/update")[0].request_id
    followed = [r.path for r in server.seen if r.query.get("request_id") == update_id]
    assert followed == ["/api/stream", "/api/get"]
    assert server.tasks[update_id].name == "sky.serve.update"
    assert server.tasks[update_id].status.value == "SUCCEEDED"
    [task] = controller(server).tasks
    spec = task.service
    assert (spec.min_replicas, spec.max_replicas, spec.target_qps_per_replica) == (5, 8, 0.1)
    assert spec.base_ondemand_fallback_replicas == 3  # the rest of the deployed policy stays
    assert task.envs["BACKEND"] == "bitnet" and task.envs["CACHE_VERSION"] == "v1"
    assert task.envs["HF_TOKEN"] == HF_TOKEN  # SkyPilot hid it; wfdash passed it again
    assert [r.infra.cloud for r in task.resources] == ["SSH", "GCP", "AWS"]
    assert task.setup and "BitNet.cpp cache" in task.setup

    # The request log became progress: the spinner message, uncoloured lines, no secret.
    assert "Initializing service" in lines
    assert f"✓ Successfully updated service {SERVICE!r} to version 4." in lines
    assert not any(HF_TOKEN in line or "\x1b" in line for line in lines)
    for text in (plan.yaml_diff, plan.command, repr(plan), *plan.warnings):
        assert HF_TOKEN not in text


@pytest.mark.parametrize(
    ("action", "mode", "envs"),
    [
        (
            SwitchBackend(service=SERVICE, backend="vllm", mode="blue_green"),
            "blue_green",
            {"BACKEND": "vllm", "CACHE_VERSION": "v1"},
        ),
        (
            RebuildCache(target="service", name=SERVICE, cache_version="v2"),
            "rolling",
            {"BACKEND": "bitnet", "CACHE_VERSION": "v2"},
        ),
    ],
    ids=["switch-backend", "rebuild-service-cache"],
)
def test_env_changes_update_the_service_with_new_envs(
    server: FakeSkyPilotApiServer,
    deploy: DeploymentFiles,
    tmp_path: Path,
    action: Action,
    mode: str,
    envs: dict[str, str],
) -> None:
    plan = plan_for(action, tmp_path, deploy)
    execute(plan, deploy)
    [body] = server.bodies("/serve/update")
    assert body["mode"] == mode
    [task] = controller(server).tasks
    assert {k: task.envs[k] for k in envs} == envs
    assert (task.service.min_replicas, task.service.max_replicas) == (3, 8)  # policy as deployed


def test_launch_sends_the_inference_task_and_streams_its_log(
    server: FakeSkyPilotApiServer, deploy: DeploymentFiles, tmp_path: Path
) -> None:
    plan = plan_for(LaunchReplica(profile="gcp_h3", cluster_name="ie-h3"), tmp_path, deploy)
    result, lines = execute(plan, deploy)

    assert result == "ie-h3 is up, server running as job 1"
    assert posted(server) == ["/validate", "/upload_v2", "/launch"]
    # The replica agent goes with the task, from wherever wfdash is installed.
    [upload] = server.uploads.values()
    with zipfile.ZipFile(io.BytesIO(upload)) as archive:
        assert any(name.endswith("wfdash/agent/__main__.py") for name in archive.namelist())
    [body] = server.bodies("/launch")
    assert body["cluster_name"] == "ie-h3"
    assert not body["no_setup"] and not body["fast"]  # setup runs (the build)
    [task] = controller(server).tasks
    [resources] = task.resources
    assert resources.instance_type == "h3-standard-88"
    assert task.envs["CACHE_VERSION"] == "v1" and task.envs["LLAMA_ARG_ENDPOINT_METRICS"] == "1"
    assert "Launching on GCP us-central1 (us-central1-a)" in lines
    assert "Job submitted, ID: 1, token=***" in lines  # request logs are redacted


def test_cluster_rebuild_stops_the_server_then_relaunches_with_a_new_cache_version(
    server: FakeSkyPilotApiServer, deploy: DeploymentFiles, tmp_path: Path
) -> None:
    plan = plan_for(
        RebuildCache(target="cluster", name="ie-c3d", cache_version="v2"), tmp_path, deploy
    )
    result, _ = execute(plan, deploy)

    assert result == "ie-c3d is up, server running as job 1"
    assert posted(server) == ["/cancel", "/validate", "/upload_v2", "/launch"]
    [cancel] = server.bodies("/cancel")
    assert (cancel["cluster_name"], cancel["all"]) == ("ie-c3d", True)
    [launch] = server.bodies("/launch")
    assert launch["cluster_name"] == "ie-c3d"
    [task] = controller(server).tasks
    assert task.envs["CACHE_VERSION"] == "v2"
    assert task.envs["MODEL_REPO"] == "microsoft/x-gguf"  # what it was launched with stays
    assert [r.instance_type for r in task.resources] == ["c3d-standard-90"]


def test_terminate_replica_and_down(
    server: FakeSkyPilotApiServer, deploy: DeploymentFiles, tmp_path: Path
) -> None:
    terminate = plan_for(TerminateReplica(service=SERVICE, replica_id=4), tmp_path, deploy)
    assert execute(terminate, deploy)[0] == f"replica #4 of {SERVICE} is shutting down"
    down = plan_for(Down(service=SERVICE), tmp_path, deploy)
    assert execute(down, deploy)[0] == f"{SERVICE} is shutting down"

    assert posted(server) == ["/serve/terminate-replica", "/serve/down"]
    [body] = server.bodies("/serve/terminate-replica")
    assert (body["service_name"], body["replica_id"], body["purge"]) == (SERVICE, 4, False)
    [body] = server.bodies("/serve/down")
    assert (body["service_names"], body["all"], body["purge"]) == (SERVICE, False, False)


# --- failures are one readable line, and nothing half-done goes unreported -----------------


def raising(exc: BaseException) -> Callable[[Any], Any]:
    def core(_: Any) -> Any:
        raise exc

    return core


@pytest.mark.parametrize(
    ("route", "exc", "expected"),
    [
        (
            "serve.down",
            exceptions.ClusterNotUpError("No live services."),
            "SkyServe has no live services: no serve controller is running (nothing changed)",
        ),
        (
            "serve.update",
            RuntimeError(
                f"Service {SERVICE!r} is still initializing its controller. Please try again later."
            ),
            f"{SERVICE}'s controller is still starting: try again in a minute",
        ),
        (
            "serve.update",
            RuntimeError("Failed to refresh services status due to network error."),
            "SkyPilot could not refresh service status: the API server's own network check "
            "failed (no internet from the API server host?)",
        ),
        (
            "launch",
            exceptions.ResourcesUnavailableError(
                "Failed to provision all possible launchable resources.\nRelax the task's ..."
            ),
            "ResourcesUnavailableError: Failed to provision all possible launchable resources.",
        ),
    ],
    ids=["no-live-services", "controller-starting", "network-error", "request-failure"],
)
def test_server_errors_are_one_readable_line(
    server: FakeSkyPilotApiServer,
    deploy: DeploymentFiles,
    tmp_path: Path,
    route: str,
    exc: Exception,
    expected: str,
) -> None:
    server.core[route] = raising(exc)
    action: Action = {
        "serve.down": Down(service=SERVICE),
        "serve.update": Scale(service=SERVICE, min_replicas=4, max_replicas=8),
        "launch": LaunchReplica(profile="gcp_c3d", cluster_name="ie-new"),
    }[route]
    assert failure(plan_for(action, tmp_path, deploy), deploy) == expected


def test_a_task_the_server_rejects_is_never_submitted(
    server: FakeSkyPilotApiServer, deploy: DeploymentFiles, tmp_path: Path
) -> None:
    def reject(body: payloads.ValidateBody) -> None:
        raise ValueError("Invalid resources: c3d-standard-16 is not offered in us-west9")

    server.validate = reject
    plan = plan_for(Scale(service=SERVICE, min_replicas=4, max_replicas=8), tmp_path, deploy)
    message = failure(plan, deploy)
    assert message == "ValueError: Invalid resources: c3d-standard-16 is not offered in us-west9"
    assert "/serve/update" not in posted(server)


def test_a_secret_wfdash_cannot_fill_stops_it_before_anything_is_sent(
    server: FakeSkyPilotApiServer, tmp_path: Path
) -> None:
    deploy = DeploymentFiles(ROOT / "skypilot", environ={})
    plan = plan_for(Scale(service=SERVICE, min_replicas=4, max_replicas=8), tmp_path, deploy)
    assert any("HF_TOKEN is secret" in w for w in plan.warnings)
    message = failure(plan, deploy)
    assert message.startswith("envs.HF_TOKEN: secret, and SkyPilot never returns secrets")
    assert message.endswith("(nothing was sent)")
    assert server.seen == []


def test_cancel_aborts_the_request_and_the_audit_log_says_so(
    server: FakeSkyPilotApiServer, deploy: DeploymentFiles, tmp_path: Path
) -> None:
    started = threading.Event()

    def slow_launch(body: payloads.LaunchBody) -> tuple[int, None]:
        server.emit("Provisioning ...")
        started.set()
        server.cancelled(10)
        return 1, None

    server.core["launch"] = slow_launch
    store = EventStore(tmp_path / "events.sqlite3")
    runner = ActionRunner(SkyPilotControlPlane(deploy), store, user="alice")
    updates: list[ActionRecord] = []
    plan = plan_for(LaunchReplica(profile="gcp_c3d", cluster_name="ie-slow"), tmp_path, deploy)
    record = runner.start(plan, updates.append)
    assert started.wait(20)
    runner.cancel(record.id)
    deadline = time.monotonic() + 20
    while runner.active() and time.monotonic() < deadline:
        time.sleep(0.05)

    [done] = runner.recent()
    assert done.state == "cancelled"
    assert done.error is not None and done.error.startswith("SkyPilot cancelled the request")
    assert "Provisioning ..." in done.log
    launch_id = server.calls("/launch")[0].request_id
    [cancel] = server.bodies("/api/cancel")
    assert cancel["request_ids"] == [launch_id]
    assert server.tasks[launch_id].status.value == "CANCELLED"
    phases = [e.data["phase"] for e in store.query(kinds=[EventKind.ACTION])]
    assert phases == ["cancelled", "started"]
    store.close()


def test_server_down_is_reported_and_starts_no_server(
    sky_env: pytest.MonkeyPatch, deploy: DeploymentFiles, tmp_path: Path
) -> None:
    with FakeSkyPilotApiServer() as fake:
        url = fake.url
    sky_env.setenv(ENDPOINT_ENV, url)
    _reset_sky_client()
    plan = plan_for(Down(service=SERVICE), tmp_path, deploy)
    assert failure(plan, deploy).startswith("SkyPilot API server unreachable: ")

    sky_env.delenv(ENDPOINT_ENV)
    sky_env.delenv(DISABLE_LOCAL_ENV)  # wfdash must set it itself
    _reset_sky_client()
    if LOCAL_PORT_BUSY_BEFORE:
        return
    assert failure(plan, deploy).startswith(
        "no SkyPilot API server is running and wfdash does not start one: run `sky api start`"
    )
    assert not _listening(LOCAL_PORT)


def test_progress_stream_handles_partial_writes(deploy: DeploymentFiles) -> None:
    from wfdash.control.skypilot_plane import _ProgressStream

    lines: list[str] = []
    stream = _ProgressStream(lines.append)
    print("Building 10%\rBuilding 50%\r", end="", file=stream)
    stream.write("half a li")
    stream.write("ne\nsecond\n")
    stream.write("unterminated")
    stream.close_lines()
    assert isinstance(stream, io.TextIOBase)
    assert lines == ["Building 10%", "Building 50%", "half a line", "second", "unterminated"]
