"""The dashboard's control flows: keys → form → plan → preview → confirm → runner.

:class:`Control` is filled in on the poller thread once the control plane exists (the
SkyPilot plane imports ``sky``; the sandbox's starts its fleet), so nothing here delays
the first paint. :class:`ControlFlows` keeps the UI side: the pending ``+``/``-``
target, the session's action records, and the progress panel's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text

from wfdash.format import DASH

if TYPE_CHECKING:
    from textual.timer import Timer

    from wfdash.control.deploy import DeploymentFiles
    from wfdash.control.plan import Plan
    from wfdash.control.runner import ActionRecord, ActionRunner
    from wfdash.ui.app import WfdashApp
    from wfdash.ui.control import FormSpec, Propose

# +/- presses within this long of each other make one change (one preview, one update).
PENDING_DEBOUNCE_S = 1.2
# A finished action stays in the progress panel this long (the event log keeps it).
FINISHED_SHOWN_S = 30.0


@dataclass
class Control:
    """Where actions go. ``runner`` is None until the control plane is connected."""

    deploy: DeploymentFiles | None = None
    runner: ActionRunner | None = None
    target: str = ""  # the plane's description: "sandbox …" or the API server


class ControlFlows:
    def __init__(self, app: WfdashApp, control: Control) -> None:
        self.app = app
        self.control = control
        self.pending_min: int | None = None
        self._pending_timer: Timer | None = None
        self.records: dict[str, ActionRecord] = {}

    # ------------------------------------------------------------------ +/- debounced

    def step_min(self, delta: int) -> None:
        view = self.app.current
        if view is None:
            self.app.notify("No service to scale.", severity="warning")
            return
        policy = view.service.policy
        current = policy.min_replicas if policy.min_replicas is not None else 0
        base = self.pending_min if self.pending_min is not None else current
        self.pending_min = max(0, base + delta)
        if self._pending_timer is not None:
            self._pending_timer.stop()
        self._pending_timer = self.app.set_timer(PENDING_DEBOUNCE_S, self._pending_done)
        self.app.render_summary()

    def cancel_pending(self) -> bool:
        """Drop a pending +/- change; True if there was one."""
        if self.pending_min is None:
            return False
        if self._pending_timer is not None:
            self._pending_timer.stop()
        self.pending_min, self._pending_timer = None, None
        self.app.render_summary()
        return True

    def pending_text(self) -> Text | None:
        view = self.app.current
        if self.pending_min is None or view is None:
            return None
        current = view.service.policy.min_replicas
        return Text.assemble(
            (
                f"min replicas {current if current is not None else DASH} → {self.pending_min}",
                "bold",
            ),
            " pending: preview opens when you stop pressing +/- · escape drops it",
        )

    def _pending_done(self) -> None:
        target, self.pending_min, self._pending_timer = self.pending_min, None, None
        self.app.render_summary()
        view = self.app.current
        if target is None or view is None:
            return
        policy = view.service.policy
        if target == policy.min_replicas:
            self.app.notify("Min replicas unchanged: nothing to do.")
            return
        fixed = policy.max_replicas is None or (
            policy.max_replicas == policy.min_replicas and policy.target_qps_per_replica is None
        )
        maximum = target if fixed else max(policy.max_replicas or target, target)
        self.propose_and_preview(
            {
                "kind": "scale",
                "service": view.service.name,
                "min_replicas": target,
                "max_replicas": maximum,
            }
        )

    # ------------------------------------------------------------------ forms

    def open_scale(self) -> None:
        from wfdash.ui.control import FormField, FormSpec

        view = self.app.current
        if view is None:
            self.app.notify("No service to scale.", severity="warning")
            return
        policy = view.service.policy
        self._form(
            FormSpec(
                title=f"Scale {view.service.name}",
                fixed={"kind": "scale", "service": view.service.name},
                note=f"Deployed: {policy.text or DASH}",
                fields=(
                    FormField("min_replicas", "Min replicas", "int", _str(policy.min_replicas)),
                    FormField("max_replicas", "Max replicas", "int", _str(policy.max_replicas)),
                    FormField(
                        "target_qps_per_replica",
                        "Target QPS per replica",
                        "float",
                        _str(policy.target_qps_per_replica),
                        hint="blank keeps the deployed target",
                    ),
                ),
            )
        )

    def open_backend(self) -> None:
        from wfdash.ui.control import FormField, FormSpec

        view = self.app.current
        if view is None:
            self.app.notify("No service to switch.", severity="warning")
            return
        current = view.service.backend
        other = "vllm" if current == "bitnet" else "bitnet"

        def label(name: str, what: str) -> Text:
            mark = "  (running now)" if name == current else ""
            return Text.assemble((name, "bold"), f"  {what}{mark}")

        self._form(
            FormSpec(
                title=f"Switch the backend of {view.service.name}",
                fixed={"kind": "switch_backend", "service": view.service.name},
                note="New replicas are launched with the new BACKEND; old ones retire.",
                fields=(
                    FormField(
                        "backend",
                        "Backend",
                        "choice",
                        other,
                        choices=(
                            ("bitnet", label("bitnet", "BitNet.cpp llama-server, CPU, 1.58-bit")),
                            ("vllm", label("vllm", "vLLM, continuous batching")),
                        ),
                    ),
                    FormField(
                        "mode",
                        "Update mode",
                        "choice",
                        "rolling",
                        choices=(
                            ("rolling", "rolling: mixes versions while new replicas come up"),
                            ("blue_green", "blue_green: switches once min_replicas are READY"),
                        ),
                    ),
                ),
            )
        )

    def open_launch(self) -> None:
        from wfdash.control.profiles import PROFILES
        from wfdash.format import fmt_money
        from wfdash.ui.control import FormField, FormSpec

        taken = {c.cluster.name for c in self.app.snapshot.clusters} if self.app.snapshot else set()
        choices = []
        for profile in PROFILES.values():
            speed = f"~{profile.expected_tok_s:g} tok/s" if profile.expected_tok_s else DASH
            label = Text.assemble(
                (f"{profile.name:<11}", "bold"),
                f"{profile.instance_type:<18} {fmt_money(profile.price_per_hour):>10}"
                f"{' spot' if profile.spot else ''}  {speed}\n",
                (f"  {profile.title}", "dim"),
            )
            choices.append((profile.name, label))
        first = next(iter(PROFILES))
        self._form(
            FormSpec(
                title="Launch a standalone BitNet replica",
                fixed={"kind": "launch"},
                note="sky launch of skypilot/inference/<profile>.yaml; it bills until `sky down`.",
                fields=(
                    FormField("profile", "Profile", "choice", first, choices=choices),
                    FormField(
                        "cluster_name",
                        "Cluster name",
                        "text",
                        _free_name("wf-bitnet", taken),
                    ),
                ),
            )
        )

    def open_rebuild(self) -> None:
        from wfdash.control.actions import next_cache_version
        from wfdash.ui.control import FormField, FormSpec

        view = self.app.current
        targets: list[tuple[str, Text | str]] = []
        versions: dict[str, str | None] = {}
        if view is not None:
            key = f"service:{view.service.name}"
            version = view.service.envs.get("CACHE_VERSION")
            versions[key] = version
            targets.append((key, f"service {view.service.name}  (CACHE_VERSION {version or DASH})"))
        for cluster_view in self.app.snapshot.clusters if self.app.snapshot else ():
            cluster = cluster_view.cluster
            key = f"cluster:{cluster.name}"
            versions[key] = cluster.cache_version
            targets.append(
                (key, f"cluster {cluster.name}  (CACHE_VERSION {cluster.cache_version or DASH})")
            )
        if not targets:
            self.app.notify("Nothing to rebuild: no service or cluster.", severity="warning")
            return

        def propose(values: dict[str, Any]) -> Plan | str:
            scope, _, name = str(values.pop("where")).partition(":")
            if not values.get("cache_version"):
                values["cache_version"] = next_cache_version(versions.get(f"{scope}:{name}"))
            return self.propose({**values, "target": scope, "name": name})

        self._form(
            FormSpec(
                title="Rebuild the BitNet.cpp build cache",
                fixed={"kind": "rebuild_cache"},
                note="A new CACHE_VERSION makes setup rebuild BitNet.cpp (a cache miss: minutes).",
                fields=(
                    FormField("where", "Rebuild", "choice", targets[0][0], choices=targets),
                    FormField(
                        "cache_version",
                        "New CACHE_VERSION",
                        "text",
                        hint="blank: the next version of the chosen target",
                    ),
                ),
            ),
            propose,
        )

    def _form(self, spec: FormSpec, propose: Propose | None = None) -> None:
        """Open the form; its values become a plan through ``propose`` (default: as is)."""
        from wfdash.ui.control import FormScreen

        self.app.push_screen(FormScreen(spec, propose or self.propose), self._form_done)

    def _form_done(self, plan: Plan | None) -> None:
        if plan is not None:
            self.preview(plan)

    # ------------------------------------------------------------------ direct actions

    def terminate_selected(self) -> None:
        view = self.app.current
        replica = self.app.selected_replica()
        if view is None or replica is None:
            self.app.notify("Select a replica first.", severity="warning")
            return
        self.propose_and_preview(
            {
                "kind": "terminate_replica",
                "service": view.service.name,
                "replica_id": replica.replica.replica_id,
            }
        )

    def down_service(self) -> None:
        view = self.app.current
        if view is None:
            self.app.notify("No service to take down.", severity="warning")
            return
        self.propose_and_preview({"kind": "down", "service": view.service.name})

    # ------------------------------------------------------------------ plan → run

    def propose(self, values: dict[str, Any]) -> Plan | str:
        """The plan for ``values``, or one line saying why there is none."""
        from wfdash.control.actions import parse_action
        from wfdash.control.errors import ActionError
        from wfdash.control.plan import plan_action

        snapshot, deploy = self.app.snapshot, self.control.deploy
        if snapshot is None or deploy is None:
            return "wfdash is still connecting: try again when the first status has arrived"
        try:
            action = parse_action(values)
            return plan_action(action, snapshot, deploy, pool_hosts=self.app.pool_hosts)
        except ActionError as exc:
            return str(exc)

    def propose_and_preview(self, values: dict[str, Any]) -> None:
        plan = self.propose(values)
        if isinstance(plan, str):
            self.app.notify(plan, title="Not possible", severity="error", timeout=8)
            return
        self.preview(plan)

    def preview(self, plan: Plan) -> None:
        from wfdash.ui.control import PreviewScreen

        target = self.control.target or "(control plane connecting)"
        self.app.push_screen(
            PreviewScreen(plan, self.app.palette(), target=target),
            lambda confirmed: self._confirmed(plan, bool(confirmed)),
        )

    def _confirmed(self, plan: Plan, confirmed: bool) -> None:
        if not confirmed:
            self.app.notify("Cancelled: nothing was changed.", timeout=3)
            return
        from wfdash.control.errors import ActionError

        runner = self.control.runner
        if runner is None:
            self.app.notify(
                "The control plane is not connected yet: nothing was changed.", severity="error"
            )
            return
        try:
            record = runner.start(plan, self._updated_threadsafe)
        except ActionError as exc:
            self.app.notify(str(exc), title="Not started", severity="error", timeout=10)
            return
        self.records[record.id] = record
        self.app.render_actions()

    def _updated_threadsafe(self, record: ActionRecord) -> None:
        """Called on the action's worker thread: hand the record to the UI loop."""
        self.app.call_soon_threadsafe(self._updated, record)

    def _updated(self, record: ActionRecord) -> None:
        known = self.records.get(record.id)
        self.records[record.id] = record
        if record.state != "running" and (known is None or known.state == "running"):
            severity = {"succeeded": "information", "cancelled": "warning"}.get(
                record.state, "error"
            )
            message = record.result or record.error or record.state
            self.app.notify(
                f"{record.plan.summary}: {message}",
                title=f"Action {record.state}",
                severity=severity,  # type: ignore[arg-type]
                timeout=10,
            )
            self.app.action_finished()
        self.app.render_actions()

    def cancel(self, action_id: str) -> None:
        if self.control.runner is not None:
            self.control.runner.cancel(action_id)

    def session_records(self) -> list[ActionRecord]:
        """Running actions first, then the finished ones, newest first."""
        records = sorted(self.records.values(), key=lambda r: r.started, reverse=True)
        return [r for r in records if r.state == "running"] + [
            r for r in records if r.state != "running"
        ]

    def panel_records(self, now: float) -> list[ActionRecord]:
        return [
            r
            for r in self.session_records()
            if r.state == "running"
            or (r.finished is not None and now - r.finished < FINISHED_SHOWN_S)
        ]


def _str(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _free_name(stem: str, taken: set[str]) -> str:
    n = 1
    while f"{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"
