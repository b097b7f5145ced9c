"""System checks of the Outposts' configuration (``manage.py check --deploy --database default``).

They read Outpost rows, so they carry the ``database`` tag: Django runs them only when asked
for a database (``--database``), never at every start-up or before migrations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Tags, Warning, register
from django.db import DatabaseError
from django.utils.module_loading import import_string

LOCAL_PROCESS_SPAWNER = "jupyterhub.spawner.SimpleLocalProcessSpawner"


def _runs_as_the_worker(spawner_class: str) -> bool:
    """Whether servers of this spawner class run as the worker's own OS user."""
    try:
        base = import_string(LOCAL_PROCESS_SPAWNER)
        spawner = import_string(spawner_class)
    except ImportError:
        return False  # Outpost.clean() reports a class that cannot be imported
    return isinstance(spawner, type) and issubclass(spawner, base)


@register(Tags.database, deploy=True)
def check_local_process_spawners(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """A warning per Outpost whose servers run as the worker's OS user.

    SimpleLocalProcessSpawner does not switch users: user code can read the worker's
    environment and files, which hold the portal's secrets (database password, keys).
    """
    if not databases:
        return []
    from outposts.models import Outpost

    messages: list[CheckMessage] = []
    for alias in databases:
        try:
            outposts = list(Outpost.objects.using(alias).only("slug", "spawner_class"))
        except DatabaseError:
            continue  # not migrated yet: nothing configured to warn about
        messages += [
            Warning(
                f"Outpost {outpost.slug!r} uses {outpost.spawner_class}: every user's server "
                "runs as the worker's own OS user and can read the worker's environment "
                "(the portal's database password and keys).",
                hint="Use it for demos and tests only; in production use a spawner that runs "
                "servers as their users or elsewhere (SlurmSpawner, KubeSpawner, "
                "LocalProcessSpawner with a root worker).",
                obj=outpost,
                id="outposts.W001",
            )
            for outpost in outposts
            if _runs_as_the_worker(outpost.spawner_class)
        ]
    return messages


@register(Tags.database)
def check_spawner_settings(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """A warning per Outpost whose spawner settings its admin could no longer save: a class
    off PORTAL_SPAWNER_CLASSES, traits the class does not have, values of the wrong type
    (rows saved before the rule, or an allow-list narrowed since). outposts/spawner_settings.py
    holds the rule; the admin shows the same messages on the Outpost's page.
    """
    if not databases:
        return []
    from outposts.models import Outpost
    from outposts.spawner_settings import trait_values_problems_of

    messages: list[CheckMessage] = []
    for alias in databases:
        try:
            outposts = list(Outpost.objects.using(alias).prefetch_related("flavors"))
        except DatabaseError:
            continue  # not migrated yet
        for outpost in outposts:
            problems = [
                f"{name}: {problem}"
                for name, field_problems in outpost.spawner_settings_problems().items()
                for problem in field_problems
            ]
            problems += [
                f"flavor {flavor.name!r} resources: {problem}"
                for flavor in outpost.flavors.all()
                if isinstance(flavor.resources, dict)
                for problem in trait_values_problems_of(
                    spawner_class=outpost.spawner_class, values=flavor.resources
                )
            ]
            messages += [
                Warning(
                    f"Outpost {outpost.slug!r}: {problem}",
                    hint="Correct it in the Outpost's admin page or the apply_config file; "
                    "starts may fail until then.",
                    obj=outpost,
                    id="outposts.W002",
                )
                for problem in problems
            ]
    return messages
