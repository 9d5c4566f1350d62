"""Python workers for dwasm: handle the tasks that flows schedule on named queues.

::

    from app.worker import Worker

    w = Worker("http://127.0.0.1:8080")

    @w.handler("square")
    def square(payload: bytes) -> bytes:
        return str(int(payload) ** 2).encode()

    w.run()   # until SIGINT/SIGTERM

or, without a Worker object, mark functions with :func:`handler` and run the module with
``dwasm worker MODULE``. See docs/workers.md.
"""

from __future__ import annotations

from .client import (ApiError, Cancelled, LeasedTask, LeaseLost, PayloadTooLarge, Report,
                     ReportResult, RetryPolicy, ServiceError, TaskCancelled, TaskClient,
                     TaskFinished, TaskNotFound, TaskState, Unavailable)
from .task import (PermanentError, RetryableError, TaskContext, TaskError, current_task,
                   handler)
from .worker import Worker, WorkerStats

__all__ = [
    "ApiError", "Cancelled", "LeaseLost", "LeasedTask", "PayloadTooLarge", "PermanentError",
    "Report", "ReportResult", "RetryPolicy", "RetryableError", "ServiceError",
    "TaskCancelled", "TaskClient", "TaskContext", "TaskError", "TaskFinished", "TaskNotFound",
    "TaskState", "Unavailable", "Worker", "WorkerStats", "current_task", "handler",
]
