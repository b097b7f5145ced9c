"""Through a real HTTP server: test clients can hide URL normalisation, a real one cannot."""

import pytest
import requests

from outposts.models import Server
from tests.factories import ServerFactory
from tests.support.api import basic_auth

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("base", ["/outposts/local/", "/"])
def test_the_empty_server_name_survives_a_real_http_server(live_server, hub, outpost, base):
    # given the user's default (unnamed) server, and one named like its start_id
    outpost.is_default = True
    outpost.save()
    ServerFactory(hub=hub, outpost=outpost, name="", start_id="3f2a", status="stopped", exit_code=7)
    ServerFactory(hub=hub, outpost=outpost, name="3f2a", start_id="0")
    auth = {"Authorization": basic_auth(hub.name)}
    url = f"{live_server.url}{base}services//3f2a"
    # when the Hub polls and deletes it by the double-slash path, over real HTTP
    poll = requests.get(url, headers=auth, timeout=10)
    stop = requests.delete(url, headers={**auth, "execution-type": "async"}, timeout=10)
    # then both reach the unnamed server (a collapsed "//" would reach the other one)
    assert poll.status_code == 200 and poll.json() == {"status": 7, "logs": []}
    assert stop.status_code == 202
    assert Server.objects.get(name="").removed_at is not None
    assert Server.objects.get(name="3f2a").removed_at is None
