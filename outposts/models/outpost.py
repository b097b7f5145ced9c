"""Outposts: the compute systems, their spawner settings, what their servers may report."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import uuid
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.db.models import Q
from django.utils.html import escape
from django.utils.module_loading import import_string

from outposts.spawner_settings import spawner_settings_problems

TRAIT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# An environment variable name, or a glob of them with * and ? (fnmatch, case-sensitive).
ENV_PATTERN = re.compile(r"[A-Za-z0-9_*?]+")
# A host name a server may report (addresses are parsed): nothing a URL could hide in.
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
NODE_PATTERN = re.compile(r"[A-Za-z0-9.:*?\[\]-]{1,255}")


class Outpost(models.Model):
    """A compute system on which the portal starts Jupyter servers with one spawner class."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        DRAINING = "draining", "Draining (running servers stay, no new starts)"
        DISABLED = "disabled", "Disabled"

    # Help texts are HTML to the admin (and Markdown to the API schema): texts naming a
    # placeholder such as <slug> are escaped, or the browser drops it as an unknown tag.
    slug = models.SlugField(
        unique=True, help_text=escape("Names the API base URL /outposts/<slug>/.")
    )
    name = models.CharField(max_length=200)
    is_default = models.BooleanField(
        "default", default=False, help_text="Also serve this Outpost's API at the site root."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    state_message = models.CharField(
        max_length=300,
        blank=True,
        help_text="Shown to users while the Outpost is draining or disabled, e.g. "
        '"Maintenance until Monday 08:00."',
    )
    spawner_class = models.CharField(
        max_length=255,
        default="jupyterhub.spawner.SimpleLocalProcessSpawner",
        help_text="Dotted path of the JupyterHub spawner class that starts servers here.",
    )
    spawner_config = models.JSONField(
        default=dict,
        blank=True,
        help_text='Trait values for the spawner class, e.g. {"cmd": ["jupyterhub-singleuser"]}.',
    )
    allowed_overrides = models.JSONField(
        default=list,
        blank=True,
        help_text="Spawner trait names a Hub may set through the request's misc object.",
    )
    allowed_override_values = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "The values a Hub may give an allow-listed override, as glob patterns per trait, "
            'e.g. {"image": ["quay.io/jupyter/*", "registry.example.org/hpc/*"]}. A start '
            "asking for another value is refused; an override not named here takes any value."
        ),
    )
    allowed_user_options = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "user_options keys passed on to the spawner. Batch spawners fill their job script "
            "from user_options, so an unlisted key never reaches it; flavor and project are "
            "read by admission only."
        ),
    )
    allowed_env = models.JSONField(
        "allowed env",
        default=list,
        blank=True,
        help_text=(
            "Environment variables of the Hub's request passed on to the spawner besides "
            "JUPYTERHUB_* and JUPYTER_*: names or glob patterns (* and ?), e.g. "
            '["TZ", "MY_SITE_*"]. Every other variable is dropped: PATH, LD_PRELOAD, '
            "PYTHONSTARTUP and the like would change what runs in the server."
        ),
    )
    min_system_uid = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=1000,
        help_text=(
            "A Hub user whose name is a system account below this uid on the Outpost's host "
            "(root, service accounts) cannot start servers; empty = no check."
        ),
    )
    unix_user_rule = models.CharField(
        "Unix account rule",
        max_length=16,
        choices=[
            ("name", "The Hub user name"),
            ("template", "A template of it"),
            ("table", "A lookup table"),
        ],
        default="name",
        help_text="Which Unix account on the Outpost's host a Hub user's batch job runs as "
        "(batchspawner's SlurmSpawner; docs/slurm.md). Other spawners use the Hub user name.",
    )
    unix_user_template = models.CharField(
        "Unix account template",
        max_length=64,
        blank=True,
        help_text='For the template rule, e.g. "hpc_{name}"; {name} is the Hub user name.',
    )
    unix_user_table = models.JSONField(
        "Unix account table",
        default=dict,
        blank=True,
        help_text='For the table rule: Hub user names to accounts, e.g. {"olga": "ob1234"}; '
        "a user not in it cannot start here.",
    )
    max_servers_per_user = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Active servers one Hub user may have here over all flavors; empty = no limit.",
    )
    queue = models.CharField(
        max_length=100,
        blank=True,
        help_text=escape("Celery queue of this Outpost's tasks; empty = outpost.<slug>."),
    )
    poll_interval = models.DurationField(
        default=timedelta(seconds=30), help_text="How often the reconciler polls a running server."
    )
    start_timeout = models.DurationField(
        default=timedelta(minutes=10),
        help_text="A start that has not reached running after this long fails.",
    )
    unknown_grace = models.DurationField(
        default=timedelta(minutes=15),
        help_text="How long a server may stay unknown (system unreachable) before it is ended.",
    )
    server_reports_address = models.BooleanField(
        "servers report their address",
        default=False,
        help_text="Servers run through outpost-start-server, which picks the port and reports "
        "host:port back (delayed tunnelling, e.g. batch jobs). A start is running only once "
        "its address arrived; one that never reports fails after the start timeout.",
    )
    server_callback_url = models.CharField(
        "portal URL for servers",
        max_length=300,
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="The portal's base URL as this Outpost's compute nodes reach it, e.g. "
        "https://portal.example.org/; empty = PORTAL_SERVER_CALLBACK_URL.",
    )
    allowed_node_patterns = models.JSONField(
        default=list,
        blank=True,
        help_text='Hosts a server may report, as a JSON list of glob patterns ("node*.hpc") '
        'or networks ("10.1.0.0/16"). Empty = none: every report is refused.',
    )
    allowed_port_min = models.PositiveIntegerField(
        default=1024,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Lowest port a server may report (outpost-start-server picks from this range).",
    )
    allowed_port_max = models.PositiveIntegerField(
        default=65535,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
        help_text="Highest port a server may report.",
    )
    reconcile_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    # New with every change of its flavors, Hub policies or user rules (flavors/terms.py).
    flavor_terms_token = models.UUIDField(default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="one_default_outpost"
            )
        ]

    def __str__(self) -> str:
        return self.name

    OWN_UPDATES = frozenset({"reconcile_lease_until", "flavor_terms_token"})

    def save(self, *args: object, **kwargs: object) -> None:
        # The reconciler's lease and the flavor terms' token are written only by their own
        # UPDATEs: a save of the settings (admin, apply_config) must not put back the values
        # it read earlier.
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name not in self.OWN_UPDATES
            ]
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def celery_queue(self) -> str:
        return self.queue or f"outpost.{self.slug}"

    @property
    def accepts_starts(self) -> bool:
        return self.state == self.State.ACTIVE

    def reported_address_problem(self, *, host: str, port: int) -> str | None:
        """Why a server of this Outpost may not report ``host:port``, or None if it may."""
        if not self.allowed_port_min <= port <= self.allowed_port_max:
            return (
                f"Port {port} is outside this Outpost's allowed ports "
                f"{self.allowed_port_min}-{self.allowed_port_max}."
            )
        if not host_matches_patterns(host, self.allowed_node_patterns or []):
            return f"Host {host!r} is not one of this Outpost's allowed nodes."
        return None

    def spawner_settings_problems(self) -> dict[str, list[str]]:
        """What is wrong with the spawner class and the traits set for it, by field name."""
        return spawner_settings_problems(
            spawner_class=self.spawner_class,
            spawner_config=self.spawner_config,
            allowed_overrides=self.allowed_overrides,
        )

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        if not isinstance(self.spawner_config, dict):
            errors["spawner_config"] = "Must be a JSON object of trait names to values."
        for field_name in ("allowed_overrides", "allowed_user_options"):
            names = getattr(self, field_name)
            if not isinstance(names, list) or not all(
                isinstance(name, str) and TRAIT_NAME.match(name) for name in names
            ):
                errors[field_name] = "Must be a JSON list of names."
        values_problem = override_values_problem(
            self.allowed_override_values,
            allowed=[] if "allowed_overrides" in errors else self.allowed_overrides,
        )
        if values_problem:
            errors["allowed_override_values"] = values_problem
        patterns = self.allowed_env
        if not isinstance(patterns, list) or not all(
            isinstance(pattern, str) and ENV_PATTERN.fullmatch(pattern) for pattern in patterns
        ):
            errors["allowed_env"] = (
                "Must be a JSON list of environment variable names or glob patterns "
                "(letters, digits, _, * and ?)."
            )
        # The class is allow-listed, the traits are its own and typed, misc never sets what
        # runner/kube.py protects (spawner_settings.py).
        errors = {**self.spawner_settings_problems(), **errors}
        node_problem = node_patterns_problem(self.allowed_node_patterns)
        if node_problem:
            errors["allowed_node_patterns"] = node_problem
        elif self.server_reports_address and not self.allowed_node_patterns:
            errors["allowed_node_patterns"] = (
                "Servers that report their address need the hosts they may report."
            )
        if (
            isinstance(self.allowed_port_min, int)
            and isinstance(self.allowed_port_max, int)
            and self.allowed_port_min > self.allowed_port_max
        ):
            errors["allowed_port_max"] = "Must not be below the lowest allowed port."
        errors.update(self._unix_user_errors())
        # Two Outposts on one queue would run each other's tasks on each other's workers.
        same_queue = [
            other.slug
            for other in Outpost.objects.exclude(pk=self.pk)
            if other.celery_queue == self.celery_queue
        ]
        if same_queue:
            errors["queue"] = f"The queue {self.celery_queue} is already {same_queue[0]}'s."
        if errors:
            raise ValidationError(errors)

    def _unix_user_errors(self) -> dict[str, str]:
        from outposts.runner.accounts import UnixAccountRule
        from outposts.runner.slurm import is_slurm

        rule = UnixAccountRule.from_outpost(self)
        errors = rule.errors()
        if not errors and rule.rule != "name":
            try:
                mapped = is_slurm(import_string(self.spawner_class))
            except ImportError:
                mapped = True  # clean() reports the class itself
            if not mapped:
                errors["unix_user_rule"] = (
                    "Only batchspawner's SlurmSpawner runs servers as a mapped account; this "
                    "spawner uses the Hub user name."
                )
        return errors


def override_values_problem(values: Any, *, allowed: list[str]) -> str | None:
    """What is wrong with Outpost.allowed_override_values, or None: a JSON object of
    allow-listed override names to lists of glob patterns."""
    if not isinstance(values, dict) or not all(
        isinstance(patterns, list) and all(isinstance(p, str) and p for p in patterns)
        for patterns in values.values()
    ):
        return (
            "Must be a JSON object of override names to lists of patterns, "
            'e.g. {"image": ["quay.io/jupyter/*"]}.'
        )
    unlisted = sorted(set(values) - set(allowed))
    if unlisted:
        return f"{', '.join(unlisted)}: not in the allowed overrides."
    return None


def node_patterns_problem(patterns: Any) -> str | None:
    """What is wrong with an allowed-nodes list (Outpost.allowed_node_patterns), or None."""
    if not isinstance(patterns, list) or not all(
        isinstance(pattern, str) and pattern for pattern in patterns
    ):
        return "Must be a JSON list of host patterns or networks."
    for pattern in patterns:
        if "/" in pattern:
            try:
                ipaddress.ip_network(pattern, strict=False)
            except ValueError:
                return f"{pattern!r} is not a network (e.g. 10.1.0.0/16)."
        elif not NODE_PATTERN.fullmatch(pattern):
            return f"{pattern!r}: letters, digits, '.', '-', ':' and the wildcards * ? only."
    return None


def is_host(host: str) -> bool:
    """Whether ``host`` is a host name or an IP address (IPv6 bracketed or not)."""
    try:
        ipaddress.ip_address(host.strip("[]") if host.startswith("[") else host)
    except ValueError:
        return bool(HOST_NAME.fullmatch(host))
    return True


def host_matches_patterns(host: str, patterns: list[str]) -> bool:
    """Whether ``host`` (a name or an address) is one of ``patterns``: case-insensitive globs
    for names and addresses, networks (``10.1.0.0/16``) for addresses.

    A glob without letters (``10.1.*``) is an address pattern and never matches a name: the
    name ``10.1.evil.example`` would match it and resolve anywhere.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not HOST_NAME.fullmatch(host):
            return False
        address = None
    for pattern in patterns:
        if "/" in pattern:
            if address is not None and address in ipaddress.ip_network(pattern, strict=False):
                return True
        elif address is None and not re.search(r"[A-Za-z]", pattern):
            continue
        elif fnmatch.fnmatchcase(host.lower(), pattern.lower()):
            return True
    return False
