"""``POST <base>tunnels/restart``: a Hub granted the right re-creates the tunnels of the
Outpost it calls, to a node or through a jump host (the existing service's TunnelRestart)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from outposts import dispatch
from outposts.api.serializers import DetailSerializer
from outposts.api.views import QUEUE_ERRORS, HubAPIView
from tunnels.api.serializers import TunnelRestartSerializer

NOT_GRANTED = "This Hub may not restart tunnels."


class TunnelRestartView(HubAPIView):
    @extend_schema(
        summary="Re-create the tunnels to a node or through a jump host",
        request=TunnelRestartSerializer,
        responses={
            202: TunnelRestartSerializer,
            400: DetailSerializer,
            401: DetailSerializer,
            403: DetailSerializer,
            404: DetailSerializer,
            **QUEUE_ERRORS,
        },
    )
    def post(self, request: Request, **kwargs: Any) -> Response:
        # HubAPIView.initial has answered 404 for an Outpost this Hub was not granted.
        if not self.hub.may_restart_tunnels:
            raise exceptions.PermissionDenied(NOT_GRANTED)
        body = TunnelRestartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        dispatch.queue_tunnel_restart_for_node(
            node=body.validated_data.get("node"),
            jump_host=body.validated_data.get("jump_host"),
            outpost_id=self.outpost.pk,
        )
        return Response(body.validated_data, status=status.HTTP_202_ACCEPTED)
