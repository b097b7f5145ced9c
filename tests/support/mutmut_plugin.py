"""A pytest plugin that only mutmut loads (``make mutants``; ``[tool.mutmut]`` in pyproject.toml).

mutmut tests mutants in parallel, each in a pytest run of its own. Two runs on one test
database drop or flush it under each other, and two on one Redis database read each other's
queued tasks: tests fail, and a failing test counts as a killed mutant. So each run takes a
free slot n (a lock file in mutmut's folder, held until its process ends) and uses the test
database ``test_<name>_<n>`` and the n-th Redis URL of MUTANTS_BROKER_URLS (the Makefile's).
"""

from __future__ import annotations

import fcntl
import os
from itertools import count
from pathlib import Path
from typing import IO

import pytest

_slot_lock: IO[str] | None = None


def _take_free_slot() -> int:
    global _slot_lock
    for slot in count():
        lock = Path(f"mutmut-slot-{slot}.lock").open("w")  # mutmut runs pytest in mutants/
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _slot_lock = lock
        return slot
    raise AssertionError("unreachable")


def pytest_configure(config: pytest.Config) -> None:
    # mutmut's fork server only collects the tests; the runs it forks take the slots.
    if config.option.collectonly or _slot_lock is not None:
        return
    brokers = os.environ.get("MUTANTS_BROKER_URLS", "").split()
    if not brokers:
        # A mutmut run by hand would otherwise share the Redis db of the test suite's runs.
        raise pytest.UsageError("MUTANTS_BROKER_URLS is not set: run mutmut through make mutants")
    from django.conf import settings

    slot = _take_free_slot()
    if slot >= len(brokers):
        raise pytest.UsageError(f"more parallel runs than MUTANTS_BROKER_URLS: {brokers}")
    database = settings.DATABASES["default"]
    database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_{slot}"
    # Celery itself reads the variable, before its Django settings.
    os.environ["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL = brokers[slot]
