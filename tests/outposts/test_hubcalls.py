"""Calls the portal makes to a Hub, received by a real HTTP server standing in for the Hub."""

from __future__ import annotations

import pytest

from outposts import hubcalls, services, tasks
from outposts.models import Server
from portal.celery import app as celery_app
from tests.factories import FlavorFactory, ServerFactory, SpawnEventFactory
from tests.support.metrics import metric_values
from tests.support.processes import free_port


def test_event_body_escapes_html():
    # when
    body = hubcalls.make_event_body(progress=50, message="<b>pulling</b> & co", failed=False)
    # then
    assert body == {
        "progress": 50,
        "message": "<b>pulling</b> & co",
        "html_message": "&lt;b&gt;pulling&lt;/b&gt; &amp; co",
        "failed": False,
    }


@pytest.mark.parametrize(
    ("address", "service"),
    [
        ("10.0.0.5:8888", "10.0.0.5:8888"),
        ("http://node7:9000", "node7:9000"),
        ("https://node7:9000/user/olga/", "node7:9000"),
    ],
)
def test_setup_tunnel_body_is_host_and_port(address, service):
    assert hubcalls.make_setup_tunnel_body(address=address) == {"service": service}


def test_hub_post_sends_the_token_and_json(fake_hub):
    # when
    hubcalls.hub_post(url=f"{fake_hub.url}/hub/api/x", token="t0k", body={"a": 1})
    # then
    (call,) = fake_hub.calls
    assert (call.path, call.authorization, call.body) == ("/hub/api/x", "token t0k", {"a": 1})


def test_hub_post_tells_retryable_from_refused_and_counts_each_failure(db, fake_hub):
    # given
    fake_hub.status_for = {"/down": 503, "/nope": 403}
    # when / then
    with pytest.raises(hubcalls.HubUnreachable):
        hubcalls.hub_post(url=f"{fake_hub.url}/down", token="t", body={})
    with pytest.raises(hubcalls.HubRefused):
        hubcalls.hub_post(url=f"{fake_hub.url}/nope", token="t", body={})
    with pytest.raises(hubcalls.HubUnreachable):
        hubcalls.hub_post(url=f"http://127.0.0.1:{free_port()}/x", token="t", body={})
    hubcalls.hub_post(url=f"{fake_hub.url}/fine", token="t", body={})
    # then the metric counts the three failures, by reason, and not the call that succeeded
    assert metric_values("portal_hub_callback_failures_total") == {
        (("reason", "unreachable"),): 2,
        (("reason", "refused"),): 1,
    }


def test_hub_calls_verify_tls_by_default(settings):
    assert settings.HUB_CALL_VERIFY is True


@pytest.fixture
def server(db, fake_hub, outpost, hub):
    return ServerFactory(
        hub=hub,
        outpost=outpost,
        name="lab",
        user_name="olga",
        address="127.0.0.1:40123",
        env=fake_hub.env("olga", "lab"),
        flavor=FlavorFactory(outpost=outpost, name="small"),
    )


def test_progress_event_reaches_the_hub(server, fake_hub):
    # given
    event = SpawnEventFactory(server=server, progress=40, message="Image <pulled>")
    # when
    tasks.hub_event_send_task(event.pk)
    # then
    (call,) = fake_hub.posts("/users/progress/events/olga/lab")
    assert call.authorization == "token server-token"
    assert call.body == {
        "progress": 40,
        "message": "Image <pulled>",
        "html_message": "Image &lt;pulled&gt;",
        "failed": False,
    }


def test_flavor_update_carries_current_counts(server, fake_hub):
    # when
    tasks.hub_flavors_send_task(server.pk)
    # then
    (call,) = fake_hub.posts("/outpostflavors/local")
    assert call.authorization == "token flavors-token"
    assert call.body["small"]["current"] == 1


def test_flavor_update_falls_back_to_the_hubs_configured_token(server, fake_hub, hub):
    # given
    hub.flavors_update_token = "hub-wide-token"
    hub.save()
    env = dict(server.env)
    del env["JUPYTERHUB_FLAVORS_UPDATE_TOKEN"]
    Server.objects.filter(pk=server.pk).update(env=env)
    # when
    tasks.hub_flavors_send_task(server.pk)
    # then
    (call,) = fake_hub.posts("/outpostflavors/local")
    assert call.authorization == "token hub-wide-token"


def test_setup_tunnel_sends_the_running_servers_address(server, fake_hub):
    # when
    tasks.hub_address_send_task(server.pk)
    # then
    (call,) = fake_hub.posts("/users/setuptunnel/olga/lab")
    assert call.authorization == "token server-token"
    assert call.body == {"service": "127.0.0.1:40123"}


def test_setup_tunnel_is_not_sent_for_a_server_that_is_not_running(server, fake_hub):
    # given
    Server.objects.filter(pk=server.pk).update(status=Server.Status.STOPPED)
    # when
    tasks.hub_address_send_task(server.pk)
    # then
    assert fake_hub.calls == []


def test_a_hub_that_refuses_is_logged_not_retried(server, fake_hub, caplog):
    # given
    fake_hub.status_for = {"/hub/api/users/setuptunnel": 400}
    # when
    tasks.hub_address_send_task(server.pk)
    # then
    assert "refused the address" in caplog.text


def test_a_hub_that_is_down_is_retried(server):
    # given a Hub nothing listens for
    env = dict(server.env, JUPYTERHUB_EVENTS_URL=f"http://127.0.0.1:{free_port()}/events")
    Server.objects.filter(pk=server.pk).update(env=env)
    event = SpawnEventFactory(server=server)
    # when / then: the task raises for Celery to retry it with back-off
    with pytest.raises(hubcalls.HubUnreachable):
        tasks.hub_event_send_task(event.pk)
    assert tasks.hub_event_send_task.max_retries >= 3


def test_a_callback_url_outside_the_hubs_prefixes_is_not_called(server, fake_hub, hub, caplog):
    # given a Hub whose admin allows calls under its API only, and a request whose env
    # points the portal elsewhere (an internal service, here another path of the same host)
    hub.callback_url_prefixes = [f"{fake_hub.url}/hub/api/"]
    hub.save()
    env = dict(
        server.env,
        JUPYTERHUB_EVENTS_URL=f"{fake_hub.url}/internal/admin/events",
        JUPYTERHUB_SETUPTUNNEL_URL=f"{fake_hub.url}/hub/api/../../internal/tunnel",
        JUPYTERHUB_FLAVORS_UPDATE_URL=f"file://{fake_hub.url}/hub/api/outpostflavors/local",
    )
    Server.objects.filter(pk=server.pk).update(env=env)
    # when
    tasks.hub_event_send_task(SpawnEventFactory(server=server).pk)
    tasks.hub_address_send_task(server.pk)
    tasks.hub_flavors_send_task(server.pk)
    # then
    assert fake_hub.calls == []
    assert "not under Hub hub1's callback prefixes" in caplog.text


def test_a_callback_url_under_the_hubs_prefixes_is_called(server, fake_hub, hub):
    # given
    hub.callback_url_prefixes = [f"{fake_hub.url}/hub/api/"]
    hub.save()
    # when
    tasks.hub_address_send_task(server.pk)
    # then
    assert len(fake_hub.posts("/hub/api/users/setuptunnel/olga/lab")) == 1


def test_a_hub_redirect_is_not_followed(server, fake_hub, caplog):
    # given a Hub URL that redirects elsewhere
    fake_hub.redirect_for = {"/hub/api/users/progress": f"{fake_hub.url}/elsewhere"}
    # when
    tasks.hub_event_send_task(SpawnEventFactory(server=server).pk)
    # then
    assert [call.path for call in fake_hub.calls] == ["/hub/api/users/progress/events/olga/lab"]
    assert fake_hub.posts("/elsewhere") == []
    assert "answered 307" in caplog.text


# --- A synchronous start whose wait ran out --------------------------------------------------


@pytest.fixture
def committed(monkeypatch, django_capture_on_commit_callbacks):
    """A block whose queued tasks run in the test's process when it ends, as a worker would
    run them once the transaction commits: what a Hub receives reaches the stand-in Hub."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_a_start_answered_without_address_that_already_runs_gets_set_up_at_once(
    server,
    fake_hub,
    committed,
):
    # when the Hub's wait for a running server ran out (answered ""), twice
    for _ in range(2):
        with committed():
            services.server_address_deferred(server=server)
    # then the Hub gets the address once, without waiting for another start event
    (call,) = fake_hub.posts("/users/setuptunnel/olga/lab")
    assert call.body == {"service": "127.0.0.1:40123"}


def test_a_start_answered_without_address_waits_until_it_runs(server, fake_hub, committed):
    # given a start still pending
    Server.objects.filter(pk=server.pk).update(status=Server.Status.PENDING, ready_at=None)
    # when the Hub's wait ran out
    with committed():
        services.server_address_deferred(server=server)
    # then nothing is sent yet: the start task sends it once the server runs
    assert fake_hub.posts("/users/setuptunnel") == []
    server.refresh_from_db()
    assert (server.address_via_callback, server.address_sent_at) == (True, None)
