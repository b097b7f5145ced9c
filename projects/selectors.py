"""Reads of projects: what one Hub user may use of a project (for flavor resolution), who
manages which project, and what a project's page shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from flavors.resolution import ProjectTerms
from outposts.models import Server
from outposts.selectors import outposts_administered_by
from outposts.usage import project_flavor_hours_this_month
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


def usage_servers_visible_to(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Server] | None:
    """The servers whose usage ``user`` may read: those of the Outposts they administer and
    of the projects they manage. None when they do neither."""
    outposts = outposts_administered_by(user=user)
    projects = projects_managed_by(user=user)
    if not (outposts.exists() or projects.exists()):
        return None
    return Server.objects.filter(Q(outpost__in=outposts) | Q(project__in=projects))


def project_managers(*, project: Project) -> QuerySet[AbstractBaseUser]:
    """The users holding ``projects.manage_project`` on ``project`` itself."""
    return permission_holders(obj=project, codename="manage_project")


@dataclass(frozen=True)
class AllocationUse:
    """One flavor of a project's allocation, and how much of it the project uses now."""

    allocation: Allocation
    active: int
    hours_this_month: float | None  # None: the allocation counts no hours

    @property
    def hours_text(self) -> str:
        return "" if self.hours_this_month is None else f"{self.hours_this_month:.1f}"


@dataclass(frozen=True)
class ProjectPage:
    project: Project
    allocations: tuple[AllocationUse, ...]
    members: tuple[Member, ...]
    grants: tuple[Grant, ...]


def project_page(*, project: Project) -> ProjectPage:
    """What a project's page shows: its allocation and use, its members and its grants."""
    allocations = list(Allocation.objects.filter(project=project).select_related("flavor"))
    active = dict(
        Server.objects.active()
        .filter(project=project)
        .values("flavor_id")
        .annotate(servers=Count("pk"))
        .values_list("flavor_id", "servers")
    )
    return ProjectPage(
        project=project,
        allocations=tuple(
            AllocationUse(
                allocation=allocation,
                active=active.get(allocation.flavor_id, 0),
                hours_this_month=None
                if allocation.hours_per_month is None
                else project_flavor_hours_this_month(
                    project_id=project.pk, flavor_id=allocation.flavor_id
                ),
            )
            for allocation in allocations
        ),
        members=tuple(Member.objects.filter(project=project).select_related("hub")),
        grants=tuple(
            Grant.objects.filter(project=project).select_related(
                "member__hub", "flavor", "granted_by"
            )
        ),
    )
