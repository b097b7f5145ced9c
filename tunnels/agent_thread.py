"""The tunnel agent in a thread of the Celery worker (``--tunnel-agent NAME``), for runportal.

As a process of its own the agent imports Django a second time: about 88 MiB idle, a third
of the embedded default's memory (bench/README.md). runportal's worker runs one process with
a pool of threads, so the agent can live beside its tasks there. A failure the agent does
not handle itself starts it again after a back-off (a supervisor would restart its process);
its state is in the rows, so a new agent opens again what the old one held. Production runs
``manage.py run_tunnel_agent`` instead, on the host the tunnels should start from
(docs/tunnels.md).

This module is imported with the Celery app, before Django is set up: the agent itself is
imported when the thread starts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)


class AgentThread:
    """The tunnel agent named ``name``, run in a thread until ``stop`` is called."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"tunnel-agent-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the agent to close its forwards and end; waits at most ``timeout`` seconds."""
        self.stopping.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        from django.conf import settings
        from django.db import connections

        from tunnels.agent import TunnelAgent, backoff_delay

        failures = 0
        try:
            while not self.stopping.is_set():
                agent = TunnelAgent(name=self.name, backoff_max=settings.TUNNEL_BACKOFF_MAX)
                try:
                    agent.run(stop=self.stopping, interval=settings.TUNNEL_CHECK_INTERVAL)
                except Exception:
                    failures += 1
                    delay = backoff_delay(failures, cap=settings.TUNNEL_BACKOFF_MAX)
                    log.exception(
                        "Tunnel agent %s failed; starting it again in %g s", self.name, delay
                    )
                    self.stopping.wait(delay)
        finally:
            connections.close_all()  # this thread's


class TunnelAgentStep(bootsteps.StartStopStep):
    """A worker step that runs the tunnel agent ``--tunnel-agent NAME`` in a thread."""

    label = "TunnelAgentThread"
    conditional = True

    def __init__(self, parent: Any, tunnel_agent: str | None = None, **kwargs: Any) -> None:
        self.agent_name = tunnel_agent
        self.enabled = bool(tunnel_agent)
        super().__init__(parent, **kwargs)

    def create(self, parent: Any) -> AgentThread:
        return AgentThread(self.agent_name or "")
