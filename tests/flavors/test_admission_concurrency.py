"""Concurrent starts can never overbook a flavor (architecture.md §Flavors, step 2)."""

import threading

import pytest
from django.db import connection, connections

from outposts.errors import StartRefused
from outposts.models import Server
from outposts.services import StartRequest, server_start
from tests.factories import FlavorFactory

STARTS = 100
MAX = 20
# PostgreSQL here allows 100 connections, shared with other test runs: at most this many
# threads hold one at once. They still race: each admission is a transaction competing for
# the same rows, so without the lock in server_start they would overbook.
CONNECTIONS = 30


@pytest.mark.django_db(transaction=True)
def test_100_simultaneous_starts_admit_exactly_max(hub, outpost):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks and real concurrent connections")
    # given a flavor with room for 20 servers
    FlavorFactory(outpost=outpost, name="small", max=MAX)
    gate = threading.Barrier(STARTS)
    slots = threading.BoundedSemaphore(CONNECTIONS)
    admitted: list[int] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def start(n: int) -> None:
        request = StartRequest(
            name=f"s{n}",
            start_id=str(n),
            env={"JUPYTERHUB_USER_ID": str(n), "JUPYTERHUB_USER": f"user{n}"},
            flavor="small",
        )
        gate.wait()  # all 100 threads set off together
        with slots:
            try:
                server, _ = server_start(hub=hub, outpost=outpost, request=request)
                admitted.append(server.pk)
            except StartRefused as refusal:
                refused.append(refusal.message)
            except BaseException as error:  # reported below, so a crash cannot pass as a refusal
                errors.append(error)
            finally:
                connections.close_all()

    # when 100 different users start a server at the same moment, each on its own connection
    threads = [threading.Thread(target=start, args=(n,)) for n in range(STARTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # then exactly 20 are admitted and 80 refused with the contract's message
    assert errors == []
    assert (len(admitted), len(refused)) == (MAX, STARTS - MAX)
    assert all(message.endswith(f"Maximum ({MAX}) already reached.") for message in refused)
    # and the database holds exactly 20 active servers of the flavor
    assert Server.objects.active().filter(flavor__name="small").count() == MAX
    assert Server.objects.count() == MAX
