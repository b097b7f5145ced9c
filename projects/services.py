"""Writes of projects: who manages a project, and who granted what."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.base_user import AbstractBaseUser

from portal.permissions import permission_holders_set
from projects.models import Grant, Project


def project_managers_set(*, project: Project, users: Iterable[AbstractBaseUser]) -> None:
    """Make exactly ``users`` the managers of ``project`` (its object permission)."""
    permission_holders_set(obj=project, codename="manage_project", users=users)


def grant_record_granter(*, grant: Grant, user: AbstractBaseUser) -> None:
    """Record who made a new grant (the admin calls it as it saves one)."""
    if grant.granted_by_id is None:
        grant.granted_by = user
