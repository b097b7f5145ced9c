"""Helpers and fixtures shared by the tests: plain modules that tests import, and whose
fixtures the conftest files register (conftest files hold nothing else).

- ``api``: the portal's API as a Hub uses it through Django's test client (``basic_auth``,
  ``send``, ``send_exchange``, ``start_body``, ``ASYNC``) and the Hub fixtures;
- ``contract``: the shared examples of tests/contract/ and the shape check;
- ``admin``: the admin's users for its permission ladder;
- ``processes``: processes, ports and waiting on a deadline (``wait_until``);
- ``hub``: ``FakeHub``, a stand-in for a JupyterHub's API over real HTTP;
- ``spawners``: the stand-in single-user server, spawner traits, and spawner classes that
  Outposts name by dotted path (``tests.support.spawners.SlowSpawner``);
- ``portal``: the real portal's processes (web, worker, beat) for end-to-end tests, started
  and stopped in one place for the function-scoped fixtures and the module-scoped portal;
- ``jupyterhub``: a real JupyterHub with configurable-http-proxy;
- ``redis_server``: a private redis-server a fault test stops and starts (``private_redis``);
- ``fake_portal`` and ``hubclient``: the hubclient's unit-test stand-ins.

The modules the hubclient's unit tests import (contract, fake_portal, hubclient, processes,
jupyterhub, spawners, hub) never import Django, as the hubclient does not.
"""
