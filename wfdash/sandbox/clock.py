"""The sandbox's time scale: simulated durations run `speed` times faster than real ones."""

from __future__ import annotations

import asyncio
import time


class SimClock:
    """Scales durations for demos/tests: speed=10 makes a 300 s build take 30 s of real time.

    Only durations are scaled. Timestamps stay on the wall clock, so whatever the sandbox
    reports (scrape times, `created` series, event times) lines up with real time.
    """

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, not {speed}")
        self.speed = speed

    def real(self, sim_seconds: float) -> float:
        """The real seconds that `sim_seconds` of simulated time take."""
        return sim_seconds / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real(sim_seconds))

    def now(self) -> float:
        """Wall-clock Unix time (not scaled)."""
        return time.time()
