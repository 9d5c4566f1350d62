"""topology/aio.py: stopping a background loop never hangs, whatever the timing of the cancel."""

from __future__ import annotations

import asyncio

import pytest

from topology.aio import cancel_and_wait, wait_event

# One event loop for every test of the module: gRPC's asyncio layer (under aetcd) binds its
# completion poller to the loops it has seen, and a later test on a fresh loop can then wait
# forever for a call (grpc/grpc#23377 and related reports).
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _loop(event: asyncio.Event, rounds: list[int]) -> None:
    while True:
        await wait_event(event, 0.5)
        event.clear()
        rounds.append(1)


async def test_cancel_arriving_with_the_event_stops_the_loop() -> None:
    # The event is set and the task cancelled in the same loop iteration: the race in which
    # asyncio.wait_for (3.11) returns the event's result and the loop carries on for ever.
    event, rounds = asyncio.Event(), []
    task = asyncio.create_task(_loop(event, rounds))
    await asyncio.sleep(0.01)
    event.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled() and rounds == []


async def test_wait_event_reports_set_and_timeout() -> None:
    event = asyncio.Event()
    assert not await wait_event(event, 0.05)
    asyncio.get_running_loop().call_later(0.02, event.set)
    assert await wait_event(event, 2)


async def test_cancel_and_wait_is_bounded_for_a_task_that_ignores_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await cancel_and_wait(task, timeout=0.4, what="stubborn")
    assert 0.3 < loop.time() - started < 2
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    assert task.done()
    ok = asyncio.create_task(asyncio.sleep(10))
    assert await cancel_and_wait(ok, timeout=2) and ok.cancelled()
