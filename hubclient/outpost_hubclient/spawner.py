"""OutpostPortalSpawner: JupyterHub starts, polls and stops servers through an Outpost portal."""

from __future__ import annotations

import asyncio
import inspect
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from jupyterhub.spawner import Spawner
from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Float, Integer, List, TraitError, Unicode, default, validate

from .config import OutpostConfig, parse_outposts
from .errors import OutpostError, OutpostUnreachable, StartCancelled, StartRefused
from .form import (
    DEFAULT_PROJECT_PATTERN,
    OutpostOffer,
    check_user_options,
    make_options_form,
    make_user_options,
)
from .http import Answer, RequestSettings, backoff_delays, fetch_json, wait_at_most
from .wire import (
    STATE_VERSION,
    EventsPage,
    ProgressEvent,
    events_url,
    make_authentication,
    make_forwarded_env,
    make_headers,
    make_start_body,
    make_state,
    parse_events,
    parse_flavors,
    parse_outpost_state,
    parse_poll,
    parse_refusal,
    service_address_to_url,
    service_url,
    services_url,
    userflavors_url,
)


async def outpost_options_form(spawner: OutpostPortalSpawner) -> str:
    """The default ``options_form``: systems and flavors as the portal offers them now."""
    return await spawner.render_options_form()


def check_outpost_user_options(spawner: OutpostPortalSpawner, user_options: dict) -> dict:
    """The default ``apply_user_options`` (JupyterHub 5.3+): reject bad choices up front.

    JupyterHub runs it before the spawn, so a REST API start naming an unknown system, a
    malformed flavor or an option the spawner does not know answers 400 with the reason
    instead of becoming a failed spawn. start() runs it again (older JupyterHubs have no
    such hook) and starts with what it returns: the options with the default Outpost filled in.
    """
    options = dict(user_options or {})
    options.setdefault("outpost", spawner.default_outpost_name())
    check_user_options(
        options,
        outpost_names=[config.name for config in spawner.outpost_configs()],
        project_pattern=spawner.project_pattern,
    )
    return options


class OutpostPortalSpawner(Spawner):
    """Starts each server on a remote system through an Outpost portal's REST API.

    The portal admits the start (flavors, limits, projects), runs the system's own spawner
    (Slurm, Kubernetes, ...) and reports progress and the server's address back.
    """

    outposts = Dict(
        help="""
        The Outposts (systems) this Hub may start servers on, keyed by a short name that is
        also the value of ``user_options["outpost"]``. Each value is a dict:

        - ``url`` (required): the Outpost's API base URL, e.g.
          ``https://portal.example.org/outposts/hpc/``.
        - ``display_name``: what users see in the form (default: the key).
        - ``hub_name``: this Hub's name at the portal, the HTTP Basic user name
          (default: ``OutpostPortalSpawner.hub_name``).
        - one credential source: ``secret_env`` / ``secret_file`` (the Hub's secret, sent with
          HTTP Basic) or ``api_key_env`` / ``api_key_file`` (an API key, sent as
          ``Authorization: token``). ``_env`` names an environment variable of the Hub
          process, ``_file`` a file readable by it. Read at every request, so rotating a
          secret needs no Hub restart. ``secret`` / ``api_key`` inline are accepted but
          leave the credential in the config file; avoid them.
        - ``validate_cert``, ``ca_file``: override the options of the same name for this
          Outpost.

        Example::

            c.OutpostPortalSpawner.outposts = {
                "hpc": {
                    "url": "https://portal.example.org/outposts/hpc/",
                    "display_name": "HPC cluster",
                    "secret_env": "OUTPOST_HPC_SECRET",
                },
            }
        """,
    ).tag(config=True)

    hub_name = Unicode(
        "",
        help="This Hub's name at the portal (HTTP Basic user name) for Outposts without "
        "their own ``hub_name``.",
    ).tag(config=True)

    default_outpost = Unicode(
        "",
        help="""The Outpost used when a start names none (e.g. a REST API start without
        user_options). Empty: the only configured Outpost, if there is exactly one.""",
    ).tag(config=True)

    request_timeout = Float(
        30.0, help="Seconds one HTTP request to the portal may take in total."
    ).tag(config=True)

    connect_timeout = Float(
        10.0, help="Seconds to wait for the portal to accept a connection."
    ).tag(config=True)

    retries = Integer(
        3,
        help="""How often a request is repeated after a connection error, a timeout or a 5xx
        answer, waiting ``retry_backoff`` seconds, then twice that, and so on (at most 30 s).
        A 4xx answer (a 419 refusal, a 404) is never repeated. Repeating a start is safe:
        the portal starts at most one server per start_id.""",
    ).tag(config=True)

    retry_backoff = Float(
        1.0, help="Seconds before the first retry; doubled for each further retry."
    ).tag(config=True)

    quick_request_timeout = Float(
        10.0,
        help="""Seconds a request may take that someone waits on and that is repeated anyway:
        the spawn form's flavor lists (one hung Outpost must not hang the spawn page), poll()
        and a pending start's progress. These make one attempt, never ``retries``, and take
        at most ``request_timeout``.""",
    ).tag(config=True)

    events_poll_interval = Float(
        2.0,
        help="""Seconds between two requests for a pending start's progress events
        (``GET services/<name>/<start_id>/events``). How often a *running* server is polled
        is JupyterHub's own ``Spawner.poll_interval``.""",
    ).tag(config=True)

    validate_cert = Bool(
        True, help="Verify the portal's TLS certificate. Turn off only for tests."
    ).tag(config=True)

    ca_file = Unicode(
        "",
        help="A PEM file of CA certificates to verify the portal with, e.g. a site CA. "
        "Empty: the system's CAs.",
    ).tag(config=True)

    misc = Dict(
        help="""Spawner trait overrides sent with every start (the request's ``misc``), e.g.
        ``{"image": "jupyter/base-notebook:2024-05-01"}``. The portal applies only the trait
        names the Outpost's administrators allow-listed and ignores the others.""",
    ).tag(config=True)

    auth_state_keys = List(
        Unicode(),
        help="""Keys of the authenticator's ``auth_state`` sent to the portal as user
        attributes, next to the Hub user's ``name`` and ``groups`` (which they override), e.g.
        ``["groups", "email"]``. The portal matches its per-user flavor rules against them.
        Only listed keys leave the Hub: auth_state often holds tokens.""",
    ).tag(config=True)

    user_projects = AnyTrait(
        None,
        allow_none=True,
        help="""The user's HPC projects, offered as the form's project field. A callable
        ``(spawner) -> list[str]`` (may be async). Default (None): the ``projects`` list of the
        user's ``auth_state``, if any. No projects: no project field.""",
    ).tag(config=True)

    project_pattern = Unicode(
        DEFAULT_PROJECT_PATTERN,
        help="A regular expression a project name must match (checked before a start is sent).",
    ).tag(config=True)

    @default("options_form")
    def _default_options_form(self) -> Any:
        return outpost_options_form

    # JupyterHub 5.3 added the hook; on older ones this default is never asked for.
    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return check_outpost_user_options

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        # Batch jobs wait in queues: JupyterHub's 60 s would cancel most of them. Same as the
        # portal's default Outpost start timeout.
        return 600

    @validate("project_pattern")
    def _check_project_pattern(self, proposal: dict[str, Any]) -> str:
        try:
            re.compile(proposal["value"])
        except re.error as error:
            raise TraitError(f"project_pattern is not a regular expression: {error}") from None
        return str(proposal["value"])

    # What this spawner knows about its current server; get_state stores it in the Hub's DB.
    outpost_name: str = ""
    start_id: str = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._events: list[ProgressEvent] = []
        self._start_finished = True
        self._start_generation = 0
        self._progress_changed = asyncio.Condition()
        # Set by stop(); cleared only when a new spawn begins (clear_state), so that a stop
        # arriving before start() sent anything is not lost.
        self._stop_requested = asyncio.Event()
        self._start_post: asyncio.Task[Answer] | None = None
        self._offers: list[OutpostOffer] = []
        self._projects: list[str] = []

    # --- configuration ----------------------------------------------------------------------

    def outpost_configs(self) -> list[OutpostConfig]:
        try:
            return parse_outposts(self.outposts, default_hub_name=self.hub_name)
        except ValueError as error:
            raise OutpostError(f"The Hub's Outpost configuration is wrong: {error}") from None

    def outpost_config(self, name: str) -> OutpostConfig:
        for config in self.outpost_configs():
            if config.name == name:
                return config
        raise OutpostError(f"The Outpost {name!r} is not configured on this Hub (any more).")

    def default_outpost_name(self) -> str:
        if self.default_outpost:
            return self.default_outpost
        names = [config.name for config in self.outpost_configs()]
        return names[0] if len(names) == 1 else ""

    def request_settings(self, outpost: OutpostConfig, *, quick: bool = False) -> RequestSettings:
        """How requests to ``outpost`` are sent; ``quick``: one short attempt (see
        ``quick_request_timeout``)."""
        settings = RequestSettings(
            request_timeout=self.request_timeout,
            connect_timeout=self.connect_timeout,
            validate_cert=self.validate_cert
            if outpost.validate_cert is None
            else outpost.validate_cert,
            ca_file=outpost.ca_file or self.ca_file or None,
            retries=self.retries,
            backoff=self.retry_backoff,
        )
        return settings.single_attempt(self.quick_request_timeout) if quick else settings

    async def request(
        self,
        outpost: OutpostConfig,
        method: str,
        url: str,
        *,
        body: Any = None,
        execution_async: bool = False,
        quick: bool = False,
        give_up: asyncio.Event | None = None,
    ) -> Answer:
        try:
            authorization = outpost.authorization()
        except ValueError as error:
            raise OutpostError(f"The Hub's Outpost configuration is wrong: {error}") from None
        return await fetch_json(
            method=method,
            url=url,
            headers=make_headers(authorization=authorization, execution_async=execution_async),
            body=body,
            settings=self.request_settings(outpost, quick=quick),
            log=self.log,
            give_up=give_up,
        )

    # --- spawn form ------------------------------------------------------------------------

    async def authentication(self) -> dict[str, Any]:
        auth_state = await self.user.get_auth_state()
        return make_authentication(
            user_name=self.user.name,
            groups=[group.name for group in getattr(self.user, "groups", [])],
            auth_state=auth_state,
            auth_state_keys=self.auth_state_keys,
        )

    async def fetch_offers(self, projects: Sequence[str] = ()) -> list[OutpostOffer]:
        """What each configured Outpost offers this user, without a project and in each of
        ``projects``, asked of all Outposts at once.

        With the user's id, so that the portal counts the user's own servers against each
        flavor's ``max_per_user``; the answer's headers say whether the Outpost is draining.
        A project's flavors are what the portal's grants in it allow the user.
        """
        authentication = await self.authentication()

        async def flavors_of(outpost: OutpostConfig, project: str) -> Answer:
            url = userflavors_url(outpost.url, user_id=self.user.id)
            body = {**authentication, "project": project} if project else authentication
            answer = await self.request(outpost, "POST", url, body=body, quick=True)
            if answer.code != 200:
                raise OutpostError(parse_refusal(answer.body, code=answer.code))
            return answer

        async def offer_of(outpost: OutpostConfig) -> OutpostOffer:
            try:
                answers = await asyncio.gather(
                    *(flavors_of(outpost, project) for project in ("", *projects))
                )
                flavors = [parse_flavors(answer.body) for answer in answers]
            except (OutpostError, TypeError, ValueError) as error:
                self.log.warning("Flavors of Outpost %s unavailable: %s", outpost.name, error)
                return OutpostOffer(outpost.name, outpost.display_name, error=str(error))
            return OutpostOffer(
                outpost.name,
                outpost.display_name,
                flavors=flavors[0],
                state=parse_outpost_state(answers[0].headers),
                project_flavors=dict(zip(projects, flavors[1:], strict=True)),
            )

        offers = await asyncio.gather(*(offer_of(o) for o in self.outpost_configs()))
        self._offers = list(offers)
        return self._offers

    async def fetch_projects(self) -> list[str]:
        if self.user_projects is not None:
            projects = self.user_projects(self)
            if inspect.isawaitable(projects):
                projects = await projects
        else:
            auth_state = await self.user.get_auth_state() or {}
            projects = auth_state.get("projects") or []
        self._projects = [str(project) for project in projects]
        return self._projects

    async def render_options_form(self) -> str:
        projects = await self.fetch_projects()
        offers = await self.fetch_offers(projects)
        return make_options_form(offers, projects=projects, selected=self.user_options)

    async def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        """Check the form's choices against what the portal offered before anything is sent.

        The offers are those the form was rendered with; after a Hub restart they are asked
        for again. A method, so it shadows JupyterHub's ``Spawner.options_from_form`` option:
        configuring that option has no effect on this spawner.
        """
        projects = self._projects or await self.fetch_projects()
        offers = self._offers or await self.fetch_offers(projects)
        return make_user_options(
            formdata, offers=offers, projects=projects, project_pattern=self.project_pattern
        )

    # --- state -----------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.start_id:
            state.update(make_state(outpost=self.outpost_name, start_id=self.start_id))
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if not state.get("start_id"):
            return
        if state.get("version") != STATE_VERSION:
            self.log.warning(
                "Ignoring state of %s with unknown version %r", self._log_name, state.get("version")
            )
            return
        self.outpost_name = str(state.get("outpost", ""))
        self.start_id = str(state["start_id"])

    def clear_state(self) -> None:
        super().clear_state()
        self.outpost_name = ""
        self.start_id = ""
        # JupyterHub clears the state when a new spawn begins (User.spawn) and after a stop
        # (User.stop, with _stop_pending set). Only the first forgets earlier stops: one that
        # came in during a stop still cancels a start() that had not sent its request yet.
        if not self._stop_pending:
            self._stop_requested.clear()

    def _save_state(self) -> None:
        """Write the state to the Hub's database now, as batchspawner and KubeSpawner do.

        JupyterHub saves it only once start() returns: a start still queued at the portal
        would otherwise be unknown after a Hub restart (poll() would say "stopped" while the
        remote start goes on).
        """
        if self.orm_spawner is not None:
            self.orm_spawner.state = self.get_state()
            self.db.commit()

    # --- start -----------------------------------------------------------------------------

    def _read_pems(self, paths: dict[str, str]) -> dict[str, str]:
        return {key: Path(path).read_text() for key, path in paths.items()}

    async def make_start_request_body(self) -> dict[str, Any]:
        """The start body for the current user_options (I/O here, shape in make_start_body)."""
        certs: dict[str, str] = {}
        bundles: dict[str, str] = {}
        if self.internal_ssl:
            # The remote server has no access to the Hub's disk: send the PEM contents.
            certs = self._read_pems(dict(self.cert_paths or {}))
            bundles = self._read_pems(dict(self.internal_trust_bundles or {}))
        return make_start_body(
            name=self.name,
            start_id=self.start_id,
            env=make_forwarded_env(self.get_env(), user_id=self.user.id),
            user_options=dict(self.user_options or {}),
            misc=self.misc,
            certs=certs,
            internal_trust_bundles=bundles,
            authentication=await self.authentication(),
        )

    async def start(self) -> str:
        """Ask the portal for the server, follow its progress, return its URL once it runs."""
        options = check_outpost_user_options(self, dict(self.user_options or {}))
        self.user_options = options
        outpost = self.outpost_config(options["outpost"])

        self.outpost_name = outpost.name
        self.start_id = uuid.uuid4().hex
        await self._reset_progress()
        try:
            body = await self.make_start_request_body()
            if self._stop_requested.is_set():
                # stop() came before anything was sent: there is nothing to cancel remotely.
                raise StartCancelled("The start was cancelled before it was sent.")
            # A task of its own, so that a stop() during the request can wait for its answer:
            # a DELETE must not overtake the start it cancels. Once a stop is requested, the
            # request is not repeated (give_up).
            post = asyncio.ensure_future(
                self.request(
                    outpost,
                    "POST",
                    services_url(outpost.url),
                    body=body,
                    execution_async=True,
                    give_up=self._stop_requested,
                )
            )
            # Whoever awaits it (start, stop) may be cancelled first: retrieve its outcome
            # always, so that asyncio never reports "Task exception was never retrieved".
            post.add_done_callback(_retrieve_outcome)
            self._start_post = post
            try:
                answer = await asyncio.shield(post)
            except OutpostError:
                if self._stop_requested.is_set():
                    raise StartCancelled("The start was cancelled.") from None
                raise
            if answer.code >= 300:
                raise StartRefused(parse_refusal(answer.body, code=answer.code))
            self.log.info(
                "Outpost %s accepted the start of %s (start_id %s)",
                outpost.name,
                self._log_name,
                self.start_id,
            )
            self._save_state()
            address = await self._follow_start(outpost, answer)
        finally:
            await self._finish_progress()
        try:
            return service_address_to_url(address, https=bool(self.internal_ssl))
        except ValueError as error:
            # JupyterHub's clean-up then polls and stops the server at the portal.
            raise StartRefused(f"The server cannot be reached: {error}") from None

    async def _follow_start(self, outpost: OutpostConfig, answer: Answer) -> str:
        """Poll the start's events until it runs (its address), fails or is stopped."""
        if isinstance(answer.body, dict) and answer.body.get("service"):
            return str(answer.body["service"])  # a synchronous start already ran
        after = 0
        while True:
            if self._stop_requested.is_set():
                raise StartCancelled("The start was cancelled.")
            page = await self._fetch_events(outpost, after)
            if page is not None:
                for event in page.events:
                    if event.id > after:
                        after = event.id
                        await self._add_progress(event)
                failure = page.failure
                if failure is not None:
                    await self._remove_failed(outpost)
                    raise StartRefused(failure)
                if page.status in ("stopping", "stopped"):
                    raise StartCancelled("The server was stopped before it was ready.")
                if page.ready_address:
                    return page.ready_address
            await wait_at_most(self.events_poll_interval, self._stop_requested.wait())

    async def _fetch_events(self, outpost: OutpostConfig, after: int) -> EventsPage | None:
        url = events_url(outpost.url, self.name, self.start_id, after)
        try:
            # One attempt: this loop is the retry, and it must notice a stop soon.
            answer = await self.request(outpost, "GET", url, quick=True)
        except OutpostError as error:
            # The portal may be restarting: keep waiting, start_timeout bounds the wait.
            self.log.warning("Progress of %s unavailable: %s", self._log_name, error)
            return None
        if answer.code == 404:
            raise StartCancelled("The Outpost no longer knows this server; it was stopped.")
        if answer.code >= 300:
            raise StartRefused(parse_refusal(answer.body, code=answer.code))
        try:
            return parse_events(answer.body)
        except (KeyError, TypeError, ValueError) as error:
            self.log.warning("Unreadable progress of %s: %s", self._log_name, error)
            return None

    async def _remove_failed(self, outpost: OutpostConfig) -> None:
        """Delete a failed start at the portal, so that nothing of it stays listed there."""
        try:
            await self.request(
                outpost,
                "DELETE",
                service_url(outpost.url, self.name, self.start_id),
                execution_async=True,
            )
        except OutpostError as error:
            self.log.warning("Could not remove failed start of %s: %s", self._log_name, error)

    # --- progress --------------------------------------------------------------------------

    async def _reset_progress(self) -> None:
        async with self._progress_changed:
            self._events = []
            self._start_finished = False
            self._start_generation += 1
            self._progress_changed.notify_all()

    async def _add_progress(self, event: ProgressEvent) -> None:
        async with self._progress_changed:
            self._events.append(event)
            self._progress_changed.notify_all()

    async def _finish_progress(self) -> None:
        async with self._progress_changed:
            self._start_finished = True
            self._progress_changed.notify_all()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """The portal's progress events of the current start, for JupyterHub's spawn page.

        Ends once the start has finished; JupyterHub then waits for the server itself and
        sends its own "ready" (or "failed") event. While JupyterHub still prepares a spawn
        (before start() ran), the previous start's events are not this spawn's: wait.

        Waits are bounded sleeps on a condition, never a spin: JupyterHub cancels this
        generator when the spawn resolves, and ``asyncio.wait_for`` on Python 3.11 can
        swallow that cancellation when its inner wait finishes at the same moment, which
        breaks JupyterHub's progress stream ("async generator raised StopAsyncIteration").
        """
        seen = 0
        generation = -1
        while True:
            async with self._progress_changed:
                if self._start_finished and not self._start_over():
                    await self._wait_for_progress()
                    continue
                if generation != self._start_generation:
                    generation, seen = self._start_generation, 0
                if len(self._events) <= seen and not self._start_finished:
                    await self._wait_for_progress()
                new_events = self._events[seen:]
                seen = len(self._events)
                finished = self._start_over()
            for event in new_events:
                yield event.as_progress()
            if finished:
                return

    def _start_over(self) -> bool:
        """Whether the start of the spawn JupyterHub is running has finished.

        ``_start_finished`` alone cannot tell a finished start from one that has not begun:
        JupyterHub marks the spawn pending before it calls start(). After start() returns it
        waits for the server (``_waiting_for_response``) and adds the route
        (``_proxy_pending``); a spawn that is no longer pending is over too.
        """
        if not self._start_finished:
            return False
        return not self._spawn_pending or self._waiting_for_response or self._proxy_pending

    async def _wait_for_progress(self, timeout: float = 1.0) -> None:
        """Wait (holding the condition) until progress changes, at most ``timeout`` s."""
        await wait_at_most(timeout, self._progress_changed.wait())

    # --- poll and stop ---------------------------------------------------------------------

    async def poll(self) -> int | None:
        """None while the server runs (or cannot be asked), else its exit status."""
        if not self.start_id:
            return 0
        if self._start_post is not None and not self._start_post.done():
            return None  # the start request is still on its way
        try:
            outpost = self.outpost_config(self.outpost_name)
            # One short attempt: JupyterHub polls again, and a poll it waits on (a stop, the
            # Hub's start-up) must not hang for all retries.
            answer = await self.request(
                outpost, "GET", service_url(outpost.url, self.name, self.start_id), quick=True
            )
        except OutpostError as error:
            # Ending a server because its portal is briefly down would lose the user's work.
            self.log.warning("Could not poll %s, keeping it running: %s", self._log_name, error)
            return None
        if answer.code == 404:
            return 0
        if answer.code != 200:
            self.log.warning(
                "Poll of %s answered %s: %s",
                self._log_name,
                answer.code,
                parse_refusal(answer.body, code=answer.code),
            )
            return None
        try:
            return parse_poll(answer.body)
        except ValueError as error:
            self.log.warning("Unreadable poll answer for %s: %s", self._log_name, error)
            return None

    async def stop(self, now: bool = False) -> None:
        """Stop the server at the portal; also cancels a start that is still pending.

        The pending start() sees the stop and ends; the portal cancels the remote start. A
        start request still on its way is not repeated any more and is waited for (its own
        timeout bounds the wait), so that the DELETE reaches the portal after it.
        """
        self._stop_requested.set()
        if not self.start_id:
            return
        post = self._start_post
        if post is not None and not post.done():
            bound = self.request_timeout + self.connect_timeout
            if not await wait_at_most(bound, asyncio.wait([post])):
                self.log.warning(
                    "The start request of %s did not end within %.0f s; deleting anyway",
                    self._log_name,
                    bound,
                )
        # No answer to the start request: the portal may have taken it all the same and
        # still be creating the server, so a 404 now does not prove it will stay gone.
        outcome_unknown = post is not None and not _answered(post)
        outpost = self.outpost_config(self.outpost_name)
        delays = backoff_delays(self.retries, self.retry_backoff) if outcome_unknown else []
        while True:
            answer = await self.request(
                outpost,
                "DELETE",
                service_url(outpost.url, self.name, self.start_id),
                execution_async=True,
            )
            if answer.code != 404 or not delays:
                break
            self.log.info(
                "%s not (yet) at Outpost %s while its start request may still land; deleting again",
                self._log_name,
                outpost.name,
            )
            await asyncio.sleep(delays.pop(0))
        if answer.code == 404:
            self.log.info("%s was already gone at Outpost %s", self._log_name, outpost.name)
        elif answer.code >= 300:
            raise OutpostError(
                f"The Outpost did not stop the server: "
                f"{parse_refusal(answer.body, code=answer.code)}"
            )


def _answered(task: asyncio.Future[Any]) -> bool:
    """Whether a request task ended with the portal's answer (or without sending anything)."""
    if not task.done() or task.cancelled():
        return False
    error = task.exception()
    return error is None or (isinstance(error, OutpostUnreachable) and error.answered)


def _retrieve_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
