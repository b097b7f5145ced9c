"""The API's request and answer shapes. They check shape only; rules live in the services."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.utils.html import escape
from rest_framework import serializers

from outposts.models import Server
from outposts.services import StartRequest, start_env_problem

_NAME_MAX = Server._meta.get_field("name").max_length
_START_ID_MAX = Server._meta.get_field("start_id").max_length
_USER_ID_MAX = Server._meta.get_field("user_id").max_length
_USER_NAME_MAX = Server._meta.get_field("user_name").max_length


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would quietly turn 5 into "5"."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ObjectField(serializers.DictField):
    """A JSON object whose values are free-form."""

    default_error_messages = {"not_a_dict": "Must be a JSON object, not {input_type}."}


def _as_env_value(value: Any) -> str:
    # The spawner's environment is strings only; the Hub may send numbers or booleans.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True)


class StartSerializer(serializers.Serializer):
    """The body of ``POST services``. Fields not declared here (state, end_date,
    stop_pending, ...) are dropped: a Hub can never write the server's bookkeeping."""

    name = StrictCharField(allow_blank=True, trim_whitespace=False, max_length=_NAME_MAX)
    env = ObjectField(required=False, default=dict)
    user_options = ObjectField(required=False, default=dict)
    misc = ObjectField(required=False, default=dict)
    certs = ObjectField(child=StrictCharField(allow_blank=True), required=False, default=dict)
    internal_trust_bundles = ObjectField(
        child=StrictCharField(allow_blank=True), required=False, default=dict
    )
    flavor = StrictCharField(required=False, allow_blank=True, allow_null=True)
    authentication = ObjectField(required=False, default=dict)

    def validate_env(self, env: dict[str, Any]) -> dict[str, str]:
        env = {str(key): _as_env_value(value) for key, value in env.items()}
        # Column sizes of the server row: a longer value would fail the insert with a 500.
        for key, limit in (
            ("JUPYTERHUB_USER_ID", _USER_ID_MAX),
            ("JUPYTERHUB_USER", _USER_NAME_MAX),
        ):
            if len(env.get(key, "")) > limit:
                raise serializers.ValidationError(f"{key} has more than {limit} characters.")
        # Naming the Hub user is the start's own rule, which server_start checks for every
        # caller. Asked here too, so that a body's 400 lists it with the body's other errors.
        problem = start_env_problem(env)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return env

    def validate_user_options(self, user_options: dict[str, Any]) -> dict[str, Any]:
        start_id = user_options.get("start_id")
        if start_id is not None and not isinstance(start_id, str | int):
            raise serializers.ValidationError({"start_id": "Must be a string."})
        if start_id is not None and len(str(start_id)) > _START_ID_MAX:
            raise serializers.ValidationError(
                {"start_id": f"Has more than {_START_ID_MAX} characters."}
            )
        flavor = user_options.get("flavor")
        if flavor is not None and not isinstance(flavor, str):
            raise serializers.ValidationError({"flavor": "Must be a string."})
        return user_options

    def to_start_request(self, *, start_async: bool) -> StartRequest:
        data = self.validated_data
        user_options = dict(data["user_options"])
        # The stock Hub puts its start_id into user_options; the spawner must not see it.
        start_id = str(user_options.pop("start_id", None) or "0")
        flavor = user_options.get("flavor") or data.get("flavor") or None
        return StartRequest(
            name=data["name"],
            start_id=start_id,
            env=data["env"],
            user_options=user_options,
            misc=data["misc"],
            flavor=flavor,
            authentication=data["authentication"],
            start_async=start_async,
            certs=data["certs"],
            internal_trust_bundles=data["internal_trust_bundles"],
        )


class AuthenticationSerializer(serializers.Serializer):
    """The body of ``POST userflavors``: user attributes (``name``, ``groups``, ...)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {"non_field_errors": [f"Must be a JSON object, not {type(data).__name__}."]}
            )
        return dict(data)


class FlavorUserSerializer(serializers.Serializer):
    """The query of ``POST userflavors``: the Hub user whose own servers are counted."""

    user_id = serializers.RegexField(r"^[0-9]+\Z", max_length=_USER_ID_MAX, required=False)


class ServerSerializer(serializers.Serializer):
    """One entry of ``GET services/``. Reads the annotations of server_list_for_hub."""

    name = serializers.CharField()
    start_id = serializers.CharField()
    start_date = serializers.DateTimeField(source="created_at")
    end_date = serializers.DateTimeField(source="end_at", allow_null=True)
    last_update = serializers.DateTimeField(source="updated_at")
    jupyterhub = serializers.CharField(source="hub.name")
    jupyterhub_userid = serializers.CharField(source="user_id")
    state_stored = serializers.BooleanField()
    start_pending = serializers.BooleanField()
    stop_pending = serializers.BooleanField()
    flavor = serializers.CharField(source="flavor.name", allow_null=True, default=None)
    status = serializers.CharField()


# Answer shapes. The views render every answer through these, so each shape is written once
# and the OpenAPI schema describes exactly what is sent. Docstrings go into the schema: what
# each serializer takes as its instance is said in comments. An answer that wraps one value
# (an address, "pong!") takes that value.


class StartAnswerSerializer(serializers.Serializer):
    """The answer to a start."""

    # Instance: the address the Hub gets.
    service = serializers.CharField(
        source="*",
        allow_blank=True,
        help_text='"host:port", a URL, or "" when the address is not known yet.',
    )


class LogsField(serializers.ListField):
    """A server's logs as a poll or a stop answers them: the portal collects none, so this is
    always an empty list, whatever the instance (``collect_logs`` is accepted for
    compatibility)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.CharField(), source="*", **kwargs)

    def to_representation(self, data: Any) -> list[str]:
        return []


class PollAnswerSerializer(serializers.Serializer):
    """The answer to a poll, from the portal's record of the server."""

    # Instance: the Server.
    status = serializers.IntegerField(
        source="poll_status",
        allow_null=True,
        help_text="null while active; the exit status once ended.",
    )
    logs = LogsField()


class StopAnswerSerializer(serializers.Serializer):
    """The answer to a synchronous stop."""

    # Instance: anything; the answer carries nothing of the server.
    logs = LogsField(required=False)


class EscapedCharField(serializers.CharField):
    """Text HTML-escaped: a Hub shows it as HTML, and spawner output must not become markup."""

    def to_representation(self, value: Any) -> str:
        return escape(super().to_representation(value))


class EventSerializer(serializers.Serializer):
    """A progress step of a start, as JupyterHub's progress API carries it, with its id."""

    # Instance: a SpawnEvent.
    id = serializers.IntegerField(help_text="Pass the last one as ?after= to get newer events.")
    progress = serializers.IntegerField()
    message = serializers.CharField()
    html_message = EscapedCharField(source="message", help_text="The message, HTML-escaped.")
    failed = serializers.BooleanField()
    ready = serializers.BooleanField()


class EventsAnswerSerializer(serializers.Serializer):
    """A start's progress events, with the server's status and address."""

    # Instance: {"server": the Server, "events": its SpawnEvents to send}.
    events = EventSerializer(many=True)
    status = serializers.ChoiceField(source="server.status", choices=Server.Status.choices)
    service = serializers.CharField(source="server.address", allow_blank=True)


class ErrorSerializer(serializers.Serializer):
    module = serializers.CharField()
    # "class" is a Python keyword; the wire name is set in __init__.
    class_ = serializers.CharField()
    traceback = serializers.CharField(help_text='Always "" unless the portal runs in debug.')
    args = serializers.ListField(child=serializers.CharField())
    kwargs = serializers.DictField()
    detail = serializers.CharField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["class"] = self.fields.pop("class_")


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class PingSerializer(serializers.Serializer):
    """The answer to ping."""

    # Instance: the word it answers, "pong!".
    ping = serializers.CharField(source="*")
