"""The ASGI apps the real-server tests run: one lifespan handshake, each its own response."""

from __future__ import annotations

import textwrap

LIFESPAN = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
"""


def asgi_app(respond: str, prelude: str = "") -> str:
    """The source of a module whose ``app`` completes the lifespan handshake and answers each
    request with ``respond`` (statements, in ``app``'s scope), after ``prelude``."""
    return textwrap.dedent(prelude) + LIFESPAN + textwrap.indent(textwrap.dedent(respond), "    ")
