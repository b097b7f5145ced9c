"""Object permissions (django-guardian) as sets of users: who holds one on a row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Model, QuerySet
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
