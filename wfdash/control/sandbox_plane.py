"""The embedded sandbox as a control plane: actions drive the SkyServe emulation.

Each action calls the emulator's own action method (the same ``serve update`` /
``terminate_replica`` / ``down`` / ``launch`` semantics, in simulated time) on the
sandbox's loop. Like ``sky serve update``, service updates return once scheduled (the
rollout shows in the replica table); like ``sky launch``, launches and cluster rebuilds
block, reporting each phase, until the cluster's server is up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from wfdash.control.actions import (
    Down,
    LaunchReplica,
    RebuildCache,
    Scale,
    SwitchBackend,
    TerminateReplica,
)
from wfdash.control.errors import ActionCancelled, ActionError
from wfdash.control.plan import Plan
from wfdash.control.profiles import PROFILES
from wfdash.sandbox.fleet import SandboxThread
from wfdash.sandbox.replicas import Backend
from wfdash.sandbox.skyserve import SandboxError, SkyServeEmulator

T = TypeVar("T")
_CALL_TIMEOUT_S = 30.0


class SandboxControlPlane:
    def __init__(self, sandbox: SandboxThread, *, poll_interval: float = 0.1) -> None:
        self.sandbox = sandbox
        self.poll_interval = poll_interval

    @property
    def description(self) -> str:
        return self.sandbox.description

    def execute(self, plan: Plan, progress: Callable[[str], None], cancel: threading.Event) -> str:
        if cancel.is_set():
            raise ActionCancelled("cancelled before anything was sent")
        progress(f"sandbox: {plan.command}")
        match plan.action:
            case Scale() as scale:
                version = self._call(
                    lambda em: em.scale(
                        scale.service,
                        scale.min_replicas,
                        scale.max_replicas,
                        scale.target_qps_per_replica
                        if scale.target_qps_per_replica is not None
                        else em.services[scale.service].spec.policy.target_qps_per_replica,
                    )
                )
                return f"applied as version {version}"
            case SwitchBackend() as switch:
                version = self._call(
                    lambda em: em.switch_backend(
                        switch.service, Backend(switch.backend), switch.mode
                    )
                )
                return f"version {version} rolling out ({switch.mode.replace('_', '-')})"
            case RebuildCache(target="service") as rebuild:
                version = self._call(
                    lambda em: em.rebuild_service_cache(rebuild.name, rebuild.cache_version)
                )
                return f"version {version} rolling out with CACHE_VERSION={rebuild.cache_version}"
            case RebuildCache() as rebuild:
                self._call(lambda em: em.rebuild_cluster_cache(rebuild.name, rebuild.cache_version))
                return self._follow_cluster(rebuild.name, progress, cancel)
            case LaunchReplica() as launch:
                offer = PROFILES[launch.profile].offer
                self._call(lambda em: em.launch_cluster(launch.cluster_name, offer))
                return self._follow_cluster(launch.cluster_name, progress, cancel)
            case TerminateReplica() as terminate:
                self._call(lambda em: em.terminate_replica(terminate.service, terminate.replica_id))
                return f"replica #{terminate.replica_id} is shutting down"
            case Down() as down:
                self._call(lambda em: em.down(down.service))
                return f"{down.service} is shutting down"
        raise ActionError(f"the sandbox cannot run {plan.action.kind}")  # pragma: no cover

    def _call(self, call: Callable[[SkyServeEmulator], T]) -> T:
        """Run one emulator call on the sandbox's loop; its refusals become ActionError."""
        emulator = self.sandbox.sandbox.emulator

        async def invoke() -> T:
            return call(emulator)

        try:
            return self.sandbox.submit(invoke()).result(_CALL_TIMEOUT_S)
        except SandboxError as exc:
            raise ActionError(str(exc)) from exc
        except TimeoutError as exc:
            raise ActionError(f"the sandbox did not answer within {_CALL_TIMEOUT_S:g} s") from exc

    def _follow_cluster(
        self, name: str, progress: Callable[[str], None], cancel: threading.Event
    ) -> str:
        """Report the cluster's phases until its server is up, as ``sky launch`` streams."""
        last: tuple[Any, ...] | None = None
        while True:
            state = self._call(lambda em: _cluster_state(em, name))
            if state is None:
                raise ActionError(f"cluster {name} disappeared while it was launching")
            phase, status, event, cache_hit = state
            if (phase, event) != last:
                progress(f"{name} {status}: {event or phase}")
                last = (phase, event)
            if phase == "serving":
                return f"{name} is serving ({'cache hit' if cache_hit else 'fresh build'})"
            if cancel.wait(self.poll_interval):
                raise ActionCancelled(
                    f"stopped following {name} while {phase}: the launch itself goes on, as a "
                    f"cancelled `sky launch` leaves its cluster (`sky down {name}` removes it)"
                )


def _cluster_state(emulator: SkyServeEmulator, name: str) -> tuple[str, str, str, bool] | None:
    cluster = emulator.clusters.get(name)
    if cluster is None:
        return None
    return cluster.phase, cluster.status, cluster.last_event, cluster.cache_hit
