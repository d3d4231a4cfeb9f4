"""The ``wfdash`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from wfdash import __version__
from wfdash.collect.poller import Poller, PollerConfig, Snapshot
from wfdash.collect.scrape import Scraper
from wfdash.collect.skypilot_source import SkyPilotStatusSource
from wfdash.collect.source import StatusSource
from wfdash.collect.store import EventStore, EventStoreError, default_state_dir
from wfdash.report import render_text

if TYPE_CHECKING:
    from wfdash.sandbox.fleet import SandboxThread

EXIT_STATUS_UNAVAILABLE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wfdash",
        description="Dashboard and control plane for BitNet LLM serving on SkyPilot SkyServe.",
        epilog=(
            "Environment: WFDASH_STATE_DIR (event database folder), WFDASH_METRICS_TOKEN "
            "(bearer token sent to replica /metrics), SKYPILOT_API_SERVER_ENDPOINT "
            "(the SkyPilot API server to read)."
        ),
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
    parser.add_argument("--service", action="append", metavar="NAME", help="only this service")
    parser.add_argument(
        "--interval", type=_positive, default=2.0, metavar="S", help="seconds between polls"
    )
    parser.add_argument(
        "--window", type=_positive, default=60.0, metavar="S", help="rate window (default 60)"
    )
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="where events are stored")
    ui = parser.add_argument_group("dashboard")
    ui.add_argument(
        "--theme",
        default="wfdash-dark",
        help="wfdash-dark, wfdash-light, wfdash-colorblind, wfdash-ansi",
    )
    ui.add_argument(
        "--ascii", action="store_true", help="no braille or block glyphs (old terminals, fonts)"
    )
    ui.add_argument(
        "--read-only", action="store_true", help="refuse every action that changes a service"
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
        sys.stdout.write(render_text(snapshot))
    sys.stdout.flush()


async def run_headless(source: StatusSource, args: argparse.Namespace, store: EventStore) -> int:
    """``--once``: two cycles one interval apart (rates need two scrapes), then report.

    Without ``--once``: a plain-text report every interval until interrupted.
    """
    poller = _make_poller(source, args, store)
    scraper = poller.scraper
    try:
        if args.once:
            first = await poller.cycle()
            snapshot = first
            if first.status_ok and any(v.replicas for v in first.services):
                await asyncio.sleep(args.interval)
                poller.refresh_status_now()
                second = await poller.cycle()
                snapshot = replace(second, events=first.events + second.events)
            _emit(snapshot, args.json)
            return 0 if snapshot.status_ok else EXIT_STATUS_UNAVAILABLE
        stop = asyncio.Event()
        await poller.run(lambda s: _emit(s, args.json, pretty=False), stop)
        return 0
    finally:
        await scraper.aclose()


def wants_tui(args: argparse.Namespace) -> bool:
    """The full-screen UI only on a real terminal; TERM=dumb, pipes and cron get text."""
    if args.once or args.json:
        return False
    return sys.stdout.isatty() and sys.stdin.isatty() and os.environ.get("TERM", "dumb") != "dumb"


def _make_poller(source: StatusSource, args: argparse.Namespace, store: EventStore) -> Poller:
    config = PollerConfig(metrics_interval=args.interval, rate_window=args.window)
    return Poller(
        source,
        Scraper(token=os.environ.get("WFDASH_METRICS_TOKEN") or None),
        store=store,
        config=config,
    )


def run_tui(
    source: StatusSource, sandbox: SandboxThread | None, args: argparse.Namespace, store: EventStore
) -> int:
    from wfdash.ui.app import WfdashApp

    def make_poller() -> Poller:
        # Runs on the poller thread, after the first paint: the sandbox's listeners (and,
        # for SkyPilot, `import sky`) never delay the screen.
        if sandbox is not None:
            sandbox.start()
        return _make_poller(source, args, store)

    app = WfdashApp(
        make_poller=make_poller,
        store=store,
        theme=args.theme,
        ascii=args.ascii,
        read_only=args.read_only,
        interval=args.interval,
        pool_hosts=sandbox.sandbox.config.pool_hosts if sandbox is not None else None,
    )
    app.run()
    return app.return_code or 0


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
        store = open_store(args.state_dir, demo=args.command == "demo")
    except EventStoreError as exc:
        print(f"wfdash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sandbox: SandboxThread | None = None
    try:
        source: StatusSource
        if args.command == "demo":
            from wfdash.sandbox.fleet import SandboxConfig, SandboxThread

            sandbox = SandboxThread(SandboxConfig(seed=args.seed, speed=args.speed))
            source = sandbox
        else:
            source = SkyPilotStatusSource(args.service)
        if wants_tui(args):
            return run_tui(source, sandbox, args, store)
        if sandbox is not None:
            sandbox.start()
        return asyncio.run(run_headless(source, args, store))
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
