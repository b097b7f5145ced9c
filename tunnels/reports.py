"""Servers that report their own address (delayed tunnelling): the token, the check, the record.

On an Outpost whose servers report their address (``Outpost.server_reports_address``), each
start attempt gives its server a fresh call-back token (``server_report_env``); the start
wrapper ``outpost-start-server`` (startserver/) picks a port and POSTs ``host:port`` with it
to ``api/servers/<id>/address`` (tunnels/api/report.py). ``server_address_reported`` checks
and records it; the start task, which waits for it (outposts/lifecycle/start.py), then lands
the server running at that address, tunnelled if the Outpost needs it, and tells the Hub.

Only the token's digest is stored. It is scoped to its server and to its start attempt (a
new attempt replaces it), and refused once the server ended or a stop was asked for.
"""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urljoin

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from outposts import callbacks
from outposts.errors import PortalError
from outposts.models import Server
from outposts.selectors import server_for_update
from portal.crypto import credential_digest, credential_matches, new_credential
from tunnels.services import address_join, address_split

log = logging.getLogger(__name__)

# Relative to the portal's base URL (portal/urls.py routes it).
REPORT_PATH = "api/servers/{server_id}/address"


class ReportRefused(Exception):
    """A server's address report is refused; ``status`` is the HTTP answer, the message
    says why (safe to show: the wrapper prints it on the node)."""

    status = 400

    @property
    def message(self) -> str:
        return str(self.args[0])


class ReportNotAuthenticated(ReportRefused):
    status = 401


class AddressNotAllowed(ReportRefused):
    status = 403


class ReportConflict(ReportRefused):
    status = 409


class ServerEnded(ReportRefused):
    status = 410


def server_report_url(*, server: Server) -> str:
    """Where the server's start wrapper reports its address. Raises PortalError when neither
    the Outpost nor the settings say how compute nodes reach the portal."""
    base = server.outpost.server_callback_url or settings.SERVER_CALLBACK_URL
    if not base:
        raise PortalError(
            "This Outpost's servers report their address, but the portal does not know its "
            "own URL for them (PORTAL_SERVER_CALLBACK_URL or the Outpost's portal URL for "
            "servers)."
        )
    return urljoin(base.rstrip("/") + "/", REPORT_PATH.format(server_id=server.pk))


def server_report_env(*, server: Server, lease: datetime) -> dict[str, str]:
    """Issue the server's call-back token for this start attempt; returns the environment
    outpost-start-server reads (the runner puts it into the server's env, over the Hub's).

    Only the digest is stored, and only while ``lease`` (this attempt's start lease) is the
    server's: a token is never issued for a start another attempt owns. Raises PortalError
    when the report URL is unknown or the attempt lost the server.
    """
    url = server_report_url(server=server)
    token = new_credential("osr_")
    issued = Server.objects.filter(
        pk=server.pk, status=Server.Status.PENDING, start_lease_until=lease
    ).update(
        report_token_digest=credential_digest(token),
        reported_address="",
        reported_at=None,
        updated_at=timezone.now(),
    )
    if not issued:
        raise PortalError("Another start attempt owns this server.")
    outpost = server.outpost
    return {
        "OUTPOST_CALLBACK_URL": url,
        "OUTPOST_CALLBACK_TOKEN": token,
        "OUTPOST_PORT_RANGE": f"{outpost.allowed_port_min}-{outpost.allowed_port_max}",
        "OUTPOST_REPORT_TIMEOUT": f"{settings.SERVER_REPORT_TIMEOUT:g}",
    }


def server_by_report_token(*, server_id: int, token: str) -> Server | None:
    """The server whose current call-back token ``token`` is, or None (any server, ended
    ones too: the caller tells an ended server apart)."""
    server = Server.objects.select_related("outpost").filter(pk=server_id).first()
    if server is None or not server.report_token_digest or not token:
        return None
    if not credential_matches(token, server.report_token_digest):
        return None
    return server


def server_reported_address(*, server_id: int) -> tuple[str, int] | None:
    """The ``(host, port)`` the server reported for its start, or None while it has not."""
    address = (
        Server.objects.filter(pk=server_id, status=Server.Status.PENDING)
        .values_list("reported_address", flat=True)
        .first()
    )
    if not address:
        return None
    _, host, port = address_split(address)
    return host, port


def server_address_reported(*, server: Server, host: str, port: int) -> str:
    """Record the address a server's start wrapper reported; returns it as ``host:port``.

    The one place a reported address enters the portal. The start task waiting for it
    lands the server running there (outposts/lifecycle/start.py): the poll, the events
    answer and the stock Hub's set-up-tunnel call then carry it, or the tunnel's address.
    A repeated report of the same address is accepted again.

    Raises ServerEnded (ended, or a stop was asked for), AddressNotAllowed (host or port
    outside the Outpost's allowed nodes and ports), ReportConflict (the server already runs
    at another address); nothing is changed then.
    """
    address = address_join(host=host, port=port)
    with transaction.atomic():
        locked = server_for_update(server_id=server.pk)
        if locked is None or not locked.is_active or locked.stop_requested_at is not None:
            raise ServerEnded("This server has ended or is stopping; its address is not wanted.")
        problem = locked.outpost.reported_address_problem(host=host, port=port)
        if problem:
            log.warning("Server %s reported %s: refused, %s", locked.pk, address, problem)
            raise AddressNotAllowed(problem)
        if locked.reported_address == address:
            return address
        if locked.status != Server.Status.PENDING:
            raise ReportConflict(
                "This server already runs at the address it reported first; start it again "
                "to move it."
            )
        locked.reported_address = address
        locked.reported_at = timezone.now()
        locked.save(update_fields=["reported_address", "reported_at", "updated_at"])
        callbacks.server_record_event(
            server=locked, progress=90, message=f"The server reported its address {address}."
        )
        # The start task lands the server at this address as soon as it sees it, and the
        # landing opens its tunnel (outposts.lifecycle.start, tunnel_open_for_server).
    log.info("Server %s reported its address %s", server.pk, address)
    return address
