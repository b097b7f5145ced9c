"""The Outpost admin's "Try a start": a short test start of an Outpost's spawner settings.

The admin action asks for one (``outpost_trial_request``): an ``OutpostTrial`` row, and a task
on the Outpost's own queue, so the trial runs where the Outpost's servers run (a Slurm login
node, a worker with the cluster's service account), never in the web process. The task
(``outpost_trial_run``) builds the Outpost's spawner as for any server (its
``spawner_config``, then the resources of the flavor a Hub lists first), for the dedicated
user ``settings.TRY_START_USER``, starts it, stops it right after, and stores what happened
with the spawner's log tail (outposts/runner/logtail.py) and its progress messages; the admin's
trial page shows it, refreshing until it is there.

The runner is driven directly, bounded by ``settings.TRY_START_TIMEOUT``: no Server row is
written, so a trial holds no flavor's or user's slot, reaches no Hub and is in no usage
report. On an Outpost whose servers report their address (``server_reports_address``) no
report of a test server is received: its trial fails, with the progress the start made.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from flavors.models import Flavor
from outposts import dispatch
from outposts.models import Outpost, OutpostTrial
from outposts.runner.accounts import UnixAccountRule
from outposts.runner.spawner import ServerSpec, SpawnerRunner, run_sync
from outposts.runner.watch import StartOutcome, start_watched

log = logging.getLogger(__name__)

# The server id a trial's runner names in its logs and certificate folder: no row has it.
TRIAL_SERVER_ID = 0


@dataclass
class TrialResult:
    """What a trial start did: whether the spawner started a server (and where), the error it
    raised if not, its progress messages and its log lines (redacted)."""

    outpost: Outpost
    user_name: str
    flavor: str = ""
    started: bool = False
    address: str = ""
    error: str = ""
    stopped: bool = False
    progress: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """What OutpostTrial.result stores (the Outpost is the row's own)."""
        return {key: value for key, value in asdict(self).items() if key != "outpost"}


def trial_spec(*, outpost: Outpost, flavor: Flavor | None) -> ServerSpec:
    """The server a trial starts: the Outpost's settings and the flavor's resources (as
    admission would freeze them), for TRY_START_USER, with a fresh API token."""
    resources = dict(flavor.resources or {}) if flavor is not None else {}
    user = settings.TRY_START_USER
    server_name = f"try-{secrets.token_hex(3)}"
    return ServerSpec(
        server_id=TRIAL_SERVER_ID,
        spawner_class=outpost.spawner_class,
        trait_values={**(outpost.spawner_config or {}), **resources},
        user_name=user,
        user_id=0,
        server_name=server_name,
        env={
            "JUPYTERHUB_API_TOKEN": secrets.token_hex(16),
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_SERVER_NAME": server_name,
        },
        user_options={},
        state=None,
        min_system_uid=outpost.min_system_uid,
        unix_account_rule=UnixAccountRule.from_outpost(outpost),
        flavor_traits=frozenset(resources),
        runtime=flavor.runtime if flavor is not None else None,
    )


def outpost_try_start(*, outpost: Outpost) -> TrialResult:
    """Start a trial server on ``outpost`` and stop it right after (module docstring).

    Never raises for what the spawner does: its errors are the result's ``error``, with the
    exception's own text (the Outpost's admins may read paths and hosts a user is not shown).
    """
    # The flavor a Hub lists first: the one most starts would use.
    flavor = outpost.flavors.order_by("-weight", "name").first()
    result = TrialResult(
        outpost=outpost,
        user_name=settings.TRY_START_USER,
        flavor=flavor.name if flavor is not None else "",
    )
    try:
        runner = SpawnerRunner(trial_spec(outpost=outpost, flavor=flavor))
    except Exception as error:  # noqa: BLE001 - any build error is the trial's answer
        result.error = f"{type(error).__name__}: {error}"
        return result

    async def on_progress(progress: int, message: str) -> None:
        result.progress.append(message)

    async def never_stopped() -> bool:
        return False

    timeout = min(settings.TRY_START_TIMEOUT, outpost.start_timeout.total_seconds())
    log.info("Trying a start on Outpost %s as %s", outpost.slug, runner.spec.user_name)
    watched = run_sync(
        start_watched,
        runner,
        tls=None,
        on_progress=on_progress,
        stop_requested=never_stopped,
        timeout=timeout,
    )
    if watched.outcome == StartOutcome.RUNNING:
        result.started, result.address = True, watched.address
        try:
            run_sync(runner.stop, now=True)
            result.stopped = True
        except Exception as error:  # noqa: BLE001 - said on the page, the start still counts
            log.exception("Could not stop the trial server on Outpost %s", outpost.slug)
            runner.log_tail.add_error(error, what="The stop")
    elif watched.outcome == StartOutcome.TIMED_OUT:
        result.error = f"The spawner did not start a server within {timeout:g} seconds."
        result.stopped = True  # start_watched stopped what it made
    else:
        error = watched.error or RuntimeError(watched.outcome)
        result.error = f"{type(error).__name__}: {error}"
        result.stopped = True
    result.error = runner.log_tail.redacted(result.error)
    result.log_lines = runner.log_tail.text().splitlines()
    return result


# A trial that started this long ago without a result will not get one (its worker died).
TRIAL_LOST_AFTER = timedelta(seconds=60)


def outpost_trial_request(*, outpost: Outpost, user: AbstractBaseUser) -> OutpostTrial:
    """Ask for a trial start on ``outpost``, run by a worker of its queue once this commits.

    Raises TaskQueueUnavailable when the broker cannot take it; the trial is then recorded as
    finished with that error.
    """
    with transaction.atomic():
        trial = OutpostTrial.objects.create(outpost=outpost, requested_by=user)
        dispatch.queue_outpost_trial_run(
            trial=trial,
            if_unqueued=lambda: _trial_finish(
                trial_id=trial.pk,
                result={"error": "The portal's task queue was unavailable; nothing ran."},
            ),
        )
    return trial


def outpost_trial_run(*, trial_id: int) -> None:
    """Run a trial asked for in the admin (the task's body). Runs once: a redelivered copy of
    a trial that started does nothing, as a second test server is not what was asked for."""
    claimed = OutpostTrial.objects.filter(pk=trial_id, started_at__isnull=True).update(
        started_at=timezone.now()
    )
    if not claimed:
        return
    trial = OutpostTrial.objects.select_related("outpost").get(pk=trial_id)
    _trial_finish(trial_id=trial_id, result=outpost_try_start(outpost=trial.outpost).as_json())


def _trial_finish(*, trial_id: int, result: dict[str, Any]) -> None:
    OutpostTrial.objects.filter(pk=trial_id).update(result=result, finished_at=timezone.now())


def trial_is_lost(trial: OutpostTrial) -> bool:
    """Whether a trial that started will never finish: its worker died while it ran."""
    if trial.started_at is None or trial.finished_at is not None:
        return False
    limit = timedelta(seconds=settings.TRY_START_TIMEOUT) + TRIAL_LOST_AFTER
    return timezone.now() - trial.started_at > limit
