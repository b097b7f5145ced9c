"""Children that are restarted when they exit, for ``manage.py runportal``.

runportal builds the command lines with Django, then hands its process over to this file
(``os.execv`` of ``python portal/supervisor.py``, the plan in an environment variable), so
that the process that only supervises keeps neither Django nor Celery loaded: about 70 MiB
of the embedded default's memory (bench/README.md). Run as a script it imports nothing but
the standard library (not even its package, whose __init__ loads Celery).

A child that exits by itself (a crash, an out-of-memory kill) is started again after a
back-off that doubles with each exit in a row (1 s, 2 s, 4 s, ... up to BACKOFF_MAX_SECONDS)
and starts again at 1 s once a child has run for STABLE_AFTER_SECONDS; each exit and restart
is one log line. Only a stop (Ctrl-C, SIGTERM) ends them all.

Each child runs in its own process group, so that a terminal's Ctrl-C reaches only the
supervisor, which then stops the children in order; killing each whole group at the end also
ends whatever a child started and left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

# Where runportal puts the plan for ``python -m portal.supervisor`` (removed before any child
# starts, so no child sees it).
PLAN_VARIABLE = "PORTAL_SUPERVISOR_PLAN"
# How long the private Redis may take to answer on its socket.
BROKER_START_SECONDS = 30.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
# A child that ran this long before exiting gets the first back-off again.
STABLE_AFTER_SECONDS = 60.0
# How long the children get to finish after SIGTERM (a warm Celery shutdown waits for its
# running tasks; with acks_late an unfinished one is redelivered) before they are killed.
STOP_GRACE_SECONDS = 15.0


def restart_delay(exits_in_a_row: int) -> float:
    """Seconds to wait before the next start of a child that exited this many times in a row."""
    return min(BACKOFF_FIRST_SECONDS * 2 ** max(exits_in_a_row - 1, 0), BACKOFF_MAX_SECONDS)


@dataclass
class Child:
    """One supervised command and its current process."""

    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    exits_in_a_row: int = 0
    restart_at: float | None = None
    #: Every process this child ran, the current one last (its groups are killed at the end).
    history: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Starts children, restarts those that exit, and stops them all in order.

    ``write`` gets one line at a time: the children's output, each line prefixed with the
    child's name, and the supervisor's own lines.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.children: list[Child] = []
        self._write_lock = threading.Lock()

    def start(self, name: str, command: list[str]) -> Child:
        child = Child(name=name, command=command)
        self.children.append(child)
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
        )
        child.history.append(child.process)
        child.started_at = time.monotonic()
        child.restart_at = None
        assert child.process.stdout is not None
        threading.Thread(
            target=self._forward, args=(child.name, child.process.stdout), daemon=True
        ).start()

    def supervise(self, stop: threading.Event) -> None:
        """Restart exited children until ``stop`` is set."""
        while not stop.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        self.say(f"restarting {child.name}")
                        self._spawn(child)
                elif not child.running():
                    self._schedule_restart(child, now)

    def _schedule_restart(self, child: Child, now: float) -> None:
        assert child.process is not None
        ran_for = now - child.started_at
        child.exits_in_a_row = 1 if ran_for >= STABLE_AFTER_SECONDS else child.exits_in_a_row + 1
        delay = restart_delay(child.exits_in_a_row)
        child.restart_at = now + delay
        self.say(
            f"{child.name} exited with code {child.process.returncode} after {ran_for:.1f} s; "
            f"restarting it in {delay:g} s (exit {child.exits_in_a_row} in a row)"
        )

    def stop(self, in_order: Iterable[Iterable[Child]]) -> None:
        """Stop the children, one batch after the other (the broker last: the others ack
        their tasks on their way out), then kill what is left of every group they ran."""
        for batch in in_order:
            self._terminate(list(batch))
        for child in self.children:
            for process in child.history:
                # Whatever is left in a child's group (the child itself after the grace, or a
                # grandchild that outlived it) is killed: nothing stays behind.
                _signal_group(process, signal.SIGKILL)
                process.wait()

    def _terminate(self, batch: list[Child]) -> None:
        # SIGTERM to each child alone: uvicorn and Celery stop their own workers in order (a
        # signal to the whole group would kill a prefork pool's busy children mid-task).
        for child in batch:
            child.restart_at = None
            if child.running():
                assert child.process is not None
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in batch:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass

    def say(self, text: str) -> None:
        self._write(f"runportal: {text}")

    def _write(self, line: str) -> None:
        with self._write_lock:
            self.write(line)

    def _forward(self, name: str, stream: IO[bytes]) -> None:
        """Copy a child's output, each line prefixed with the child's name."""
        for line in iter(stream.readline, b""):
            self._write(f"{name:>6} | {line.decode(errors='replace').rstrip()}")


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class SupervisorError(Exception):
    """The parts cannot be run (the broker did not come up)."""


@dataclass(frozen=True)
class Plan:
    """What runportal runs: the private Redis first (if any) and once it answers on its
    socket, then the parts, in order."""

    parts: dict[str, list[str]]
    broker: list[str] | None = None
    broker_socket: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"parts": self.parts, "broker": self.broker, "broker_socket": self.broker_socket}
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls(**json.loads(text))


def run(plan: Plan, write: Callable[[str], None]) -> None:
    """Run the plan's parts until SIGINT or SIGTERM, then stop them all, the broker last (the
    worker acknowledges its tasks on its way out)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    supervisor = Supervisor(write)
    try:
        if plan.broker is not None:
            broker = supervisor.start("broker", plan.broker)
            _wait_for_broker(broker, str(plan.broker_socket), stop)
        for name, command in plan.parts.items():
            if not stop.is_set():
                supervisor.start(name, command)
        supervisor.supervise(stop)
    finally:
        supervisor.stop(
            [
                [child for child in supervisor.children if child.name != "broker"],
                [child for child in supervisor.children if child.name == "broker"],
            ]
        )
    supervisor.say("stopped")


def _wait_for_broker(broker: Child, path: str, stop: threading.Event) -> None:
    """Return once the private Redis takes connections on its socket, or a stop was asked
    for meanwhile."""
    deadline = time.monotonic() + BROKER_START_SECONDS
    while not _accepts_connections(path):
        if not broker.running():
            raise SupervisorError("The embedded broker (redis-server) exited; see its lines above.")
        if time.monotonic() > deadline:
            raise SupervisorError(
                f"The embedded broker did not answer on {path} within {BROKER_START_SECONDS:g} s."
            )
        if stop.wait(0.1):
            return


def _accepts_connections(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(1)
        try:
            client.connect(path)
        except OSError:
            return False
    return True


def _line_to(stream: IO[str]) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return write


def main() -> int:
    plan = Plan.from_json(os.environ.pop(PLAN_VARIABLE))
    try:
        run(plan, _line_to(sys.stdout))
    except SupervisorError as error:
        _line_to(sys.stderr)(f"runportal: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
