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
