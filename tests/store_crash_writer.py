"""Child process for the store's crash test: commit poll cycles until killed.

Usage: python -m tests.store_crash_writer DB_PATH RUN_TAG. Each cycle commits three
events and a snapshot whose target_num_replicas is the cycle number, then prints the
events' dedupe keys (one per line, flushed): a printed key was committed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.factories import service, spot_replica
from wfdash.collect.events import Event
from wfdash.collect.kinds import EventKind
from wfdash.collect.store import EventStore


def main(path: Path, tag: str) -> None:
    store = EventStore(path)
    cycle = 0
    while True:
        cycle += 1
        events = [
            Event(
                ts=float(cycle),
                service="bitnet",
                kind=EventKind.STATUS_CHANGED,
                replica_id=replica_id,
                message=f"STATUS #{replica_id} cycle {cycle}",
                data={"cycle": cycle, "tag": tag},
                dedupe_key=f"{tag}:{cycle}:{replica_id}",
            )
            for replica_id in (1, 2, 3)
        ]
        snapshot = service(spot_replica(1), spot_replica(2), spot_replica(3), target=cycle)
        store.commit_cycle(events, [snapshot], now=float(cycle))
        sys.stdout.write("".join(f"{event.dedupe_key}\n" for event in events))
        sys.stdout.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
