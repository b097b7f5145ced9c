"""Fixtures of the outposts tests; they are written in tests/support/ (helpers too:
tests/support/api.py, contract.py)."""

from tests.support.admin import site_admin, superuser, two_outposts  # noqa: F401 - fixtures
from tests.support.api import short_sync_wait  # noqa: F401 - fixture
from tests.support.lifecycle import running, stopper  # noqa: F401 - fixtures
from tests.support.processes import home, killer  # noqa: F401 - fixtures
