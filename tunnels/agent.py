"""The tunnel agent: holds an SSH forward (sshtunnel) for every tunnel it owns that should be
open, checks them, re-creates dropped ones with back-off and records health in the rows.

One round (``TunnelAgent.round``) reads the agent's rows and makes what it holds match them:

- a tunnel that should be open and is not held is opened (unless its back-off says wait);
- a held forward whose row's generation moved on (a restart) is closed and opened again;
- a held forward whose SSH transport died or whose local port stopped answering is closed
  and opened again, at once the first time, then after 1, 2, 4, ... seconds (``backoff_delay``);
- a held forward no longer wanted (closed, or its server ended) is closed.

The state lives in the rows, not in the agent: an agent that restarts opens all its tunnels
again in its first round. Several agents run side by side, each owning the rows with its name.
Opening a forward blocks the round (at most the SSH timeout), which is fine for the tens of
tunnels one agent holds.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone
from sshtunnel import BaseSSHTunnelForwarderError, SSHTunnelForwarder

from tunnels import selectors, services
from tunnels.models import OutpostSSH, Tunnel
from tunnels.ssh import (
    HostKeyUnknown,
    host_key_fetch,
    host_key_lookup,
    known_hosts_line,
    known_hosts_name,
    private_key_load,
)

log = logging.getLogger(__name__)
# sshtunnel reports why a connection failed only in its log: captured while opening.
SSH_LOG = logging.getLogger("tunnels.agent.sshtunnel")

# How long the local port may take to answer a check.
LOCAL_CHECK_TIMEOUT = 2.0
# A healthy tunnel's last check is written at most this often (each round would be a write).
CHECK_RECORD_EVERY = timedelta(seconds=10)
# SSH keepalives notice a silently dropped connection.
KEEPALIVE_SECONDS = 5.0


def backoff_delay(failures: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before the next attempt after ``failures`` failed opens in a row:
    none after none, then base, 2 base, 4 base, ..., never more than ``cap``."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** (failures - 1))


@dataclass(frozen=True)
class ForwardSpec:
    """What one forward is made of: the Outpost's SSH settings and the tunnel's ends."""

    ssh_id: int
    jump_host: str
    jump_port: int
    user: str
    key_path: str
    key_text: str
    known_hosts: str
    accept_new_host_keys: bool
    remote_host: str
    remote_port: int
    bind_host: str
    bind_port: int

    @classmethod
    def of(cls, tunnel: Tunnel) -> ForwardSpec:
        ssh: OutpostSSH = tunnel.outpost.ssh
        return cls(
            ssh_id=ssh.pk,
            jump_host=ssh.jump_host,
            jump_port=ssh.jump_port,
            user=ssh.user,
            key_path=ssh.key_path,
            key_text=ssh.key or "",
            known_hosts=ssh.known_hosts,
            accept_new_host_keys=ssh.accept_new_host_keys,
            remote_host=tunnel.remote_host,
            remote_port=tunnel.remote_port,
            bind_host=tunnel.bind_host,
            bind_port=tunnel.bind_port,
        )


class _LastError(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def forward_open(
    spec: ForwardSpec, *, host_key_accepted: Callable[[int, str], None]
) -> SSHTunnelForwarder:
    """A started forward for ``spec``; raises an exception whose text says why not.

    The jump host's key must be among the known hosts; an unknown one is taken on first use
    (``host_key_accepted`` records it) only where the admin allowed it. paramiko compares
    the key before authenticating, so a wrong host never sees the agent's key.
    """
    key = host_key_lookup(known_hosts=spec.known_hosts, host=spec.jump_host, port=spec.jump_port)
    if key is None:
        name = known_hosts_name(host=spec.jump_host, port=spec.jump_port)
        if not spec.accept_new_host_keys:
            raise HostKeyUnknown(
                f"The host key of {name} is not among the Outpost's known hosts "
                "(add it there, or allow accepting new host keys)."
            )
        key = host_key_fetch(host=spec.jump_host, port=spec.jump_port)
        host_key_accepted(
            spec.ssh_id, known_hosts_line(host=spec.jump_host, port=spec.jump_port, key=key)
        )
        log.warning("Accepted the new host key of %s (%s)", name, key.get_name())
    forwarder = SSHTunnelForwarder(
        (spec.jump_host, spec.jump_port),
        ssh_username=spec.user,
        ssh_pkey=private_key_load(path=spec.key_path, text=spec.key_text),
        ssh_host_key=key,
        ssh_config_file=None,
        allow_agent=False,
        host_pkey_directories=[],
        remote_bind_address=(spec.remote_host, spec.remote_port),
        local_bind_address=(spec.bind_host, spec.bind_port),
        set_keepalive=KEEPALIVE_SECONDS,
        mute_exceptions=False,
        logger=SSH_LOG,
    )
    captured = _LastError()
    SSH_LOG.addHandler(captured)
    try:
        forwarder.start()
    except BaseSSHTunnelForwarderError as error:
        forwarder.stop(force=True)
        raise BaseSSHTunnelForwarderError(captured.message or str(error)) from error
    finally:
        SSH_LOG.removeHandler(captured)
    return forwarder


def forward_problem(forwarder: SSHTunnelForwarder, *, host: str, port: int) -> str | None:
    """Why a held forward no longer works, or None: its SSH transport must be alive and its
    local port must answer."""
    if not forwarder.is_active:
        return "The SSH connection to the jump host dropped."
    try:
        with socket.create_connection((host, port), timeout=LOCAL_CHECK_TIMEOUT):
            pass
    except OSError as error:
        return f"The local port {host}:{port} does not answer ({error.__class__.__name__})."
    return None


@dataclass
class _Held:
    forwarder: SSHTunnelForwarder
    generation: int
    spec: ForwardSpec
    recorded_at: float


class TunnelAgent:
    """One agent: the forwards of the tunnels named ``name``. ``opener`` makes a forward
    (``forward_open``; tests may count calls)."""

    def __init__(
        self,
        *,
        name: str,
        backoff_max: float = 60.0,
        opener: Callable[..., SSHTunnelForwarder] = forward_open,
    ) -> None:
        self.name = name
        self.backoff_max = backoff_max
        self.opener = opener
        self.held: dict[int, _Held] = {}
        # Tunnel id -> monotonic time before which no new attempt is made.
        self.retry_at: dict[int, float] = {}

    def run(self, *, stop: threading.Event, interval: float) -> None:
        """Rounds every ``interval`` seconds until ``stop`` is set; then closes everything."""
        log.info("Tunnel agent %s started", self.name)
        try:
            while not stop.is_set():
                try:
                    self.round()
                except (OperationalError, InterfaceError):
                    # The database blinked: the forwards stay up, the next round reads again.
                    log.exception("Tunnel agent %s: cannot read its tunnels", self.name)
                    close_old_connections()
                stop.wait(interval)
        finally:
            self.close_all()
            log.info("Tunnel agent %s stopped", self.name)

    def round(self) -> None:
        tunnels = list(selectors.tunnels_of_agent(agent=self.name))
        wanted = {
            tunnel.pk: tunnel
            for tunnel in tunnels
            if tunnel.desired_state == Tunnel.Desired.OPEN
            and tunnel.server.is_active
            # SSH settings removed meanwhile: nothing to open it with (their removal closes
            # the Outpost's tunnels too, tunnels.services.outpost_ssh_delete).
            and hasattr(tunnel.outpost, "ssh")
        }
        for tunnel in tunnels:
            if tunnel.pk not in wanted:
                self._close(tunnel.pk, reason="not wanted")
                services.tunnel_mark_closed(tunnel_id=tunnel.pk, agent=self.name)
        for tunnel_id in set(self.held) - set(wanted):
            self._close(tunnel_id, reason="gone")
        for tunnel in wanted.values():
            self._keep(tunnel)

    def _keep(self, tunnel: Tunnel) -> None:
        held = self.held.get(tunnel.pk)
        if held is not None and (
            held.generation != tunnel.generation or held.spec != ForwardSpec.of(tunnel)
        ):
            self._close(tunnel.pk, reason=f"generation {tunnel.generation}")
            held = None
        if held is not None:
            problem = forward_problem(held.forwarder, host=tunnel.bind_host, port=tunnel.bind_port)
            if problem is None:
                self._record_healthy(tunnel, held)
                return
            log.warning("Tunnel %s dropped: %s", tunnel.pk, problem)
            self._close(tunnel.pk, reason="dropped")
            services.tunnel_record(
                tunnel_id=tunnel.pk,
                agent=self.name,
                state=Tunnel.State.FAILED,
                last_error=problem,
                last_check_at=timezone.now(),
            )
            # A drop is re-opened at once; back-off starts with failed opens.
            self.retry_at.pop(tunnel.pk, None)
        if time.monotonic() < self.retry_at.get(tunnel.pk, 0.0):
            return
        self._open(tunnel)

    def _open(self, tunnel: Tunnel) -> None:
        spec = ForwardSpec.of(tunnel)
        try:
            forwarder = self.opener(spec, host_key_accepted=self._host_key_accepted)
        except Exception as error:  # noqa: BLE001 - paramiko's, sshtunnel's, the socket's: recorded
            failures = tunnel.failures + 1
            delay = backoff_delay(failures, cap=self.backoff_max)
            self.retry_at[tunnel.pk] = time.monotonic() + delay
            message = str(error) or error.__class__.__name__
            log.warning(
                "Tunnel %s could not be opened (attempt %s, next in %ss): %s",
                tunnel.pk,
                failures,
                delay,
                message,
            )
            services.tunnel_record(
                tunnel_id=tunnel.pk,
                agent=self.name,
                state=Tunnel.State.FAILED,
                failures=failures,
                last_error=message,
                last_check_at=timezone.now(),
            )
            tunnel.failures = failures
            return
        self.retry_at.pop(tunnel.pk, None)
        now = timezone.now()
        self.held[tunnel.pk] = _Held(
            forwarder=forwarder,
            generation=tunnel.generation,
            spec=spec,
            recorded_at=time.monotonic(),
        )
        services.tunnel_record(
            tunnel_id=tunnel.pk,
            agent=self.name,
            state=Tunnel.State.OPEN,
            opened_generation=tunnel.generation,
            failures=0,
            last_error="",
            last_check_at=now,
            opened_at=now,
        )
        log.info("Tunnel %s open (generation %s): %s", tunnel.pk, tunnel.generation, tunnel)

    def _record_healthy(self, tunnel: Tunnel, held: _Held) -> None:
        due = time.monotonic() - held.recorded_at >= CHECK_RECORD_EVERY.total_seconds()
        if tunnel.state == Tunnel.State.OPEN and not due:
            return
        held.recorded_at = time.monotonic()
        services.tunnel_record(
            tunnel_id=tunnel.pk,
            agent=self.name,
            state=Tunnel.State.OPEN,
            opened_generation=held.generation,
            last_check_at=timezone.now(),
        )

    def _host_key_accepted(self, ssh_id: int, line: str) -> None:
        services.outpost_ssh_host_key_add(ssh_id=ssh_id, line=line)

    def _close(self, tunnel_id: int, *, reason: str) -> None:
        self.retry_at.pop(tunnel_id, None)
        held = self.held.pop(tunnel_id, None)
        if held is None:
            return
        log.info("Closing tunnel %s (%s)", tunnel_id, reason)
        try:
            held.forwarder.stop(force=True)
        except Exception:  # a forward that is half gone may fail to stop; it is dropped anyway
            log.exception("Tunnel %s did not close cleanly", tunnel_id)

    def close_all(self) -> None:
        """Close every held forward (the agent stops); the rows say the agent is gone."""
        for tunnel_id in list(self.held):
            self._close(tunnel_id, reason="agent stopping")
            try:
                services.tunnel_record(
                    tunnel_id=tunnel_id,
                    agent=self.name,
                    state=Tunnel.State.PENDING,
                    last_error=f"Tunnel agent {self.name} stopped.",
                )
            except (OperationalError, InterfaceError):
                log.warning("Could not record that tunnel %s closed", tunnel_id)
