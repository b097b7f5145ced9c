"""How a Hub proves who it is: HTTP Basic (name + secret) or a Hub API key."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from outposts import hubs, selectors
from outposts.models import Hub
from portal.text import control_character

# The same message for every failure: which part was wrong is nobody's business.
FAILED = "Invalid Hub credentials."


@dataclass(frozen=True)
class HubUser:
    """The authenticated caller as DRF sees it (request.user): a Hub, not a Django user."""

    hub: Hub
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return f"hub:{self.hub.name}"


class HubAuthentication(BaseAuthentication):
    """``Authorization: Basic base64(<hub>:<secret>)``, ``token <key>`` or ``Bearer <key>``.

    Failures never say which part was wrong and nothing of the credentials is logged.
    """

    def authenticate(self, request: Request) -> tuple[HubUser, None] | None:
        header = get_authorization_header(request).split(maxsplit=1)
        if not header:
            return None  # IsAuthenticated then answers 401 "not provided"
        scheme = header[0].lower()
        credentials = header[1].strip() if len(header) == 2 else b""
        if not credentials:
            raise exceptions.AuthenticationFailed(FAILED)
        if scheme == b"basic":
            hub = self._hub_by_basic(credentials)
        elif scheme in (b"token", b"bearer"):
            hub = self._hub_by_api_key(credentials)
        else:
            raise exceptions.AuthenticationFailed(FAILED)
        if hub is None:
            raise exceptions.AuthenticationFailed(FAILED)
        return HubUser(hub), None

    def authenticate_header(self, request: Request) -> str:
        # What existing Hub configs speak; also makes DRF answer 401 rather than 403.
        return "Basic"

    def _hub_by_basic(self, credentials: bytes) -> Hub | None:
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except binascii.Error as error:
            raise exceptions.AuthenticationFailed(FAILED) from error
        name, colon, secret = self._text(decoded).partition(":")
        if not colon:
            raise exceptions.AuthenticationFailed(FAILED)
        return selectors.hub_by_secret(name=name, secret=secret)

    def _hub_by_api_key(self, credentials: bytes) -> Hub | None:
        api_key = selectors.hub_api_key_by_key(key=self._text(credentials))
        if api_key is None:
            return None
        hubs.hub_api_key_record_use(api_key=api_key)
        return api_key.hub

    @staticmethod
    def _text(raw: bytes) -> str:
        try:
            text = raw.decode()
        except UnicodeDecodeError as error:
            raise exceptions.AuthenticationFailed(FAILED) from error
        # No Hub name or key holds one, and a NUL would fail the look-up in PostgreSQL.
        if control_character(text) is not None:
            raise exceptions.AuthenticationFailed(FAILED)
        return text


class HubAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents HubAuthentication in the OpenAPI schema (Basic, or a token as Bearer)."""

    target_class = HubAuthentication
    name = ["hubBasic", "hubToken"]

    def get_security_requirement(self, auto_schema: object) -> list[dict[str, list[str]]]:
        return [{"hubBasic": []}, {"hubToken": []}]  # either one (OR), not both

    def get_security_definition(self, auto_schema: object) -> list[dict[str, str]]:
        return [
            {"type": "http", "scheme": "basic", "description": "Hub name and secret."},
            {
                "type": "http",
                "scheme": "bearer",
                "description": "A Hub API key; `Authorization: token <key>` works too.",
            },
        ]
