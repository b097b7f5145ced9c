"""OutpostPortalSpawner's start, progress, poll, stop, cancel and state over real HTTP.

The portal here is the stand-in of tests/support/fake_portal.py (real HTTP on 127.0.0.1,
answers from tests/contract): this is the unit level. The real portal is exercised end-to-end
with a real JupyterHub in the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import aclosing, contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.utils import iterate_until
from outpost_hubclient import (
    InvalidOptions,
    OutpostUnreachable,
    StartCancelled,
    StartRefused,
)
from tornado import httpserver, netutil, web

from tests.support.contract import contract
from tests.support.fake_portal import HUB_NAME, HUB_SECRET

pytestmark = pytest.mark.anyio

START_ID_HEX = 32


async def collect(spawner) -> list[dict]:
    return [event async for event in spawner.progress()]


async def wait_until(condition, *, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


# --- start -----------------------------------------------------------------------------------


async def test_start_posts_async_and_returns_the_url_once_running(portal, make_spawner):
    # given alice's server "lab" with flavor and project chosen
    spawner = make_spawner(user_options={"flavor": "small", "project": "hpc-01"})

    # when
    url = await spawner.start()

    # then the portal got one async start in the contract's shape, with Basic auth
    (post,) = portal.requests_of("POST", "/services")
    assert post.headers["Execution-Type"] == "async"
    basic = base64.b64encode(f"{HUB_NAME}:{HUB_SECRET}".encode()).decode()
    assert post.headers["Authorization"] == f"Basic {basic}"
    example = contract("start-async.hubclient")["request"]["body"]
    assert set(post.body) == set(example)
    assert post.body["name"] == "lab"
    assert post.body["user_options"] == {
        "outpost": "local",
        "flavor": "small",
        "project": "hpc-01",
        "start_id": spawner.start_id,
    }
    assert len(spawner.start_id) == START_ID_HEX
    assert post.body["authentication"] == example["authentication"]
    assert post.body["env"]["JUPYTERHUB_USER"] == "alice"
    assert post.body["env"]["JUPYTERHUB_USER_ID"] == "7"
    assert post.body["env"]["JUPYTERHUB_API_TOKEN"] == "hub-made-token"
    assert post.body["certs"] == {}
    # and it returns the address the portal reported once running
    assert url == "http://127.0.0.1:8888"
    assert portal.requests_of("GET", "/events")[0].query == "after=0"


async def test_each_start_has_a_fresh_start_id(portal, make_spawner):
    spawner = make_spawner()

    await spawner.start()
    first = spawner.start_id
    await spawner.stop()
    spawner.clear_state()
    await spawner.start()

    assert spawner.start_id != first
    assert len(portal.requests_of("POST", "/services")) == 2


async def test_default_server_uses_the_double_slash_paths(portal, make_spawner):
    spawner = make_spawner(name="")

    await spawner.start()
    await spawner.poll()
    await spawner.stop()

    start_id = spawner.start_id
    assert portal.requests_of("GET", "/events")[0].path == (
        f"/outposts/local/services//{start_id}/events"
    )
    assert portal.requests_of("GET")[-1].path == f"/outposts/local/services//{start_id}"
    assert portal.requests_of("DELETE")[0].path == f"/outposts/local/services//{start_id}"


async def test_refusal_shows_the_portals_message_and_is_not_retried(portal, make_spawner):
    # given a portal that refuses the flavor, as in the contract
    refused = contract("start-refused")["response"]
    portal.start_answer = (refused["status"], refused["body"])
    spawner = make_spawner(user_options={"flavor": "huge"})

    # when / then the user sees args[0]
    with pytest.raises(StartRefused) as error:
        await spawner.start()
    assert str(error.value) == refused["body"]["args"][0]
    assert error.value.jupyterhub_message == refused["body"]["args"][0]
    assert len(portal.requests_of("POST", "/services")) == 1
    # and JupyterHub's clean-up poll finds nothing there to stop
    assert await spawner.poll() == 0


async def test_failed_event_fails_the_start_with_the_portals_message(portal, make_spawner):
    portal.plan = [("Slurm job failed: out of memory", 100, True, "failed", None)]
    spawner = make_spawner()

    with pytest.raises(StartRefused, match="Slurm job failed: out of memory"):
        await spawner.start()

    # the failed start is removed at the portal, so nothing of it stays listed
    assert len(portal.requests_of("DELETE")) == 1
    assert portal.servers == {}


async def test_start_retries_server_errors_then_succeeds(portal, make_spawner):
    portal.failures = [503, 502]
    spawner = make_spawner(retries=2)

    url = await spawner.start()

    assert url == "http://127.0.0.1:8888"
    assert len(portal.requests_of("POST", "/services")) == 3


async def test_unreachable_portal_fails_after_the_retries(make_spawner):
    # given an Outpost URL where nothing listens
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    spawner = make_spawner(retries=1)
    spawner.outposts = {
        "local": {
            "url": f"http://127.0.0.1:{dead_port}/outposts/local/",
            "secret_env": "FAKE_PORTAL_SECRET",
        }
    }

    with pytest.raises(OutpostUnreachable, match="could not be reached"):
        await spawner.start()


async def test_unknown_outpost_is_refused_before_any_request(portal, make_spawner):
    spawner = make_spawner(user_options={"outpost": "elsewhere", "flavor": "small"})

    with pytest.raises(InvalidOptions, match="Unknown system 'elsewhere'"):
        await spawner.start()

    assert portal.requests == []


@pytest.mark.parametrize(
    "extra",
    [{"cmd": "/bin/sh"}, {"runtime": 100000}, {"partition": "gpu"}, {"start_id": "mine"}],
)
async def test_options_beyond_system_flavor_and_project_are_refused_before_any_request(
    portal, make_spawner, extra
):
    # given REST API user_options with a key the spawn form never sends (batch spawners
    # merge user_options into job scripts)
    spawner = make_spawner(user_options={"flavor": "small", **extra})

    # when JupyterHub applies them, or start() runs on a JupyterHub without that hook
    with pytest.raises(InvalidOptions) as applied:
        await spawner._run_apply_user_options(spawner.user_options)
    with pytest.raises(InvalidOptions):
        await spawner.start()

    # then the caller gets 400 naming the key, and nothing reached the portal
    (key,) = extra
    assert applied.value.status_code == 400
    assert f"Unknown options {key}. Accepted options: outpost, flavor, project." in str(
        applied.value
    )
    assert portal.requests == []


async def test_api_key_credential_is_sent_as_token(portal, make_spawner, monkeypatch):
    monkeypatch.setenv("FAKE_PORTAL_KEY", "op_fake-portal-key")
    spawner = make_spawner()
    spawner.outposts = {"local": {"url": portal.base_url, "api_key_env": "FAKE_PORTAL_KEY"}}

    await spawner.start()

    assert portal.requests[0].headers["Authorization"] == "token op_fake-portal-key"


async def test_jupyterhub_rejects_an_unknown_system_before_the_spawn(portal, make_spawner):
    spawner = make_spawner()

    # when JupyterHub applies REST API user_options naming a system it does not know
    with pytest.raises(InvalidOptions) as error:
        await spawner._run_apply_user_options({"outpost": "nowhere", "flavor": "small"})

    # then it answers 400 with the reason, and nothing reached the portal
    assert error.value.status_code == 400
    assert "Unknown system 'nowhere'. Known systems: local." in str(error.value)
    assert portal.requests == []


async def test_jupyterhub_accepts_known_choices_and_the_default_system(portal, make_spawner):
    spawner = make_spawner()

    await spawner._run_apply_user_options({"flavor": "small"})
    await spawner._run_apply_user_options({"outpost": "local", "flavor": "small"})


# --- progress --------------------------------------------------------------------------------


async def test_progress_yields_the_portals_events_escaped(portal, make_spawner):
    portal.plan = [
        ("Job <b>queued</b>", 30, False, "pending", None),
        ("Server is running.", 90, False, "running", "127.0.0.1:8888"),
    ]
    spawner = make_spawner()

    # when progress is read while the start runs, as JupyterHub's spawn page does
    progress = asyncio.ensure_future(collect(spawner))
    await spawner.start()
    events = await asyncio.wait_for(progress, 5)

    # then the user sees every step, with html made from the text
    assert [(e["progress"], e["message"]) for e in events] == [
        (10, "Start request accepted."),
        (30, "Job <b>queued</b>"),
        (90, "Server is running."),
    ]
    assert events[1]["html_message"] == "Job &lt;b&gt;queued&lt;/b&gt;"


async def read_as_jupyterhub(spawner, spawn: asyncio.Future) -> list[dict]:
    """The Hub's progress API: events until the spawn resolves (jupyterhub.utils.iterate_until)."""
    events = []
    stream = iterate_until(spawn, spawner._generate_progress())
    async with aclosing(stream) as events_of_spawn:
        async for event in events_of_spawn:
            events.append(event)
    return events


async def spawn_as_jupyterhub(spawner, *, wait_up: float) -> None:
    """User.spawn's flags around start(): pending, then waiting for the server to answer."""
    spawner._spawn_pending = True
    try:
        await spawner.start()
        spawner._waiting_for_response = True
        await asyncio.sleep(wait_up)
    finally:
        spawner._waiting_for_response = False
        spawner._spawn_pending = False


# The failure was a race (1 in 4 to 5 spawns): repeat enough to see it.
@pytest.mark.parametrize("attempt", range(20))
async def test_the_hubs_progress_stream_ends_cleanly_when_the_spawn_resolves(
    portal, make_spawner, attempt
):
    spawner = make_spawner()
    spawner._spawn_pending = True

    # when JupyterHub reads progress while it spawns: start, then wait for the server
    spawn = asyncio.ensure_future(spawn_as_jupyterhub(spawner, wait_up=0.1))
    events = await read_as_jupyterhub(spawner, spawn)
    await spawn

    # then the stream ends without error, with every step of the portal
    assert [e["message"] for e in events] == [
        "Server requested",
        "Start request accepted.",
        "Batch job queued.",
        "Server is running.",
    ]


async def test_progress_read_before_the_start_shows_only_this_spawns_events(portal, make_spawner):
    # given a spawner whose previous start is over, and a new spawn JupyterHub prepares
    spawner = make_spawner()
    await spawner.start()
    portal.plan = [("Second start queued.", 40, False, "running", "127.0.0.1:8889")]
    spawner._spawn_pending = True

    # when the progress stream is opened before start() runs, and has waited a whole
    # progress wait (1 s) without a start: it must neither end nor replay the old events
    progress = asyncio.ensure_future(collect(spawner))
    await asyncio.sleep(1.2)
    assert not progress.done()
    await spawn_as_jupyterhub(spawner, wait_up=0)
    events = await asyncio.wait_for(progress, 5)

    # then it shows the new start's steps, none of the previous one's
    assert [e["message"] for e in events] == ["Start request accepted.", "Second start queued."]


# --- poll and stop ---------------------------------------------------------------------------


async def test_poll_reports_running_then_the_exit_code(portal, make_spawner):
    spawner = make_spawner()
    await spawner.start()

    assert await spawner.poll() is None
    portal.only_server().exit_code = contract("poll-ended")["response"]["body"]["status"]
    assert await spawner.poll() == 0


async def test_poll_of_a_server_the_portal_does_not_know_is_stopped(portal, make_spawner):
    spawner = make_spawner()
    await spawner.start()
    portal.servers.clear()

    assert await spawner.poll() == 0


async def test_poll_keeps_the_server_when_the_portal_cannot_be_reached(portal, make_spawner):
    spawner = make_spawner(retries=0)
    await spawner.start()
    portal.failures = [503]

    assert await spawner.poll() is None


async def test_poll_makes_one_attempt_when_the_portal_fails(portal, make_spawner):
    # given a spawner configured with retries, and a portal failing for a while
    spawner = make_spawner(retries=3)
    await spawner.start()
    portal.failures = [503, 503, 503]

    # when JupyterHub polls (also while it waits to stop the server)
    status = await spawner.poll()

    # then it keeps the server after a single request; JupyterHub polls again later
    assert status is None
    assert len(portal.requests_of("GET", f"/lab/{spawner.start_id}")) == 1


async def test_poll_without_a_start_is_stopped(portal, make_spawner):
    assert await make_spawner().poll() == 0
    assert portal.requests == []


async def test_a_stop_before_start_sent_anything_cancels_the_start(portal, make_spawner):
    # given a spawn JupyterHub prepares (it clears the state first)
    spawner = make_spawner()
    spawner.clear_state()

    # when a stop arrives before start() runs
    await spawner.stop()

    # then start() sends nothing and says it was cancelled
    with pytest.raises(StartCancelled, match="cancelled before it was sent"):
        await spawner.start()
    assert portal.requests == []
    # and the next spawn (JupyterHub clears the state again) starts normally
    spawner.clear_state()
    assert await spawner.start() == "http://127.0.0.1:8888"


async def test_stop_deletes_in_the_background(portal, make_spawner):
    spawner = make_spawner()
    await spawner.start()

    await spawner.stop()

    (delete,) = portal.requests_of("DELETE")
    assert delete.path == f"/outposts/local/services/lab/{spawner.start_id}"
    assert delete.headers["Execution-Type"] == "async"
    assert portal.servers == {}


async def test_stop_of_a_server_already_gone_is_fine(portal, make_spawner):
    spawner = make_spawner()
    await spawner.start()
    portal.servers.clear()

    await spawner.stop()  # no error

    assert len(portal.requests_of("DELETE")) == 1


# --- cancel while pending --------------------------------------------------------------------


async def test_stop_while_start_is_pending_cancels_at_the_portal_and_ends_start(
    portal, make_spawner
):
    # given a start that stays pending (a batch job waiting in the queue)
    portal.plan = [("Batch job queued.", 30, False, "pending", None)]
    spawner = make_spawner()
    start = asyncio.ensure_future(spawner.start())
    await wait_until(lambda: len(portal.requests_of("GET", "/events")) >= 2)

    # when JupyterHub stops it (the user clicked cancel)
    await spawner.stop()

    # then the portal got the DELETE and the pending start ends with a clear error
    assert len(portal.requests_of("DELETE")) == 1
    assert portal.servers == {}
    with pytest.raises(StartCancelled, match="cancelled"):
        await asyncio.wait_for(start, 5)


async def test_start_timeout_cancellation_then_stop_deletes_at_the_portal(portal, make_spawner):
    # given a pending start that JupyterHub gives up on (start_timeout cancels the task)
    portal.plan = [("Batch job queued.", 30, False, "pending", None)]
    spawner = make_spawner()
    start = asyncio.ensure_future(spawner.start())
    await wait_until(lambda: len(portal.requests_of("GET", "/events")) >= 2)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start

    # when JupyterHub cleans up as User.stop does: poll, then stop if still running
    status = await spawner.poll()
    if status is None:
        await spawner.stop()

    # then the remote start is cancelled at the portal
    assert status is None
    assert len(portal.requests_of("DELETE")) == 1
    assert portal.servers == {}


async def test_cancel_during_the_start_request_deletes_after_it_lands(portal, make_spawner):
    # given a portal slow to answer the start request
    portal.start_delay = 0.3
    spawner = make_spawner()
    start = asyncio.ensure_future(spawner.start())
    await wait_until(lambda: len(portal.requests_of("POST", "/services")) == 1)

    # when the start is cancelled before the portal answered
    start.cancel()
    assert await spawner.poll() is None  # the start may still land: not "stopped"
    await spawner.stop()

    # then the DELETE came after the start and removed the server
    assert [r.method for r in portal.requests] == ["POST", "DELETE"]
    assert portal.servers == {}


@contextmanager
def unretrieved_task_errors() -> Iterator[list[dict[str, Any]]]:
    """What asyncio would log as "Task exception was never retrieved" meanwhile."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield reported
    finally:
        loop.set_exception_handler(previous)


async def test_cancel_during_a_slow_retried_start_leaves_nothing_at_the_portal(
    portal, make_spawner
):
    # given a portal that takes the start but answers only after the Hub's request timeout,
    # and a spawner that would retry the start three times
    portal.start_delay = 0.8
    spawner = make_spawner(request_timeout=0.5, retries=3, retry_backoff=0.2)
    with unretrieved_task_errors() as reported:
        start = asyncio.ensure_future(spawner.start())
        await wait_until(lambda: len(portal.requests_of("POST", "/services")) == 1)

        # when JupyterHub cancels the pending spawn, then stops it as User.stop does
        start.cancel()
        with suppress(asyncio.CancelledError):
            await start
        assert await spawner.poll() is None  # the start may still land: not "stopped"
        await spawner.stop()
        # past the portal's delay: a start request still on its way would have landed now
        await asyncio.sleep(1.0)
        del start
        gc.collect()

    # then the start was never repeated, the DELETE came after it, and nothing is left
    methods = [request.method for request in portal.requests]
    assert methods.count("POST") == 1, methods
    assert methods[0] == "POST" and methods[-1] == "DELETE", methods
    assert portal.servers == {}
    assert reported == []


async def test_start_cancelled_while_its_request_is_retried_ends_without_more_attempts(
    portal, make_spawner
):
    # given a portal that fails the start once (5xx) and a spawner with a long back-off
    portal.failures = [503]
    spawner = make_spawner(retries=5, retry_backoff=30)
    start = asyncio.ensure_future(spawner.start())
    await wait_until(lambda: len(portal.requests_of("POST", "/services")) == 1)

    # when JupyterHub stops it during the back-off pause
    await asyncio.wait_for(spawner.stop(), 5)

    # then start() ends as cancelled at once, having sent the start only once
    with pytest.raises(StartCancelled):
        await asyncio.wait_for(start, 5)
    assert len(portal.requests_of("POST", "/services")) == 1


# --- form ------------------------------------------------------------------------------------


async def test_a_hung_outpost_is_asked_once_and_shown_unavailable(portal, make_spawner):
    # given an Outpost whose flavor list does not answer in time, and retries configured
    portal.userflavors_delay = 1.0
    spawner = make_spawner(retries=3, quick_request_timeout=0.3)

    # when the spawn form is rendered
    form = await spawner.render_options_form()

    # then the Outpost was asked once, and the form says it is unavailable
    assert len(portal.requests_of("POST", "/userflavors")) == 1
    assert "Local (unavailable)" in form


async def test_the_form_asks_for_the_flavors_of_each_of_the_users_projects(portal, make_spawner):
    # given a user who works in two projects
    spawner = make_spawner()
    spawner.user_projects = lambda spawner: ["climate", "ocean"]
    # when the spawn form is rendered
    form = await spawner.render_options_form()
    # then the portal was asked without a project and once per project, with the user's id
    asked = portal.requests_of("POST", "/userflavors")
    assert sorted(request.body.get("project", "") for request in asked) == [
        "",
        "climate",
        "ocean",
    ]
    assert all("user_id=" in request.query for request in asked)
    assert 'data-project="climate"' in form and 'data-project="ocean"' in form


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture
async def untrusted_tls_portal(tmp_path: Path) -> Any:
    """An https server with a self-signed certificate the Hub does not trust."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server = httpserver.HTTPServer(web.Application([]), ssl_options=context)
    server.add_sockets(sockets)
    yield SimpleNamespace(port=sockets[0].getsockname()[1])
    server.stop()


async def test_a_certificate_error_is_not_retried(untrusted_tls_portal, make_spawner):
    # given an Outpost whose certificate does not verify, and retries configured
    spawner = make_spawner(retries=3, retry_backoff=5)
    spawner.outposts = {
        "local": {
            "url": f"https://127.0.0.1:{untrusted_tls_portal.port}/outposts/local/",
            "secret_env": "FAKE_PORTAL_SECRET",
        }
    }

    # when a start is sent: then it fails at once (no 5 s back-off) saying why
    with pytest.raises(OutpostUnreachable, match="TLS connection failed .*CERTIFICATE_VERIFY"):
        await asyncio.wait_for(spawner.start(), 3)


# --- state -----------------------------------------------------------------------------------


async def test_state_survives_a_hub_restart(portal, make_spawner):
    # given a running server
    spawner = make_spawner()
    await spawner.start()
    state = spawner.get_state()
    assert state == {"version": 1, "outpost": "local", "start_id": spawner.start_id}

    # when a new Hub process loads it into a fresh spawner
    restored = make_spawner()
    restored.load_state(state)

    # then it polls and stops the same server
    assert await restored.poll() is None
    await restored.stop()
    assert portal.requests_of("DELETE")[0].path.endswith(f"/lab/{spawner.start_id}")


class StandInDatabase:
    """The Hub's database session as a spawner uses it: commit() saves the ORM rows."""

    def __init__(self, orm_spawner: SimpleNamespace) -> None:
        self.orm_spawner = orm_spawner
        self.saved: list[dict[str, Any]] = []

    def commit(self) -> None:
        self.saved.append(dict(self.orm_spawner.state or {}))


async def test_a_queued_start_is_saved_once_accepted_and_found_after_a_hub_restart(
    portal, make_spawner
):
    # given a start that stays queued at the portal, in a Hub with a database
    portal.plan = [("Batch job queued.", 30, False, "pending", None)]
    spawner = make_spawner()
    orm_spawner = SimpleNamespace(state=None, server=None, name="lab")
    spawner.orm_spawner = orm_spawner
    spawner.db = StandInDatabase(orm_spawner)
    start = asyncio.ensure_future(spawner.start())

    # when the portal has accepted it (JupyterHub saves state only once start() returns)
    await wait_until(lambda: len(portal.requests_of("GET", "/events")) >= 2)

    # then its state is already in the Hub's database
    assert spawner.db.saved[-1] == {"version": 1, "outpost": "local", "start_id": spawner.start_id}
    # and a Hub restarted now finds the start still running and can stop it
    restored = make_spawner()
    restored.load_state(orm_spawner.state)
    assert await restored.poll() is None
    await restored.stop()
    assert portal.servers == {}
    with pytest.raises(StartCancelled):
        await asyncio.wait_for(start, 5)


async def test_an_unusable_address_fails_the_start_with_a_clear_message(portal, make_spawner):
    portal.plan = [("Server is running.", 90, False, "running", "not an address")]
    spawner = make_spawner()

    with pytest.raises(StartRefused, match="cannot be reached: .*neither host:port nor URL"):
        await spawner.start()


async def test_cleared_state_forgets_the_server(portal, make_spawner):
    spawner = make_spawner()
    await spawner.start()

    spawner.clear_state()

    assert spawner.get_state() == {}
    assert await spawner.poll() == 0


async def test_state_of_an_unknown_version_is_ignored(make_spawner):
    spawner = make_spawner()

    spawner.load_state({"version": 99, "outpost": "local", "start_id": "x"})

    assert spawner.start_id == ""


async def test_state_written_with_an_address_still_loads(portal, make_spawner):
    # earlier versions stored the address too; it is not needed (JupyterHub keeps the URL)
    spawner = make_spawner()

    spawner.load_state({"version": 1, "outpost": "local", "start_id": "x", "address": "h:1"})

    assert spawner.get_state() == {"version": 1, "outpost": "local", "start_id": "x"}
