"""Reads of tunnels and of how servers are reached: the agent's, the admin's, the API's."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from outposts.models import Outpost, Server
from tunnels.models import OutpostSSH, Tunnel


def outpost_reach(*, outpost: Outpost) -> str:
    """How the Outpost's servers are reached (OutpostSSH.Reach); direct without settings."""
    ssh = OutpostSSH.objects.filter(outpost=outpost).only("reach").first()
    return ssh.reach if ssh is not None else OutpostSSH.Reach.DIRECT


def outpost_ssh(*, outpost: Outpost) -> OutpostSSH | None:
    """The Outpost's SSH settings, None without. Read with the Outpost where its loader
    selected them (outposts.selectors.server_for_update, which every landing locks, leaves
    out their key), else in a query of its own."""
    try:
        return outpost.ssh
    except OutpostSSH.DoesNotExist:
        return None


# What the agent reads of its tunnel rows (its database role may read no more of them:
# tunnels/agent_role.py).
AGENT_TUNNEL_FIELDS = (
    "agent",
    "remote_host",
    "remote_port",
    "bind_host",
    "bind_port",
    "desired_state",
    "state",
    "generation",
    "opened_generation",
    "failures",
    "last_error",
    "last_check_at",
    "opened_at",
)


def tunnels_of_agent(*, agent: str) -> QuerySet[Tunnel]:
    """Every tunnel the agent ``agent`` owns, with the SSH settings it opens them with.

    Closed ones too: the agent closes what it holds of them.
    """
    return (
        Tunnel.objects.filter(agent=agent)
        .exclude(desired_state=Tunnel.Desired.CLOSED, state=Tunnel.State.CLOSED)
        .select_related("outpost__ssh", "server")
        .only(
            *(f"outpost__ssh__{name}" for name in OutpostSSH.CONNECTION_FIELDS),
            "outpost__ssh__outpost_id",
            "outpost__slug",
            "server__status",
            *AGENT_TUNNEL_FIELDS,
        )
    )


def tunnel_match(
    *, node: str | None = None, jump_host: str | None = None, outpost_id: int | None = None
) -> Q:
    """Tunnels to the node ``node`` or through the jump host ``jump_host`` (host names
    compare case-insensitively), optionally of one Outpost only."""
    if bool(node) == bool(jump_host):
        raise ValueError("Name a node or a jump host, not both.")
    query = (
        Q(remote_host__iexact=node.strip())
        if node
        else Q(outpost__ssh__jump_host__iexact=(jump_host or "").strip())
    )
    if outpost_id is not None:
        query &= Q(outpost_id=outpost_id)
    return query


def hub_tunnelled_outposts(
    *, node: str | None = None, jump_host: str | None = None, outpost_id: int | None = None
) -> QuerySet[Outpost]:
    """Outposts whose Hubs tunnel themselves, with servers through ``jump_host`` or on
    ``node`` (a running server whose address names that host)."""
    outposts = Outpost.objects.filter(ssh__reach=OutpostSSH.Reach.HUB)
    if outpost_id is not None:
        outposts = outposts.filter(pk=outpost_id)
    if jump_host:
        return outposts.filter(ssh__jump_host__iexact=jump_host.strip())
    node = (node or "").strip()
    on_node = (
        Server.objects.active()
        .filter(Q(address__istartswith=f"{node}:") | Q(address__icontains=f"://{node}:"))
        .values("outpost_id")
    )
    return outposts.filter(pk__in=on_node)


def hub_forward_targets(*, outpost: Outpost) -> list[tuple[int, int]]:
    """(Hub id, latest active server id) of each Hub with active servers on ``outpost``:
    the server's env names the Hub's API URL for a recreate-forward call."""
    latest: dict[int, int] = {}
    rows = (
        Server.objects.active()
        .filter(outpost=outpost)
        .order_by("created_at", "pk")
        .values_list("hub_id", "pk")
    )
    for hub_id, server_id in rows:
        latest[hub_id] = server_id
    return sorted(latest.items())


def server_tunnel(*, server: Server) -> Tunnel | None:
    return Tunnel.objects.filter(server=server).first()


def server_reach_text(*, server: Server) -> str:
    """How the Hub reaches ``server``, in words for the admin."""
    tunnel = server_tunnel(server=server)
    if tunnel is not None:
        text = (
            f"Through tunnel agent {tunnel.agent}: {tunnel.bind_host}:{tunnel.bind_port} -> "
            f"{tunnel.remote_host}:{tunnel.remote_port}, {tunnel.get_state_display().lower()}, "
            f"generation {tunnel.generation}"
        )
        return f"{text}; last error: {tunnel.last_error}" if tunnel.last_error else text
    reach = outpost_reach(outpost=server.outpost)
    if reach == OutpostSSH.Reach.HUB:
        return "The Hub tunnels to it itself."
    if reach == OutpostSSH.Reach.AGENT:
        return "Through the tunnel agent (no tunnel yet)."
    return "Directly, at its address."
