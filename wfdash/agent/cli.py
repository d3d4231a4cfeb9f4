"""`wfdash-agent` / `python -m wfdash.agent`: run the agent until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from .buildinfo import BuildInfoError, load_build_info
from .config import parse_config
from .proxy import Agent

log = logging.getLogger("wfdash.agent")
_SHUTDOWN_SECONDS = 5.0
"""How long requests in flight may finish after SIGTERM before they are cut."""


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    build_info = None
    if config.build_info_path:
        try:
            build_info = load_build_info(config.build_info_path)
        except BuildInfoError as exc:
            # A backend started by hand has no build info: still worth relaying and counting.
            log.warning("no build info: %s", exc)
    agent = Agent(config, build_info)
    log.info("listening on %s:%d", config.host, config.port)
    web.run_app(
        agent.app(),
        host=config.host,
        port=config.port,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_SECONDS,
        print=None,
    )
