"""outposts/api/direct/: the common poll, list, flavors and userflavors are answered
without Django's request handling, with exactly the answers the Django API handler gives;
every other request goes on to that handler.

Each request goes twice through the real ASGI applications (asgiref's communicator stands in
for the web server): once through a direct app whose fallback is a spy around the Django API
handler, once through the Django API handler alone. The spy tells which path answered.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from outposts.api import serializers
from outposts.api.direct import app as direct_app
from outposts.api.direct import base as direct_base
from outposts.api.direct import direct_api
from outposts.api.direct import reads as direct_reads
from outposts.hubs import hub_api_key_create
from outposts.models import Hub, Server
from portal import compiled as compiled_module
from portal.asgi import api_application
from tests.factories import (
    HUB_SECRET,
    AllocationFactory,
    FlavorFactory,
    GrantFactory,
    HubFactory,
    HubPolicyFactory,
    MemberFactory,
    OutpostFactory,
    ProjectFactory,
    UserRuleFactory,
)
from tests.outposts.test_api_queries import TERMS_QUERIES
from tests.test_asgi import call, get, without

pytestmark = pytest.mark.django_db(transaction=True)


class Spy:
    """An ASGI app passing each request to the Django API handler, counting them."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await api_application(scope, receive, send)


@pytest.fixture
def fallback() -> Spy:
    return Spy()


@pytest.fixture(autouse=True)
def compiled_afresh(monkeypatch):
    """Each test compiles the direct queries itself: a query compiled by an earlier test
    would hide a mistake in how it is built."""
    monkeypatch.setattr(compiled_module, "_compiled", {})


@pytest.fixture(autouse=True)
def no_direct_failure(caplog):
    """A request the direct path hands on is one it chose to hand on, never one it failed."""
    yield
    failures = [r for r in caplog.get_records("call") if r.name == direct_app.log.name]
    assert failures == []


@pytest.fixture
def direct(fallback):
    return direct_api(api=fallback, middleware=settings.API_MIDDLEWARE)


@pytest.fixture
def servers(transactional_db) -> dict[str, Server]:
    default = OutpostFactory(slug="local", is_default=True)
    other = OutpostFactory(slug="other")
    ungranted = OutpostFactory(slug="ungranted")
    hub = HubFactory(name="hub1", outposts=[default, other])
    HubFactory(name="hub2", outposts=[default, other, ungranted])

    def server(outpost, name, start_id, **fields) -> Server:
        return Server.objects.create(
            hub=hub, outpost=outpost, name=name, start_id=start_id, user_id="1",
            user_name="u1", **fields,
        )  # fmt: skip

    return {
        "running": server(default, "lab", "s1", status=Server.Status.RUNNING),
        "default-name": server(default, "", "s2", status=Server.Status.PENDING),
        "stopped": server(other, "lab", "s3", status=Server.Status.STOPPED, exit_code=3),
        "failed": server(other, "lab", "s4", status=Server.Status.FAILED),
        "ungranted": Server.objects.create(
            hub=hub, outpost=ungranted, name="lab", start_id="s5", user_id="1", user_name="u1"
        ),
    }


def basic(hub: str = "hub1", secret: str = HUB_SECRET) -> dict[str, str]:
    credentials = base64.b64encode(f"{hub}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", "X-Request-ID": "req-1"}


def both(direct: Any, path: str, headers: dict[str, str]) -> tuple[Any, Any]:
    headers = {"X-Request-ID": "req-1", **headers}  # else each path makes its own
    answer = get(direct, path, headers)
    django_answer = get(api_application, path, headers)
    return answer, django_answer


def same(answer: Any, django_answer: Any) -> bool:
    """Status, body and headers alike, Date aside."""
    return (
        answer[0] == django_answer[0]
        and answer[2] == django_answer[2]
        and without(answer[1], "date") == without(django_answer[1], "date")
    )


@pytest.mark.parametrize(
    "path, body",
    [
        ("/outposts/local/services/lab/s1", b'{"status":null,"logs":[]}'),
        ("/outposts/local/services/lab/s1/", b'{"status":null,"logs":[]}'),
        ("/services/lab/s1", b'{"status":null,"logs":[]}'),
        ("/services//s2", b'{"status":null,"logs":[]}'),
        ("/outposts/other/services/lab/s3", b'{"status":3,"logs":[]}'),
        ("/outposts/other/services/lab/s4", b'{"status":1,"logs":[]}'),
    ],
    ids=["running", "slash", "default-outpost", "default-server", "exit-code", "failed"],
)
def test_a_polled_server_is_answered_directly_as_django_answers(
    servers, direct, fallback, path, body
):
    # when a Hub polls one of its servers with its Basic credentials
    answer, django_answer = both(direct, path, basic())
    # then the direct path answers, and with exactly the Django handler's answer
    assert fallback.calls == 0
    assert (answer[0], answer[2]) == (200, body)
    assert same(answer, django_answer), (answer, django_answer)
    assert answer[1]["x-request-id"] == "req-1"
    assert answer[1]["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "path", ["/outposts/local/services", "/outposts/other/services/", "/services/"]
)
def test_a_list_is_answered_directly_as_django_answers(servers, direct, fallback, path):
    # given servers of every kind: a flavor or none, an end date, a stop asked for, dates with
    # and without microseconds, text beyond ASCII, one of another Hub
    local, other = servers["running"].outpost, servers["stopped"].outpost
    flavor = FlavorFactory(outpost=local, name="small")
    hub = servers["running"].hub
    for i, start_id in enumerate(["t1", "t2", "t3"]):
        Server.objects.create(
            hub=hub, outpost=local if i < 2 else other, name=f"lab-{i}", start_id=start_id,
            user_id="ü\u2028\u2029", user_name="u", status=Server.Status.RUNNING,
            flavor=flavor if i == 0 else None, end_at=timezone.now() if i == 1 else None,
            stop_requested_at=timezone.now() if i == 2 else None,
            spawner_state={"pid": 1} if i == 0 else None,
        )  # fmt: skip
    Server.objects.filter(start_id="t1").update(
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    HubFactory(name="hub2")
    # when the Hub lists its servers
    answer, django_answer = both(direct, path, basic())
    # then the direct path answers, exactly as the Django handler does
    assert fallback.calls == 0
    assert answer[0] == 200 and json.loads(answer[2])
    assert same(answer, django_answer), (answer, django_answer)


def test_a_hub_lists_only_its_own_servers_on_a_shared_outpost(servers, direct, fallback):
    # given a second Hub granted the same Outposts, without servers of its own
    answer, django_answer = both(direct, "/outposts/local/services", basic(hub="hub2"))
    # then its list is empty, answered directly as Django answers it
    assert fallback.calls == 0
    assert (answer[0], answer[2]) == (200, b"[]")
    assert same(answer, django_answer)


def test_an_empty_list_is_answered_directly(servers, direct, fallback):
    Server.objects.all().delete()
    answer, django_answer = both(direct, "/outposts/local/services", basic())
    assert fallback.calls == 0
    assert (answer[0], answer[2]) == (200, b"[]")
    assert same(answer, django_answer)


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/outposts/local/services", basic(secret="wrong"), 401),
        ("/outposts/local/services", {}, 401),
        ("/outposts/ungranted/services", basic(), 404),
        ("/outposts/nowhere/services", basic(), 404),
    ],
    ids=["wrong-secret", "no-credentials", "ungranted-outpost", "unknown-outpost"],
)
def test_every_other_list_is_answered_by_the_django_handler(
    servers, direct, fallback, path, headers, status
):
    answer, django_answer = both(direct, path, headers)
    assert fallback.calls == 1
    assert answer[0] == status and same(answer, django_answer)


def test_a_removed_server_is_not_found_through_the_django_handler(servers, direct, fallback):
    # given a server the Hub deleted
    Server.objects.filter(pk=servers["running"].pk).update(removed_at="2026-01-01T00:00Z")
    # when it is polled, the Django handler answers its 404
    answer, django_answer = both(direct, "/outposts/local/services/lab/s1", basic())
    assert fallback.calls == 1
    assert answer[0] == 404 and same(answer, django_answer)


def test_an_api_key_poll_goes_through_the_django_handler(servers, direct, fallback):
    # given a Hub API key: its last use is recorded there
    api_key, key = hub_api_key_create(hub=servers["running"].hub, name="k")
    headers = {"Authorization": f"token {key}", "X-Request-ID": "req-1"}
    answer = get(direct, "/outposts/local/services/lab/s1", headers)
    assert fallback.calls == 1
    assert answer[0] == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/outposts/local/services/lab/s1", basic(secret="wrong"), 401),
        ("/outposts/local/services/lab/s1", basic(hub="nobody"), 401),
        ("/outposts/local/services/lab/s1", {}, 401),
        ("/outposts/local/services/lab/s1", {"Authorization": "Basic !!!"}, 401),
        ("/outposts/local/services/lab/s1", {"Authorization": "Basic bm9jb2xvbg=="}, 401),
        ("/outposts/local/services/lab/s1", basic(hub="hub\x01"), 401),
        # another Hub's server, an Outpost not granted, an unknown one, an unknown server
        ("/outposts/local/services/lab/s1", basic(hub="hub2"), 404),
        ("/outposts/ungranted/services/lab/s5", basic(), 404),
        ("/outposts/nowhere/services/lab/s1", basic(), 404),
        ("/outposts/local/services/lab/s9", basic(), 404),
        ("/outposts/local/services/other/s1", basic(), 404),
        ("/outposts/other/services/lab/s1", basic(), 404),
        ("/outposts/local/services/la\x00b/s1", basic(), 400),
    ],
    ids=[
        "wrong-secret", "unknown-hub", "no-credentials", "bad-base64", "no-colon",
        "control-character-in-hub", "other-hubs-server", "ungranted-outpost", "unknown-outpost",
        "unknown-server", "same-start-id-other-name", "same-server-other-outpost",
        "control-character-in-name",
    ],
)  # fmt: skip
def test_every_other_poll_is_answered_by_the_django_handler(
    servers, direct, fallback, path, headers, status
):
    answer, django_answer = both(direct, path, headers)
    assert fallback.calls == 1
    assert answer[0] == status
    assert same(answer, django_answer), (answer, django_answer)


def test_a_failure_of_the_direct_path_is_logged_and_answered_by_the_django_handler(
    servers, direct, fallback, monkeypatch, caplog
):
    # given a direct list that fails unexpectedly
    def broken(rows):
        raise RuntimeError("a bug")

    monkeypatch.setattr(direct_reads, "list_entries", broken)
    # when the Hub lists its servers, the Django handler answers, and the failure is logged
    answer, django_answer = both(direct, "/outposts/local/services", basic())
    assert fallback.calls == 1
    assert answer[0] == 200 and same(answer, django_answer)
    assert [r.getMessage() for r in caplog.records if r.name == direct_app.log.name] == [
        "A direct answer failed; the API handler answers instead"
    ]
    caplog.clear()  # expected here: no_direct_failure would count it


def test_a_host_not_allowed_is_refused_as_django_refuses_it(servers, direct, fallback):
    # when the Host header is not one of ALLOWED_HOSTS
    headers = {**basic(), "Host": "evil.example"}
    answer, django_answer = both(direct, "/outposts/local/services/lab/s1", headers)
    # then Django's 400 answers, not the server's status
    assert fallback.calls == 1
    assert answer[0] == 400 and same(answer, django_answer)


def test_other_paths_go_to_the_django_handler(servers, direct, fallback):
    get(direct, "/outposts/local/services/lab/s1/events", basic())
    get(direct, "/outposts/local/ping", {})
    assert fallback.calls == 2


@pytest.fixture
def flavors(servers) -> dict[str, Any]:
    """Flavors of the default Outpost with everything an answer shows: no runtime or one,
    resources, text beyond ASCII and Latin-1, a max, Hub policies with a cap and overrides,
    one flavor the policies leave out, servers counted of both Hubs and an ended one; a user
    rule forbidding users named "x", which a Hub's own list ignores."""
    local = servers["running"].outpost
    hub, hub2 = servers["running"].hub, Hub.objects.get(name="hub2")
    small = FlavorFactory(outpost=local, name="small", weight=1, runtime=None, max=4)
    large = FlavorFactory(
        outpost=local, name="large", weight=2, display_name="Große \u2028 ☃", max_per_user=1,
        resources={"cpus": 4, "memory": "8G", "ratio": 0.5},
    )  # fmt: skip
    FlavorFactory(outpost=local, name="gpu", weight=3)
    HubPolicyFactory(hub=hub, flavor=small, cap=2)
    HubPolicyFactory(
        hub=hub, flavor=large, overrides={"runtime": {"hours": 8}, "display_name": "Course"}
    )
    UserRuleFactory(outpost=local, attributes={"name": "x"}, forbidden=True)
    for i, (owner, flavor, status) in enumerate(
        [(hub, small, "running"), (hub, small, "pending"), (hub2, small, "running"),
         (hub2, large, "running"), (hub, large, "stopped")]
    ):  # fmt: skip
        Server.objects.create(
            hub=owner, outpost=local, name=f"f{i}", start_id=f"f{i}", user_id="1",
            user_name="u1", flavor=flavor, status=status,
        )  # fmt: skip
    return {"small": small, "large": large}


@pytest.mark.parametrize("hub", ["hub1", "hub2"])
@pytest.mark.parametrize("path", ["/outposts/local/flavors", "/flavors/"])
def test_flavors_are_answered_directly_as_django_answers(flavors, direct, fallback, path, hub):
    # when a Hub asks for its flavors: hub1 has policies, hub2 none
    answer, django_answer = both(direct, path, basic(hub=hub))
    # then the direct path answers, exactly as the Django handler does
    assert fallback.calls == 0
    assert answer[0] == 200
    listed = json.loads(answer[2])
    assert set(listed) == ({"small", "large"} if hub == "hub1" else {"small", "large", "gpu"})
    assert listed["small"]["current"] == (2 if hub == "hub1" else 3)
    assert same(answer, django_answer), (answer, django_answer)


@pytest.mark.parametrize(
    "state, message",
    [("draining", "Wartung bis Montag ☃"), ("disabled", ""), ("active", "")],
)
def test_an_outposts_state_is_in_the_direct_answers_headers(
    flavors, direct, fallback, state, message
):
    # given the Outpost draining (with a message beyond Latin-1), disabled or active
    outpost = flavors["small"].outpost
    outpost.state, outpost.state_message = state, message
    outpost.save()
    # when the Hub asks for its flavors
    answer, django_answer = both(direct, "/outposts/local/flavors", basic())
    # then the state is in the headers, as the Django handler gives them
    assert fallback.calls == 0
    assert answer[1]["outpost-state"] == state
    assert same(answer, django_answer), (answer, django_answer)
    assert (answer[2] == b"{}") == (state == "disabled")


def test_an_outpost_without_flavors_answers_an_empty_object_directly(servers, direct, fallback):
    answer, django_answer = both(direct, "/outposts/other/flavors", basic())
    assert fallback.calls == 0
    assert (answer[0], answer[2]) == (200, b"{}")
    assert same(answer, django_answer)


@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/outposts/local/flavors", basic(secret="wrong"), 401),
        ("/outposts/local/flavors", {}, 401),
        ("/outposts/ungranted/flavors", basic(), 404),
        ("/outposts/nowhere/flavors", basic(), 404),
    ],
    ids=["wrong-secret", "no-credentials", "ungranted-outpost", "unknown-outpost"],
)
def test_every_other_flavors_request_is_answered_by_the_django_handler(
    flavors, direct, fallback, path, headers, status
):
    answer, django_answer = both(direct, path, headers)
    assert fallback.calls == 1
    assert answer[0] == status and same(answer, django_answer)


def test_direct_flavors_are_two_queries_once_the_terms_are_kept(flavors, django_assert_num_queries):
    # the read itself, in the test's thread, where its queries can be counted
    caller = direct_base.Caller(hub="hub1", secret=HUB_SECRET, slug="local")
    with django_assert_num_queries(2 + TERMS_QUERIES):
        direct_reads.flavors_read(caller)
    with django_assert_num_queries(2):
        outpost, listing = direct_reads.flavors_read(caller)
    assert outpost.slug == "local"
    assert [(item.flavor.name, item.current) for item in listing] == [("large", 1), ("small", 2)]


def test_a_direct_poll_is_one_query_and_a_list_two(servers, django_assert_num_queries):
    # the reads themselves, in the test's thread, where their queries can be counted
    caller = direct_base.Caller(hub="hub1", secret=HUB_SECRET, slug="local")
    with django_assert_num_queries(1):
        assert direct_reads.poll_read(caller, "lab", "s1") == (Server.Status.RUNNING, None)
    with django_assert_num_queries(2):
        listed = direct_reads.list_read(caller)
    assert {row["start_id"] for row in listed} == {"s1", "s2"}


def test_a_secret_with_colons_is_split_at_the_first_colon_as_basic_says(servers, direct, fallback):
    # given a Hub whose secret holds colons (RFC 7617: the user name cannot, the secret can)
    outpost = servers["running"].outpost
    hub = HubFactory(name="hub3", secret="se:cr:et", outposts=[outpost])
    Server.objects.create(
        hub=hub, outpost=outpost, name="lab", start_id="c1", user_id="1", user_name="u1"
    )
    # when it polls, the direct path answers, as Django does
    answer, django_answer = both(
        direct, "/outposts/local/services/lab/c1", basic(hub="hub3", secret="se:cr:et")
    )
    assert fallback.calls == 0
    assert answer[0] == 200 and same(answer, django_answer)


def post(app: Any, path: str, body: bytes, headers: dict[str, str], chunks: int = 1) -> Any:
    return call(app, "POST", path, {"X-Request-ID": "req-1", **headers}, body, chunks)


def both_posted(direct: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[Any, Any]:
    return post(direct, path, body, headers), post(api_application, path, body, headers)


JSON = {"Content-Type": "application/json"}


@pytest.fixture
def project(flavors) -> None:
    """A project of the default Outpost with an allocation of both flavors hub1 may use, and
    olga of hub1 granted the small one."""
    small, large = flavors["small"], flavors["large"]
    project = ProjectFactory(outpost=small.outpost, name="physics")
    for flavor in (small, large):
        AllocationFactory(project=project, flavor=flavor, max_servers=3)
    member = MemberFactory(project=project, hub=Hub.objects.get(name="hub1"), user_name="olga")
    GrantFactory(member=member, flavor=small)


@pytest.mark.parametrize(
    "path, body, listed",
    [
        ("/outposts/local/userflavors", {"name": "olga"}, {"small", "large"}),
        ("/outposts/local/userflavors?user_id=1", {"name": "olga"}, {"small", "large"}),
        ("/userflavors/?user_id=7", {"name": "olga", "groups": ["x"]}, {"small", "large"}),
        # the rule for staff lists one flavor; the one for guests forbids all
        ("/outposts/local/userflavors", {"name": "olga", "groups": ["staff"]}, {"large"}),
        ("/outposts/local/userflavors", {"name": "g", "groups": ["guest"]}, set()),
        ("/outposts/local/userflavors", {"name": "x"}, set()),
        # a project: its member's grant, not a member, no such project
        ("/outposts/local/userflavors", {"name": "olga", "project": "physics"}, {"small"}),
        ("/outposts/local/userflavors", {"name": "ivan", "project": "physics"}, set()),
        ("/outposts/local/userflavors", {"name": "olga", "project": "nowhere"}, set()),
        ("/outposts/local/userflavors", {"name": "Große \u2028", "x": [1, 2.5, None]}, None),
    ],
    ids=[
        "name", "user-id", "default-outpost", "rule", "forbidding-rule", "forbidden-name",
        "project-member",
        "project-outsider", "unknown-project", "beyond-ascii",
    ],
)  # fmt: skip
def test_userflavors_are_answered_directly_as_django_answers(
    flavors, project, direct, fallback, path, body, listed
):
    # given user rules: staff get only the large flavor, guests none
    outpost = flavors["small"].outpost
    UserRuleFactory(outpost=outpost, attributes={"groups": ["staff"]}, weight=2,
                    flavors=[flavors["large"]])  # fmt: skip
    UserRuleFactory(outpost=outpost, attributes={"groups": "guest*"}, weight=3, forbidden=True)
    # when a Hub asks which flavors one of its users may use
    answer, django_answer = both_posted(
        direct, path, json.dumps(body).encode(), {**basic(), **JSON}
    )
    # then the direct path answers, exactly as the Django handler does
    assert fallback.calls == 0
    assert answer[0] == 200
    if listed is not None:
        assert set(json.loads(answer[2])) == listed
    assert same(answer, django_answer), (answer, django_answer)


def test_a_body_in_several_messages_is_read_whole(flavors, direct, fallback):
    body = json.dumps({"name": "olga", "pad": "x" * 5000}).encode()
    answer = post(direct, "/outposts/local/userflavors?user_id=1", body, {**basic(), **JSON}, 7)
    assert fallback.calls == 0
    assert answer[0] == 200 and "currentPerUser" in json.loads(answer[2])["small"]


@pytest.mark.parametrize(
    "path, body, headers, status",
    [
        ("/outposts/local/userflavors", b'{"name": "olga"}', basic(secret="wrong"), 401),
        ("/outposts/ungranted/userflavors", b'{"name": "olga"}', basic(), 404),
        ("/outposts/local/userflavors", b'{"name": ', basic(), 400),
        ("/outposts/local/userflavors", b'["olga"]', basic(), 400),
        ("/outposts/local/userflavors", b"[" * 200 + b"]" * 200, basic(), 400),
        ("/outposts/local/userflavors", b'{"n": 1e400}', basic(), 400),
        ("/outposts/local/userflavors", b'{"name": "ol\\u0001ga"}', basic(), 400),
        ("/outposts/local/userflavors?user_id=x", b'{"name": "olga"}', basic(), 400),
        ("/outposts/local/userflavors", b"", basic(), 200),
        ("/outposts/local/userflavors", b'{"name": "olga"}', {"Content-Type": "text/plain"}, 415),
        (
            "/outposts/local/userflavors",
            # UTF-8 bytes that are Latin-1 text too: read as UTF-8 they would answer here
            '{"name": "Jürgen"}'.encode(),
            {"Content-Type": "application/json; charset=latin-1"},
            200,
        ),
        ("/outposts/local/userflavors", b'{"pad": "%s"}' % (b"x" * 70000), basic(), 200),
        ("/outposts/local/userflavors", b'{"name": "olga"}', {"Content-Length": "0"}, 200),
    ],
    ids=[
        "wrong-secret", "ungranted-outpost", "malformed", "not-an-object", "too-deep",
        "infinite-number", "control-character", "bad-user-id", "empty-body", "not-json",
        "latin-1", "large-body", "no-content-length",
    ],
)  # fmt: skip
def test_every_other_userflavors_request_is_answered_by_the_django_handler(
    flavors, direct, fallback, path, body, headers, status
):
    headers = {**basic(), **JSON, **headers}
    answer, django_answer = both_posted(direct, path, body, headers)
    assert fallback.calls == 1
    assert answer[0] == status
    assert same(answer, django_answer), (answer, django_answer)


def test_direct_userflavors_are_two_queries_without_a_project(flavors, django_assert_num_queries):
    caller = direct_base.Caller(hub="hub1", secret=HUB_SECRET, slug="local")
    direct_reads.flavors_read(caller)  # the terms read once
    with django_assert_num_queries(2):
        _, listing = direct_reads.flavors_read(caller, authentication={"name": "olga"}, user_id="1")
    assert [(item.flavor.name, item.active_of_user) for item in listing] == [
        ("large", 0),
        ("small", 2),
    ]


def test_another_method_on_a_direct_path_goes_to_the_django_handler(flavors, direct, fallback):
    # when a Hub sends a method the direct path does not answer on its paths
    answers = [
        both_posted(direct, "/outposts/local/flavors", b"{}", {**basic(), **JSON}),
        both_posted(direct, "/outposts/local/services/lab/s1", b"{}", {**basic(), **JSON}),
        both(direct, "/outposts/local/userflavors", basic()),
    ]
    # then Django answers each (405, Method Not Allowed), as it does without the direct path
    assert fallback.calls == 3
    for answer, django_answer in answers:
        assert answer[0] == 405 and same(answer, django_answer), (answer, django_answer)


def test_the_one_pair_of_userflavors_serializers_keeps_nothing_of_one_request_for_the_next(rf):
    # given a userflavors request, one the serializers refuse, and another request
    def request(body: Any, query: str) -> Any:
        return rf.post(
            f"/outposts/local/userflavors{query}", json.dumps(body), content_type="application/json"
        )

    first = request({"name": "olga", "groups": ["staff"]}, "?user_id=1")
    refused = request({"name": "ivan"}, "?user_id=x")
    second = request({"name": "ivan", "project": "physics"}, "")
    # when the direct path reads them one after another
    read_first = direct_reads.userflavors_request(first)
    with pytest.raises(direct_base.NotDirect):
        direct_reads.userflavors_request(refused)
    read_second = direct_reads.userflavors_request(second)
    # then each answer is its own request's, as new serializers read it
    assert read_first == ({"name": "olga", "groups": ["staff"]}, "1")
    assert read_second == ({"name": "ivan", "project": "physics"}, None)
    for request_read, read in ((first, read_first), (second, read_second)):
        authentication = serializers.AuthenticationSerializer(data=json.loads(request_read.body))
        user = serializers.FlavorUserSerializer(data=request_read.GET)
        assert authentication.is_valid() and user.is_valid()
        assert read == (authentication.validated_data, user.validated_data.get("user_id"))
