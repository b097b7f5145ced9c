"""portal/compiled.py: a query compiled once gives what the ORM gives for it, row for row, on
PostgreSQL and on SQLite (make test runs this file on both)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.db.transaction import TransactionManagementError

from outposts.models import Outpost, Server
from outposts.selectors import outpost_for_update, server_for_update, server_twin
from portal import compiled as compiled_module
from portal.compiled import compiled
from tests.factories import (
    FlavorFactory,
    HubFactory,
    OutpostFactory,
    OutpostSSHFactory,
    ServerFactory,
)
from tunnels.models import OutpostSSH
from tunnels.selectors import outpost_ssh

pytestmark = pytest.mark.django_db

OUTPOST_ID = -(2**62) + 9


@pytest.fixture(autouse=True)
def compiled_afresh(monkeypatch):
    monkeypatch.setattr(compiled_module, "_compiled", {})


def outposts_by_id():
    return Outpost.objects.filter(pk=OUTPOST_ID)


def concrete_values(instance):
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields}


def test_model_rows_are_the_instances_the_orm_loads():
    # given an Outpost with dates, booleans, durations, UUIDs and JSON
    outpost = OutpostFactory(slug="local", state="draining", max_servers_per_user=3)
    # when the compiled query loads it
    [loaded] = compiled(outposts_by_id).instances({OUTPOST_ID: outpost.pk})
    # then every field is what the ORM reads, and the instance is a saved row
    assert concrete_values(loaded) == concrete_values(Outpost.objects.get(pk=outpost.pk))
    assert loaded._state.adding is False and loaded._state.db == "default"


def test_a_query_of_some_fields_loads_them_and_defers_the_rest_as_the_orm_does():
    def slugs_only():
        return Outpost.objects.only("slug", "state").filter(pk=OUTPOST_ID)

    outpost = OutpostFactory(slug="local", state="draining")
    [loaded] = compiled(slugs_only).instances({OUTPOST_ID: outpost.pk})
    expected = Outpost.objects.only("slug", "state").get(pk=outpost.pk)
    assert loaded.get_deferred_fields() == expected.get_deferred_fields() != set()
    assert (loaded.pk, loaded.slug, loaded.state) == (outpost.pk, "local", "draining")


def outposts_in_state(state):
    return Outpost.objects.filter(pk=OUTPOST_ID, state=state)


def test_a_query_is_compiled_once_per_shape():
    assert compiled(outposts_by_id) is compiled(outposts_by_id)
    draining = compiled(outposts_in_state, state="draining")
    assert draining is compiled(outposts_in_state, state="draining")
    assert draining is not compiled(outposts_in_state, state="closed")


def annotated_outposts():
    return Outpost.objects.filter(pk=OUTPOST_ID).annotate(hubs_granted=Count("hubs"))


@pytest.mark.parametrize("values_or_annotated", ["values", "annotated"])
def test_instances_need_a_query_of_model_rows(values_or_annotated):
    def slugs():
        return Outpost.objects.filter(pk=OUTPOST_ID).values_list("slug")

    build = slugs if values_or_annotated == "values" else annotated_outposts
    with pytest.raises(AssertionError, match=r"^instances\(\) needs a query of model rows$"):
        compiled(build).instances({OUTPOST_ID: 1})


@pytest.mark.parametrize("with_flavor", [True, False])
def test_select_related_rows_are_loaded_with_the_instance(with_flavor, django_assert_num_queries):
    # given a server with its Outpost, Hub and (or no) flavor
    outpost = OutpostFactory(slug="local", state="draining")
    flavor = FlavorFactory(outpost=outpost, name="small") if with_flavor else None
    server = ServerFactory(outpost=outpost, hub=HubFactory(outposts=[outpost]), flavor=flavor)
    expected = Server.objects.select_related("outpost", "flavor", "hub").get(pk=server.pk)
    # when the compiled lock loads it, in one query
    with transaction.atomic(), django_assert_num_queries(1):
        loaded = server_for_update(server_id=server.pk)
        # then it and each related row are what the ORM loads, read without another query
        assert concrete_values(loaded) == concrete_values(expected)
        assert concrete_values(loaded.outpost) == concrete_values(expected.outpost)
        assert outpost_ssh(outpost=loaded.outpost) is None  # an Outpost without SSH settings
        assert concrete_values(loaded.hub) == concrete_values(expected.hub)
        if with_flavor:
            assert concrete_values(loaded.flavor) == concrete_values(expected.flavor)
        else:
            assert loaded.flavor is None
    assert loaded.outpost._state.adding is False and loaded.outpost._state.db == "default"


def test_a_locked_server_comes_with_its_outposts_ssh_settings(django_assert_num_queries):
    server = ServerFactory()
    ssh = OutpostSSHFactory(outpost=server.outpost)
    with transaction.atomic(), django_assert_num_queries(1):
        loaded = outpost_ssh(outpost=server_for_update(server_id=server.pk).outpost)
    # (without their key, which only the tunnel agent reads)
    assert loaded.get_deferred_fields() == {"key"}
    assert concrete_values(loaded) == concrete_values(OutpostSSH.objects.get(pk=ssh.pk))


def test_a_locked_server_that_is_gone_is_none():
    server = ServerFactory()
    Server.objects.filter(pk=server.pk).delete()
    with transaction.atomic():
        assert server_for_update(server_id=server.pk) is None


@pytest.mark.django_db(transaction=True)  # else the test itself runs in a transaction
def test_a_compiled_lock_outside_a_transaction_is_refused_as_the_orm_refuses_it():
    if not connection.features.has_select_for_update:
        pytest.skip("SQLite locks the whole database: the ORM has no row lock to refuse")
    outpost = OutpostFactory(slug="local")
    with transaction.atomic():
        outpost_for_update(outpost=outpost)  # compiled in a transaction
    with pytest.raises(TransactionManagementError, match="^select_for_update cannot be used"):
        outpost_for_update(outpost=outpost)


def test_a_locked_outpost_that_is_gone_is_not_found():
    outpost = OutpostFactory(slug="local")
    Outpost.objects.filter(pk=outpost.pk).delete()
    with transaction.atomic(), pytest.raises(Outpost.DoesNotExist):
        outpost_for_update(outpost=outpost)


def test_a_twin_is_the_visible_server_of_the_same_hub_outpost_and_names():
    outpost = OutpostFactory(slug="local")
    other_outpost = OutpostFactory(slug="other")
    hub, other_hub = HubFactory(outposts=[outpost]), HubFactory(outposts=[outpost])
    removed = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    Server.objects.filter(pk=removed.pk).update(removed_at=removed.created_at)
    twin = ServerFactory(hub=hub, outpost=outpost, name="lab", start_id="s1")
    for kwargs in (
        {"hub": other_hub, "outpost": outpost, "name": "lab", "start_id": "s1"},
        {"hub": hub, "outpost": other_outpost, "name": "lab", "start_id": "s1"},
        {"hub": hub, "outpost": outpost, "name": "other", "start_id": "s1"},
        {"hub": hub, "outpost": outpost, "name": "lab", "start_id": "s2"},
    ):
        assert server_twin(**kwargs) is None, kwargs
    found = server_twin(hub=hub, outpost=outpost, name="lab", start_id="s1")
    assert found == twin
    assert concrete_values(found) == concrete_values(Server.objects.get(pk=twin.pk))
