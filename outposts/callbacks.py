"""What the portal tells a Hub (api-contract §6): progress events, set-up-tunnel, flavor updates.

``server_record_event`` stores a progress step and queues it for the Hub; the ``hub_*_send``
services, run by the tasks of the same name, make the calls. The Hub names the URLs in each
start request's env. Calling them as given would let a Hub (or whoever holds its credentials)
make the portal POST to any host the portal can reach: only URLs under the Hub's admin-set
prefixes are called. The sends raise HubUnreachable for their task to retry; a Hub that
refuses is only logged. None of this may fail a start or a stop.
"""

from __future__ import annotations

import logging

from django.core.cache import cache

from flavors.api.serializers import flavors_answer
from flavors.selectors import flavor_list_for_hub
from outposts import dispatch, hubcalls
from outposts.models import Server, SpawnEvent
from portal.text import log_safe

log = logging.getLogger(__name__)

# Where the Hub wants progress events and flavor updates: it names the URLs in a start's env.
EVENTS_URL = "JUPYTERHUB_EVENTS_URL"
FLAVORS_UPDATE_URL = "JUPYTERHUB_FLAVORS_UPDATE_URL"


def hub_named_url(*, server: Server, env_key: str) -> str:
    """The URL the Hub named under ``env_key`` in ``server``'s start, "" if none. A call it
    named no URL for is never queued: its task would only find none (our hubclient follows
    the events endpoint instead, and a Hub may take no flavor updates)."""
    return (server.env or {}).get(env_key) or ""


def server_record_event(
    *,
    server: Server,
    progress: int,
    message: str,
    failed: bool = False,
    ready: bool = False,
    forward: bool = True,
) -> SpawnEvent:
    """Store a progress step and (unless ``forward`` is off, or the Hub named no events URL)
    send it to the Hub after commit.

    Forwarding runs as its own task on the default queue, so a Hub that is slow or down never
    fails a start.
    """
    event = SpawnEvent.objects.create(
        server=server, progress=progress, message=message, failed=failed, ready=ready
    )
    if forward and hub_named_url(server=server, env_key=EVENTS_URL):
        dispatch.queue_hub_event_send(event_id=event.pk)
    return event


def server_flavor_counts_changed(*, server: Server) -> None:
    """After ``server`` started or ended: send its Hub the flavors with their new counts,
    once the change commits, if the Hub named where."""
    if hub_named_url(server=server, env_key=FLAVORS_UPDATE_URL):
        dispatch.queue_hub_flavors_send(server_id=server.pk)


def hub_callback_url(*, server: Server, env_key: str) -> str | None:
    """The URL the Hub gave under ``env_key`` if the portal may call it, else None (logged)."""
    url = hub_named_url(server=server, env_key=env_key)
    if not url:
        return None
    if not server.hub.allows_callback(url):
        log.warning(
            "Server %s: %s %s is not under Hub %s's callback prefixes; not calling it",
            server.pk,
            env_key,
            log_safe(url),
            server.hub.name,
        )
        return None
    return url


def hub_event_send(*, event_id: int) -> None:
    """POST a progress event to the Hub's events URL."""
    event = SpawnEvent.objects.select_related("server__hub").filter(pk=event_id).first()
    if event is None:
        return
    url = hub_callback_url(server=event.server, env_key=EVENTS_URL)
    if url is None:
        return
    try:
        hubcalls.send_event(
            url=url,
            token=(event.server.env or {}).get("JUPYTERHUB_API_TOKEN", ""),
            progress=event.progress,
            message=event.message,
            failed=event.failed,
        )
    except hubcalls.HubRefused as error:
        log.warning(
            "Hub refused event %s of server %s: %s", event.pk, event.server_id, log_safe(error)
        )


def hub_address_send(*, server_id: int) -> None:
    """Tell a Hub that got no address in its start answer where the server listens."""
    server = Server.objects.select_related("hub").filter(pk=server_id).first()
    if server is None or server.status != Server.Status.RUNNING or not server.address:
        return
    if not hub_named_url(server=server, env_key="JUPYTERHUB_SETUPTUNNEL_URL"):
        log.warning("Server %s: the Hub waits for its address but sent no set-up URL", server_id)
        return
    url = hub_callback_url(server=server, env_key="JUPYTERHUB_SETUPTUNNEL_URL")
    if url is None:
        return
    try:
        hubcalls.send_setup_tunnel(
            url=url,
            token=(server.env or {}).get("JUPYTERHUB_API_TOKEN", ""),
            address=server.address,
        )
    except hubcalls.HubRefused as error:
        log.warning("Hub refused the address of server %s: %s", server_id, log_safe(error))


def hub_flavors_send(*, server_id: int) -> None:
    """Send a Hub its flavors with current counts, after a server started or ended."""
    server = Server.objects.select_related("hub", "outpost").filter(pk=server_id).first()
    if server is None:
        return
    token = (server.env or {}).get(
        "JUPYTERHUB_FLAVORS_UPDATE_TOKEN"
    ) or server.hub.flavors_update_token
    if not token:
        return
    url = hub_callback_url(server=server, env_key=FLAVORS_UPDATE_URL)
    if url is None:
        return
    try:
        hubcalls.send_flavor_update(
            url=url,
            token=str(token),
            flavors=flavors_answer(flavor_list_for_hub(hub=server.hub, outpost=server.outpost)),
        )
    except hubcalls.HubRefused as error:
        log.warning("Hub %s refused a flavor update: %s", server.hub.name, log_safe(error))


def hub_flavor_table_send(*, hub_id: int, outpost_id: int) -> None:
    """Send a Hub its flavor table of an Outpost after the Outpost's flavors, policies or
    rules changed (queued by flavors.services.flavors_changed, coalesced). The Hub named its
    flavor-update URL in its start requests: its latest server on the Outpost tells it; a
    Hub that never started a server there is not told."""
    cache.delete(dispatch.flavor_table_push_key(hub_id=hub_id, outpost_id=outpost_id))
    latest = (
        Server.objects.filter(hub_id=hub_id, outpost_id=outpost_id)
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    if latest is not None:
        hub_flavors_send(server_id=latest)
