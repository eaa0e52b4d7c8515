"""The one line an ASGI application adds so that what it tracked is delivered when uvicorn stops.

uvicorn (also as gunicorn's ``uvicorn.workers.UvicornWorker``) handles SIGTERM with a graceful
shutdown, then restores SIGTERM's default action and raises it again: the process dies of it
without running ``atexit``, so the library's exit delivery never runs. What uvicorn does run is
the ASGI *lifespan* shutdown, after the last request has finished. Wrap the application::

    from django.core.asgi import get_asgi_application

    from eventtracking.asgi import deliver_on_shutdown

    application = deliver_on_shutdown(get_asgi_application())

On ``lifespan.shutdown`` every background sender of the process (the owners of
:mod:`eventtracking.background`) delivers what it accepted, within one ``exit_timeout``, and only
then is the shutdown reported complete. An application that speaks the lifespan protocol itself
(Starlette, FastAPI...) gets every message as before; the delivery runs after its own shutdown.
One that does not (Django's ``ASGIHandler`` refuses the lifespan scope) gets the protocol spoken
for it. Other scopes (http, websocket) go to the application untouched. Keep uvicorn's
``--lifespan`` at ``auto`` or ``on`` (with ``off`` nothing calls the shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, MutableMapping

from eventtracking import background

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def deliver_on_shutdown(app: ASGIApp) -> ASGIApp:
    """``app``, with the library's delivery run at the ASGI lifespan shutdown (module doc)."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
        else:
            await _lifespan(app, scope, receive, send)

    return application


async def _deliver() -> None:
    # close_all blocks for up to exit_timeout: not on the event loop's thread.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: background.close_all(reason="ASGI shutdown"))


async def _lifespan(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    received: list[Message] = []
    sent: list[str] = []

    async def receive_through() -> Message:
        message = await receive()
        received.append(message)
        return message

    async def send_through(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await _deliver()
        sent.append(message["type"])
        await send(message)

    try:
        await app(scope, receive_through, send_through)
    except Exception:
        if sent:  # it speaks lifespan and failed: the server reports that
            raise
        log.debug("the ASGI application refuses the lifespan scope: eventtracking speaks it", exc_info=True)
    if sent:
        return
    pending = list(received)  # what the application read before it gave up on the scope
    while True:
        message = pending.pop(0) if pending else await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _deliver()
            await send({"type": "lifespan.shutdown.complete"})
            return
