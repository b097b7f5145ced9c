"""The spawner runner: an ordinary JupyterHub spawner driven outside JupyterHub.

A ``SpawnerRunner`` is built (synchronously, from the database) for one Server row and then
driven from an event loop: ``start``, ``poll``, ``stop``, ``get_state`` as JupyterHub would.
It never touches the database itself; callers persist what it returns.

Process design (local-process spawners). LocalProcessSpawner starts the server with Popen
(in a new session, so worker signals do not reach it), which makes the server a child of the
worker process. Only that process can reap it and learn its exit status; any other process
polling the pid with ``os.kill(pid, 0)`` sees an exited-but-unreaped child (a zombie) as
alive. So:

- the worker runs ONE process with a thread pool (settings.CELERY_WORKER_POOL = "threads"):
  every start, poll and stop of an Outpost's servers runs in the process that owns them;
- the Popen handle of every server this process started is kept in ``_CHILDREN`` and given
  back to the rebuilt spawner on each poll/stop, so ``Popen.poll()`` reaps the child and
  reports its real exit status (dropping the handle would let Popen's own clean-up reap it
  behind our back and lose the status);
- a server this process did not start (the worker restarted; someone runs prefork anyway) is
  judged by its pid, and a pid that is a zombie counts as exited: polls stay truthful even
  though the exit status is then unknown (reported as 0, as JupyterHub does).

Batch and Kubernetes spawners keep their servers elsewhere; none of this applies to them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import pwd
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import MethodType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.utils.html import strip_tags
from django.utils.module_loading import import_string
from traitlets.config import Config

from portal.crypto import decrypt_text

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner

    from outposts.models import Server

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, str], Awaitable[None]]
# Gets the spawner's state while a start runs; answers whether this attempt still owns it.
Heartbeat = Callable[[dict[str, Any]], Awaitable[bool]]

# Popen handles of the servers this process started, by pid (see the module docstring).
_CHILDREN: dict[int, subprocess.Popen[Any]] = {}
_CHILDREN_LOCK = threading.Lock()

# The PEM files a start may carry, and the only file names ever written for them.
CERT_FILES = {"keyfile": "server.key", "certfile": "server.crt", "cafile": "ca.crt"}
TRUST_BUNDLE_FILES = {
    "hub-ca": "hub-ca.crt",
    "proxy-api-ca": "proxy-api-ca.crt",
    "proxy-client-ca": "proxy-client-ca.crt",
    "notebooks-ca": "notebooks-ca.crt",
    "services-ca": "services-ca.crt",
}


SSL_ENV = ("JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE", "JUPYTERHUB_SSL_CLIENT_CA")


class UnsafeName(ValueError):
    """A user or server name that could escape a folder if a spawner built a path from it."""


class SystemAccount(ValueError):
    """A Hub user name that is a system account (root, a service) on the Outpost's host."""


def check_not_system_account(name: str, *, min_uid: int | None) -> None:
    """Refuse a user name that is a local account below ``min_uid``; None = no check.

    The Hub chooses the user name, and spawners that run servers as the user take the
    account from it (SlurmSpawner runs ``sudo -u <name> sbatch``, LocalProcessSpawner
    setuids): a Hub must not choose root. Names that are no local account pass, since
    spawners such as KubeSpawner and SimpleLocalProcessSpawner do not map names to accounts.
    """
    if min_uid is None:
        return
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    if uid < min_uid:
        raise SystemAccount(f"{name} is a system account on this Outpost and cannot start servers.")


@dataclass(frozen=True)
class TLSMaterial:
    """Internal-SSL PEM contents of one start; never stored in the database."""

    certs: dict[str, str] = field(default_factory=dict, repr=False)
    internal_trust_bundles: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_token(cls, token: str | None) -> TLSMaterial | None:
        """Decrypt what server_start carried to the task; None when SSL is off."""
        if not token:
            return None
        data = json.loads(decrypt_text(token))
        certs = {k: v for k, v in (data.get("certs") or {}).items() if k in CERT_FILES and v}
        if not certs:
            return None
        bundles = {
            k: v
            for k, v in (data.get("internal_trust_bundles") or {}).items()
            if k in TRUST_BUNDLE_FILES and v
        }
        return cls(certs=certs, internal_trust_bundles=bundles)


def server_certs_dir(server_id: int) -> Path:
    """The folder of a server's cert files: named from its id, never from a user-given name."""
    return Path(settings.SERVER_CERTS_DIR) / f"server-{int(server_id)}"


def _write_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def write_tls_files(server_id: int, tls: TLSMaterial) -> tuple[dict[str, str], dict[str, str]]:
    """Write the PEM files under the server's folder; returns cert paths and bundle paths."""
    folder = server_certs_dir(server_id)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_paths: dict[str, str] = {}
    for key, file_name in CERT_FILES.items():
        if key in tls.certs:
            _write_private(folder / file_name, tls.certs[key])
            cert_paths[key] = str(folder / file_name)
    bundle_paths: dict[str, str] = {}
    for key, content in tls.internal_trust_bundles.items():
        _write_private(folder / TRUST_BUNDLE_FILES[key], content)
        bundle_paths[key] = str(folder / TRUST_BUNDLE_FILES[key])
    return cert_paths, bundle_paths


def remove_tls_files(server_id: int) -> None:
    shutil.rmtree(server_certs_dir(server_id), ignore_errors=True)


def check_name_safe(name: str, *, what: str, allow_empty: bool = False) -> None:
    """JupyterHub's own rule for user names, applied to user and server names alike.

    Spawners build paths from them (home folders, log files); "/" and names made only of dots
    could then escape their folder.
    """
    if name == "" and allow_empty:
        return
    if not name or "/" in name or "\\" in name or "\x00" in name or set(name) == {"."}:
        raise UnsafeName(f"The {what} {name!r} is not allowed on this Outpost.")


def rewrite_service_url(requested: str, computed: str) -> str:
    """The Hub's JUPYTERHUB_SERVICE_URL with scheme, host and port of the spawner's own one.

    The stock Hub picks a port of its own; the server must listen where the spawner decided,
    so the address it listens on, the env it gets and the address returned all agree.
    """
    want, own = urlsplit(requested), urlsplit(computed)
    return urlunsplit((own.scheme or want.scheme, own.netloc, want.path, want.query, ""))


def format_address(result: Any) -> str:
    """What Spawner.start returned, as the ``service`` answer: ``host:port`` or a URL."""
    if isinstance(result, tuple | list) and len(result) == 2:
        host, port = result
        host = host or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{int(port)}"
    return str(result)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def _remember_child(spawner: Spawner) -> None:
    proc = getattr(spawner, "proc", None)
    if isinstance(proc, subprocess.Popen):
        with _CHILDREN_LOCK:
            _CHILDREN[proc.pid] = proc


def _forget_child(pid: int) -> None:
    with _CHILDREN_LOCK:
        _CHILDREN.pop(pid, None)


def _adopt_child(spawner: Spawner) -> None:
    """Give a rebuilt spawner the Popen handle of its server if this process started it."""
    pid = getattr(spawner, "pid", 0)
    if pid and getattr(spawner, "proc", None) is None:
        with _CHILDREN_LOCK:
            proc = _CHILDREN.get(pid)
        if proc is not None:
            spawner.proc = proc


class _StandInUser:
    """What a spawner reads of JupyterHub's User: name, id, URLs, auth state."""

    def __init__(self, *, name: str, user_id: int, base_url: str) -> None:
        from jupyterhub.utils import url_escape_path, url_path_join

        self.name = name
        self.id = user_id
        self.escaped_name = url_escape_path(name)
        self.url = url_path_join(base_url, "user", self.escaped_name, "/")
        self.spawners: dict[str, Any] = {}
        self.settings: dict[str, Any] = {}

    async def get_auth_state(self) -> dict[str, Any]:
        return {}

    def progress_url(self, server_name: str = "") -> str:
        return ""

    async def stop(self, server_name: str = "") -> None:
        """Some Hub-side spawners ask their user to stop; the portal stops on its own."""


class _StandInHub:
    """What a spawner reads of JupyterHub's Hub object."""

    def __init__(self, *, api_url: str, base_url: str, public_host: str) -> None:
        self.api_url = api_url
        self.base_url = base_url
        self.public_host = public_host
        self.url = base_url


class _StandInDB:
    """batchspawner and KubeSpawner call db.commit(); state is saved by the caller instead."""

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        return None


@cache
def _outside_hub(spawner_class: type[Spawner]) -> type[Spawner]:
    """The spawner class with its server name held by itself instead of JupyterHub's ORM.

    Spawner.name reads orm_spawner, which must stay None here (an ORM spawner without a
    server would clear the Server object the runner sets). The subclass keeps the class
    name, so traitlets config written for the class still applies.
    """
    from traitlets import Unicode

    return type(
        spawner_class.__name__,
        (spawner_class,),
        {
            "__module__": spawner_class.__module__,
            "portal_server_name": Unicode(""),
            "name": property(lambda self: self.portal_server_name),
            "display_name": property(lambda self: self.portal_server_name),
        },
    )


@dataclass(frozen=True)
class ServerSpec:
    """Everything the runner needs of a Server row, read before any event loop runs."""

    server_id: int
    spawner_class: str
    trait_values: dict[str, Any]
    user_name: str
    user_id: int
    server_name: str
    env: dict[str, str]
    user_options: dict[str, Any]
    state: dict[str, Any] | None
    min_system_uid: int | None = None

    @classmethod
    def from_server(cls, server: Server) -> ServerSpec:
        """Layer the traits: Outpost config, then allow-listed misc, then flavor resources.

        The flavor comes last: a trait an admin allow-lists for Hubs (say ``mem_limit`` for
        Outposts without flavors) must never lift a flavor's limit.
        """
        outpost = server.outpost
        traits: dict[str, Any] = dict(outpost.spawner_config or {})
        allowed = set(outpost.allowed_overrides or [])
        # The allow-lists are checked again here: an admin may have narrowed them since
        # admission.
        traits.update({k: v for k, v in (server.overrides or {}).items() if k in allowed})
        if server.flavor is not None:
            traits.update(server.flavor.resources or {})
        allowed_options = set(outpost.allowed_user_options or [])
        user_options = {
            k: v for k, v in (server.user_options or {}).items() if k in allowed_options
        }
        env = {str(k): str(v) for k, v in (server.env or {}).items()}
        try:
            user_id = int(server.user_id)
        except ValueError:
            user_id = 0
        return cls(
            server_id=server.pk,
            spawner_class=outpost.spawner_class,
            trait_values=traits,
            user_name=server.user_name,
            user_id=user_id,
            server_name=server.name,
            env=env,
            user_options=user_options,
            state=server.spawner_state,
            min_system_uid=outpost.min_system_uid,
        )


class SpawnerRunner:
    """One server's spawner, built as JupyterHub builds it, with the request applied."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        check_name_safe(spec.user_name, what="user name")
        check_name_safe(spec.server_name, what="server name", allow_empty=True)
        self.spawner = self._build()

    @classmethod
    def for_server(cls, server: Server) -> SpawnerRunner:
        return cls(ServerSpec.from_server(server))

    def _build(self) -> Spawner:
        from jupyterhub.objects import Server as HubServer
        from jupyterhub.utils import url_escape_path, url_path_join

        spec, env = self.spec, self.spec.env
        spawner_class = _outside_hub(import_string(spec.spawner_class))
        base_url = env.get("JUPYTERHUB_BASE_URL") or "/"
        user = _StandInUser(name=spec.user_name, user_id=spec.user_id, base_url=base_url)
        hub = _StandInHub(
            api_url=env.get("JUPYTERHUB_API_URL", ""),
            base_url=url_path_join(base_url, "hub/"),
            public_host=env.get("JUPYTERHUB_HOST", ""),
        )
        client_id = f"jupyterhub-user-{url_escape_path(spec.user_name)}"
        if spec.server_name:
            client_id = f"{client_id}-{url_escape_path(spec.server_name)}"
        spawner = spawner_class(
            user=user,
            hub=hub,
            db=_StandInDB(),
            orm_spawner=None,
            portal_server_name=spec.server_name,
            config=Config({spawner_class.__name__: dict(spec.trait_values)}),
            oauth_client_id=env.get("JUPYTERHUB_CLIENT_ID") or client_id,
            api_token=env.get("JUPYTERHUB_API_TOKEN", ""),
            user_options=dict(spec.user_options),
        )
        user.spawners[spec.server_name] = spawner
        prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or url_path_join(
            user.url, url_escape_path(spec.server_name), "/"
        )
        # Without a Server the spawner serves at "/" and every request under the prefix 404s.
        spawner._server = HubServer(base_url=prefix)
        if spec.state:
            spawner.load_state(spec.state)
        original_get_env = spawner.get_env
        original_poll = spawner.poll
        request_env = dict(env)

        def get_env(self: Spawner) -> dict[str, str]:
            # The Hub's env wins over what the spawner computes, except where the server
            # listens: that stays the spawner's own ip and port (api-contract §3.1).
            computed = original_get_env()
            merged = {**computed, **request_env}
            if "JUPYTERHUB_SERVICE_URL" in request_env and computed.get("JUPYTERHUB_SERVICE_URL"):
                merged["JUPYTERHUB_SERVICE_URL"] = rewrite_service_url(
                    request_env["JUPYTERHUB_SERVICE_URL"], computed["JUPYTERHUB_SERVICE_URL"]
                )
            for key in SSL_ENV:
                if key in computed:
                    merged[key] = computed[key]  # the paths this runner wrote, not the Hub's
            return merged

        async def poll(self: Spawner) -> int | None:
            _adopt_child(self)
            pid = getattr(self, "pid", 0)
            status = await original_poll()
            if status is None and pid and getattr(self, "proc", None) is None and _is_zombie(pid):
                log.warning("Server pid %s exited (zombie of another process); status unknown", pid)
                self.clear_state()
                return 0
            if status is not None and pid:
                _forget_child(pid)
            return status

        # Bound to the instance so the spawner's own calls (start, stop) see them too.
        spawner.get_env = MethodType(get_env, spawner)
        spawner.poll = MethodType(poll, spawner)
        return spawner

    async def start(
        self, *, tls: TLSMaterial | None = None, on_progress: ProgressCallback | None = None
    ) -> str:
        """Start the server as JupyterHub does; returns its address (``host:port`` or URL).

        Progress events of the spawner are passed to ``on_progress`` while it starts. Raises
        SystemAccount when the user name is a system account of this host.
        """
        self.check_may_start()
        spawner = self.spawner
        hook = spawner.run_pre_spawn_hook()
        if inspect.isawaitable(hook):
            await hook
        if tls is not None:
            cert_paths, bundle_paths = write_tls_files(self.spec.server_id, tls)
            spawner.internal_ssl = True
            spawner.internal_trust_bundles = bundle_paths
            moved = spawner.move_certs(cert_paths)
            spawner.cert_paths = await moved if inspect.isawaitable(moved) else moved
        spawner._spawn_pending = True
        spawner._start_pending = True
        start_future = asyncio.ensure_future(spawner.start())
        spawner._spawn_future = start_future
        pump = asyncio.ensure_future(self._pump_progress(on_progress))
        try:
            result = await start_future
        finally:
            spawner._spawn_pending = False
            spawner._start_pending = False
            _remember_child(spawner)
            await self._finish_pump(pump)
        address = format_address(result)
        if isinstance(result, tuple | list) and len(result) == 2:
            spawner.server.ip, spawner.server.port = result[0] or "127.0.0.1", int(result[1])
        return address

    def check_may_start(self) -> None:
        """Raise SystemAccount if the Hub's user name is a system account of this host.

        It runs where the spawner runs (the Outpost's worker), where the accounts are real.
        """
        check_not_system_account(self.spec.user_name, min_uid=self.spec.min_system_uid)

    async def _pump_progress(self, on_progress: ProgressCallback | None) -> None:
        if on_progress is None:
            return
        async for event in self.spawner.progress():
            if not isinstance(event, dict):
                continue
            # Plain text only: html_message from a spawner is never passed on as HTML.
            message = str(event.get("message") or strip_tags(str(event.get("html_message", ""))))
            if not message:
                continue
            progress = event.get("progress")
            await on_progress(int(progress) if isinstance(progress, int | float) else 50, message)

    @staticmethod
    async def _finish_pump(pump: asyncio.Future[None]) -> None:
        # Give the spawner's progress generator a moment to yield what it has, then end it.
        try:
            await asyncio.wait_for(asyncio.shield(pump), timeout=2)
        except TimeoutError:
            pump.cancel()
        except Exception:
            log.exception("Progress events of a spawner failed; the start goes on")

    async def poll(self) -> int | None:
        """None while the server runs, else its exit status."""
        return await self.spawner.poll()

    async def stop(self, *, now: bool = False) -> int | None:
        """Stop the server and clean up; returns its exit status if the spawner knows it."""
        spawner = self.spawner
        pid = getattr(spawner, "pid", 0)
        _adopt_child(spawner)
        try:
            await spawner.stop(now=now)
            status = await spawner.poll()
        finally:
            remove_tls_files(self.spec.server_id)
        spawner.clear_state()
        hook = spawner.run_post_stop_hook()
        if inspect.isawaitable(hook):
            await hook
        if pid:
            _forget_child(pid)
        return status

    def get_state(self) -> dict[str, Any]:
        """The spawner's state, JSON-safe, for Server.spawner_state."""
        return json.loads(json.dumps(self.spawner.get_state(), default=str))


class StartOutcome(StrEnum):
    RUNNING = "running"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    FAILED = "failed"
    # Another attempt took the server over (this one stalled past its lease).
    SUPERSEDED = "superseded"


@dataclass
class StartResult:
    outcome: StartOutcome
    address: str = ""
    error: BaseException | None = None


async def start_watched(
    runner: SpawnerRunner,
    *,
    tls: TLSMaterial | None,
    on_progress: ProgressCallback | None,
    stop_requested: Callable[[], Awaitable[bool]],
    timeout: float,
    heartbeat: Heartbeat | None = None,
    check_every: float = 1.0,
) -> StartResult:
    """Start, but give up when a stop is requested or ``timeout`` seconds pass.

    Every ``check_every`` seconds while the spawner starts, ``heartbeat`` gets its current
    state: a batch job or a process may exist long before start() returns, and whoever
    recovers from a crash of this worker needs that state to stop it. When the heartbeat says
    another attempt owns the server now, this one gives up. Whatever the spawner made is
    stopped again when the start does not end running.
    """
    try:
        runner.check_may_start()
    except SystemAccount as error:
        # Refused before the spawner did anything: nothing to clean up (a batch spawner's
        # clean-up would itself run a command as that account).
        return StartResult(outcome=StartOutcome.FAILED, error=error)
    start = asyncio.ensure_future(runner.start(tls=tls, on_progress=on_progress))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 0)
    outcome = None
    while not start.done():
        await asyncio.wait({start}, timeout=min(check_every, max(deadline - loop.time(), 0)))
        if start.done():
            break
        if heartbeat is not None and not await _beat(runner, heartbeat):
            outcome = StartOutcome.SUPERSEDED
        elif await stop_requested():
            outcome = StartOutcome.CANCELLED
        elif loop.time() >= deadline:
            outcome = StartOutcome.TIMED_OUT
        if outcome:
            start.cancel()
            try:
                await start
            except asyncio.CancelledError:
                log.info("Start of server %s cancelled (%s)", runner.spec.server_id, outcome)
            except Exception:
                log.exception("Start of server %s failed while cancelled", runner.spec.server_id)
            await _cleanup(runner)
            return StartResult(outcome=outcome)
    try:
        address = start.result()
    except Exception as error:  # noqa: BLE001 - any spawner error fails the start (logged there)
        await _cleanup(runner)
        return StartResult(outcome=StartOutcome.FAILED, error=error)
    return StartResult(outcome=StartOutcome.RUNNING, address=address)


async def _beat(runner: SpawnerRunner, heartbeat: Heartbeat) -> bool:
    try:
        return await heartbeat(runner.get_state())
    except Exception:
        # A database blip must not cancel a start; the next beat tries again.
        log.exception("Heartbeat of the start of server %s failed", runner.spec.server_id)
        return True


async def _cleanup(runner: SpawnerRunner) -> None:
    try:
        await runner.stop(now=True)
    except Exception:
        log.exception("Could not stop what spawner %s made", runner.spec.spawner_class)
