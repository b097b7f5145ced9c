""" "Try a start" end to end: the admin's trial runs on a real Celery worker of the Outpost's
queue, not in the web process, and its page shows what the spawner did once it is done."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from outposts.models import OutpostTrial
from tests.support.processes import wait_until
from tests.support.spawners import serve_config

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_outposts_worker_runs_the_trial_and_its_page_shows_the_result(
    client, site_admin, two_outposts, home, celery_worker
):
    # given the site admin's Outpost with a good spawner and a worker serving its queue
    mine, _ = two_outposts
    mine.spawner_config = serve_config(home)
    mine.save()
    worker = celery_worker(mine.celery_queue)
    # when they ask for a trial in the admin
    asked = client.post(
        reverse("admin:outposts_outpost_changelist"),
        {"action": "try_start", "_selected_action": [mine.pk]},
    )
    assert asked.status_code == 302, asked.content[:500]

    # then the trial's page, refreshed, comes to say that the spawner started and stopped it
    def outcome() -> str | None:
        html = client.get(asked.url).content.decode()
        return html if 'data-outcome="started"' in html else None

    html = wait_until(
        outcome,
        timeout=120,
        what="the trial's result on its page",
        details=lambda: f"{OutpostTrial.objects.values().first()}\n{worker.log_tail()}",
    )
    assert ", and stopped it." in html
    # and it was the worker that ran it, as the dedicated user
    assert Path(home, "outpost-try").is_dir()
    assert OutpostTrial.objects.get().result["user_name"] == "outpost-try"
