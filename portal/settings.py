"""Settings of the Outpost portal, read from the environment (see .env.example).

The embedded defaults (an SQLite file, a private Redis on a unix socket that runportal starts)
let the portal run on one machine with nothing set up; production names PostgreSQL and Redis
through DATABASE_URL and CELERY_BROKER_URL.
The same code paths run in both: tasks are never executed eagerly.
"""

import ipaddress
import logging
import os
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None


DEBUG = env_bool("PORTAL_DEBUG")

# Where the embedded defaults keep their files (SQLite database, broker folder, logs).
DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / "var")).resolve()

# Django's own signing key (sessions, CSRF, password reset); its old values still verify.
SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY", "")
SECRET_KEY_FALLBACKS = env_list("PORTAL_SECRET_KEY_FALLBACKS")
# Keys the digests of Hub secrets and API keys (portal/crypto.py). Separate from SECRET_KEY so
# that rotating the session key, a routine act, does not lock every Hub out; old values go in
# the fallbacks until the Hubs' credentials have been re-issued.
CREDENTIAL_KEY = os.environ.get("PORTAL_CREDENTIAL_KEY", "")
CREDENTIAL_KEY_FALLBACKS = env_list("PORTAL_CREDENTIAL_KEY_FALLBACKS")
# Fernet keys, newest first: the first encrypts, all decrypt (rotate with rotate_encryption_keys).
ENCRYPTION_KEYS = env_list("PORTAL_ENCRYPTION_KEYS")

if not DEBUG:
    missing = [
        name
        for name, value in (
            ("PORTAL_SECRET_KEY", SECRET_KEY),
            ("PORTAL_CREDENTIAL_KEY", CREDENTIAL_KEY),
            ("PORTAL_ENCRYPTION_KEYS", ENCRYPTION_KEYS),
        )
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"{' and '.join(missing)} must be set when PORTAL_DEBUG is off; "
            "see .env.example; `PORTAL_DEBUG=1 python manage.py generate_secrets` prints them."
        )
else:
    # Debug only: fixed, well-known keys so a developer's checkout runs without setup.
    SECRET_KEY = SECRET_KEY or "insecure-debug-only-secret-key"
    CREDENTIAL_KEY = CREDENTIAL_KEY or "insecure-debug-only-credential-key"
    ENCRYPTION_KEYS = ENCRYPTION_KEYS or ["ZGVidWctb25seS1lbmNyeXB0aW9uLWtleS0wMDAwMDA="]

# A malformed key would otherwise pass start-up and fail the first write of an encrypted
# value (a 500 in the middle of a start); refuse to start instead.
for _position, _key in enumerate(ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            f"PORTAL_ENCRYPTION_KEYS: key number {_position} is not a Fernet key (32 bytes, "
            "url-safe base64, 44 characters); `PORTAL_DEBUG=1 python manage.py "
            "generate_secrets` prints a fresh one."
        ) from None

ALLOWED_HOSTS = env_list("PORTAL_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("PORTAL_CSRF_TRUSTED_ORIGINS")

# Transport security of the admin. Cookies are https-only unless debug is on: a session
# cookie sent over plain http can be read on the way. Switch them off (false) only where the
# portal is served over plain http on loopback (tests, the demo).
SECURE_COOKIES = env_bool("PORTAL_SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
# Behind a TLS-terminating proxy Django sees plain http; trust the proxy's header only when
# told so, since a client could send it too when nothing in front strips it.
if env_bool("PORTAL_BEHIND_TLS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HSTS pins browsers to https for this long; 0 (off) until the operator knows https stays.
SECURE_HSTS_SECONDS = env_int("PORTAL_HSTS_SECONDS", 0)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "guardian",
    "auditlog",
    "outposts",
    "flavors",
    "projects",
    "tunnels",
    "monitoring",
    # After auditlog: its admin replaces auditlog's, and it registers the audited models.
    "audit",
]

MIDDLEWARE = [
    # First: every log line of a request, the other middleware's too, names its request id.
    "monitoring.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The logged-in user becomes the actor of the audit entries a request makes.
    "auditlog.middleware.AuditlogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The Hub API's paths (outposts.api.urls.lean_path) under ASGI (portal/asgi.py): a Hub sends
# Basic auth or a token, never a session cookie, so sessions, CSRF, the logged-in user, the
# audit actor and messages have nothing to do there; the request id and the security,
# common and clickjacking middleware's headers stay (portal/middleware.py).
API_MIDDLEWARE = [
    "monitoring.middleware.RequestIdMiddleware",
    "portal.middleware.ApiHeadersMiddleware",
]

# The contract has paths with an empty server name ("services//<start_id>") and paths both
# with and without a trailing slash: no redirects, the URL patterns accept both.
APPEND_SLASH = False

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASE_URL = f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction begins, so admission's count-then-insert
    # cannot interleave with another writer; the timeout rides out short lock waits.
    # WAL: readers (polls, a synchronous start waiting for its row) never block the writer,
    # nor it them; with the default rollback journal a burst of starts saw "database is
    # locked" (bench/README.md, the embedded default).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A pool per process: under ASGI every request runs in a thread of its own, so Django's
    # persistent connections (CONN_MAX_AGE) would open one connection per request and leak
    # them (bench/api_load.py saw 142 at once with 8 clients).
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": env_int("PORTAL_DB_POOL_SIZE", 10),
            "timeout": 30,
        },
        # Parameters bound by the server, not quoted into the SQL in Python: a start cost
        # 1.2 ms less on the web and 2 ms less on the worker (bench/README.md, sixth round),
        # and psycopg prepares a statement once a connection has run it five times. Off
        # behind a connection pooler that keeps no prepared statements per client.
        "server_side_binding": env_bool("PORTAL_DB_SERVER_SIDE_BINDING", True),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("PORTAL_STATIC_ROOT", DATA_DIR / "static"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["outposts.api.authentication.HubAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["outposts.api.parsers.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "outposts.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
# Request bodies larger than this answer 413 (Django reads at most this much into memory). A
# start body is a few kilobytes; its TLS trust bundles are what can make it large.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("PORTAL_MAX_REQUEST_BYTES", 2_621_440)
# JSON bodies nested deeper than this answer 400 (outposts/api/parsers.py): a start body
# nests three or four levels.
API_MAX_JSON_DEPTH = env_int("PORTAL_MAX_JSON_DEPTH", 32)
SPECTACULAR_SETTINGS = {
    "TITLE": "Outpost portal API",
    "DESCRIPTION": "The Outpost wire contract served per Outpost under /outposts/<slug>/.",
    "VERSION": "1",
}

# Celery. The embedded default, with CELERY_BROKER_URL unset, is a private redis-server on a
# unix socket in PORTAL_DATA_DIR that runportal starts and stops (portal/embedded_broker.py):
# it wakes a worker at once and loses no message under bursts. kombu's filesystem transport
# (filesystem://, given explicitly) is ours, with atomic writes (portal/filesystem_broker.py).
EMBEDDED_BROKER = not os.environ.get("CELERY_BROKER_URL")
EMBEDDED_BROKER_DIR = DATA_DIR / "redis"
EMBEDDED_BROKER_SOCKET = EMBEDDED_BROKER_DIR / "redis.sock"
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = (
    os.environ.get("CELERY_BROKER_URL") or f"redis+socket://{EMBEDDED_BROKER_SOCKET}"
)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "messages"),
        "data_folder_out": str(BROKER_DIR / "messages"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # kombu's default is ./control, relative to whatever folder a process started in.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.split(":", 1)[0] in ("redis", "rediss", "redis+socket"):
    # A task a worker took but never acknowledged (acks_late: the worker died) is handed out
    # again after this many seconds; kombu's default is an hour. A task still running then is
    # handed out too (a long Slurm start): the lifecycle's leases make that copy do nothing
    # (outposts/lifecycle/__init__.py). Keep it above the longest countdown a task is queued
    # with (a Hub call-back's retry, 120 s), or that task runs twice. docs/operations.md.
    BROKER_VISIBILITY_TIMEOUT = env_int("PORTAL_BROKER_VISIBILITY_TIMEOUT", 300)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": BROKER_VISIBILITY_TIMEOUT,
        # Workers look for such tasks every interval x throttle seconds (kombu: 10 x 10): a
        # tenth of the timeout, so one comes back within 1.1 timeouts.
        "unacked_restore_interval": max(1, BROKER_VISIBILITY_TIMEOUT // 10),
        "unacked_restore_throttle": 1,
        # A Redis that is down or hangs fails a publish within seconds (the API answers 503)
        # instead of blocking the request for ever; redis-py tries each command 3 times.
        "socket_connect_timeout": 2,
        "socket_timeout": 2,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
# One reconnect at once (a broker restarted since the last publish), then give up: the
# services decide what becomes of a task that could not be queued (outposts/dispatch.py).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Celery's own scheduler, which also makes the schedule file's folder: with DATABASE_URL set
# nothing else creates PORTAL_DATA_DIR, and beat would die on its first start.
CELERY_BEAT_SCHEDULER = "portal.beat:PersistentScheduler"
# How often beat runs the reconciler, which fans out to every Outpost's queue.
RECONCILE_INTERVAL = float(os.environ.get("PORTAL_RECONCILE_INTERVAL", "30"))
CELERY_BEAT_SCHEDULE = {
    "servers-reconcile": {
        "task": "outposts.tasks.outposts_reconcile_task",
        "schedule": RECONCILE_INTERVAL,
        "options": {"queue": CELERY_TASK_DEFAULT_QUEUE, "expires": RECONCILE_INTERVAL},
    }
}

# Spawners that run local processes (LocalProcessSpawner) must be polled from the process
# that started them: a child's exit is only seen (and its status only known) by its parent,
# and an unreaped child looks alive to everyone else. One worker process with threads keeps
# every server a child of the process that polls it (see outposts/runner.py).
CELERY_WORKER_POOL = os.environ.get("PORTAL_WORKER_POOL", "threads")
CELERY_WORKER_CONCURRENCY = int(os.environ.get("PORTAL_WORKER_CONCURRENCY", "8"))
# Every worker stamps the queues it serves this often (outposts/workers.py); a queue not
# stamped within WORKER_SEEN_WITHIN has no live worker, and a start queued there says so.
WORKER_HEARTBEAT_INTERVAL = float(os.environ.get("PORTAL_WORKER_HEARTBEAT_INTERVAL", "30"))
WORKER_SEEN_WITHIN = float(
    os.environ.get("PORTAL_WORKER_SEEN_WITHIN", str(4 * WORKER_HEARTBEAT_INTERVAL))
)
# Per Outpost and round, at most this many timed-out starts, lost stops and servers past
# their runtime are acted on; due servers are polled this many at a time (all of them, within
# a round's RECONCILE_INTERVAL).
RECONCILE_BATCH_SIZE = int(os.environ.get("PORTAL_RECONCILE_BATCH_SIZE", "100"))
# How long one poll of a server may take before the system counts as unreachable.
SPAWNER_POLL_TIMEOUT = float(os.environ.get("PORTAL_SPAWNER_POLL_TIMEOUT", "30"))
# Where per-server internal-SSL files are written; folder names come from server ids only.
SERVER_CERTS_DIR = Path(os.environ.get("PORTAL_SERVER_CERTS_DIR", DATA_DIR / "certs"))

# Calls to Hubs (progress events, flavor updates, set-up-tunnel): timeout, TLS, retries.
HUB_CALL_TIMEOUT = float(os.environ.get("PORTAL_HUB_CALL_TIMEOUT", "10"))
# True, or the path of a CA bundle; "false" switches verification off (never in production).
HUB_CALL_VERIFY: bool | str = os.environ.get("PORTAL_HUB_CALL_CA_BUNDLE") or env_bool(
    "PORTAL_HUB_CALL_VERIFY", True
)
HUB_CALL_MAX_RETRIES = int(os.environ.get("PORTAL_HUB_CALL_MAX_RETRIES", "5"))

# Tunnels (tunnels/): the local ports tunnel agents bind, as "first-last"; how often an agent
# checks its forwards, in seconds; the longest wait between two attempts to re-open one.
TUNNEL_BIND_PORTS = os.environ.get("PORTAL_TUNNEL_BIND_PORTS", "20000-29999")
TUNNEL_CHECK_INTERVAL = float(os.environ.get("PORTAL_TUNNEL_CHECK_INTERVAL", "2"))
TUNNEL_BACKOFF_MAX = float(os.environ.get("PORTAL_TUNNEL_BACKOFF_MAX", "60"))

# Delayed tunnelling (docs/tunnels-delayed.md): the portal's base URL as compute nodes reach
# it, for outpost-start-server's address report (an Outpost's own server_callback_url wins);
# how long the wrapper keeps trying to reach it, in seconds.
SERVER_CALLBACK_URL = os.environ.get("PORTAL_SERVER_CALLBACK_URL", "")
SERVER_REPORT_TIMEOUT = float(os.environ.get("PORTAL_SERVER_REPORT_TIMEOUT", "120"))

# The spawner classes an Outpost may use (dotted paths): the deployment's operators choose
# them here, site admins pick one of them (outposts/spawner_settings.py). A spawner runs in
# the workers, which hold the portal's database credentials and keys.
SPAWNER_CLASSES = env_list(
    "PORTAL_SPAWNER_CLASSES",
    "jupyterhub.spawner.SimpleLocalProcessSpawner,jupyterhub.spawner.LocalProcessSpawner,"
    "batchspawner.SlurmSpawner,kubespawner.KubeSpawner",
)
# "Try a start" in the Outpost admin (outposts/trial.py): the Hub user name the test server
# runs as (on Slurm it needs a Unix account) and how long the start may take, in seconds.
TRY_START_USER = os.environ.get("PORTAL_TRY_START_USER", "") or "outpost-try"
TRY_START_TIMEOUT = float(os.environ.get("PORTAL_TRY_START_TIMEOUT", "60"))

# How long a synchronous API start or stop waits for its task before answering.
SYNC_WAIT_TIMEOUT = float(os.environ.get("PORTAL_SYNC_WAIT_TIMEOUT", "60"))
# The worker wakes such a wait at once over Redis pub/sub (outposts/status_events.py); the wait
# still re-reads the status this often in case a wake-up was lost (Redis restarted).
SYNC_WAIT_RECHECK_SECONDS = float(os.environ.get("PORTAL_SYNC_WAIT_RECHECK_SECONDS", "1.5"))

LOG_LEVEL = os.environ.get("PORTAL_LOG_LEVEL", "").strip().upper() or "INFO"
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(
        f"PORTAL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {LOG_LEVEL!r}."
    )
# Spawner libraries log secrets at DEBUG: batchspawner logs its get_env() with the server's
# JUPYTERHUB_API_TOKEN, KubeSpawner whole pod manifests. They never go below INFO, whatever
# PORTAL_LOG_LEVEL says (nor below the root level when that is higher).
QUIET_LOGGERS = ("traitlets", "batchspawner", "kubespawner", "jupyterhub")
_QUIET_LEVEL = logging.getLevelName(max(logging.INFO, logging.getLevelNamesMapping()[LOG_LEVEL]))

# Log lines as today ("plain") or one JSON object a line ("json"), with the request id, the
# start_id and the task id as fields (docs/monitoring.md).
LOG_FORMAT = os.environ.get("PORTAL_LOG_FORMAT", "").strip().lower() or "plain"
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"PORTAL_LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "filters": {
        "one_line": {"()": "portal.text.WithoutTraceback"},
        "log_context": {"()": "monitoring.logcontext.LogContextFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["log_context"],
        },
        # Input errors (a bad Host header, an oversized form) are logged as one line each.
        "console_one_line": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["one_line", "log_context"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # SQL with its parameters (Hub API key digests, encrypted values) is never logged.
        "django.db.backends": {"level": "INFO"},
        "django.security": {
            "handlers": ["console_one_line"],
            "level": LOG_LEVEL,
            "propagate": False,
        },
        # A failed readiness check is a line (which check, why), not a traceback a probe.
        "health_check": {
            "handlers": ["console_one_line"],
            "level": LOG_LEVEL,
            "propagate": False,
        },
        **{name: {"level": _QUIET_LEVEL} for name in QUIET_LOGGERS},
    },
}

# Health and metrics (monitoring/, docs/monitoring.md). /metrics answers a client that sends
# "Authorization: Bearer <PORTAL_METRICS_TOKEN>" or whose address is in one of the networks
# of PORTAL_METRICS_ALLOWED_NETWORKS (CIDRs, comma-separated); with neither set it is off.
METRICS_TOKEN = os.environ.get("PORTAL_METRICS_TOKEN", "").strip()
if METRICS_TOKEN and len(METRICS_TOKEN) < 24:
    raise ImproperlyConfigured(
        "PORTAL_METRICS_TOKEN must be at least 24 characters "
        '(python -c "import secrets; print(secrets.token_urlsafe(32))").'
    )
try:
    METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network(cidr) for cidr in env_list("PORTAL_METRICS_ALLOWED_NETWORKS")
    ]
except ValueError as _error:
    raise ImproperlyConfigured(f"PORTAL_METRICS_ALLOWED_NETWORKS: {_error}") from None
# A worker keeps the portal's logging (its JSON lines) rather than Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
