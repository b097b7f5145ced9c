"""HPC projects on an Outpost: their members, what the project was allocated, and the flavors
its managers granted to members."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class Project(models.Model):
    """A project allocated resources on one Outpost. Its managers hold the object permission
    ``projects.manage_project`` on it (django-guardian)."""

    outpost = models.ForeignKey(
        "outposts.Outpost", on_delete=models.CASCADE, related_name="projects"
    )
    name = models.SlugField(max_length=100, help_text="What a start names as user_options.project.")
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["outpost", "name"]
        constraints = [
            models.UniqueConstraint(fields=["outpost", "name"], name="unique_project_per_outpost")
        ]
        permissions = [("manage_project", "Manage the project's members and grants")]

    def __str__(self) -> str:
        return self.name


class Member(models.Model):
    """A Hub user who belongs to a project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="members")
    hub = models.ForeignKey(
        "outposts.Hub", on_delete=models.CASCADE, related_name="project_members"
    )
    user_name = models.CharField("Hub user name", max_length=255)

    class Meta:
        ordering = ["project", "hub__name", "user_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "hub", "user_name"], name="unique_member_per_project"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_name} of {self.hub.name}"


class Allocation(models.Model):
    """How many servers of one flavor a project may run at once, and optionally how many
    flavor-hours of it it may use per month."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="allocations")
    flavor = models.ForeignKey(
        "flavors.Flavor", on_delete=models.CASCADE, related_name="allocations"
    )
    max_servers = models.PositiveIntegerField(
        help_text="Active servers of this flavor the project's members may have together."
    )
    hours_per_month = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Flavor-hours of this flavor the project may use per calendar month (UTC); "
        "empty = no limit. A start once they are used up is refused.",
    )

    class Meta:
        ordering = ["project", "flavor__name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "flavor"], name="one_allocation_per_flavor")
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.max_servers} of {self.flavor.name}"

    def clean(self) -> None:
        if self.flavor_id and self.project_id and self.flavor.outpost_id != self.project.outpost_id:
            raise ValidationError({"flavor": "Choose a flavor of the project's Outpost."})


class Grant(models.Model):
    """A member may start servers of one of the project's allocated flavors, until it
    expires (no expiry: until revoked)."""

    # The project is the member's: it is here so that a project's page lists its grants.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="grants")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="grants")
    flavor = models.ForeignKey("flavors.Flavor", on_delete=models.CASCADE, related_name="grants")
    expires_at = models.DateTimeField(null=True, blank=True)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="project_grants",
        editable=False,
    )
    granted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["member", "flavor__name"]
        constraints = [
            models.UniqueConstraint(fields=["member", "flavor"], name="one_grant_per_flavor")
        ]

    def __str__(self) -> str:
        return f"{self.member} may use {self.flavor.name}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def clean(self) -> None:
        if not (self.project_id and self.member_id and self.flavor_id):
            return
        project = self.project
        if self.member.project_id != project.pk:
            raise ValidationError({"member": f"Choose a member of project {project.name}."})
        if not project.allocations.filter(flavor_id=self.flavor_id).exists():
            raise ValidationError(
                {
                    "flavor": f"Project {project.name} has no allocation of {self.flavor.name}: "
                    "only flavors of its allocation can be granted."
                }
            )
