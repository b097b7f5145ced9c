"""What the runner adds to KubeSpawner (the ordinary class) so it can run outside JupyterHub.

JupyterHub runs one event loop for its whole life; KubeSpawner relies on that. The portal
runs each start, poll and stop in an event loop of its own (``run_sync``), and builds the
spawner in sync code, so ``runner_class`` gives ``SpawnerRunner`` a subclass (same name, so
the Outpost's ``spawner_config`` still applies) that:

- builds the spawner inside a short-lived loop when none runs: KubeSpawner's ``__init__``
  asks for the running loop's shared API client;
- reads its API client (``api``) from the running loop on every use: an aiohttp client is
  bound to the loop that made it, and that loop is gone by the next call;
- keeps KubeSpawner's class-level pod and event reflectors per event loop: a reflector's
  watch task ends with its loop, so a reflector started by an earlier call would answer
  from a frozen copy of the cluster (a deleted pod would look running, a stop would wait for
  ever for its pod to go), and two worker threads would share one loop's watches.

Everything else is KubeSpawner's own: the pod spec from the traits (the flavor's
``cpu_guarantee``/``cpu_limit``/``mem_guarantee``/``mem_limit``, the Outpost's ``namespace``
and ``service_account``, an allow-listed ``image`` from the request's ``misc``), progress
from the pod's events, stop deleting the pod, poll reading the pod (a pod that is gone
reads as exited, status 1). See docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, MutableMapping
from functools import cache
from typing import Any


class ReflectorsPerLoop(MutableMapping[Any, Any]):
    """KubeSpawner's ``reflectors`` dict, one per running event loop.

    Loops that have closed are dropped on each use (their reflectors' tasks ended with them).
    The worker's threads each run loops of their own, hence the lock.
    """

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, dict[Any, Any]] = {}
        self._lock = threading.Lock()

    def _current(self) -> dict[Any, Any]:
        loop = asyncio.get_running_loop()
        with self._lock:
            for other in [other for other in self._by_loop if other.is_closed()]:
                del self._by_loop[other]
            return self._by_loop.setdefault(loop, {})

    def __getitem__(self, key: Any) -> Any:
        return self._current()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._current()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._current()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._current()))

    def __len__(self) -> int:
        return len(self._current())


def is_kube(spawner_class: type) -> bool:
    try:
        from kubespawner import KubeSpawner
    except ImportError:
        return False
    return isinstance(spawner_class, type) and issubclass(spawner_class, KubeSpawner)


@cache
def runner_class(spawner_class: type) -> type:
    """``spawner_class`` (a KubeSpawner) made to live across the runner's event loops."""
    from kubespawner.clients import shared_client

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        parent_init = super(built, self).__init__
        try:
            asyncio.get_running_loop()
        except RuntimeError:

            async def construct() -> None:
                parent_init(*args, **kwargs)

            asyncio.run(construct())
        else:
            parent_init(*args, **kwargs)

    def api_get(self: Any) -> Any:
        return shared_client("CoreV1Api")

    def api_set(self: Any, value: Any) -> None:
        """KubeSpawner's __init__ stores the client of its loop; each use asks anew."""

    built = type(
        spawner_class.__name__,
        (spawner_class,),
        {
            "__module__": spawner_class.__module__,
            "__init__": __init__,
            "api": property(api_get, api_set),
            "reflectors": ReflectorsPerLoop(),
        },
    )
    return built


# KubeSpawner traits a Hub's ``misc`` never sets, even where an admin allow-lists them: where
# the pod runs and with which credentials (namespace, service account, API access), what it
# may do on its node (privileges, ids, host paths through volumes, extra containers), and
# code the spawner runs (hooks). ``image`` and the like stay for the admin to allow.
PROTECTED_TRAITS = frozenset(
    {
        "namespace",
        "enable_user_namespaces",
        "user_namespace_template",
        "user_namespace_labels",
        "user_namespace_annotations",
        "service_account",
        "automount_service_account_token",
        "privileged",
        "allow_privilege_escalation",
        "container_security_context",
        "pod_security_context",
        "uid",
        "gid",
        "fs_gid",
        "supplemental_gids",
        "volumes",
        "volume_mounts",
        "extra_pod_config",
        "extra_container_config",
        "extra_containers",
        "init_containers",
        "lifecycle_hooks",
        "modify_pod_hook",
        "after_pod_created_hook",
        "get_pod_url",
        "pod_connect_ip",
        "k8s_api_host",
        "k8s_api_ssl_ca_cert",
        "k8s_api_verify_ssl",
        "scheduler_name",
        "priority_class_name",
        "node_selector",
        "tolerations",
        "node_affinity_required",
        "profile_list",
        "cmd",
        "environment",
    }
)


def protected_traits(spawner_class: str) -> frozenset[str]:
    """The traits ``misc`` may never set on an Outpost of ``spawner_class`` (a dotted path)."""
    from django.utils.module_loading import import_string

    try:
        cls = import_string(spawner_class)
    except ImportError:
        return frozenset()
    return PROTECTED_TRAITS if is_kube(cls) else frozenset()
