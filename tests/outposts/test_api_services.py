"""Start, poll, stop, list and events of servers, as a Hub sees them (api-contract.md §3-5)."""

import logging
from datetime import timedelta

import pytest
from django.db import connection

from outposts import spawner_settings
from outposts.models import Server
from tests.factories import FlavorFactory, HubFactory, ServerFactory, SpawnEventFactory
from tests.support.api import ASYNC, basic_auth, send, start_body

pytestmark = pytest.mark.django_db

SERVICES = "/outposts/local/services"


def start(client, body, headers=ASYNC):
    return send(client, "POST", SERVICES, body, headers=headers)


@pytest.fixture
def other_hub_client(outpost):
    from rest_framework.test import APIClient

    HubFactory(name="hub2", outposts=[outpost])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_auth("hub2"))
    return client


# --- start ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SERVICES, SERVICES + "/"])
def test_async_start_answers_202_at_once(hub_client, outpost, path):
    # when a Hub starts a server in the background
    response = send(hub_client, "POST", path, start_body(start_id="abc"), headers=ASYNC)
    # then it gets an empty service and the server is requested
    assert response.status_code == 202
    assert response.json() == {"service": ""}
    server = Server.objects.get()
    assert (server.name, server.start_id, server.status) == ("lab", "abc", "requested")
    assert (server.user_id, server.user_name) == ("1", "user1")


@pytest.mark.parametrize(
    "setup_tunnel_url, waits",
    [("http://127.0.0.1:1/hub/api/users/setuptunnel/u", True), (None, False)],
)
def test_an_async_start_waits_for_a_set_up_tunnel_call_only_if_it_named_one(
    hub_client, outpost, setup_tunnel_url, waits
):
    # given a start whose env names a set-up-tunnel URL (stock Hub) or none (our hubclient)
    body = start_body()
    body["env"].pop("JUPYTERHUB_SETUPTUNNEL_URL", None)
    if setup_tunnel_url:
        body["env"]["JUPYTERHUB_SETUPTUNNEL_URL"] = setup_tunnel_url
    # when it starts in the background
    start(hub_client, body)
    # then the portal tells it the address later only if it asked where
    assert Server.objects.get().address_via_callback is waits


def test_start_id_moves_out_of_user_options_and_defaults_to_0(hub_client, outpost):
    outpost.allowed_user_options = ["image", "start_id"]
    outpost.save()
    env = start_body()["env"]
    start(hub_client, {"name": "a", "env": env, "user_options": {"start_id": "s9", "image": "x"}})
    start(hub_client, {"name": "b", "env": env, "user_options": {"image": "y"}})
    servers = {s.name: s for s in Server.objects.all()}
    assert (servers["a"].start_id, servers["a"].user_options) == ("s9", {"image": "x"})
    assert (servers["b"].start_id, servers["b"].user_options) == ("0", {"image": "y"})


def test_user_options_flavor_wins_over_the_top_level_flavor(hub_client, outpost):
    small = FlavorFactory(outpost=outpost, name="small")
    large = FlavorFactory(outpost=outpost, name="large")
    body = start_body(start_id="a", flavor="small")
    body["user_options"]["flavor"] = "large"
    start(hub_client, body)
    start(hub_client, start_body(start_id="b", flavor="small"))
    assert Server.objects.get(start_id="a").flavor == large
    assert Server.objects.get(start_id="b").flavor == small


def test_env_values_become_strings(hub_client, outpost):
    body = start_body()
    body["env"].update(
        {"JUPYTER_PORT": 8888, "JUPYTER_DEBUG": True, "JUPYTER_EMPTY": None, "JUPYTER_RATIO": 0.5}
    )
    assert start(hub_client, body).status_code == 202
    env = Server.objects.get().env
    assert [env[f"JUPYTER_{key}"] for key in ("PORT", "DEBUG", "EMPTY", "RATIO")] == [
        "8888",
        "true",
        "",
        "0.5",
    ]


def test_a_repeated_start_creates_no_second_server(hub_client, outpost):
    first = start(hub_client, start_body(start_id="same"))
    again = start(hub_client, start_body(start_id="same"))
    assert (first.status_code, again.status_code) == (202, 202)
    assert Server.objects.count() == 1


def test_another_users_start_with_the_same_name_and_start_id_is_refused_not_given_the_server(
    hub_client, outpost
):
    # given user 1's running server, with its address
    assert start(hub_client, start_body(start_id="same", user_id="1")).status_code == 202
    Server.objects.update(status=Server.Status.RUNNING, address="10.0.0.7:8888")
    # when user 2 of the same Hub starts a server of the same name and start_id
    response = start(hub_client, start_body(start_id="same", user_id="2"))
    # then the start is refused, naming why, and nothing of user 1's server is given away
    assert response.status_code == 419
    assert "already another user's server" in response.json()["args"][0]
    assert "10.0.0.7" not in response.content.decode()
    assert Server.objects.get().user_id == "1"


@pytest.mark.parametrize("body", [{"stop_pending": True}, {"state": {"pid": 1}}])
def test_bookkeeping_fields_in_a_body_cannot_bypass_a_flavor_limit(hub_client, outpost, body):
    # given a flavor with room for one server, taken
    FlavorFactory(outpost=outpost, name="small", max=1)
    start(hub_client, start_body(start_id="first"))
    # when a Hub sends bookkeeping fields the existing service would have trusted
    response = start(
        hub_client, start_body(start_id="second", end_date="2000-01-01T00:00:00Z", **body)
    )
    # then it is refused as any other start, and nothing of it was stored
    assert response.status_code == 419
    assert response.json()["args"] == [
        "lab - Start with small for hub1 not allowed. Maximum (1) already reached."
    ]
    first = Server.objects.get()
    assert (first.stop_requested_at, first.end_at, first.spawner_state) == (None, None, None)


def assert_refused(response, message: str) -> None:
    """The stock Hub's error shape, with the contract's message and no traceback."""
    assert response.status_code == 419
    assert response.json() == {
        "module": "outposts.errors",
        "class": "StartRefused",
        "traceback": "",
        "args": [message],
        "kwargs": {},
        "detail": message,
    }


def test_refused_starts_answer_419_with_the_contract_messages(hub_client, outpost):
    # given a flavor limited to one per user, and an Outpost-wide limit of two per user
    outpost.max_servers_per_user = 2
    outpost.save()
    FlavorFactory(outpost=outpost, name="small", max_per_user=1, weight=1)
    FlavorFactory(outpost=outpost, name="large", weight=0)
    # when user 1 has two servers and asks for a third
    start(hub_client, start_body(name="a", start_id="1"))
    start(hub_client, {**start_body(name="b", start_id="2"), "flavor": "large"})
    assert_refused(
        start(hub_client, start_body(name="c", start_id="3")),
        "c - User with user id 1 of hub1 has reached the maximum limit of services (2)",
    )
    # when user 2 asks for a flavor that does not exist
    assert_refused(
        start(hub_client, {**start_body(name="d", start_id="4", user_id="2"), "flavor": "huge"}),
        "d - Start with flavor huge not allowed. Allowed values for user: ['large', 'small']",
    )
    # when user 1, below the Outpost's limit again, asks for a second "small"
    Server.objects.filter(name="b").update(status=Server.Status.STOPPED)
    assert_refused(
        start(hub_client, start_body(name="e", start_id="5")),
        "e - Start with flavor small not allowed. Each user may only start 1 of small",
    )


def test_a_draining_outpost_refuses_starts(hub_client, outpost):
    outpost.state = "draining"
    outpost.save()
    response = start(hub_client, start_body())
    assert response.status_code == 419
    assert response.json()["args"] == ["lab - Outpost local is draining and accepts no starts."]


def test_in_debug_mode_the_error_carries_a_traceback(hub_client, outpost, settings):
    settings.DEBUG = True
    FlavorFactory(outpost=outpost, name="small")
    response = start(hub_client, start_body(flavor="huge"))
    assert response.status_code == 419
    assert "StartRefused" in response.json()["traceback"]


def test_only_allow_listed_misc_keys_are_stored(hub_client, outpost):
    # given an Outpost whose admin allows Hubs to choose the image only
    outpost.allowed_overrides = ["image"]
    outpost.save()
    # when a stock Hub sends its misc keys and an image
    misc = {"image": "jupyter/minimal", "port": 51285, "ip": "0.0.0.0", "cmd": ["sh"]}
    start(hub_client, start_body(misc=misc))
    # then only the image is kept
    assert Server.objects.get().overrides == {"image": "jupyter/minimal"}


def test_an_override_value_the_outpost_does_not_allow_refuses_the_start(hub_client, outpost):
    # given a Kubernetes Outpost that lets Hubs choose images of one registry only
    outpost.spawner_class = "kubespawner.KubeSpawner"
    outpost.allowed_overrides = ["image", "default_url"]
    outpost.allowed_override_values = {"image": ["quay.io/jupyter/*"]}
    outpost.full_clean()
    outpost.save()
    # when a Hub asks for an image of that registry, another server for one elsewhere
    allowed = start(hub_client, start_body(misc={"image": "quay.io/jupyter/scipy-notebook"}))
    refused = start(
        hub_client,
        start_body(name="other", misc={"image": "evil.example/miner", "default_url": "/lab"}),
    )
    # then the first is admitted, the second refused naming the image, and nothing is held
    assert allowed.status_code == 202, allowed.content
    assert refused.status_code == 400
    assert refused.json()["errors"]["misc"] == [
        "image 'evil.example/miner' is not one this Outpost allows."
    ]
    assert list(Server.objects.values_list("name", "overrides")) == [
        ("lab", {"image": "quay.io/jupyter/scipy-notebook"})
    ]


def test_an_override_without_listed_values_takes_any_and_a_list_value_is_refused(
    hub_client, outpost
):
    outpost.allowed_overrides = ["image", "default_url"]
    outpost.allowed_override_values = {"image": ["quay.io/*"]}
    outpost.save()
    assert start(hub_client, start_body(misc={"default_url": "/anything"})).status_code == 202
    listed = start(hub_client, start_body(name="b", misc={"image": ["quay.io/x"]}))
    assert listed.status_code == 400


def test_a_start_that_sets_no_trait_never_loads_the_spawner_class(hub_client, outpost, monkeypatch):
    # Loading the class imports JupyterHub: over a second that held up every start a web
    # process served while its first one imported it (bench/README.md, seventh round).
    loaded = []
    load = spawner_settings.spawner_class_load

    def load_noted(dotted_path):
        loaded.append(dotted_path)
        return load(dotted_path)

    monkeypatch.setattr(spawner_settings, "spawner_class_load", load_noted)
    # given an Outpost that allow-lists an override
    outpost.allowed_overrides = ["image"]
    outpost.save()
    # when a Hub starts servers with misc keys the Outpost does not list, and with none
    for name, misc in (("a", {"port": 51285, "cmd": ["sh"]}), ("b", {})):
        assert start(hub_client, start_body(name=name, misc=misc)).status_code == 202
    # then no class was loaded for them; a listed key's value is checked against the class
    assert loaded == []
    assert start(hub_client, start_body(name="c", misc={"image": "x"})).status_code == 202
    assert loaded == [outpost.spawner_class]


def raw_row(server: Server) -> str:
    """Every column of the server's row as the database holds it, as one string."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM outposts_server WHERE id = %s", [server.pk])
        return repr(cursor.fetchone())


def test_certs_are_never_stored(hub_client, outpost):
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    body = start_body(
        certs={"keyfile": pem, "certfile": "CERT-PEM-TEXT", "cafile": "CA-PEM-TEXT"},
        internal_trust_bundles={"hub-ca": "HUB-CA-PEM-TEXT"},
    )
    assert start(hub_client, body).status_code == 202
    row = raw_row(Server.objects.get())
    for text in ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw", "CERT-PEM", "CA-PEM", "HUB-CA-PEM"):
        assert text not in row


def test_env_is_stored_encrypted(hub_client, outpost):
    body = start_body()
    body["env"]["JUPYTERHUB_API_TOKEN"] = "tok-0123456789abcdef"
    start(hub_client, body)
    server = Server.objects.get()
    assert server.env["JUPYTERHUB_API_TOKEN"] == "tok-0123456789abcdef"  # readable with the key
    assert "tok-0123456789abcdef" not in raw_row(server)  # and only with it


def test_a_name_with_dots_and_slashes_is_refused(hub_client, outpost, tmp_path, monkeypatch):
    # given the portal working in an empty folder
    monkeypatch.chdir(tmp_path)
    # when a Hub names its server like a path out of a folder
    response = start(hub_client, start_body(name="../../x"))
    # then the name breaks the character rule: nothing is started, no file appeared near
    assert response.status_code == 400
    assert "name: A server name has ASCII letters" in response.json()["detail"]
    assert not Server.objects.exists()
    assert list(tmp_path.parent.parent.glob("x")) == []


@pytest.mark.parametrize(
    ("raw", "body", "field"),
    [
        ('{"name": "x", ', None, "JSON parse error"),
        (None, [{"name": "x"}], "Expected a dictionary"),
        (None, "name", "Expected a dictionary"),
        (None, {"name": "x", "env": ["A=1"]}, "env"),
        (None, {"name": "x", "user_options": "gpu"}, "user_options"),
        (None, {"name": "x", "misc": 5}, "misc"),
        (None, {"name": "x", "certs": {"keyfile": 1}}, "certs"),
        (None, {"env": {}}, "name"),
        (None, {"name": 5}, "name"),
        (None, {"name": None}, "name"),
        (None, {"name": "x", "flavor": ["small"]}, "flavor"),
        (None, {"name": "x", "user_options": {"start_id": ["a"]}}, "start_id"),
        (None, {"name": "x", "user_options": {"flavor": 3}}, "flavor"),
        (None, {"name": "x" * 300}, "name"),
        (None, {"name": "x", "env": {"JUPYTERHUB_USER_ID": "1" * 100}}, "JUPYTERHUB_USER_ID"),
    ],
)
def test_malformed_starts_answer_400_with_a_clear_message(hub_client, outpost, raw, body, field):
    # when a body is not JSON, not an object, or has fields of the wrong type
    response = send(hub_client, "POST", SERVICES, body, headers=ASYNC, raw=raw)
    # then the answer says what is wrong, and nothing was started
    assert response.status_code == 400
    assert field in response.json()["detail"]
    assert not Server.objects.exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JUPYTERHUB_USER_ID": "1"}, "env: JUPYTERHUB_USER (the Hub user's name) is required."),
        ({"JUPYTERHUB_USER": "", "JUPYTERHUB_USER_ID": "1"}, "JUPYTERHUB_USER (the Hub user's"),
        ({"JUPYTERHUB_USER": "ada"}, "env: JUPYTERHUB_USER_ID (the Hub user's id) is required"),
        ({"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "ada"}, "must be a number."),
        ({"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "-1"}, "must be a number."),
        ({"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "²"}, "must be a number."),
        ({}, "JUPYTERHUB_USER (the Hub user's name) is required."),
    ],
)
def test_a_start_without_a_hub_user_answers_400(hub_client, outpost, env, message):
    # when a start names no Hub user, or no numeric user id
    response = start(hub_client, {"name": "lab", "env": env})
    # then it is refused as malformed: per-user limits could not tell such users apart
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not Server.objects.exists()


@pytest.mark.parametrize(
    "env", [{"JUPYTERHUB_USER": "ada"}, {"JUPYTERHUB_USER_ID": "1"}, {"JUPYTERHUB_USER_ID": "x"}]
)
@pytest.mark.parametrize("headers", [ASYNC, {}], ids=["async", "sync"])
def test_the_service_refuses_a_start_without_a_hub_user_with_the_same_400(
    hub_client, outpost, monkeypatch, env, headers
):
    # given the answer the Hub gets while the serializer reports the missing user
    expected = start(hub_client, {"name": "lab", "env": env}, headers=headers)
    # when only server_start checks it, as it does for every caller that is not the API
    monkeypatch.setattr("outposts.api.serializers.start_env_problem", lambda env: None)
    response = start(hub_client, {"name": "lab", "env": env}, headers=headers)
    # then the service's refusal reaches the Hub as the very same 400
    assert response.status_code == expected.status_code == 400
    assert response.json() == expected.json()
    assert not Server.objects.exists()


def test_a_numeric_user_id_may_come_as_a_number(hub_client, outpost):
    # when a Hub sends the user id as a JSON number
    response = start(
        hub_client, {"name": "lab", "env": {"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": 7}}
    )
    # then it is accepted as that id
    assert response.status_code == 202
    assert Server.objects.get().user_id == "7"


def test_an_unexpected_error_is_logged_and_answered_without_internals(
    hub_client, outpost, monkeypatch, caplog
):
    # given a service that fails in a way nobody planned for
    def explode(**kwargs):
        raise RuntimeError("connection to db-internal.example:5432 failed")

    monkeypatch.setattr("outposts.services.server_start", explode)
    # when a Hub starts a server
    with caplog.at_level(logging.ERROR):
        response = start(hub_client, start_body())
    # then the Hub gets a safe error and the log has the details
    assert response.status_code == 500
    assert "db-internal" not in response.content.decode()
    assert response.json()["traceback"] == ""
    assert "db-internal" in caplog.text


# --- poll ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exit_code", "expected"),
    [
        ("requested", None, None),
        ("pending", None, None),
        ("running", None, None),
        ("stopping", None, None),
        ("unknown", None, None),
        ("stopped", None, 0),
        ("stopped", 3, 3),
        ("failed", None, 1),
        ("failed", 137, 137),
    ],
)
def test_poll_answers_from_the_record(hub_client, hub, outpost, status, exit_code, expected):
    ServerFactory(
        hub=hub, outpost=outpost, name="lab", start_id="s1", status=status, exit_code=exit_code
    )
    response = hub_client.get(SERVICES + "/lab/s1?collect_logs=true")
    assert response.status_code == 200
    assert response.json() == {"status": expected, "logs": []}


@pytest.mark.parametrize(
    ("path", "start_id"),
    [
        ("/services//s1", "s1"),
        ("/services//s1/", "s1"),
        ("/services/", None),  # the list, not a poll
        ("/services//", "0"),
        ("/services/lab", "0"),
        ("/services/lab/", "0"),
        ("/services/lab/s1", "s1"),
        ("/services/lab/s1/", "s1"),
    ],
)
def test_poll_paths(hub_client, hub, outpost, path, start_id):
    # given the default (unnamed) server and a named one, with start_ids s1 and 0
    for name in ("", "lab"):
        for sid in ("s1", "0"):
            ServerFactory(
                hub=hub,
                outpost=outpost,
                name=name,
                start_id=sid,
                status="stopped",
                exit_code=int(sid == "s1") + 10 * int(name == "lab"),
            )
    response = hub_client.get("/outposts/local" + path)
    assert response.status_code == 200
    if start_id is None:
        assert isinstance(response.json(), list)
        return
    name = "lab" if "lab" in path else ""
    expected = int(start_id == "s1") + 10 * int(name == "lab")
    assert response.json()["status"] == expected


def test_another_hubs_server_is_invisible(hub_client, other_hub_client, hub, outpost):
    # given both Hubs have a server with the same name and start_id
    ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1", user_id="1")
    theirs = ServerFactory(
        hub=HubFactory(name="hub2"), outpost=outpost, name="lab", start_id="s1", user_id="1"
    )
    ServerFactory(hub=theirs.hub, outpost=outpost, name="only-theirs", start_id="s2")
    # then this Hub lists only its own
    listed = hub_client.get(SERVICES + "/").json()
    assert [(s["name"], s["jupyterhub"]) for s in listed] == [("lab", "hub1")]
    # and cannot see or stop the other Hub's
    assert hub_client.get(SERVICES + "/only-theirs/s2").status_code == 404
    assert hub_client.delete(SERVICES + "/only-theirs/s2").status_code == 404
    assert hub_client.get(SERVICES + "/only-theirs/s2/events").status_code == 404
    # while deleting its own leaves theirs alone
    assert send(hub_client, "DELETE", SERVICES + "/lab/s1", headers=ASYNC).status_code == 202
    theirs.refresh_from_db()
    assert (theirs.removed_at, theirs.stop_requested_at) == (None, None)
    assert other_hub_client.get(SERVICES + "/lab/s1").json() == {"status": None, "logs": []}


def test_poll_of_an_unknown_server_answers_404(hub_client, outpost):
    response = hub_client.get(SERVICES + "/nothing/0")
    assert response.status_code == 404
    assert response.json() == {"detail": "Item not found"}


# --- stop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/services//s1", "/services//s1/"])
def test_async_stop_of_the_default_server(hub_client, hub, outpost, path):
    # given the user's default (unnamed) server runs
    server = ServerFactory(hub=hub, outpost=outpost, name="", start_id="s1")
    # when the Hub deletes it in the background
    response = send(hub_client, "DELETE", "/outposts/local" + path, headers=ASYNC)
    # then it is stopping, gone for the Hub, and kept as history
    assert response.status_code == 202
    assert response.json() == {}
    server.refresh_from_db()
    assert server.status == "stopping" and server.removed_at is not None
    assert hub_client.get("/outposts/local/services//s1").status_code == 404
    assert hub_client.get(SERVICES + "/").json() == []


def test_sync_stop_answers_200_with_logs_once_the_wait_bound_passes(
    hub_client, hub, outpost, short_sync_wait
):
    ServerFactory(hub=hub, outpost=outpost, name="", start_id="s1")
    response = hub_client.delete("/outposts/local/services//s1?collect_logs=true")
    assert response.status_code == 200
    assert response.json() == {"logs": []}


def test_stopping_a_pending_start_cancels_it(hub_client, outpost):
    # given a start the portal has not carried out yet
    start(hub_client, start_body(start_id="s1"))
    # when the Hub deletes it
    response = send(hub_client, "DELETE", SERVICES + "/lab/s1", headers=ASYNC)
    # then the start is marked to be cancelled (its task ends whatever it made) and is gone
    assert response.status_code == 202
    server = Server.objects.get()
    assert server.stop_requested_at is not None and server.removed_at is not None
    assert hub_client.get(SERVICES + "/lab/s1").status_code == 404


def test_a_second_delete_answers_404(hub_client, hub, outpost):
    ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    assert send(hub_client, "DELETE", SERVICES + "/lab/s1", headers=ASYNC).status_code == 202
    assert send(hub_client, "DELETE", SERVICES + "/lab/s1", headers=ASYNC).status_code == 404


# --- list ----------------------------------------------------------------------------------


def test_list_shows_active_servers_with_their_bookkeeping(hub_client, hub, outpost):
    flavor = FlavorFactory(outpost=outpost, name="small")
    running = ServerFactory(
        hub=hub, outpost=outpost, flavor=flavor, name="a", user_id="7", spawner_state={"pid": 42}
    )
    running.end_at = running.created_at + timedelta(hours=2)
    running.save()
    ServerFactory(hub=hub, outpost=outpost, flavor=None, name="b", status="requested")
    ServerFactory(
        hub=hub, outpost=outpost, name="c", status="stopping", stop_requested_at=running.created_at
    )
    ServerFactory(hub=hub, outpost=outpost, name="ended", status="stopped")
    listed = {item["name"]: item for item in hub_client.get(SERVICES).json()}
    assert set(listed) == {"a", "b", "c"}
    a = listed["a"]
    assert a["jupyterhub"] == "hub1" and a["jupyterhub_userid"] == "7"
    assert (a["state_stored"], a["start_pending"], a["stop_pending"]) == (True, False, False)
    assert (a["flavor"], a["status"]) == ("small", "running")
    assert a["end_date"].startswith(running.end_at.strftime("%Y-%m-%dT%H:%M"))
    b, c = listed["b"], listed["c"]
    assert (b["state_stored"], b["start_pending"], b["end_date"], b["flavor"]) == (
        False,
        True,
        None,
        None,
    )
    assert c["stop_pending"] is True


# --- events --------------------------------------------------------------------------------


def test_events_in_order_escaped_and_after_an_id(hub_client, hub, outpost):
    server = ServerFactory(
        hub=hub, outpost=outpost, name="", start_id="s1", status="pending", address=""
    )
    first = SpawnEventFactory(server=server, progress=10, message="Queued")
    SpawnEventFactory(server=server, progress=50, message="<b>node</b> & co")
    url = "/outposts/local/services//s1/events"
    everything = hub_client.get(url).json()
    assert everything["status"] == "pending" and everything["service"] == ""
    assert [e["message"] for e in everything["events"]] == ["Queued", "<b>node</b> & co"]
    assert everything["events"][1]["html_message"] == "&lt;b&gt;node&lt;/b&gt; &amp; co"
    newer = hub_client.get(f"{url}/?after={first.pk}").json()
    assert [e["progress"] for e in newer["events"]] == [50]
    assert hub_client.get(f"{url}?after=x").status_code == 400


# --- flavors -------------------------------------------------------------------------------


def test_flavors_with_current_counts(hub_client, hub, outpost):
    # given no flavors, the answer is an empty object
    assert hub_client.get("/outposts/local/flavors").json() == {}
    # given a flavor with one active and one ended server
    small = FlavorFactory(outpost=outpost, name="small", max=None, max_per_user=3)
    ServerFactory(hub=hub, outpost=outpost, flavor=small)
    ServerFactory(hub=hub, outpost=outpost, flavor=small, status="failed")
    flavors = hub_client.get("/outposts/local/flavors/").json()
    assert flavors["small"]["current"] == 1
    assert (flavors["small"]["max"], flavors["small"]["maxPerUser"]) == (-1, 3)
    assert flavors["small"]["runtime"] == {"hours": 2}


@pytest.mark.parametrize("path", ["/outposts/local/userflavors", "/outposts/local/userflavors/"])
def test_userflavors_answers_like_flavors_for_an_object_body(hub_client, outpost, path):
    FlavorFactory(outpost=outpost, name="small")
    body = {"name": "alice", "groups": ["hpc"]}
    response = send(hub_client, "POST", path, body)
    assert response.status_code == 200
    assert response.json() == hub_client.get("/outposts/local/flavors/").json()
    assert send(hub_client, "POST", path, ["alice"]).status_code == 400
