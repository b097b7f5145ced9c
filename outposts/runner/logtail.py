"""The last lines one server's spawner logged, for the admin's server page and "Try a start".

Each ``SpawnerRunner`` gives its spawner a logger of its own (``spawner_logger``): a child of
``traitlets``, where spawners log outside JupyterHub, so its records still reach the portal's
log, at the level settings give ``traitlets`` (never below INFO: batchspawner logs the
server's env with its API token at DEBUG). A ``SpawnerLogTail`` handler on it keeps a
bounded tail of what this one spawner logged. Token-looking values and the secrets the runner
knows (the Hub's API token, the start wrapper's) are redacted before a line is kept.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable
from datetime import datetime

# How much a tail keeps: lines, and characters of one line.
TAIL_LINES = 60
LINE_CHARS = 400
REDACTED = "[redacted]"
# A secret the runner knows is redacted wherever it appears; shorter values are left alone
# (they would redact ordinary words).
SECRET_MIN_CHARS = 8

_SECRET_ASSIGNMENT = re.compile(
    r"(?i)([\w.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|credential|authorization)[\w.-]*"
    r"['\"]?\s*[:=]\s*['\"]?(?:(?:token|bearer|basic)\s+)?)([^\s'\",;}&]+)"
)
_SECRET_NAME = re.compile(r"(?i)token|secret|passw|key|credential")
_TOKEN_LIKE = re.compile(r"\b[0-9a-fA-F]{32,}\b|\b[A-Za-z0-9_-]{40,}={0,2}")


def secret_values(env: dict[str, str]) -> list[str]:
    """The values of ``env`` whose names say they are secret (JUPYTERHUB_API_TOKEN, ...)."""
    return [value for name, value in env.items() if _SECRET_NAME.search(name)]


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """``text`` without the ``secrets`` and without what looks like a token or password."""
    for secret in secrets:
        if len(secret) >= SECRET_MIN_CHARS:
            text = text.replace(secret, REDACTED)
    text = _SECRET_ASSIGNMENT.sub(lambda match: f"{match.group(1)}{REDACTED}", text)
    return _TOKEN_LIKE.sub(REDACTED, text)


class SpawnerLogTail(logging.Handler):
    """A bounded tail of one spawner's log records, redacted, one line each."""

    def __init__(self, *, secrets: Iterable[str] = (), lines: int = TAIL_LINES) -> None:
        super().__init__(level=logging.INFO)
        self.secrets = tuple(secret for secret in secrets if len(secret) >= SECRET_MIN_CHARS)
        self.lines: deque[str] = deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not fail a start
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            # The exception, not its traceback: paths of the portal's code help no one here.
            error = record.exc_info[1]
            message = f"{message} ({type(error).__name__}: {error})"
        when = datetime.fromtimestamp(record.created).astimezone()
        self.add(f"{when:%Y-%m-%d %H:%M:%S} {record.levelname} {message}")

    def add(self, line: str) -> None:
        """Keep ``line`` (redacted, one line, cut to LINE_CHARS)."""
        one_line = " ".join(self.redacted(line).split())
        self.lines.append(one_line[:LINE_CHARS])

    def add_error(self, error: BaseException, *, what: str) -> None:
        """Keep why ``what`` (a start, a stop) failed: the error a user is not shown."""
        when = datetime.now().astimezone()
        self.add(f"{when:%Y-%m-%d %H:%M:%S} ERROR {what} failed: {type(error).__name__}: {error}")

    def redacted(self, text: str) -> str:
        """``text`` as a kept line would have it: without the secrets or token-like values."""
        return redact(text, secrets=self.secrets)

    def text(self) -> str:
        return "\n".join(self.lines)


def spawner_logger(tail: SpawnerLogTail) -> logging.Logger:
    """A logger for one spawner, under ``traitlets``, that also feeds ``tail``.

    Made outside logging's registry, so it is freed with its runner rather than kept for the
    life of the worker (one per server).
    """
    logger = logging.Logger("traitlets.spawner")
    logger.parent = logging.getLogger("traitlets")
    logger.addHandler(tail)
    return logger


def tail_joined(earlier: str, later: str, *, lines: int = TAIL_LINES) -> str:
    """Two tails as one, the last ``lines`` of them (a stop's lines after its start's)."""
    joined = [line for line in (earlier.splitlines() + later.splitlines()) if line]
    return "\n".join(joined[-lines:])
