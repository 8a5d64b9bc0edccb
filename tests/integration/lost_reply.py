"""A proxy between a store and PostgreSQL that loses one reply: a commit in doubt, for real.

Once armed, the proxy watches what clients send. After it has seen `after` (bytes of a parameter or
a statement), the first message carrying `cut` (b"COMMIT", or the same bytes for a statement that
commits by itself) is forwarded to the server; the proxy then reads the server's answer up to its
ReadyForQuery, so the commit has taken effect, drops it, and closes that client's connection. The
client sees what a network failure at that instant shows it: the connection closed before the answer
came, a write it cannot tell from one that never happened. Every other byte passes through.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from types import TracebackType

from sqlalchemy.engine import make_url

_READY_FOR_QUERY = b"Z\x00\x00\x00\x05"  # 'Z', length 5, then one status byte


class LostReply:
    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        host = url.query.get("host") or url.host or "localhost"
        assert isinstance(host, str)
        self._target_host = host
        self._target_port = url.port or 5432
        self._directory = Path(tempfile.mkdtemp(prefix="se-lost-reply-"))
        # The URL a store uses to go through the proxy: the same database, libpq's socket directory.
        self.url = url.set(host=None, port=self._target_port, query={"host": str(self._directory)}).render_as_string(
            hide_password=False
        )
        self._server: asyncio.AbstractServer | None = None
        self._after: bytes | None = None
        self._cut: bytes | None = None
        self._seen = False
        self.cuts = 0  # replies lost so far

    def arm(self, *, after: bytes, cut: bytes) -> None:
        """Lose the reply to the first message carrying `cut` sent once `after` has gone by."""
        self._after, self._cut, self._seen = after, cut, False

    async def __aenter__(self) -> LostReply:
        path = self._directory / f".s.PGSQL.{self._target_port}"
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._target_host.startswith("/"):
            return await asyncio.open_unix_connection(f"{self._target_host}/.s.PGSQL.{self._target_port}")
        return await asyncio.open_connection(self._target_host, self._target_port)

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            await self._relay(client_in, client_out)
        except asyncio.CancelledError:
            # The test's loop is closing with this connection still open. Ended quietly: Python 3.11's
            # stream server logs the traceback of a handler that ends cancelled (it asks the task for
            # its exception), a harmless teardown made to look like a failure.
            client_out.close()

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await self._open()
        lose = asyncio.Event()  # set when the next answer must be dropped and the client cut off

        async def upstream() -> None:
            while chunk := await client_in.read(65536):
                if self._cut is not None and not lose.is_set():
                    assert self._after is not None
                    self._seen = self._seen or self._after in chunk
                    if self._seen and self._cut in chunk:
                        self._after = self._cut = None
                        lose.set()
                server_out.write(chunk)
                await server_out.drain()

        async def downstream() -> None:
            held = b""
            while chunk := await server_in.read(65536):
                if not lose.is_set():
                    client_out.write(chunk)
                    await client_out.drain()
                    continue
                held += chunk
                if _READY_FOR_QUERY in held:
                    # The server has answered (committed): the client never hears it.
                    self.cuts += 1
                    return

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_out, server_out):
                writer.close()
