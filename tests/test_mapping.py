"""Status mapping: SkyServe 0.14 records (strings or enums, keys missing) → the model."""

from __future__ import annotations

import copy
import json

import pytest

from tests import records
from wfdash.collect.kinds import Health, Layer, ReplicaStatus, ServiceStatus
from wfdash.collect.mapping import (
    classify_placement,
    instance_type_from_resources,
    map_service,
    map_services,
    parse_policy_text,
)
from wfdash.collect.redact import MASK


def test_ssh_pool_replica_is_base_layer_with_pool_as_provider() -> None:
    svc = map_service(records.service())
    assert svc is not None
    base = svc.replicas[0]
    assert (base.layer, base.provider, base.pool) == (Layer.BASE, "hetzner-base", "hetzner-base")
    assert base.cloud == "SSH"
    assert base.infra == "SSH (hetzner-base)"
    assert base.instance_type == "16CPU--128GB"
    assert base.is_spot is False


def test_cloud_spot_replica_is_burst_with_full_instance_type() -> None:
    rec = records.cloud_replica(
        9, cloud="AWS", region="us-east-1", zone="us-east-1a", instance="r7a.4xlarge"
    )
    long_name = records.cloud_replica(10, instance="c3d-standard-180-lssd")
    svc = map_service(records.service([rec, long_name]))
    assert svc is not None
    aws, gcp = svc.replicas
    assert (aws.layer, aws.provider, aws.is_spot) == (Layer.BURST, "aws", True)
    assert aws.instance_type == "r7a.4xlarge"
    # resources_str truncates long names to 15 chars; the full string has the real one.
    assert gcp.instance_type == "c3d-standard-180-lssd"


def test_statuses_as_sdk_enums_map_like_strings() -> None:
    from sky.serve import serve_state

    rec = records.service()
    rec["status"] = serve_state.ServiceStatus.READY
    for replica in rec["replica_info"]:
        replica["status"] = serve_state.ReplicaStatus(replica["status"])
    rec["replica_info"][3]["status"] = serve_state.ReplicaStatus.PREEMPTED
    svc = map_service(rec)
    assert svc is not None
    assert svc.status is ServiceStatus.READY
    assert svc.replicas[3].status is ReplicaStatus.PREEMPTED


def test_records_round_tripped_through_skypilot_encoders() -> None:
    """The same payload the real API server sends, decoded by the real client."""
    from sky.serve import serve_state
    from sky.server.requests.serializers import decoders, encoders

    rec = records.service()
    rec["status"] = serve_state.ServiceStatus.READY
    for replica in rec["replica_info"]:
        replica["status"] = serve_state.ReplicaStatus(replica["status"])
    wire = json.loads(json.dumps(encoders.encode_serve_status([rec])))
    decoded = decoders.decode_serve_status(wire)
    [svc] = map_services(decoded)
    assert [r.status for r in svc.replicas] == [ReplicaStatus.READY] * 4
    assert svc.health is Health.HEALTHY


def test_missing_optional_keys_degrade_to_unknown() -> None:
    minimal = {"name": "bare", "replica_info": [{"replica_id": 1}, {"replica_id": "x"}, "junk"]}
    svc = map_service(minimal)
    assert svc is not None
    assert svc.status is ServiceStatus.UNKNOWN
    assert svc.version is None and svc.endpoint is None and svc.target_num_replicas is None
    [replica] = svc.replicas
    assert replica.status is ReplicaStatus.UNKNOWN
    assert replica.layer is Layer.UNPLACED
    assert replica.endpoint is None and replica.instance_type is None


def test_pending_replica_without_cluster_is_unplaced() -> None:
    pending = {
        k: v
        for k, v in records.cloud_replica(5, status="PENDING").items()
        if k not in ("cloud", "region", "infra", "resources_str", "resources_str_full")
    }
    pending["endpoint"] = None
    provisioning = records.cloud_replica(
        6, status="PROVISIONING", status_detail="waiting for spot capacity"
    )
    svc = map_service(records.service([records.ssh_replica(1), pending, provisioning]))
    assert svc is not None
    assert svc.replicas[1].layer is Layer.UNPLACED
    assert svc.replicas[2].status_detail == "waiting for spot capacity"


def test_garbage_records_are_skipped_not_raised() -> None:
    assert map_services(None) == []
    assert map_services("nope") == []
    assert map_services([None, 3, {"no": "name"}, {"name": "", "status": 5}]) == []
    svc = map_service(
        {
            "name": "odd",
            "status": 12,
            "version": "v3",
            "replica_info": {"a": 1},
            "target_num_replicas": "many",
            "uptime": "yesterday",
            "yaml_content": "{{{:",
        }
    )
    assert svc is not None
    assert (
        svc.version is None and svc.replicas == () and svc.envs == {} and svc.yaml_redacted is None
    )


def test_yaml_content_secrets_are_masked_and_policy_is_exact() -> None:
    svc = map_service(records.service())
    assert svc is not None
    assert svc.envs["BACKEND"] == "bitnet"
    assert svc.envs["HF_TOKEN"] == MASK
    assert svc.backend == "bitnet"
    assert svc.yaml_redacted is not None
    for secret in ("hf_abcdefghijklmnopqrstuvwxyz", "0123456789abcdef", "sk-live-probe-token"):
        assert secret not in svc.yaml_redacted
        assert secret not in svc.model_dump_json()
    assert svc.policy.min_replicas == 3 and svc.policy.max_replicas == 8
    assert svc.policy.target_qps_per_replica == 0.5
    assert svc.policy.upscale_delay_seconds == 60
    assert svc.uptime_since == 1_763_800_900


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fixed 3 replicas", (3, 3, None)),
        ("Fixed 1 replica", (1, 1, None)),
        ("Autoscaling from 1 to 3 replicas (target QPS per replica: 2.5)", (1, 3, 2.5)),
        (
            "Autoscaling from 0 to 10 replicas with 2 overprovisioned replicas "
            "(target QPS per replica: 0.4)",
            (0, 10, 0.4),
        ),
        ("something new", (None, None, None)),
        ("", (None, None, None)),
    ],
)
def test_policy_text(text: str, expected: tuple[int | None, int | None, float | None]) -> None:
    policy = parse_policy_text(text)
    assert (policy.min_replicas, policy.max_replicas, policy.target_qps_per_replica) == expected


def test_policy_falls_back_to_text_without_yaml() -> None:
    svc = map_service(records.service(yaml_content=None))
    assert svc is not None
    assert (svc.policy.min_replicas, svc.policy.max_replicas) == (3, 8)
    assert svc.envs == {}


@pytest.mark.parametrize(
    ("cloud", "region", "infra", "expected"),
    [
        (
            "SSH",
            "ssh-hetzner-base",
            "SSH (hetzner-base)",
            (Layer.BASE, "hetzner-base", "hetzner-base"),
        ),
        (None, None, "SSH (other-pool)", (Layer.BASE, "other-pool", "other-pool")),
        ("RunPod", "US", "RunPod (US)", (Layer.BURST, "runpod", None)),
        ("Kubernetes", "ctx", "Kubernetes (ctx)", (Layer.BURST, "other", None)),
        ("AWS", "us-east-1", "AWS (us-east-1a)", (Layer.BURST, "aws", None)),
        (None, None, None, (Layer.UNPLACED, "other", None)),
    ],
)
def test_classify_placement(
    cloud: str | None,
    region: str | None,
    infra: str | None,
    expected: tuple[Layer, str, str | None],
) -> None:
    assert classify_placement(cloud, region, infra) == expected


def test_instance_type_parsing() -> None:
    assert (
        instance_type_from_resources("1x[spot](cpus=16, mem=64, c3d-standard-16, ...)")
        == "c3d-standard-16"
    )
    assert (
        instance_type_from_resources("1x(gpus=L4:1, cpus=8, mem=32, g6.2xlarge, ...)")
        == "g6.2xlarge"
    )
    assert instance_type_from_resources("1x(cpus=4, mem=16, ...)") is None  # Kubernetes
    assert instance_type_from_resources("-") is None
    assert instance_type_from_resources(None) is None


class TestHealth:
    def _health(
        self, statuses: list[str], target: int | None = 4, status: str = "READY"
    ) -> tuple[Health, str]:
        reps = [records.cloud_replica(i + 1, status=s) for i, s in enumerate(statuses)]
        svc = map_service(records.service(reps, target_num_replicas=target, status=status))
        assert svc is not None
        return svc.health, svc.health_reason

    def test_all_ready_is_healthy(self) -> None:
        assert self._health(["READY"] * 4)[0] is Health.HEALTHY

    def test_fewer_ready_than_target_is_degraded(self) -> None:
        health, reason = self._health(["READY", "READY", "PROVISIONING", "READY"])
        assert health is Health.DEGRADED and "3/4 ready" in reason

    def test_preempted_replica_is_degraded_even_when_service_says_ready(self) -> None:
        health, reason = self._health(["READY"] * 4 + ["PREEMPTED"])
        assert health is Health.DEGRADED and "preempted" in reason

    def test_no_ready_replica_is_down_not_ready(self) -> None:
        # 0.14.1 would say NO_REPLICA or even READY here; the replicas say down.
        assert self._health(["FAILED_PROBING", "NOT_READY"], status="READY")[0] is Health.DOWN

    def test_launching_only_is_starting(self) -> None:
        assert self._health(["PROVISIONING", "STARTING"], status="NO_REPLICA")[0] is Health.STARTING

    def test_scaled_to_zero_is_healthy(self) -> None:
        assert self._health([], target=0, status="NO_REPLICA")[0] is Health.HEALTHY

    def test_controller_failure_wins(self) -> None:
        assert self._health(["READY"] * 4, status="CONTROLLER_FAILED")[0] is Health.FAILED


def test_mapping_does_not_mutate_input() -> None:
    rec = records.service()
    before = copy.deepcopy(rec)
    map_service(rec)
    assert rec == before


def test_unchanged_task_yaml_is_read_once_and_a_changed_one_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Status reads repeat the same YAML: it is parsed and redacted once, with the same
    result as a fresh read; an updated YAML is read again."""
    from wfdash.collect import mapping

    calls: list[str] = []
    real = mapping.redact_yaml

    def counting(text: str) -> object:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(mapping, "redact_yaml", counting)
    mapping._redact_task.cache_clear()
    first = map_service(records.service())
    again = map_service(json.loads(json.dumps(records.service())))  # equal, not the same str
    assert first == again and len(calls) == 1
    updated = records.service()
    updated["yaml_content"] = updated["yaml_content"].replace("min_replicas: 3", "min_replicas: 2")
    changed = map_service(updated)
    assert len(calls) == 2
    assert changed is not None and changed.policy.min_replicas == 2
    mapping._redact_task.cache_clear()
    assert map_service(records.service()) == first
