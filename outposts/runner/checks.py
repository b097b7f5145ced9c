"""Names a Hub chooses that must never reach a spawner: unsafe paths and system accounts."""

from __future__ import annotations

import pwd
import re


class UnsafeName(ValueError):
    """A user or server name that could escape a folder if a spawner built a path from it."""


class SystemAccount(ValueError):
    """A Hub user name that is a system account (root, a service) on the Outpost's host."""


def check_not_system_account(name: str, *, min_uid: int | None) -> None:
    """Refuse a user name that is a local account below ``min_uid``; None = no check.

    The Hub chooses the user name, and spawners that run servers as the user take the
    account from it (SlurmSpawner runs ``sudo -u <name> sbatch``, LocalProcessSpawner
    setuids): a Hub must not choose root. Names that are no local account pass, since
    spawners such as KubeSpawner and SimpleLocalProcessSpawner do not map names to accounts.
    """
    if min_uid is None:
        return
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    if uid < min_uid:
        raise SystemAccount(f"{name} is a system account on this Outpost and cannot start servers.")


def check_name_safe(name: str, *, what: str, allow_empty: bool = False) -> None:
    """JupyterHub's own rule for user names, applied to user and server names alike.

    Spawners build paths from them (home folders, log files); "/" and names made only of dots
    could then escape their folder.
    """
    if name == "" and allow_empty:
        return
    if not name or "/" in name or "\\" in name or "\x00" in name or set(name) == {"."}:
        raise UnsafeName(f"The {what} {name!r} is not allowed on this Outpost.")


# Request env names a spawner's commands would obey rather than pass on: the shell that runs
# batchspawner's `sudo ... sbatch` as the worker's account looks up PATH and loads LD_PRELOAD;
# sbatch reads SBATCH_* ahead of the job script's #SBATCH lines (SBATCH_TIMELIMIT would lift
# a flavor's --time), srun and the job read SLURM_*; Python reads PYTHON*. What the server
# needs of these is the Outpost's to set (spawner_config "environment"), never the Hub's.
REQUEST_ENV_DENIED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "ENV",
        "BASH_ENV",
        "IFS",
        "CDPATH",
        "GLOBIGNORE",
        "PS4",
        "SHELLOPTS",
        "BASHOPTS",
        "GCONV_PATH",
        "HOSTALIASES",
        "LOCPATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "TMPDIR",
    }
)
REQUEST_ENV_DENIED_PREFIXES = (
    "LD_",
    "DYLD_",
    "MALLOC_",
    "GLIBC_",
    "BASH_FUNC_",
    "SUDO_",
    "PYTHON",
    "SBATCH_",
    "SALLOC_",
    "SRUN_",
    "SLURM",
    "SQUEUE_",
    "SCANCEL_",
    "SINFO_",
    "SACCT_",
    "SCONTROL_",
    "MUNGE",
    # The portal's own: the start wrapper's call-back URL and token (tunnels/reports.py).
    "OUTPOST_CALLBACK_",
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def request_env_allowed(name: str) -> bool:
    """Whether a variable of the Hub's request env may reach the spawner's environment.

    Names must be plain (batchspawner joins them into the job script's --export line).
    """
    upper = name.upper()
    return (
        bool(ENV_NAME.match(name))
        and upper not in REQUEST_ENV_DENIED
        and not upper.startswith(REQUEST_ENV_DENIED_PREFIXES)
    )
