"""A flavors file of the existing Outpost service as a site has one, the portal's Hubs it
names, and the flavor-table pushes a write queues, for the import and apply_config tests."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

from django.core.management import call_command
from rest_framework.test import APIClient

from flavors.models import Flavor, HubPolicy, UserRule
from outposts.models import Hub, Outpost
from tests.factories import HubFactory
from tests.support.api import basic_auth

#: Hub sets by glob (courses; "course*" is also a valid regex that matches neither course
#: Hub), by list (research, tutors) and by regex (labs); "public" is in no set. User sets with
#: a list, a glob and a negated regex, weights, a forbidden set, overrides, maxPerUser 0.
FLAVOR_FILE = r"""
flavors:
  small:
    display_name: Small (1 CPU)
    description: For trying things out
    weight: 10
    max: -1
    maxPerUser: 0
    runtime: {hours: 2}
    resources: {cpu_limit: 1, mem_limit: 2G}
  large:
    display_name: Large (8 CPUs)
    description: For real work
    weight: 5
    max: 10
    maxPerUser: 2
    runtime: {hours: 8}
    resources: {cpu_limit: 8, mem_limit: 32G}
  gpu:
    display_name: One GPU
    weight: 1
    max: 4
    maxPerUser: 1
    runtime: {days: 1}
    resources: {extra_resource_limits: {nvidia.com/gpu: 1}}
hubs:
  courses:
    jupyterhub_name: "course*"
    weight: 10
    flavors: [small, large]
    flavorsOverride:
      large: {max: 3, runtime: {hours: 4}, display_name: Large (course)}
      gpu: {runtime: {hours: 1}}
  research:
    jupyterhub_name: [research]
    flavorsOverride:
      gpu: {maxPerUser: 2}
  tutors:
    jupyterhub_name: [course1]
    weight: 20
    flavors: [gpu]
  labs:
    jupyterhub_name: "lab-[ab]"
    flavors: [small]
users:
  staff:
    authentication: {groups: [staff, admins]}
    weight: 10
    flavorsOverride:
      large: {maxPerUser: 0, max: 5}
  students:
    hubs: [course1, course2]
    authentication: {email: "*@students.example.org"}
    weight: 5
    flavors: [small]
  external:
    negate_authentication: true
    authentication: {email: '.*@(students\.)?example\.org'}
    weight: 1
    flavors: [small]
    flavorsOverride:
      small: {runtime: {minutes: 30}}
  blocked:
    authentication: {name: [mallory, trudy]}
    weight: 100
    forbidden: true
"""

#: The Hubs the file names or matches, and one it does not.
HUB_NAMES = ("course1", "course2", "research", "lab-a", "public")


def file_hubs(outpost: Outpost) -> dict[str, Hub]:
    """The portal's Hubs for FLAVOR_FILE, each granted ``outpost``, which becomes the file's
    Kubernetes Outpost: the file's resources are KubeSpawner traits (extra_resource_limits)."""
    outpost.spawner_class = "kubespawner.KubeSpawner"
    outpost.save(update_fields=["spawner_class"])
    return {name: HubFactory(name=name, outposts=[outpost]) for name in HUB_NAMES}


def client_of(hub: Hub) -> APIClient:
    """An API client that authenticates as ``hub``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=basic_auth(hub.name))
    return client


def import_flavors(tmp_path: Path, text: str, *extra: str, outpost: str = "local") -> str:
    """Run ``manage.py import_flavors`` on ``text`` as a file; its output."""
    path = tmp_path / "flavors.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("import_flavors", "--outpost", outpost, str(path), *extra, stdout=out)
    return out.getvalue()


def outpost_rows(outpost: Outpost) -> dict:
    """Everything an import or apply_config writes for ``outpost``: its flavors, Hub
    policies and user rules, with the rows' ids."""
    return {
        "flavors": sorted(
            Flavor.objects.filter(outpost=outpost).values_list(
                "pk",
                "name",
                "display_name",
                "description",
                "weight",
                "max",
                "max_per_user",
                "runtime",
                "resources",
            )
        ),
        "policies": sorted(
            HubPolicy.objects.filter(outpost=outpost).values_list(
                "pk", "hub__name", "flavor__name", "allowed", "cap", "overrides"
            )
        ),
        "rules": [
            (
                rule.pk,
                rule.position,
                rule.name,
                rule.attributes,
                rule.negate,
                rule.weight,
                rule.forbidden,
                sorted(hub.name for hub in rule.hubs.all()),
                sorted(flavor.name for flavor in rule.flavors.all()),
                rule.overrides,
            )
            for rule in UserRule.objects.filter(outpost=outpost)
        ],
    }
