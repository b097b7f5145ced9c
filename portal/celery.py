"""The Celery app. Each Outpost's lifecycle tasks go to its own queue (Outpost.celery_queue)."""

import os

from celery import Celery
from click import Option
from kombu.transport import TRANSPORT_ALIASES

from outposts.workers import WorkerHeartbeatStep
from portal.beat import BeatThread
from tunnels.agent_thread import TunnelAgentStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
# filesystem:// is kombu's transport with atomic writes and a reader that skips broken files
# (portal/filesystem_broker.py); every process that queues or consumes imports this module.
TRANSPORT_ALIASES["filesystem"] = "portal.filesystem_broker:Transport"

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Every worker stamps the queues it serves in the database (outposts/workers.py says why).
app.steps["consumer"].add(WorkerHeartbeatStep)
# runportal's worker runs beat in a thread of its own (portal/beat.py says why).
app.user_options["worker"].add(
    Option(["--beat-thread"], is_flag=True, default=False, help="Run beat in a worker thread.")
)
app.steps["worker"].add(BeatThread)
# and the tunnel agent too (tunnels/agent_thread.py says why).
app.user_options["worker"].add(
    Option(["--tunnel-agent"], default=None, help="Run the tunnel agent NAME in a worker thread.")
)
app.steps["worker"].add(TunnelAgentStep)


@app.on_after_finalize.connect
def _ensure_broker_folders(sender: Celery, **kwargs: object) -> None:
    # kombu's filesystem transport expects its folders to exist before the first message.
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for key in ("data_folder_in", "processed_folder", "control_folder"):
            os.makedirs(settings.CELERY_BROKER_TRANSPORT_OPTIONS[key], exist_ok=True)
