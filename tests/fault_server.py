"""A tiny asyncio HTTP/1.1 server on loopback whose routes misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def respond(
    body: bytes, status: str = "200 OK", content_type: str = "text/plain; version=0.0.4"
) -> Handler:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await writer.drain()

    return handler


def hang() -> Handler:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    return handler


def drip(body: bytes, every: float = 0.2) -> Handler:
    """Sends the body one byte at a time: defeats per-read timeouts, not a deadline."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for i in range(len(body)):
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)

    return handler


def close_early() -> Handler:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return handler


def endless_chunks() -> Handler:
    """A chunked body without end and without Content-Length."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()

    return handler


@asynccontextmanager
async def serve(
    handler: Handler,
    seen_headers: list[dict[str, str]] | None = None,
    accepted: list[int] | None = None,
) -> AsyncIterator[str]:
    """Serve ``handler`` on a free loopback port; yields the base URL.

    ``seen_headers`` collects each request's headers, ``accepted`` one entry per connection.
    """

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if accepted is not None:
            accepted.append(1)
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                if seen_headers is not None:
                    lines = request.decode("latin-1").split("\r\n")[1:]
                    seen_headers.append(
                        {
                            k.strip().lower(): v.strip()
                            for k, _, v in (ln.partition(":") for ln in lines if ln)
                        }
                    )
                await handler(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            return  # the server is closing; swallowing keeps asyncio from logging it
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            if "on_connect" in repr(task.get_coro()):
                task.cancel()
