"""The shared wire examples of tests/contract/ and the shape check both sides apply to them.

The API tests (tests/outposts/) and the hubclient's unit tests (tests/hubclient/) read the
same files, so the contract cannot drift. No Django here: the hubclient's tests import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTRACT_DIR = Path(__file__).resolve().parent.parent / "contract"


def contract(name: str) -> dict[str, Any]:
    """One example of tests/contract/, by file name or stem: ``contract("events")`` or
    ``contract("events.json")``."""
    file_name = name if name.endswith(".json") else f"{name}.json"
    return json.loads((CONTRACT_DIR / file_name).read_text())


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def assert_same_shape(example: Any, actual: Any, where: str = "$") -> None:
    """``actual`` has ``example``'s keys and JSON types, recursively (values may differ)."""
    assert json_type(actual) == json_type(example), f"{where}: {actual!r} vs {example!r}"
    if isinstance(example, dict):
        assert set(actual) == set(example), f"{where}: keys {sorted(actual)} vs {sorted(example)}"
        for key in example:
            assert_same_shape(example[key], actual[key], f"{where}.{key}")
    elif isinstance(example, list) and example:
        assert actual, f"{where}: expected at least one item"
        for index, item in enumerate(actual):
            assert_same_shape(example[0], item, f"{where}[{index}]")
