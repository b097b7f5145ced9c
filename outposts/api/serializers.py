"""The API's request and answer shapes. They check shape only; rules live in the services."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from django.utils.html import escape
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from outposts.models import Server
from outposts.services import (
    NAME_RULE,
    StartRequest,
    server_name_problem,
    start_env_problem,
    start_id_problem,
    start_text_problem,
)

_NAME_MAX = Server._meta.get_field("name").max_length
_START_ID_MAX = Server._meta.get_field("start_id").max_length
_USER_ID_MAX = Server._meta.get_field("user_id").max_length
_USER_NAME_MAX = Server._meta.get_field("user_name").max_length
NAME_HELP = f"Server names and start_ids have {NAME_RULE}."
# The character rule (outposts.services.SERVER_NAME) as the schema states it.
NAME_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9._~-]*$"
START_ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9._~-]+$"
# A string without control characters (portal.text.CONTROL).
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would quietly turn 5 into "5"."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ObjectField(serializers.DictField):
    """A JSON object whose values are free-form, without control characters other than tab,
    line feed and carriage return (the start's own rule, start_text_problem)."""

    default_error_messages = {"not_a_dict": "Must be a JSON object, not {input_type}."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        problem = start_text_problem(value)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return value


@extend_schema_field(
    {
        "type": "object",
        "description": "The server's environment from the Hub's spawner; values become "
        "strings. Only JUPYTERHUB_* and JUPYTER_* variables and those the Outpost allow-lists "
        "reach the server; others are dropped.",
        "properties": {
            "JUPYTERHUB_USER": {
                "type": "string",
                "minLength": 1,
                "maxLength": _USER_NAME_MAX,
                "pattern": NO_CONTROL_PATTERN,
                "description": "The Hub user's name.",
            },
            "JUPYTERHUB_USER_ID": {
                "description": "The Hub user's id: ASCII digits, as a string or a number.",
                "oneOf": [
                    {"type": "string", "pattern": r"^[0-9]+$", "maxLength": _USER_ID_MAX},
                    {"type": "integer", "minimum": 0},
                ],
            },
        },
        "required": ["JUPYTERHUB_USER", "JUPYTERHUB_USER_ID"],
        "additionalProperties": {
            "description": "A string without control characters; a number or a boolean is "
            "sent on as its JSON text, null as an empty string.",
            "nullable": True,
            "oneOf": [
                {"type": "string", "pattern": NO_CONTROL_PATTERN},
                {"type": "number"},
                {"type": "boolean"},
            ],
        },
    }
)
class EnvField(ObjectField):
    """The start's env: it must name the Hub user (start_env_problem)."""


def _as_env_value(value: Any) -> str:
    # The spawner's environment is strings only; the Hub may send numbers or booleans.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True)


@extend_schema_field(
    {"type": "string", "pattern": NAME_PATTERN, "maxLength": _NAME_MAX},
)
class ServerNameField(StrictCharField):
    """A server name (outposts.services.server_name_problem); the rule is the service's."""


@extend_schema_field(
    {
        "type": "object",
        "description": "Becomes the spawner's user_options (only keys the Outpost allow-lists). "
        'start_id is taken out and becomes the server\'s start_id (default "0"); flavor '
        "selects the flavor. No control characters but tab, line feed and carriage return.",
        "properties": {
            "start_id": {
                "oneOf": [
                    {"type": "string", "pattern": START_ID_PATTERN, "maxLength": _START_ID_MAX},
                    {"type": "integer", "minimum": 0},
                ],
                "description": NAME_HELP,
            },
            "flavor": {"type": "string"},
        },
        "additionalProperties": True,
    }
)
class UserOptionsField(ObjectField):
    """The start's user_options, with its start_id and flavor."""


class StartSerializer(serializers.Serializer):
    """The body of ``POST services``. Fields not declared here (state, end_date,
    stop_pending, ...) are dropped: a Hub can never write the server's bookkeeping."""

    name = ServerNameField(
        allow_blank=True,
        trim_whitespace=False,
        max_length=_NAME_MAX,
        help_text="The JupyterHub server name; empty for the user's default server. " + NAME_HELP,
    )
    env = EnvField(required=False, default=dict)
    user_options = UserOptionsField(required=False, default=dict)
    misc = ObjectField(required=False, default=dict)
    certs = ObjectField(child=StrictCharField(allow_blank=True), required=False, default=dict)
    internal_trust_bundles = ObjectField(
        child=StrictCharField(allow_blank=True), required=False, default=dict
    )
    flavor = StrictCharField(required=False, allow_blank=True, allow_null=True)
    authentication = ObjectField(required=False, default=dict)

    def validate_flavor(self, flavor: str | None) -> str | None:
        problem = start_text_problem(flavor or "")
        if problem is not None:
            raise serializers.ValidationError(problem)
        return flavor

    def validate_name(self, name: str) -> str:
        problem = server_name_problem(name)
        if problem is not None:
            raise serializers.ValidationError(problem)
        return name

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
        problem = None if start_id is None else start_id_problem(str(start_id))
        if problem is not None:
            raise serializers.ValidationError({"start_id": problem})
        flavor = user_options.get("flavor")
        if flavor is not None and not isinstance(flavor, str):
            raise serializers.ValidationError({"flavor": "Must be a string."})
        return user_options

    def to_start_request(self, *, start_async: bool) -> StartRequest:
        return start_request_of(self.validated_data, start_async=start_async)


def start_request_of(data: Mapping[str, Any], *, start_async: bool) -> StartRequest:
    """The start that StartSerializer's validated ``data`` asks for."""
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
        # The same rule as a start's authentication object: it names a project to look up.
        problem = start_text_problem(data)
        if problem is not None:
            raise serializers.ValidationError({"non_field_errors": [problem]})
        return dict(data)


class FlavorUserSerializer(serializers.Serializer):
    """The query of ``POST userflavors``: the Hub user whose own servers are counted."""

    user_id = serializers.RegexField(r"^[0-9]+\Z", max_length=_USER_ID_MAX, required=False)


class EventsQuerySerializer(serializers.Serializer):
    """The query of ``GET services/<name>/<start_id>/events``."""

    # ASCII digits only (str.isdigit takes "²"), and no more than a bigint holds.
    after = serializers.RegexField(
        r"^[0-9]{1,18}\Z",
        required=False,
        trim_whitespace=False,
        error_messages={"invalid": "Must be an event id (an integer)."},
    )


class ServerSerializer(serializers.Serializer):
    """One entry of ``GET services/``. Reads the dicts of server_list_for_hub."""

    name = serializers.CharField()
    start_id = serializers.CharField()
    # Dates in UTC ("...Z", the contract's), named once here: DRF would otherwise look up the
    # active time zone for every date of every listed server (a quarter of a long list's CPU).
    start_date = serializers.DateTimeField(source="created_at", default_timezone=UTC)
    end_date = serializers.DateTimeField(source="end_at", allow_null=True, default_timezone=UTC)
    last_update = serializers.DateTimeField(source="updated_at", default_timezone=UTC)
    jupyterhub = serializers.CharField(source="hub_name")
    jupyterhub_userid = serializers.CharField(source="user_id")
    state_stored = serializers.BooleanField()
    start_pending = serializers.BooleanField()
    stop_pending = serializers.BooleanField()
    flavor = serializers.CharField(source="flavor_name", allow_null=True, default=None)
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

    # Instance: the Server. (outposts/api/direct/reads.py builds the same shape itself.)
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
