"""Fixtures of the tunnels tests; they are written in tests/support/."""

from tests.support.admin import site_admin, superuser, two_outposts  # noqa: F401 - fixtures
from tests.support.sshd import sshd  # noqa: F401 - fixture
from tests.support.tunnels import agent_runner, queued, web_server  # noqa: F401 - fixtures
