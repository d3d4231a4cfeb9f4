"""The ``wfdash`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from wfdash import __version__
from wfdash.collect.poller import Poller, PollerConfig, Snapshot
from wfdash.collect.scrape import Scraper
from wfdash.collect.skypilot_source import SkyPilotStatusSource
from wfdash.collect.source import StatusSource
from wfdash.collect.store import EventStore, EventStoreError
from wfdash.report import render_text

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
    parser.add_argument("--once", action="store_true", help="print one status report and exit")
    parser.add_argument("--json", action="store_true", help="with --once: a JSON snapshot")
    parser.add_argument("--service", action="append", metavar="NAME", help="only this service")
    parser.add_argument(
        "--interval", type=_positive, default=2.0, metavar="S", help="seconds between polls"
    )
    parser.add_argument(
        "--window", type=_positive, default=60.0, metavar="S", help="rate window (default 60)"
    )
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="where events are stored")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _emit(snapshot: Snapshot, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(snapshot.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render_text(snapshot))
    sys.stdout.flush()


async def run_headless(source: StatusSource, args: argparse.Namespace, store: EventStore) -> int:
    """``--once``: two cycles one interval apart (rates need two scrapes), then report.

    Without ``--once``: a plain-text report every interval until interrupted.
    """
    config = PollerConfig(metrics_interval=args.interval, rate_window=args.window)
    scraper = Scraper(token=os.environ.get("WFDASH_METRICS_TOKEN") or None)
    poller = Poller(source, scraper, store=store, config=config)
    try:
        if args.once:
            first = await poller.cycle()
            snapshot = first
            if first.status_ok and any(v.replicas for v in first.services):
                await asyncio.sleep(args.interval)
                second = await poller.cycle()
                snapshot = second if second.events else _with_events(second, first)
            _emit(snapshot, args.json)
            return 0 if snapshot.status_ok else EXIT_STATUS_UNAVAILABLE
        stop = asyncio.Event()
        await poller.run(lambda s: _emit(s, args.json), stop)
        return 0
    finally:
        await scraper.aclose()


def _with_events(snapshot: Snapshot, earlier: Snapshot) -> Snapshot:
    from dataclasses import replace

    return replace(snapshot, events=earlier.events)


def open_store(state_dir: Path | None) -> EventStore:
    path = state_dir / "events.sqlite3" if state_dir else None
    return EventStore(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.json and not args.once:
        print("wfdash: --json goes with --once", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = open_store(args.state_dir)
    except EventStoreError as exc:
        print(f"wfdash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run_headless(SkyPilotStatusSource(args.service), args, store))
    except KeyboardInterrupt:
        return 130
    finally:
        store.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
