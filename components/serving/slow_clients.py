"""Slow clients: a connection that opens and then sends its request too slowly (or never finishes its
headers: "slowloris") is closed after serve.request_timeout_s, instead of holding a socket forever.

uvicorn closes idle keep-alive connections, but not one that has sent part of a request. This is its
h11 protocol with a deadline: armed when the connection opens and after each response, disarmed once
a request's headers are complete. The body then has the same time between chunks (request_bodies
answers 408 past it). A stalled connection costs the event loop nothing meanwhile: other requests are
served as usual.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol closing connections whose request headers are not in within timeout_s."""

    class RequestDeadlineProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            self._deadline: asyncio.TimerHandle | None = None
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._waiting_after = self.cycle  # headers are complete once a new cycle starts
            self._deadline = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is self._waiting_after and not self.transport.is_closing():
                self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._waiting_after:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return RequestDeadlineProtocol
