"""The actions an operator can take, validated with SkyPilot's own rules.

Each action is a frozen pydantic model; :data:`Action` is their union, discriminated by
``kind``. Validation here needs nothing but the action itself (names, numbers, SkyServe's
``max ≥ min`` rule); what depends on the fleet (the service exists, the backend differs)
is checked when the action is planned (:mod:`wfdash.control.plan`).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from wfdash.control.errors import ActionError

__all__ = [
    "Action",
    "ActionError",
    "Down",
    "LaunchReplica",
    "RebuildCache",
    "Scale",
    "SwitchBackend",
    "TerminateReplica",
    "next_cache_version",
    "parse_action",
]

# sky/skylet/constants.py CLUSTER_NAME_VALID_REGEX: clusters and (serve/server/impl.py)
# service names alike.
_NAME = re.compile(r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?")
# CACHE_VERSION is a directory name in the setup scripts (`$CACHE_ROOT/$CACHE_VERSION/`,
# `find ... ! -name "$CACHE_VERSION"`): no slashes, spaces or globs.
_CACHE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")

Scope = Literal["service", "cluster"]


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid SkyPilot name (a letter first, then letters, "
            "digits, '-', '_' or '.', ending with a letter or digit)"
        )
    return value


class _ActionBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    @abstractmethod
    def subject(self) -> str:
        """The service or cluster the action changes (one mutating action each at a time)."""

    @property
    def scope(self) -> Scope:
        return "service"


class Scale(_ActionBase):
    """Change the replica policy (``sky serve update`` with a new ``replica_policy``).

    ``target_qps_per_replica`` None keeps the deployed target.
    """

    kind: Literal["scale"] = "scale"
    service: str
    min_replicas: int
    max_replicas: int
    target_qps_per_replica: float | None = None

    @model_validator(mode="after")
    def _skyserve_rules(self) -> Scale:
        _check_name(self.service, "service name")
        if self.min_replicas < 0:
            raise ValueError(f"min replicas must be ≥ 0 (got {self.min_replicas})")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max replicas ({self.max_replicas}) must be ≥ min replicas ({self.min_replicas})"
            )
        target = self.target_qps_per_replica
        if target is not None and not target > 0:
            raise ValueError(f"target QPS per replica must be > 0 (got {target:g})")
        return self

    @property
    def subject(self) -> str:
        return self.service


class SwitchBackend(_ActionBase):
    """Serve with BitNet.cpp's llama-server or vLLM (``BACKEND`` env: new replicas)."""

    kind: Literal["switch_backend"] = "switch_backend"
    service: str
    backend: Literal["bitnet", "vllm"]
    mode: Literal["rolling", "blue_green"] = "rolling"

    @model_validator(mode="after")
    def _names(self) -> SwitchBackend:
        _check_name(self.service, "service name")
        return self

    @property
    def subject(self) -> str:
        return self.service


class LaunchReplica(_ActionBase):
    """A standalone inference cluster from ``skypilot/inference/<profile>.yaml``."""

    kind: Literal["launch"] = "launch"
    profile: Literal["gcp_c3d", "gcp_h3", "runpod_cpu"]
    cluster_name: str

    @model_validator(mode="after")
    def _names(self) -> LaunchReplica:
        _check_name(self.cluster_name, "cluster name")
        if self.cluster_name.startswith(("sky-serve-controller", "sky-jobs-controller")):
            raise ValueError(f"cluster name {self.cluster_name!r} is reserved for SkyPilot")
        return self

    @property
    def subject(self) -> str:
        return self.cluster_name

    @property
    def scope(self) -> Scope:
        return "cluster"


class RebuildCache(_ActionBase):
    """Bump ``CACHE_VERSION`` so setup builds BitNet.cpp again (a service or a cluster)."""

    kind: Literal["rebuild_cache"] = "rebuild_cache"
    target: Literal["service", "cluster"]
    name: str
    cache_version: str

    @model_validator(mode="after")
    def _names(self) -> RebuildCache:
        _check_name(self.name, f"{self.target} name")
        if not _CACHE_VERSION.fullmatch(self.cache_version):
            raise ValueError(
                f"CACHE_VERSION {self.cache_version!r} must be 1-63 letters, digits, '.', '_' "
                "or '-' (it names a directory)"
            )
        return self

    @property
    def subject(self) -> str:
        return self.name

    @property
    def scope(self) -> Scope:
        return self.target


class TerminateReplica(_ActionBase):
    """Tear down one replica (``sky serve down NAME --replica-id N``); SkyServe replaces it."""

    kind: Literal["terminate_replica"] = "terminate_replica"
    service: str
    replica_id: int

    @model_validator(mode="after")
    def _checks(self) -> TerminateReplica:
        _check_name(self.service, "service name")
        if self.replica_id < 1:
            raise ValueError(f"replica ids start at 1 (got {self.replica_id})")
        return self

    @property
    def subject(self) -> str:
        return self.service


class Down(_ActionBase):
    """Tear down a whole service (``sky serve down NAME``)."""

    kind: Literal["down"] = "down"
    service: str

    @model_validator(mode="after")
    def _names(self) -> Down:
        _check_name(self.service, "service name")
        return self

    @property
    def subject(self) -> str:
        return self.service


Action = Annotated[
    Scale | SwitchBackend | LaunchReplica | RebuildCache | TerminateReplica | Down,
    Field(discriminator="kind"),
]
_ACTION: TypeAdapter[Action] = TypeAdapter(Action)


def parse_action(data: Mapping[str, Any]) -> Action:
    """Validate ``data`` into an action; ActionError with one readable line otherwise."""
    try:
        return _ACTION.validate_python(dict(data))
    except ValidationError as exc:
        raise ActionError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    # Model validators report at the model (no location): their message says it all.
    location = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
    kinds = ("scale", "switch_backend", "launch", "rebuild_cache", "terminate_replica", "down")
    location = ".".join(part for part in location.split(".") if part not in kinds)
    if error["type"] == "union_tag_invalid":
        return f"unknown action kind (expected one of: {', '.join(kinds)})"
    if error["type"] == "union_tag_not_found":
        return "the action has no 'kind'"
    if error["type"] == "missing":
        return f"{location.replace('_', ' ')} is required"
    return f"{location.replace('_', ' ')}: {message}" if location else message


def next_cache_version(current: str | None) -> str:
    """The next CACHE_VERSION: the last number goes up ('v3' → 'v4', 'v09' → 'v10');
    without a number '-2' is appended; nothing (or a masked value) gives 'v1'."""
    if not current or not _CACHE_VERSION.fullmatch(current):
        return "v1"
    match = _LAST_NUMBER.search(current)
    if match is None:
        return f"{current}-2"
    digits = match.group(1)
    bumped = str(int(digits) + 1).zfill(len(digits))
    return f"{current[: match.start()]}{bumped}{current[match.end() :]}"
