"""A fake SkyPilot API server (0.14.x wire protocol) on 127.0.0.1, for contract tests.

Only a route's *execution* is faked: the test gives a Python callable per request name
(``serve.status``, ``status``, ``endpoints``) that returns what the server-side core
function would return, or raises what it would raise. Everything on the wire is made by
SkyPilot's own server-side code, as ``sky/server/server.py`` does it:

- ``RequestIDMiddleware``: every response carries ``X-Skypilot-Request-ID`` (a uuid4).
- ``APIVersionMiddleware``: when the client sends ``X-SkyPilot-API-Version`` and
  ``X-SkyPilot-Version``, ``versions.check_compatibility_at_server`` judges them (400
  ``{"error": "version_mismatch", "message": ...}`` when too old) and the response gets the
  server's own two version headers; the client's API version is set in the request context,
  so the version-aware return-value serializers see it (``serve.status`` drops replica
  handles for clients >= 51).
- ``POST /serve/status``, ``/status``, ``/endpoints``, ``/optimize``, ``/serve/update``,
  ``/serve/down``, ``/serve/terminate-replica``, ``/launch``, ``/cancel``, ``/api/cancel``:
  the JSON body is parsed into the real ``payloads.*Body``; a ``requests.Request`` is built
  as ``executor.prepare_request_async`` builds it (name ``'sky.' + RequestName``, the real
  entrypoint function, ``user_id`` from ``env_vars['SKYPILOT_USER_ID']``); the answer is
  ``200 null`` (FastAPI's ``-> None``), the id in the header only. The request then runs in
  a worker thread: ``set_return_value`` (the registered encoder; nothing for ``optimize``,
  scheduled with ``ignore_return_value``) or ``set_exception_stacktrace`` + ``set_error``
  (the pickled ``exceptions.serialize_exception``), as ``requests.set_request_succeeded/
  failed`` do. A core function may write to the request's log (:meth:`emit`, and
  :meth:`emit_status` for a spinner message, encoded as SkyPilot's server encodes it) and
  wait for a cancellation (:meth:`cancelled`). ``/api/cancel`` marks matching unfinished
  requests CANCELLED, as ``kill_requests_with_prefix`` does, and returns their ids.
- ``POST /validate``: not a request: 200, or 400 with ``{"detail": serialize_exception}``
  when the ``validate`` stand-in raises (``server.validate``).
- ``GET /api/get?request_id=<prefix>``: 404/400 ``{"detail": ...}`` for an unknown or
  ambiguous prefix; otherwise, once the request finished, ``Request.encode().model_dump()``,
  with status 200, or 500 wrapped in ``{"detail": ...}`` when the request failed
  (``server.api_get``).
- ``GET /api/stream?request_id=<prefix>``: the request's log as plain text while it runs,
  with the ``X-SkyPilot-Stream-Request-ID`` header, ending when the request ends.
- ``GET /api/health``: ``responses.APIHealthResponse`` dumped with ``exclude_unset``.

Everything else answers 404 like FastAPI, except ``/_sink/...`` (not SkyPilot: a place to
point telemetry URLs at, answering 204). Every request is recorded in ``seen``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sky
from aiohttp import web
from sky import core as sky_core
from sky import exceptions
from sky import execution as sky_execution
from sky.schemas.api import responses
from sky.serve.server import core as serve_core
from sky.server import common as server_common
from sky.server import constants as server_constants
from sky.server import versions
from sky.server.requests import payloads, request_names
from sky.server.requests import requests as requests_lib
from sky.skylet import constants as skylet_constants
from sky.utils import common as sky_common
from sky.utils import message_utils, rich_utils

# What a route's core function does: the parsed request body in, the core function's
# return value (before encoding) out, or an exception raised.
CoreFunction = Callable[[Any], Any]

REQUEST_ID_HEADER = "X-Skypilot-Request-ID"
_REQUEST_ID = web.RequestKey("request_id", str)


@dataclass(frozen=True)
class _Route:
    name: request_names.RequestName
    body_type: type[payloads.RequestBody]
    entrypoint: Callable[..., Any]
    schedule_type: requests_lib.ScheduleType
    cluster_name: Callable[[Any], str | None]
    ignore_return_value: bool = False


# As scheduled in sky/server/server.py and sky/serve/server/server.py.
_ROUTES: dict[str, _Route] = {
    "/serve/status": _Route(
        request_names.RequestName.SERVE_STATUS,
        payloads.ServeStatusBody,
        serve_core.status,
        requests_lib.ScheduleType.SHORT,
        lambda _: sky_common.SKY_SERVE_CONTROLLER_NAME,
    ),
    "/status": _Route(
        request_names.RequestName.CLUSTER_STATUS,
        payloads.StatusBody,
        sky_core.status,
        requests_lib.ScheduleType.SHORT,  # LONG only when refresh != NONE
        lambda _: None,
    ),
    "/endpoints": _Route(
        request_names.RequestName.CLUSTER_ENDPOINTS,
        payloads.EndpointsBody,
        sky_core.endpoints,
        requests_lib.ScheduleType.SHORT,
        lambda body: body.cluster,
    ),
    "/optimize": _Route(
        request_names.RequestName.OPTIMIZE,
        payloads.OptimizeBody,
        sky_core.optimize,
        requests_lib.ScheduleType.SHORT,
        lambda _: None,
        ignore_return_value=True,
    ),
    "/serve/update": _Route(
        request_names.RequestName.SERVE_UPDATE,
        payloads.ServeUpdateBody,
        serve_core.update,
        requests_lib.ScheduleType.SHORT,
        lambda _: sky_common.SKY_SERVE_CONTROLLER_NAME,
    ),
    "/serve/down": _Route(
        request_names.RequestName.SERVE_DOWN,
        payloads.ServeDownBody,
        serve_core.down,
        requests_lib.ScheduleType.SHORT,
        lambda _: sky_common.SKY_SERVE_CONTROLLER_NAME,
    ),
    "/serve/terminate-replica": _Route(
        request_names.RequestName.SERVE_TERMINATE_REPLICA,
        payloads.ServeTerminateReplicaBody,
        serve_core.terminate_replica,
        requests_lib.ScheduleType.SHORT,
        lambda _: sky_common.SKY_SERVE_CONTROLLER_NAME,
    ),
    "/launch": _Route(
        request_names.RequestName.CLUSTER_LAUNCH,
        payloads.LaunchBody,
        sky_execution.launch,
        requests_lib.ScheduleType.LONG,
        lambda body: body.cluster_name,
    ),
    "/cancel": _Route(
        request_names.RequestName.CLUSTER_JOB_CANCEL,
        payloads.CancelBody,
        sky_core.cancel,
        requests_lib.ScheduleType.SHORT,
        lambda body: body.cluster_name,
    ),
    "/api/cancel": _Route(
        request_names.RequestName.API_CANCEL,
        payloads.RequestCancelBody,
        requests_lib.kill_requests_with_prefix,
        requests_lib.ScheduleType.SHORT,
        lambda _: None,
    ),
}
_WAIT_S = 30.0  # how long /api/get waits for a request to finish


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    request_id: str  # what the response's X-Skypilot-Request-ID header said

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeSkyPilotApiServer:
    """``with FakeSkyPilotApiServer() as server:`` serves on ``server.url`` until exit."""

    api_version: int = server_constants.API_VERSION
    version: str = sky.__version__
    commit: str = sky.__commit__
    health_status: server_common.ApiServerStatus = server_common.ApiServerStatus.HEALTHY
    core: dict[str, CoreFunction] = field(default_factory=dict)  # by request name
    # What POST /validate runs on the parsed ValidateBody (raise to reject the DAG).
    validate: CoreFunction | None = None
    seen: list[SeenRequest] = field(default_factory=list)
    tasks: dict[str, requests_lib.Request] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)  # by request id
    # Uploaded file-mount zips (the client's /upload_v2 protocol), by blob id.
    uploads: dict[str, bytes] = field(default_factory=dict)
    _chunks: dict[str, dict[int, bytes]] = field(default_factory=dict)
    _done: dict[str, threading.Event] = field(default_factory=dict)
    _cancel: dict[str, threading.Event] = field(default_factory=dict)
    _current: threading.local = field(default_factory=threading.local)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def calls(self, path: str) -> list[SeenRequest]:
        return [r for r in self.seen if r.path == path]

    def bodies(self, path: str) -> list[Any]:
        """The parsed JSON bodies POSTed to ``path``, oldest first."""
        return [r.json() for r in self.calls(path)]

    # --- for core functions (they run in the request's worker thread) -----------------

    def emit(self, line: str) -> None:
        """Append a line to the running request's log (what /api/stream sends)."""
        self.logs[self._current.request_id].append(line if line.endswith("\n") else line + "\n")

    def emit_status(self, message: str) -> None:
        """A spinner message, encoded as the server writes ``rich_utils.safe_status``."""
        for control in (rich_utils.Control.INIT, rich_utils.Control.UPDATE):
            self.emit(message_utils.encode_payload(control.encode(message)))

    def cancelled(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the running request to be cancelled."""
        return self._cancel[self._current.request_id].wait(timeout)

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> FakeSkyPilotApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="fake-skypilot-api", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"fake SkyPilot API server did not start: {failure}")

    def stop(self) -> None:
        """Close the listening socket and every connection: the port refuses afterwards."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        if self._runner is not None:
            loop.run_until_complete(self._runner.cleanup())
        loop.close()

    async def _bind(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/health", self._health)
        app.router.add_get("/api/get", self._api_get)
        app.router.add_get("/api/stream", self._api_stream)
        app.router.add_post("/validate", self._validate)
        app.router.add_get("/upload_v2/blob", self._blob_exists)
        app.router.add_post("/upload_v2", self._upload_chunk)
        for path in _ROUTES:
            app.router.add_post(path, self._schedule)
        app.router.add_route("*", "/_sink/{tail:.*}", self._sink)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    # --- file mounts: sky.client.common.upload_mounts_to_api_server -----------------

    async def _blob_exists(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"exists": request.query["blob_id"] in self.uploads})

    async def _upload_chunk(self, request: web.Request) -> web.StreamResponse:
        upload_id = request.query["upload_id"]
        total = int(request.query["total_chunks"])
        chunks = self._chunks.setdefault(upload_id, {})
        chunks[int(request.query["chunk_index"])] = await request.read()
        if len(chunks) < total:
            return web.json_response({"status": responses.UploadStatus.UPLOADING.value})
        self.uploads[upload_id] = b"".join(chunks[i] for i in range(total))
        return web.json_response({"status": responses.UploadStatus.COMPLETED.value})

    # --- middleware: request ids and the version handshake ---------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        request_id = requests_lib.get_new_request_id()
        request[_REQUEST_ID] = request_id
        self.seen.append(
            SeenRequest(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                await request.read(),
                request_id,
            )
        )
        version_info = versions.check_compatibility_at_server(request.headers)
        if version_info is None:  # a client without version headers (pre-0.11)
            response = await self._dispatch(handler, request)
        else:
            if version_info.error is None:
                versions.set_remote_api_version(version_info.api_version)
                versions.set_remote_version(version_info.version)
                response = await self._dispatch(handler, request)
            else:
                response = web.json_response(
                    {
                        "error": server_common.ApiServerStatus.VERSION_MISMATCH.value,
                        "message": version_info.error,
                    },
                    status=400,
                )
            response.headers[server_constants.API_VERSION_HEADER] = str(self.api_version)
            response.headers[server_constants.VERSION_HEADER] = self.version
        response.headers[REQUEST_ID_HEADER] = request_id
        return response

    @staticmethod
    async def _dispatch(
        handler: Callable[[web.Request], Any], request: web.Request
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPNotFound:
            response = web.json_response({"detail": "Not Found"}, status=404)
        except web.HTTPMethodNotAllowed:
            response = web.json_response({"detail": "Method Not Allowed"}, status=405)
        return response

    # --- routes ----------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        health = responses.APIHealthResponse(
            status=self.health_status,
            api_version=str(self.api_version),
            version=self.version,
            version_on_disk=self.version,
            commit=self.commit,
            basic_auth_enabled=False,
            user=None,
            service_account_token_enabled=False,
            ingress_basic_auth_enabled=False,
            external_proxy_auth_enabled=False,
            latest_version=None,
            telemetry_enabled=True,
            restrict_config_to_admins=True,
        )
        return web.json_response(health.model_dump(mode="json", exclude_unset=True))

    async def _schedule(self, request: web.Request) -> web.Response:
        route = _ROUTES[request.path]
        body = route.body_type(**await request.json())
        # executor.prepare_request_async without an authenticated user:
        user_id = body.env_vars[skylet_constants.USER_ID_ENV_VAR]
        body.client_api_version = versions.get_remote_api_version()
        task = requests_lib.Request(
            request_id=request[_REQUEST_ID],
            name=server_constants.REQUEST_NAME_PREFIX + route.name,
            entrypoint=route.entrypoint,
            request_body=body,
            status=requests_lib.RequestStatus.PENDING,
            created_at=time.time(),
            schedule_type=route.schedule_type,
            user_id=user_id,
            cluster_name=route.cluster_name(body),
        )
        self.tasks[task.request_id] = task
        self._execute(task, route)
        return web.json_response(None)  # FastAPI's `-> None`: 200, body `null`

    def _execute(self, task: requests_lib.Request, route: _Route) -> None:
        """The worker's part, in a thread: run the core function, store the outcome."""
        request_id = task.request_id
        self.logs[request_id] = []
        self._done[request_id] = threading.Event()
        self._cancel[request_id] = threading.Event()
        task.status = requests_lib.RequestStatus.RUNNING
        task.pid = os.getpid()
        threading.Thread(
            target=self._work, args=(task, route), name=f"fake-sky-{request_id[:8]}", daemon=True
        ).start()

    def _work(self, task: requests_lib.Request, route: _Route) -> None:
        self._current.request_id = task.request_id
        core = self.core.get(route.name.value)
        if route.name is request_names.RequestName.API_CANCEL and core is None:
            core = self._kill_requests
        try:
            if core is None:
                raise NotImplementedError(f"the fake server has no {route.name.value!r}")
            result = core(task.request_body)
        except Exception as exc:
            if task.status is not requests_lib.RequestStatus.CANCELLED:
                requests_lib.set_exception_stacktrace(exc)
                task.status = requests_lib.RequestStatus.FAILED
                task.finished_at = time.time()
                task.set_error(exc)
        else:
            if task.status is not requests_lib.RequestStatus.CANCELLED:
                task.status = requests_lib.RequestStatus.SUCCEEDED
                task.finished_at = time.time()
                if result is not None and not route.ignore_return_value:
                    task.set_return_value(result)
        self._done[task.request_id].set()

    def _kill_requests(self, body: payloads.RequestCancelBody) -> list[str]:
        """``kill_requests_with_prefix``: unfinished requests matching a prefix → CANCELLED."""
        killed = []
        for request_id, task in list(self.tasks.items()):
            wanted = body.request_ids is None or any(
                request_id.startswith(p) for p in body.request_ids
            )
            if not wanted or request_id == self._current.request_id:
                continue
            if task.status in (
                requests_lib.RequestStatus.PENDING,
                requests_lib.RequestStatus.RUNNING,
            ):
                task.status = requests_lib.RequestStatus.CANCELLED
                task.finished_at = time.time()
                self._cancel[request_id].set()
                self._done[request_id].set()
                killed.append(request_id)
        return killed

    async def _validate(self, request: web.Request) -> web.Response:
        body = payloads.ValidateBody(**await request.json())
        if self.validate is not None:
            try:
                self.validate(body)
            except Exception as exc:
                requests_lib.set_exception_stacktrace(exc)
                detail = exceptions.serialize_exception(exc)
                return web.json_response({"detail": detail}, status=400)
        return web.json_response(None)

    def _find(self, prefix: str | None) -> tuple[str | None, web.Response | None]:
        """The request id a prefix names, or the error answer (as server.api_get words it)."""
        if prefix is None:
            return None, web.json_response({"detail": "request_id is required"}, status=422)
        matches = [rid for rid in self.tasks if rid.startswith(prefix)]
        if not matches:
            return None, web.json_response({"detail": f"Request {prefix!r} not found"}, status=404)
        if len(matches) > 1:
            detail = f"Multiple requests found for request ID prefix: {prefix}"
            return None, web.json_response({"detail": detail}, status=400)
        return matches[0], None

    async def _api_stream(self, request: web.Request) -> web.StreamResponse:
        prefix = request.query.get("request_id")
        request_id, error = self._find(prefix)
        if error is not None:
            return error
        assert request_id is not None and prefix is not None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/plain",
                "Cache-Control": "no-cache, no-transform",
                server_constants.STREAM_REQUEST_HEADER: prefix,
            }
        )
        await response.prepare(request)
        sent = 0
        done, log = self._done[request_id], self.logs[request_id]
        while True:
            finished = done.is_set()
            while sent < len(log):
                await response.write(log[sent].encode())
                sent += 1
            if finished:
                break
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    async def _api_get(self, request: web.Request) -> web.Response:
        request_id, error = self._find(request.query.get("request_id"))
        if error is not None:
            return error
        assert request_id is not None
        await asyncio.to_thread(self._done[request_id].wait, _WAIT_S)
        task = self.tasks[request_id]
        payload = task.encode().model_dump()
        if task.get_error() is not None:
            return web.json_response({"detail": payload}, status=500)
        return web.json_response(payload)

    async def _sink(self, request: web.Request) -> web.Response:
        return web.Response(status=204)
