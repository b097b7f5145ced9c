"""The existing service's flavors file: its keys, and readers that check one value each.

Every reader names the key path of the value it refuses (``FlavorFileError``), so that an
administrator finds the line at fault; flavors/imports.py plans the rows from what they read.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

FILE_KEYS = ("flavors", "hubs", "users")
FLAVOR_KEYS = ("max", "maxPerUser", "runtime", "weight", "display_name", "description", "resources")
HUB_SET_KEYS = ("jupyterhub_name", "weight", "flavors", "flavorsOverride")
USER_SET_KEYS = (
    "hubs",
    "authentication",
    "negate_authentication",
    "weight",
    "forbidden",
    "flavors",
    "flavorsOverride",
)
# The file's names of what a set may override, and the portal's (flavors.models.OVERRIDABLE).
# ``max`` is not among them: a Hub set's becomes the Hub's cap, a user set's has no meaning.
OVERRIDE_NAMES = {
    "maxPerUser": "max_per_user",
    "runtime": "runtime",
    "weight": "weight",
    "display_name": "display_name",
    "description": "description",
    "resources": "resources",
}
FILE_NAMES = {ours: theirs for theirs, ours in OVERRIDE_NAMES.items()}


class FlavorFileError(ValueError):
    """The file cannot be imported; the message starts with the key path at fault."""


def fail(path: str, message: str) -> FlavorFileError:
    return FlavorFileError(f"{path or 'the file'}: {message}")


def read_mapping(path: str, value: Any, known: tuple[str, ...] | None = None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(path, "must be a mapping")
    for key in value:
        if not isinstance(key, str):
            raise fail(path, f"keys must be text, not {key!r}")
        if known is not None and key not in known:
            raise fail(f"{path}.{key}" if path else key, f"unknown key; known: {', '.join(known)}")
    return value


def read_whole(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, f"must be a whole number, not {value!r}")
    return value


def read_flag(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(path, f"must be true or false, not {value!r}")
    return value


def read_text(path: str, value: Any) -> str:
    if not isinstance(value, str):
        raise fail(path, f"must be text, not {value!r}")
    return value


def read_names(path: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise fail(path, "must be a list of names")
    return list(dict.fromkeys(value))


def read_max(path: str, value: Any) -> int | None:
    """The file's ``max``: -1 (or none) is unlimited, 0 closes the flavor."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise fail(path, f"must be -1 (unlimited) or a number of servers, not {value!r}")
    return None if value == -1 else value


def existing_service_matches(pattern: str, name: str) -> bool:
    """How the existing service matches a Hub set's pattern: as a regular expression if it
    is one, and as a glob only if it is not one (unlike its user sets, and the portal)."""
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return re.fullmatch(fnmatch.translate(pattern), name) is not None
