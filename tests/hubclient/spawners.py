"""Spawner classes the end-to-end tests configure on the portal's Outposts, by dotted path.

The portal's Celery worker imports them (it runs from the repository root).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Float


class QueuedStartSpawner(SimpleLocalProcessSpawner):
    """A start that stays pending, like a batch job waiting in a queue.

    The server process is started at once (so a cancelled start has something to clean
    up), its pid written to ``<home>/started.pid``, and only after ``start_delay`` seconds
    does start() return.
    """

    start_delay = Float(60.0, help="Seconds start() takes after the process runs.").tag(config=True)

    async def start(self):  # type: ignore[override]
        result = await super().start()
        Path(self.home_dir, "started.pid").write_text(str(self.pid))
        await asyncio.sleep(self.start_delay)
        return result
