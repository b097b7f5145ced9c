"""The Outpost wire contract on the Hub side: URLs, request bodies and answers.

Everything here is a pure function of its arguments (no I/O, no spawner), so the tests can
check it directly against the shared JSON examples in ``tests/contract/``.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

#: The only state version this package writes; load_state ignores others with a warning.
STATE_VERSION = 1

#: The only user_options keys a start may carry: what the spawn form asks. Anything else
#: (``cmd``, ``runtime``, ``partition``, ...) would reach the remote spawner, and batch
#: spawners merge user_options into job scripts.
USER_OPTION_KEYS = ("outpost", "flavor", "project")

# The stock spawner forwards only these: the Hub's own PATH, PYTHONPATH, ... mean nothing on
# the remote system and would break the server there.
_FORWARDED_ENV_PREFIXES = ("JUPYTER_", "JUPYTERHUB_")

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s]+):(?P<port>\d{1,5})$")


# --- URLs ------------------------------------------------------------------------------------


def normalize_base_url(url: str) -> str:
    """An Outpost base URL with exactly one trailing slash, e.g. ``http://p/outposts/hpc/``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Outpost URL must be an absolute http(s) URL, not {url!r}.")
    if parts.query or parts.fragment:
        raise ValueError(f"Outpost URL must have no query or fragment: {url!r}.")
    return url.strip().rstrip("/") + "/"


def _segment(value: str) -> str:
    # Quote everything, "/" included: a name is always exactly one path segment.
    return quote(value, safe="")


def services_url(base_url: str) -> str:
    return f"{base_url}services"


def service_url(base_url: str, name: str, start_id: str) -> str:
    """Poll and stop URL; the default server's empty name gives ``services//<start_id>``."""
    return f"{base_url}services/{_segment(name)}/{_segment(start_id)}"


def events_url(base_url: str, name: str, start_id: str, after: int) -> str:
    """Progress events of one start that are newer than event id ``after``."""
    return f"{service_url(base_url, name, start_id)}/events?after={int(after)}"


def userflavors_url(base_url: str, *, user_id: int | str | None = None) -> str:
    """The flavors of one user; with the Hub user's id the portal also counts that user's own
    servers of each flavor (``currentPerUser``). A stock Outpost service ignores it."""
    url = f"{base_url}userflavors"
    return url if user_id is None else f"{url}?user_id={_segment(str(user_id))}"


# --- Requests --------------------------------------------------------------------------------


def make_authorization(*, hub_name: str, secret: str | None, api_key: str | None) -> str:
    """The ``Authorization`` header value: an API key wins over the Basic secret."""
    if api_key:
        return f"token {api_key}"
    if secret:
        if not hub_name:
            raise ValueError("HTTP Basic authentication needs the Hub's name.")
        pair = f"{hub_name}:{secret}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    raise ValueError(
        "No Outpost credential: set secret_env, secret_file, api_key_env or api_key_file."
    )


def make_headers(*, authorization: str, execution_async: bool = False) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": authorization,
    }
    if execution_async:
        headers["execution-type"] = "async"
    return headers


def make_forwarded_env(env: Mapping[str, Any], *, user_id: int | str) -> dict[str, str]:
    """The Hub spawner's env as the portal takes it: JupyterHub's keys only, values strings."""
    forwarded = {
        key: "" if value is None else str(value)
        for key, value in env.items()
        if key.startswith(_FORWARDED_ENV_PREFIXES)
    }
    forwarded["JUPYTERHUB_USER_ID"] = str(user_id)
    return forwarded


def make_authentication(
    *,
    user_name: str,
    groups: Iterable[str],
    auth_state: Mapping[str, Any] | None = None,
    auth_state_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """User attributes the portal's per-user flavor rules match against.

    The Hub's own name and groups always; chosen keys of the authenticator's ``auth_state``
    (e.g. the identity provider's groups) override them. Only the keys asked for leave the Hub:
    auth_state often holds tokens.
    """
    authentication: dict[str, Any] = {"name": user_name, "groups": sorted(groups)}
    for key in auth_state_keys:
        if auth_state and key in auth_state:
            authentication[key] = auth_state[key]
    return authentication


def make_start_body(
    *,
    name: str,
    start_id: str,
    env: Mapping[str, str],
    user_options: Mapping[str, Any],
    misc: Mapping[str, Any] | None = None,
    certs: Mapping[str, str] | None = None,
    internal_trust_bundles: Mapping[str, str] | None = None,
    authentication: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST <base>services`` (api-contract.md §3.1).

    ``user_options`` carries ``start_id`` (the portal's key for this start) next to what the
    user chose (``outpost``, ``flavor``, ``project``); empty choices and every other key are
    left out (start() has refused other keys already; this is the last line).
    """
    options = {
        key: user_options[key]
        for key in USER_OPTION_KEYS
        if user_options.get(key) not in (None, "")
    }
    options["start_id"] = start_id
    body: dict[str, Any] = {
        "name": name,
        "env": dict(env),
        "user_options": options,
        "misc": dict(misc or {}),
        "certs": dict(certs or {}),
        "internal_trust_bundles": dict(internal_trust_bundles or {}),
    }
    if authentication:
        body["authentication"] = dict(authentication)
    return body


def make_state(*, outpost: str, start_id: str) -> dict[str, Any]:
    """The spawner state JupyterHub stores in its database (small, versioned).

    No address: JupyterHub keeps the server's URL itself (its server row) and rebuilds the
    proxy's routes from it after a restart; the portal answers polls and stops by start_id.
    """
    return {"version": STATE_VERSION, "outpost": outpost, "start_id": start_id}


# --- Answers ---------------------------------------------------------------------------------


def decode_json(body: bytes | str | None) -> Any:
    """JSON of an answer body, or None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def parse_refusal(answer: Any, *, code: int | None = None) -> str:
    """The message a user should see for a refused request (419 shape, §5).

    The portal puts the human message in ``args[0]``; ``detail`` is the fallback for other
    error shapes (401, 404, 400).
    """
    if isinstance(answer, Mapping):
        args = answer.get("args")
        if isinstance(args, list) and args and str(args[0]).strip():
            return str(args[0])
        detail = answer.get("detail")
        if isinstance(detail, str) and detail.strip():
            return detail
    return f"The Outpost answered HTTP {code}." if code else "The Outpost refused the request."


def parse_poll(answer: Any) -> int | None:
    """None while the server is pending or running, else its exit status (§3.2)."""
    if not isinstance(answer, Mapping):
        raise ValueError(f"Poll answer is not a JSON object: {answer!r}")
    status = answer.get("status")
    if status is None:
        return None
    if isinstance(status, bool) or not isinstance(status, int):
        raise ValueError(f"Poll status must be null or an integer, not {status!r}")
    return status


def service_address_to_url(address: str, *, https: bool = False) -> str:
    """What ``start()`` returns to JupyterHub: ``host:port`` becomes a URL, a URL stays."""
    address = address.strip()
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    if not _HOST_PORT.match(address):
        raise ValueError(
            f"The Outpost reported an address that is neither host:port nor URL: {address!r}"
        )
    return f"{'https' if https else 'http'}://{address}"


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a start as the portal reports it."""

    id: int
    progress: int
    message: str
    failed: bool = False
    ready: bool = False

    def as_progress(self) -> dict[str, Any]:
        """The event as JupyterHub's progress API wants it.

        html_message is built here from the text, never taken from the answer: the Hub shows
        it as HTML, and a remote system's output must not be able to inject markup.
        """
        return {
            "progress": self.progress,
            "message": self.message,
            "html_message": html.escape(self.message),
        }


@dataclass(frozen=True)
class EventsPage:
    """An answer of ``GET <base>services/<name>/<start_id>/events``."""

    events: list[ProgressEvent] = field(default_factory=list)
    status: str = ""
    service: str = ""

    @property
    def failure(self) -> str | None:
        """The portal's message if this start failed, else None."""
        for event in self.events:
            if event.failed:
                return event.message or "The start failed at the Outpost."
        if self.status == "failed":
            return "The start failed at the Outpost."
        return None

    @property
    def ready_address(self) -> str | None:
        """The server's address once it runs and the portal knows where (§3.1, §6)."""
        if self.status == "running" and self.service:
            return self.service
        return None


def parse_events(answer: Any) -> EventsPage:
    if not isinstance(answer, Mapping) or not isinstance(answer.get("events"), list):
        raise ValueError(f"Events answer must be an object with an events list: {answer!r}")
    events = []
    for item in answer["events"]:
        if not isinstance(item, Mapping):
            raise ValueError(f"Event must be a JSON object: {item!r}")
        events.append(
            ProgressEvent(
                id=int(item["id"]),
                # JupyterHub draws a progress bar: keep it within 0..100.
                progress=max(0, min(100, int(item.get("progress") or 0))),
                message=str(item.get("message") or ""),
                failed=bool(item.get("failed", False)),
                ready=bool(item.get("ready", False)),
            )
        )
    status = answer.get("status")
    service = answer.get("service")
    return EventsPage(
        events=events,
        status=status if isinstance(status, str) else "",
        service=service if isinstance(service, str) else "",
    )


@dataclass(frozen=True)
class FlavorOffer:
    """A flavor the portal offers a user on one Outpost, with its free slots.

    ``current_per_user`` is None when the portal did not count the user's own servers (a
    stock Outpost service answers no ``currentPerUser``): then only ``max`` limits ``free``.
    """

    name: str
    display_name: str
    description: str = ""
    weight: int = 0
    max: int = -1
    current: int = 0
    max_per_user: int = -1
    current_per_user: int | None = None
    #: Seconds a server of this flavor may run; None when it runs until stopped.
    runtime_seconds: int | None = None

    @property
    def hub_free(self) -> int | None:
        """Free slots of the Hub's cap (the flavor's ``max`` or the Hub's share of it)."""
        return free_slots(self.max, self.current)

    @property
    def user_free(self) -> int | None:
        """How many more this user may start under ``max_per_user``; None when unlimited or
        not counted."""
        if self.current_per_user is None:
            return None
        return free_slots(self.max_per_user, self.current_per_user)

    @property
    def free(self) -> int | None:
        """The slots this user could really take now: None when nothing limits them."""
        limits = [free for free in (self.hub_free, self.user_free) if free is not None]
        return min(limits) if limits else None


def free_slots(maximum: int, current: int) -> int | None:
    """``max - current``, None for unlimited (``max`` -1), 0 at or over the cap."""
    if maximum < 0:
        return None
    return max(0, maximum - current)


#: What a runtime may say: the keyword arguments of ``datetime.timedelta``.
_RUNTIME_UNITS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")


def parse_runtime(value: Any) -> int | None:
    """Whole seconds of a wire runtime (``{"hours": 2}``, ``{"hours": 1, "minutes": 30}``).

    None when absent, not positive or unreadable: a runtime only labels the form, and a
    label the Hub cannot read must not make the Outpost unusable.
    """
    if not isinstance(value, Mapping) or not value or not set(value) <= set(_RUNTIME_UNITS):
        return None
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in value.values()):
        return None
    try:
        seconds = int(timedelta(**value).total_seconds())
    except OverflowError:
        return None
    return seconds if seconds > 0 else None


def _count(value: Any, *, default: int) -> int:
    """A count or limit of the answer; null means the default (-1: unlimited)."""
    return default if value is None else int(value)


def parse_flavors(answer: Any) -> list[FlavorOffer]:
    """The flavors of a ``GET flavors/`` or ``POST userflavors`` answer, highest weight first."""
    if not isinstance(answer, Mapping):
        raise ValueError(f"Flavors answer must be a JSON object keyed by name: {answer!r}")
    offers = []
    for name, item in answer.items():
        if not isinstance(item, Mapping):
            raise ValueError(f"Flavor {name!r} must be a JSON object.")
        current_per_user = item.get("currentPerUser")
        offers.append(
            FlavorOffer(
                name=str(name),
                display_name=str(item.get("display_name") or name),
                description=str(item.get("description") or ""),
                weight=int(item.get("weight") or 0),
                max=_count(item.get("max"), default=-1),
                current=_count(item.get("current"), default=0),
                max_per_user=_count(item.get("maxPerUser"), default=-1),
                current_per_user=None if current_per_user is None else int(current_per_user),
                runtime_seconds=parse_runtime(item.get("runtime")),
            )
        )
    return sorted(offers, key=lambda offer: (-offer.weight, offer.name))


#: Outpost states in which it starts no servers (the portal's Outpost.State).
CLOSED_STATES = ("draining", "disabled")


@dataclass(frozen=True)
class OutpostState:
    """An Outpost's state as its flavor answers report it (headers ``Outpost-State`` and
    ``Outpost-State-Message``); a stock Outpost service sends neither: active."""

    state: str = "active"
    message: str = ""

    @property
    def accepts_starts(self) -> bool:
        # Only the states known to refuse starts: a state this package does not know may
        # well start servers, and the portal refuses a start it would not take anyway.
        return self.state not in CLOSED_STATES


def decode_header_text(value: str) -> str:
    """A header text the portal escaped with Python's ``unicode_escape`` (header values are
    Latin-1 on the wire); a value that is no such escape is taken as it is."""
    try:
        return value.encode("latin-1").decode("unicode_escape")
    except UnicodeError:
        return value


def parse_outpost_state(headers: Mapping[str, str]) -> OutpostState:
    """The Outpost's state from the headers of a flavors answer (names in any case)."""
    by_name = {name.lower(): value for name, value in headers.items()}
    state = by_name.get("outpost-state", "").strip().lower() or "active"
    message = decode_header_text(by_name.get("outpost-state-message", "")).strip()
    return OutpostState(state=state, message=message)
