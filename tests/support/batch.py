"""A batch spawner whose "cluster" is this machine: batchspawner's own start(), poll() and
stop() logic with submit, query and cancel done locally.

``LocalBatchSpawner`` subclasses batchspawner's ``BatchSpawnerBase`` unchanged but for the
three batch commands: "submitting" runs the job's command line (what batchspawner would put
in the job script: ``batchspawner_singleuser_cmd``, then ``cmd`` and the args) as a local
process, its pid being the job id; "querying" asks whether that process lives; "cancelling"
sends it SIGTERM. So start() really waits for its port as on Slurm, until the portal sets it
from the start wrapper's call-back. Real Slurm comes with the Slurm work (issue 10). No Django.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal

from batchspawner.batchspawner import BatchSpawnerBase, JobStatus


def _job_alive(pid: int) -> bool:
    """Whether the job's process runs; one that ended is reaped if it is our child (a
    zombie would still answer kill(0))."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class LocalBatchSpawner(BatchSpawnerBase):
    startup_poll_interval = 0.2

    async def submit_batch_script(self) -> str:
        command = shlex.split(self.cmd_formatted_for_batch())
        self.log.info("Local batch job: %s", command)
        proc = await asyncio.create_subprocess_exec(
            *command, env=self.get_env(), start_new_session=True, cwd=os.getcwd()
        )
        self.job_id = str(proc.pid)
        return self.job_id

    async def query_job_status(self) -> JobStatus:
        if not self.job_id or not _job_alive(int(self.job_id)):
            self.job_status = ""
            return JobStatus.NOTFOUND
        self.job_status = f"R 127.0.0.1 {self.job_id}"
        return JobStatus.RUNNING

    async def cancel_batch_job(self) -> None:
        try:
            os.killpg(int(self.job_id), signal.SIGTERM)
        except (ProcessLookupError, ValueError, PermissionError):
            pass

    def state_ispending(self) -> bool:
        return False

    def state_isrunning(self) -> bool:
        return self.job_status.startswith("R ")

    def state_gethost(self) -> str:
        return "127.0.0.1"
