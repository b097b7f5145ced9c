"""The call-back a server's start wrapper makes: ``POST api/servers/<id>/address``.

Called by ``outpost-start-server`` on a compute node, not by a Hub: it authenticates with the
server's own call-back token (``Authorization: token <token>``), never Hub credentials.
Refusals answer JSON ``{"detail": ...}`` with a 4xx status and change nothing.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import get_authorization_header
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from outposts.models import is_host
from tunnels.reports import (
    ReportNotAuthenticated,
    ReportRefused,
    server_address_reported,
    server_by_report_token,
)

# The same answer for an unknown server, a missing and a wrong token: no oracle for ids.
NOT_AUTHENTICATED = "Not a valid call-back token for this server."


class AddressReportSerializer(serializers.Serializer):
    """Where the server listens, as its start wrapper reports it."""

    host = serializers.CharField(max_length=253, help_text="Host name or address of the node.")
    port = serializers.IntegerField(min_value=1, max_value=65535)

    def validate_host(self, host: str) -> str:
        if not is_host(host):
            raise serializers.ValidationError("Must be a host name or an IP address.")
        return host


class AddressAnswerSerializer(serializers.Serializer):
    address = serializers.CharField(help_text='The address recorded, "host:port".')
    detail = serializers.CharField()


class RefusalSerializer(serializers.Serializer):
    detail = serializers.CharField()


def _token(request: Request) -> str:
    parts = get_authorization_header(request).split()
    if len(parts) != 2 or parts[0].lower() not in (b"token", b"bearer"):
        return ""
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        return ""


class ServerAddressView(APIView):
    """A server reports where it listens (delayed tunnelling)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="A server's start wrapper reports its address",
        request=AddressReportSerializer,
        responses={
            200: AddressAnswerSerializer,
            **{code: RefusalSerializer for code in (400, 401, 403, 409, 410)},
        },
        auth=[],
    )
    def post(self, request: Request, server_id: int, **kwargs: Any) -> Response:
        try:
            server = server_by_report_token(server_id=server_id, token=_token(request))
            if server is None:
                raise ReportNotAuthenticated(NOT_AUTHENTICATED)
            report = AddressReportSerializer(data=request.data)
            report.is_valid(raise_exception=True)
            address = server_address_reported(
                server=server,
                host=report.validated_data["host"],
                port=report.validated_data["port"],
            )
        except ReportRefused as refusal:
            headers = {"WWW-Authenticate": "Token"} if refusal.status == 401 else None
            return Response({"detail": refusal.message}, status=refusal.status, headers=headers)
        answer = {"address": address, "detail": "Address recorded."}
        return Response(AddressAnswerSerializer(answer).data, status=status.HTTP_200_OK)


server_address_view = ServerAddressView.as_view()
