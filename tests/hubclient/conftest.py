"""Fixtures of the hubclient's unit tests: no Django database, a fake portal over real HTTP.

The hubclient never imports Django; its unit tests use no db fixture, so they run without a
database even though the repository's pytest configuration loads Django settings, and the
support modules they import (tests/support/contract.py, fake_portal.py, hubclient.py) import
no Django either. The end-to-end tests here (test_e2e_*.py) run the real portal instead:
tests/support/portal.py.
"""

from tests.support.hubclient import anyio_backend, make_spawner, portal  # noqa: F401 - fixtures
