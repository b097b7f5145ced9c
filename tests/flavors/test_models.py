"""A flavor's own rules, as an admin meets them in the admin and apply_config."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from flavors.models import Flavor, runtime_as_wire
from tests.factories import FlavorFactory


@pytest.mark.parametrize(
    ("runtime", "wire"),
    [
        (None, None),
        (timedelta(hours=2), {"hours": 2}),
        (timedelta(minutes=90), {"hours": 1, "minutes": 30}),
        (timedelta(days=1, seconds=5), {"days": 1, "seconds": 5}),
        (timedelta(seconds=59), {"seconds": 59}),
    ],
)
def test_a_runtime_goes_on_the_wire_in_its_largest_units(runtime, wire):
    assert runtime_as_wire(runtime) == wire


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"resources": ["mem_limit"]},
            {"resources": ["Must be a JSON object of trait names to values."]},
        ),
        ({"runtime": timedelta(0)}, {"runtime": ["Must be positive, or empty for no limit."]}),
        (
            {"runtime": timedelta(seconds=-1)},
            {"runtime": ["Must be positive, or empty for no limit."]},
        ),
    ],
)
def test_an_admin_is_told_what_is_wrong_with_a_flavor(fields, errors):
    flavor = FlavorFactory.build(outpost=FlavorFactory().outpost, **fields)
    with pytest.raises(ValidationError) as invalid:
        flavor.full_clean()
    assert invalid.value.message_dict == errors


@pytest.mark.django_db
@pytest.mark.parametrize("runtime", [None, timedelta(seconds=1)])
def test_no_runtime_or_a_positive_one_is_fine(runtime):
    flavor = FlavorFactory.build(outpost=FlavorFactory().outpost, runtime=runtime)
    flavor.full_clean()


def test_a_flavor_shows_its_display_name_and_name():
    assert str(Flavor(name="small", display_name="1 CPU")) == "1 CPU (small)"
