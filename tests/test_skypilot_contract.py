"""Contract tests of wfdash's real SkyPilot read path, over HTTP, with the real ``sky`` client.

``SkyPilotStatusSource`` calls ``sky.serve.status``/``sky.status``/``sky.endpoints`` and
``sky.get``; here those talk to :mod:`tests.skypilot_api_server` on 127.0.0.1, whose
payloads come from SkyPilot's own server-side encoders (``encode_serve_status``,
``encode_status``, ``encode_endpoints``), version-aware serializers and exception
serialization. Only the core functions behind the routes are stand-ins.

Nothing here touches the network beyond 127.0.0.1: replica endpoints are "scraped" through
an ``httpx.MockTransport`` that refuses, usage telemetry is off (or pointed at the fake
server), and no SkyPilot API server is ever started. The last tests pin read-path gaps these
contract tests found (and that skypilot_source.py now handles).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sky import exceptions, skypilot_config
from sky.schemas.api import responses
from sky.serve import serve_state
from sky.server import common as server_common
from sky.server.requests import payloads
from sky.skylet import constants as skylet_constants
from sky.usage import constants as usage_constants
from sky.utils import common as sky_common
from sky.utils import status_lib

from tests import records
from tests.skypilot_api_server import FakeSkyPilotApiServer
from wfdash.collect.kinds import (
    EventKind,
    Health,
    Layer,
    ReplicaStatus,
    ScrapeError,
    ServiceStatus,
)
from wfdash.collect.mapping import map_clusters, map_services
from wfdash.collect.poller import Poller, PollerConfig
from wfdash.collect.scrape import Scraper
from wfdash.collect.skypilot_source import SkyPilotStatusSource
from wfdash.collect.source import SourceError

ENDPOINT_ENV = skylet_constants.SKY_API_SERVER_URL_ENV_VAR  # SKYPILOT_API_SERVER_ENDPOINT
DISABLE_LOCAL_ENV = "SKYPILOT_DISABLE_LOCAL_API_SERVER"
LOCAL_PORT = server_common.DEFAULT_SERVER_PORT  # 46580
USER_HASH = "c0ffee42"
CONTROLLER = sky_common.SKY_SERVE_CONTROLLER_NAME
HF_TOKEN = "hf_abcdefghijklmnopqrstuvwxyz"  # in records.SERVICE_YAML
PROBE_TOKEN = "sk-live-probe-token-123456"  # ditto, in the readiness probe headers
BENCH_HF_TOKEN = "hf_benchbenchbenchbench01"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


LOCAL_PORT_BUSY_BEFORE = _listening(LOCAL_PORT)


# --- what the core functions behind the routes return ---------------------------------


def service_records() -> list[dict[str, Any]]:
    """Fresh ``serve.status`` records as ``serve_utils._get_service_status`` builds them."""
    gcp_spot = records.cloud_replica(3)
    aws_preempted = records.cloud_replica(
        4,
        cloud="AWS",
        region="us-east-1",
        zone="us-east-1a",
        instance="r7a.4xlarge",
        status="PREEMPTED",
    )
    k8s_provisioning = records.cloud_replica(
        5,
        cloud="Kubernetes",
        region="gke-burst",
        zone="gke-burst",
        instance="",
        status="PROVISIONING",
        spot=False,
        endpoint=None,
        launched_at=None,
        status_detail="waiting for queue admission",
        resources_str="1x(cpus=16, mem=64, ...)",
        resources_str_full="1x(cpus=16, mem=64, disk=256, ports=['8080'])",
        infra="Kubernetes (gke-burst)",
    )
    pending = {  # no cluster yet: ReplicaInfo.to_info_dict writes no cloud/region/infra
        "replica_id": 6,
        "name": "wf-bitnet-6",
        "status": "PENDING",
        "version": 3,
        "replica_info_version": 1,
        "endpoint": None,
        "is_spot": True,
        "launched_at": None,
        "handle": None,
    }
    bitnet = records.service(
        [
            records.ssh_replica(1),
            records.ssh_replica(2, host="10.100.1.2"),
            gcp_spot,
            aws_preempted,
            k8s_provisioning,
            pending,
        ],
        pool_yaml="",
    )
    llama = records.service(
        [],
        name="wf-llama",
        controller_job_id=8,
        status="NO_REPLICA",
        uptime=None,
        policy="Fixed 1 replica",
        version=1,
        active_versions=[],
        target_num_replicas=None,  # the controller's /autoscaler/info call failed
        yaml_content="name: wf-llama\nservice:\n  replicas: 1\nenvs:\n  BACKEND: llamacpp\n",
        pool_yaml="",
        endpoint=None,
    )
    out = [bitnet, llama]
    for svc in out:  # the controller hands over enums, as serve_state defines them
        svc["status"] = serve_state.ServiceStatus(svc["status"])
        for replica in svc["replica_info"]:
            replica["status"] = serve_state.ReplicaStatus(replica["status"])
    return out


BENCH_YAML = f"""\
name: wf-bench
resources:
  infra: gcp/us-central1
  instance_type: c3d-standard-16
  ports: 8080
envs:
  BACKEND: llamacpp
  CACHE_VERSION: v3
  HF_TOKEN: {BENCH_HF_TOKEN}
run: ./serve.sh
"""


def _cluster(
    name: str,
    status: status_lib.ClusterStatus,
    cloud: str,
    region: str,
    instance: str,
    **extra: Any,
) -> responses.StatusResponse:
    fields: dict[str, Any] = {
        "name": name,
        "launched_at": 1_763_790_000,
        "handle": None,
        "last_use": f"sky launch -c {name}",
        "status": status,
        "autostop": -1,
        "to_down": False,
        "cluster_hash": f"{name}-hash",
        "cluster_ever_up": True,
        "status_updated_at": 1_763_790_600,
        "user_hash": USER_HASH,
        "user_name": "wf",
        "workspace": "default",
        "is_managed": False,
        "nodes": 1,
        "cloud": cloud,
        "region": region,
        "cpus": "16",
        "memory": "64",
        "resources_str": f"1x(cpus=16, mem=64, {instance}, ...)",
        "resources_str_full": f"1x(cpus=16, mem=64, {instance}, disk=256)",
    }
    fields.update(extra)
    return responses.StatusResponse.model_validate(fields)


def cluster_records() -> list[responses.StatusResponse]:
    """What ``sky.core.status`` returns: StatusResponse models (handle None on purpose)."""
    up, stopped = status_lib.ClusterStatus.UP, status_lib.ClusterStatus.STOPPED
    return [
        _cluster(
            "wf-bench",
            up,
            "GCP",
            "us-central1",
            "c3d-standard-16",
            last_creation_yaml=BENCH_YAML,
            last_event="Running setup: building BitNet.cpp (cache miss)",
        ),
        _cluster("wf-dev", stopped, "AWS", "us-east-1", "r7a.4xlarge"),
        _cluster("wf-box", up, "SSH", "ssh-hetzner-base", "16CPU--128GB"),
        _cluster("wf-gone", up, "GCP", "us-central1", "c3d-standard-16"),
        _cluster(CONTROLLER, up, "GCP", "us-central1", "n2-standard-4"),
    ]


# Per cluster: what ``sky.core.endpoints(cluster, 8080)`` returns, or raises.
ENDPOINTS: dict[str, dict[int, str] | Exception] = {
    "wf-bench": {8080: "34.118.2.7:8080"},  # SocketEndpoint.url(): no scheme
    "wf-box": {},  # port 8080 not exposed: a warning on the server, {} to the client
    "wf-gone": exceptions.ClusterNotUpError(
        "Cluster 'wf-gone' is not in UP status.",
        cluster_status=status_lib.ClusterStatus.INIT,
    ),
    CONTROLLER: {},
}


def serve_status_core(body: payloads.ServeStatusBody) -> list[dict[str, Any]]:
    names = body.service_names
    wanted = [names] if isinstance(names, str) else names
    return [r for r in service_records() if wanted is None or r["name"] in wanted]


def cluster_status_core(body: payloads.StatusBody) -> list[responses.StatusResponse]:
    names = body.cluster_names
    return [c for c in cluster_records() if names is None or c.name in names]


def endpoints_core(body: payloads.EndpointsBody) -> dict[int, str]:
    answer = ENDPOINTS.get(body.cluster)
    if answer is None:
        raise exceptions.ClusterNotUpError(f"Cluster {body.cluster!r} not found.")
    if isinstance(answer, Exception):
        raise answer
    port = int(body.port) if body.port is not None else None
    return {p: url for p, url in answer.items() if port is None or p == port}


def raising(exc: BaseException) -> Callable[[Any], Any]:
    def core(_: Any) -> Any:
        raise exc

    return core


class HttpError(Exception):
    """A cloud SDK's exception on the server: serialize_exception wraps it in CloudError."""


HttpError.__module__ = "googleapiclient.errors"


# --- fixtures --------------------------------------------------------------------------


def _reset_sky_client() -> None:
    """Forget what the client cached about the endpoint, its health and the config."""
    skypilot_config.reload_config()
    server_common.get_server_url.cache_clear()
    server_common.is_api_server_local.cache_clear()
    server_common.get_api_server_status_response.cache_clear()


@pytest.fixture(scope="module", autouse=True)
def _no_api_server_started() -> Iterator[None]:
    yield
    if not LOCAL_PORT_BUSY_BEFORE:
        assert not _listening(LOCAL_PORT), f"something started an API server on :{LOCAL_PORT}"


@pytest.fixture(autouse=True)
def sky_env(tmp_path: Any) -> Iterator[pytest.MonkeyPatch]:
    """No user config, credentials, cookies or telemetry; no local API server."""
    home = tmp_path / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.chdir(tmp_path)  # no project .sky.yaml
        for name in (
            ENDPOINT_ENV,
            skylet_constants.SKY_API_SERVER_LOCAL_PORT_ENV_VAR,
            skylet_constants.SERVICE_ACCOUNT_TOKEN_ENV_VAR,
            skypilot_config.ENV_VAR_SKYPILOT_CONFIG,
            skypilot_config.ENV_VAR_GLOBAL_CONFIG,
            skypilot_config.ENV_VAR_PROJECT_CONFIG,
            "SKYPILOT_API_COOKIE_FILE",
            "SKYPILOT_DEBUG",
        ):
            mp.delenv(name, raising=False)
        mp.setenv(DISABLE_LOCAL_ENV, "1")
        mp.setenv("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
        mp.setenv("DO_NOT_TRACK", "1")
        mp.setenv(skylet_constants.USER_ID_ENV_VAR, USER_HASH)  # no ~/.sky/user_hash
        _reset_sky_client()
        yield mp
    _reset_sky_client()


@pytest.fixture
def server(sky_env: pytest.MonkeyPatch) -> Iterator[FakeSkyPilotApiServer]:
    with FakeSkyPilotApiServer() as fake:
        fake.core.update(
            {
                "serve.status": serve_status_core,
                "status": cluster_status_core,
                "endpoints": endpoints_core,
            }
        )
        sky_env.setenv(ENDPOINT_ENV, fake.url)
        _reset_sky_client()
        yield fake


async def _source_error(fetch: Callable[[], Any]) -> str:
    with pytest.raises(SourceError) as info:
        await fetch()
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --- the happy path --------------------------------------------------------------------


async def test_services_round_trip_through_the_real_client(
    server: FakeSkyPilotApiServer,
) -> None:
    raw = await SkyPilotStatusSource().fetch_services()

    # The wire: health check, the request, then its result by id (from the header).
    assert [(r.method, r.path) for r in server.seen] == [
        ("GET", "/api/health"),
        ("POST", "/serve/status"),
        ("GET", "/api/get"),
    ]
    health, post, get = server.seen
    assert health.headers["X-SkyPilot-API-Version"] == str(server.api_version)
    assert post.json()["service_names"] is None
    assert post.json()["env_vars"][skylet_constants.USER_ID_ENV_VAR] == USER_HASH
    assert get.query["request_id"] == post.request_id  # from the response header
    assert server.tasks[get.query["request_id"]].name == "sky.serve.status"

    # The client decoded the enums back; replica handles are None for API >= 51.
    assert [r["name"] for r in raw] == ["wf-bitnet", "wf-llama"]
    bitnet = raw[0]
    assert bitnet["status"] is serve_state.ServiceStatus.READY
    assert {r["status"] for r in bitnet["replica_info"]} >= {
        serve_state.ReplicaStatus.PREEMPTED,
        serve_state.ReplicaStatus.PROVISIONING,
    }
    assert all(r["handle"] is None for r in bitnet["replica_info"])
    assert HF_TOKEN in bitnet["yaml_content"]  # the raw record carries the secret...

    services = map_services(raw)
    bitnet_svc, llama = services
    for svc in services:  # ...the mapped Service never does
        dumped = svc.model_dump_json()
        assert HF_TOKEN not in dumped and PROBE_TOKEN not in dumped
    assert bitnet_svc.envs["HF_TOKEN"] == "***"
    assert bitnet_svc.envs["BACKEND"] == "bitnet"
    assert bitnet_svc.status is ServiceStatus.READY
    assert bitnet_svc.endpoint == "http://34.10.20.30:30001"
    assert bitnet_svc.target_num_replicas == 4
    assert (bitnet_svc.policy.min_replicas, bitnet_svc.policy.max_replicas) == (3, 8)
    rows = [
        (r.replica_id, r.status, r.layer, r.provider, r.pool, r.is_spot, r.instance_type)
        for r in bitnet_svc.replicas
    ]
    assert rows == [
        (1, ReplicaStatus.READY, Layer.BASE, "hetzner-base", "hetzner-base", False, "16CPU--128GB"),
        (2, ReplicaStatus.READY, Layer.BASE, "hetzner-base", "hetzner-base", False, "16CPU--128GB"),
        (3, ReplicaStatus.READY, Layer.BURST, "gcp", None, True, "c3d-standard-16"),
        (4, ReplicaStatus.PREEMPTED, Layer.BURST, "aws", None, True, "r7a.4xlarge"),
        (5, ReplicaStatus.PROVISIONING, Layer.BURST, "other", None, False, None),
        (6, ReplicaStatus.PENDING, Layer.UNPLACED, "other", None, True, None),
    ]
    assert bitnet_svc.replicas[4].status_detail == "waiting for queue admission"
    assert bitnet_svc.replicas[4].infra == "Kubernetes (gke-burst)"
    assert [r.status_detail for r in bitnet_svc.replicas if r.replica_id != 5] == [None] * 5
    assert bitnet_svc.health is Health.DEGRADED
    assert bitnet_svc.health_reason == "3/4 ready, 1 preempted"

    assert llama.status is ServiceStatus.NO_REPLICA
    assert llama.target_num_replicas is None and llama.replicas == ()
    assert llama.health is Health.DOWN


async def test_service_names_reach_the_server(server: FakeSkyPilotApiServer) -> None:
    raw = await SkyPilotStatusSource(["wf-llama"]).fetch_services()
    assert [r["name"] for r in raw] == ["wf-llama"]
    assert server.calls("/serve/status")[0].json()["service_names"] == ["wf-llama"]


async def test_clusters_get_the_serving_endpoint(server: FakeSkyPilotApiServer) -> None:
    raw = await SkyPilotStatusSource().fetch_clusters()

    by_name = {r["name"]: r for r in raw}
    assert set(by_name) == {"wf-bench", "wf-dev", "wf-box", "wf-gone", CONTROLLER}
    assert by_name["wf-bench"]["status"] is status_lib.ClusterStatus.UP
    assert {name: r["endpoint"] for name, r in by_name.items()} == {
        "wf-bench": "http://34.118.2.7:8080",
        "wf-dev": None,  # STOPPED: not asked
        "wf-box": None,  # port not exposed: {}
        "wf-gone": None,  # ClusterNotUpError from /endpoints: no endpoint, no failure
        CONTROLLER: None,
    }
    asked = [(c.json()["cluster"], c.json()["port"]) for c in server.calls("/endpoints")]
    assert sorted(asked) == sorted(
        (name, 8080) for name in ("wf-bench", "wf-box", "wf-gone", CONTROLLER)
    )

    clusters = map_clusters(raw)
    assert [c.name for c in clusters] == ["wf-bench", "wf-box", "wf-dev", "wf-gone"]
    bench = clusters[0]
    assert (bench.status, bench.provider, bench.instance_type) == ("UP", "gcp", "c3d-standard-16")
    assert bench.endpoint == "http://34.118.2.7:8080"
    assert bench.envs["HF_TOKEN"] == "***" and bench.cache_version == "v3"
    assert bench.last_event == "Running setup: building BitNet.cpp (cache miss)"
    assert BENCH_HF_TOKEN not in bench.model_dump_json()
    assert clusters[2].status == "STOPPED"


# --- errors ----------------------------------------------------------------------------


async def test_no_live_services_is_an_empty_list(server: FakeSkyPilotApiServer) -> None:
    server.core["serve.status"] = raising(exceptions.ClusterNotUpError("No live services."))
    assert await SkyPilotStatusSource().fetch_services() == []
    [get] = server.calls("/api/get")
    assert server.tasks[get.query["request_id"]].status.value == "FAILED"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ValueError(
                "Failed to reach the controller with token=s3cr3t-value-123\n"
                "Traceback (most recent call last):\n  ..."
            ),
            "ValueError: Failed to reach the controller with token=***",
        ),
        (  # not safe to unpickle on a client: exceptions.wrap_exception -> CloudError
            HttpError("<HttpError 403 when requesting compute/v1 returned Forbidden>\n..."),
            "CloudError: googleapiclient error (HttpError): <HttpError 403 when requesting "
            "compute/v1 returned Forbidden>",
        ),
        (RuntimeError("Failed to fetch services"), "Failed to fetch services"),
    ],
    ids=["multiline-with-secret", "cloud-sdk-error", "runtime-error"],
)
async def test_server_side_failure_is_one_readable_line(
    server: FakeSkyPilotApiServer, exc: Exception, expected: str
) -> None:
    server.core["serve.status"] = raising(exc)
    server.core["status"] = raising(exc)
    source = SkyPilotStatusSource()
    assert await _source_error(source.fetch_services) == expected
    assert await _source_error(source.fetch_clusters) == expected


async def test_network_error_on_the_server_gets_wfdash_message(
    server: FakeSkyPilotApiServer,
) -> None:
    # impl.status: backend_utils.check_network_connection() failed on the API server.
    server.core["serve.status"] = raising(
        RuntimeError("Failed to refresh services status due to network error.")
    )
    message = await _source_error(SkyPilotStatusSource().fetch_services)
    assert message.startswith("SkyPilot could not refresh service status: the API server")
    assert "network check failed" in message


async def test_server_down_is_unreachable(sky_env: pytest.MonkeyPatch) -> None:
    with FakeSkyPilotApiServer() as fake:
        url = fake.url
    sky_env.setenv(ENDPOINT_ENV, url)  # nothing listens there any more
    _reset_sky_client()
    source = SkyPilotStatusSource()
    for fetch in (source.fetch_services, source.fetch_clusters):
        message = await _source_error(fetch)
        assert message.startswith("SkyPilot API server unreachable: ")
        assert url in message
    if not LOCAL_PORT_BUSY_BEFORE:
        assert not _listening(LOCAL_PORT)


async def test_auth_required_is_one_readable_line(sky_env: pytest.MonkeyPatch) -> None:
    with FakeSkyPilotApiServer(health_status=server_common.ApiServerStatus.NEEDS_AUTH) as fake:
        sky_env.setenv(ENDPOINT_ENV, fake.url)
        _reset_sky_client()
        message = await _source_error(SkyPilotStatusSource().fetch_services)
        assert message.startswith(f"Authentication required for SkyPilot API server at {fake.url}")
        assert fake.calls("/serve/status") == []


async def test_too_old_server_is_reported(sky_env: pytest.MonkeyPatch) -> None:
    with FakeSkyPilotApiServer(api_version=20, version="0.10.0") as fake:
        sky_env.setenv(ENDPOINT_ENV, fake.url)
        _reset_sky_client()
        message = await _source_error(SkyPilotStatusSource().fetch_services)
        assert "Your SkyPilot API server version is too old: 0.10.0" in message
        assert fake.calls("/serve/status") == []


async def test_no_endpoint_configured_starts_no_server(sky_env: pytest.MonkeyPatch) -> None:
    if LOCAL_PORT_BUSY_BEFORE:
        pytest.skip(f"something already listens on 127.0.0.1:{LOCAL_PORT}")
    sky_env.delenv(DISABLE_LOCAL_ENV)  # wfdash must set it itself (restored afterwards)
    _reset_sky_client()
    message = await _source_error(SkyPilotStatusSource().fetch_services)
    assert message.startswith("no SkyPilot API server is running and wfdash does not start one")
    assert os.environ[DISABLE_LOCAL_ENV] == "1"
    assert not _listening(LOCAL_PORT)


# --- a whole poll cycle ----------------------------------------------------------------


def _refusing_scraper(asked: list[str]) -> Scraper:
    def refuse(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    return Scraper(timeout=1, transport=httpx.MockTransport(refuse))


async def test_poller_cycle_over_the_real_client(server: FakeSkyPilotApiServer) -> None:
    asked: list[str] = []
    poller = Poller(SkyPilotStatusSource(), _refusing_scraper(asked))
    snapshot = await poller.cycle()

    assert snapshot.status_ok and snapshot.status_error is None
    assert snapshot.source == f"skypilot {server.url}"
    assert [v.service.name for v in snapshot.services] == ["wf-bitnet", "wf-llama"]
    assert [v.cluster.name for v in snapshot.clusters] == [
        "wf-bench",
        "wf-box",
        "wf-dev",
        "wf-gone",
    ]
    # Only replicas that may serve, and UP clusters with an endpoint, are scraped.
    assert sorted(asked) == [
        "http://10.100.1.1:8080/metrics",
        "http://10.100.1.2:8080/metrics",
        "http://34.1.2.3:8080/metrics",
        "http://34.118.2.7:8080/metrics",
    ]
    bitnet = snapshot.services[0]
    errors = {v.replica.replica_id: v.scrape_error for v in bitnet.replicas}
    assert errors == {
        1: ScrapeError.REFUSED,
        2: ScrapeError.REFUSED,
        3: ScrapeError.REFUSED,
        4: None,
        5: None,
        6: None,
    }
    assert bitnet.qps is None and not bitnet.qps_complete
    assert snapshot.clusters[0].scrape_error is ScrapeError.REFUSED
    assert (snapshot.stats.scrapes, snapshot.stats.scrape_errors) == (4, 4)
    dumped = json.dumps(snapshot.to_dict())
    for secret in (HF_TOKEN, PROBE_TOKEN, BENCH_HF_TOKEN):
        assert secret not in dumped
    await poller.scraper.aclose()


# --- gaps found by these tests, fixed in skypilot_source.py --------------------------


async def test_unreachable_controller_is_not_no_services(server: FakeSkyPilotApiServer) -> None:
    poller = Poller(
        SkyPilotStatusSource(), _refusing_scraper([]), config=PollerConfig(status_interval=0)
    )
    first = await poller.cycle()
    assert [v.service.name for v in first.services] == ["wf-bitnet", "wf-llama"]
    server.core["serve.status"] = raising(
        exceptions.ClusterNotUpError(
            "Failed to connect to serve controller, please try again later.",
            cluster_status=status_lib.ClusterStatus.INIT,
        )
    )
    poller.refresh_status_now()
    second = await poller.cycle()
    await poller.scraper.aclose()
    assert not [e for e in second.events if e.kind is EventKind.SERVICE_REMOVED]
    assert not second.status_ok
    assert [v.service.name for v in second.services] == ["wf-bitnet", "wf-llama"]


@pytest.mark.parametrize("case", ["server-runtime-error", "client-version-check"])
async def test_no_terminal_escape_codes_in_errors(
    server: FakeSkyPilotApiServer, sky_env: pytest.MonkeyPatch, case: str
) -> None:
    if case == "server-runtime-error":
        server.core["serve.status"] = raising(
            RuntimeError("\x1b[31mFailed to fetch services\x1b[0m")
        )
        message = await _source_error(SkyPilotStatusSource().fetch_services)
    else:
        with FakeSkyPilotApiServer(api_version=20, version="0.10.0") as old:
            sky_env.setenv(ENDPOINT_ENV, old.url)
            _reset_sky_client()
            message = await _source_error(SkyPilotStatusSource().fetch_services)
    assert "\x1b" not in message


async def test_server_dying_between_reads_is_unreachable(sky_env: pytest.MonkeyPatch) -> None:
    with FakeSkyPilotApiServer() as fake:
        fake.core["serve.status"] = serve_status_core
        sky_env.setenv(ENDPOINT_ENV, fake.url)
        _reset_sky_client()
        source = SkyPilotStatusSource()
        assert len(await source.fetch_services()) == 2
        server_common.get_api_server_status(fake.url)  # as a read a moment ago left it
    message = await _source_error(source.fetch_services)
    assert message.startswith("SkyPilot API server unreachable")


async def test_status_reads_send_no_usage_telemetry(
    server: FakeSkyPilotApiServer, sky_env: pytest.MonkeyPatch
) -> None:
    sky_env.delenv("SKYPILOT_DISABLE_USAGE_COLLECTION")
    sky_env.delenv("DO_NOT_TRACK")
    sky_env.delenv("SCARF_NO_ANALYTICS", raising=False)
    sky_env.setattr(usage_constants, "LOG_URL", f"{server.url}/_sink/loki/api/v1/push")
    sky_env.setattr(usage_constants, "SCARF_GATEWAY_URL", f"{server.url}/_sink/scarf")
    # A fresh context, as in wfdash where `import sky` happens in a worker thread: this
    # module imported sky in the main thread, whose usage state the calls would share.
    task = asyncio.get_running_loop().create_task(
        SkyPilotStatusSource().fetch_services(), context=contextvars.Context()
    )
    assert len(await task) == 2
    sent = [r.path for r in server.seen if r.path.startswith("/_sink/")]
    assert sent == []
