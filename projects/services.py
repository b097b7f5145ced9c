"""Writes of projects: who manages a project, and who granted what."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.base_user import AbstractBaseUser
from guardian.shortcuts import assign_perm, remove_perm

from projects.models import Grant, Project
from projects.selectors import project_managers


def project_managers_set(*, project: Project, users: Iterable[AbstractBaseUser]) -> None:
    """Make exactly ``users`` the managers of ``project`` (its object permission)."""
    wanted = {user.pk: user for user in users}
    for user in project_managers(project=project):
        if user.pk not in wanted:
            remove_perm("projects.manage_project", user, project)
        wanted.pop(user.pk, None)
    for user in wanted.values():
        assign_perm("projects.manage_project", user, project)


def grant_record_granter(*, grant: Grant, user: AbstractBaseUser) -> None:
    """Record who made a new grant (the admin calls it as it saves one)."""
    if grant.granted_by_id is None:
        grant.granted_by = user
