"""Start-up refuses to run without its secrets when debug is off."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def manage_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``manage.py check`` with the real settings module and only the given portal variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PORTAL_", "DJANGO_"))}
    clean.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        PORTAL_DATA_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **env,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        (
            {"PORTAL_ENCRYPTION_KEYS": "doMMAYSpy4vTWjE1IhxV6yhXTVFnlisU_zoKssC77Q0="},
            "PORTAL_SECRET_KEY",
        ),
        ({"PORTAL_SECRET_KEY": "a-secret"}, "PORTAL_ENCRYPTION_KEYS"),
    ],
)
def test_missing_secret_stops_start_up(tmp_path, env, missing):
    # when the portal starts with debug off and one secret missing
    result = manage_check(tmp_path, **env)
    # then it stops, naming the missing variable and how to make one
    assert result.returncode != 0
    assert f"{missing} must be set when PORTAL_DEBUG is off" in result.stderr
    assert "generate_secrets" in result.stderr


def test_with_both_secrets_start_up_passes(tmp_path):
    # when both secrets are given
    result = manage_check(
        tmp_path,
        PORTAL_SECRET_KEY="a-secret",
        PORTAL_ENCRYPTION_KEYS="doMMAYSpy4vTWjE1IhxV6yhXTVFnlisU_zoKssC77Q0=",
    )
    # then the checks pass
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


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
