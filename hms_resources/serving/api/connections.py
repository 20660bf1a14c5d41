"""Connections under a read deadline. uvicorn closes an idle keep-alive connection, but waits forever
for a request that stops mid-headers, or for one that never starts: a few hundred such sockets
would be held open by anyone, without a key. `HeaderDeadline` closes a connection whose request
headers are not complete within `header_timeout` seconds of its first byte (or of the connection);
the body's deadline is the app's (`middleware.BodyDeadline`), as only the app knows when it waits
for the body. Waiting costs no thread either way: a stalled socket is a timer on the event loop."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol (its default) with a deadline on each request's headers."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_clock()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_clock()

    def on_headers_complete(self) -> None:
        self._stop_header_clock()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _start_header_clock(self) -> None:
        """Started once per request: headers that trickle in byte by byte do not move the deadline."""
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def header_deadline(seconds: float) -> type[HeaderDeadline]:
    """The protocol class to give uvicorn (`http=`) for a deadline of `seconds`."""
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": seconds})
