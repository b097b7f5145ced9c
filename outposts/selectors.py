"""Reads of Hubs, Outposts and servers: the API's, always scoped to the calling Hub, and the
worker side's (locked rows, starts past their timeout, lost stops)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from outposts.models import Hub, HubAPIKey, Outpost, Server, SpawnEvent
from portal.compiled import compiled, id_stand_ins, text_stand_in
from portal.crypto import credential_digests
from portal.permissions import permission_holders


def hub_by_secret(*, name: str, secret: str) -> Hub | None:
    """The active Hub whose Basic credentials these are, or None."""
    hub = Hub.objects.filter(name=name, is_active=True).first()
    if hub is None or not hub.check_secret(secret):
        return None
    return hub


def hub_api_key_by_key(*, key: str) -> HubAPIKey | None:
    """The valid (unexpired, unrevoked) API key of an active Hub that this key is, or None."""
    api_key = (
        HubAPIKey.objects.select_related("hub")
        .filter(key_digest__in=credential_digests(key), hub__is_active=True, revoked=False)
        .first()
    )
    if api_key is None or not api_key.is_valid:
        return None
    return api_key


def outposts_administered_by(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Outpost]:
    """The Outposts ``user`` administers: all for superusers, else those on which they hold
    ``outposts.change_outpost`` (a guardian object permission, or a global one)."""
    if not (user.is_active and user.is_staff):
        return Outpost.objects.none()
    if user.is_superuser:
        return Outpost.objects.all()
    return get_objects_for_user(
        user, "outposts.change_outpost", klass=Outpost, accept_global_perms=True
    )


def outpost_site_admins(*, outpost: Outpost) -> QuerySet[Any]:
    """The users holding ``outposts.change_outpost`` on ``outpost`` itself (its site admins)."""
    return permission_holders(obj=outpost, codename="change_outpost")


def outpost_for_hub(*, hub: Hub, slug: str | None) -> Outpost | None:
    """The Outpost ``slug`` (or the default one) if ``hub`` may use it, else None.

    Whatever its state: servers keep running on a draining or disabled Outpost, and the Hub
    must still be able to poll, list and stop them (a 404 poll would make the Hub believe a
    running server ended). Starts are refused by ``server_start`` (Outpost.accepts_starts).
    """
    outposts = hub.outposts.all()
    if slug is None:
        return outposts.filter(is_default=True).first()
    return outposts.filter(slug=slug).first()


def server_list_for_hub(
    *, hub: Hub | int, outpost: Outpost | int
) -> QuerySet[Server, dict[str, Any]]:
    """The Hub's active servers on the Outpost (each given as a row or its id), for the list
    endpoint: one query.

    One dict per server with just what the list answers (the fields ServerSerializer reads),
    not model rows: building a Server, its Hub and flavor per row cost more than the query
    (bench/README.md). The encrypted columns are not read, so listing decrypts nothing.
    """
    return (
        Server.objects.visible()
        .active()
        .filter(hub=hub, outpost=outpost)
        .order_by("created_at")
        .values(
            "name",
            "start_id",
            "created_at",
            "end_at",
            "updated_at",
            "user_id",
            "status",
            hub_name=F("hub__name"),
            flavor_name=F("flavor__name"),
            state_stored=ExpressionWrapper(
                Q(spawner_state__isnull=False), output_field=BooleanField()
            ),
            start_pending=ExpressionWrapper(
                Q(status__in=[Server.Status.REQUESTED, Server.Status.PENDING]),
                output_field=BooleanField(),
            ),
            # Server.stop_pending; every listed server is active.
            stop_pending=ExpressionWrapper(
                Q(stop_requested_at__isnull=False), output_field=BooleanField()
            ),
        )
    )


def server_get_for_hub(*, hub: Hub, outpost: Outpost, name: str, start_id: str) -> Server | None:
    """The server a poll or stop names, if it is this Hub's and not deleted.

    The encrypted columns load only if read: a poll answers without decrypting anything.
    """
    return (
        Server.objects.visible()
        .filter(hub=hub, outpost=outpost, name=name, start_id=start_id)
        .select_related("hub", "flavor")
        .defer("env", "spawner_state")
        .first()
    )


def spawn_events_for_server(*, server: Server, after: int | None = None) -> QuerySet[SpawnEvent]:
    """The server's progress events in order, only those newer than event ``after`` if given."""
    events = SpawnEvent.objects.filter(server=server).order_by("id")
    if after is not None:
        events = events.filter(id__gt=after)
    return events


def servers_due_for_poll(*, outpost: Outpost, limit: int) -> QuerySet[Server]:
    """Running or unknown servers not polled within the Outpost's poll interval, oldest first."""
    cutoff = timezone.now() - outpost.poll_interval
    return (
        Server.objects.filter(
            outpost=outpost, status__in=[Server.Status.RUNNING, Server.Status.UNKNOWN]
        )
        .filter(Q(last_poll_at__isnull=True) | Q(last_poll_at__lt=cutoff))
        .select_related("outpost", "flavor")
        .order_by(F("last_poll_at").asc(nulls_first=True))[:limit]
    )


# Stand-ins for the values of the compiled queries below (portal/compiled.py).
_OUTPOST_ID, _HUB_ID, _SERVER_ID = id_stand_ins(3)
_NAME, _START_ID = text_stand_in("name"), text_stand_in("start_id")


# Reads of the worker side (lifecycle and reconciler).


def _server_locked_query() -> QuerySet[Server]:
    locked = Server.objects.select_for_update(of=("self",))
    # With the Outpost's SSH settings, which a landing reads for its tunnel, but not their
    # key: only the tunnel agent needs it (tunnels/models.py), never decrypted by a worker.
    related = locked.select_related("outpost__ssh", "flavor", "hub").defer("outpost__ssh__key")
    return related.filter(pk=_SERVER_ID)


def server_for_update(*, server_id: int) -> Server | None:
    """The server row, locked until the transaction ends, with what the lifecycle reads of
    it; None if it is gone. Only the server row is locked, not its Outpost, Hub or flavor.
    Compiled once: a start claims and lands its server with it, a stop ends it."""
    rows = compiled(_server_locked_query).instances({_SERVER_ID: server_id})
    return rows[0] if rows else None


def server_unwanted(*, server_id: int) -> bool:
    """Whether a start under way should give up: a stop was asked for, or the server ended
    (or is gone) meanwhile."""
    server = Server.objects.filter(pk=server_id).only("status", "stop_requested_at").first()
    return server is None or server.stop_requested_at is not None or not server.is_active


def _server_status_query() -> QuerySet[Server, tuple[str, str, str]]:
    return Server.objects.filter(pk=_SERVER_ID).values_list("status", "address", "error")


def server_status(*, server_id: int) -> tuple[str, str, str] | None:
    """The server's (status, address, error); None if it is gone. What a synchronous start
    or stop waits on; compiled once, since every such request reads it twice at least."""
    rows = compiled(_server_status_query).rows({_SERVER_ID: server_id})
    return rows[0] if rows else None


def _outpost_locked_query() -> QuerySet[Outpost]:
    return Outpost.objects.select_for_update().filter(pk=_OUTPOST_ID)


def outpost_for_update(*, outpost: Outpost) -> Outpost:
    """The Outpost row, locked until the transaction ends: admissions on it queue up here,
    so the servers they count cannot change under them. Compiled once: every start runs it."""
    rows = compiled(_outpost_locked_query).instances({_OUTPOST_ID: outpost.pk})
    if not rows:
        raise Outpost.DoesNotExist(f"Outpost {outpost.pk} is gone.")
    return rows[0]


def _server_twin_query() -> QuerySet[Server]:
    twins = Server.objects.visible().filter(
        hub_id=_HUB_ID, outpost_id=_OUTPOST_ID, name=_NAME, start_id=_START_ID
    )
    return twins[:1]


def server_twin(*, hub: Hub, outpost: Outpost, name: str, start_id: str) -> Server | None:
    """The visible server a start of ``name`` and ``start_id`` repeats, if there is one.
    Compiled once: every start looks."""
    values = {_HUB_ID: hub.pk, _OUTPOST_ID: outpost.pk, _NAME: name, _START_ID: start_id}
    rows = compiled(_server_twin_query).instances(values)
    return rows[0] if rows else None


def starts_past_timeout(*, outpost: Outpost, grace: timedelta, limit: int) -> list[int]:
    """Ids of starts older than the Outpost's start timeout plus ``grace`` whose start lease
    ran out: their task is gone (a live one enforces the timeout itself)."""
    now = timezone.now()
    cutoff = now - outpost.start_timeout - grace
    return list(
        Server.objects.filter(
            outpost=outpost, status__in=[Server.Status.REQUESTED, Server.Status.PENDING]
        )
        .filter(Q(started_at__lt=cutoff) | Q(started_at__isnull=True, created_at__lt=cutoff))
        .filter(Q(start_lease_until__isnull=True) | Q(start_lease_until__lt=now))
        .values_list("pk", flat=True)[:limit]
    )


def starts_orphaned(*, outpost: Outpost, limit: int) -> list[int]:
    """Ids of pending starts whose start lease ran out: the attempt that claimed them died
    (a live one renews its lease), whatever their start timeout."""
    return list(
        Server.objects.filter(
            outpost=outpost, status=Server.Status.PENDING, start_lease_until__lt=timezone.now()
        ).values_list("pk", flat=True)[:limit]
    )


def stops_unqueued(*, outpost: Outpost, limit: int) -> list[Server]:
    """Active servers whose stop task never reached the broker (stop_unqueued_since), oldest
    first: the reconciler queues them again."""
    return list(
        Server.objects.active()
        .filter(outpost=outpost, stop_unqueued_since__isnull=False)
        .select_related("outpost")
        .order_by("stop_unqueued_since")[:limit]
    )


def stops_lost(*, outpost: Outpost, lost_after: timedelta, limit: int) -> list[Server]:
    """Servers still stopping ``lost_after`` after their stop was asked for: longer than every
    retry of a stop task together, so that task was lost (a broker without redelivery, a
    purged queue). Oldest first."""
    cutoff = timezone.now() - lost_after
    return list(
        Server.objects.filter(
            outpost=outpost, status=Server.Status.STOPPING, stop_requested_at__lt=cutoff
        ).order_by("stop_requested_at")[:limit]
    )


def servers_past_runtime(*, outpost: Outpost, limit: int) -> list[Server]:
    """Running or unknown servers whose runtime has ended."""
    return list(
        Server.objects.filter(
            outpost=outpost,
            status__in=[Server.Status.RUNNING, Server.Status.UNKNOWN],
            end_at__lte=timezone.now(),
        ).select_related("outpost")[:limit]
    )
