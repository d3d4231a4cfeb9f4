"""The ``wfdash`` command line: the dashboard, or plain text / JSON for scripts."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from wfdash import __version__
from wfdash.collect.store import EventStore, EventStoreError, default_state_dir
from wfdash.config import Config, ConfigError, describe_settings, load_config

# What only the poller thread or the headless report needs is imported where it is used:
# the dashboard's first paint waits for every module imported here.
if TYPE_CHECKING:
    from wfdash.collect.poller import Poller
    from wfdash.collect.snapshot import Snapshot
    from wfdash.collect.source import StatusSource
    from wfdash.control.plane import ControlPlane
    from wfdash.sandbox.fleet import SandboxThread

EXIT_STATUS_UNAVAILABLE = 1
_DEMO_POOL_HOSTS = 3  # Hetzner hosts in the demo's SSH node pool
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfdash",
        description="Dashboard and control plane for BitNet LLM serving on SkyPilot SkyServe.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=describe_settings()
        + "\n\nAlso: SKYPILOT_API_SERVER_ENDPOINT (the SkyPilot API server to read; wfdash"
        "\nnever starts one), WFDASH_CONFIG (the config file's path).",
    )
    parser.add_argument("--version", action="version", version=f"wfdash {__version__}")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["demo"],
        help="demo: run on the embedded sandbox fleet (no cloud needed)",
    )
    parser.add_argument("--once", action="store_true", help="print one status report and exit")
    parser.add_argument(
        "--json",
        action="store_true",
        help="JSON instead of text: one document with --once, else one line per poll",
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help="the TOML config file")
    # Settings flags default to None: "not given", so the config file and env keep their say.
    parser.add_argument("--service", action="append", metavar="NAME", help="only this service")
    parser.add_argument("--interval", type=_positive, metavar="S", help="seconds between polls")
    parser.add_argument("--window", type=_positive, metavar="S", help="rate window in seconds")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="where events are stored")
    ui = parser.add_argument_group("dashboard")
    ui.add_argument("--theme", help="wfdash-dark, wfdash-light, wfdash-colorblind, wfdash-ansi")
    ui.add_argument("--ascii", action="store_true", default=None, help="no braille or block glyphs")
    ui.add_argument(
        "--read-only",
        action="store_true",
        default=None,
        help="refuse every action that changes a service",
    )
    demo = parser.add_argument_group("demo")
    demo.add_argument("--seed", type=int, default=0, help="sandbox random seed (default 0)")
    demo.add_argument(
        "--speed",
        type=_positive,
        default=1.0,
        metavar="X",
        help="sandbox time factor: 10 runs builds, traffic and replicas 10x faster",
    )
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _emit(snapshot: Snapshot, as_json: bool, *, pretty: bool = True) -> None:
    if as_json:
        indent = 2 if pretty else None
        sys.stdout.write(json.dumps(snapshot.to_dict(), indent=indent, sort_keys=True) + "\n")
    else:
        from wfdash.report import render_text

        sys.stdout.write(render_text(snapshot))
    sys.stdout.flush()


def make_poller(source: StatusSource, config: Config, store: EventStore) -> Poller:
    # Imported here: the HTTP client must not delay the dashboard's first paint.
    from wfdash.collect.poller import Poller
    from wfdash.collect.scrape import Scraper

    scraper = Scraper(
        timeout=config.scrape_timeout,
        concurrency=config.scrape_concurrency,
        token=config.metrics_token(),
    )
    return Poller(source, scraper, store=store, config=config.poller_config())


async def run_headless(
    source: StatusSource, config: Config, store: EventStore, *, once: bool, as_json: bool
) -> int:
    """``--once``: two cycles one interval apart (rates need two scrapes), then report.

    Without ``--once``: a report every interval until interrupted.
    """
    poller = make_poller(source, config, store)
    try:
        if once:
            first = await poller.cycle()
            snapshot = first
            if first.status_ok and any(v.replicas for v in first.services):
                await asyncio.sleep(config.interval)
                poller.refresh_status_now()
                second = await poller.cycle()
                snapshot = replace(second, events=first.events + second.events)
            _emit(snapshot, as_json)
            return 0 if snapshot.status_ok else EXIT_STATUS_UNAVAILABLE
        stop = asyncio.Event()
        await poller.run(lambda s: _emit(s, as_json, pretty=False), stop)
        return 0
    finally:
        await poller.scraper.aclose()


def wants_tui(args: argparse.Namespace) -> bool:
    """The full-screen UI only on a real terminal; TERM=dumb, pipes and cron get text."""
    if args.once or args.json:
        return False
    return sys.stdout.isatty() and sys.stdin.isatty() and os.environ.get("TERM", "dumb") != "dumb"


def run_tui(
    connect: Callable[[], tuple[StatusSource, ControlPlane]],
    config: Config,
    store: EventStore,
    *,
    pool_hosts: int | None = None,
) -> int:
    """The dashboard. ``connect`` runs on the poller thread, after the first paint: the
    sandbox (aiohttp, its listeners) and, for SkyPilot, `import sky` never delay it.
    It gives the status source and the control plane actions go to."""
    # Start-up allocates much and frees next to nothing: the ~100 garbage collections it
    # would trigger before the first frame only cost time (~30 ms). After the first paint
    # the start-up objects are frozen out of future collections, and collection resumes.
    gc.disable()
    try:
        return _run_app(connect, config, store, pool_hosts)
    finally:
        gc.enable()


def _resume_gc() -> None:
    gc.freeze()
    gc.enable()


def _run_app(
    connect: Callable[[], tuple[StatusSource, ControlPlane]],
    config: Config,
    store: EventStore,
    pool_hosts: int | None,
) -> int:
    from wfdash.ui.app import WfdashApp
    from wfdash.ui.flows import Control

    control = Control()

    def start() -> Poller:
        from wfdash.control.deploy import DeploymentFiles
        from wfdash.control.runner import ActionRunner

        source, plane = connect()
        control.deploy = DeploymentFiles.default()
        control.target = plane.description
        control.runner = ActionRunner(plane, store, read_only=config.read_only)
        return make_poller(source, config, store)

    app = WfdashApp(
        make_poller=start,
        control=control,
        store=store,
        theme=config.theme,
        ascii=config.ascii,
        read_only=config.read_only,
        interval=config.interval,
        pool_hosts=pool_hosts,
        on_first_paint=_resume_gc,
    )
    app.run()
    return app.return_code or 0


def _sandbox(args: argparse.Namespace) -> SandboxThread:
    from wfdash.sandbox.fleet import SandboxConfig, SandboxThread

    return SandboxThread(
        SandboxConfig(seed=args.seed, speed=args.speed, pool_hosts=_DEMO_POOL_HOSTS)
    )


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def open_store(state_dir: Path | None, demo: bool) -> EventStore:
    """The event database; the demo keeps its own, apart from real services' history."""
    name = "demo-events.sqlite3" if demo else "events.sqlite3"
    return EventStore((state_dir or default_state_dir()) / name)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (systemd, a closed SSH session's shell, `kill`) ends wfdash like Ctrl-C does,
    # so the sandbox's listeners and the event store are closed on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        config = load_config(
            path=args.config,
            overrides={
                "interval": args.interval,
                "window": args.window,
                "theme": args.theme,
                "ascii": args.ascii,
                "read_only": args.read_only,
                "services": args.service,
                "state_dir": args.state_dir,
            },
        )
        store = open_store(config.state_dir, demo=args.command == "demo")
    except (ConfigError, EventStoreError) as exc:
        print(f"wfdash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sandbox: SandboxThread | None = None
    try:
        if wants_tui(args):
            from wfdash.ui.themes import ThemeError

            sandboxes: list[SandboxThread] = []

            def connect() -> tuple[StatusSource, ControlPlane]:
                if args.command != "demo":
                    from wfdash.collect.skypilot_source import SkyPilotStatusSource
                    from wfdash.control.deploy import DeploymentFiles
                    from wfdash.control.skypilot_plane import SkyPilotControlPlane

                    plane = SkyPilotControlPlane(DeploymentFiles.default())
                    return SkyPilotStatusSource(config.services or None), plane
                from wfdash.control.sandbox_plane import SandboxControlPlane

                sandboxes.append(_sandbox(args))
                sandboxes[-1].start()
                return sandboxes[-1], SandboxControlPlane(sandboxes[-1])

            try:
                demo = args.command == "demo"
                return run_tui(
                    connect, config, store, pool_hosts=_DEMO_POOL_HOSTS if demo else None
                )
            except ThemeError as exc:
                print(f"wfdash: {exc}", file=sys.stderr)
                return EXIT_USAGE
            finally:
                for started in sandboxes:
                    started.stop()
        source: StatusSource
        if args.command == "demo":
            sandbox = _sandbox(args)
            sandbox.start()
            source = sandbox
        else:
            from wfdash.collect.skypilot_source import SkyPilotStatusSource

            source = SkyPilotStatusSource(config.services or None)
        return asyncio.run(run_headless(source, config, store, once=args.once, as_json=args.json))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`wfdash --json | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if sandbox is not None:
            sandbox.stop()
        store.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
