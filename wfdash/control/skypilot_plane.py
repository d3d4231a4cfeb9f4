"""The real control plane: the ``sky`` SDK, called from the runner's worker thread.

``import sky`` happens here, in the worker, never on the UI thread. Every SDK call
returns a request id; :func:`sky.stream_and_get` then streams the request's log, which
becomes progress lines (redacted, one at a time; SkyPilot's spinner messages included),
and returns the result or raises the server-side error. A cancel asks the API server to
abort the request (:func:`sky.api_cancel`), as Ctrl-C does for the CLI; what SkyPilot had
already done stays done, and the cancellation message says so.

- Scale, backend switch and service cache rebuild: ``sky.serve.update(task, name, mode)``
  with the plan's task (skypilot/service.yaml + the deployed service section and envs
  with the change, see :mod:`wfdash.control.plan`).
- Launch: ``sky.launch(task, cluster_name=...)`` with the profile's inference YAML.
- Cluster cache rebuild: ``sky.cancel(name, all=True)`` (the running server would keep
  the port) then ``sky.launch`` with the new ``CACHE_VERSION``: setup runs again and,
  the cache key being new, builds from scratch.
- Terminate: ``sky.serve.terminate_replica(name, id, purge=False)``; down:
  ``sky.serve.down(name)``.

Errors are one line, as :mod:`wfdash.collect.sky_errors` words them for the read path:
no API server (wfdash never starts one), server down, ``No live services.``, network
errors, a controller still starting, and the server's own exceptions.
"""

from __future__ import annotations

import copy
import io
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from wfdash.collect.redact import redact_text
from wfdash.collect.sky_errors import call_sky, endpoint_description, first_line, strip_ansi
from wfdash.control.actions import (
    Down,
    LaunchReplica,
    RebuildCache,
    Scale,
    SwitchBackend,
    TerminateReplica,
)
from wfdash.control.deploy import DeploymentFiles
from wfdash.control.errors import ActionCancelled, ActionError
from wfdash.control.plan import Plan, masked_paths

_VERSION_LINE = re.compile(r"to version (\d+)")
_RICH_MARKUP = re.compile(r"\[/?[a-z]+(?: [a-z]+)*\]|\[/\]")


class SkyPilotControlPlane:
    def __init__(self, deploy: DeploymentFiles) -> None:
        self.deploy = deploy

    @property
    def description(self) -> str:
        return endpoint_description()

    def execute(self, plan: Plan, progress: Callable[[str], None], cancel: threading.Event) -> str:
        task = self._resolve_secrets(plan.task) if plan.task is not None else None
        return call_sky(lambda: _Execution(plan, task, progress, cancel).run(), ActionError)

    def _resolve_secrets(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """The task with the secrets SkyPilot never returns taken from the environment.

        A secret that cannot be filled stops the action before anything is sent: an update
        without it would replace every replica with ones that lack it.
        """
        filled = copy.deepcopy(dict(task))
        missing = []
        for path in masked_paths(task):
            value = self.deploy.environ.get(path[-1]) if len(path) == 2 else None
            if path[0] in ("envs", "secrets") and value:
                filled[path[0]][path[1]] = value
            else:
                missing.append(".".join(path))
        if missing:
            raise ActionError(
                f"{', '.join(missing)}: secret, and SkyPilot never returns secrets: set it in "
                f"wfdash's environment or in the YAML under {self.deploy.display(self.deploy.root)}"
                " (nothing was sent)"
            )
        return filled


class _Execution:
    """One plan's SDK calls, in the worker thread (``sky`` is imported by now)."""

    def __init__(
        self,
        plan: Plan,
        task: dict[str, Any] | None,
        progress: Callable[[str], None],
        cancel: threading.Event,
    ) -> None:
        self.plan = plan
        self.task = task
        self.progress = progress
        self.cancel = cancel

    def run(self) -> str:
        import sky
        from sky import exceptions

        self._check_cancel("cancelled before anything was sent")
        action = self.plan.action
        self.progress(f"$ {self.plan.command}")
        try:
            match action:
                case Scale() | SwitchBackend() | RebuildCache(target="service"):
                    mode = action.mode if isinstance(action, SwitchBackend) else "rolling"
                    self.progress("validating and optimizing the task (API server)")
                    request = sky.serve.update(
                        self._sky_task(), action.subject, sky.serve.UpdateMode(mode)
                    )
                    _, lines = self._follow(request)
                    version = next(
                        (m.group(1) for m in map(_VERSION_LINE.search, lines) if m), None
                    )
                    applied = f"as version {version}" if version else "(version not reported)"
                    return f"update scheduled {applied}; replicas update in the background"
                case RebuildCache():
                    self.progress(f"stopping {action.name}'s running server (sky cancel --all)")
                    self._follow(sky.cancel(action.name, all=True))
                    self._check_cancel(f"cancelled after {action.name}'s server was stopped")
                    return self._launch(action.name)
                case LaunchReplica():
                    return self._launch(action.cluster_name)
                case TerminateReplica():
                    self._follow(
                        sky.serve.terminate_replica(action.service, action.replica_id, False)
                    )
                    return f"replica #{action.replica_id} of {action.service} is shutting down"
                case Down():
                    self._follow(sky.serve.down(action.service))
                    return f"{action.service} is shutting down"
        except exceptions.RequestCancelled as exc:
            raise ActionCancelled(
                "SkyPilot cancelled the request; what it had done stays done (check "
                "`sky serve status` / `sky status`)"
            ) from exc
        except exceptions.ClusterNotUpError as exc:
            raise ActionError(_controller_message(exc)) from exc
        except RuntimeError as exc:
            if "still initializing its controller" in str(exc):
                raise ActionError(
                    f"{action.subject}'s controller is still starting: try again in a minute"
                ) from exc
            raise
        raise ActionError(f"SkyPilot cannot run {action.kind}")  # pragma: no cover

    def _sky_task(self) -> Any:
        import sky

        assert self.task is not None, "service updates and launches are planned with a task"
        return sky.Task.from_yaml_config(copy.deepcopy(self.task))

    def _launch(self, cluster: str) -> str:
        import sky

        self.progress(f"launching {cluster}: provisioning, setup, then the server")
        (job_id, *_), _ = self._follow(sky.launch(self._sky_task(), cluster_name=cluster))
        return f"{cluster} is up, server running as job {job_id}"

    def _follow(self, request_id: Any) -> tuple[Any, list[str]]:
        """Stream the request's log into progress (a cancel aborts the request); return
        its result and the log's last lines."""
        import sky

        stream = _ProgressStream(self.progress)
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if self.cancel.wait(0.2):
                    self.progress(f"cancelling SkyPilot request {str(request_id)[:8]}")
                    try:
                        sky.get(sky.api_cancel(request_id, silent=True))
                    except Exception as exc:
                        self.progress(f"cancel failed: {first_line(exc)}")
                    return

        watcher = threading.Thread(target=watch, name="wfdash-sky-cancel", daemon=True)
        watcher.start()
        try:
            result = sky.stream_and_get(request_id, output_stream=stream, relay_rich_status=True)
        finally:
            done.set()
            stream.close_lines()
        return result, list(stream.lines)

    def _check_cancel(self, message: str) -> None:
        if self.cancel.is_set():
            raise ActionCancelled(message)


def _controller_message(exc: BaseException) -> str:
    text = first_line(exc)
    if "No live services" in text or "No service is running" in text:
        return "SkyServe has no live services: no serve controller is running (nothing changed)"
    return text


class _ProgressStream(io.TextIOBase):
    """The ``output_stream`` SkyPilot prints a request's log to: whole lines → progress.

    Spinner updates arrive as encoded payloads (``relay_rich_status=True``); they become
    plain lines too, deduplicated. Everything is uncoloured and redacted.
    """

    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__()
        self._emit = emit
        self._partial = ""
        self._last = ""
        self.lines: deque[str] = deque(maxlen=200)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *complete, self._partial = re.split(r"\r\n|\r|\n", self._partial + text)
        for line in complete:
            self._line(line)
        return len(text)

    def close_lines(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, raw: str) -> None:
        from sky.utils import message_utils, rich_utils

        is_payload, decoded = message_utils.decode_payload(raw, raise_for_mismatch=False)
        if is_payload:
            control, message = rich_utils.Control.decode(decoded)
            if control not in (rich_utils.Control.INIT, rich_utils.Control.UPDATE):
                return
            raw = _RICH_MARKUP.sub("", str(message))
        line = redact_text(strip_ansi(raw)).strip()
        if not line or line == self._last:
            return
        self._last = line
        self.lines.append(line)
        self._emit(line)
