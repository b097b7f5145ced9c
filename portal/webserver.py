"""The HTTP protocol uvicorn serves the portal with (``--http portal.webserver:HttpProtocol``,
with ``--loop uvloop``).

uvicorn's httptools protocol (a C parser: a poll costs about a tenth less CPU than with h11,
bench/README.md) with TCP_NODELAY set on each connection. uvicorn with ``--workers`` binds
its listening socket itself, with no protocol number, and asyncio only disables Nagle's
algorithm on sockets it knows to be TCP; so an answer written in two parts (headers, then
body) waited for the client's delayed ACK, a flat ~40-60 ms per request on a keep-alive
connection (bench/README.md, "Where the time goes").
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
