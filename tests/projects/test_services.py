"""Projects' writes as any caller gets them (the admin page, apply_config, a shell): the model
rules refuse what the page's forms would not even offer, naming the field and the reason."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from projects.models import Grant
from projects.services import grant_flavor, member_add
from tests.factories import (
    AllocationFactory,
    FlavorFactory,
    HubFactory,
    MemberFactory,
    OutpostFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def climate():
    hpc = OutpostFactory(slug="hpc")
    project = ProjectFactory(outpost=hpc, name="climate")
    large = FlavorFactory(outpost=hpc, name="large")
    AllocationFactory(project=project, flavor=large, max_servers=2)
    hub = HubFactory(name="hub1", outposts=[hpc])
    ann = MemberFactory(project=project, hub=hub, user_name="ann")
    return {"project": project, "large": large, "ann": ann, "hub": hub}


def grant(climate, **changes):
    arguments = {
        "project": climate["project"],
        "member": climate["ann"],
        "flavor": climate["large"],
        "expires_at": None,
        "granted_by": UserFactory(),
        **changes,
    }
    return grant_flavor(**arguments)


def test_a_flavor_outside_the_allocation_is_refused_naming_it(climate):
    gpu = FlavorFactory(outpost=climate["project"].outpost, name="gpu")
    with pytest.raises(ValidationError) as raised:
        grant(climate, flavor=gpu)
    assert raised.value.message_dict == {
        "flavor": [
            "Project climate has no allocation of gpu: only flavors of its allocation can be "
            "granted."
        ]
    }
    assert not Grant.objects.exists()


def test_a_member_of_another_project_is_refused(climate):
    other = ProjectFactory(outpost=climate["project"].outpost, name="ocean")
    stranger = MemberFactory(project=other, hub=climate["hub"], user_name="zed")
    with pytest.raises(ValidationError) as raised:
        grant(climate, member=stranger)
    assert raised.value.message_dict == {"member": ["Choose a member of project climate."]}
    assert not Grant.objects.exists()


def test_a_grant_is_made_once_and_renewed_with_a_new_expiry(climate):
    later = timezone.now() + timedelta(days=30)
    first, created = grant(climate)
    again, created_again = grant(climate, expires_at=later)
    assert (created, created_again) == (True, False)
    assert first.pk == again.pk
    assert Grant.objects.get().expires_at == later


def test_an_expiry_in_the_past_is_refused(climate):
    with pytest.raises(ValidationError) as raised:
        grant(climate, expires_at=timezone.now() - timedelta(seconds=1))
    assert raised.value.message_dict == {"expires_at": ["Choose an expiry in the future, or none."]}


def test_a_member_of_a_hub_that_may_not_use_the_outpost_is_refused(climate):
    elsewhere = HubFactory(name="other-hub")
    with pytest.raises(ValidationError) as raised:
        member_add(project=climate["project"], hub=elsewhere, user_name="zoe")
    assert raised.value.messages == ["Hub other-hub may not use Outpost hpc."]
    member = member_add(project=climate["project"], hub=climate["hub"], user_name="zoe")
    assert (member.project, member.user_name) == (climate["project"], "zoe")


def test_a_grant_without_its_project_is_refused_as_incomplete_not_with_a_crash(climate):
    incomplete = Grant(member=climate["ann"], flavor=climate["large"])
    with pytest.raises(ValidationError) as raised:
        incomplete.full_clean()
    assert list(raised.value.message_dict) == ["project"]
