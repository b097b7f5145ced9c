"""Text from outside (API requests, Hub answers): what it may contain, and how it is logged.

PostgreSQL cannot store NUL in text or jsonb (it raises DataError), a process environment
cannot hold it, and control characters in a logged value forge or garble log lines. The rules
are written once here and applied by the services that take such text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

# C0 controls, DEL and C1 controls: never part of a name, an id or an environment entry.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same, but tab, line feed and carriage return pass: free text (a form's text area).
CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def control_character(text: str, *, allow_whitespace: bool = False) -> str | None:
    """The first control character in ``text`` as an escape (``"\\x00"``), or None."""
    found = (CONTROL_BUT_WHITESPACE if allow_whitespace else CONTROL).search(text)
    return None if found is None else log_safe(found.group())


def json_strings(value: Any) -> Iterator[tuple[str, str, bool]]:
    """Every string in a JSON value as (where, string, is_key) triples, keys included.

    Iterative, not recursive: the value may be nested as deeply as the parser allows.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item, False
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str):
                    yield name, key, True
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", child) for index, child in enumerate(item))


def json_control_character(value: Any, *, allow_whitespace: bool = False) -> str | None:
    """Where a JSON value holds a control character, as a message, or None.

    ``allow_whitespace`` lets tab, line feed and carriage return pass in string values, never
    in keys (names).
    """
    for where, text, is_key in json_strings(value):
        found = control_character(text, allow_whitespace=allow_whitespace and not is_key)
        if found is not None:
            return f"{log_safe(where) or 'The value'} contains the control character {found}."
    return None


class WithoutTraceback(logging.Filter):
    """Logs a record as its one line, without the traceback (LOGGING's ``one_line`` filter).

    For Django's ``django.security`` loggers: a bad Host header or an oversized form is the
    client's mistake, worth a line, and Django would log each with a traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def log_safe(value: Any) -> str:
    """``value`` as text fit for one log line: control and non-ASCII characters escaped.

    For every value a client chose (paths, names, a Hub's error text): a ``%0A`` in a path
    must not start a forged log line. The same escaping Django applies to the paths it logs.
    """
    return str(value).encode("unicode_escape").decode("ascii")
