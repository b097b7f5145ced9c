"""The hubclient's unit tests' harness: a spawner as JupyterHub builds one (a stand-in User,
a server name, configuration), against the fake portal of fake_portal.py over real HTTP.

No Django here, as in the hubclient itself (see tests/hubclient/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.objects import Hub, Server
from outpost_hubclient import OutpostPortalSpawner
from traitlets.config import Config

from tests.support.fake_portal import HUB_NAME, HUB_SECRET, FakePortal, serve

# --- Fixtures (registered by tests/hubclient/conftest.py) -------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    fake = FakePortal()
    stop = await serve(fake)
    try:
        yield fake
    finally:
        await stop()


class StandInUser:
    """What a spawner reads of JupyterHub's User: name, id, url, groups and auth_state."""

    def __init__(
        self,
        name: str = "alice",
        user_id: int = 7,
        groups: tuple[str, ...] = ("hpc",),
        auth_state: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.id = user_id
        self.url = f"/user/{name}/"
        self.groups = [SimpleNamespace(name=group) for group in groups]
        self.auth_state = auth_state

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self.auth_state


class NamedSpawner(OutpostPortalSpawner):
    """The spawner with a server name of its own: JupyterHub takes it from the ORM row."""

    server_name = ""

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.server_name


def spawner_config(portal_url: str, **options: Any) -> Config:
    config = Config()
    config.OutpostPortalSpawner.hub_name = HUB_NAME
    config.OutpostPortalSpawner.outposts = {
        "local": {"url": portal_url, "display_name": "Local", "secret_env": "FAKE_PORTAL_SECRET"}
    }
    config.OutpostPortalSpawner.retries = 2
    config.OutpostPortalSpawner.retry_backoff = 0.01
    config.OutpostPortalSpawner.events_poll_interval = 0.05
    config.OutpostPortalSpawner.request_timeout = 5.0
    for key, value in options.items():
        setattr(config.OutpostPortalSpawner, key, value)
    return config


@pytest.fixture
def make_spawner(
    portal: FakePortal, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., NamedSpawner]:
    """A spawner as JupyterHub builds one, configured for the fake portal."""
    monkeypatch.setenv("FAKE_PORTAL_SECRET", HUB_SECRET)

    def make(
        name: str = "lab",
        user: StandInUser | None = None,
        user_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> NamedSpawner:
        user = user or StandInUser()
        spawner = NamedSpawner(
            user=user,
            hub=Hub(base_url="/hub/"),
            orm_spawner=None,
            config=spawner_config(portal.base_url, **options),
            api_token="hub-made-token",
            oauth_client_id=f"jupyterhub-user-{user.name}",
        )
        spawner.server_name = name
        spawner.server = Server(ip="0.0.0.0", port=0, base_url=f"{user.url}{name}/")
        spawner.user_options = user_options if user_options is not None else {"flavor": "small"}
        return spawner

    return make
