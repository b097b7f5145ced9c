"""Fixtures of every test directory; they are written in tests/support/."""

from tests.support.api import hub, hub_client, outpost  # noqa: F401 - fixtures
from tests.support.chromium import browser  # noqa: F401 - fixture
from tests.support.hub import fake_hub  # noqa: F401 - fixture
from tests.support.pushes import pushes  # noqa: F401 - fixture
from tests.support.redis_server import private_redis  # noqa: F401 - fixture
