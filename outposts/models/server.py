"""The servers Hubs start, and their progress events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from outposts.models.hub import Hub
from outposts.models.outpost import Outpost
from portal.crypto import EncryptedJSONField


class ServerQuerySet(models.QuerySet["Server"]):
    def active(self) -> ServerQuerySet:
        """Servers that count against limits: every status but stopped and failed."""
        return self.exclude(status__in=Server.ENDED)

    def visible(self) -> ServerQuerySet:
        """Servers the Hub has not deleted: those a poll or a stop still finds."""
        return self.filter(removed_at__isnull=True)


class Server(models.Model):
    """One Jupyter server a Hub asked for, from admission to history.

    A stopped server is never erased: once its Hub deletes it (removed_at), it is history for
    accounting and audit, hidden from the API.
    """

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"
        UNKNOWN = "unknown", "Unknown"

    ENDED = (Status.STOPPED, Status.FAILED)

    hub = models.ForeignKey(Hub, on_delete=models.PROTECT, related_name="servers")
    outpost = models.ForeignKey(Outpost, on_delete=models.PROTECT, related_name="servers")
    flavor = models.ForeignKey(
        "flavors.Flavor", on_delete=models.PROTECT, null=True, blank=True, related_name="servers"
    )
    project = models.ForeignKey(
        "projects.Project",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="servers",
        help_text="The project the start named (user_options.project), whose allocation counts it.",
    )
    flavor_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="The flavor as admission resolved it for this server (display name, "
        "description, runtime, resources): later edits of the flavor do not change it.",
    )
    name = models.CharField(max_length=255, blank=True, help_text="JupyterHub server name.")
    start_id = models.CharField(max_length=255, default="0")
    user_id = models.CharField("Hub user id", max_length=64)
    user_name = models.CharField("Hub user name", max_length=255)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.REQUESTED, db_index=True
    )
    address = models.CharField(max_length=512, blank=True)
    address_via_callback = models.BooleanField(
        default=False,
        help_text="The Hub got no address in the start answer (async start, or a synchronous "
        "wait that ran out) and waits for a set-up-tunnel call.",
    )
    address_sent_at = models.DateTimeField(
        null=True, blank=True, help_text="When the set-up-tunnel call with the address was queued."
    )
    reported_address = models.CharField(
        max_length=300,
        blank=True,
        help_text="host:port the server's start wrapper reported (Outposts whose servers report "
        "their address); the Hub gets it, or its tunnel, once the server runs.",
    )
    reported_at = models.DateTimeField(null=True, blank=True)
    # The digest of the token this start attempt gave its server to report its address with;
    # a new attempt replaces it, an ended server refuses it.
    report_token_digest = models.CharField(max_length=64, blank=True, editable=False)
    user_options = models.JSONField(default=dict, blank=True)
    overrides = models.JSONField(
        default=dict, blank=True, help_text="The allow-listed misc traits the Hub asked for."
    )
    env = EncryptedJSONField(null=True, blank=True, help_text="Request env (holds the API token).")
    spawner_state = EncryptedJSONField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    spawner_log = models.TextField(
        blank=True, help_text="The last lines its spawner logged (tokens redacted)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the spawner ran.")
    ready_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True, help_text="Runtime ends here.")
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    stop_unqueued_since = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Since when the stop task could not be queued (the task broker was down); "
        "the reconciler queues it again, and so does a repeated stop.",
    )
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    unknown_since = models.DateTimeField(null=True, blank=True)
    # While a start task runs it renews this lease; a redelivered copy of the task takes the
    # start over only once the lease has run out (the first attempt died).
    start_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    removed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the Hub deleted it; hidden from the API since."
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = ServerQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "outpost", "name", "start_id"],
                condition=Q(removed_at__isnull=True),
                name="one_visible_server_per_start",
            )
        ]
        indexes = [
            models.Index(fields=["outpost", "status"]),
            # Every flavor answer counts the Outpost's active servers per flavor, of the Hub
            # and of its user (flavors.selectors.active_servers_by_flavor_query): from this
            # index alone, in flavor order, without reading a row.
            models.Index(
                fields=["outpost", "flavor", "status", "hub", "user_id"],
                name="server_flavor_counts",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_name}:{self.name or '(default)'} on {self.outpost_id}"

    @property
    def is_active(self) -> bool:
        return self.status not in self.ENDED

    @property
    def stop_pending(self) -> bool:
        return self.stop_requested_at is not None and self.is_active

    @property
    def runtime(self) -> timedelta | None:
        """How long the server may run once ready, as admitted; None = no limit."""
        seconds = (self.flavor_settings or {}).get("runtime_seconds")
        return None if seconds is None else timedelta(seconds=seconds)

    @property
    def resources(self) -> dict[str, Any]:
        """The spawner traits of the server's flavor, as admitted."""
        return dict((self.flavor_settings or {}).get("resources") or {})

    @property
    def poll_status(self) -> int | None:
        return self.poll_status_of(status=self.status, exit_code=self.exit_code)

    @classmethod
    def poll_status_of(cls, *, status: str, exit_code: int | None) -> int | None:
        """What a Hub's poll reads (api-contract.md §3.2): None while the server may still
        run, else its exit code; without a recorded one, 0 for stopped and 1 for failed."""
        if status not in cls.ENDED:
            return None
        if exit_code is not None:
            return exit_code
        return 1 if status == cls.Status.FAILED else 0


class SpawnEvent(models.Model):
    """One progress step of a server's start, as the Hub shows it to the user."""

    server = models.ForeignKey(Server, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now)
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.TextField()
    failed = models.BooleanField(default=False)
    ready = models.BooleanField(default=False)

    class Meta:
        ordering = ["server", "id"]

    def __str__(self) -> str:
        return f"{self.progress}% {self.message}"
