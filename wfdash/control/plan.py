"""Planning an action: what exactly will run, what changes, what it costs, what restarts.

A :class:`Plan` is built from the action, the last :class:`Snapshot` and the deployment's
YAMLs, and is what the operator confirms; the control plane then executes that plan and
nothing else (the task it sends is the one computed here).

How a service update's task is built (SkyServe has no "set replica count" call: scaling,
backend switches and service cache rebuilds are all ``sky serve update`` with a task):

- ``service:``, ``envs:`` and ``secrets:`` are what is deployed (the service's task YAML as
  SkyServe returned it, redacted) with the action's change applied, so nothing else changes
  by accident, e.g. a scale never switches the backend back to the repository's;
- everything else (resources, setup, run, config) comes from ``skypilot/service.yaml``,
  because SkyServe returns those normalised and wfdash cannot compare them reliably;
- a value SkyServe only returned masked (a secret) is taken from ``skypilot/service.yaml``
  when it has it; otherwise the task keeps the placeholder and the SkyPilot plane fills
  it from wfdash's environment or refuses to run: a secret is never silently dropped.

The YAML diff shows those readable sections, deployed → after, redacted. Costs are
planning prices (:mod:`wfdash.pricing`), and marked as estimates.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from wfdash.collect.kinds import Layer, ReplicaStatus, ServiceStatus
from wfdash.collect.model import Cluster, Replica, Service
from wfdash.collect.redact import redact_tree
from wfdash.collect.snapshot import ClusterView, ServiceView, Snapshot
from wfdash.control.actions import (
    Action,
    Down,
    LaunchReplica,
    RebuildCache,
    Scale,
    SwitchBackend,
    TerminateReplica,
)
from wfdash.control.deploy import MASK, DeploymentFiles
from wfdash.control.errors import ActionError
from wfdash.control.profiles import PROFILES, LaunchProfile
from wfdash.cost import FleetCost, fleet_cost
from wfdash.pricing import cheapest_spot

__all__ = ["DeploymentFiles", "Plan", "masked_paths", "plan_action"]

# Replicas that exist or are being brought up: what terminate and scale count.
ALIVE = frozenset(
    {
        ReplicaStatus.PENDING,
        ReplicaStatus.PROVISIONING,
        ReplicaStatus.STARTING,
        ReplicaStatus.READY,
        ReplicaStatus.NOT_READY,
    }
)
_TASK_SECTIONS = ("service", "envs", "secrets")  # what a service update diff shows
_POLICY_KEYS = ("min_replicas", "max_replicas", "target_qps_per_replica")


@dataclass(frozen=True)
class Plan:
    action: Action
    summary: str  # one line
    command: str  # the equivalent `sky` command line
    yaml_diff: str  # unified diff deployed → after, redacted; "" when no YAML changes
    cost_now_per_hour: float | None
    cost_after_per_hour: float | None  # an estimate; None when unknown
    restarts: str  # what restarts, one human line
    danger: bool  # destroys capacity: the user types confirm_phrase
    confirm_phrase: str | None
    warnings: tuple[str, ...]
    # The task the control plane sends (service.yaml or an inference YAML with the change
    # applied). Not redacted, so never shown, logged or audited.
    task: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    def audit(self) -> dict[str, Any]:
        """The plan's audit-log fields (all redacted already; the task is left out)."""
        return {
            "summary": self.summary,
            "command": self.command,
            "yaml_diff": self.yaml_diff,
            "cost_now_per_hour": self.cost_now_per_hour,
            "cost_after_per_hour": self.cost_after_per_hour,
            "restarts": self.restarts,
            "danger": self.danger,
            "warnings": list(self.warnings),
        }


def plan_action(
    action: Action, snapshot: Snapshot, deploy: DeploymentFiles, *, pool_hosts: int | None = None
) -> Plan:
    """The plan of ``action`` against ``snapshot``; ActionError when it cannot be done.

    ``pool_hosts`` is the SSH node pool's size when known (cost estimates: replicas fill
    the pool before they spill to the burst layer).
    """
    ctx = _Context(snapshot, deploy, pool_hosts)
    match action:
        case Scale():
            return _plan_scale(action, ctx)
        case SwitchBackend():
            return _plan_switch(action, ctx)
        case RebuildCache(target="service"):
            return _plan_rebuild_service(action, ctx)
        case RebuildCache():
            return _plan_rebuild_cluster(action, ctx)
        case LaunchReplica():
            return _plan_launch(action, ctx)
        case TerminateReplica():
            return _plan_terminate(action, ctx)
        case Down():
            return _plan_down(action, ctx)
    raise ActionError(f"unknown action {action!r}")  # pragma: no cover - the union is closed


# --- context: the snapshot and files one plan reads ---------------------------------------


@dataclass(frozen=True)
class _Context:
    snapshot: Snapshot
    deploy: DeploymentFiles
    pool_hosts: int | None

    def service(self, name: str) -> ServiceView:
        for view in self.snapshot.services:
            if view.service.name == name:
                if view.service.status is ServiceStatus.SHUTTING_DOWN:
                    raise ActionError(f"{name} is shutting down")
                return view
        known = ", ".join(v.service.name for v in self.snapshot.services) or "none"
        raise ActionError(f"no service {name!r} in the last status read (services: {known})")

    def updatable(self, name: str) -> ServiceView:
        """A service SkyServe accepts ``serve update`` for (its controller must be up)."""
        view = self.service(name)
        status = view.service.status
        if status is ServiceStatus.CONTROLLER_INIT:
            raise ActionError(
                f"{name}'s controller is still starting: SkyServe refuses updates until it "
                "is up, try again in a minute"
            )
        if status is ServiceStatus.CONTROLLER_FAILED:
            raise ActionError(
                f"{name} has a failed controller: clean it up (`sky serve down {name} "
                "--purge`) and bring it up again"
            )
        return view

    def cluster(self, name: str) -> ClusterView | None:
        return next((c for c in self.snapshot.clusters if c.cluster.name == name), None)

    def fleet(self, *, without: str | None = None) -> FleetCost:
        services = [v.service for v in self.snapshot.services if v.service.name != without]
        clusters = [c.cluster for c in self.snapshot.clusters]
        return fleet_cost(services, clusters, pool_hosts=self.pool_hosts)

    def warnings(self) -> list[str]:
        """Warnings every plan carries: stale status, incomplete prices."""
        out = []
        snapshot = self.snapshot
        if not snapshot.status_ok:
            age = snapshot.status_age_s
            when = f"{age:.0f} s old" if age is not None else "never read"
            out.append(
                f"the last status read failed ({snapshot.status_error}): this plan uses "
                f"status {when}"
            )
        fleet = self.fleet()
        if not fleet.complete:
            out.append(
                f"{fleet.unpriced} replica(s)/cluster(s) have no known price: "
                "costs are lower bounds"
            )
        return out


# --- service updates -------------------------------------------------------------------


@dataclass
class _Update:
    """A ``sky serve update`` task: deployed readable sections + the change, repo for the rest."""

    task: dict[str, Any]
    before: dict[str, Any]  # redacted sections, as deployed
    after: dict[str, Any]  # redacted sections, as sent
    old_policy: dict[str, Any]
    new_policy: dict[str, Any]
    warnings: list[str]
    deployed_known: bool

    @property
    def replaces_replicas(self) -> bool:
        """SkyServe reuses replicas when only the ``service:`` section changes."""
        return any(self.before.get(k) != self.after.get(k) for k in ("envs", "secrets"))


def _build_update(
    service: Service,
    deploy: DeploymentFiles,
    *,
    policy_change: Mapping[str, Any] | None = None,
    env_change: Mapping[str, str] | None = None,
) -> _Update:
    repo = deploy.load(deploy.service_yaml)
    deployed = _parse(service.yaml_redacted)
    warnings: list[str] = []
    source = deployed if deployed is not None else repo
    if deployed is None:
        warnings.append(
            f"{service.name}'s deployed task YAML is unknown: the update sends "
            f"{deploy.display(deploy.service_yaml)} (with this change); replicas are replaced "
            "if it differs from what runs"
        )

    section = source.get("service")
    new_service = copy.deepcopy(section) if isinstance(section, dict) else {}
    _restore_masked(new_service, _section(repo, "service"), "service", deploy, warnings)

    old_policy = _policy_section(new_service)
    if deployed is None:  # the mapped policy (from SkyServe's text) is what runs
        known = service.policy.model_dump(exclude={"text"}, exclude_none=True)
        old_policy.update(known)
    new_policy = {**old_policy, **(policy_change or {})}
    new_service.pop("replicas", None)
    new_service["replica_policy"] = new_policy

    task = copy.deepcopy(repo)
    task["service"] = new_service
    masked: dict[str, set[str]] = {}
    for name in ("envs", "secrets"):
        values = source.get(name)
        values = dict(values) if isinstance(values, dict) else {}
        repo_values = _section(repo, name)
        masked[name] = {k for k, v in values.items() if v == MASK}
        for key in sorted(masked[name]):
            if repo_values.get(key) not in (None, MASK):
                values[key] = repo_values[key]
            elif key not in deploy.environ:
                warnings.append(_secret_warning(name, key))
        if name == "envs":
            values.update(env_change or {})
        if values:
            task[name] = values
        else:
            task.pop(name, None)

    before = _sections(deployed if deployed is not None else redact_tree(repo))
    after = _sections(redact_tree(task))
    for name, keys in masked.items():
        for key in keys & set(after.get(name, {})):
            after[name][key] = MASK  # secret before, secret after (whatever fills it)
    return _Update(task, before, after, old_policy, new_policy, warnings, deployed is not None)


def _secret_warning(section: str, key: str) -> str:
    return (
        f"{section} {key} is secret and SkyPilot never returns it: on SkyPilot wfdash passes "
        f"${key} from its own environment, and does not go ahead without it"
    )


def _restore_masked(
    node: dict[str, Any],
    repo: Mapping[str, Any],
    path: str,
    deploy: DeploymentFiles,
    warnings: list[str],
) -> None:
    """Masked values in a deployed section: the repo's value where it has one."""
    for key, value in node.items():
        here = f"{path}.{key}"
        theirs = repo.get(key)
        if isinstance(value, dict):
            _restore_masked(
                value, theirs if isinstance(theirs, Mapping) else {}, here, deploy, warnings
            )
        elif value == MASK:
            if theirs not in (None, MASK) and not isinstance(theirs, dict | list):
                node[key] = theirs
            else:
                warnings.append(
                    f"{here} is secret and SkyPilot never returns it: put it in "
                    f"{deploy.display(deploy.service_yaml)}, or the SkyPilot path refuses to update"
                )


def _policy_section(service: dict[str, Any]) -> dict[str, Any]:
    policy = service.get("replica_policy")
    if isinstance(policy, dict):
        return dict(policy)
    fixed = service.get("replicas")
    if isinstance(fixed, int):
        return {"min_replicas": fixed, "max_replicas": fixed}
    return {}


def _section(tree: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = tree.get(key)
    return value if isinstance(value, dict) else {}


def _parse(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return tree if isinstance(tree, dict) else None


def _sections(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(tree[k]) for k in _TASK_SECTIONS if tree.get(k) is not None}


def _diff(before: Mapping[str, Any] | None, after: Mapping[str, Any], old: str, new: str) -> str:
    def dump(tree: Mapping[str, Any] | None) -> list[str]:
        if not tree:
            return []
        text = yaml.safe_dump(dict(tree), sort_keys=False, default_flow_style=False)
        return text.splitlines(keepends=True)

    return "".join(difflib.unified_diff(dump(before), dump(after), old, new, n=2))


def _update_command(service: Service, deploy: DeploymentFiles, update: _Update, mode: str) -> str:
    flags = [f"--mode {mode}"]
    repo = deploy.load(deploy.service_yaml)
    repo_envs = _section(repo, "envs")
    for key, value in update.task.get("envs", {}).items():
        if value == MASK:
            flags.append(f"--env {key}")  # the CLI takes its value from the caller's environment
        elif key in ("BACKEND", "CACHE_VERSION") or repo_envs.get(key) != value:
            flags.append(f"--env {key}={_shell(str(value))}")
    command = f"sky serve update {service.name} {deploy.display(deploy.service_yaml)} "
    command += " ".join(flags)
    if update.new_policy != _policy_section(_section(repo, "service")):
        command += "  # with the service: section of the diff (serve update has no flags for it)"
    return command


def _shell(value: str) -> str:
    safe = value and all(c.isalnum() or c in "-_./:=@%+," for c in value)
    return value if safe else "'" + value.replace("'", "'\\''") + "'"


def _service_diff(service: Service, update: _Update, deploy: DeploymentFiles) -> str:
    old = f"deployed {service.name}" + (f" v{service.version}" if service.version else "")
    if not update.deployed_known:
        old = f"{deploy.display(deploy.service_yaml)} (deployed YAML unknown)"
    return _diff(update.before, update.after, old, "after")


def _alive(service: Service) -> list[Replica]:
    return [r for r in service.replicas if r.status in ALIVE]


def _money(value: float) -> str:
    return f"${value:.2f}/h"


def _rollout_warnings(service: Service, what: str) -> list[str]:
    """The transient cost of replacing every replica: both versions run for a while."""
    count = service.target_num_replicas or len(_alive(service))
    if not count:
        return []
    spot = cheapest_spot().spot_per_hour or 0.0
    return [
        f"while it rolls out, up to {count} new replica(s) run next to the old ones "
        f"(≈ +{_money(count * spot)} at most if they spill to burst spot), and each {what}"
    ]


def _plan_scale(action: Scale, ctx: _Context) -> Plan:
    view = ctx.updatable(action.service)
    service = view.service
    change: dict[str, Any] = {
        "min_replicas": action.min_replicas,
        "max_replicas": action.max_replicas,
    }
    if action.target_qps_per_replica is not None:
        change["target_qps_per_replica"] = action.target_qps_per_replica
    update = _build_update(service, ctx.deploy, policy_change=change)
    old, new = update.old_policy, update.new_policy
    lo, hi, target = new["min_replicas"], new["max_replicas"], new.get("target_qps_per_replica")
    if lo != hi and target is None:
        raise ActionError(
            f"autoscaling from {lo} to {hi} needs a target QPS per replica "
            f"({service.name}'s policy has none)"
        )
    if all(old.get(k) == new.get(k) for k in _POLICY_KEYS):
        raise ActionError(f"{service.name} already has {_policy_text(new)}: nothing to change")

    parts, kept = [], []
    for key, label in (("min_replicas", "min"), ("max_replicas", "max")):
        if old.get(key) != new[key]:
            parts.append(f"{label} {_num(old.get(key))}→{new[key]}")
        else:
            kept.append(f"{label} {new[key]}")
    target_text = f"target {_num(target)} QPS/replica"
    if old.get("target_qps_per_replica") != target:
        parts.append(f"target {_num(old.get('target_qps_per_replica'))}→{_num(target)} QPS/replica")
    elif target is not None:
        kept.append(target_text)
    summary = f"Scale {service.name}: {', '.join(parts)}" + (
        f" ({', '.join(kept)})" if kept else ""
    )

    # Replica count now and right after the update: SkyServe clips its current target
    # to the new bounds at once; load moves it later.
    now_count = service.target_num_replicas
    if now_count is None:
        now_count = len(_alive(service))
    after_count = max(lo, min(hi, now_count))
    base_slots = _base_slots(new, service, ctx.pool_hosts)
    spot = cheapest_spot()
    spot_price = spot.spot_per_hour or 0.0

    def burst(count: int) -> int:
        return max(0, count - base_slots)

    fleet = ctx.fleet()
    delta = (burst(after_count) - burst(now_count)) * spot_price
    warnings = ctx.warnings() + update.warnings
    warnings.append(
        f"cost estimate at the current load ({now_count}→{after_count} replicas; "
        f"{base_slots} fit the base layer, the rest at {spot.cloud} spot "
        f"{_money(spot_price)} each); at peak up to {hi} replicas "
        f"(≈ {_money(fleet.total_per_hour + (burst(hi) - burst(now_count)) * spot_price)})"
    )
    fallback = new.get("base_ondemand_fallback_replicas")
    if isinstance(fallback, int) and lo < fallback:
        warnings.append(
            f"base_ondemand_fallback_replicas is {fallback}: below that many replicas some "
            "Hetzner hosts idle, still paid by the month"
        )
    if update.replaces_replicas:
        restarts = "every replica is replaced, rolling (the task's envs differ from what runs)"
    elif after_count > now_count:
        added = after_count - now_count
        to_base = max(0, min(added, base_slots - now_count))
        restarts = (
            f"nothing restarts: replicas are reused; {added} new replica(s) launch "
            f"({to_base} base, {added - to_base} burst spot)"
        )
    elif after_count < now_count:
        restarts = (
            f"nothing restarts: replicas are reused; {now_count - after_count} replica(s) "
            "shut down (burst first)"
        )
    else:
        restarts = "nothing: replicas are reused (only the service section changes)"
    to_zero = after_count == 0 < now_count
    return Plan(
        action=action,
        summary=summary,
        command=_update_command(service, ctx.deploy, update, "rolling"),
        yaml_diff=_service_diff(service, update, ctx.deploy),
        cost_now_per_hour=fleet.total_per_hour,
        cost_after_per_hour=fleet.total_per_hour + delta,
        restarts=restarts + (": the service stops answering" if to_zero else ""),
        danger=to_zero,
        confirm_phrase=service.name if to_zero else None,
        warnings=tuple(warnings),
        task=update.task,
    )


def _base_slots(policy: Mapping[str, Any], service: Service, pool_hosts: int | None) -> int:
    """How many replicas the base layer takes: SkyServe's on-demand fallback replicas land
    on the SSH pool (see skypilot/README.md); without them, the pool's free hosts."""
    fallback = policy.get("base_ondemand_fallback_replicas")
    if isinstance(fallback, int):
        return fallback
    if pool_hosts is not None:
        return pool_hosts
    return sum(1 for r in _alive(service) if r.layer is Layer.BASE)


def _policy_text(policy: Mapping[str, Any]) -> str:
    text = f"min {policy.get('min_replicas')}, max {policy.get('max_replicas')}"
    target = policy.get("target_qps_per_replica")
    return text + (f", target {_num(target)} QPS/replica" if target is not None else "")


def _num(value: object) -> str:
    if value is None:
        return "?"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plan_switch(action: SwitchBackend, ctx: _Context) -> Plan:
    view = ctx.updatable(action.service)
    service = view.service
    current = service.backend
    if current == action.backend:
        raise ActionError(f"{service.name} already runs {current}")
    update = _build_update(service, ctx.deploy, env_change={"BACKEND": action.backend})
    warnings = ctx.warnings() + update.warnings
    if current is None:
        warnings.append(f"{service.name}'s current backend is unknown (no BACKEND env)")
    if action.backend == "vllm":
        warnings.append(
            "BACKEND=vllm installs vLLM from PyPI, a CUDA build: CPU-only replicas need "
            "vLLM's CPU build (see skypilot/README.md)"
        )
    warnings += _rollout_warnings(service, "installs/builds the new backend on first boot")
    new = action.backend
    if action.mode == "rolling":
        restarts = (
            f"every replica is replaced, rolling: new {new} replicas start, and old ones retire "
            f"as new ones get READY (both backends serve meanwhile)"
        )
    else:
        restarts = (
            f"every replica is replaced, blue-green: the old replicas serve until enough {new} "
            "ones are READY, then traffic switches at once"
        )
    fleet = ctx.fleet()
    return Plan(
        action=action,
        summary=(
            f"Switch {service.name} backend: {current or '?'}→{new} "
            f"({action.mode.replace('_', '-')})"
        ),
        command=_update_command(service, ctx.deploy, update, action.mode),
        yaml_diff=_service_diff(service, update, ctx.deploy),
        cost_now_per_hour=fleet.total_per_hour,
        cost_after_per_hour=fleet.total_per_hour,
        restarts=restarts,
        danger=False,
        confirm_phrase=None,
        warnings=tuple(warnings),
        task=update.task,
    )


def _plan_rebuild_service(action: RebuildCache, ctx: _Context) -> Plan:
    view = ctx.updatable(action.name)
    service = view.service
    current = service.envs.get("CACHE_VERSION")
    if current == action.cache_version:
        raise ActionError(f"{service.name}'s CACHE_VERSION is already {current}")
    update = _build_update(service, ctx.deploy, env_change={"CACHE_VERSION": action.cache_version})
    warnings = ctx.warnings() + update.warnings
    warnings += _rollout_warnings(service, "builds BitNet.cpp from scratch (~5 min + model)")
    warnings.append(
        "Hetzner replicas keep builds per CACHE_VERSION on the host (/var/cache/wf-bitnet): "
        "old versions' builds stay on disk"
    )
    fleet = ctx.fleet()
    return Plan(
        action=action,
        summary=(
            f"Rebuild {service.name}'s build cache: CACHE_VERSION "
            f"{current or '?'}→{action.cache_version}"
        ),
        command=_update_command(service, ctx.deploy, update, "rolling"),
        yaml_diff=_service_diff(service, update, ctx.deploy),
        cost_now_per_hour=fleet.total_per_hour,
        cost_after_per_hour=fleet.total_per_hour,
        restarts=(
            "every replica is replaced, rolling; each new one builds BitNet.cpp from scratch "
            "(cache miss) before it gets READY"
        ),
        danger=False,
        confirm_phrase=None,
        warnings=tuple(warnings),
        task=update.task,
    )


def _plan_terminate(action: TerminateReplica, ctx: _Context) -> Plan:
    view = ctx.service(action.service)
    service = view.service
    replica = next((r for r in service.replicas if r.replica_id == action.replica_id), None)
    if replica is None:
        raise ActionError(f"{service.name} has no replica #{action.replica_id}")
    if replica.status not in ALIVE:
        raise ActionError(
            f"replica #{replica.replica_id} of {service.name} is not running "
            f"({replica.status.value})"
        )
    where = _placement(replica)
    warnings = ctx.warnings()
    ready = [r for r in service.replicas if r.status is ReplicaStatus.READY]
    if ready == [replica]:
        warnings.append(
            "it is the only READY replica: the service stops answering until the "
            "replacement is READY (minutes: provisioning and setup)"
        )
    target = service.target_num_replicas
    keep = f" to keep {target} replicas" if target else ""
    fleet = ctx.fleet()
    return Plan(
        action=action,
        summary=(
            f"Terminate replica #{replica.replica_id} of {service.name} "
            f"({where}, {replica.status.value})"
        ),
        command=f"sky serve down {service.name} --replica-id {replica.replica_id} -y",
        yaml_diff="",
        cost_now_per_hour=fleet.total_per_hour,
        cost_after_per_hour=fleet.total_per_hour,
        restarts=(
            f"replica #{replica.replica_id} shuts down now; SkyServe launches a replacement "
            f"(a new id){keep}"
        ),
        danger=True,
        confirm_phrase=replica.cluster_name,
        warnings=tuple(warnings),
    )


def _placement(replica: Replica) -> str:
    if replica.layer is Layer.BASE:
        return f"base, SSH {replica.pool}"
    if replica.layer is Layer.BURST:
        market = "spot" if replica.is_spot else "on-demand"
        return f"burst, {replica.cloud} {replica.region or ''} {market}".replace("  ", " ")
    return "not placed yet"


def _plan_down(action: Down, ctx: _Context) -> Plan:
    view = ctx.service(action.service)
    service = view.service
    now = ctx.fleet()
    without = ctx.fleet(without=service.name)
    # The Hetzner hosts are rented by the month: tearing the service down frees none.
    after = without.total_per_hour + max(0.0, now.base_per_hour - without.base_per_hour)
    warnings = ctx.warnings()
    warnings.append(
        f"to bring it back: sky serve up {ctx.deploy.display(ctx.deploy.service_yaml)} "
        f"-n {service.name} (a new endpoint; every replica builds again)"
    )
    if any(r.layer is Layer.BASE for r in _alive(service)):
        warnings.append("its Hetzner hosts stay rented (a fixed monthly price)")
    count = len(_alive(service))
    return Plan(
        action=action,
        summary=(
            f"Tear down {service.name} ({count} replica(s), endpoint {service.endpoint or '-'})"
        ),
        command=f"sky serve down {service.name} -y",
        yaml_diff="",
        cost_now_per_hour=now.total_per_hour,
        cost_after_per_hour=after,
        restarts="every replica shuts down and the endpoint stops answering; nothing comes back",
        danger=True,
        confirm_phrase=service.name,
        warnings=tuple(warnings),
    )


# --- clusters --------------------------------------------------------------------------


def _profile_of(cluster: Cluster) -> LaunchProfile | None:
    for profile in PROFILES.values():
        if cluster.instance_type == profile.instance_type:
            return profile
    if (cluster.cloud or "").lower() == "runpod":
        return PROFILES["runpod_cpu"]
    return None


def _cluster_envs(
    cluster_envs: Mapping[str, str],
    repo: Mapping[str, Any],
    deploy: DeploymentFiles,
    warnings: list[str],
) -> tuple[dict[str, Any], set[str]]:
    """The launch envs: the YAML's, with what the cluster was launched with on top."""
    repo_envs = _section(repo, "envs")
    envs = dict(repo_envs)
    masked = set()
    for key, value in cluster_envs.items():
        if value != MASK:
            envs[key] = value
            continue
        masked.add(key)
        if repo_envs.get(key) not in (None, MASK):
            continue
        envs[key] = MASK
        if key not in deploy.environ:
            warnings.append(_secret_warning("envs", key))
    return envs, masked


def _launch_command(
    yaml_path: str, name: str, envs: Mapping[str, Any], repo: Mapping[str, Any]
) -> str:
    repo_envs = _section(repo, "envs")
    flags = []
    for key, value in envs.items():
        if value == MASK:
            flags.append(f"--env {key}")
        elif repo_envs.get(key) != value:
            flags.append(f"--env {key}={_shell(str(value))}")
    return " ".join([f"sky launch {yaml_path} -c {name}", *flags, "-y"])


def _cluster_view(name: str, task: Mapping[str, Any], masked: set[str]) -> dict[str, Any]:
    view = redact_tree({k: copy.deepcopy(task[k]) for k in ("resources", "envs") if k in task})
    for key in masked & set(view.get("envs", {})):
        view["envs"][key] = MASK
    return {"name": name, **view}


def _plan_rebuild_cluster(action: RebuildCache, ctx: _Context) -> Plan:
    view = ctx.cluster(action.name)
    if view is None:
        raise ActionError(f"no cluster {action.name!r} in the last status read")
    cluster = view.cluster
    if cluster.status not in ("UP", "STOPPED"):
        raise ActionError(f"cluster {cluster.name} is {cluster.status}: wait until it is UP")
    current = cluster.cache_version
    if current == action.cache_version:
        raise ActionError(f"{cluster.name}'s CACHE_VERSION is already {current}")
    profile = _profile_of(cluster)
    if profile is None:
        raise ActionError(
            f"cannot tell which skypilot/inference YAML launched {cluster.name} "
            f"({cluster.instance_type or 'unknown instance type'}): rebuild it with "
            f"`sky launch <yaml> -c {cluster.name} --env CACHE_VERSION={action.cache_version}`"
        )
    deploy = ctx.deploy
    path = deploy.inference_yaml(profile)
    repo = deploy.load(path)
    warnings = ctx.warnings()
    envs, masked = _cluster_envs(cluster.envs, repo, deploy, warnings)
    before_envs = dict(envs)
    envs["CACHE_VERSION"] = action.cache_version
    task = {**copy.deepcopy(repo), "envs": envs}
    before = _cluster_view(cluster.name, {**task, "envs": before_envs}, masked)
    fleet = ctx.fleet()
    after_cost = fleet.total_per_hour
    if cluster.status == "STOPPED":
        warnings.append(f"{cluster.name} is STOPPED: sky launch starts it again (billing resumes)")
        after_cost += profile.price_per_hour or 0.0
    display = deploy.display(path)
    return Plan(
        action=action,
        summary=(
            f"Rebuild {cluster.name}'s build cache: CACHE_VERSION "
            f"{current or '?'}→{action.cache_version} ({profile.instance_type})"
        ),
        command=(
            f"sky cancel {cluster.name} --all -y && "
            + _launch_command(display, cluster.name, envs, repo)
        ),
        yaml_diff=_diff(before, _cluster_view(cluster.name, task, masked), cluster.name, "after"),
        cost_now_per_hour=fleet.total_per_hour,
        cost_after_per_hour=after_cost,
        restarts=(
            f"{cluster.name}'s server stops (its job is cancelled), setup builds BitNet.cpp "
            "from scratch (cache miss: ~5 min plus the model), then the server starts again; "
            "no answers meanwhile"
        ),
        danger=False,
        confirm_phrase=None,
        warnings=tuple(warnings),
        task=task,
    )


def _plan_launch(action: LaunchReplica, ctx: _Context) -> Plan:
    existing = ctx.cluster(action.cluster_name)
    if existing is not None:
        raise ActionError(
            f"cluster {action.cluster_name} exists ({existing.cluster.status}): rebuild its "
            "cache to relaunch it, or pick another name"
        )
    profile = PROFILES[action.profile]
    deploy = ctx.deploy
    path = deploy.inference_yaml(profile)
    repo = deploy.load(path)
    task = copy.deepcopy(repo)
    fleet = ctx.fleet()
    price = profile.price_per_hour
    warnings = [*ctx.warnings(), profile.note]
    warnings.append(
        f"it costs {_money(price) if price is not None else 'an unknown price'} from now "
        f"until `sky down {action.cluster_name}`"
    )
    speed = f", ~{profile.expected_tok_s:g} tok/s" if profile.expected_tok_s else ""
    display = deploy.display(path)
    return Plan(
        action=action,
        summary=(
            f"Launch {action.cluster_name}: {profile.cloud} {profile.instance_type} "
            f"({profile.vcpus} vCPUs, {'spot' if profile.spot else 'on-demand'}{speed})"
        ),
        command=_launch_command(display, action.cluster_name, task.get("envs") or {}, repo),
        yaml_diff=_diff(
            None, _cluster_view(action.cluster_name, task, set()), "(no cluster)", display
        ),
        cost_now_per_hour=fleet.total_per_hour,
        cost_after_per_hour=fleet.total_per_hour + price if price is not None else None,
        restarts=(
            f"nothing restarts: a new {profile.instance_type} cluster provisions, builds "
            "BitNet.cpp (~5 min on first boot) and serves on port 8080"
        ),
        danger=False,
        confirm_phrase=None,
        warnings=tuple(warnings),
        task=task,
    )


def masked_paths(
    task: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Paths of the placeholders :func:`plan_action` left in a task (secrets to fill)."""
    for key, value in task.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from masked_paths(value, path)
        elif value == MASK:
            yield path
