"""The control link between the front and a worker: JSON lines, in both directions.

A message with "op" is a request when it carries an "id" (the sender wants an answer) and a
notice when it does not; a message with "re" answers the request with that id. Each side
numbers its own requests, so ids never collide, and answers may come in any order. Requests
are handled in tasks of their own, so a handler that waits (the front asking every worker for
its figures while answering one of them) never stops the link from reading.

When the link ends (EOF, a malformed line, an error), every request still waiting fails with
ConnectionError and ``closed`` is set; the owner decides what that means (a worker ends its
session, the front forgets what the worker held).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import cast

__all__ = ["CtlLink", "LINE_LIMIT"]

log = logging.getLogger("farcudad.ctl")

LINE_LIMIT = 4 << 20  # a status line with many counters stays far below this

Handler = Callable[[dict], "dict | None | Awaitable[dict | None]"]


class CtlLink:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handler: Handler, name: str = "ctl") -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.name = name
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def over(cls, sock, handler: Handler, name: str = "ctl") -> CtlLink:
        """A link on a connected AF_UNIX stream socket (the link owns it from now on)."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer, handler, name)

    def send(self, msg: dict) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    def notify(self, op: str, **fields) -> None:
        self.send(dict(fields, op=op))

    async def request(self, op: str, timeout: float | None = None, **fields) -> dict:
        if self.closed.done():
            raise ConnectionError(f"{self.name}: the control link is closed")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            self.send(dict(fields, op=op, id=rid))
            answer = await asyncio.wait_for(fut, timeout)
            answer.pop("re", None)
            return answer
        finally:
            self._waiting.pop(rid, None)

    async def run(self) -> None:
        """Read until the link ends."""
        try:
            while True:
                line = await self.reader.readline()
                if not line.endswith(b"\n"):
                    break
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    log.warning("%s: malformed control line: %s", self.name, exc)
                    break
                if "re" in msg:
                    fut = self._waiting.get(msg["re"])
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                    continue
                t = asyncio.ensure_future(self._handle(msg))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
        except (OSError, ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass
        finally:
            self.close()

    async def _handle(self, msg: dict) -> None:
        try:
            answer = self.handler(msg)
            if asyncio.iscoroutine(answer) or isinstance(answer, asyncio.Future):
                answer = await answer
        except Exception:
            log.exception("%s: handling %s", self.name, msg.get("op"))
            answer = {"error": "internal error"}
        if "id" in msg:
            self.send(dict(cast("dict | None", answer) or {}, re=msg["id"]))

    def close(self) -> None:
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.name}: the control link ended"))
        self._waiting.clear()
        if not self.writer.is_closing():
            self.writer.close()
        if not self.closed.done():
            self.closed.set_result(None)
