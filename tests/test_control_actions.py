"""Action validation: SkyPilot's own rules, and one readable line when input is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from wfdash.control.actions import (
    Down,
    LaunchReplica,
    RebuildCache,
    Scale,
    SwitchBackend,
    TerminateReplica,
    next_cache_version,
    parse_action,
)
from wfdash.control.errors import ActionError


@pytest.mark.parametrize(
    ("data", "expected", "subject", "scope"),
    [
        (
            {"kind": "scale", "service": "wf-bitnet", "min_replicas": 3, "max_replicas": 8},
            Scale(service="wf-bitnet", min_replicas=3, max_replicas=8),
            "wf-bitnet",
            "service",
        ),
        (
            {"kind": "switch_backend", "service": "wf-bitnet", "backend": "vllm"},
            SwitchBackend(service="wf-bitnet", backend="vllm", mode="rolling"),
            "wf-bitnet",
            "service",
        ),
        (
            {"kind": "launch", "profile": "gcp_h3", "cluster_name": "ie-h3"},
            LaunchReplica(profile="gcp_h3", cluster_name="ie-h3"),
            "ie-h3",
            "cluster",
        ),
        (
            {"kind": "rebuild_cache", "target": "cluster", "name": "ie-c3d", "cache_version": "v2"},
            RebuildCache(target="cluster", name="ie-c3d", cache_version="v2"),
            "ie-c3d",
            "cluster",
        ),
        (
            {"kind": "rebuild_cache", "target": "service", "name": "wf", "cache_version": "v2"},
            RebuildCache(target="service", name="wf", cache_version="v2"),
            "wf",
            "service",
        ),
        (
            {"kind": "terminate_replica", "service": "wf", "replica_id": 4},
            TerminateReplica(service="wf", replica_id=4),
            "wf",
            "service",
        ),
        ({"kind": "down", "service": "wf"}, Down(service="wf"), "wf", "service"),
    ],
    ids=lambda v: v["kind"] if isinstance(v, dict) else None,
)
def test_valid_actions_parse(data: dict[str, Any], expected: Any, subject: str, scope: str) -> None:
    action = parse_action(data)
    assert action == expected
    assert (action.subject, action.scope) == (subject, scope)
    assert parse_action(action.model_dump()) == action  # round-trips (the audit log)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"kind": "scale", "service": "wf", "min_replicas": 5, "max_replicas": 2},
            "max replicas (2) must be ≥ min replicas (5)",
        ),
        (
            {"kind": "scale", "service": "wf", "min_replicas": -1, "max_replicas": 2},
            "min replicas must be ≥ 0 (got -1)",
        ),
        (
            {
                "kind": "scale",
                "service": "wf",
                "min_replicas": 1,
                "max_replicas": 2,
                "target_qps_per_replica": 0,
            },
            "target QPS per replica must be > 0 (got 0)",
        ),
        (
            {"kind": "scale", "service": "wf", "min_replicas": "many", "max_replicas": 2},
            "min replicas: Input should be a valid integer, unable to parse string as an integer",
        ),
        ({"kind": "scale", "service": "wf", "min_replicas": 1}, "max replicas is required"),
        (
            {"kind": "resize", "service": "wf"},
            "unknown action kind (expected one of: scale, switch_backend, launch, "
            "rebuild_cache, terminate_replica, down)",
        ),
        ({"service": "wf"}, "the action has no 'kind'"),
        (
            {"kind": "switch_backend", "service": "wf", "backend": "llamacpp"},
            "backend: Input should be 'bitnet' or 'vllm'",
        ),
        (
            {"kind": "launch", "profile": "gcp_c3d", "cluster_name": "1234"},
            "cluster name '1234' is not a valid SkyPilot name (a letter first, then letters, "
            "digits, '-', '_' or '.', ending with a letter or digit)",
        ),
        (
            {"kind": "launch", "profile": "gcp_c3d", "cluster_name": "sky-serve-controller-1"},
            "cluster name 'sky-serve-controller-1' is reserved for SkyPilot",
        ),
        (
            {"kind": "rebuild_cache", "target": "cluster", "name": "ie", "cache_version": "../x"},
            "CACHE_VERSION '../x' must be 1-63 letters, digits, '.', '_' or '-' (it names a "
            "directory)",
        ),
        (
            {"kind": "terminate_replica", "service": "wf", "replica_id": 0},
            "replica ids start at 1 (got 0)",
        ),
        ({"kind": "down", "service": "wf bitnet"}, "service name 'wf bitnet' is not a valid"),
        ({"kind": "down", "service": "wf", "all": True}, "all: Extra inputs are not permitted"),
    ],
)
def test_invalid_input_is_one_readable_line(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ActionError) as info:
        parse_action(data)
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_scale_keeps_the_deployed_target_when_none_is_given() -> None:
    # min != max without a target is valid here: the plan checks the deployed policy.
    scale = Scale(service="wf", min_replicas=1, max_replicas=4)
    assert scale.target_qps_per_replica is None


def test_actions_are_frozen() -> None:
    scale = Scale(service="wf", min_replicas=1, max_replicas=4)
    with pytest.raises(ValidationError):
        scale.min_replicas = 9  # type: ignore[misc]
    assert hash(scale) == hash(Scale(service="wf", min_replicas=1, max_replicas=4))


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, "v1"),
        ("", "v1"),
        ("***", "v1"),  # a masked value: unknown
        ("v3", "v4"),
        ("v9", "v10"),
        ("v09", "v10"),
        ("v2_force_rebuild", "v3_force_rebuild"),
        ("2025-01", "2025-02"),
        ("latest", "latest-2"),
    ],
)
def test_next_cache_version(current: str | None, expected: str) -> None:
    assert next_cache_version(current) == expected
    parse_action(
        {"kind": "rebuild_cache", "target": "service", "name": "wf", "cache_version": expected}
    )
