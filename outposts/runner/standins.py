"""What a spawner reads of JupyterHub, stood in for: its user, its Hub, its database and
its ORM-held server name. The runner (spawner.py) builds a spawner with these."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner


class StandInUser:
    """What a spawner reads of JupyterHub's User: name, id, URLs, auth state."""

    def __init__(self, *, name: str, user_id: int, base_url: str) -> None:
        from jupyterhub.utils import url_escape_path, url_path_join

        self.name = name
        self.id = user_id
        self.escaped_name = url_escape_path(name)
        self.url = url_path_join(base_url, "user", self.escaped_name, "/")
        self.spawners: dict[str, Any] = {}
        self.settings: dict[str, Any] = {}

    async def get_auth_state(self) -> dict[str, Any]:
        return {}

    def progress_url(self, server_name: str = "") -> str:
        return ""

    async def stop(self, server_name: str = "") -> None:
        """Some Hub-side spawners ask their user to stop; the portal stops on its own."""


class StandInHub:
    """What a spawner reads of JupyterHub's Hub object."""

    def __init__(self, *, api_url: str, base_url: str, public_host: str) -> None:
        self.api_url = api_url
        self.base_url = base_url
        self.public_host = public_host
        self.url = base_url


class StandInDB:
    """batchspawner and KubeSpawner call db.commit(); state is saved by the caller instead."""

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        return None


@cache
def outside_hub(spawner_class: type[Spawner]) -> type[Spawner]:
    """The spawner class with its server name held by itself instead of JupyterHub's ORM.

    Spawner.name reads orm_spawner, which must stay None here (an ORM spawner without a
    server would clear the Server object the runner sets). The subclass keeps the class
    name, so traitlets config written for the class still applies.
    """
    from traitlets import Unicode

    return type(
        spawner_class.__name__,
        (spawner_class,),
        {
            "__module__": spawner_class.__module__,
            "portal_server_name": Unicode(""),
            "name": property(lambda self: self.portal_server_name),
            "display_name": property(lambda self: self.portal_server_name),
        },
    )
