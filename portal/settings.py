"""Settings of the Outpost portal, read from the environment (see .env.example).

The embedded defaults (SQLite file, kombu's filesystem broker) let the portal run on a bare
machine; production names PostgreSQL and Redis through DATABASE_URL and CELERY_BROKER_URL.
The same code paths run in both: tasks are never executed eagerly.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("PORTAL_DEBUG")

# Where the embedded defaults keep their files (SQLite database, broker folder, logs).
DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / "var")).resolve()

SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY", "")
# Old secret keys that Hub credential digests made with them still verify against.
SECRET_KEY_FALLBACKS = env_list("PORTAL_SECRET_KEY_FALLBACKS")
# Fernet keys, newest first: the first encrypts, all decrypt (rotate with rotate_encryption_keys).
ENCRYPTION_KEYS = env_list("PORTAL_ENCRYPTION_KEYS")

if not DEBUG:
    missing = [
        name
        for name, value in (
            ("PORTAL_SECRET_KEY", SECRET_KEY),
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
    ENCRYPTION_KEYS = ENCRYPTION_KEYS or ["ZGVidWctb25seS1lbmNyeXB0aW9uLWtleS0wMDAwMDA="]

ALLOWED_HOSTS = env_list("PORTAL_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("PORTAL_CSRF_TRUSTED_ORIGINS")

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
    "outposts",
    "flavors",
    "tunnels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock when a transaction begins, so admission's count-then-insert
    # cannot interleave with another writer; the timeout rides out short lock waits.
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 20}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

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
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "outposts.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Outpost portal API",
    "DESCRIPTION": "The Outpost wire contract served per Outpost under /outposts/<slug>/.",
    "VERSION": "1",
}

# Celery: the embedded default is kombu's filesystem transport, which needs no server.
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
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
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# How often beat runs the reconciler, which fans out to every Outpost's queue.
RECONCILE_INTERVAL = float(os.environ.get("PORTAL_RECONCILE_INTERVAL", "30"))
CELERY_BEAT_SCHEDULE = {
    "servers-reconcile": {
        "task": "outposts.tasks.servers_reconcile",
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
# How many due servers one reconciler run polls per Outpost.
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

# How long a synchronous API start or stop waits for its task before answering.
SYNC_WAIT_TIMEOUT = float(os.environ.get("PORTAL_SYNC_WAIT_TIMEOUT", "60"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PORTAL_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
