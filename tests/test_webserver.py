"""portal/webserver.py: every connection uvicorn accepts has Nagle's algorithm off, also on a
listening socket bound the way ``uvicorn --workers`` binds it (no protocol number, so asyncio
leaves Nagle on). Real uvicorn parts on a real loopback socket; nothing is timed."""

from __future__ import annotations

import asyncio
import socket

from uvicorn.config import Config
from uvicorn.server import ServerState

from portal.webserver import HttpProtocol


async def app(scope, receive, send):  # never called: no request is sent
    raise AssertionError("no request expected")


def accepted_socket_nodelay() -> int:
    """TCP_NODELAY of the server side of one connection to an HttpProtocol server."""
    config = Config(app, host="127.0.0.1", port=0, http=HttpProtocol, lifespan="off")
    config.load()
    listener = config.bind_socket()  # as uvicorn's supervisor binds it for --workers

    async def serve() -> int:
        state = ServerState()
        accepted: list[HttpProtocol] = []

        def protocol() -> HttpProtocol:
            accepted.append(HttpProtocol(config=config, server_state=state, app_state={}))
            return accepted[-1]

        server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        try:
            for _ in range(200):  # until the server side has taken the connection
                if accepted and accepted[0].transport is not None:
                    break
                await asyncio.sleep(0.05)
            sock = accepted[0].transport.get_extra_info("socket")
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            writer.close()
            for connection in accepted:
                connection.transport.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(serve())


def test_connections_of_a_workers_style_socket_have_nagle_off():
    assert accepted_socket_nodelay() != 0
