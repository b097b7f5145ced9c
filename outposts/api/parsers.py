"""The API's JSON parser: DRF's, with a bound on nesting and finite numbers only.

Python's json module recurses once per level: a body nested a thousand levels deep raises
RecursionError (a 500), and anything deep enough that parses would recurse again in every
later walk of it (validation, encryption, the database's JSON). The depth is counted before
parsing, without recursion. Numbers such as 1e400 parse to infinity, which PostgreSQL's jsonb
cannot store: they are refused too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

# A JSON string (skipped whole, so brackets inside it do not count) or a bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` levels deep.

    Malformed text is not judged here (the parser reports it), only counted.
    """
    depth = 0
    for token in _TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


class BoundedJSONParser(JSONParser):
    """REST_FRAMEWORK's parser: 400 for a body nested deeper than PORTAL_MAX_JSON_DEPTH or
    holding a number out of a double's range, as for any other malformed JSON."""

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read()
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as error:
            raise ParseError(f"JSON parse error - {error}") from None
        limit = settings.API_MAX_JSON_DEPTH
        if json_depth_exceeds(text, limit):
            raise ParseError(f"JSON parse error - nested more than {limit} levels deep.")
        try:
            # As DRF's JSONParser (STRICT_JSON: no NaN or Infinity), finite numbers only.
            return json.loads(
                text,
                parse_constant=json.strict_constant if self.strict else None,
                parse_float=_finite_float,
            )
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from None
