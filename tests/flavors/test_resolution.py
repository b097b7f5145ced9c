"""flavors/resolution.py decides flavor access; the flavor list, userflavors and admission
all ask it, so they must give the same answer."""

from datetime import timedelta

import pytest

from flavors.models import Flavor
from flavors.resolution import EffectiveFlavor, flavors_resolve
from outposts.errors import StartRefused
from outposts.models import Hub, Outpost
from outposts.services import StartRequest, server_start
from tests.factories import FlavorFactory
from tests.support.api import send

HUB = Hub(name="hub1")


def flavor(name: str, weight: int = 0, **fields) -> Flavor:
    """A flavor row as the database would give it (resolution reads no database)."""
    return Flavor(
        pk=abs(hash(name)) % 10_000, name=name, display_name=name, weight=weight, **fields
    )


def resolve(state: str = Outpost.State.ACTIVE, flavors=()):
    return flavors_resolve(outpost=Outpost(slug="hpc", state=state), flavors=flavors, hub=HUB)


def test_flavors_come_highest_weight_first_then_by_name():
    resolution = resolve(flavors=[flavor("b", 1), flavor("c", 5), flavor("a", 1)])
    assert [f.name for f in resolution.flavors] == ["c", "a", "b"]
    assert resolution.default.name == "c"
    assert resolution.names == ["a", "b", "c"]
    assert resolution.refusal is None


def test_a_flavor_is_found_by_name_only():
    resolution = resolve(flavors=[flavor("small"), flavor("large")])
    assert resolution.named("large").name == "large"
    assert resolution.named("medium") is None


def test_the_effective_flavor_carries_the_flavors_settings():
    row = flavor("gpu", 3, description="One GPU", max=4, max_per_user=1, runtime=timedelta(hours=1))
    row.resources = {"extra_resource_limits": {"nvidia.com/gpu": 1}}
    (effective,) = resolve(flavors=[row]).flavors
    assert effective == EffectiveFlavor(
        flavor_id=row.pk,
        name="gpu",
        display_name="gpu",
        description="One GPU",
        weight=3,
        max=4,
        max_per_user=1,
        runtime=timedelta(hours=1),
        resources={"extra_resource_limits": {"nvidia.com/gpu": 1}},
    )
    assert effective.frozen_settings()["runtime_seconds"] == 3600


def test_without_flavors_there_is_no_default():
    resolution = resolve(flavors=[])
    assert (resolution.flavors, resolution.default, resolution.names) == ((), None, [])


@pytest.mark.parametrize(
    ("state", "listed", "refusal"),
    [
        (Outpost.State.ACTIVE, ["small"], None),
        (Outpost.State.DRAINING, ["small"], "Outpost hpc is draining and accepts no starts."),
        (Outpost.State.DISABLED, [], "Outpost hpc is disabled and accepts no starts."),
    ],
)
def test_the_outposts_state_decides_what_is_listed_and_whether_starts_are_admitted(
    state, listed, refusal
):
    resolution = resolve(state, flavors=[flavor("small")])
    assert [f.name for f in resolution.flavors] == listed
    assert resolution.refusal == refusal


# --- One answer for listing, userflavors and admission --------------------------------------


def admitted(hub, outpost, name: str | None) -> bool:
    request = StartRequest(
        name=f"try-{name}",
        env={"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "1"},
        flavor=name,
        authentication={"name": "ada"},
    )
    try:
        server, _ = server_start(hub=hub, outpost=outpost, request=request)
    except StartRefused:
        return False
    return server.flavor.name if server.flavor else True


@pytest.mark.django_db
@pytest.mark.parametrize("state", list(Outpost.State))
def test_listing_userflavors_and_admission_agree_for_the_same_hub(hub_client, hub, outpost, state):
    # given an Outpost with three flavors, in one of its states
    for name, weight in (("small", 1), ("large", 5), ("gpu", 3)):
        FlavorFactory(outpost=outpost, name=name, weight=weight)
    outpost.state = state
    outpost.save()
    # when the Hub lists its flavors, asks for one user's, and starts each flavor
    listed = list(hub_client.get("/outposts/local/flavors").json())
    for_user = list(send(hub_client, "POST", "/outposts/local/userflavors", {"name": "ada"}).json())
    starts = {name: admitted(hub, outpost, name) for name in ("small", "large", "gpu", "tiny")}
    default = admitted(hub, outpost, None)
    # then all three give one answer: what is listed (highest weight first) can be started
    # wherever starts are admitted at all, and nothing else can
    assert listed == for_user
    if state == Outpost.State.ACTIVE:
        assert listed == ["large", "gpu", "small"]
        assert starts == {"small": "small", "large": "large", "gpu": "gpu", "tiny": False}
        assert default == "large"
    else:
        assert listed == ([] if state == Outpost.State.DISABLED else ["large", "gpu", "small"])
        assert not any(starts.values()) and not default


def test_a_flavor_without_runtime_freezes_none():
    (effective,) = resolve(flavors=[flavor("open", runtime=None)]).flavors
    assert effective.frozen_settings() == {
        "display_name": "open",
        "description": "",
        "runtime_seconds": None,
        "resources": {},
    }
