"""The pure request builders and answer parsers, checked against the shared contract examples.

The API tests check the portal against the same files, so the two sides cannot drift.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from outpost_hubclient.config import parse_outposts
from outpost_hubclient.wire import (
    FlavorOffer,
    OutpostState,
    events_url,
    free_slots,
    make_authentication,
    make_authorization,
    make_forwarded_env,
    make_headers,
    make_start_body,
    make_state,
    normalize_base_url,
    parse_events,
    parse_flavors,
    parse_outpost_state,
    parse_poll,
    parse_refusal,
    parse_runtime,
    service_address_to_url,
    service_url,
    services_url,
    userflavors_url,
)

from tests.support.contract import contract

BASE = "http://portal.example.org/outposts/local/"
STOCK_EXAMPLE = Path("/work/shared/spec/examples/stock-hub-start-request.json")


def path_of(url: str) -> str:
    """A URL relative to the Outpost base, as the contract examples write paths."""
    assert url.startswith(BASE)
    return url[len(BASE) :]


# --- URLs ------------------------------------------------------------------------------------


def test_urls_match_the_contract_paths():
    # given the start ids of the contract examples
    lab_id = "7c1d0a52b8e54f0a9c3e1f2a4b6d8e90"

    # then each URL builder gives the example's path
    assert path_of(services_url(BASE)) == contract("start-async.hubclient")["request"]["path"]
    assert path_of(events_url(BASE, "lab", lab_id, 0)) == contract("events")["request"]["path"]
    assert path_of(service_url(BASE, "lab", lab_id)) == contract("stop-async")["request"]["path"]
    assert path_of(userflavors_url(BASE)) == contract("userflavors")["request"]["path"]
    user_path = contract("userflavors-user")["request"]["path"]
    assert path_of(userflavors_url(BASE, user_id=7)) == user_path


def test_default_server_empty_name_gives_a_double_slash():
    url = service_url(BASE, "", "ef39de15010a4d69a6f7db84a40b6815")

    assert path_of(url) == contract("poll-running")["request"]["path"]
    assert path_of(url) == "services//ef39de15010a4d69a6f7db84a40b6815"


def test_names_are_one_path_segment_whatever_they_contain():
    assert path_of(service_url(BASE, "../x", "1")) == "services/..%2Fx/1"
    assert path_of(service_url(BASE, "a b", "1")) == "services/a%20b/1"


@pytest.mark.parametrize(
    "given",
    ["http://portal.example.org/outposts/local", "http://portal.example.org/outposts/local///"],
)
def test_base_url_gets_exactly_one_trailing_slash(given):
    assert normalize_base_url(given) == BASE


@pytest.mark.parametrize("bad", ["portal/outposts/x/", "ftp://p/x/", "http://p/x/?a=1"])
def test_base_url_must_be_absolute_http(bad):
    with pytest.raises(ValueError, match="Outpost URL"):
        normalize_base_url(bad)


# --- headers and credentials -----------------------------------------------------------------


def test_basic_authorization_is_hub_name_and_secret():
    header = make_authorization(hub_name="hub1", secret="s3cret", api_key=None)

    assert header == "Basic " + base64.b64encode(b"hub1:s3cret").decode()


def test_an_api_key_is_sent_as_token():
    assert make_authorization(hub_name="hub1", secret="s", api_key="op_k") == "token op_k"


def test_start_headers_match_the_contract():
    headers = make_headers(authorization="token k", execution_async=True)

    expected = contract("start-async.hubclient")["request"]["headers"]
    assert {key: headers[key] for key in expected} == expected
    assert "execution-type" not in make_headers(authorization="token k")


def test_credentials_are_read_from_env_or_file_never_required_inline(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n")
    configs = parse_outposts(
        {
            "a": {"url": BASE, "secret_env": "A_SECRET"},
            "b": {"url": BASE, "api_key_file": str(secret_file)},
        },
        default_hub_name="hub1",
    )

    by_name = {config.name: config for config in configs}
    expected_a = "Basic " + base64.b64encode(b"hub1:from-env").decode()
    assert by_name["a"].authorization({"A_SECRET": "from-env"}) == expected_a
    assert by_name["b"].authorization({}) == "token from-file"
    with pytest.raises(ValueError, match="A_SECRET"):
        by_name["a"].authorization({})


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"secret_env": "X"}, "'url' is required"),
        ({"url": BASE}, "give a credential"),
        ({"url": BASE, "secret_env": "X", "sekret": "typo"}, "unknown keys"),
        ({"url": BASE, "secret_env": "X", "secret_file": "/f"}, "one source"),
    ],
)
def test_outposts_config_errors_name_the_outpost_and_the_problem(entry, problem):
    with pytest.raises(ValueError, match=problem) as error:
        parse_outposts({"hpc": entry}, default_hub_name="hub1")

    assert "'hpc'" in str(error.value)


def test_basic_auth_without_a_hub_name_is_a_config_error():
    with pytest.raises(ValueError, match="hub_name"):
        parse_outposts({"hpc": {"url": BASE, "secret_env": "X"}})


# --- start body ------------------------------------------------------------------------------


def test_make_start_body_builds_the_hubclient_example():
    # given what the hubclient's spawner knows for alice's server "lab"
    example = contract("start-async.hubclient")["request"]["body"]
    options = dict(example["user_options"])
    start_id = options.pop("start_id")

    # when
    body = make_start_body(
        name="lab",
        start_id=start_id,
        env=example["env"],
        user_options=options,
        authentication=make_authentication(user_name="alice", groups=["hpc"]),
    )

    # then it is the contract's request body
    assert body == example
    assert json.loads(json.dumps(body)) == body


def test_make_start_body_builds_the_recorded_stock_hub_request():
    # given the request a stock Hub sent (no flavor, no authentication, its misc)
    recorded = json.loads(STOCK_EXAMPLE.read_text())
    recorded.pop("_about")

    body = make_start_body(
        name=recorded["name"],
        start_id=recorded["user_options"]["start_id"],
        env=recorded["env"],
        user_options={},
        misc=recorded["misc"],
    )

    assert body == recorded


def test_make_start_body_leaves_empty_choices_out():
    body = make_start_body(
        name="", start_id="1", env={}, user_options={"flavor": "small", "project": ""}
    )

    assert body["user_options"] == {"flavor": "small", "start_id": "1"}
    assert body["certs"] == {} and "authentication" not in body


def test_make_start_body_copies_only_system_flavor_and_project():
    body = make_start_body(
        name="",
        start_id="1",
        env={},
        user_options={
            "outpost": "local",
            "flavor": "small",
            "project": "p1",
            "cmd": "/bin/sh",
            "start_id": "not-this-one",
        },
    )

    assert body["user_options"] == {
        "outpost": "local",
        "flavor": "small",
        "project": "p1",
        "start_id": "1",
    }


def test_forwarded_env_keeps_only_jupyterhub_keys_as_strings():
    env = make_forwarded_env(
        {"PATH": "/hub/bin", "JUPYTERHUB_USER": "alice", "JUPYTER_X": 1, "LANG": "C"}, user_id=7
    )

    assert env == {"JUPYTERHUB_USER": "alice", "JUPYTER_X": "1", "JUPYTERHUB_USER_ID": "7"}


def test_authentication_takes_only_the_chosen_auth_state_keys():
    auth_state = {"groups": ["idp-group"], "email": "a@x", "access_token": "SECRET"}

    authentication = make_authentication(
        user_name="alice",
        groups=["hub-group"],
        auth_state=auth_state,
        auth_state_keys=["groups", "email"],
    )

    assert authentication == {"name": "alice", "groups": ["idp-group"], "email": "a@x"}


def test_state_is_small_and_versioned():
    assert make_state(outpost="local", start_id="abc") == {
        "version": 1,
        "outpost": "local",
        "start_id": "abc",
    }


# --- answers ---------------------------------------------------------------------------------


def test_refusal_message_is_the_portals_args0():
    answer = contract("start-refused")["response"]

    message = parse_refusal(answer["body"], code=answer["status"])

    assert message == "lab - Start with flavor huge not allowed. Allowed values for user: ['small']"


def test_refusal_falls_back_to_detail_then_to_the_status():
    assert parse_refusal(contract("poll-unknown")["response"]["body"]) == "Item not found"
    assert parse_refusal(None, code=502) == "The Outpost answered HTTP 502."
    assert parse_refusal({"args": []}, code=419) == "The Outpost answered HTTP 419."


def test_poll_answers():
    assert parse_poll(contract("poll-running")["response"]["body"]) is None
    assert parse_poll(contract("poll-ended")["response"]["body"]) == 0
    with pytest.raises(ValueError):
        parse_poll({"status": "running"})
    with pytest.raises(ValueError):
        parse_poll([])


def test_events_answer_of_the_contract():
    page = parse_events(contract("events")["response"]["body"])

    assert [(event.id, event.progress, event.message) for event in page.events] == [
        (1, 10, "Start request accepted.")
    ]
    assert page.status == "requested"
    assert page.ready_address is None
    assert page.failure is None


def test_events_report_ready_address_and_failure():
    running = parse_events({"events": [], "status": "running", "service": "10.0.0.5:8888"})
    failed = parse_events(
        {
            "events": [{"id": 4, "progress": 100, "message": "Job failed: OOM", "failed": True}],
            "status": "failed",
            "service": "",
        }
    )
    delayed = parse_events({"events": [], "status": "running", "service": ""})

    assert running.ready_address == "10.0.0.5:8888"
    assert failed.failure == "Job failed: OOM"
    assert delayed.ready_address is None  # running, but the tunnel is not there yet


def test_progress_event_html_is_built_from_the_text_not_taken_from_the_portal():
    page = parse_events(
        {
            "events": [
                {
                    "id": 1,
                    "progress": 150,
                    "message": "<img src=x onerror=alert(1)>",
                    "html_message": "<img src=x onerror=alert(1)>",
                }
            ],
            "status": "pending",
            "service": "",
        }
    )

    progress = page.events[0].as_progress()
    assert progress["html_message"] == "&lt;img src=x onerror=alert(1)&gt;"
    assert progress["progress"] == 100


def test_flavors_answer_with_free_slots():
    (small,) = parse_flavors(contract("userflavors")["response"]["body"])
    (same,) = parse_flavors(contract("flavors")["response"]["body"])

    assert (small.name, small.display_name, small.free) == ("small", "Small (1 CPU, 2 GB)", 19)
    assert (small.max_per_user, small.current_per_user, small.runtime_seconds) == (2, None, 7200)
    assert same == small


def test_flavors_answer_for_one_user_counts_their_own_servers():
    (small,) = parse_flavors(contract("userflavors-user")["response"]["body"])

    # the Hub has 19 left, the user 1 (maxPerUser 2, currentPerUser 1)
    assert (small.max, small.current, small.max_per_user, small.current_per_user) == (20, 1, 2, 1)
    assert (small.hub_free, small.user_free, small.free) == (19, 1, 1)


def test_absent_or_null_limits_mean_unlimited():
    (flavor,) = parse_flavors({"f": {"max": None, "maxPerUser": None, "currentPerUser": None}})

    assert (flavor.max, flavor.max_per_user, flavor.current_per_user) == (-1, -1, None)
    assert flavor.free is None


@pytest.mark.parametrize(
    ("offer", "free"),
    [
        (FlavorOffer("f", "F", max=20, current=1, max_per_user=2, current_per_user=1), 1),
        (FlavorOffer("f", "F", max=3, current=1, max_per_user=5, current_per_user=0), 2),
        (FlavorOffer("f", "F", max=-1, current=9, max_per_user=2, current_per_user=0), 2),
        (FlavorOffer("f", "F", max=-1, current=9, max_per_user=-1, current_per_user=4), None),
        (FlavorOffer("f", "F", max=4, current=1, max_per_user=1, current_per_user=3), 0),
        # no count per user (a stock Outpost service): max_per_user cannot be applied
        (FlavorOffer("f", "F", max=4, current=1, max_per_user=1), 3),
    ],
)
def test_free_is_what_the_user_could_really_take(offer, free):
    assert offer.free == free


@pytest.mark.parametrize(
    ("runtime", "seconds"),
    [
        ({"hours": 2}, 7200),
        ({"hours": 1, "minutes": 30}, 5400),
        ({"days": 1, "seconds": 5}, 86405),
        ({"weeks": 1}, 7 * 86400),
        ({"minutes": 1.5}, 90),
        (None, None),
        ({}, None),
        ({"hours": 0}, None),
        ({"hours": -1}, None),
        ({"fortnights": 1}, None),
        ({"hours": "2"}, None),
        ({"hours": True}, None),
        ("2h", None),
        ({"days": 10**10}, None),
    ],
)
def test_runtime_in_seconds_or_none_when_unreadable(runtime, seconds):
    assert parse_runtime(runtime) == seconds


@pytest.mark.parametrize("bad", [{"f": {"max": "many"}}, {"f": {"currentPerUser": [1]}}])
def test_unreadable_counts_are_an_error(bad):
    with pytest.raises((TypeError, ValueError)):
        parse_flavors(bad)


def test_outpost_state_from_the_flavor_answers_headers():
    # given the portal's escape of a message that is not Latin-1 (its FlavorsAnswerMixin)
    message = "Wartung bis Montag 08:00 – danke ☕"
    escaped = message.encode("unicode_escape").decode("ascii")

    state = parse_outpost_state({"outpost-state": "Draining", "OUTPOST-STATE-MESSAGE": escaped})

    assert state == OutpostState("draining", message)
    assert state.accepts_starts is False


@pytest.mark.parametrize(
    ("headers", "state", "accepts"),
    [
        ({}, OutpostState("active", ""), True),  # a stock Outpost service
        ({"Outpost-State": "active"}, OutpostState("active", ""), True),
        ({"Outpost-State": "disabled"}, OutpostState("disabled", ""), False),
        # not an escape the portal makes: shown as sent
        (
            {"Outpost-State": "draining", "Outpost-State-Message": "back soon \\x"},
            OutpostState("draining", "back soon \\x"),
            False,
        ),
        # a state this client does not know: the portal decides at the start
        ({"Outpost-State": "maintenance"}, OutpostState("maintenance", ""), True),
    ],
)
def test_outpost_states(headers, state, accepts):
    assert parse_outpost_state(headers) == state
    assert parse_outpost_state(headers).accepts_starts is accepts


def test_flavors_are_listed_highest_weight_first():
    offers = parse_flavors(
        {
            "a": {"display_name": "A", "weight": 1, "max": -1, "current": 0},
            "b": {"display_name": "B", "weight": 5, "max": -1, "current": 0},
        }
    )

    assert [offer.name for offer in offers] == ["b", "a"]


@pytest.mark.parametrize(
    ("maximum", "current", "free"),
    [(-1, 3, None), (20, 1, 19), (2, 2, 0), (2, 5, 0), (0, 0, 0)],
)
def test_free_slot_math(maximum, current, free):
    assert free_slots(maximum, current) == free


@pytest.mark.parametrize(
    ("address", "https", "url"),
    [
        ("127.0.0.1:51285", False, "http://127.0.0.1:51285"),
        ("node17.cluster:8888", True, "https://node17.cluster:8888"),
        ("[::1]:8888", False, "http://[::1]:8888"),
        ("https://jupyter.example.org:443/", False, "https://jupyter.example.org:443"),
        ("http://10.0.0.5:8888", True, "http://10.0.0.5:8888"),
    ],
)
def test_service_address_to_url(address, https, url):
    assert service_address_to_url(address, https=https) == url


def test_sync_start_answer_address_becomes_a_url():
    service = contract("start-sync.stock-hub")["response"]["body"]["service"]

    assert service_address_to_url(service) == "http://127.0.0.1:51285"


@pytest.mark.parametrize("bad", ["", "nonsense", "host:port", "/path"])
def test_unusable_address_is_an_error(bad):
    with pytest.raises(ValueError):
        service_address_to_url(bad)
