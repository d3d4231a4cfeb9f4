"""Running planned actions: one at a time per service, never twice, always audited.

:class:`ActionRunner` is the only way the UI changes anything. For each plan it

1. refuses in read-only mode, while another action runs on the same service or cluster,
   and when the identical action was started or succeeded a moment ago (a repeated key
   press never applies twice);
2. writes an audit entry *before* anything is sent, so even a crash leaves a record (and
   the next wfdash on this host reports an action whose outcome it never saw);
3. runs ``plane.execute`` in a daemon thread, streaming its progress lines;
4. writes the outcome (succeeded / failed / cancelled, with the error) to the audit log.

Audit entries are :class:`~wfdash.collect.events.Event` rows of kind ACTION in the event
store, one per phase; their data carries who, when, the action and the plan's redacted
fields (never the task sent, which may hold secrets).
"""

from __future__ import annotations

import contextlib
import copy
import getpass
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from wfdash.collect.events import Event
from wfdash.collect.kinds import EventKind
from wfdash.collect.redact import redact_text
from wfdash.collect.store import EventStore, EventStoreError
from wfdash.control.actions import TerminateReplica
from wfdash.control.errors import ActionCancelled, ActionError
from wfdash.control.plan import Plan
from wfdash.control.plane import ControlPlane

LOG_LINES = 200  # progress lines kept per action
HISTORY = 50  # finished actions kept for recent()
REPEAT_WINDOW_S = 5.0  # an identical action within this long is a repeated key press

State = Literal["running", "succeeded", "failed", "cancelled"]


@dataclass
class ActionRecord:
    """One action's run. Records handed out by the runner are copies: they do not change."""

    id: str
    plan: Plan
    state: State
    started: float
    finished: float | None = None
    log: list[str] = field(default_factory=list)  # the last LOG_LINES progress lines
    result: str | None = None
    error: str | None = None
    who: str = ""


@dataclass
class _Running:
    record: ActionRecord
    cancel: threading.Event
    on_update: Callable[[ActionRecord], None]


class ActionRunner:
    def __init__(
        self,
        plane: ControlPlane,
        store: EventStore | None,
        *,
        user: str | None = None,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        repeat_window: float = REPEAT_WINDOW_S,
    ) -> None:
        self.plane = plane
        self.store = store
        self.user = user or _login_name()
        self.read_only = read_only
        self._clock = clock
        self._repeat_window = repeat_window
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._history: deque[ActionRecord] = deque(maxlen=HISTORY)
        self._host = socket.gethostname()
        if store is not None:
            self._report_interrupted(store)

    # --- the API ---------------------------------------------------------------------

    def start(self, plan: Plan, on_update: Callable[[ActionRecord], None]) -> ActionRecord:
        """Start ``plan`` in a worker thread; ActionError when it must not run now.

        ``on_update`` is called from the worker thread on every progress line and once at
        the end, with a copy of the record.
        """
        action = plan.action
        with self._lock:
            if self.read_only:
                raise ActionError(
                    "read-only mode: wfdash was started read-only (read_only in the config, "
                    "WFDASH_READ_ONLY or --read-only), so nothing was changed"
                )
            now = self._clock()
            for running in self._running.values():
                other = running.record.plan.action
                if (other.scope, other.subject) == (action.scope, action.subject):
                    age = now - running.record.started
                    raise ActionError(
                        f"{running.record.plan.summary} is still running (started {age:.0f} s "
                        f"ago): one change to {action.subject} at a time"
                    )
            for record in self._history:
                if (
                    record.state == "succeeded"
                    and record.plan.action == action
                    and now - record.started < self._repeat_window
                ):
                    raise ActionError(
                        f"the same action was applied {now - record.started:.0f} s ago: "
                        "not applying it twice"
                    )
            record = ActionRecord(
                id=uuid.uuid4().hex[:12], plan=plan, state="running", started=now, who=self.user
            )
            running = _Running(record, threading.Event(), on_update)
            self._running[record.id] = running  # reserves the subject before the audit write
        try:
            self._audit(record, "started")
        except EventStoreError as exc:
            with self._lock:
                del self._running[record.id]
            raise ActionError(f"cannot write the audit log, so nothing was changed: {exc}") from exc
        worker = threading.Thread(
            target=self._run, args=(running,), name=f"wfdash-action-{record.id}", daemon=True
        )
        worker.start()
        return _copy(record)

    def cancel(self, action_id: str) -> None:
        """Ask a running action to stop (a no-op once it finished).

        The record shows it with the worker's next update (never called back from here,
        so the caller may be the UI thread).
        """
        with self._lock:
            running = self._running.get(action_id)
            if running is None or running.cancel.is_set():
                return
            running.cancel.set()
            _append(running.record, f"cancel requested by {self.user}")

    def active(self) -> list[ActionRecord]:
        """Running actions, oldest first."""
        with self._lock:
            return [_copy(r.record) for r in self._running.values()]

    def recent(self) -> list[ActionRecord]:
        """Finished actions of this run, newest first."""
        with self._lock:
            return [_copy(r) for r in reversed(self._history)]

    # --- the worker ------------------------------------------------------------------

    def _run(self, running: _Running) -> None:
        record = running.record

        def progress(line: str) -> None:
            with self._lock:
                _append(record, line)
                snapshot = _copy(record)
            _notify(running, snapshot)

        state: State
        result = error = None
        try:
            result = _one_line(self.plane.execute(record.plan, progress, running.cancel))
            state = "succeeded"
        except ActionCancelled as exc:
            state, error = "cancelled", _one_line(str(exc))
        except ActionError as exc:
            state, error = "failed", _one_line(str(exc))
        except Exception as exc:  # a plane bug: still a clear, audited failure
            state, error = "failed", _one_line(f"unexpected {type(exc).__name__}: {exc}")
        with self._lock:
            record.state, record.result, record.error = state, result, error
            record.finished = self._clock()
        try:
            self._audit(record, state)
        except EventStoreError as exc:
            with self._lock:
                _append(record, f"the audit log could not record the outcome: {exc}")
        with self._lock:
            del self._running[record.id]
            self._history.append(record)
            snapshot = _copy(record)
        _notify(running, snapshot)

    # --- the audit log ---------------------------------------------------------------

    def _audit(self, record: ActionRecord, phase: str) -> None:
        if self.store is None:
            return
        plan = record.plan
        outcome = phase
        if record.result:
            outcome += f" ({record.result})"
        if record.error:
            outcome += f": {record.error}"
        now = self._clock()
        data: dict[str, Any] = {
            "action_id": record.id,
            "phase": phase,
            "who": record.who,
            "when": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "plane": self.plane.description,
            "action": plan.action.model_dump(mode="json"),
            "plan": plan.audit(),
            "outcome": record.state,
            "result": record.result,
            "error": record.error,
            "host": self._host,
            "pid": os.getpid(),
        }
        self.store.record(
            Event(
                ts=now,
                service=plan.action.subject,
                kind=EventKind.ACTION,
                replica_id=_replica_id(plan),
                message=_one_line(f"ACTION {plan.summary} by {record.who}: {outcome}"),
                data=data,
                dedupe_key=f"action:{record.id}:{phase}",
            )
        )

    def _report_interrupted(self, store: EventStore) -> None:
        """Audit what a wfdash on this host started but never saw finish (it died)."""
        events = store.query(kinds=[EventKind.ACTION], limit=2000)
        ended = {e.data.get("action_id") for e in events if e.data.get("phase") != "started"}
        for event in events:
            data = event.data
            if data.get("phase") != "started" or data.get("action_id") in ended:
                continue
            if data.get("host") != self._host or _pid_alive(data.get("pid")):
                continue  # maybe still running in another wfdash: not ours to judge
            summary = str(data.get("plan", {}).get("summary", "an action"))
            store.record(
                Event(
                    ts=self._clock(),
                    service=event.service,
                    kind=EventKind.ACTION,
                    replica_id=event.replica_id,
                    message=_one_line(
                        f"ACTION {summary} by {data.get('who')}: outcome unknown (wfdash stopped "
                        "while it ran; check `sky serve status` / `sky status`)"
                    ),
                    data={**data, "phase": "interrupted", "outcome": "unknown"},
                    dedupe_key=f"action:{data.get('action_id')}:interrupted",
                )
            )


def _replica_id(plan: Plan) -> int | None:
    action = plan.action
    return action.replica_id if isinstance(action, TerminateReplica) else None


def _append(record: ActionRecord, line: str) -> None:
    record.log.append(_one_line(line))
    del record.log[:-LOG_LINES]


def _copy(record: ActionRecord) -> ActionRecord:
    clone = copy.copy(record)
    clone.log = list(record.log)
    return clone


def _notify(running: _Running, snapshot: ActionRecord) -> None:
    # A display bug must not abort the action or lose its audit entry.
    with contextlib.suppress(Exception):
        running.on_update(snapshot)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return redact_text(" ".join(lines))[:500]


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (containers)
        return f"uid {os.getuid()}"


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
