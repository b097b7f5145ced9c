"""Start-up refuses to run without its secrets, or with broken ones, when debug is off; and
with debug off the defaults are the secure ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FERNET_KEY = "doMMAYSpy4vTWjE1IhxV6yhXTVFnlisU_zoKssC77Q0="
SECRETS = {
    "PORTAL_SECRET_KEY": "a-secret",
    "PORTAL_CREDENTIAL_KEY": "a-credential-key",
    "PORTAL_ENCRYPTION_KEYS": FERNET_KEY,
}


def portal_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment of a portal process: the real settings module, only these variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DJANGO_"))}
    clean.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_DATA_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )
    clean.update(env)
    return clean


def manage_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py check`` with the real settings module and only the given portal variables."""
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=portal_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def loaded_settings(tmp_path: Path, *names: str, **env: str) -> dict[str, object]:
    """The values of settings ``names`` as a portal process with ``env`` loads them."""
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{name: getattr(settings, name, None) for name in {names!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=portal_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_missing_secret_stops_start_up(tmp_path, missing):
    # when the portal starts with debug off and one secret missing
    env = {name: value for name, value in SECRETS.items() if name != missing}
    result = manage_check(tmp_path, **env)
    # then it stops, naming the missing variable and how to make one
    assert result.returncode != 0
    assert f"{missing} must be set when PORTAL_DEBUG is off" in result.stderr
    assert "generate_secrets" in result.stderr


def test_with_every_secret_start_up_passes(tmp_path):
    # when every secret is given
    result = manage_check(tmp_path, **SECRETS)
    # then the checks pass
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("keys", "position"),
    [
        ("not-a-fernet-key", 1),
        (f"{FERNET_KEY},c2hvcnQ=", 2),
        (FERNET_KEY[:-2], 1),
    ],
)
def test_a_malformed_encryption_key_stops_start_up(tmp_path, keys, position):
    # when the portal starts with a key ring one of whose keys is not a Fernet key
    result = manage_check(tmp_path, **{**SECRETS, "PORTAL_ENCRYPTION_KEYS": keys})
    # then it stops at once, saying which key, instead of failing the first encryption
    assert result.returncode != 0
    assert f"PORTAL_ENCRYPTION_KEYS: key number {position} is not a Fernet key" in result.stderr


def test_generate_secrets_output_starts_the_portal(tmp_path):
    # given secrets printed by generate_secrets on a machine without any (debug on, as documented)
    generated = subprocess.run(
        [sys.executable, "manage.py", "generate_secrets"],
        cwd=REPO,
        env={
            **os.environ,
            "PORTAL_DEBUG": "1",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PORTAL_DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    values = dict(line.split("=", 1) for line in generated.stdout.splitlines())
    # when the portal starts with them and debug off
    result = manage_check(tmp_path, **values)
    # then it starts
    assert result.returncode == 0, result.stderr


TRANSPORT = (
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_HSTS_SECONDS",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "X_FRAME_OPTIONS",
)


def test_with_debug_off_the_transport_defaults_are_secure(tmp_path):
    # when the portal loads its settings with debug off and nothing else said
    loaded = loaded_settings(tmp_path, *TRANSPORT, **SECRETS)
    # then cookies are https-only and not readable by scripts, framing and sniffing are off
    assert loaded == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_PROXY_SSL_HEADER": None,  # trusted only when told there is a TLS proxy
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "X_FRAME_OPTIONS": "DENY",
    }


def test_transport_settings_come_from_the_environment(tmp_path):
    # when an operator behind a TLS proxy turns HSTS on, and a demo turns secure cookies off
    loaded = loaded_settings(
        tmp_path,
        *TRANSPORT,
        **SECRETS,
        PORTAL_BEHIND_TLS_PROXY="true",
        PORTAL_HSTS_SECONDS="31536000",
        PORTAL_SECURE_COOKIES="false",
    )
    # then the settings say so
    assert loaded["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert loaded["SECURE_HSTS_SECONDS"] == 31536000
    assert (loaded["SESSION_COOKIE_SECURE"], loaded["CSRF_COOKIE_SECURE"]) == (False, False)


def test_debug_serves_cookies_over_plain_http(tmp_path):
    # when a developer runs with debug on and no secrets
    loaded = loaded_settings(tmp_path, "SESSION_COOKIE_SECURE", PORTAL_DEBUG="1")
    # then the admin works over http://127.0.0.1
    assert loaded["SESSION_COOKIE_SECURE"] is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORTAL_HSTS_SECONDS", "a year", "PORTAL_HSTS_SECONDS must be a whole number"),
        ("PORTAL_LOG_LEVEL", "LOUD", "PORTAL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR"),
    ],
)
def test_a_malformed_setting_stops_start_up(tmp_path, name, value, message):
    result = manage_check(tmp_path, **SECRETS, **{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_spawner_loggers_never_log_at_debug(tmp_path):
    # given a portal whose operator asked for DEBUG logs
    code = (
        "import logging, django; django.setup(); "
        "logging.getLogger('batchspawner').debug('env JUPYTERHUB_API_TOKEN=tok-batch'); "
        "logging.getLogger('kubespawner.spawner').debug('pod tok-kube'); "
        "logging.getLogger('traitlets').debug('tok-traitlets'); "
        "logging.getLogger('jupyterhub').debug('tok-hub'); "
        "logging.getLogger('batchspawner').info('job submitted'); "
        "logging.getLogger('outposts.runner').debug('portal debug line')"
    )
    # when the spawner libraries log at DEBUG through the configured handlers
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=portal_env(tmp_path, PORTAL_DEBUG="1", PORTAL_LOG_LEVEL="DEBUG"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then none of their debug lines (tokens, env, manifests) are written; the rest is
    assert result.returncode == 0, result.stderr
    assert "tok-" not in result.stderr
    assert "job submitted" in result.stderr
    assert "portal debug line" in result.stderr


def test_spawner_loggers_follow_a_higher_root_level(tmp_path):
    loaded = loaded_settings(tmp_path, "LOGGING", **SECRETS, PORTAL_LOG_LEVEL="WARNING")
    levels = {name: config["level"] for name, config in loaded["LOGGING"]["loggers"].items()}
    assert levels["batchspawner"] == levels["kubespawner"] == "WARNING"


@pytest.mark.parametrize(
    ("variable", "binding"), [({}, True), ({"PORTAL_DB_SERVER_SIDE_BINDING": "0"}, False)]
)
def test_postgresql_binds_the_parameters_unless_told_not_to(tmp_path, variable, binding):
    # when a portal process loads its settings for PostgreSQL (it connects only when asked)
    loaded = loaded_settings(
        tmp_path,
        "DATABASES",
        **SECRETS,
        DATABASE_URL="postgres://portal@db.invalid/portal",
        **variable,
    )
    # then the server binds the queries' parameters, unless a pooler in the way forbids it
    assert loaded["DATABASES"]["default"]["OPTIONS"]["server_side_binding"] is binding
