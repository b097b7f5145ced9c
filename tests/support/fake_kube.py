"""A stand-in for a Kubernetes API server, for the tests of KubeSpawner through the portal.

No real API server can run here (no kube-apiserver, k3s, kind or kwok, no container engine:
see ../shared/spec/test-environment.md), so this small fake serves the part of core/v1 that
the real, unmodified KubeSpawner uses: list, watch (``watch=True``), get, create, merge-patch
and delete of pods, services, secrets, events and PVCs in a namespace, with equality label
and field selectors and resource versions.

Its "kubelet" runs a created pod's first container as a local process: ``command`` + ``args``
(KubeSpawner puts the server command in ``args``; the fake images have no entrypoint), with
the container's plain ``env`` values, a minimal PATH and ``FAKE_KUBE_POD_IP``. Each pod gets
its own loopback address as its pod IP, standing in for a pod's own network namespace, so
every pod's server can listen on the same port; each fake has a /24 of 127/8 of its own
(127.X.Y.N), so that the fakes of tests running at once never hand out the same address.
It records the events a real kubelet would (Scheduled, Pulling, Pulled, Created, Started;
Failed/BackOff for an image the test marks unpullable, whose pod then stays Pending), and
the container's exit as ``terminated`` with its exit code. ``unavailable`` makes it answer
503 to everything.

What it does not do: authentication, RBAC, admission, scheduling, probes, volumes, strategic
merge patches, JSON patches, cluster-wide lists. It is test code, not a Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import os
import random
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

KINDS = {
    "pods": "Pod",
    "services": "Service",
    "secrets": "Secret",
    "events": "Event",
    "persistentvolumeclaims": "PersistentVolumeClaim",
}
# How long the fake kubelet takes for each step of a pod's start: the progress events of a
# start are seen one by one, as on a real cluster.
KUBELET_STEP_SECONDS = 0.2


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def _matches(obj: dict[str, Any], *, labels: str, fields: str) -> bool:
    """Equality selectors only (``a=b,c=d``), as KubeSpawner's reflectors send them."""
    own_labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, labels.split(",")):
        key, _, value = term.partition("=")
        if own_labels.get(key) != value:
            return False
    for term in filter(None, fields.split(",")):
        path, _, value = term.partition("=")
        node: Any = obj
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if str(node) != value:
            return False
    return True


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge patch (RFC 7386)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass
class _Change:
    version: int
    kind: str
    namespace: str
    type: str
    obj: dict[str, Any]


@dataclass
class FakeKube:
    """The fake API server's state; served by ``FakeKubeServer``. Read it from tests through
    the thread-safe helpers (``pod``, ``pods``, ``delete_pod``)."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    changes: list[_Change] = field(default_factory=list)
    processes: dict[tuple[str, str], asyncio.subprocess.Process] = field(default_factory=dict)
    # Images whose pull fails (their pods stay Pending with ErrImagePull).
    unpullable_images: set[str] = field(default_factory=set)
    # While set, every API request answers 503 (an API server down or restarting).
    unavailable: bool = False
    version: itertools.count = field(default_factory=lambda: itertools.count(1))
    next_ip: itertools.count = field(default_factory=lambda: itertools.count(2))
    # Not 127.0.0.x, where other tests' servers listen; two fakes share one in 65,000.
    pod_network: str = field(
        default_factory=lambda: f"127.{random.randint(1, 254)}.{random.randint(0, 255)}"
    )
    changed: asyncio.Condition | None = None
    loop: asyncio.AbstractEventLoop | None = None
    log_dir: Path | None = None

    # --- the store -------------------------------------------------------------------------

    async def _record(self, kind: str, namespace: str, type_: str, obj: dict[str, Any]) -> None:
        assert self.changed is not None
        version = next(self.version)
        if type_ != "DELETED":
            obj["metadata"]["resourceVersion"] = str(version)
        self.changes.append(_Change(version, kind, namespace, type_, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()

    async def put(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name") or f"{meta.get('generateName', 'obj-')}{uuid.uuid4().hex[:5]}"
        meta.update(
            name=name,
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
        )
        obj.setdefault("kind", KINDS[kind])
        obj.setdefault("apiVersion", "v1")
        self.objects[(kind, namespace, name)] = obj
        await self._record(kind, namespace, "ADDED", obj)
        return obj

    async def modify(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return
        _merge(obj, patch)
        await self._record(kind, namespace, "MODIFIED", obj)

    async def remove(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((kind, namespace, name), None)
        if obj is not None:
            await self._record(kind, namespace, "DELETED", obj)
        return obj

    async def event(self, pod: dict[str, Any], *, reason: str, message: str, type_="Normal"):
        meta = pod["metadata"]
        await self.put(
            "events",
            meta["namespace"],
            {
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}"},
                "involvedObject": {
                    "kind": "Pod",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                    "apiVersion": "v1",
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": _now(),
                "lastTimestamp": _now(),
                "eventTime": None,
                "source": {"component": "kubelet", "host": "fake-node"},
            },
        )

    # --- the kubelet -----------------------------------------------------------------------

    async def run_pod(self, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        image = container.get("image", "")
        step = KUBELET_STEP_SECONDS
        await asyncio.sleep(step)
        await self.event(
            pod, reason="Scheduled", message=f"Successfully assigned {namespace}/{name} to fake"
        )
        await self.modify("pods", namespace, name, {"spec": {"nodeName": "fake-node"}})
        await asyncio.sleep(step)
        await self.event(pod, reason="Pulling", message=f'Pulling image "{image}"')
        await asyncio.sleep(step)
        if image in self.unpullable_images:
            await self.event(
                pod,
                reason="Failed",
                type_="Warning",
                message=f'Failed to pull image "{image}": not found: ErrImagePull',
            )
            waiting = {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
            await self.modify(
                "pods",
                namespace,
                name,
                {"status": {"containerStatuses": [self._container_status(container, waiting)]}},
            )
            return
        await self.event(pod, reason="Pulled", message=f'Successfully pulled image "{image}"')
        ip = f"{self.pod_network}.{next(self.next_ip) % 250 + 2}"
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FAKE_KUBE_POD_IP": ip}
        env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
        assert self.log_dir is not None
        log = open(self.log_dir / f"{namespace}-{name}.log", "ab")  # noqa: SIM115 - child owns it
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=log, stderr=log, start_new_session=True
            )
        except OSError as error:
            await self.event(pod, reason="Failed", type_="Warning", message=str(error))
            return
        finally:
            log.close()
        self.processes[(namespace, name)] = process
        await self.event(pod, reason="Created", message="Created container notebook")
        await self.event(pod, reason="Started", message="Started container notebook")
        running = {"running": {"startedAt": _now()}}
        await self.modify(
            "pods",
            namespace,
            name,
            {
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": "127.0.0.1",
                    "startTime": _now(),
                    "containerStatuses": [self._container_status(container, running, ready=True)],
                }
            },
        )
        code = await process.wait()
        if ("pods", namespace, name) not in self.objects:
            return  # deleted: its process was ended by the delete
        terminated = {"terminated": {"exitCode": code, "finishedAt": _now(), "reason": "Exited"}}
        await self.modify(
            "pods",
            namespace,
            name,
            {
                "status": {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "containerStatuses": [self._container_status(container, terminated)],
                }
            },
        )

    @staticmethod
    def _container_status(container, state, *, ready=False) -> dict[str, Any]:
        # image and imageID are required by the client's V1ContainerStatus.
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": f"fake://{container.get('image', '')}",
            "ready": ready,
            "restartCount": 0,
            "started": ready,
            "state": state,
        }

    async def kill_pod(self, namespace: str, name: str, grace: float) -> None:
        process = self.processes.pop((namespace, name), None)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=max(grace, 0.1))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        await self.remove("pods", namespace, name)

    # --- for the tests (from their thread) -------------------------------------------------

    def _call(self, coroutine) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def pods(self, namespace: str) -> dict[str, dict[str, Any]]:
        async def read():
            return {
                key[2]: copy.deepcopy(obj)
                for key, obj in self.objects.items()
                if key[0] == "pods" and key[1] == namespace
            }

        return self._call(read())

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods(namespace).get(name)

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod as an administrator would (``kubectl delete pod``)."""
        self._call(self.kill_pod(namespace, name, grace=1))

    def shutdown_pods(self) -> None:
        async def all_down():
            for namespace, name in list(self.processes):
                await self.kill_pod(namespace, name, grace=1)

        self._call(all_down())


class FakeKubeServer:
    """The HTTP side: core/v1 routes over a ``FakeKube``, in a thread with its own loop."""

    def __init__(self, log_dir: Path) -> None:
        self.kube = FakeKube(log_dir=log_dir)
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-kube", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("The fake Kubernetes API did not start")

    def stop(self) -> None:
        self.kube.shutdown_pods()
        assert self.kube.loop is not None and self._stop is not None
        self.kube.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.kube.loop = asyncio.get_running_loop()
        self.kube.changed = asyncio.Condition()
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._availability])
        base = "/api/v1/namespaces/{namespace}/{kind}"
        app.router.add_get(base, self.list_or_watch)
        app.router.add_post(base, self.create)
        app.router.add_get(base + "/{name}", self.read)
        app.router.add_patch(base + "/{name}", self.patch)
        app.router.add_delete(base + "/{name}", self.delete)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @web.middleware
    async def _availability(self, request: web.Request, handler) -> web.StreamResponse:
        if self.kube.unavailable:
            return _status(503, "ServiceUnavailable", "the API server is unavailable")
        return await handler(request)

    @staticmethod
    def _kind(request: web.Request) -> str:
        kind = request.match_info["kind"]
        if kind not in KINDS:
            raise web.HTTPNotFound()
        return kind

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        kind, namespace = self._kind(request), request.match_info["namespace"]
        labels = request.query.get("labelSelector", "")
        fields = request.query.get("fieldSelector", "")
        kube = self.kube
        if request.query.get("watch", "").lower() not in ("true", "1"):
            items = [
                obj
                for key, obj in kube.objects.items()
                if key[:2] == (kind, namespace) and _matches(obj, labels=labels, fields=fields)
            ]
            return web.json_response(
                {
                    "kind": f"{KINDS[kind]}List",
                    "apiVersion": "v1",
                    "metadata": {
                        "resourceVersion": str(len(kube.changes) and kube.changes[-1].version)
                    },
                    "items": items,
                }
            )
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 30)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        # A watcher that goes away (its event loop ended) is no error.
        with contextlib.suppress(ConnectionError):
            await self._stream_changes(response, kind, namespace, labels, fields, since, timeout)
            await response.write_eof()
        return response

    async def _stream_changes(self, response, kind, namespace, labels, fields, since, timeout):
        kube = self.kube
        deadline = asyncio.get_running_loop().time() + timeout
        assert kube.changed is not None
        while True:
            for change in [c for c in kube.changes if c.version > since]:
                since = change.version
                if (change.kind, change.namespace) != (kind, namespace):
                    continue
                if not _matches(change.obj, labels=labels, fields=fields):
                    continue
                line = json.dumps({"type": change.type, "object": change.obj}) + "\n"
                await response.write(line.encode())
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            async with kube.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(kube.changed.wait(), timeout=remaining)

    async def create(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request), request.match_info["namespace"]
        body = await request.json()
        name = (body.get("metadata") or {}).get("name", "")
        if name and (kind, namespace, name) in self.kube.objects:
            return _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
        if kind == "pods":
            body["status"] = {"phase": "Pending", "conditions": []}
        obj = await self.kube.put(kind, namespace, body)
        if kind == "pods":
            asyncio.ensure_future(self.kube.run_pod(obj))
        return web.json_response(obj, status=201)

    async def read(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request), request.match_info["namespace"]
        obj = self.kube.objects.get((kind, namespace, request.match_info["name"]))
        if obj is None:
            return _status(404, "NotFound", f'{kind} "{request.match_info["name"]}" not found')
        return web.json_response(obj)

    async def patch(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request), request.match_info["namespace"]
        name = request.match_info["name"]
        if (kind, namespace, name) not in self.kube.objects:
            return _status(404, "NotFound", f'{kind} "{name}" not found')
        await self.kube.modify(kind, namespace, name, await request.json())
        return web.json_response(self.kube.objects[(kind, namespace, name)])

    async def delete(self, request: web.Request) -> web.Response:
        kind, namespace = self._kind(request), request.match_info["namespace"]
        name = request.match_info["name"]
        obj = self.kube.objects.get((kind, namespace, name))
        if obj is None:
            return _status(404, "NotFound", f'{kind} "{name}" not found')
        if kind != "pods":
            await self.kube.remove(kind, namespace, name)
            return web.json_response(obj)
        body = await request.json() if request.can_read_body else {}
        grace = float((body or {}).get("gracePeriodSeconds") or 1)
        await self.kube.modify(kind, namespace, name, {"metadata": {"deletionTimestamp": _now()}})
        asyncio.ensure_future(self.kube.kill_pod(namespace, name, grace))
        return web.json_response(obj)


KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: "{url}"}}
users:
- name: fake
  user: {{token: fake-token}}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: default}}
current-context: fake
"""


def point_clients_at(path: Path) -> None:
    """Make KubeSpawner's next client configuration read ``path``.

    kubernetes_asyncio reads KUBECONFIG once, when it is imported, and KubeSpawner loads the
    configuration once per process (an lru_cache): both are set again here.
    """
    os.environ["KUBECONFIG"] = str(path)
    from kubernetes_asyncio.config import kube_config
    from kubespawner import clients

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
    clients.load_config.cache_clear()


@pytest.fixture(scope="session")
def fake_kube_server(tmp_path_factory) -> Iterator[FakeKubeServer]:
    """The fake API server for the session, and a kubeconfig pointing at it."""
    folder = tmp_path_factory.mktemp("fake-kube")
    server = FakeKubeServer(log_dir=folder)
    server.start()
    config = folder / "kubeconfig"
    config.write_text(KUBECONFIG.format(url=server.url))
    point_clients_at(config)
    yield server
    server.stop()


@pytest.fixture
def fake_kube(fake_kube_server) -> Iterator[FakeKube]:
    """The fake cluster's state; the pods a test left are deleted at teardown."""
    yield fake_kube_server.kube
    fake_kube_server.kube.shutdown_pods()
    fake_kube_server.kube.unpullable_images.clear()
    fake_kube_server.kube.unavailable = False
