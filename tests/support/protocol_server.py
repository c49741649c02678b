"""An ASGI app served by a given uvicorn protocol class on a loopback port, inside the test's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


@asynccontextmanager
async def serving(protocol: type[HttpToolsProtocol], app: Any) -> AsyncIterator[tuple[int, ServerState]]:
    """(port, server state) while it serves; the state's ``tasks`` are the requests' app tasks."""
    loop = asyncio.get_running_loop()
    config = Config(app=app, http=protocol, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    server = await loop.create_server(
        lambda: protocol(config=config, server_state=state, app_state={}, _loop=loop), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1], state
    finally:
        server.close()
        await server.wait_closed()
