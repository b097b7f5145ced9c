"""The hubclient installs into a JupyterHub on its own: no Django, registered as a spawner."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

HUBCLIENT = Path(__file__).resolve().parents[2] / "hubclient"


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


def test_the_built_wheel_declares_only_hub_dependencies_and_imports_without_django(tmp_path):
    # given the wheel `pip install ./hubclient` builds (from a copy: the tree stays clean)
    source = tmp_path / "hubclient"
    shutil.copytree(HUBCLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + [str(source), "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("outpost_hubclient-*.whl")

    # then its metadata asks for what a JupyterHub already has, and nothing of the portal
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
        assert "outpost_hubclient/py.typed" in archive.namelist()
    assert sorted(metadata.get_all("Requires-Dist")) == [
        "jupyterhub>=5",
        "tornado>=6.1",
        "traitlets>=5",
    ]
    assert metadata["License-Expression"] == "BSD-3-Clause"

    # and the package imports from the wheel alone with Django made unimportable
    code = (
        "import sys; sys.modules['django'] = None; sys.path.insert(0, sys.argv[1]);"
        "import outpost_hubclient, outpost_hubclient.spawner;"
        "assert outpost_hubclient.__file__.startswith(sys.argv[1]), outpost_hubclient.__file__;"
        "print(outpost_hubclient.OutpostPortalSpawner.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(wheel)], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "OutpostPortalSpawner"
