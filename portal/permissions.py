"""Object permissions (django-guardian) as sets of users: who holds one on a row; and the
per-request cache of the ids a user may work on, which admin pages ask for on every row."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import Model, QuerySet
from django.http import HttpRequest
from guardian.shortcuts import assign_perm, get_users_with_perms, remove_perm


def permission_holders(*, obj: Model, codename: str) -> QuerySet[Any]:
    """The users holding ``codename`` on ``obj`` itself (not superusers, not by group)."""
    return get_users_with_perms(obj, only_with_perms_in=[codename], with_superusers=False)


def permission_holders_set(*, obj: Model, codename: str, users: Iterable[Any]) -> None:
    """Make exactly ``users`` hold ``codename`` on ``obj``: grant the new, revoke the rest."""
    perm = f"{obj._meta.app_label}.{codename}"
    wanted = {user.pk: user for user in users}
    for user in permission_holders(obj=obj, codename=codename):
        if wanted.pop(user.pk, None) is None:
            remove_perm(perm, user, obj)
    for user in wanted.values():
        assign_perm(perm, user, obj)


def cached_per_request(
    ids_of: Callable[[HttpRequest], set[int]],
) -> Callable[[HttpRequest], set[int]]:
    """Compute ``ids_of(request)`` once per request: a change list asks it for every row, and
    the admin's navigation on every page."""
    attribute = f"_cached_{ids_of.__module__}.{ids_of.__qualname__}"

    @functools.wraps(ids_of)
    def cached(request: HttpRequest) -> set[int]:
        if attribute not in request.__dict__:
            request.__dict__[attribute] = ids_of(request)
        return request.__dict__[attribute]

    return cached
