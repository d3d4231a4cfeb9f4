"""Plans: the command, the redacted YAML diff, costs, restarts, refusals, and no secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import records
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
from wfdash.control.deploy import MASK
from wfdash.control.errors import ActionError
from wfdash.control.plan import DeploymentFiles, Plan, plan_action
from wfdash.control.runner import ActionRunner
from wfdash.pricing import BASE_HOST_PER_HOUR

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = DeploymentFiles(ROOT / "skypilot", environ={})
SERVICE = "wf-bitnet"
# Every secret in records.SERVICE_YAML, plus one in SkyPilot's verbatim copy of the file.
SECRETS = (
    "hf_abcdefghijklmnopqrstuvwxyz",
    "sk-live-probe-token-123456",
    "0123456789abcdef",
    "hf_UserSpecifiedYamlSecret0001",
)
NOW = 1_763_900_000.0


def with_user_yaml(text: str) -> str:
    """A yaml_content as SkyPilot writes it: the user's file kept under _user_specified_yaml."""
    tree = yaml.safe_load(text)
    tree["_user_specified_yaml"] = f"# my file\nenvs:\n  HF_TOKEN: {SECRETS[3]}\n"
    return yaml.safe_dump(tree, sort_keys=False)


def snap(
    *services: dict[str, Any],
    clusters: tuple[dict[str, Any], ...] = (),
    status_ok: bool = True,
) -> Snapshot:
    mapped = map_services(list(services) or [records.service()])
    return Snapshot(
        taken_at=NOW,
        source="test",
        services=tuple(ServiceView(s, ()) for s in mapped),
        status_ok=status_ok,
        status_error=None if status_ok else "SkyPilot API server unreachable: refused",
        status_at=NOW - 42,
        clusters=tuple(ClusterView(cluster=c) for c in map_clusters(list(clusters))),
    )


def cluster(name: str = "ie-c3d", **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": name,
        "status": "UP",
        "cloud": "GCP",
        "region": "us-central1",
        "resources_str": "1x(cpus=90, mem=360, c3d-standard-90, ...)",
        "last_creation_yaml": yaml.safe_dump(
            {
                "name": name,
                "envs": {
                    "CACHE_VERSION": "v1",
                    "MODEL_REPO": "microsoft/BitNet-b1.58-2B-4T-gguf",
                    "HF_TOKEN": SECRETS[0],
                },
            }
        ),
    }
    record.update(fields)
    return record


def plan(action: Action, snapshot: Snapshot | None = None, **kwargs: Any) -> Plan:
    return plan_action(action, snapshot or snap(), DEPLOY, **kwargs)


def refused(action: Action, snapshot: Snapshot | None = None) -> str:
    with pytest.raises(ActionError) as info:
        plan(action, snapshot)
    assert "\n" not in str(info.value)
    return str(info.value)


BASE = 3 * BASE_HOST_PER_HOUR  # the default record: 3 Hetzner replicas, 1 GCP spot
FLEET = BASE + 0.110


# --- scale -------------------------------------------------------------------------------


def test_scale_up_plan() -> None:
    scale = plan(Scale(service=SERVICE, min_replicas=5, max_replicas=8), pool_hosts=3)
    assert scale.summary == f"Scale {SERVICE}: min 3→5 (max 8, target 0.5 QPS/replica)"
    assert scale.command.startswith(
        f"sky serve update {SERVICE} skypilot/service.yaml --mode rolling --env BACKEND=bitnet"
    )
    assert "--env HF_TOKEN " in scale.command  # a secret: the CLI takes it from the env
    assert "--env CACHE_VERSION=v3" in scale.command
    assert scale.command.endswith(
        "# with the service: section of the diff (serve update has no flags for it)"
    )
    changed = [
        line
        for line in scale.yaml_diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == ["-    min_replicas: 3", "+    min_replicas: 5"]
    assert scale.yaml_diff.startswith(f"--- deployed {SERVICE} v3\n+++ after\n")
    # 4 replicas now (target), 5 after: the 3 pool hosts are taken, one more GCP spot.
    assert scale.cost_now_per_hour == pytest.approx(FLEET)
    assert scale.cost_after_per_hour == pytest.approx(FLEET + 0.110)
    assert scale.restarts == (
        "nothing restarts: replicas are reused; 1 new replica(s) launch (0 base, 1 burst spot)"
    )
    assert not scale.danger and scale.confirm_phrase is None
    assert any(
        w.startswith("cost estimate at the current load (4→5 replicas") for w in scale.warnings
    )
    task = scale.task
    assert task is not None
    assert task["service"]["replica_policy"]["min_replicas"] == 5
    assert task["service"]["readiness_probe"]["headers"]["Authorization"] == MASK
    assert task["envs"]["HF_TOKEN"] == MASK and task["secrets"]["WANDB_API_KEY"] == MASK
    assert task["setup"] == yaml.safe_load((ROOT / "skypilot/service.yaml").read_text())["setup"]


def test_scale_down_and_target_change() -> None:
    down = plan(
        Scale(service=SERVICE, min_replicas=3, max_replicas=3, target_qps_per_replica=1.5),
        pool_hosts=3,
    )
    assert down.summary == f"Scale {SERVICE}: max 8→3, target 0.5→1.5 QPS/replica (min 3)"
    assert (
        down.restarts
        == "nothing restarts: replicas are reused; 1 replica(s) shut down (burst first)"
    )
    assert down.cost_after_per_hour == pytest.approx(BASE)


def test_scale_to_zero_is_dangerous() -> None:
    zero = plan(Scale(service=SERVICE, min_replicas=0, max_replicas=0))
    assert zero.danger and zero.confirm_phrase == SERVICE
    assert zero.restarts.endswith("the service stops answering")


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            Scale(service=SERVICE, min_replicas=3, max_replicas=8),
            f"{SERVICE} already has min 3, max 8, target 0.5 QPS/replica: nothing to change",
        ),
        (
            Scale(service="wf-other", min_replicas=3, max_replicas=8),
            f"no service 'wf-other' in the last status read (services: {SERVICE})",
        ),
    ],
)
def test_scale_refusals(action: Action, message: str) -> None:
    assert refused(action) == message


def test_autoscaling_needs_a_target_qps() -> None:
    fixed = records.service(
        yaml_content="name: wf\nservice:\n  replicas: 2\nenvs:\n  BACKEND: bitnet\n",
        policy="Fixed 2 replicas",
    )
    message = refused(Scale(service=SERVICE, min_replicas=2, max_replicas=4), snap(fixed))
    assert (
        message
        == f"autoscaling from 2 to 4 needs a target QPS per replica ({SERVICE}'s policy has none)"
    )
    ok = plan(
        Scale(service=SERVICE, min_replicas=2, max_replicas=4, target_qps_per_replica=0.2),
        snap(fixed),
    )
    assert ok.task is not None and "replicas" not in ok.task["service"]
    assert ok.task["service"]["replica_policy"] == {
        "min_replicas": 2,
        "max_replicas": 4,
        "target_qps_per_replica": 0.2,
    }


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("CONTROLLER_INIT", f"{SERVICE}'s controller is still starting"),
        ("CONTROLLER_FAILED", f"{SERVICE} has a failed controller"),
        ("SHUTTING_DOWN", f"{SERVICE} is shutting down"),
    ],
)
def test_controller_states_refuse_updates(status: str, message: str) -> None:
    action = SwitchBackend(service=SERVICE, backend="vllm")
    assert refused(action, snap(records.service(status=status))).startswith(message)


def test_unknown_deployed_yaml_falls_back_to_the_repo_file_and_says_so() -> None:
    scale = plan(
        Scale(service=SERVICE, min_replicas=4, max_replicas=8),
        snap(records.service(yaml_content=None)),
    )
    assert scale.yaml_diff.startswith("--- skypilot/service.yaml (deployed YAML unknown)\n")
    assert any("deployed task YAML is unknown" in w for w in scale.warnings)
    assert scale.task is not None
    policy = scale.task["service"]["replica_policy"]
    # The mapped policy (from SkyServe's text) is what runs; the repo's fills the rest.
    assert (policy["min_replicas"], policy["max_replicas"], policy["target_qps_per_replica"]) == (
        4,
        8,
        0.5,
    )
    assert policy["base_ondemand_fallback_replicas"] == 3
    assert scale.task["envs"]["BACKEND"] == "bitnet"


def test_stale_status_is_warned_about() -> None:
    stale = plan(Down(service=SERVICE), snap(status_ok=False))
    assert stale.warnings[0] == (
        "the last status read failed (SkyPilot API server unreachable: refused): this plan "
        "uses status 42 s old"
    )


# --- backend, cache ------------------------------------------------------------------------


def test_switch_backend_plan() -> None:
    switch = plan(SwitchBackend(service=SERVICE, backend="vllm", mode="blue_green"))
    assert switch.summary == f"Switch {SERVICE} backend: bitnet→vllm (blue-green)"
    assert "--mode blue_green --env BACKEND=vllm" in switch.command
    assert "-  BACKEND: bitnet\n+  BACKEND: vllm\n" in switch.yaml_diff
    assert switch.restarts.startswith("every replica is replaced, blue-green")
    assert any("CUDA build" in w for w in switch.warnings)
    assert any(w.startswith("while it rolls out, up to 4 new replica(s)") for w in switch.warnings)
    assert switch.cost_after_per_hour == switch.cost_now_per_hour
    assert (
        refused(SwitchBackend(service=SERVICE, backend="bitnet"))
        == f"{SERVICE} already runs bitnet"
    )


def test_rebuild_service_cache_plan() -> None:
    rebuild = plan(RebuildCache(target="service", name=SERVICE, cache_version="v4"))
    assert rebuild.summary == f"Rebuild {SERVICE}'s build cache: CACHE_VERSION v3→v4"
    assert "-  CACHE_VERSION: v3\n+  CACHE_VERSION: v4\n" in rebuild.yaml_diff
    assert "--env CACHE_VERSION=v4" in rebuild.command
    assert "builds BitNet.cpp from scratch" in rebuild.restarts
    same = RebuildCache(target="service", name=SERVICE, cache_version="v3")
    assert refused(same) == f"{SERVICE}'s CACHE_VERSION is already v3"


def test_rebuild_cluster_cache_plan() -> None:
    rebuild = plan(
        RebuildCache(target="cluster", name="ie-c3d", cache_version="v2"),
        snap(records.service(), clusters=(cluster(),)),
    )
    assert rebuild.summary == "Rebuild ie-c3d's build cache: CACHE_VERSION v1→v2 (c3d-standard-90)"
    assert rebuild.command == (
        "sky cancel ie-c3d --all -y && sky launch skypilot/inference/gcp_c3d.yaml -c ie-c3d "
        "--env MODEL_REPO=microsoft/BitNet-b1.58-2B-4T-gguf --env CACHE_VERSION=v2 "
        "--env HF_TOKEN -y"
    )
    assert "-  CACHE_VERSION: v1\n+  CACHE_VERSION: v2\n" in rebuild.yaml_diff
    assert "server stops" in rebuild.restarts
    assert any("HF_TOKEN is secret" in w for w in rebuild.warnings)
    assert rebuild.task is not None and rebuild.task["envs"]["HF_TOKEN"] == MASK


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (None, "no cluster 'ie-c3d' in the last status read"),
        (cluster(status="INIT"), "cluster ie-c3d is INIT: wait until it is UP"),
        (
            cluster(cloud="AWS", resources_str="1x(cpus=8, mem=32, m7i.2xlarge, ...)"),
            "cannot tell which skypilot/inference YAML launched ie-c3d (m7i.2xlarge)",
        ),
    ],
)
def test_rebuild_cluster_refusals(record: dict[str, Any] | None, message: str) -> None:
    snapshot = snap(records.service(), clusters=(record,) if record else ())
    action = RebuildCache(target="cluster", name="ie-c3d", cache_version="v2")
    assert refused(action, snapshot).startswith(message)


# --- launch, terminate, down ---------------------------------------------------------------


def test_launch_plan() -> None:
    launch = plan(LaunchReplica(profile="runpod_cpu", cluster_name="ie-dev"))
    assert launch.summary.startswith("Launch ie-dev: RunPod 2x A40 pod (18 vCPUs, on-demand")
    assert launch.command == "sky launch skypilot/inference/runpod_cpu.yaml -c ie-dev -y"
    assert launch.cost_after_per_hour == pytest.approx(FLEET + 0.80)
    assert launch.yaml_diff.startswith("--- (no cluster)\n+++ skypilot/inference/runpod_cpu.yaml\n")
    assert "+name: ie-dev\n" in launch.yaml_diff and "+  accelerators: A40:2\n" in launch.yaml_diff
    taken = snap(records.service(), clusters=(cluster("ie-dev"),))
    message = refused(LaunchReplica(profile="gcp_c3d", cluster_name="ie-dev"), taken)
    assert message.startswith("cluster ie-dev exists (UP)")


def test_terminate_plan() -> None:
    terminate = plan(TerminateReplica(service=SERVICE, replica_id=4))
    assert terminate.summary == (
        f"Terminate replica #4 of {SERVICE} (burst, GCP us-central1 spot, READY)"
    )
    assert terminate.command == f"sky serve down {SERVICE} --replica-id 4 -y"
    assert terminate.danger and terminate.confirm_phrase == f"{SERVICE}-4"
    assert terminate.yaml_diff == ""
    assert "launches a replacement (a new id) to keep 4 replicas" in terminate.restarts
    assert (
        refused(TerminateReplica(service=SERVICE, replica_id=9)) == f"{SERVICE} has no replica #9"
    )
    preempted = records.service(
        [records.ssh_replica(1), records.cloud_replica(2, status="PREEMPTED")]
    )
    message = refused(TerminateReplica(service=SERVICE, replica_id=2), snap(preempted))
    assert message == f"replica #2 of {SERVICE} is not running (PREEMPTED)"
    last = plan(TerminateReplica(service=SERVICE, replica_id=1), snap(preempted))
    assert any(w.startswith("it is the only READY replica") for w in last.warnings)


def test_down_plan_keeps_the_hetzner_hosts_paid() -> None:
    down = plan(Down(service=SERVICE), pool_hosts=3)
    assert down.summary == f"Tear down {SERVICE} (4 replica(s), endpoint http://34.10.20.30:30001)"
    assert down.command == f"sky serve down {SERVICE} -y"
    assert down.danger and down.confirm_phrase == SERVICE
    assert down.cost_after_per_hour == pytest.approx(BASE)
    assert "its Hetzner hosts stay rented (a fixed monthly price)" in down.warnings
    assert any(w.startswith("to bring it back: sky serve up") for w in down.warnings)


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        Scale(service=SERVICE, min_replicas=4, max_replicas=8),
        SwitchBackend(service=SERVICE, backend="vllm"),
        RebuildCache(target="service", name=SERVICE, cache_version="v9"),
        RebuildCache(target="cluster", name="ie-c3d", cache_version="v9"),
        LaunchReplica(profile="gcp_c3d", cluster_name="ie-new"),
        TerminateReplica(service=SERVICE, replica_id=4),
        Down(service=SERVICE),
    ],
    ids=lambda a: a.kind,
)
def test_no_secret_reaches_the_plan_or_the_audit_log(action: Action, tmp_path: Path) -> None:
    service = records.service(yaml_content=with_user_yaml(records.SERVICE_YAML))
    snapshot = snap(service, clusters=(cluster(),))
    assert SECRETS[0] in json.dumps(service)  # the raw record has them...
    result = plan(action, snapshot)
    shown = json.dumps(result.audit()) + repr(result) + result.summary
    for secret in SECRETS:
        assert secret not in shown

    class Plane:
        description = "test"

        def execute(self, *_: Any) -> str:
            return f"done, token={SECRETS[0]}"

    store = EventStore(tmp_path / "events.sqlite3")
    runner = ActionRunner(Plane(), store, user="alice")
    runner.start(result, lambda _: None)
    deadline = time.monotonic() + 5
    while runner.active() and time.monotonic() < deadline:
        time.sleep(0.01)
    stored = json.dumps([e.model_dump() for e in store.query(kinds=[EventKind.ACTION])])
    assert '"phase": "succeeded"' in stored
    for secret in SECRETS:
        assert secret not in stored
    store.close()


def test_secrets_in_the_repo_file_fill_masked_values(tmp_path: Path) -> None:
    (tmp_path / "inference").mkdir()
    tree = yaml.safe_load((ROOT / "skypilot/service.yaml").read_text())
    tree["envs"]["HF_TOKEN"] = "hf_fromTheRepoFile00001"
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(tree))
    deploy = DeploymentFiles(tmp_path, environ={"WANDB_API_KEY": "x"})
    result = plan_action(Scale(service=SERVICE, min_replicas=4, max_replicas=8), snap(), deploy)
    assert result.task is not None and result.task["envs"]["HF_TOKEN"] == "hf_fromTheRepoFile00001"
    assert "hf_fromTheRepoFile00001" not in result.yaml_diff + result.command
    warned = [w.split(" is secret")[0] for w in result.warnings if " is secret" in w]
    # HF_TOKEN comes from the file, WANDB_API_KEY from the environment: only the probe header
    # (nowhere to take it from) is left.
    assert warned == ["service.readiness_probe.headers.Authorization"]


def test_deployment_files(tmp_path: Path) -> None:
    assert DeploymentFiles.default().service_yaml == ROOT / "skypilot" / "service.yaml"
    missing = DeploymentFiles(tmp_path / "nowhere", environ={})
    assert plan_action(Down(service=SERVICE), snap(), missing).danger  # reads no file
    scale = Scale(service=SERVICE, min_replicas=4, max_replicas=8)
    with pytest.raises(ActionError, match=r"^cannot read .*nowhere/service.yaml: No such file"):
        plan_action(scale, snap(), missing)
    (tmp_path / "service.yaml").write_text("service:\n  replicas: [\n")
    with pytest.raises(ActionError, match=r"service.yaml is not valid YAML \(line \d+\)$"):
        plan_action(scale, snap(), DeploymentFiles(tmp_path, environ={}))
