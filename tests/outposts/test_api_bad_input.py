"""Bad input gets a clear 4xx JSON answer, never a 500, and never a traceback in the log
(issue 11, item 2; docs/api.md, "Characters and sizes")."""

import io
import json
import logging

import pytest
from rest_framework.test import APIRequestFactory

from outposts.api.exceptions import exception_handler
from outposts.models import Server
from tests.factories import ServerFactory, SpawnEventFactory
from tests.support.api import ASYNC, BASE, basic_auth, send, start_body

pytestmark = pytest.mark.django_db

SERVICES = BASE + "services"


@pytest.fixture
def log(caplog):
    """Every log record of the request, down to DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_4xx_json(response, status: int, *, log, mentions: str = "") -> dict:
    """The answer is ``status`` with a JSON body whose detail mentions ``mentions``, and no
    log record carries a traceback."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert mentions in body["detail"]
    assert [record for record in log.records if record.exc_info] == []
    assert "Traceback" not in log.text
    return body


def start(client, body, **kwargs):
    return send(client, "POST", SERVICES, body, headers=ASYNC, **kwargs)


# --- size and depth --------------------------------------------------------------------------


def test_a_body_over_the_limit_answers_413(hub_client, outpost, settings, log):
    # given a portal that takes bodies up to 10 kB
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = start_body()
    body["user_options"]["note"] = "x" * 20_000
    # when a Hub sends more
    response = start(hub_client, body)
    # then it is told so, and nothing was started
    assert_4xx_json(response, 413, log=log, mentions="larger than 10000 bytes")
    assert not Server.objects.exists()


def test_a_body_over_the_default_limit_answers_413(hub_client, outpost, log):
    # when a Hub sends a body over 2.5 MB (the default), as the review did
    body = start_body()
    body["user_options"]["note"] = "x" * 2_700_000
    response = start(hub_client, body)
    # then
    assert_4xx_json(response, 413, log=log, mentions="larger than 2621440 bytes")


def test_userflavors_over_the_limit_answers_413(hub_client, outpost, settings, log):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    response = send(hub_client, "POST", BASE + "userflavors", {"name": "a" * 2_000})
    assert_4xx_json(response, 413, log=log, mentions="larger than")


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
def test_json_nested_too_deep_answers_400(hub_client, outpost, log, depth):
    # when a body nests deeper than the limit (32), as deep as the review's 1,000 and beyond
    raw = '{"name": "lab", "user_options": ' + "[" * depth + "]" * depth + "}"
    response = start(hub_client, None, raw=raw)
    # then it is malformed JSON to the portal, and nothing was started
    assert_4xx_json(response, 400, log=log, mentions="nested more than 32 levels deep")
    assert not Server.objects.exists()


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_accepted(hub_client, outpost, log):
    # given a body exactly 32 levels deep, with many brackets inside a string
    body = start_body()
    inner: object = "[[[[{{{{" * 100
    for _ in range(30):  # the body is level 1, user_options level 2
        inner = [inner]
    body["user_options"]["deep"] = inner
    # when it is sent
    response = start(hub_client, body)
    # then it is started as any other
    assert response.status_code == 202, response.json()


def test_the_depth_limit_is_a_setting(hub_client, outpost, settings, log):
    settings.API_MAX_JSON_DEPTH = 2
    body = start_body()  # user_options is level 2
    body["user_options"]["deep"] = {"x": 1}
    assert_4xx_json(start(hub_client, body), 400, log=log, mentions="nested more than 2 levels")


def test_a_number_out_of_range_answers_400(hub_client, outpost, log):
    raw = json.dumps(start_body()).replace('"user_options": {', '"user_options": {"n": 1e400, ')
    response = start(hub_client, None, raw=raw)
    assert_4xx_json(response, 400, log=log, mentions="out of range")
    assert not Server.objects.exists()


# --- control characters ----------------------------------------------------------------------


def _with(path: str, value: object) -> dict:
    """A start body with ``value`` at ``path`` ("env.KEY", "user_options.KEY", "name", ...)."""
    body = start_body()
    field, _, key = path.partition(".")
    if key:
        body.setdefault(field, {})[key] = value
    else:
        body[field] = value
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_with("env.JUPYTERHUB_API_TOKEN", "tok\x00en"), "env"),
        (_with("env.JUPYTERHUB_USER", "ada\x00"), "env"),
        (_with("env.JUPYTERHUB_API_URL", "http://hub/\nforged"), "env"),
        (_with("env.JUPYTERHUB_\x00", "x"), "env"),
        (_with("user_options.start_id", "s\x001"), "user_options"),
        (_with("user_options.image", "lab\x00"), "user_options"),
        (_with("user_options.image", "lab\x1b[31m"), "user_options"),
        (_with("user_options.ke\x00y", "x"), "user_options"),
        (_with("user_options.ke\ny", "x"), "user_options"),
        (_with("user_options.nested", {"list": ["ok", "bad\x00"]}), "user_options"),
        (_with("misc.image", "x\x00"), "misc"),
        (_with("authentication.name", "x\x00"), "authentication"),
        (_with("certs.keyfile", "PEM\x00"), "certs"),
        (_with("flavor", "small\x00"), "flavor"),
        (_with("name", "lab\x00"), "name"),
        (_with("name", "lab\n"), "name"),
    ],
)
def test_control_characters_in_a_start_answer_400(hub_client, outpost, log, body, field):
    # when a start carries a NUL (PostgreSQL cannot store it) or another control character
    response = start(hub_client, body)
    # then it is refused, naming the field, and nothing was written
    answer = assert_4xx_json(response, 400, log=log, mentions=f"{field}")
    assert field in answer["errors"]
    assert not Server.objects.exists()


def test_line_breaks_and_tabs_in_free_text_are_accepted(hub_client, outpost):
    # a spawn form's text area sends line breaks; PEM certificates have them too
    body = _with("user_options.note", "line one\r\nline two\tend")
    body["certs"] = {"certfile": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}
    assert start(hub_client, body).status_code == 202


@pytest.mark.parametrize(
    ("method", "path"),
    [
        (method, path)
        for method in ("GET", "DELETE")
        for path in ("services/%00", "services/lab/s%001", "services/lab%0A/s1")
    ]
    + [("GET", "services/%00/s1/events"), ("GET", "services/lab/s1%1B/events")],
)
def test_control_characters_in_a_path_answer_400(hub_client, hub, outpost, log, method, path):
    # given a server the Hub may poll
    ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    # when the path names it with a NUL or a line break
    response = send(hub_client, method, BASE + path)
    # then
    assert_4xx_json(response, 400, log=log, mentions="control character")
    assert Server.objects.get().removed_at is None


@pytest.mark.parametrize("name", ["hub1\x00", "\x00"])
def test_a_nul_in_the_hub_name_answers_401(outpost, hub, log, name):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_auth(name))
    response = send(client, "GET", SERVICES)
    assert_4xx_json(response, 401, log=log, mentions="Invalid Hub credentials")


def test_a_nul_in_a_userflavors_body_answers_400(hub_client, outpost, log):
    body = {"name": "ada", "project": "p\x00"}
    response = send(hub_client, "POST", BASE + "userflavors", body)
    assert_4xx_json(response, 400, log=log, mentions="control character")


# --- server names and start_ids --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "start_id"),
    [
        ("lab", "a/b"),
        ("lab", "../x"),
        ("lab", ".."),
        ("lab", "a b"),
        ("lab", "a?b"),
        ("lab", "a#b"),
        ("lab", "a%2Fb"),
        ("lab", "é"),
        ("a/b", "s1"),
        ("..", "s1"),
        ("lab?x", "s1"),
        ("my lab", "s1"),
    ],
)
def test_names_and_start_ids_outside_the_character_rule_answer_400(
    hub_client, outpost, log, name, start_id
):
    # when a start names its server or start_id with a character a URL path gives meaning to
    response = start(hub_client, start_body(name=name, start_id=start_id))
    # then it is refused with the rule, before anything is stored
    body = assert_4xx_json(response, 400, log=log, mentions="ASCII letters, digits and . _ ~ -")
    assert set(body["errors"]) <= {"name", "user_options"}
    assert not Server.objects.exists()


@pytest.mark.parametrize(
    ("name", "start_id"),
    [("", "0"), ("lab", "3f2a9c"), ("Lab_2.x~y-z", "A.b_c~d-9"), ("x" * 255, "1" * 255)],
)
def test_names_and_start_ids_within_the_rule_are_started_polled_and_stopped(
    hub_client, outpost, name, start_id
):
    # when a Hub starts a server whose name and start_id keep to the rule
    assert start(hub_client, start_body(name=name, start_id=start_id)).status_code == 202
    # then it can poll and stop it at the URL a stock Hub builds from them
    url = f"{SERVICES}/{name}/{start_id}"
    assert send(hub_client, "GET", url).json() == {"status": None, "logs": []}
    assert send(hub_client, "DELETE", url, headers=ASYNC).status_code == 202
    assert send(hub_client, "GET", url).status_code == 404


def test_a_numeric_start_id_keeps_working(hub_client, outpost):
    body = start_body()
    body["user_options"]["start_id"] = 7
    assert start(hub_client, body).status_code == 202
    assert Server.objects.get().start_id == "7"


def test_a_server_named_before_the_rule_can_still_be_polled(hub_client, hub, outpost):
    # given a server stored before the rule, with a name the rule now refuses
    ServerFactory(hub=hub, outpost=outpost, name="my lab", start_id="s1")
    # when the Hub polls it
    response = send(hub_client, "GET", SERVICES + "/my%20lab/s1")
    # then it is found as before
    assert response.status_code == 200


# --- events?after= ---------------------------------------------------------------------------


@pytest.mark.parametrize("after", ["²", "١", "-1", "1.0", " 1", "1e3", "9" * 19, "%00"])
def test_after_takes_ascii_digits_only(hub_client, hub, outpost, log, after):
    # given a server with an event
    server = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    SpawnEventFactory(server=server)
    # when a client asks for events after something that is no event id
    response = hub_client.get(f"{SERVICES}/lab/s1/events", {"after": after})
    # then
    body = assert_4xx_json(response, 400, log=log, mentions="after")
    assert body["errors"] == {"after": ["Must be an event id (an integer)."]}


def test_after_with_ascii_digits_answers_newer_events(hub_client, hub, outpost):
    server = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    first, second = SpawnEventFactory(server=server), SpawnEventFactory(server=server)
    response = hub_client.get(f"{SERVICES}/lab/s1/events", {"after": str(first.pk)})
    assert [event["id"] for event in response.json()["events"]] == [second.pk]


# --- unknown paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/outposts/local/nothing-here",
        "/outposts/local/services/lab/s1/events/more",
        "/outposts/local/flavors/x",
        "/outposts/local/userflavors%0A",
        "/outposts/not%20a%20slug/ping",
        "/outposts/",
        "/nothing-here",
        "/",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unknown_api_paths_answer_the_json_404(hub_client, outpost, log, path, method):
    # when a client asks for a path no endpoint has
    response = send(hub_client, method, path)
    # then it gets the API's own 404, not Django's HTML page
    assert response.status_code == 404
    assert response.json() == {"detail": "Item not found"}


# --- what is logged --------------------------------------------------------------------------


def test_a_line_break_in_a_path_does_not_forge_a_log_line(hub_client, outpost, log):
    # when a path carries an encoded line break followed by something that looks like a log line
    send(hub_client, "GET", BASE + "nothing%0A2026-01-01 ERROR portal forged")
    # then every line logged is one record's own, the break escaped
    messages = [record.getMessage() for record in log.records]
    assert any("nothing\\n2026-01-01" in message for message in messages), messages
    assert not [message for message in messages if "\n" in message]


def test_an_unexpected_error_logs_its_path_escaped(log):
    # given a request whose path holds a line break, failing with a bug
    request = APIRequestFactory().get("/outposts/local/x")
    request.path = "/outposts/local/x\nERROR forged line"
    # when the API's handler answers it
    response = exception_handler(RuntimeError("a bug"), {"request": request})
    # then the client gets the safe 500, and the one log line has the break escaped
    assert response.status_code == 500
    (record,) = [record for record in log.records if record.name == "outposts.api.exceptions"]
    assert record.getMessage() == "Unhandled error in GET /outposts/local/x\\nERROR forged line"


def test_a_bad_host_header_is_logged_as_one_line(client):
    # given the console handler of Django's security log, as settings.LOGGING sets it up
    (handler,) = [
        handler
        for handler in logging.getLogger("django.security").handlers
        if handler.get_name() == "console_one_line"
    ]
    written = io.StringIO()
    previous = handler.setStream(written)
    try:
        # when a request names a host the portal does not serve
        response = client.get(BASE + "ping", HTTP_HOST="evil.example")
    finally:
        handler.setStream(previous)
    # then it is refused, and the log has its one line, without a traceback
    assert response.status_code == 400
    assert "Invalid HTTP_HOST header: 'evil.example'" in written.getvalue()
    assert "Traceback" not in written.getvalue()
    assert written.getvalue().count("\n") == 1
