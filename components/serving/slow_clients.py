"""Slow clients: a connection that opens and then sends its request too slowly (or never finishes its
headers: "slowloris") is closed after serve.request_timeout_s, instead of holding a socket forever.

uvicorn closes idle keep-alive connections, but not one that has sent part of a request. This is its
httptools protocol (its C parser costs the event loop less than h11) with a deadline: armed when the
connection opens and after each response, disarmed once a request's headers are complete. The body then
has the same time between chunks (request_bodies answers 408 past it). A stalled connection costs the
event loop nothing meanwhile: other requests are served as usual.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol closing connections whose request headers are not in within timeout_s."""

    class RequestDeadlineProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            self._deadline: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._waiting_after = self.cycle  # a request's headers are complete once it has a new cycle
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._waiting_after and not self.transport.is_closing():
                self.transport.close()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Not while a pipelined request (headers already in) is being answered: its answer re-arms.
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the next request on this connection gets the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return RequestDeadlineProtocol
