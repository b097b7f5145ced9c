"""Stand-in spawners for the benchmarks only (allow-listed by the bench, never by a site)."""

from __future__ import annotations

from jupyterhub.spawner import SimpleLocalProcessSpawner


class FastPollSpawner(SimpleLocalProcessSpawner):
    """A server that always runs: poll answers None at once, so a reconciler round's cost
    is all the portal's."""

    async def start(self):
        return ("127.0.0.1", 9)

    async def poll(self):
        return None

    async def stop(self, now=False):
        return None
