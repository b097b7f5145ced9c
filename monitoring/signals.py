"""Celery signals: a task message carries the ids of whoever queued it and when.

Before a task is published its headers get the current request id and start_id (the web
request or task that queues it) and the time; a worker sets the ids again for the task's
log lines, with the task's own id, and restores its context when the task ends. The time
lets /metrics tell how long the oldest message of a queue has waited (queues.py).
"""

from __future__ import annotations

import time
from typing import Any

from celery import signals

from monitoring.logcontext import log_context_current, log_context_enter, log_context_exit

REQUEST_ID_HEADER = "portal_request_id"
START_ID_HEADER = "portal_start_id"
QUEUED_AT_HEADER = "portal_queued_at"

# The context of each running task, by task id: a thread pool runs several at once.
_tokens: dict[str, Any] = {}


@signals.before_task_publish.connect
def _headers_add(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if headers is None:
        return
    context = log_context_current()
    if context.request_id:
        headers.setdefault(REQUEST_ID_HEADER, context.request_id)
    if context.start_id:
        headers.setdefault(START_ID_HEADER, context.start_id)
    headers[QUEUED_AT_HEADER] = time.time()


@signals.task_prerun.connect
def _task_context_enter(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    _tokens[task_id] = log_context_enter(
        request_id=str(getattr(request, REQUEST_ID_HEADER, None) or ""),
        start_id=str(getattr(request, START_ID_HEADER, None) or ""),
        task_id=task_id,
    )


@signals.task_postrun.connect
def _task_context_exit(task_id: str = "", **kwargs: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is None:
        return
    try:
        log_context_exit(token)
    except ValueError:  # entered in another thread's context: nothing of this one to undo
        pass
