"""Reads of projects: what one Hub user may use of a project, for flavor resolution."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Q
from django.utils import timezone

from flavors.resolution import ProjectTerms
from projects.models import Allocation, Grant, Member, Project

if TYPE_CHECKING:
    from outposts.models import Hub, Outpost


def project_terms(
    *, hub: Hub, outpost: Outpost, name: str, user_name: str
) -> ProjectTerms | None:
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
    return ProjectTerms(
        id=project.pk,
        name=name,
        member=True,
        allocated=dict(
            Allocation.objects.filter(project=project).values_list("flavor_id", "max_servers")
        ),
        granted_ids=frozenset(
            Grant.objects.filter(live, member=member).values_list("flavor_id", flat=True)
        ),
    )
