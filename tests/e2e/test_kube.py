"""Servers as pods, with the real, unmodified KubeSpawner, through admission, the start task's
lifecycle, the stop task and the reconciler, against the fake Kubernetes API of
tests/support/fake_kube.py (no real API server can run here; its "kubelet" runs a pod's
command as a local process on a loopback address of its own).

Each step runs in an event loop of its own, as on a worker: the start, each poll and the
stop see the cluster as it is, not as an earlier step's watch left it.
"""

from __future__ import annotations

import base64
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.core.exceptions import ValidationError
from django.db import connection

from outposts import services
from outposts.lifecycle.end import server_stop_run
from outposts.lifecycle.reconcile import outpost_reconcile
from outposts.lifecycle.start import server_start_run
from outposts.models import Outpost, Server, SpawnEvent
from outposts.services import StartRequest
from tests.factories import HUB_SECRET, FlavorFactory, HubFactory, OutpostFactory
from tests.support.processes import json_if_up, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SERVE = Path(__file__).resolve().parents[1] / "support" / "kube_pods" / "serve"
DEFAULT_IMAGE = "quay.io/jupyter/base-notebook:2026-11-30"


@pytest.fixture
def site(fake_kube):
    """A Kubernetes Outpost with its own namespace and service account, a flavor with CPU
    and memory requests and limits, and a Hub; Hubs may choose the image (and, to show that
    it never lifts a flavor's limit, mem_limit)."""
    namespace = f"outpost-{uuid.uuid4().hex[:6]}"
    outpost = OutpostFactory(
        slug=namespace,
        spawner_class="kubespawner.KubeSpawner",
        spawner_config={
            "namespace": namespace,
            "service_account": "outpost-users",
            "image": DEFAULT_IMAGE,
            "cmd": [str(SERVE)],
            "start_timeout": 30,
            "k8s_api_request_retry_timeout": 20,
        },
        allowed_overrides=["image", "mem_limit"],
        start_timeout=timedelta(minutes=1),
    )
    FlavorFactory(
        outpost=outpost,
        name="small",
        runtime=timedelta(hours=1),
        resources={
            "cpu_guarantee": 0.5,
            "cpu_limit": 1,
            "mem_guarantee": "256M",
            "mem_limit": "512M",
        },
    )
    hub = HubFactory(outposts=[outpost])
    return {"outpost": outpost, "hub": hub, "kube": fake_kube, "namespace": namespace}


def admit(site, *, user="olga", name="lab", misc=None) -> Server:
    request = StartRequest(
        name=name,
        start_id=f"start-of-{user}",  # the Hub's start ids differ between starts
        env={"JUPYTERHUB_USER": user, "JUPYTERHUB_USER_ID": "7"},
        flavor="small",
        user_options={"flavor": "small"},
        misc=dict(misc or {}),
    )
    server, _ = services.server_start(hub=site["hub"], outpost=site["outpost"], request=request)
    return server


def start(site, **kwargs) -> Server:
    server = admit(site, **kwargs)
    server_start_run(server_id=server.pk)
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING, server.error
    return server


def messages(server: Server) -> list[str]:
    return list(SpawnEvent.objects.filter(server=server).values_list("message", flat=True))


def reconcile(server: Server) -> Server:
    Server.objects.filter(pk=server.pk).update(last_poll_at=None)
    outpost_reconcile(outpost_id=server.outpost_id)
    server.refresh_from_db()
    return server


def served(url: str) -> dict:
    """What the pod's server answers to a GET of ``url``, once it listens. Like a real kubelet
    without a readiness probe, the fake one reports the container ready when its process has
    started, not when it listens; a Hub, too, waits for the server to answer."""
    return wait_until(lambda: json_if_up(url), timeout=30, what=f"{url} to answer")


def stop(server: Server) -> Server:
    services.server_stop(server=server)
    server_stop_run(server_id=server.pk)
    server.refresh_from_db()
    return server


def test_the_pod_has_the_flavors_resources_the_image_asked_for_and_the_outposts_place(site):
    # given a start asking for another image (allow-listed), more memory (allow-listed, but
    # the flavor sets it) and another namespace and a privileged pod (not allow-listed)
    kube, namespace = site["kube"], site["namespace"]
    server = start(
        site,
        misc={
            "image": "registry.example.org/lab/torch:2.5",
            "mem_limit": "64G",
            "namespace": "kube-system",
            "privileged": True,
        },
    )
    # then the pod runs in the Outpost's namespace with its service account
    pods = kube.pods(namespace)
    assert list(pods) == ["jupyter-olga--lab"]
    assert kube.pods("kube-system") == {}
    spec = pods["jupyter-olga--lab"]["spec"]
    assert spec["serviceAccountName"] == "outpost-users"
    # with the flavor's requests and limits, whatever the Hub asked for
    container = spec["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": 0.5, "memory": 256 * 1024**2},
        "limits": {"cpu": 1.0, "memory": 512 * 1024**2},
    }
    # and the image the Hub chose, in an unprivileged container
    assert container["image"] == "registry.example.org/lab/torch:2.5"
    assert not (container.get("securityContext") or {}).get("privileged")
    # and the pod's server answers at the address the start returned
    answer = served(f"{server.address}/user/olga/lab/")
    assert answer["user"] == "olga"
    assert answer["image"] == "registry.example.org/lab/torch:2.5"
    stop(server)


def test_without_the_image_allow_listed_the_hub_gets_the_outposts_image(site):
    # given an Outpost that lets Hubs choose nothing
    site["outpost"].allowed_overrides = []
    site["outpost"].save()
    # when a Hub asks for an image
    server = start(site, misc={"image": "evil.example.org/miner:latest"})
    # then the pod runs the Outpost's image
    pod = site["kube"].pod(site["namespace"], "jupyter-olga--lab")
    assert pod["spec"]["containers"][0]["image"] == DEFAULT_IMAGE
    assert server.overrides == {}
    stop(server)


def test_a_start_shows_the_pods_events_and_a_stop_deletes_the_pod(site):
    kube, namespace = site["kube"], site["namespace"]
    # when a server starts
    server = start(site)
    # then the user saw the pod being scheduled, its image pulled and its container started
    seen = messages(server)
    for words in (
        f"Successfully assigned {namespace}/jupyter-olga--lab",
        f'Pulling image "{DEFAULT_IMAGE}"',
        "Started container notebook",
    ):
        assert any(words in message for message in seen), (words, seen)
    # and a poll (in a round of its own) finds it running
    assert reconcile(server).status == Server.Status.RUNNING
    # when the Hub stops it
    server = stop(server)
    # then the pod is gone and its server no longer answers
    assert server.status == Server.Status.STOPPED
    assert kube.pods(namespace) == {}
    with pytest.raises(requests.ConnectionError):
        requests.get(server.address or "http://127.0.0.1:1/", timeout=5)


def test_the_reconciler_sees_a_pod_deleted_from_outside_as_stopped(site):
    kube, namespace = site["kube"], site["namespace"]
    # given a running server, polled running
    server = start(site)
    assert reconcile(server).status == Server.Status.RUNNING
    # when an administrator deletes its pod
    kube.delete_pod(namespace, "jupyter-olga--lab")
    # then the next round ends the server as stopped
    server = wait_until(
        lambda: (s := reconcile(server)).status == Server.Status.STOPPED and s,
        what="the server to be stopped",
    )
    assert server.poll_status == 1


def test_an_image_that_cannot_be_pulled_shows_why_and_fails_the_start(site):
    # given an image the registry does not have
    kube = site["kube"]
    kube.unpullable_images.add("registry.example.org/lab/missing:1")
    site["outpost"].spawner_config = {**site["outpost"].spawner_config, "start_timeout": 3}
    site["outpost"].save()
    server = admit(site, misc={"image": "registry.example.org/lab/missing:1"})
    # when the start runs
    server_start_run(server_id=server.pk)
    # then the user read the kubelet's reason, and the start failed without leaving a pod
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert any("ErrImagePull" in message for message in messages(server)), messages(server)
    wait_until(lambda: kube.pods(site["namespace"]) == {}, what="the pod to be deleted")


def test_an_admin_cannot_let_hubs_choose_the_namespace_or_the_service_account(site):
    # given the Kubernetes Outpost
    outpost = site["outpost"]
    # when an admin allow-lists the pod's namespace and service account for Hubs
    outpost.allowed_overrides = ["image", "namespace", "service_account"]
    # then the Outpost does not validate
    with pytest.raises(ValidationError) as error:
        outpost.full_clean()
    assert error.value.message_dict["allowed_overrides"] == [
        "A Hub may never set namespace, service_account on a Kubernetes Outpost "
        "(docs/kubernetes.md)."
    ]


def test_a_protected_trait_allow_listed_before_the_rule_never_reaches_the_pod(site):
    # given an Outpost row that allow-lists the service account (saved without validation,
    # as an older portal allowed)
    Outpost.objects.filter(pk=site["outpost"].pk).update(
        allowed_overrides=["image", "service_account"]
    )
    # when a Hub asks for the cluster's admin account
    server = start(site, misc={"service_account": "cluster-admin"})
    # then the pod runs with the Outpost's
    pod = site["kube"].pod(site["namespace"], "jupyter-olga--lab")
    assert server.overrides == {"service_account": "cluster-admin"}
    assert pod["spec"]["serviceAccountName"] == "outpost-users"
    stop(server)


def test_an_api_server_that_does_not_answer_makes_the_server_unknown_not_stopped(site):
    kube = site["kube"]
    # given a running server
    server = start(site)
    # when the API server is down during a round
    kube.unavailable = True
    try:
        server = reconcile(server)
    finally:
        kube.unavailable = False
    # then the server is unknown, its pod untouched; and running again once the API answers
    assert server.status == Server.Status.UNKNOWN
    assert kube.pod(site["namespace"], "jupyter-olga--lab")["status"]["phase"] == "Running"
    assert reconcile(server).status == Server.Status.RUNNING
    stop(server)


def test_through_the_api_a_pod_starts_on_the_outposts_worker_answers_and_a_delete_ends_it(
    site, celery_worker, portal_web, fake_hub
):
    # given the portal's web server and a worker for the Kubernetes Outpost (its own process,
    # with the kubeconfig in its environment, as a site runs it)
    outpost, hub, kube, namespace = site["outpost"], site["hub"], site["kube"], site["namespace"]
    celery_worker(outpost.celery_queue)
    base = f"{portal_web}/outposts/{outpost.slug}/services"
    auth = base64.b64encode(f"{hub.name}:{HUB_SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "execution-type": "async"}
    # when the Hub starts olga's server with another image
    body = {
        "name": "lab",
        "env": fake_hub.env("olga", "lab"),
        "user_options": {"start_id": "s1", "flavor": "small"},
        "misc": {"image": "registry.example.org/lab/torch:2.5"},
    }
    answer = requests.post(base, json=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    # then the pod runs, the Hub saw its events, and its server answers at the address
    server = Server.objects.get(outpost=outpost, name="lab", start_id="s1")
    server = wait_until(
        lambda: (s := Server.objects.get(pk=server.pk)).status == Server.Status.RUNNING and s,
        timeout=60,
        what="the server to run",
    )
    events = [call.body["message"] for call in fake_hub.posts("/users/progress/events/olga/lab")]
    assert any('Pulling image "registry.example.org/lab/torch:2.5"' in m for m in events), events
    answer = served(f"{server.address}/user/olga/lab/")
    assert answer == {
        "user": "olga",
        "image": "registry.example.org/lab/torch:2.5",
        "path": "/user/olga/lab/",
    }
    poll = requests.get(f"{base}/lab/s1", headers=headers, timeout=10)
    assert poll.json() == {"status": None, "logs": []}
    # when the Hub deletes it
    stop = requests.delete(f"{base}/lab/s1", headers=headers, timeout=30)
    assert stop.status_code == 202
    # then the pod is gone and the server stopped
    wait_until(lambda: kube.pods(namespace) == {}, timeout=60, what="the pod to go")
    wait_until(
        lambda: Server.objects.get(pk=server.pk).status == Server.Status.STOPPED,
        timeout=60,
        what="the server to be stopped",
    )


def test_two_starts_in_two_threads_at_once_each_see_their_own_pod(site):
    # given two starts, run at once by two threads as a worker's pool runs them (each its
    # own event loop, sharing KubeSpawner's class)
    servers = [admit(site, user="olga"), admit(site, user="pavel")]

    def run(server: Server) -> None:
        try:
            server_start_run(server_id=server.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    # then both run, each at its own pod's address
    users = []
    for server in servers:
        server.refresh_from_db()
        assert server.status == Server.Status.RUNNING, server.error
        users.append(served(f"{server.address}/")["user"])
    assert users == ["olga", "pavel"]
    assert sorted(site["kube"].pods(site["namespace"])) == [
        "jupyter-olga--lab",
        "jupyter-pavel--lab",
    ]
    for server in servers:
        assert stop(server).status == Server.Status.STOPPED
    assert site["kube"].pods(site["namespace"]) == {}
