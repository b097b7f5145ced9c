"""Writes of projects: who manages a project, its members, and the flavors granted to them.

Membership and grants decide what the next start may use. Removing a member or revoking a
grant leaves servers that already run alone: they end with their runtime or a stop, as a
lowered cap leaves running servers alone too (docs/projects.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from flavors.models import Flavor
from outposts.models import Hub
from portal.permissions import permission_holders_set
from projects.models import Grant, Member, Project


def project_managers_set(*, project: Project, users: Iterable[AbstractBaseUser]) -> None:
    """Make exactly ``users`` the managers of ``project`` (its object permission)."""
    permission_holders_set(obj=project, codename="manage_project", users=users)


def member_add(*, project: Project, hub: Hub, user_name: str) -> Member:
    """Make Hub user ``user_name`` of ``hub`` a member of ``project``."""
    if not project.outpost.hubs.filter(pk=hub.pk).exists():
        raise ValidationError(f"Hub {hub.name} may not use Outpost {project.outpost.slug}.")
    member, created = Member.objects.get_or_create(project=project, hub=hub, user_name=user_name)
    if not created:
        raise ValidationError(f"{member} is already a member of {project.name}.")
    return member


def member_remove(*, member: Member) -> None:
    """Remove a member from their project, and with them their grants."""
    member.delete()


@transaction.atomic
def grant_flavor(
    *,
    project: Project,
    member: Member,
    flavor: Flavor,
    expires_at: datetime | None,
    granted_by: AbstractBaseUser,
) -> tuple[Grant, bool]:
    """Let ``member`` start ``flavor`` in ``project`` until ``expires_at`` (None: until
    revoked). Granting a flavor the member already has sets its new expiry. Returns the
    grant and whether it is new; refuses flavors outside the project's allocation."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "Choose an expiry in the future, or none."})
    grant = Grant.objects.select_for_update().filter(member=member, flavor=flavor).first()
    created = grant is None
    if created:
        grant = Grant(project=project, member=member, flavor=flavor, granted_by=granted_by)
    grant.expires_at = expires_at
    grant.full_clean()  # the member is the project's, the flavor of its allocation
    grant.save()
    return grant, created


def grant_revoke(*, grant: Grant) -> None:
    grant.delete()
