"""Hubs (JupyterHub clients) and their API keys."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.html import escape

from outposts.models.outpost import Outpost
from portal.crypto import EncryptedJSONField, credential_digest, credential_matches


class Hub(models.Model):
    """A JupyterHub that calls the API with its own credentials."""

    name = models.SlugField(
        max_length=100, unique=True, help_text="The HTTP Basic user name the Hub sends."
    )
    secret_digest = models.CharField(max_length=64, blank=True, editable=False)
    outposts = models.ManyToManyField(Outpost, related_name="hubs", blank=True)
    is_active = models.BooleanField(default=True)
    callback_url_prefixes = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "URL prefixes the portal may call back for this Hub (progress events, set-up "
            'tunnel, flavor updates), e.g. ["https://hub.example.org/hub/api/"]. The Hub '
            "names the URLs in each request; calls elsewhere are dropped. Empty = no calls."
        ),
    )
    flavors_update_token = EncryptedJSONField(
        null=True,
        blank=True,
        help_text="Token for the Hub's flavor-update call-back when the request names none.",
    )
    may_restart_tunnels = models.BooleanField(
        default=False,
        help_text=escape(
            "The Hub may ask an Outpost it uses to re-create its tunnels through a "
            "jump host or to a node (POST <base>tunnels/restart)."
        ),
    )
    recreate_forward_token = EncryptedJSONField(
        null=True,
        blank=True,
        help_text="For a Hub that tunnels itself: a token of the Hub's API with the scope "
        "custom:sshnode:restart, for its recreate-forward endpoint.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        prefixes = self.callback_url_prefixes
        if not isinstance(prefixes, list) or not all(
            isinstance(prefix, str)
            and urlsplit(prefix).scheme in ("http", "https")
            and urlsplit(prefix).netloc
            for prefix in prefixes
        ):
            raise ValidationError(
                {"callback_url_prefixes": "Must be a JSON list of http(s) URL prefixes."}
            )

    def allows_callback(self, url: str) -> bool:
        """Whether the portal may call ``url``, which the Hub named in a start request."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return False
        # HTTP clients resolve "/hub/api/../../x" to "/x": a prefix check alone would pass it.
        if {".", ".."} & set(parts.path.split("/")):
            return False
        return any(url.startswith(prefix) for prefix in self.callback_url_prefixes)

    def set_secret(self, secret: str) -> None:
        if not secret:
            # The digest of "" is a valid digest: the Hub would accept an empty password.
            raise ValueError("A Hub's secret cannot be empty.")
        self.secret_digest = credential_digest(secret)

    def check_secret(self, secret: str) -> bool:
        return bool(self.secret_digest) and credential_matches(secret, self.secret_digest)


class HubAPIKey(models.Model):
    """A token a Hub sends as ``Authorization: token <key>``; only its digest is stored."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "Hub API key"

    def __str__(self) -> str:
        return f"{self.hub} key {self.name or self.pk}"

    @property
    def is_valid(self) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > timezone.now())
