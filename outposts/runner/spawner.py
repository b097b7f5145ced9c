"""One server's spawner, built as JupyterHub builds it, outside JupyterHub.

A ``SpawnerRunner`` is built (synchronously, from the database) for one Server row and then
driven from an event loop: ``start``, ``poll``, ``stop``, ``get_state`` as JupyterHub would.
It never touches the database itself; callers persist what it returns.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import MethodType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from asgiref.sync import async_to_sync
from django.utils.html import strip_tags
from django.utils.module_loading import import_string
from traitlets.config import Config

from outposts.errors import PortalError
from outposts.runner import kube, slurm
from outposts.runner.accounts import UnixAccountRule
from outposts.runner.checks import (
    check_name_safe,
    check_not_system_account,
    request_env_allowed,
)
from outposts.runner.children import adopt_child, forget_child, is_zombie, remember_child
from outposts.runner.logtail import SpawnerLogTail, secret_values, spawner_logger
from outposts.runner.standins import StandInDB, StandInHub, StandInUser, outside_hub
from outposts.runner.tls import SSL_ENV, TLSMaterial, remove_tls_files, write_tls_files

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner

    from outposts.models import Server

T = TypeVar("T")

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, str], Awaitable[None]]
# Reads the (host, port) the server's start wrapper reported, or None while it has not.
AddressSource = Callable[[], Awaitable[tuple[str, int] | None]]

# How often a start waiting for its server's address report reads it, and how often it
# checks meanwhile that a server whose spawner did its part still runs.
REPORT_CHECK_SECONDS = 0.5
REPORT_POLL_EVERY = 5.0
WAITING_FOR_ADDRESS = "Waiting for the server to report its address."


class ServerNotReporting(PortalError):
    """The server ended before its start wrapper reported where it listens."""


def run_sync(coroutine_function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run a runner coroutine from a worker's sync code.

    async_to_sync runs the loop in its own thread and keeps this thread free for the
    sync_to_async callbacks, so database writes from progress events use this thread's
    connection, never one inside the event loop.
    """
    return async_to_sync(coroutine_function)(*args, **kwargs)


def rewrite_service_url(requested: str, computed: str) -> str:
    """The Hub's JUPYTERHUB_SERVICE_URL with scheme, host and port of the spawner's own one.

    The stock Hub picks a port of its own; the server must listen where the spawner decided,
    so the address it listens on, the env it gets and the address returned all agree.
    """
    want, own = urlsplit(requested), urlsplit(computed)
    return urlunsplit((own.scheme or want.scheme, own.netloc, want.path, want.query, ""))


def with_reported_address(result: Any, *, host: str, port: int) -> Any:
    """A spawner's start() result pointed at the reported ``host:port``: a URL keeps its
    scheme and path, anything else becomes ``(host, port)``."""
    if isinstance(result, str) and "://" in result:
        parts = urlsplit(result)
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return (host, port)


def format_address(result: Any) -> str:
    """What Spawner.start returned, as the ``service`` answer: ``host:port`` or a URL."""
    if isinstance(result, tuple | list) and len(result) == 2:
        host, port = result
        host = host or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{int(port)}"
    return str(result)


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
    # What the portal itself puts into the server's env, over the Hub's: the start
    # wrapper's call-back URL and token (tunnels/reports.py).
    portal_env: dict[str, str] = field(default_factory=dict, repr=False)
    # Batch spawners (outposts/runner/slurm.py): the Outpost's Hub-user -> Unix-account rule,
    # the trait names the flavor set (a Hub's user_options never replace them) and its runtime.
    unix_account_rule: UnixAccountRule = UnixAccountRule()
    flavor_traits: frozenset[str] = frozenset()
    runtime: timedelta | None = None

    @classmethod
    def from_server(cls, server: Server, *, portal_env: dict[str, str] | None = None) -> ServerSpec:
        """Layer the traits: Outpost config, then allow-listed misc, then flavor resources.

        The flavor comes last: a trait an admin allow-lists for Hubs (say ``mem_limit`` for
        Outposts without flavors) must never lift a flavor's limit.
        """
        outpost = server.outpost
        traits: dict[str, Any] = dict(outpost.spawner_config or {})
        # The allow-lists are checked again here: an admin may have narrowed them since
        # admission. Some KubeSpawner traits are never a Hub's to set (runner/kube.py).
        allowed = set(outpost.allowed_overrides or []) - kube.protected_traits(
            outpost.spawner_class
        )
        traits.update({k: v for k, v in (server.overrides or {}).items() if k in allowed})
        traits.update(server.resources)
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
            portal_env=dict(portal_env or {}),
            unix_account_rule=UnixAccountRule.from_outpost(outpost),
            flavor_traits=frozenset(server.resources),
            runtime=server.runtime,
        )


class SpawnerRunner:
    """One server's spawner, built as JupyterHub builds it, with the request applied."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        check_name_safe(spec.user_name, what="user name")
        check_name_safe(spec.server_name, what="server name", allow_empty=True)
        # What this spawner logs, for the server's admin page (outposts/runner/logtail.py).
        self.log_tail = SpawnerLogTail(secrets=secret_values({**spec.env, **spec.portal_env}))
        self.spawner = self._build()

    @classmethod
    def for_server(
        cls, server: Server, *, portal_env: dict[str, str] | None = None
    ) -> SpawnerRunner:
        return cls(ServerSpec.from_server(server, portal_env=portal_env))

    def _build(self) -> Spawner:
        from jupyterhub.objects import Server as HubServer
        from jupyterhub.utils import url_escape_path, url_path_join

        spec, env = self.spec, self.spec.env
        spawner_class = outside_hub(import_string(spec.spawner_class))
        if kube.is_kube(spawner_class):
            spawner_class = kube.runner_class(spawner_class)  # outposts/runner/kube.py
        base_url = env.get("JUPYTERHUB_BASE_URL") or "/"
        user = StandInUser(name=spec.user_name, user_id=spec.user_id, base_url=base_url)
        hub = StandInHub(
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
            db=StandInDB(),
            orm_spawner=None,
            portal_server_name=spec.server_name,
            config=Config({spawner_class.__name__: dict(spec.trait_values)}),
            oauth_client_id=env.get("JUPYTERHUB_CLIENT_ID") or client_id,
            api_token=env.get("JUPYTERHUB_API_TOKEN", ""),
            user_options=dict(spec.user_options),
            log=spawner_logger(self.log_tail),
        )
        user.spawners[spec.server_name] = spawner
        if slurm.is_slurm(spawner_class):
            # Before load_state: the state's account (the job's) wins over today's rule.
            slurm.adapt(
                spawner,
                account=(spec.state or {}).get(slurm.STATE_ACCOUNT)
                or spec.unix_account_rule.account_for(spec.user_name),
                user_options=dict(spec.user_options),
                flavor_traits=spec.flavor_traits,
                runtime=spec.runtime,
            )
        prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or url_path_join(
            user.url, url_escape_path(spec.server_name), "/"
        )
        # Without a Server the spawner serves at "/" and every request under the prefix 404s.
        spawner._server = HubServer(base_url=prefix)
        if spec.state:
            spawner.load_state(spec.state)
        original_get_env = spawner.get_env
        original_poll = spawner.poll
        # Variables the spawner's commands (a shell, sudo, sbatch) would obey never come from
        # the Hub (outposts/runner/checks.py).
        request_env = {k: v for k, v in env.items() if request_env_allowed(k)}
        if len(request_env) < len(env):
            log.info(
                "Server %s: request env %s not passed on",
                spec.server_id,
                sorted(set(env) - set(request_env)),
            )
        portal_env = dict(spec.portal_env)

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
            merged.update(portal_env)
            return merged

        async def poll(self: Spawner) -> int | None:
            adopt_child(self)
            pid = getattr(self, "pid", 0)
            status = await original_poll()
            if status is None and pid and getattr(self, "proc", None) is None and is_zombie(pid):
                log.warning("Server pid %s exited (zombie of another process); status unknown", pid)
                self.clear_state()
                return 0
            if status is not None and pid:
                forget_child(pid)
            return status

        # Bound to the instance so the spawner's own calls (start, stop) see them too.
        spawner.get_env = MethodType(get_env, spawner)
        spawner.poll = MethodType(poll, spawner)
        return spawner

    async def start(
        self,
        *,
        tls: TLSMaterial | None = None,
        on_progress: ProgressCallback | None = None,
        reported_address: AddressSource | None = None,
    ) -> str:
        """Start the server as JupyterHub does; returns its address (``host:port`` or URL).

        Progress events of the spawner are passed to ``on_progress`` while it starts. With
        ``reported_address`` (an Outpost whose servers report their address), the start
        also waits for the server's start wrapper to report where it listens, and that is
        the address returned; a spawner waiting for its port (batchspawner's start loops
        until ``port`` is set) gets it. Raises SystemAccount when the user name is a system
        account of this host, ServerNotReporting when the server ends before it reports.
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
            if reported_address is None:
                result = await start_future
            else:
                result = await self._await_reported_address(
                    start_future, reported_address, on_progress
                )
        finally:
            spawner._spawn_pending = False
            spawner._start_pending = False
            remember_child(spawner)
            await self._finish_pump(pump)
        address = format_address(result)
        if isinstance(result, tuple | list) and len(result) == 2:
            spawner.server.ip, spawner.server.port = result[0] or "127.0.0.1", int(result[1])
        return address

    async def _await_reported_address(
        self,
        start_future: asyncio.Future[Any],
        reported_address: AddressSource,
        on_progress: ProgressCallback | None,
    ) -> Any:
        """What start() is to return once both the spawner's start() returned and the
        server reported its address: the spawner's result with the reported host and port.

        The spawner's own address is ignored: with a start wrapper, it is not where the
        server listens.
        """
        spawner = self.spawner
        said_waiting = False
        last_poll = asyncio.get_running_loop().time()
        try:
            while True:
                reported = await reported_address()
                if reported is not None:
                    break
                if start_future.done():
                    start_future.result()  # a spawner that failed raises here
                if not said_waiting and self._spawner_waits_for_address(start_future):
                    said_waiting = True
                    if on_progress is not None:
                        await on_progress(90, WAITING_FOR_ADDRESS)
                now = asyncio.get_running_loop().time()
                # Once the spawner did its part (its start returned, or its batch job runs),
                # a server that ends fails the start now, not at the start timeout.
                if said_waiting and now - last_poll >= REPORT_POLL_EVERY:
                    last_poll = now
                    status = await self._poll_while_waiting()
                    if status is not None:
                        raise ServerNotReporting(
                            f"The server exited (status {status}) before it reported its "
                            "address; see its log on the Outpost."
                        )
                await asyncio.sleep(REPORT_CHECK_SECONDS)
            host, port = reported
            # batchspawner's start() waits for this, which its Hub API handler would set.
            spawner.port = port
            result = await start_future
        except BaseException:
            start_future.cancel()
            raise
        return with_reported_address(result, host=host, port=port)

    async def _poll_while_waiting(self) -> int | None:
        """The spawner's poll, where a failure to learn the status (squeue down) is no
        answer yet: the next check asks again, and the start timeout still bounds the wait."""
        try:
            return await self.spawner.poll()
        except Exception as error:  # noqa: BLE001 - the spawners' errors are not one family
            log.warning("Could not poll server %s while it starts: %s", self.spec.server_id, error)
            return None

    def _spawner_waits_for_address(self, start_future: asyncio.Future[Any]) -> bool:
        """Whether the spawner did its part and only the address is missing: its start()
        returned, or (batchspawner) its job runs and start() waits for the port."""
        if start_future.done():
            return True
        is_running = getattr(self.spawner, "state_isrunning", None)
        if not callable(is_running) or not getattr(self.spawner, "job_id", ""):
            return False
        try:
            return bool(is_running())
        except Exception:  # noqa: BLE001 - a half-parsed job status is "not yet"
            return False

    def check_may_start(self) -> None:
        """Raise SystemAccount if the Hub's user name is a system account of this host.

        It runs where the spawner runs (the Outpost's worker), where the accounts are real.
        """
        account = self.unix_account
        check_not_system_account(account, min_uid=self.spec.min_system_uid)
        if slurm.is_slurm(type(self.spawner)):
            slurm.check_account_exists(account)

    @property
    def unix_account(self) -> str:
        """The account the server runs as: the mapped one for batch spawners, else the name."""
        return str(getattr(self.spawner, "req_username", "") or self.spec.user_name)

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
        adopt_child(spawner)
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
            forget_child(pid)
        return status

    def get_state(self) -> dict[str, Any]:
        """The spawner's state, JSON-safe, for Server.spawner_state."""
        return json.loads(json.dumps(self.spawner.get_state(), default=str))
