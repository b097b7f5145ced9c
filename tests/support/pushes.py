"""The flavor-table pushes a change queues (flavors.services.flavors_changed), recorded.

A test's transaction never commits: the on-commit callbacks run by hand, and the broker
sends are recorded instead of made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache

from outposts import tasks


class Pushes:
    """Call it with an action: it runs the action, commits by hand and answers the pushes
    queued, as sorted (Hub id, Outpost id). ``result`` is what the action returned."""

    def __init__(self, capture: Callable[..., Any]) -> None:
        self.queued: list[tuple[int, int]] = []
        self.result: Any = None
        self._capture = capture

    def __call__(
        self, action: Callable[[], Any], *, waiting: bool = False
    ) -> list[tuple[int, int]]:
        """``waiting``: keep pushes queued by earlier calls waiting, as if they had not run
        yet (they swallow new ones); by default each call starts with none waiting."""
        self.queued.clear()
        if not waiting:
            cache.clear()
        with self._capture(execute=True):
            self.result = action()
        return sorted(self.queued)


@pytest.fixture
def pushes(monkeypatch, django_capture_on_commit_callbacks) -> Iterator[Pushes]:
    recorder = Pushes(django_capture_on_commit_callbacks)
    task = tasks.hub_flavor_table_send_task._get_current_object()
    monkeypatch.setattr(
        task, "apply_async", lambda args, **options: recorder.queued.append(tuple(args))
    )
    cache.clear()
    yield recorder
    cache.clear()
