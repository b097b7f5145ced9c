"""The admin's users for walking its permission ladder: two Outposts, a site admin holding the
object permission on the first only, and a superuser, each logged in to the test client."""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm

from tests.factories import OutpostFactory, UserFactory

# Fixtures, registered by tests/outposts/conftest.py.


@pytest.fixture
def two_outposts():
    return OutpostFactory(slug="mine", name="My cluster"), OutpostFactory(
        slug="theirs", name="Their cluster"
    )


@pytest.fixture
def site_admin(client, two_outposts):
    """A staff user holding the object permission on the first Outpost only, logged in."""
    mine, _ = two_outposts
    user = UserFactory(username="siteadmin", is_staff=True)
    assign_perm("outposts.change_outpost", user, mine)
    client.force_login(user)
    return user


@pytest.fixture
def superuser(client):
    user = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user
