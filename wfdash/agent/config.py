"""The agent's settings, from command-line flags over `WFDASH_*` environment variables."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .buildinfo import DEFAULT_PATH

DEFAULT_TOKEN_ENV = "WFDASH_METRICS_TOKEN"
"""Where the /metrics bearer token is read from: the variable the dashboard reads too."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    backend_url: str = "http://127.0.0.1:8081"
    host: str = "0.0.0.0"
    port: int = 8080
    build_info_path: str | None = DEFAULT_PATH  # None: no build-info gauge
    metrics_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float | None = None  # longest silence from the backend mid-request
    health_timeout: float = 5.0
    # Below wfdash's 3 s scrape timeout: a backend busy with a long prefill (llama-server
    # answers /metrics after its decode step) costs its own families, not the agent's.
    metrics_timeout: float = 2.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_connections: int = 1024
    log_level: str = "info"


DESCRIPTION = """\
wfdash replica agent: a reverse proxy in front of an LLM inference backend (BitNet's
llama-server or vLLM) that measures what the backend cannot tell about itself.

It relays every request to the backend unchanged (the OpenAI API: /v1/completions,
/v1/chat/completions, /v1/models, JSON and SSE streams; hop-by-hop headers aside, bytes
and headers are left alone), answers /health from the backend's /health (503 while it
loads or when it cannot be reached), and serves /metrics: its own wfdash_agent_* families
(requests by route and outcome, requests in flight and queued, time to first token and
end-to-end latency histograms, tokens from `usage`, the replica's build info) followed by
the backend's own /metrics, unchanged.

Every option can also be set in the environment variable shown; a flag wins.
"""

EPILOG = f"""\
The build-info file is the JSON the replica's setup writes (docs/agent.md), e.g.
  {{"backend": "bitnet", "model": "tiiuae/Falcon3-7B-Instruct-1.58bit", "quant_type": "i2_s",
   "cache_version": "v1", "cache_hit": true, "build_seconds": 4}}

When ${DEFAULT_TOKEN_ENV} (or the variable --metrics-token-env names) is set, /metrics
wants "Authorization: Bearer <token>"; /health and the proxied API never do.

Example:
  python -m wfdash.agent --port 8080 --backend http://127.0.0.1:8081
"""


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _backend(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"want http://host:port, got {text!r}")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"no query or fragment allowed: {text!r}")
    return text.rstrip("/")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfdash-agent",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = AgentConfig()

    def option(flag: str, var: str, default: object, help_: str, **kwargs: object) -> None:
        parser.add_argument(
            flag,
            default=env.get(var, default),
            help=f"{help_} [${var}; default: %(default)s]",
            **kwargs,  # type: ignore[arg-type]
        )

    option("--port", "WFDASH_AGENT_PORT", defaults.port, "port to listen on", type=_port)
    option("--host", "WFDASH_AGENT_HOST", defaults.host, "address to listen on")
    option(
        "--backend",
        "WFDASH_AGENT_BACKEND",
        defaults.backend_url,
        "the backend's base URL (keep it on loopback)",
        type=_backend,
    )
    option(
        "--build-info",
        "WFDASH_BUILD_INFO",
        defaults.build_info_path,
        "JSON file the replica's setup wrote ('' for none)",
    )
    option(
        "--metrics-token-env",
        "WFDASH_AGENT_METRICS_TOKEN_ENV",
        DEFAULT_TOKEN_ENV,
        "NAME of the environment variable holding the /metrics bearer token",
    )
    option(
        "--connect-timeout",
        "WFDASH_AGENT_CONNECT_TIMEOUT",
        defaults.connect_timeout,
        "seconds to wait for a connection to the backend",
        type=_positive,
    )
    option(
        "--read-timeout",
        "WFDASH_AGENT_READ_TIMEOUT",
        0,
        "longest silence (s) allowed from the backend during a request; 0: no limit "
        "(a queued llama-server request can wait minutes)",
        type=float,
    )
    option(
        "--health-timeout",
        "WFDASH_AGENT_HEALTH_TIMEOUT",
        defaults.health_timeout,
        "seconds /health waits for the backend's /health before answering 503",
        type=_positive,
    )
    option(
        "--metrics-timeout",
        "WFDASH_AGENT_METRICS_TIMEOUT",
        defaults.metrics_timeout,
        "seconds /metrics waits for the backend's /metrics (llama-server answers after "
        "its current decode step) before answering without it",
        type=_positive,
    )
    option(
        "--max-body",
        "WFDASH_AGENT_MAX_BODY",
        defaults.max_body_bytes,
        "largest request body in bytes (413 above)",
        type=_count,
    )
    option(
        "--max-connections",
        "WFDASH_AGENT_MAX_CONNECTIONS",
        defaults.max_connections,
        "connections to the backend at once; more requests wait for one",
        type=_count,
    )
    option(
        "--log-level",
        "WFDASH_AGENT_LOG_LEVEL",
        defaults.log_level,
        "debug, info, warning or error",
        choices=("debug", "info", "warning", "error"),
    )
    return parser


def parse_config(argv: Sequence[str], env: Mapping[str, str]) -> AgentConfig:
    """The config from `argv` (without the program name) and `env`; exits 2 when invalid."""
    parser = _parser(env)
    args = parser.parse_args(list(argv))
    if args.read_timeout < 0:
        parser.error("--read-timeout must be >= 0")
    return AgentConfig(
        backend_url=args.backend,
        host=args.host,
        port=args.port,
        build_info_path=args.build_info or None,
        metrics_token=env.get(args.metrics_token_env) or None,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout or None,
        health_timeout=args.health_timeout,
        metrics_timeout=args.metrics_timeout,
        max_body_bytes=args.max_body,
        max_connections=args.max_connections,
        log_level=args.log_level,
    )
