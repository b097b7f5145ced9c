"""The Hub's most frequent requests answered without Django's request handling.

A Hub polls each of its servers every 30 s, lists them all now and then, reads its flavors
for every spawn form and starts servers in bursts when a course begins, so these requests
are most of the portal's traffic. The physical cost of a poll is one authenticated read of
one row; through Django's handler and DRF a poll cost about 6 ms of CPU, a listed server
about 40 µs, a flavor answer 8-11 ms and a start about 28 ms. Here a poll costs under 1 ms
(bench/README.md has the rest).

Only the common case is answered here, with HTTP Basic credentials: ``GET
services/<name>/<start_id>`` (a poll), ``GET services/`` (the list), ``GET flavors/``,
``POST userflavors`` and ``POST services/`` (a start) with a JSON body the view's
serializers accept, when the query finds the active Hub, its grant of the Outpost and, for a
poll, the server. Everything else goes on to the Django API handler, which answers it exactly
as before: a token (its use is recorded there), no or wrong credentials, an Outpost or server
not found, a body the view would refuse, a database error. So the rules of who may read and
start what keep their one home (``selectors``, ``services``, the authentication class, the
views, flavors/selectors.py): this path reads with the same querysets, compiled once per
database, resolves flavors with the same functions and starts with the same service.

The answers are Django's: the request is a real ``ASGIRequest`` and passes the Hub API's own
middleware (request id, host check, security headers), and the bodies have the serializers'
shapes. tests/outposts/test_api_direct.py and test_api_direct_start.py compare both paths'
answers byte for byte.

- ``base``: what every direct answer shares: the caller and its grant, running the
  database work in a thread, the answer's JSON, the ASGI messages;
- ``reads``: the poll, the list, flavors and userflavors;
- ``start``: a start;
- ``app``: the ASGI app routing to them (portal/asgi.py serves it).
"""

from outposts.api.direct.app import direct_api

__all__ = ["direct_api"]
