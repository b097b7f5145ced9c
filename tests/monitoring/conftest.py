"""Fixtures of the monitoring tests; they are written in tests/support/."""

from tests.support.portal import celery_worker  # noqa: F401 - fixture
from tests.support.processes import killer  # noqa: F401 - fixture
