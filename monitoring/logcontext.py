"""The ids every log line carries: the request's, the server's start_id and the task's.

One context variable holds them, so they follow a request through the threads and event
loops Django runs it on, and a task through its worker thread. RequestIdMiddleware sets the
request id, ``server_start`` the start_id (``log_context``), and the Celery signals in
signals.py carry both into every task the request or task queues. ``LogContextFilter`` (in
LOGGING, on every handler) writes them onto each record, where the JSON format shows them.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

from portal.text import control_character

# A client's X-Request-ID is kept only if it is this short and printable ASCII without
# spaces: it is written into every log line and echoed in a response header.
REQUEST_ID_MAX_LENGTH = 64


@dataclass(frozen=True)
class LogContext:
    request_id: str = ""
    start_id: str = ""
    task_id: str = ""


_current: contextvars.ContextVar[LogContext] = contextvars.ContextVar(
    "portal_log_context",
    default=LogContext(),  # noqa: B039 - frozen: never changed, only replaced
)


def log_context_current() -> LogContext:
    return _current.get()


def log_context_enter(**ids: str) -> contextvars.Token[LogContext]:
    """Set ``ids`` (request_id, start_id, task_id) until ``log_context_exit`` of the token."""
    return _current.set(replace(_current.get(), **ids))


def log_context_exit(token: contextvars.Token[LogContext]) -> None:
    _current.reset(token)


def log_context_bind(**ids: str) -> None:
    """Set ``ids`` for the rest of the current request or task: RequestIdMiddleware and the
    task signals restore the context when it ends. Only for code that runs in one."""
    _current.set(replace(_current.get(), **ids))


@contextmanager
def log_context(**ids: str) -> Iterator[LogContext]:
    """Log lines in this block carry ``ids`` too."""
    token = log_context_enter(**ids)
    try:
        yield _current.get()
    finally:
        log_context_exit(token)


def request_id_accepted(value: str | None) -> str | None:
    """A client's X-Request-ID if it is short and safe to log and echo, else None."""
    if not value or len(value) > REQUEST_ID_MAX_LENGTH or not value.isascii():
        return None
    if control_character(value) is not None or any(char.isspace() for char in value):
        return None
    return value


def request_id_new() -> str:
    return uuid.uuid4().hex


class LogContextFilter(logging.Filter):
    """Writes the ids of the current context onto each record (LOGGING's ``log_context``
    filter); an id that is not set is left out rather than logged empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs an answer's status after the middleware has ended the request's
        # context, with the request: RequestIdMiddleware left the ids on it.
        context = getattr(getattr(record, "request", None), "log_context", None)
        if not isinstance(context, LogContext):
            context = _current.get()
        for name, value in asdict(context).items():
            if value and not hasattr(record, name):
                setattr(record, name, value)
        return True
