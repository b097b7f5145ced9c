"""Writes on tunnels: open one for a server, restart by node or jump host, SSH settings, and
what the agent records.

A tunnel is opened for a server once its remote ``host:port`` is known: today when the
spawner's start returns an address (outposts/lifecycle/start.py), later also when a server's
start process reports it (delayed tunnelling). Both call ``tunnel_open_for_server``.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from outposts import dispatch, hubcalls
from outposts.callbacks import hub_callback_url
from outposts.models import Hub, Outpost, Server
from tunnels import selectors
from tunnels.models import OutpostSSH, Tunnel

log = logging.getLogger(__name__)

# How often a bind port is drawn again when another tunnel took it meanwhile.
BIND_PORT_ATTEMPTS = 20
# Ports drawn at random, so that concurrent starts seldom pick the same one.
_random = random.SystemRandom()


class TunnelError(Exception):
    """A tunnel cannot be set up as asked (a text safe for users)."""


def address_split(address: str) -> tuple[str, str, int]:
    """(scheme or "", host, port) of ``host:port`` or ``http(s)://host:port/...``."""
    if "://" in address:
        parts = urlsplit(address)
        scheme = parts.scheme
    else:
        parts = urlsplit(f"//{address}")
        scheme = ""
    try:
        port = parts.port
    except ValueError as error:
        raise TunnelError(f"The server's address {address!r} has no valid port.") from error
    if not parts.hostname or port is None:
        raise TunnelError(f"The server's address {address!r} is not host:port.")
    return scheme, parts.hostname, port


def address_join(*, host: str, port: int, scheme: str = "") -> str:
    """``host:port`` (an IPv6 address in brackets), as ``scheme://host:port`` if given."""
    bare = host.strip("[]")
    try:
        if ipaddress.ip_address(bare).version == 6:
            host = f"[{bare}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}" if scheme else f"{host}:{port}"


def bind_port_range() -> range:
    first, _, last = settings.TUNNEL_BIND_PORTS.partition("-")
    return range(int(first), int(last or first) + 1)


def tunnel_open_for_server(*, server: Server, address: str) -> str:
    """Open a tunnel to ``address`` (where the server listens) if the server's Outpost is
    reached through the agent; returns the address the Hub is to be given: the agent's
    ``host:port`` for a tunnelled server (in the same form, URL or not), else ``address``.

    Run inside the caller's transaction (the server row locked), so that the server's
    address and its tunnel are written together. A known tunnel is re-pointed (generation
    bumped). Raises TunnelError for an address that is not ``host:port``.
    """
    ssh = selectors.outpost_ssh(outpost=server.outpost)
    if ssh is None or ssh.reach != OutpostSSH.Reach.AGENT:
        return address
    scheme, remote_host, remote_port = address_split(address)
    with transaction.atomic():
        tunnel = Tunnel.objects.select_for_update().filter(server=server).first()
        if tunnel is not None and tunnel.desired_state == Tunnel.Desired.OPEN:
            Tunnel.objects.filter(pk=tunnel.pk).update(
                remote_host=remote_host,
                remote_port=remote_port,
                generation=F("generation") + 1,
                state=Tunnel.State.PENDING,
                failures=0,
                updated_at=timezone.now(),
            )
            tunnel.refresh_from_db()
        else:
            Tunnel.objects.filter(server=server).delete()
            tunnel = _tunnel_create(
                server=server, ssh=ssh, remote_host=remote_host, remote_port=remote_port
            )
    return address_join(scheme=scheme, host=ssh.tunnel_host, port=tunnel.bind_port)


def _tunnel_create(
    *, server: Server, ssh: OutpostSSH, remote_host: str, remote_port: int
) -> Tunnel:
    ports = bind_port_range()
    for _ in range(BIND_PORT_ATTEMPTS):
        taken = set(
            Tunnel.objects.filter(
                agent=ssh.agent, bind_host=ssh.bind_host, desired_state=Tunnel.Desired.OPEN
            ).values_list("bind_port", flat=True)
        )
        free = [port for port in _random.sample(ports, min(len(ports), 64)) if port not in taken]
        if not free:
            continue
        try:
            with transaction.atomic():
                return Tunnel.objects.create(
                    server=server,
                    outpost_id=server.outpost_id,
                    agent=ssh.agent,
                    remote_host=remote_host,
                    remote_port=remote_port,
                    bind_host=ssh.bind_host,
                    bind_port=free[0],
                )
        except IntegrityError:
            continue  # another start took the port meanwhile: draw again
    raise TunnelError(
        f"No free tunnel port left on agent {ssh.agent} ({settings.TUNNEL_BIND_PORTS})."
    )


def tunnel_close_for_server(*, server: Server) -> None:
    """The server no longer needs its tunnel: the agent closes it."""
    Tunnel.objects.filter(server=server, desired_state=Tunnel.Desired.OPEN).update(
        desired_state=Tunnel.Desired.CLOSED, updated_at=timezone.now()
    )


# --- Restarts ------------------------------------------------------------------------------


def tunnels_bump(*, tunnels: Any) -> int:
    """Bump the generation of the open tunnels in the queryset ``tunnels``: their agents
    re-create the forwards. Returns how many."""
    return tunnels.filter(desired_state=Tunnel.Desired.OPEN).update(
        generation=F("generation") + 1,
        state=Tunnel.State.PENDING,
        failures=0,
        updated_at=timezone.now(),
    )


def tunnel_restart_for_node(
    *, node: str | None = None, jump_host: str | None = None, outpost_id: int | None = None
) -> int:
    """Re-create every tunnel to ``node`` or through ``jump_host`` (of one Outpost if
    ``outpost_id`` is given): their generation is bumped and their agent re-creates them.
    For Outposts whose Hubs tunnel themselves, their Hubs are asked to re-create their
    forwards instead (queued). Returns how many tunnels were bumped. Raises ValueError unless
    exactly one of ``node`` and ``jump_host`` is given.
    """
    match = selectors.tunnel_match(node=node, jump_host=jump_host, outpost_id=outpost_id)
    with transaction.atomic():
        bumped = tunnels_bump(tunnels=Tunnel.objects.filter(match))
        for outpost in selectors.hub_tunnelled_outposts(
            node=node, jump_host=jump_host, outpost_id=outpost_id
        ):
            hub_forwards_recreate_queue(outpost=outpost)
    log.info("Restarted %s tunnel(s) (node %r, jump host %r)", bumped, node, jump_host)
    return bumped


def outpost_tunnels_restart(*, outpost_id: int) -> int:
    """Re-create all of an Outpost's tunnels (its SSH settings changed, an admin asked).
    Returns how many were bumped; a Hub that tunnels itself is asked instead."""
    outpost = Outpost.objects.filter(pk=outpost_id).first()
    if outpost is None:
        return 0
    with transaction.atomic():
        bumped = tunnels_bump(tunnels=Tunnel.objects.filter(outpost=outpost))
        if selectors.outpost_reach(outpost=outpost) == OutpostSSH.Reach.HUB:
            hub_forwards_recreate_queue(outpost=outpost)
    return bumped


def hub_forwards_recreate_queue(*, outpost: Outpost) -> None:
    """Queue a recreate-forward call to every Hub with active servers on ``outpost``."""
    for hub_id, server_id in selectors.hub_forward_targets(outpost=outpost):
        dispatch.queue_hub_forwards_recreate(hub_id=hub_id, server_id=server_id)


def hub_forwards_recreate(*, hub_id: int, server_id: int) -> None:
    """Ask a Hub that tunnels itself to re-create the forwards of the server's system
    (api-contract.md §6): ``GET <hub api>/recreateforward/<system>``, the API URL being the
    one the server's start named, if the Hub's call-back prefixes allow it. Raises
    HubUnreachable for the task to retry; a refusal is logged."""
    hub = Hub.objects.filter(pk=hub_id).first()
    server = (
        Server.objects.select_related("hub", "outpost__ssh")
        .filter(pk=server_id, hub_id=hub_id)
        .first()
    )
    if hub is None or server is None:
        return
    if not hub.recreate_forward_token:
        log.warning("Hub %s has no recreate-forward token; its forwards stay", hub.name)
        return
    api_url = hub_callback_url(server=server, env_key="JUPYTERHUB_API_URL")
    if api_url is None:
        return
    system = server.outpost.ssh.system_name
    url = f"{api_url.rstrip('/')}/recreateforward/{system}"
    try:
        hubcalls.send_recreate_forward(url=url, token=str(hub.recreate_forward_token))
    except hubcalls.HubRefused as error:
        log.warning("Hub %s refused to re-create the forwards of %s: %s", hub.name, system, error)


# --- SSH settings --------------------------------------------------------------------------


def outpost_ssh_save(*, ssh: OutpostSSH) -> bool:
    """Validate and save an Outpost's SSH settings; when a setting of its connections
    changed, its tunnels are re-created (queued after commit). Returns whether they are.
    Raises ValidationError (OutpostSSH.full_clean) naming the field at fault."""
    ssh.full_clean()
    before = OutpostSSH.objects.filter(pk=ssh.pk).first() if ssh.pk else None
    changed = before is not None and any(
        getattr(before, name) != getattr(ssh, name) for name in OutpostSSH.CONNECTION_FIELDS
    )
    with transaction.atomic():
        ssh.save()
        if changed:
            dispatch.queue_outpost_tunnels_restart(outpost_id=ssh.outpost_id)
    return changed


def outpost_ssh_delete(*, ssh: OutpostSSH) -> None:
    """Remove an Outpost's SSH settings: its servers are reached directly from now on, and
    the agent closes their tunnels (a server started through one keeps that address until
    it is started again)."""
    with transaction.atomic():
        Tunnel.objects.filter(outpost_id=ssh.outpost_id, desired_state=Tunnel.Desired.OPEN).update(
            desired_state=Tunnel.Desired.CLOSED, updated_at=timezone.now()
        )
        ssh.delete()


def outpost_ssh_host_key_add(*, ssh_id: int, line: str) -> None:
    """Add a known_hosts line to an Outpost's known hosts (the agent, accepting a new key
    where an admin allowed it). Does not restart the tunnels: nothing was connected yet."""
    with transaction.atomic():
        # The Outpost's name only (the audit entry's label): the agent may read no more of it
        # (tunnels/agent_role.py).
        ssh = (
            OutpostSSH.objects.select_for_update(of=("self",))
            .select_related("outpost")
            .only(*(field.name for field in OutpostSSH._meta.concrete_fields), "outpost__name")
            .filter(pk=ssh_id)
            .first()
        )
        if ssh is None or not ssh.accept_new_host_keys:
            return
        lines = [existing for existing in ssh.known_hosts.splitlines() if existing.strip()]
        if line not in lines:
            ssh.known_hosts = "\n".join([*lines, line]) + "\n"
            ssh.save(update_fields=["known_hosts", "updated_at"])


# --- What the agent records ----------------------------------------------------------------


def tunnel_record(*, tunnel_id: int, agent: str, **fields: Any) -> None:
    """The agent ``agent`` records what is of one of its tunnels (state, error, check)."""
    allowed = {"state", "opened_generation", "failures", "last_error", "last_check_at", "opened_at"}
    unknown = set(fields) - allowed
    if unknown:
        raise TypeError(f"the agent cannot set {', '.join(sorted(unknown))}")
    Tunnel.objects.filter(pk=tunnel_id, agent=agent).update(**fields, updated_at=timezone.now())


def tunnel_mark_closed(*, tunnel_id: int, agent: str) -> None:
    """A tunnel the agent closed because it is no longer wanted (or its server ended)."""
    Tunnel.objects.filter(pk=tunnel_id, agent=agent).update(
        desired_state=Tunnel.Desired.CLOSED,
        state=Tunnel.State.CLOSED,
        updated_at=timezone.now(),
    )
