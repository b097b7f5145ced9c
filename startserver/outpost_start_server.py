"""outpost-start-server: run a Jupyter server on a free port and tell the Outpost portal where.

A spawner runs this instead of ``jupyterhub-singleuser`` on an Outpost whose servers report
their own address (delayed tunnelling: a batch job's node and port are known only once it
runs). It

1. picks a free port on this host (within ``OUTPOST_PORT_RANGE``, which the portal sets to the
   Outpost's allowed range) and the host name to report;
2. reports ``host:port`` to the portal (``POST $OUTPOST_CALLBACK_URL`` with
   ``Authorization: token $OUTPOST_CALLBACK_TOKEN``), retrying until a deadline while the
   portal cannot be reached; a refusal ends it with the portal's reason on stderr;
3. replaces itself (exec) with the server command, ``jupyterhub-singleuser`` unless one is
   given, listening on that port (``JUPYTERHUB_SERVICE_URL`` rewritten to it).

Because it execs, the server *is* the process the spawner started: the spawner's signals
(a local spawner's SIGTERM, Slurm's at ``scancel``) reach the server directly and its exit
status is the job's, with no middleman to forward or lose them.

Standard library only: it runs on compute nodes in whatever Python the server runs in, and
is installed there on its own (``pip install ./startserver``), never with the portal.

Exit status when the server never ran: 2 bad usage or environment, 75 the portal could not
be reached before the deadline, 77 the portal refused the address, 127 the command was not
found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_UNREACHABLE = 75  # EX_TEMPFAIL
EXIT_REFUSED = 77  # EX_NOPERM
EXIT_NOT_FOUND = 127

DEFAULT_COMMAND = ["jupyterhub-singleuser"]
DEFAULT_PORT_RANGE = (1024, 65535)
DEFAULT_REPORT_TIMEOUT = 120.0
# Waits between two reports that could not reach the portal: doubled up to this.
RETRY_FIRST, RETRY_MAX = 1.0, 10.0
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "*"}  # noqa: S104 - names of "all interfaces", not binds

PROG = "outpost-start-server"


def say(message: str) -> None:
    """A line on stderr, which the spawner keeps as the server's log (the job's output)."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


class StartError(Exception):
    """The server cannot be started; ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def parse_port_range(text: str) -> tuple[int, int]:
    """``"MIN-MAX"`` (or one port) as a pair; raises ValueError when it is not one."""
    first, _, last = text.strip().partition("-")
    low, high = int(first), int(last or first)
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"not a port range within 1-65535: {text!r}")
    return low, high


def bind_host_of(service_url: str) -> str:
    """The address the spawner wants the server to listen on (JUPYTERHUB_SERVICE_URL's host);
    "" for all interfaces."""
    if not service_url:
        return ""
    return urlsplit(service_url).hostname or ""


def pick_port(bind_host: str, port_range: tuple[int, int], *, attempts: int = 200) -> int:
    """A port of ``port_range`` nothing listens on at ``bind_host`` just now.

    The socket is closed again before the server binds it: another process could take the
    port in between, as with every spawner that picks a port for its server.
    """
    low, high = port_range
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    candidates = [random.randint(low, high) for _ in range(attempts)]  # noqa: S311 - not a secret
    if high - low < attempts:
        candidates = random.sample(range(low, high + 1), high - low + 1)
    for port in candidates:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((bind_host, port))
            except OSError:
                continue
            return port
    raise StartError(f"no free port in {low}-{high} on this host", EXIT_USAGE)


def report_host_of(*, explicit: str, bind_host: str) -> str:
    """The host the portal is told: the one given, else the address the server binds to when
    it is a specific one, else this machine's host name (what a batch system calls the node)."""
    if explicit:
        return explicit
    if bind_host not in WILDCARD_HOSTS:
        return bind_host
    return socket.gethostname()


def service_url_with_port(service_url: str, *, bind_host: str, port: int, prefix: str) -> str:
    """JUPYTERHUB_SERVICE_URL listening on ``port``, keeping its scheme, host and path."""
    parts = urlsplit(service_url or f"http://{bind_host}:0{prefix or '/'}")
    host = f"[{bind_host}]" if ":" in bind_host else bind_host
    return urlunsplit((parts.scheme or "http", f"{host}:{port}", parts.path, parts.query, ""))


def _refusal_reason(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail or error.reason or "no reason given")


def report_address(
    *,
    url: str,
    token: str,
    host: str,
    port: int,
    timeout: float,
) -> None:
    """POST ``{"host", "port"}`` to the portal until it accepts or ``timeout`` seconds pass.

    Connection errors and 5xx answers are retried with back-off; a 4xx answer is final.
    Raises StartError (EXIT_REFUSED or EXIT_UNREACHABLE).
    """
    body = json.dumps({"host": host, "port": port}).encode()
    deadline = time.monotonic() + timeout
    wait = RETRY_FIRST
    while True:
        request = urllib.request.Request(  # noqa: S310 - the portal's URL, http(s) checked
            url,
            data=body,
            method="POST",
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        remaining = deadline - time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=max(1.0, min(30.0, remaining))):  # noqa: S310
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise StartError(
                    f"the portal refused the address {host}:{port} "
                    f"(HTTP {error.code}): {_refusal_reason(error)}",
                    EXIT_REFUSED,
                ) from None
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            problem = str(getattr(error, "reason", error))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StartError(
                f"could not report the address {host}:{port} to {url} within {timeout:g} s "
                f"(last error: {problem})",
                EXIT_UNREACHABLE,
            )
        say(f"the portal did not take the address yet ({problem}); retrying")
        time.sleep(min(wait, remaining))
        wait = min(wait * 2, RETRY_MAX)


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Pick a free port, report host:port to the Outpost portal, then run the "
        "Jupyter server on it (default command: jupyterhub-singleuser).",
        epilog="Environment: OUTPOST_CALLBACK_URL and OUTPOST_CALLBACK_TOKEN (set by the "
        "portal), OUTPOST_PORT_RANGE, OUTPOST_REPORT_HOST, OUTPOST_REPORT_TIMEOUT.",
    )
    parser.add_argument(
        "--report-host",
        default=os.environ.get("OUTPOST_REPORT_HOST", ""),
        help="host name or address to report (default: the bind address if it is a "
        "specific one, else this machine's host name)",
    )
    parser.add_argument(
        "--port-range",
        default=os.environ.get("OUTPOST_PORT_RANGE", ""),
        help="MIN-MAX ports to pick from (default: 1024-65535)",
    )
    parser.add_argument(
        "--report-timeout",
        type=float,
        default=float(os.environ.get("OUTPOST_REPORT_TIMEOUT") or DEFAULT_REPORT_TIMEOUT),
        help="seconds to keep trying to reach the portal (default: 120)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the server command and args")
    return parser.parse_args(argv)


def prepare(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Pick the port, report it, and return the command and environment to exec.

    Raises StartError when the server must not be started.
    """
    args = _arguments(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    command = command or list(DEFAULT_COMMAND)
    url = environ.get("OUTPOST_CALLBACK_URL", "")
    token = environ.get("OUTPOST_CALLBACK_TOKEN", "")
    if not url or not token:
        raise StartError(
            "OUTPOST_CALLBACK_URL and OUTPOST_CALLBACK_TOKEN must be set: the portal sets them "
            "for Outposts whose servers report their address (see its docs/tunnels-delayed.md)",
            EXIT_USAGE,
        )
    if urlsplit(url).scheme not in ("http", "https"):
        raise StartError(f"OUTPOST_CALLBACK_URL is not an http(s) URL: {url!r}", EXIT_USAGE)
    try:
        port_range = parse_port_range(args.port_range) if args.port_range else DEFAULT_PORT_RANGE
    except ValueError as error:
        raise StartError(f"bad port range: {error}", EXIT_USAGE) from None
    service_url = environ.get("JUPYTERHUB_SERVICE_URL", "")
    bind_host = bind_host_of(service_url)
    port = pick_port(bind_host, port_range)
    host = report_host_of(explicit=args.report_host, bind_host=bind_host)
    report_address(url=url, token=token, host=host, port=port, timeout=args.report_timeout)
    env = dict(environ)
    # The token only ever reports this server's address: the server's own code never needs it.
    env.pop("OUTPOST_CALLBACK_TOKEN", None)
    env["JUPYTERHUB_SERVICE_URL"] = service_url_with_port(
        service_url,
        bind_host=bind_host,
        port=port,
        prefix=environ.get("JUPYTERHUB_SERVICE_PREFIX", ""),
    )
    env["OUTPOST_SERVER_PORT"] = str(port)
    say(f"reported {host}:{port}; starting {command[0]}")
    return command, env


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: returns only when the server could not be started."""
    try:
        command, env = prepare(sys.argv[1:] if argv is None else argv, os.environ)
    except StartError as error:
        say(str(error))
        return error.status
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 - the spawner's own command line
    except OSError as error:
        say(f"cannot run {command[0]!r}: {error}")
        return EXIT_NOT_FOUND
    return EXIT_NOT_FOUND  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
