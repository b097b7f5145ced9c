"""Wake-ups for requests waiting on a server's status (a synchronous start or stop).

When a server gets to running or ended, the worker publishes the server's id on a Redis
pub/sub channel of its own once the transaction has committed; a waiting request subscribes
to that channel before its first status read, so no change is missed between the read and
the wait. The message says only "look again": the waiter re-reads the status from the
database, the one source of truth. A lost message (Redis restarted) costs at most one safety
re-read interval (SYNC_WAIT_RECHECK_SECONDS). With a broker that is not Redis (filesystem://,
memory://) there is no pub/sub and a waiter re-reads every WAIT_POLL_SECONDS. A wait that
is over leaves its connection, unsubscribed, to the next wait of its event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

import redis
import redis.asyncio
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

# How often a waiter re-reads the status when no pub/sub can wake it.
WAIT_POLL_SECONDS = 0.25
# A publish or subscribe never holds up a status change or a request for long.
REDIS_TIMEOUT_SECONDS = 2

CHANNEL_PREFIX = "outposts:server:"


def channel_for_server(server_id: int) -> str:
    return f"{CHANNEL_PREFIX}{server_id}"


def redis_url() -> str | None:
    """The broker's URL in redis-py's spelling, or None when the broker is not Redis."""
    url: str = settings.CELERY_BROKER_URL
    scheme = url.split(":", 1)[0]
    if scheme in ("redis", "rediss"):
        return url
    if scheme == "redis+socket":
        # kombu's redis+socket:///path is redis-py's unix:///path.
        return "unix://" + url.removeprefix("redis+socket://")
    return None


# One client (and so one connection pool) per process for publishing; redis-py makes a new
# pool after a fork, so a prefork worker child does not share its parent's sockets.
_publisher: redis.Redis | None = None


def _publisher_client(url: str) -> redis.Redis:
    global _publisher
    if _publisher is None:
        _publisher = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
    return _publisher


def _publish(server_id: int) -> None:
    url = redis_url()
    if url is None:
        return
    try:
        _publisher_client(url).publish(channel_for_server(server_id), str(server_id))
    except (redis.RedisError, OSError) as error:
        # The change itself is committed; a waiter sees it at its next safety re-read.
        log.warning("Could not announce server %s's status change: %s", server_id, error)


def server_status_announce(*, server_id: int) -> None:
    """Wake whoever waits on this server's status, once the current transaction commits."""
    transaction.on_commit(lambda: _publish(server_id))


# redis.asyncio clients belong to one event loop: one per loop (uvicorn runs one a process).
_subscribers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


def _subscriber_client(url: str) -> redis.asyncio.Redis:
    loop = asyncio.get_running_loop()
    client = _subscribers.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        _subscribers[loop] = client
    return client


# Pub/sub connections whose wait is over, unsubscribed, by event loop: the next wait takes one
# rather than connect anew (a TCP connect and a handshake for every synchronous start).
IDLE_SUBSCRIBERS_KEPT = 8
_idle_subscribers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, list[redis.asyncio.client.PubSub]
] = weakref.WeakKeyDictionary()


def _subscriber_taken(url: str) -> redis.asyncio.client.PubSub:
    idle = _idle_subscribers.get(asyncio.get_running_loop())
    return idle.pop() if idle else _subscriber_client(url).pubsub()


async def _subscribed(pubsub: redis.asyncio.client.PubSub, channel: str) -> None:
    """Subscribe to ``channel`` and wait for Redis to confirm: only then is no later
    announcement missed. Redis answers in order, so whatever an earlier wait on this
    connection left unread (its unsubscribe, a late announcement) comes before, unused."""
    await pubsub.subscribe(channel)
    confirmed = {"type": "subscribe", "channel": channel.encode()}
    async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
        while True:
            message = await pubsub.get_message(timeout=REDIS_TIMEOUT_SECONDS)
            if message and confirmed.items() <= message.items():
                return


class StatusWatch:
    """Waits for a server's next status announcement, or a bound, whichever comes first."""

    def __init__(self, pubsub: redis.asyncio.client.PubSub | None) -> None:
        self.pubsub = pubsub

    async def changed(self, timeout: float) -> None:
        """Return after an announcement or ``timeout`` seconds; the caller re-reads."""
        if self.pubsub is None:
            await asyncio.sleep(min(WAIT_POLL_SECONDS, timeout))
            return
        # A wait with no message still returns within the re-check interval.
        timeout = min(settings.SYNC_WAIT_RECHECK_SECONDS, timeout)
        try:
            await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        except (redis.RedisError, OSError) as error:
            log.warning("Status announcements lost, polling instead: %s", error)
            await self.close()
            await asyncio.sleep(min(WAIT_POLL_SECONDS, timeout))

    async def close(self) -> None:
        if self.pubsub is not None:
            pubsub, self.pubsub = self.pubsub, None
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()

    async def give_back(self) -> None:
        """The wait is over: its connection, unsubscribed, waits for the loop's next wait."""
        if self.pubsub is None:
            return
        idle = _idle_subscribers.setdefault(asyncio.get_running_loop(), [])
        if len(idle) >= IDLE_SUBSCRIBERS_KEPT:
            await self.close()
            return
        try:
            await self.pubsub.unsubscribe()
        except (redis.RedisError, OSError):
            await self.close()
            return
        idle.append(self.pubsub)
        self.pubsub = None


@contextlib.asynccontextmanager
async def server_status_watch(server_id: int) -> AsyncIterator[StatusWatch]:
    """A watch on ``server_id``'s announcements, subscribed before the caller reads."""
    url = redis_url()
    watch = StatusWatch(None)
    if url is not None:
        pubsub = _subscriber_taken(url)
        try:
            await _subscribed(pubsub, channel_for_server(server_id))
            watch = StatusWatch(pubsub)
        except (redis.RedisError, OSError) as error:
            log.warning("Cannot subscribe to status announcements, polling: %s", error)
            await StatusWatch(pubsub).close()
    try:
        yield watch
    finally:
        await watch.give_back()
