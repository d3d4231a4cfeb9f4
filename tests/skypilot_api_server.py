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
- ``POST /serve/status``, ``POST /status``, ``POST /endpoints``: the JSON body is parsed
  into the real ``payloads.*Body``; a ``requests.Request`` is built as
  ``executor.prepare_request_async`` builds it (name ``'sky.' + RequestName``, the real
  entrypoint function, ``user_id`` from ``env_vars['SKYPILOT_USER_ID']``); the answer is
  ``200 null`` (FastAPI's ``-> None``), the id in the header only. The request then
  "runs": ``set_return_value`` (the registered encoder) or ``set_exception_stacktrace`` +
  ``set_error`` (the pickled ``exceptions.serialize_exception``), as
  ``requests.set_request_succeeded/failed`` do.
- ``GET /api/get?request_id=<prefix>``: 404/400 ``{"detail": ...}`` for an unknown or
  ambiguous prefix; otherwise ``Request.encode().model_dump()``, with status 200, or 500
  wrapped in ``{"detail": ...}`` when the request failed (``server.api_get``).
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
from sky.schemas.api import responses
from sky.serve.server import core as serve_core
from sky.server import common as server_common
from sky.server import constants as server_constants
from sky.server import versions
from sky.server.requests import payloads, request_names
from sky.server.requests import requests as requests_lib
from sky.skylet import constants as skylet_constants
from sky.utils import common as sky_common

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
}


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
    seen: list[SeenRequest] = field(default_factory=list)
    tasks: dict[str, requests_lib.Request] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None
    _port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def calls(self, path: str) -> list[SeenRequest]:
        return [r for r in self.seen if r.path == path]

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
        for path in _ROUTES:
            app.router.add_post(path, self._schedule)
        app.router.add_route("*", "/_sink/{tail:.*}", self._sink)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

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
        """The worker's part: run the core function, store the encoded outcome."""
        task.status = requests_lib.RequestStatus.RUNNING
        task.pid = os.getpid()
        core = self.core.get(route.name.value)
        try:
            if core is None:
                raise NotImplementedError(f"the fake server has no {route.name.value!r}")
            result = core(task.request_body)
        except Exception as exc:
            requests_lib.set_exception_stacktrace(exc)
            task.status = requests_lib.RequestStatus.FAILED
            task.finished_at = time.time()
            task.set_error(exc)
        else:
            task.status = requests_lib.RequestStatus.SUCCEEDED
            task.finished_at = time.time()
            if result is not None:
                task.set_return_value(result)

    async def _api_get(self, request: web.Request) -> web.Response:
        prefix = request.query.get("request_id")
        if prefix is None:
            return web.json_response({"detail": "request_id is required"}, status=422)
        matches = [rid for rid in self.tasks if rid.startswith(prefix)]
        if not matches:
            return web.json_response({"detail": f"Request {prefix!r} not found"}, status=404)
        if len(matches) > 1:
            detail = f"Multiple requests found for request ID prefix: {prefix}"
            return web.json_response({"detail": detail}, status=400)
        task = self.tasks[matches[0]]
        payload = task.encode().model_dump()
        if task.get_error() is not None:
            return web.json_response({"detail": payload}, status=500)
        return web.json_response(payload)

    async def _sink(self, request: web.Request) -> web.Response:
        return web.Response(status=204)
