"""The Popen handles of the local-process servers this worker process started.

Only the process that started a local server can reap it and learn its exit status; any other
process polling its pid sees an exited-but-unreaped child (a zombie) as alive. So every
handle is kept here and given back to the rebuilt spawner on each poll and stop (see
outposts/runner/__init__.py).
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner

# Popen handles of the servers this process started, by pid (see the module docstring).
_CHILDREN: dict[int, subprocess.Popen[Any]] = {}
_CHILDREN_LOCK = threading.Lock()


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def remember_child(spawner: Spawner) -> None:
    proc = getattr(spawner, "proc", None)
    if isinstance(proc, subprocess.Popen):
        with _CHILDREN_LOCK:
            _CHILDREN[proc.pid] = proc


def forget_child(pid: int) -> None:
    with _CHILDREN_LOCK:
        _CHILDREN.pop(pid, None)


def adopt_child(spawner: Spawner) -> None:
    """Give a rebuilt spawner the Popen handle of its server if this process started it."""
    pid = getattr(spawner, "pid", 0)
    if pid and getattr(spawner, "proc", None) is None:
        with _CHILDREN_LOCK:
            proc = _CHILDREN.get(pid)
        if proc is not None:
            spawner.proc = proc
