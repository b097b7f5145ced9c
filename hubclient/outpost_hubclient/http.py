"""HTTP calls to an Outpost with retries: tornado's client, which every JupyterHub ships."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from .errors import OutpostUnreachable
from .wire import decode_json

#: Longest pause between two attempts, however many retries are configured.
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of the portal: its status code, decoded JSON (None if not JSON) and
    headers (names in lower case; the last of repeated ones)."""

    code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestSettings:
    request_timeout: float
    connect_timeout: float
    validate_cert: bool
    ca_file: str | None
    retries: int
    backoff: float

    def single_attempt(self, timeout: float) -> RequestSettings:
        """One attempt of at most ``timeout`` s: for requests someone waits on that are
        repeated anyway (the spawn form's flavors, poll, progress)."""
        return replace(self, retries=0, request_timeout=min(self.request_timeout, timeout))


async def wait_at_most(seconds: float, awaitable: Awaitable[Any]) -> bool:
    """Await ``awaitable`` for at most ``seconds``; True if it finished in time.

    ``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11 wait_for can swallow a
    cancellation that arrives just as its inner wait finishes, and JupyterHub cancels
    start() and progress() to end a spawn. On timeout the awaitable is cancelled (wrap a
    task that must survive in ``asyncio.wait``).
    """
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        return False
    return True


async def _sleep_unless(event: asyncio.Event | None, seconds: float) -> None:
    if event is None:
        await asyncio.sleep(seconds)
    else:
        await wait_at_most(seconds, event.wait())


def backoff_delays(retries: int, first: float) -> list[float]:
    """Pauses before each retry: ``first``, doubled each time, capped at MAX_BACKOFF."""
    return [min(MAX_BACKOFF, first * 2**attempt) for attempt in range(max(0, retries))]


def is_retriable(code: int) -> bool:
    """Connection failures (599) and server errors; never a 4xx such as a 419 refusal."""
    return code == 599 or code >= 500


def _tls_failure(error: ssl.SSLError) -> OutpostUnreachable:
    return OutpostUnreachable(f"The Outpost's TLS connection failed (not retried): {error}")


async def fetch_json(
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: Any = None,
    settings: RequestSettings,
    log: logging.Logger | logging.LoggerAdapter[Any],
    give_up: asyncio.Event | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> Answer:
    """Send one request, retrying connection errors and 5xx with exponential back-off.

    Returns the answer for any status below 500, so callers decide what 404 or 419 mean.
    Raises OutpostUnreachable once the retries are used up, at once for a TLS error (a
    wrong certificate does not heal in seconds), and as soon as ``give_up`` is set: an
    attempt in flight ends by its own timeout, but none follows (and the back-off pause is
    cut short). ``sleep`` replaces the back-off pause in tests.
    """
    delays = backoff_delays(settings.retries, settings.backoff)
    last_problem = ""
    answered = True  # nothing sent yet
    for attempt in range(len(delays) + 1):
        if attempt:
            if sleep is not None:
                await sleep(delays[attempt - 1])
            else:
                await _sleep_unless(give_up, delays[attempt - 1])
        if give_up is not None and give_up.is_set():
            raise OutpostUnreachable(
                f"The request was abandoned (stop requested) after: {last_problem or 'nothing'}.",
                answered=answered,
            )
        request = HTTPRequest(
            url=url,
            method=method,
            headers=headers,
            body=None if body is None else json.dumps(body),
            request_timeout=settings.request_timeout,
            connect_timeout=settings.connect_timeout,
            validate_cert=settings.validate_cert,
            ca_certs=settings.ca_file or None,
            # tornado refuses a DELETE or GET with a body, and a POST without one.
            allow_nonstandard_methods=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except ssl.SSLError as error:
            # Before OSError: SSLCertVerificationError is one, but retrying cannot fix it.
            raise _tls_failure(error) from None
        except (OSError, HTTPClientError) as error:
            # raise_error=False still raises for timeouts (599) and refused connections.
            code = getattr(error, "code", 599)
            if not is_retriable(code):
                raise
            last_problem = str(error) or error.__class__.__name__
            answered = False
        else:
            if isinstance(response.error, ssl.SSLError):
                raise _tls_failure(response.error)
            if not is_retriable(response.code):
                return Answer(
                    code=response.code,
                    body=decode_json(response.body),
                    headers={name.lower(): value for name, value in response.headers.get_all()},
                )
            answered = response.code != 599
            if response.code == 599 and response.error is not None:
                last_problem = str(response.error)
            else:
                last_problem = f"HTTP {response.code}"
        log.warning(
            "Outpost request %s %s failed (%s), attempt %d of %d",
            method,
            url,
            last_problem,
            attempt + 1,
            len(delays) + 1,
        )
    raise OutpostUnreachable(
        f"The Outpost could not be reached: {last_problem}.", answered=answered
    )
