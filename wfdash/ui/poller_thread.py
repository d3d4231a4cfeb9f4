"""The poll loop in a thread of its own, handing snapshots to the UI thread.

Parsing 1000 replicas' metrics takes about half a CPU-second; on the UI's event loop that
would freeze the keyboard for as long. In its own thread and loop the poller only costs
the UI the time to render the snapshot it delivers. ``import sky`` (≈2 s) also happens
there, after the first paint.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wfdash.collect.poller import Poller
    from wfdash.collect.snapshot import Snapshot


class PollerThread:
    def __init__(
        self,
        make_poller: Callable[[], Poller],
        deliver: Callable[[Snapshot], None],
        connecting: Callable[[str], None] | None = None,
    ) -> None:
        """``connecting`` is told what is being read (the source's description) as soon as
        the poller exists: the first status can take seconds (``import sky``)."""
        self._make_poller = make_poller
        self._deliver = deliver
        self._connecting = connecting
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="wfdash-poller", daemon=True)
        # Created here (they bind to the poller's loop on first use) so that stop() works at
        # any moment, even before the thread has made its poller.
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._poller: Poller | None = None
        self._forced = False
        self.paused = False

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    async def _run(self) -> None:
        try:
            self._poller = self._make_poller()
        except Exception as exc:  # e.g. the sandbox could not start: say so on screen
            from wfdash.collect.snapshot import Snapshot

            message = f"could not start polling: {type(exc).__name__}: {exc}".splitlines()[0]
            self._deliver(
                Snapshot(time.time(), "wfdash", (), status_ok=False, status_error=message)
            )
            return
        if self._connecting is not None:
            self._connecting(self._poller.source.description)
        try:
            await self._poller.run(
                self._deliver, self._stop, self._skip_cycle, self._wake, early_status=True
            )
        finally:
            await self._poller.scraper.aclose()

    def _skip_cycle(self) -> bool:
        """Paused, unless a refresh was asked for: that one cycle runs anyway."""
        if self._forced:
            self._forced = False
            return False
        return self.paused

    def refresh_now(self) -> None:
        """Poll now, status included, instead of waiting for the next cycle (even paused)."""
        self._forced = True
        poller = self._poller
        if poller is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(poller.refresh_status_now)
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return  # never started (quit before the first paint) or already done
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:
            return  # the loop closed meanwhile: the thread is ending by itself
        self._thread.join(timeout)
