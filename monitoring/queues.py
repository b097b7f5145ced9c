"""The task queues as the broker holds them: how many messages wait, and since when.

Read through kombu, so that Redis and the embedded filesystem broker answer alike: the depth
is kombu's own count of a queue (Redis: the length of its list; filesystem: its message
files). The age is that of the message a worker would take next (Redis: the tail of the
list; filesystem: the first file in name order), from the time signals.py writes into every
message's headers (a message without it has no age).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import Connection
from kombu.exceptions import ChannelError

from monitoring.signals import QUEUED_AT_HEADER

log = logging.getLogger(__name__)

# How long a scrape or a readiness check waits for the broker.
BROKER_TIMEOUT = 3.0


@dataclass(frozen=True)
class QueueState:
    queue: str
    depth: int
    #: Seconds the next message has waited; None when the queue is empty or it cannot tell.
    oldest_age: float | None


def broker_connection() -> Connection:
    """A connection to the portal's broker that gives up after BROKER_TIMEOUT, once."""
    from portal.celery import app

    connection = app.connection_for_read()
    connection.connect_timeout = BROKER_TIMEOUT
    connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    return connection


def queues_read(*, connection: Connection, queues: Iterable[str]) -> list[QueueState]:
    """The state of each queue on an open broker connection."""
    channel = connection.channel()
    try:
        return [_queue_read(channel, connection, queue) for queue in queues]
    finally:
        channel.close()


def _queue_read(channel: Any, connection: Connection, queue: str) -> QueueState:
    try:
        depth = int(channel.queue_declare(queue=queue, passive=True).message_count)
    except ChannelError:  # never declared: no message ever waited there
        return QueueState(queue=queue, depth=0, oldest_age=None)
    if depth == 0:
        return QueueState(queue=queue, depth=0, oldest_age=None)
    driver = connection.transport.driver_type
    if driver == "redis":
        raw = channel.client.lindex(queue, -1)
    elif driver == "filesystem":
        raw = _oldest_file(Path(channel.data_folder_in), queue)
    else:
        raw = None
    return QueueState(queue=queue, depth=depth, oldest_age=_age(raw))


def _oldest_file(folder: Path, queue: str) -> bytes | None:
    suffix = f".{queue}.msg"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(suffix))
    for name in names:
        try:
            return (folder / name).read_bytes()
        except OSError:  # taken by a worker meanwhile: the next one is the oldest
            continue
    return None


def _age(raw: bytes | str | None) -> float | None:
    if not raw:
        return None
    try:
        queued_at = float(json.loads(raw)["headers"][QUEUED_AT_HEADER])
    except (ValueError, KeyError, TypeError):
        return None
    return max(0.0, time.time() - queued_at)
