"""What the benchmarks share: a throwaway database and broker, a real uvicorn, load, figures.

Nothing here asserts: the benchmarks print what they measure. Every resource a benchmark
makes (database, Redis DB content, uvicorn process group) is removed again on the way out,
also when it fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
import redis
import requests
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Another Redis DB can be given, so that two people's benchmarks never empty each other's.
BROKER_URL = os.environ.get("PORTAL_BENCH_BROKER_URL", "redis://127.0.0.1:6379/9")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


# --- The environment: database, broker, Django ----------------------------------------------


@contextmanager
def private_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free loopback port; its server URL.

    The shared server on 5432 has 100 connection slots that other engineers' test runs need,
    and the portal under load can hold many of them: a cluster of our own keeps the benchmark
    from starving anyone (and anyone from skewing the figures). Removed at the end.
    """
    initdb = shutil.which("initdb") or max(
        map(str, Path("/usr/lib/postgresql").glob("*/bin/initdb")), default="initdb"
    )
    bindir = Path(initdb).parent
    data = Path(tempfile.mkdtemp(prefix="portal-bench-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
        check=True,
        **quiet,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=300"
    pg_ctl = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(data / "server.log"), "-w", "start"],
        check=True,
        **quiet,
    )
    try:
        yield f"postgres://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=False, **quiet)
        shutil.rmtree(data, ignore_errors=True)


def production_env(database: str, pg_server: str) -> dict[str, str]:
    """Settings as in production: debug off, fresh secrets, PostgreSQL and Redis."""
    return {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_DEBUG": "0",
        "PORTAL_SECRET_KEY": secrets.token_urlsafe(50),
        "PORTAL_CREDENTIAL_KEY": secrets.token_urlsafe(50),
        "PORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": f"{pg_server}/{database}",
        "CELERY_BROKER_URL": BROKER_URL,
        "PORTAL_LOG_LEVEL": "WARNING",
        "PORTAL_DATA_DIR": tempfile.mkdtemp(prefix="portal-bench-"),
    }


def _admin_sql(pg_server: str, sql: str) -> None:
    with psycopg.connect(f"{pg_server}/postgres", autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]  # names are ours, not user input


def purge_broker() -> None:
    """Empty the bench's Redis DB (9 unless PORTAL_BENCH_BROKER_URL): the start tasks the
    API queued have no worker and just sit there."""
    redis.Redis.from_url(BROKER_URL).flushdb()


@contextmanager
def bench_database(name: str, pg_server: str) -> Iterator[dict[str, str]]:
    """A new, migrated database ``name`` on ``pg_server`` with Django set up on it; dropped
    at the end.

    Yields the environment for subprocesses (uvicorn) to use the same settings.
    """
    env = production_env(name, pg_server)
    os.environ.update(env)
    data_dir = Path(env["PORTAL_DATA_DIR"])
    sys.path.insert(0, str(ROOT))
    _admin_sql(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_sql(pg_server, f'CREATE DATABASE "{name}"')
    try:
        with _migrated(env):
            yield env
    finally:
        _admin_sql(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def sqlite_database() -> Iterator[dict[str, str]]:
    """The embedded default's database: a new, migrated SQLite file in a scratch data folder
    (removed at the end), with Django set up on it and Redis as the broker."""
    env = production_env("unused", "unused")
    env["DATABASE_URL"] = f"sqlite:///{env['PORTAL_DATA_DIR']}/portal.sqlite3"
    os.environ.update(env)
    try:
        with _migrated(env):
            yield env
    finally:
        shutil.rmtree(env["PORTAL_DATA_DIR"], ignore_errors=True)


@contextmanager
def _migrated(env: dict[str, str]) -> Iterator[None]:
    """Django set up on ``env``'s database, migrated, with the bench's Redis db emptied
    before and after."""
    sys.path.insert(0, str(ROOT))
    purge_broker()
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        yield
    finally:
        from django.db import connections

        connections.close_all()
        purge_broker()


# --- uvicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` used so far; OSError once it is gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


@dataclass
class Uvicorn:
    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def pids(self) -> list[int]:
        """The master and its worker processes."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [self.proc.pid, *map(int, children.read_text().split())]
        except OSError:
            return [self.proc.pid]

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the master and its workers."""
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a worker that just exited
                total += process_cpu_seconds(pid)
        return total


@contextmanager
def uvicorn(env: dict[str, str], *, workers: int, ping_path: str) -> Iterator[Uvicorn]:
    """uvicorn serving portal.asgi with ``workers`` processes on a free loopback port."""
    port = free_port()
    log_path = Path(env["PORTAL_DATA_DIR"]) / "uvicorn.log"
    cmd = [
        str(VENV_BIN / "uvicorn"),
        "portal.asgi:application",
        "--http",
        "portal.webserver:HttpProtocol",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--lifespan",
        "off",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Uvicorn(proc=proc, base=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        _wait_up(server, ping_path)
        yield server
    finally:
        _stop_group(proc)
        log = log_path.read_text(errors="replace")
        if "Traceback" in log:
            tail = "\n".join(log.splitlines()[-30:])
            print(f"uvicorn logged {log.count('Traceback')} tracebacks; the last lines:\n{tail}")


def _wait_up(server: Uvicorn, ping_path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited:\n{server.log_path.read_text()}")
        try:
            if requests.get(server.base + ping_path, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not answer within {timeout}s")


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``timeout``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the master, if any
    except ProcessLookupError:
        pass


# --- Watching the machine --------------------------------------------------------------------


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return total - idle, total


# A fixed pure-Python loop: 0.20-0.25 s of CPU on the seventh round's machine at its fastest.
REFERENCE_LOOP = 10_000_000


def reference_loop_seconds() -> float:
    """The CPU seconds this process takes for REFERENCE_LOOP additions: a sign of the
    machine's speed right now. Machines of this kind differ, and one machine's speed changed
    by up to twice within minutes; the CPU figures move with it, though not only with it
    (bench/README.md, seventh round). Each benchmark prints it before and after."""
    began = time.process_time()
    total = 0
    for number in range(REFERENCE_LOOP):
        total += number
    return time.process_time() - began


def machine_speed_line(when: str) -> str:
    """What a benchmark prints of the machine ``when`` ("before", "after"): the reference
    loop's CPU time and the load average."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"machine {when}: reference loop {reference_loop_seconds():.3f} s of CPU "
        f"(lower is faster), load {' '.join(load)}"
    )


def with_machine_speed(main: Callable[[], T]) -> T:
    """``main()``, with the machine's speed printed before and after it (also on failure)."""
    print(machine_speed_line("before"), flush=True)
    try:
        return main()
    finally:
        print(machine_speed_line("after"), flush=True)


class ConnectionSampler:
    """How many PostgreSQL connections the benchmark database has at most (sampled in a
    thread), and how many sessions were opened on it meanwhile."""

    def __init__(self, pg_server: str, database: str, every: float = 0.25) -> None:
        self.url = f"{pg_server}/postgres"
        self.database = database
        self.every = every
        self.peak = 0
        self.sessions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            first = self._sessions(conn)
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database,)
                ).fetchone()
                self.peak = max(self.peak, row[0] if row else 0)
                self._stop.wait(self.every)
            time.sleep(1)  # sessions are counted as they end; give the stats a moment
            self.sessions = self._sessions(conn) - first

    def _sessions(self, conn: psycopg.Connection) -> int:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.database,)
        ).fetchone()
        return int(row[0]) if row else 0


# --- Load and figures ------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: int = 0
    wall: float = 0.0
    server_cpu: float = 0.0  # uvicorn CPU seconds during the run
    machine_busy: float = 0.0  # fraction of all cores busy during the run
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    def ms(self, fraction: float) -> float:
        return percentile(sorted(self.latencies), fraction) * 1000

    def cpu_per_request(self) -> float:
        """Server CPU seconds per request."""
        return self.server_cpu / self.requests if self.requests else 0.0

    def row(self) -> str:
        cpu_per_request = self.cpu_per_request() * 1000
        return (
            f"{self.name:<10} {self.requests:>8} {self.errors:>6} {self.rate:>8.1f} "
            f"{self.ms(0.50):>7.1f} {self.ms(0.95):>7.1f} {self.ms(0.99):>7.1f} "
            f"{cpu_per_request:>9.2f} {self.machine_busy:>6.0%}"
        )


TABLE_HEADER = (
    f"{'endpoint':<10} {'requests':>8} {'errors':>6} {'req/s':>8} "
    f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'cpu ms/r':>9} {'busy':>6}"
)

# One request of a scenario: given a session and the request's index, True if it succeeded.
Call = Callable[[requests.Session, int], tuple[bool, str]]


def run_load(
    name: str,
    call: Call,
    *,
    total: int,
    concurrency: int,
    time_cap: float,
    server: Uvicorn,
) -> Result:
    """``total`` calls from ``concurrency`` threads (one keep-alive session each), stopping
    early once ``time_cap`` seconds have passed; the load is bounded in count and time."""
    result = Result(name=name)
    lock = threading.Lock()
    next_index = iter(range(total))
    deadline = time.monotonic() + time_cap

    def worker() -> None:
        latencies: list[float] = []
        errors: list[str] = []
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    break
                began = time.perf_counter()
                try:
                    ok, detail = call(session, index)
                except requests.RequestException as error:
                    ok, detail = False, repr(error)
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors.append(detail)
        with lock:
            result.latencies.extend(latencies)
            result.errors += len(errors)
            result.error_samples.extend(errors[: 3 - len(result.error_samples)])

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    cpu_before, (busy_before, total_before) = server.cpu_seconds(), machine_cpu()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=time_cap + 120)
    result.wall = time.perf_counter() - started
    busy_after, total_after = machine_cpu()
    result.server_cpu = server.cpu_seconds() - cpu_before
    result.machine_busy = (busy_after - busy_before) / max(1, total_after - total_before)
    return result
