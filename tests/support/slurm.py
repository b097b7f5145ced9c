"""A real single-node Slurm for the end-to-end tests (registered by tests/e2e/conftest.py).

``slurm_cluster`` (session scope) starts munged (unless one answers already), slurmctld and
slurmd from a slurm.conf generated in a scratch folder, waits until ``sinfo`` shows the node
idle, and stops what it started by PID when the session ends. It also makes the Unix accounts
the tests' Hub users map to, and a sudoers rule that lets the worker (root here) run sbatch,
squeue and scancel as them, as docs/slurm.md tells a site to. scripts/test-services installs
the packages; the pitfalls are in ../shared/spec/test-environment.md ("Slurm").

No Django here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import alive, free_ports, wait_until

#: The Unix accounts the tests' Hub users map to (template ``hpc_{name}``).
TEST_ACCOUNTS = ("hpc_olga", "hpc_pavel")
#: CPUs and memory (MB) of the one node; a job asking for more pends or is refused.
NODE_CPUS = 2
NODE_MEMORY_MB = 2000
SUDOERS_FILE = Path("/etc/sudoers.d/outpost-portal-tests")
SLURM_BIN = Path("/usr/bin")
SLURM_SBIN = Path("/usr/sbin")


def slurm_conf(folder: Path, *, ctld_port: int, slurmd_port: int) -> str:
    """A slurm.conf that works on one machine without systemd or accounting."""
    return "\n".join(
        [
            "ClusterName=outposttest",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            # Expected start times of pending jobs are computed every second, not every 30 s.
            "SchedulerParameters=bf_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            # Ended jobs stay visible to squeue for a short while only.
            "MinJobAge=30",
            "KillWait=2",
            f"StateSaveLocation={folder}/state",
            f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid",
            f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log",
            f"SlurmdLogFile={folder}/slurmd.log",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB}",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            # A partition whose time limit a long flavor exceeds: its jobs pend
            # (PartitionTimeLimit) instead of being refused.
            "PartitionName=short Nodes=localhost MaxTime=10 State=UP",
            "",
        ]
    )


@dataclass
class SlurmCluster:
    """The running single-node Slurm: its slurm.conf and the commands to ask it."""

    folder: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        """What a spawner's environment needs to reach this Slurm (sudo keeps it with -E)."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm command (by absolute path) as root against this cluster."""
        program = SLURM_BIN / args[0]
        return subprocess.run(
            [str(program), *args[1:]],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def job_ids(self) -> list[str]:
        """Every job squeue lists, in any state but ended."""
        out = self.run("squeue", "-h", "-o", "%i").stdout
        return out.split()

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict of its Key=Value fields ({} once Slurm forgot it)."""
        done = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        if done.returncode != 0:
            return {}
        fields: dict[str, str] = {}
        for word in done.stdout.split():
            key, _, value = word.partition("=")
            fields[key] = value
        return fields

    def cancel_all(self) -> None:
        for account in TEST_ACCOUNTS:
            self.run("scancel", "-u", account, check=False)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.folder / name
            text = path.read_text(errors="replace") if path.exists() else "(none)"
            parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)


def ensure_accounts(names: tuple[str, ...] = TEST_ACCOUNTS) -> None:
    """Unix accounts (uid >= 1000, with a home folder) for the tests' users; idempotent."""
    for name in names:
        if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)


def clean_homes(names: tuple[str, ...] = TEST_ACCOUNTS) -> None:
    """Remove what earlier sessions' jobs left in the accounts' homes: job ids start at 1 in
    every session, so an old job's files would pass for a new one's."""
    for name in names:
        home = Path(pwd.getpwnam(name).pw_dir)
        for pattern in ("outpost-*", "jupyterhub_slurmspawner_*.log"):
            for path in home.glob(pattern):
                path.unlink(missing_ok=True)


def ensure_sudoers(names: tuple[str, ...] = TEST_ACCOUNTS) -> None:
    """The rule docs/slurm.md asks of a site, for the worker's account (root here): run the
    three Slurm commands as the mapped users, keeping the environment (SLURM_CONF, the
    server's JUPYTERHUB_* variables), without a password. Checked by visudo first."""
    rule = (
        f"root ALL=({','.join(names)}) NOPASSWD:SETENV: "
        f"{SLURM_BIN / 'sbatch'}, {SLURM_BIN / 'squeue'}, {SLURM_BIN / 'scancel'}\n"
    )
    if SUDOERS_FILE.exists() and SUDOERS_FILE.read_text() == rule:
        return
    candidate = SUDOERS_FILE.with_suffix(".new")
    candidate.write_text(rule)
    candidate.chmod(0o440)
    subprocess.run(["visudo", "-cqf", str(candidate)], check=True)
    candidate.rename(SUDOERS_FILE)


def _munge_answers() -> bool:
    credential = subprocess.run(["munge", "-n"], capture_output=True)
    if credential.returncode != 0:
        return False
    return subprocess.run(["unmunge"], input=credential.stdout, capture_output=True).returncode == 0


def _start_munged() -> int | None:
    """Start munged unless one answers; returns the pid of the one started here."""
    if _munge_answers():
        return None
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", str(SLURM_SBIN / "munged")], check=True)
    wait_until(_munge_answers, timeout=20, what="munged to answer")
    pid_file = run_dir / "munged.pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


def _pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop(pid: int | None, timeout: float = 20) -> None:
    if not pid or not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A single-node Slurm on localhost for the whole session, stopped by PID at its end."""
    if not (SLURM_SBIN / "slurmctld").exists():
        pytest.fail("Slurm is not installed: run scripts/test-services")
    ensure_accounts()
    clean_homes()
    ensure_sudoers()
    # Readable by the test accounts: sbatch, run as them, reads slurm.conf (pytest's own
    # tmp folders are mode 700).
    folder = Path(tempfile.mkdtemp(prefix="outpost-slurm-"))
    folder.chmod(0o755)
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    ctld_port, slurmd_port = free_ports(2)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, ctld_port=ctld_port, slurmd_port=slurmd_port))
    conf.chmod(0o644)
    cluster = SlurmCluster(folder=folder, conf=conf)
    munged = _start_munged()
    daemons: list[int | None] = []
    try:
        subprocess.run([str(SLURM_SBIN / "slurmctld"), "-f", str(conf), "-c"], check=True)
        daemons.append(wait_until(lambda: _pid_from(folder / "slurmctld.pid"), timeout=20))
        subprocess.run([str(SLURM_SBIN / "slurmd"), "-f", str(conf), "-N", "localhost"], check=True)
        daemons.append(wait_until(lambda: _pid_from(folder / "slurmd.pid"), timeout=20))
        wait_until(
            lambda: (
                cluster.run("sinfo", "-h", "-o", "%t", "-p", "debug", check=False).stdout
                == "idle\n"
            ),
            timeout=60,
            what="the Slurm node to be idle",
            details=cluster.log_tail,
        )
        yield cluster
    finally:
        if daemons:
            cluster.cancel_all()
        for pid in reversed(daemons):
            _stop(pid)
        _stop(munged)
        shutil.rmtree(folder, ignore_errors=True)
