"""Reads of projects: what one Hub user may use of a project, for flavor resolution."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Q, QuerySet
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from flavors.resolution import ProjectTerms
from outposts.selectors import outposts_administered_by
from portal.permissions import permission_holders
from projects.models import Allocation, Grant, Member, Project

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


def project_terms(*, hub: Hub, outpost: Outpost, name: str, user_name: str) -> ProjectTerms | None:
    """Project ``name`` of ``outpost`` as Hub user ``user_name`` of ``hub`` may use it:
    membership, the allocation, and the flavors of their grants that are live now.

    None when the Outpost has no projects at all: there the name is only what the Hub
    calls the user's account, which a batch spawner may read (allowed_user_options)."""
    if not Project.objects.filter(outpost=outpost).exists():
        return None
    project = Project.objects.filter(outpost=outpost, name=name).first()
    if project is None:
        return ProjectTerms(id=None, name=name)
    member = Member.objects.filter(project=project, hub=hub, user_name=user_name).first()
    if member is None:
        return ProjectTerms(id=project.pk, name=name)
    live = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    allocations = list(
        Allocation.objects.filter(project=project).values_list(
            "flavor_id", "max_servers", "hours_per_month"
        )
    )
    return ProjectTerms(
        id=project.pk,
        name=name,
        member=True,
        allocated={flavor_id: servers for flavor_id, servers, _ in allocations},
        hours_per_month={
            flavor_id: hours for flavor_id, _, hours in allocations if hours is not None
        },
        granted_ids=frozenset(
            Grant.objects.filter(live, member=member).values_list("flavor_id", flat=True)
        ),
    )


def projects_managed_by(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    """The projects ``user`` may manage: those they hold ``projects.manage_project`` on,
    and every project of the Outposts they administer (all for superusers)."""
    if not (user.is_active and user.is_staff):
        return Project.objects.none()
    managed = get_objects_for_user(
        user, "projects.manage_project", klass=Project, accept_global_perms=False
    )
    return Project.objects.filter(
        Q(pk__in=managed.values("pk")) | Q(outpost__in=outposts_administered_by(user=user))
    )


def project_managers(*, project: Project) -> QuerySet[AbstractBaseUser]:
    """The users holding ``projects.manage_project`` on ``project`` itself."""
    return permission_holders(obj=project, codename="manage_project")
