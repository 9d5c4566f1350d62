"""asyncio helpers that keep cancellation intact, for the background tasks of topology/.

On Python 3.11, ``asyncio.wait_for(x, timeout)`` swallows a cancellation that arrives while
``x`` is completing (it returns ``x``'s result instead of raising), and ``await task`` inside
``contextlib.suppress(asyncio.CancelledError)`` swallows a cancellation of the *awaiting* task.
Either turns a ``task.cancel(); await task`` in a ``stop()`` into a wait that never ends: the
loop that should have stopped just carries on. These helpers never swallow the caller's own
cancellation, and every wait here has a bound.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("dwasm.topology")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Waits until ``event`` is set or ``timeout`` seconds passed; True if it is set.

    Unlike ``asyncio.wait_for(event.wait(), timeout)`` on 3.11, a cancellation of the caller
    always propagates, even when the event is set in the same loop iteration.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def cancel_and_wait(task: asyncio.Task[object] | None, timeout: float = 5.0,
                          what: str = "task") -> bool:
    """Cancels ``task`` and waits up to ``timeout`` seconds for it to end; True if it ended.

    The task's own outcome (CancelledError or any exception) is consumed, the caller's
    cancellation is not. A task that does not end in time (it caught the cancellation, or sits
    in an uncancellable call) is cancelled again once and then left behind with an error in
    the log, so that a ``stop()`` never hangs on it.
    """
    if task is None:
        return True
    for attempt in range(2):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=timeout / 2)
    if not task.done():
        log.error("%s did not stop within %g s after cancellation; leaving it behind", what,
                  timeout)
        return False
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", what, task.exception())
    return True
