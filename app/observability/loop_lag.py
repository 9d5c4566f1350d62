"""Event-loop lag: how late the service's event loop runs what is due.

Everything the API does shares one event loop; a callback that holds it (a long computation, a
blocking call, flow steps run inline) delays every request. A small task sleeps
:data:`INTERVAL` seconds in a loop and records how much later than asked it woke up:

- ``dwasm_event_loop_lag_seconds`` (histogram): every such delay;
- ``dwasm_event_loop_lag_max_seconds`` (gauge): the largest delay of the last :data:`WINDOW`
  seconds (the lag of a stall in progress counts too: it is how late the sampler is now).

:func:`loop_lag_monitor` is a lifespan hook: it runs the sampler while the app serves.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

INTERVAL = 0.1
WINDOW = 10.0
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LoopLagMonitor:
    """Samples the lag of the running event loop into ``registry`` (see the module doc)."""

    def __init__(self, registry: Any, interval: float = INTERVAL, window: float = WINDOW) -> None:
        self.interval = interval
        self.histogram = registry.histogram(
            "dwasm_event_loop_lag_seconds",
            f"How much later than due the event loop ran a {interval:g} s timer.",
            buckets=LAG_BUCKETS)
        registry.gauge_callback(
            "dwasm_event_loop_lag_max_seconds",
            f"Largest event-loop lag of the last {window:g} s (a stall in progress included).",
            [], self._max_samples)
        self._recent: collections.deque[float] = collections.deque(
            maxlen=max(1, round(window / interval)))
        self._due: float | None = None  # monotonic time the sampler should wake up next
        self._task: asyncio.Task[None] | None = None

    def _max_samples(self) -> list[tuple[dict[str, str], float]]:
        lags = list(self._recent)
        due = self._due
        if due is not None:
            lags.append(max(0.0, time.monotonic() - due))
        return [({}, max(lags, default=0.0))]

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            self._due = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.monotonic() - self._due)
            self._recent.append(lag)
            self.histogram.observe(lag)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(),
                                                            name="dwasm-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._due = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def loop_lag_monitor(registry: Any) -> AsyncIterator[LoopLagMonitor]:
    """Runs a :class:`LoopLagMonitor` for the duration of the ``async with``."""
    monitor = LoopLagMonitor(registry)
    monitor.start()
    try:
        yield monitor
    finally:
        await monitor.stop()
