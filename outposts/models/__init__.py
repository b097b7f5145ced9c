"""Outposts (compute systems), Hubs (JupyterHub clients) and the servers they start, one
module each; what workers record (heartbeats, trial starts) in worker.py."""

from outposts.models.hub import Hub, HubAPIKey
from outposts.models.outpost import (
    ENV_PATTERN,
    HOST_NAME,
    NODE_PATTERN,
    TRAIT_NAME,
    Outpost,
    host_matches_patterns,
    is_host,
    node_patterns_problem,
    override_values_problem,
)
from outposts.models.server import Server, ServerQuerySet, SpawnEvent
from outposts.models.worker import OutpostTrial, WorkerHeartbeat

__all__ = [
    "ENV_PATTERN",
    "HOST_NAME",
    "NODE_PATTERN",
    "TRAIT_NAME",
    "Hub",
    "HubAPIKey",
    "Outpost",
    "OutpostTrial",
    "Server",
    "ServerQuerySet",
    "SpawnEvent",
    "WorkerHeartbeat",
    "host_matches_patterns",
    "is_host",
    "node_patterns_problem",
    "override_values_problem",
]
