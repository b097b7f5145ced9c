"""Whether a user rule's attributes match what a Hub says about its user (pure).

A rule's attributes map an attribute name of the user's ``authentication`` (``name``,
``groups``, an auth-state key, ...) to a pattern:

- a text is tried as a regular expression over the whole value, then as a glob, then as
  equal text (the existing Outpost service's flavors file means the same);
- a list of texts matches a value that is one of them.

The user's value may be a text or a list of texts: any of them may match. A rule matches when
any one of its attributes does; an attribute the user does not have never matches.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

Pattern = str | list[str]


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def text_matches(pattern: str, value: str) -> bool:
    """``value`` matches ``pattern`` as a whole-value regex, a glob or equal text."""
    regex = _regex(pattern)
    return bool(
        (regex is not None and regex.fullmatch(value))
        or _glob(pattern).fullmatch(value)
        or value == pattern
    )


def _values(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else [value]
    return [str(item) for item in items if item is not None]


def attribute_matches(pattern: Pattern, value: Any) -> bool:
    """One attribute: any of the user's values matches the pattern."""
    values = _values(value)
    if isinstance(pattern, str):
        return any(text_matches(pattern, item) for item in values)
    return any(item in pattern for item in values)


def attributes_match(attributes: Mapping[str, Pattern], authentication: Mapping[str, Any]) -> bool:
    """A rule's attributes match when any one of them matches the user's value."""
    return any(
        name in authentication and attribute_matches(pattern, authentication[name])
        for name, pattern in attributes.items()
    )


def attributes_problems(attributes: Any) -> list[str]:
    """What is wrong with a rule's attributes (an object of names to a text or texts)."""
    if not isinstance(attributes, dict):
        return ['must be a JSON object of attribute names to patterns, e.g. {"groups": ["hpc"]}']
    problems = []
    for name, pattern in attributes.items():
        if isinstance(pattern, str):
            continue
        if isinstance(pattern, list) and all(isinstance(item, str) for item in pattern):
            continue
        problems.append(f"{name}: a pattern is a text or a list of texts")
    return problems
