"""Bodies of the tunnels API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class TunnelRestartSerializer(serializers.Serializer):
    """``{"node": ...}`` or ``{"jump_host": ...}``: which tunnels to re-create."""

    node = serializers.CharField(required=False, max_length=255, allow_blank=False)
    jump_host = serializers.CharField(required=False, max_length=255, allow_blank=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("node" in attrs) == ("jump_host" in attrs):
            raise serializers.ValidationError("Give either node or jump_host.")
        return attrs
