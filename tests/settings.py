"""Settings for the test suite: the real settings, on PostgreSQL and Redis by default.

Fixed keys, for tests only. Worker processes that tests start use this module too.
"""

import os

os.environ.setdefault("PORTAL_SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("PORTAL_CREDENTIAL_KEY", "tests-only-credential-key")
# Tests drive the admin over plain http on 127.0.0.1 (also with a real Chromium): a secure
# session cookie would never be sent back.
os.environ.setdefault("PORTAL_SECURE_COOKIES", "false")
os.environ.setdefault("PORTAL_ENCRYPTION_KEYS", "doMMAYSpy4vTWjE1IhxV6yhXTVFnlisU_zoKssC77Q0=")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
# make test runs two pytest-xdist workers. Each has a database of its own (pytest-django's
# test_<name>_gw<n>) and a Redis db of its own, as tests empty theirs: the n-th worker's is 3n
# below the suite's (15, 12), past the mutation runs' (13, 14). Processes the tests start
# inherit it.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
if _worker != "gw0" and not os.environ.get("PORTAL_TEST_WORKER_BROKER"):
    _base, _, _db = os.environ["CELERY_BROKER_URL"].rpartition("/")
    os.environ["CELERY_BROKER_URL"] = f"{_base}/{int(_db) - 3 * int(_worker[2:])}"
    os.environ["PORTAL_TEST_WORKER_BROKER"] = "1"  # once, even where settings load again

from portal.settings import *  # noqa: E402,F403

# The stand-in spawners the suite configures on Outposts through the admin and apply_config.
SPAWNER_CLASSES = [  # noqa: F405 - from portal.settings
    *SPAWNER_CLASSES,  # noqa: F405
    "tests.support.spawners.SlowSpawner",
    "tests.support.spawners.HangingSpawner",
    "tests.support.spawners.UnreachableSpawner",
    "tests.support.spawners.QueuedStartSpawner",
    "tests.support.spawners.InstantSpawner",
    "tests.support.batch.LocalBatchSpawner",
]
