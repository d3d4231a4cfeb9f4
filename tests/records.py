"""Realistic SkyServe 0.14.1 ``serve.status`` records, as the controller builds them.

Replica dicts follow ``ReplicaInfo.to_info_dict`` and service dicts
``serve_utils._get_service_status``; statuses are plain strings here, as on the wire.
"""

from __future__ import annotations

from typing import Any

SERVICE_YAML = """\
name: wf-bitnet
service:
  readiness_probe:
    path: /health
    initial_delay_seconds: 900
    headers:
      Authorization: Bearer sk-live-probe-token-123456
  replica_policy:
    min_replicas: 3
    max_replicas: 8
    target_qps_per_replica: 0.5
    upscale_delay_seconds: 60
    downscale_delay_seconds: 300
resources:
  ports: 8080
  cpus: 16+
  use_spot: true
envs:
  BACKEND: bitnet
  MODEL_PATH: /models/model.gguf
  NUM_THREADS: "16"
  HF_TOKEN: hf_abcdefghijklmnopqrstuvwxyz
  CACHE_VERSION: v3
secrets:
  WANDB_API_KEY: 0123456789abcdef
run: python -m server
"""


def ssh_replica(
    replica_id: int, status: str = "READY", host: str = "10.100.1.1", **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "replica_id": replica_id,
        "name": f"wf-bitnet-{replica_id}",
        "status": status,
        "version": 3,
        "replica_info_version": 1,
        "endpoint": f"http://{host}:8080",
        "is_spot": False,
        "launched_at": 1_763_800_000 + replica_id,
        "cloud": "SSH",
        "region": "ssh-hetzner-base",
        "resources_str": "1x(cpus=16, mem=128, 16CPU--128GB, ...)",
        "resources_str_full": "1x(cpus=16, mem=128, 16CPU--128GB, disk=256, ports=['8080'])",
        "infra": "SSH (hetzner-base)",
        "handle": None,
    }
    record.update(extra)
    return record


def cloud_replica(
    replica_id: int,
    cloud: str = "GCP",
    region: str = "us-central1",
    zone: str = "us-central1-a",
    instance: str = "c3d-standard-16",
    status: str = "READY",
    spot: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    spot_tag = "[spot]" if spot else ""
    short = instance if len(instance) <= 15 else instance[:12] + "..."
    record: dict[str, Any] = {
        "replica_id": replica_id,
        "name": f"wf-bitnet-{replica_id}",
        "status": status,
        "version": 3,
        "replica_info_version": 1,
        "endpoint": f"http://34.1.2.{replica_id}:8080",
        "is_spot": spot,
        "launched_at": 1_763_800_500 + replica_id,
        "cloud": cloud,
        "region": region,
        "resources_str": f"1x{spot_tag}(cpus=16, mem=64, {short}, ...)",
        "resources_str_full": (
            f"1x{spot_tag}(cpus=16, mem=64, {instance}, disk=256, ports=['8080'])"
        ),
        "infra": f"{cloud} ({zone})",
        "handle": None,
    }
    record.update(extra)
    return record


def service(replicas: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": "wf-bitnet",
        "controller_job_id": 7,
        "controller_port": 20001,
        "load_balancer_port": 30001,
        "status": "READY",
        "uptime": 1_763_800_900,
        "policy": "Autoscaling from 3 to 8 replicas (target QPS per replica: 0.5)",
        "version": 3,
        "active_versions": [3],
        "requested_resources_str": "[spot](cpus=16+, ports=['8080'])",
        "load_balancing_policy": "least_load",
        "tls_encrypted": False,
        "pool": False,
        "controller_pid": 4242,
        "controller_ip": "10.0.0.2",
        "hash": "a1b2c3",
        "entrypoint": "sky serve up skypilot/service.yaml",
        "user_hash": "abcd1234",
        "yaml_content": SERVICE_YAML,
        "pool_yaml": None,
        "target_num_replicas": 4,
        "replica_info": replicas
        if replicas is not None
        else [
            ssh_replica(1),
            ssh_replica(2, host="10.100.1.2"),
            ssh_replica(3, host="10.100.1.3"),
            cloud_replica(4),
        ],
        "endpoint": "http://34.10.20.30:30001",
    }
    record.update(extra)
    return record
