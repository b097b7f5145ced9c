"""What the runner adds to batchspawner's SlurmSpawner (the ordinary class, not a subclass).

``adapt`` is called once by SpawnerRunner._build for a SlurmSpawner (or subclass). It:

- runs the job as the Outpost's Unix account for the Hub user (outposts/runner/accounts.py),
  kept in the spawner state so a later change of the rule never loses a running job;
- makes the flavor's runtime the job's time limit (``--time``), and lets allow-listed
  ``user_options`` fill the job script only where neither the flavor nor the portal decides:
  batchspawner merges user_options over its req_* values, so without this a Hub could ask
  for more memory or another partition than the flavor's, or replace ``cmd``;
- reports the job's state, Slurm's pending reason and expected start time as progress,
  once per change, instead of batchspawner's "Pending in queue..." every second;
- passes Slurm's reason on when sbatch refuses a job ("Requested node configuration is not
  available"), instead of a bare failure;
- tells "the job is gone" from "squeue could not answer": batchspawner reads both as gone
  (poll returns 1, the server would be stopped); here only Slurm's own word ends a server,
  and a failed query makes poll raise, which the reconciler records as *unknown*.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pwd
import re
import shlex
from collections.abc import AsyncIterator
from datetime import timedelta
from types import MethodType
from typing import TYPE_CHECKING, Any

from outposts.errors import SpawnerFailed
from outposts.runner.accounts import NoUnixAccount
from outposts.runner.checks import UnsafeName

if TYPE_CHECKING:
    from batchspawner import SlurmSpawner

log = logging.getLogger(__name__)

# Spawner-state key of the Unix account a job was submitted as.
STATE_ACCOUNT = "portal_unix_user"

# Job-script variables user_options never set, allow-listed or not: the limits a flavor or
# the Outpost decides, and what makes up the script and the command line.
PROTECTED_SUBVARS = frozenset(
    {
        "runtime",
        "memory",
        "nprocs",
        "ngpus",
        "gres",
        "options",
        "cmd",
        "username",
        "homedir",
        "keepvars",
        "keepvars_extra",
        "prologue",
        "epilogue",
        "srun",
        "host",
    }
)
# user_options values go into the job script (a bash script) and onto #SBATCH lines as they
# are: one plain word each.
OPTION_VALUE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,:@+=/-]{0,127}$")

# How often the pending job's reason and expected start are asked for while it waits.
PROGRESS_INTERVAL = 5.0
# squeue's word for jobs Slurm ended; with an empty answer (the job is no longer listed) the
# only answers that end a server.
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
INVALID_JOB = "Invalid job id specified"
# sbatch's words when the controller refuses a job (too many CPUs, a bad account, a QOS).
SUBMIT_REFUSED = re.compile(r"Batch job submission failed: ([^\n]{1,200})")

# What common pending reasons mean for someone waiting at the spawn page.
REASONS = {
    "Resources": "waiting for free resources",
    "Priority": "jobs with a higher priority go first",
    "BeginTime": "its start time has not come yet",
    "Dependency": "waiting for another job",
    "JobHeldUser": "held by its user",
    "JobHeldAdmin": "held by the administrators",
    "PartitionTimeLimit": "its time limit exceeds the partition's",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionConfig": "it asks for more than the partition's nodes have",
    "PartitionDown": "the partition is down",
    "ReqNodeNotAvail": "the nodes it needs are not available",
    "QOSMaxJobsPerUserLimit": "you run as many jobs as your QOS allows",
    "AssocMaxJobsLimit": "your account runs as many jobs as it may",
    "AssocGrpCPULimit": "your account uses all the CPUs it may",
    "Reservation": "waiting for its reservation",
}


class SlurmUnreachable(RuntimeError):
    """squeue did not answer for a job: the job may still run (the server becomes unknown)."""


def slurm_time(seconds: float) -> str:
    """A runtime as Slurm's ``--time`` (days-hours:minutes:seconds), whole minutes up."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def job_script_options(
    user_options: dict[str, Any], *, fixed: set[str]
) -> tuple[dict[str, str], list[str]]:
    """The user_options a job script may take, and the names of those it may not.

    ``fixed`` holds the job-script variables the flavor sets (``req_partition`` ->
    ``partition``): a Hub's value never replaces them. Raises UnsafeName for a value that is
    not one plain word.
    """
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for key, value in user_options.items():
        if key in PROTECTED_SUBVARS or key in fixed:
            dropped.append(key)
            continue
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if not OPTION_VALUE.match(text):
            raise UnsafeName(f"The option {key!r} must be one plain word on this Outpost.")
        kept[key] = text
    return kept, dropped


def pending_message(job_id: str, state: str, reason: str, start: str) -> str:
    """What a user waiting for the job reads, e.g. ``Slurm job 17 is pending (Resources:
    waiting for free resources); expected start 2026-12-01 15:43:23.``"""
    if state != "PENDING":
        return f"Slurm job {job_id} is {state.lower()}."
    meaning = REASONS.get(reason, "")
    if reason in ("", "None"):  # not looked at by the scheduler yet
        why = ""
    else:
        why = f" ({reason}: {meaning})" if meaning else f" ({reason})"
    if start and start not in ("N/A", "Unknown", "None"):
        when = f"; expected start {start.replace('T', ' ')}"
    else:
        when = "; no expected start time yet"
    return f"Slurm job {job_id} is pending{why}{when}."


def _command_prefix(spawner: SlurmSpawner) -> list[str]:
    """exec_prefix (``sudo -E -u <account>``) and the squeue of batch_query_cmd, as argv.

    The words of batch_query_cmd up to its squeue keep a site's absolute path or wrapper;
    the account is a plain name (accounts.py), so splitting cannot be steered by a user.
    """
    from batchspawner.batchspawner import format_template

    subvars = spawner.get_req_subvars()
    prefix = shlex.split(format_template(spawner.exec_prefix, **subvars))
    query = shlex.split(spawner.batch_query_cmd)
    for index, word in enumerate(query):
        if word.rsplit("/", 1)[-1] == "squeue":
            return prefix + query[: index + 1]
    return [*prefix, "squeue"]


# What squeue and scancel get of the worker's own environment. batchspawner would give them
# all of it, and `sudo -E` hands that on to a process of the user's, who can read its
# environment: the worker's database URL and keys must never be in it.
WORKER_ENV_KEPT = ("PATH", "LANG", "LC_ALL", "TZ")


def command_env(spawner: SlurmSpawner) -> dict[str, str]:
    """The environment of squeue and scancel: PATH and the locale of the worker, with the
    Outpost's ``environment`` trait (SLURM_CONF) over them; no secret of the worker's nor
    of the server's."""
    kept = {name: os.environ[name] for name in WORKER_ENV_KEPT if name in os.environ}
    own = {k: v for k, v in (spawner.environment or {}).items() if isinstance(v, str)}
    return {**kept, **own}


async def _squeue_job(spawner: SlurmSpawner) -> tuple[str, str, str] | None:
    """(state, reason, expected start) of the spawner's job; None if squeue cannot tell."""
    argv = [*_command_prefix(spawner), "-h", "-j", spawner.job_id, "-o", "%T|%r|%S"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=command_env(spawner),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
    except OSError:
        log.warning("Cannot run squeue for job %s", spawner.job_id, exc_info=True)
        return None
    if proc.returncode != 0:
        log.warning("squeue for job %s failed: %s", spawner.job_id, err.decode().strip()[:300])
        return None
    line = out.decode().strip().splitlines()[-1:] or [""]
    state, _, rest = line[0].partition("|")
    reason, _, start = rest.partition("|")
    return state, reason, start


def adapt(
    spawner: SlurmSpawner,
    *,
    account: str,
    user_options: dict[str, Any],
    flavor_traits: frozenset[str],
    runtime: timedelta | None,
) -> None:
    """Make ``spawner`` run its job as ``account`` within the flavor (see the module doc)."""
    from batchspawner.batchspawner import JobStatus

    # req_username and req_homedir are not configurable traits: set on the instance.
    spawner.req_username = account
    spawner.req_homedir = _home_of(account)
    if runtime is not None:
        spawner.req_runtime = slurm_time(runtime.total_seconds())
    fixed = {name[4:] for name in flavor_traits if name.startswith("req_")}
    if runtime is not None:
        fixed.add("runtime")
    kept, dropped = job_script_options(user_options, fixed=fixed)
    if dropped:
        log.info("user_options %s do not reach the job script: the flavor sets them", dropped)
    spawner.user_options = kept

    original_run_command = spawner.run_command
    original_query = spawner.query_job_status
    original_get_state = spawner.get_state
    original_load_state = spawner.load_state

    async def run_command(self: Any, cmd: str, input: Any = None, env: Any = None) -> str:
        # batchspawner gives sbatch the server's env, squeue and scancel the worker's whole
        # own: they get the Outpost's environment (SLURM_CONF) and nothing secret instead.
        if env is None:
            env = command_env(self)
        # batchspawner's query swallows a failed command: remember that it failed.
        try:
            return await original_run_command(cmd, input=input, env=env)
        except BaseException:
            self._portal_command_failed = True
            raise

    async def query_job_status(self: Any) -> JobStatus:
        self._portal_command_failed = False
        status = await original_query()
        if status != JobStatus.NOTFOUND or not self.job_id:
            return status
        words = (self.job_status or "").split()
        if self._portal_command_failed:
            # squeue exits 1 with this text once Slurm forgot the job: that is an answer.
            gone = INVALID_JOB in (self.job_status or "")
        else:
            # An empty answer: squeue no longer lists the job.
            gone = not words or words[0] in FINAL_STATES
        if not gone:
            log.warning("squeue gave no answer for job %s: %r", self.job_id, self.job_status[:300])
            return JobStatus.UNKNOWN
        return status

    async def poll(self: Any) -> int | None:
        status = await self.query_job_status()
        if status in (JobStatus.PENDING, JobStatus.RUNNING):
            return None
        if status == JobStatus.UNKNOWN:
            raise SlurmUnreachable(f"squeue did not answer for job {self.job_id}")
        words = (self.job_status or "").split()
        self.clear_state()
        return 0 if words[:1] == ["COMPLETED"] else 1

    async def progress(self: Any) -> AsyncIterator[dict[str, Any]]:
        last: tuple[str, str, str] | None = None
        while True:
            if not self.job_id:
                await asyncio.sleep(0.5)  # sbatch has not answered yet
                continue
            seen = await _squeue_job(self)
            if seen is not None and seen[0] and seen != last:
                last = seen
                state = seen[0]
                if state in ("RUNNING", "COMPLETING"):
                    yield {
                        "progress": 60,
                        "message": f"Slurm job {self.job_id} is running; waiting for the "
                        "server to report its address.",
                    }
                    return
                yield {"progress": 30, "message": pending_message(self.job_id, *seen)}
            await asyncio.sleep(PROGRESS_INTERVAL)

    original_submit = spawner.submit_batch_script

    async def submit_batch_script(self: Any) -> str:
        try:
            return await original_submit()
        except RuntimeError as error:
            refusal = SUBMIT_REFUSED.search(str(error))
            if refusal is None:
                raise
            # Slurm's own reason (no paths or hosts in it) is what the user can act on.
            raise SpawnerFailed(f"Slurm refused the job: {refusal.group(1).strip()}") from error

    original_stop = spawner.stop

    async def stop(self: Any, now: bool = False) -> None:
        # Nothing was submitted (sbatch failed or never answered): `scancel` without a job
        # id would only fail, and make the stop task retry for nothing.
        if self.job_id:
            await original_stop(now=now)

    def user_env(self: Any, env: dict[str, str]) -> dict[str, str]:
        # batchspawner's UserEnvMixin reads the Hub user's name; the job's user is the account.
        try:
            entry = pwd.getpwnam(self.req_username)
        except KeyError:
            return env
        env.update(USER=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell)
        return env

    def get_state(self: Any) -> dict[str, Any]:
        state = original_get_state()
        if state.get("job_id"):
            state[STATE_ACCOUNT] = self.req_username
        return state

    def load_state(self: Any, state: dict[str, Any]) -> None:
        original_load_state(state)
        # The account the job was submitted as, whatever the rule says now: only it (or
        # Slurm's admins) may cancel the job.
        if state.get(STATE_ACCOUNT):
            self.req_username = state[STATE_ACCOUNT]
            self.req_homedir = _home_of(self.req_username)

    spawner.run_command = MethodType(run_command, spawner)
    spawner.query_job_status = MethodType(query_job_status, spawner)
    spawner.poll = MethodType(poll, spawner)
    spawner.progress = MethodType(progress, spawner)
    spawner.submit_batch_script = MethodType(submit_batch_script, spawner)
    spawner.stop = MethodType(stop, spawner)
    spawner.user_env = MethodType(user_env, spawner)
    spawner.get_state = MethodType(get_state, spawner)
    spawner.load_state = MethodType(load_state, spawner)


def _home_of(account: str) -> str:
    """The account's home folder (the job's working folder and log), "" if unknown here."""
    try:
        return pwd.getpwnam(account).pw_dir
    except KeyError:
        return ""


def check_account_exists(account: str) -> None:
    """Refuse a start whose account does not exist on this host (sudo would fail later,
    with a message no user could act on)."""
    if not _home_of(account):
        raise NoUnixAccount(f"{account} is not an account on this Outpost's host.")


def is_slurm(spawner_class: type) -> bool:
    try:
        from batchspawner import SlurmSpawner
    except ImportError:
        return False
    return isinstance(spawner_class, type) and issubclass(spawner_class, SlurmSpawner)
