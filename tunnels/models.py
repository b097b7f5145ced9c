"""SSH tunnels as records: how an Outpost's servers are reached, and one tunnel per server.

The SSH settings live in ``OutpostSSH``, one row per Outpost, rather than as fields of
``outposts.Outpost``: they are the tunnel agent's input and nobody else's, they hold a key
(encrypted) that the Outpost's other readers (the API, the workers) never need, and they
change on their own schedule (a change re-creates the Outpost's tunnels). An Outpost without
the row is reached directly.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from outposts.models import Outpost, Server
from portal.crypto import EncryptedJSONField

PORT_VALIDATORS = [MinValueValidator(1), MaxValueValidator(65535)]
# Names that end up in URLs and log lines: the Hub's system name, an agent's name.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class OutpostSSH(models.Model):
    """How an Outpost's servers are reached, and the SSH settings of its tunnels.

    The private key is never stored in clear: either a path to a key file that the tunnel
    agent reads on its own machine, or the key encrypted with the portal's key ring.
    """

    class Reach(models.TextChoices):
        DIRECT = "direct", "Directly: the Hub reaches the server's address"
        AGENT = "agent", "Through the portal's tunnel agent"
        HUB = "hub", "The Hub tunnels itself (stock SetupTunnel call-back)"

    outpost = models.OneToOneField(Outpost, on_delete=models.CASCADE, related_name="ssh")
    reach = models.CharField(max_length=16, choices=Reach.choices, default=Reach.DIRECT)
    jump_host = models.CharField(
        max_length=255, blank=True, help_text="The SSH host the tunnels go through."
    )
    jump_port = models.PositiveIntegerField(default=22, validators=PORT_VALIDATORS)
    user = models.CharField("SSH user", max_length=100, blank=True)
    key_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="Path of the private key file on the tunnel agent's machine.",
    )
    key = EncryptedJSONField(
        null=True,
        blank=True,
        help_text="The private key (OpenSSH or PEM text), stored encrypted; instead of a path.",
    )
    known_hosts = models.TextField(
        blank=True,
        help_text='The jump host\'s keys as OpenSSH known_hosts lines ("[host]:port type key"'
        " for a port other than 22). A host key not listed here is refused.",
    )
    accept_new_host_keys = models.BooleanField(
        "accept new host keys",
        default=False,
        help_text="Trust the jump host's key on first use and add it to the known hosts. "
        "A key that changed is refused all the same.",
    )
    agent = models.CharField(
        max_length=100,
        default="default",
        help_text="Name of the tunnel agent (run_tunnel_agent --name) that holds this "
        "Outpost's tunnels.",
    )
    bind_host = models.CharField(
        max_length=255,
        default="127.0.0.1",
        help_text="Address the tunnel agent listens on for each tunnel.",
    )
    advertised_host = models.CharField(
        max_length=255,
        blank=True,
        help_text="Host name the Hub connects to for a tunnelled server (the agent's host as "
        "the Hub sees it); empty = the bind address.",
    )
    hub_system = models.CharField(
        max_length=100,
        blank=True,
        help_text="For Hubs that tunnel themselves: the system name their servers carry in "
        "user_options.system (recreate-forward calls name it); empty = the Outpost's slug.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    # A change of one of these re-creates the Outpost's tunnels.
    CONNECTION_FIELDS = (
        "reach",
        "jump_host",
        "jump_port",
        "user",
        "key_path",
        "key",
        "known_hosts",
        "accept_new_host_keys",
        "agent",
        "bind_host",
        "advertised_host",
    )

    class Meta:
        verbose_name = "Outpost SSH settings"
        verbose_name_plural = "Outpost SSH settings"

    def __str__(self) -> str:
        return f"SSH settings of {self.outpost}"

    @property
    def system_name(self) -> str:
        return self.hub_system or self.outpost.slug

    @property
    def tunnel_host(self) -> str:
        """The host a Hub is given for a server tunnelled by the agent."""
        return self.advertised_host or self.bind_host

    def clean(self) -> None:
        from tunnels.ssh import KnownHostsError, parse_known_hosts

        errors: dict[str, str] = {}
        if self.reach in (self.Reach.AGENT, self.Reach.HUB) and not self.jump_host:
            errors["jump_host"] = "Tunnels need a jump host."
        if self.reach == self.Reach.AGENT:
            if not self.user:
                errors["user"] = "The agent logs in as this user."
            if bool(self.key_path) == bool(self.key):
                errors["key_path"] = "Give either a key file path or a key, not both."
        if self.key is not None and not isinstance(self.key, str):
            errors["key"] = "Must be the key's text (a JSON string)."
        try:
            parse_known_hosts(self.known_hosts)
        except KnownHostsError as error:
            errors["known_hosts"] = str(error)
        for name in ("agent", "hub_system"):
            value = getattr(self, name)
            if value and not SAFE_NAME.match(value):
                errors[name] = "Letters, digits, '.', '_' and '-' only."
        if errors:
            raise ValidationError(errors)


class TunnelQuerySet(models.QuerySet["Tunnel"]):
    def wanted_open(self) -> TunnelQuerySet:
        """Tunnels an agent should hold: asked to be open, of a server that has not ended."""
        return self.filter(desired_state=Tunnel.Desired.OPEN).exclude(
            server__status__in=Server.ENDED
        )


class Tunnel(models.Model):
    """The SSH forward that makes one server reachable: ``bind_host:bind_port`` on the agent
    ``agent``, through the Outpost's jump host, to ``remote_host:remote_port``.

    The portal writes what is wanted (desired state, generation); the agent writes what is
    (state, opened generation, last error, last check). A restart bumps the generation: the
    agent then re-creates the forward.
    """

    class Desired(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    class State(models.TextChoices):
        PENDING = "pending", "Pending (not opened yet)"
        OPEN = "open", "Open"
        FAILED = "failed", "Failed (retrying)"
        CLOSED = "closed", "Closed"

    server = models.OneToOneField(Server, on_delete=models.CASCADE, related_name="tunnel")
    outpost = models.ForeignKey(Outpost, on_delete=models.CASCADE, related_name="tunnels")
    agent = models.CharField(max_length=100, db_index=True)
    remote_host = models.CharField(max_length=255)
    remote_port = models.PositiveIntegerField(validators=PORT_VALIDATORS)
    bind_host = models.CharField(max_length=255)
    bind_port = models.PositiveIntegerField(validators=PORT_VALIDATORS)
    desired_state = models.CharField(
        max_length=16, choices=Desired.choices, default=Desired.OPEN, db_index=True
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    generation = models.PositiveIntegerField(
        default=1, help_text="Bumped by every restart; the agent re-creates the forward."
    )
    opened_generation = models.PositiveIntegerField(
        null=True, blank=True, help_text="The generation the agent's current forward was made for."
    )
    failures = models.PositiveIntegerField(default=0, help_text="Failed opens in a row.")
    last_error = models.TextField(blank=True)
    last_check_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TunnelQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "bind_host", "bind_port"],
                condition=Q(desired_state="open"),
                name="one_open_tunnel_per_bind_address",
            )
        ]

    def __str__(self) -> str:
        return f"{self.bind_host}:{self.bind_port} -> {self.remote_host}:{self.remote_port}"
