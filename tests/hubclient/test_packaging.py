"""The hubclient installs into a JupyterHub on its own: no Django, registered as a spawner."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points


def test_importing_the_hubclient_loads_no_django():
    # A fresh interpreter: this test process has Django loaded by pytest-django.
    code = (
        "import sys, outpost_hubclient;"
        "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'));"
        "print(loaded)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_registered_as_a_jupyterhub_spawner():
    from outpost_hubclient import OutpostPortalSpawner

    (entry,) = [e for e in entry_points(group="jupyterhub.spawners") if e.name == "outpost-portal"]

    assert entry.load() is OutpostPortalSpawner


def test_every_option_is_configurable_and_documented():
    from jupyterhub.spawner import Spawner
    from outpost_hubclient import OutpostPortalSpawner

    own = set(OutpostPortalSpawner.class_traits(config=True)) - set(
        Spawner.class_traits(config=True)
    )

    assert {
        "outposts",
        "request_timeout",
        "connect_timeout",
        "retries",
        "events_poll_interval",
        "validate_cert",
        "ca_file",
    } <= own
    for name in own:
        assert len(OutpostPortalSpawner.class_traits()[name].help) > 40, name
