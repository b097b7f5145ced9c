"""The end-to-end harness itself: a real JupyterHub, proxy and single-user server.

Proves tests/support/jupyterhub.py with JupyterHub's own SimpleLocalProcessSpawner,
before the end-to-end tests use it with the hubclient against the real portal.
"""

from __future__ import annotations

import pytest

from tests.support.jupyterhub import (
    SIMPLE_LOCAL_SPAWNER_CONFIG,
    running_jupyterhub,
    stop_jupyterhub,
)
from tests.support.processes import alive

pytestmark = pytest.mark.e2e


def test_a_real_hub_starts_a_server_reachable_through_the_proxy(tmp_path):
    with running_jupyterhub(tmp_path, spawner_config=SIMPLE_LOCAL_SPAWNER_CONFIG) as hub:
        # given a user made through the Hub REST API with the admin service token
        status, _ = hub.api("POST", "/users/alice")
        assert status == 201

        # when their server is started
        status, _ = hub.api("POST", "/users/alice/server")
        assert status in (201, 202)
        server = hub.wait_for_server("alice")

        # then the server answers through the proxy
        status, body = hub.request("GET", f"{hub.url}/user/alice/api/status")
        assert status == 200, body
        assert server["url"] == "/user/alice/"

        # and stopping the Hub leaves no process: servers, proxy and Hub are gone
        processes = set(hub.known_processes)
        assert len(processes) >= 2  # at least the proxy and the single-user server
        survivors = stop_jupyterhub(hub)
        assert survivors == set()
        assert not any(alive(pid) for pid in processes | {hub.process.pid})
