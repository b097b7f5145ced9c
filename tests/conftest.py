"""Fixtures of every test directory; they are written in tests/support/."""

import pytest

from tests.support.api import hub, hub_client, outpost  # noqa: F401 - fixtures
from tests.support.chromium import browser  # noqa: F401 - fixture
from tests.support.hub import fake_hub  # noqa: F401 - fixture
from tests.support.pushes import pushes  # noqa: F401 - fixture
from tests.support.redis_server import private_redis  # noqa: F401 - fixture


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """make test runs two pytest-xdist workers with --dist loadgroup: the end-to-end tests all
    in one of them, one after another as without xdist (they share the session's Slurm and
    each runs many processes), while the other takes the rest."""
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.xdist_group("e2e"))
