"""Factories for every model, in one place."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from flavors.models import Flavor, HubPolicy, UserRule
from flavors.resolution import EffectiveFlavor
from outposts.models import Hub, Outpost, Server, SpawnEvent
from projects.models import Allocation, Grant, Member, Project
from tunnels.models import OutpostSSH, Tunnel

HUB_SECRET = "a-hub-secret-for-tests"
USER_PASSWORD = "a-password-for-tests"


class OutpostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Outpost
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"outpost{n}")
    name = factory.LazyAttribute(lambda o: f"Outpost {o.slug}")
    spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
    spawner_config = factory.LazyFunction(dict)


class HubFactory(factory.django.DjangoModelFactory):
    """A Hub whose secret is HUB_SECRET unless `secret=` says otherwise."""

    class Meta:
        model = Hub
        django_get_or_create = ("name",)
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"hub{n}")
    # Test Hubs (real or stand-in) listen on loopback.
    callback_url_prefixes = factory.LazyFunction(lambda: ["http://127.0.0.1:"])

    @factory.post_generation
    def secret(self, create, extracted, **kwargs):
        self.set_secret(extracted or HUB_SECRET)
        if create:
            self.save(update_fields=["secret_digest"])

    @factory.post_generation
    def outposts(self, create, extracted, **kwargs):
        if create and extracted:
            self.outposts.set(extracted)


class FlavorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Flavor

    outpost = factory.SubFactory(OutpostFactory)
    name = factory.Sequence(lambda n: f"flavor{n}")
    display_name = factory.LazyAttribute(lambda f: f"Flavor {f.name}")
    description = "A flavor for tests"
    weight = 0
    runtime = timedelta(hours=2)
    resources = factory.LazyFunction(dict)


class HubPolicyFactory(factory.django.DjangoModelFactory):
    """A Hub's policy on a flavor, on that flavor's Outpost."""

    class Meta:
        model = HubPolicy

    flavor = factory.SubFactory(FlavorFactory)
    outpost = factory.SelfAttribute("flavor.outpost")
    hub = factory.SubFactory(HubFactory)
    allowed = True
    cap = None
    overrides = factory.LazyFunction(dict)


class UserRuleFactory(factory.django.DjangoModelFactory):
    """A user rule; ``hubs=[...]`` and ``flavors=[...]`` set its Hubs and flavors."""

    class Meta:
        model = UserRule
        skip_postgeneration_save = True

    outpost = factory.SubFactory(OutpostFactory)
    name = factory.Sequence(lambda n: f"rule{n}")
    position = factory.Sequence(lambda n: n)
    attributes = factory.LazyFunction(dict)
    overrides = factory.LazyFunction(dict)

    @factory.post_generation
    def hubs(self, create, extracted, **kwargs):
        if create and extracted:
            self.hubs.set(extracted)

    @factory.post_generation
    def flavors(self, create, extracted, **kwargs):
        if create and extracted:
            self.flavors.set(extracted)


# Statuses a start has reached the spawner in, and those in which the server was ready.
_STARTED = {Server.Status.PENDING, Server.Status.RUNNING, Server.Status.STOPPING}
_READY = {Server.Status.RUNNING, Server.Status.STOPPING, Server.Status.UNKNOWN}


def _frozen_settings(server) -> dict:
    if server.flavor is None:
        return {}
    return EffectiveFlavor.of(server.flavor).frozen_settings()


class ServerFactory(factory.django.DjangoModelFactory):
    """A server as admission and the lifecycle leave it: its Hub was granted its Outpost, it
    has a flavor of that Outpost with the flavor's settings frozen on it (``flavor=None`` for
    an Outpost without flavors), and the times its status implies (a running one is ready)."""

    class Meta:
        model = Server
        skip_postgeneration_save = True

    outpost = factory.SubFactory(OutpostFactory)
    hub = factory.SubFactory(HubFactory)
    flavor = factory.SubFactory(
        "tests.factories.FlavorFactory", outpost=factory.SelfAttribute("..outpost")
    )
    flavor_settings = factory.LazyAttribute(_frozen_settings)
    name = factory.Sequence(lambda n: f"server{n}")
    start_id = factory.Sequence(lambda n: f"start{n}")
    user_id = factory.Sequence(lambda n: str(n + 1))
    user_name = factory.Sequence(lambda n: f"user{n}")
    status = Server.Status.RUNNING
    address = "127.0.0.1:8888"
    env = factory.LazyFunction(dict)
    started_at = factory.LazyAttribute(lambda s: timezone.now() if s.status in _STARTED else None)
    ready_at = factory.LazyAttribute(lambda s: timezone.now() if s.status in _READY else None)

    @factory.post_generation
    def grant_outpost(self, create, extracted, **kwargs):
        # A Hub only ever has servers on the Outposts it was granted.
        if create:
            self.hub.outposts.add(self.outpost)


class SpawnEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SpawnEvent

    server = factory.SubFactory(ServerFactory)
    progress = 50
    message = "Working"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"admin{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        # Saved explicitly: a session made with force_login is tied to the password hash.
        self.set_password(extracted or USER_PASSWORD)
        if create:
            self.save(update_fields=["password"])


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    outpost = factory.SubFactory(OutpostFactory)
    name = factory.Sequence(lambda n: f"project{n}")


class MemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Member

    project = factory.SubFactory(ProjectFactory)
    hub = factory.SubFactory(HubFactory)
    user_name = factory.Sequence(lambda n: f"user{n}")


class AllocationFactory(factory.django.DjangoModelFactory):
    """An allocation of a flavor of the project's Outpost."""

    class Meta:
        model = Allocation

    project = factory.SubFactory(ProjectFactory)
    flavor = factory.SubFactory(FlavorFactory, outpost=factory.SelfAttribute("..project.outpost"))
    max_servers = 5


class GrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Grant

    member = factory.SubFactory(MemberFactory)
    project = factory.SelfAttribute("member.project")
    flavor = factory.SubFactory(FlavorFactory)


class OutpostSSHFactory(factory.django.DjangoModelFactory):
    """SSH settings of an Outpost reached through the tunnel agent ``agent``."""

    class Meta:
        model = OutpostSSH

    outpost = factory.SubFactory(OutpostFactory)
    reach = OutpostSSH.Reach.AGENT
    jump_host = "jump.example.org"
    jump_port = 22
    user = "tunnel"
    key_path = "/etc/outpost/tunnel_key"
    agent = "default"


class TunnelFactory(factory.django.DjangoModelFactory):
    """A tunnel of a running server on an Outpost with SSH settings."""

    class Meta:
        model = Tunnel

    server = factory.SubFactory(ServerFactory)
    outpost = factory.SelfAttribute("server.outpost")
    agent = "default"
    remote_host = "node1"
    remote_port = 8888
    bind_host = "127.0.0.1"
    bind_port = factory.Sequence(lambda n: 30000 + n)
