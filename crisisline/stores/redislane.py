"""One lean connection to Redis carrying many requests (crisisline/stores/autopipe.py says
why): requests written back to back, each reply (parsed by hiredis, as redis-py does) given
to the request it answers, through redis-py's own response callbacks and error classes.

A *lane* keeps its connection: it opens it when a request comes (behind Sentinel, asking the
sentinels for the primary each time), and when it is lost (Redis restarted, a failover, no
reply for ``socket_timeout``) sends what was not answered again on a new one after a short
back-off, as many times as the client's retries allow, then fails it with ConnectionError.
A reply LOADING (a restarted Redis) or READONLY (a demoted primary) counts as a lost
connection. A *serial* lane has one request out at a time: a blocking read (XREAD BLOCK).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

import hiredis
from redis._parsers.base import BaseParser
from redis._parsers.helpers import get_response_callbacks
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.client import EMPTY_RESPONSE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ReadOnlyError, RedisError

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)
BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.5)  # before the nth new connection (as the pool's)
# Replies in RESP2 through the callbacks that give redis-py's usual (RESP2-shaped) results.
CALLBACKS = {k.upper(): v for k, v in get_response_callbacks(2, True).items()}


def word(arg: Any) -> str:
    if isinstance(arg, bytes):
        return arg.decode("latin-1").upper()
    return str(arg).upper()


def split(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """'SCRIPT LOAD', x -> 'SCRIPT', 'LOAD', x (as redis-py's pack_command)."""
    first = args[0]
    if isinstance(first, str) and " " in first:
        return (*first.split(), *args[1:])
    if isinstance(first, bytes) and b" " in first:
        return (*first.split(), *args[1:])
    return args


def pack(client: Redis, args: tuple[Any, ...]) -> bytes:
    """The command in RESP. hiredis encodes str, bytes, int and float as redis-py's encoder
    does (UTF-8; a float by its repr); anything else goes through that encoder, which
    refuses what Redis can't take (None, bool) with redis-py's own DataError."""
    args = split(args)
    try:
        return hiredis.pack_command(args)
    except TypeError:
        encode = client.get_encoder().encode
        return hiredis.pack_command(tuple(encode(a) for a in args))


class Request:
    __slots__ = ("args", "future", "grace", "options", "packed", "sends")

    def __init__(self, args: tuple[Any, ...], options: dict[str, Any],
                 future: asyncio.Future, packed: bytes, grace: float = 0.0) -> None:
        self.args, self.options, self.future = args, options, future
        self.sends = 0
        self.packed = packed
        self.grace = grace  # how long Redis may rightly take (a blocking read's BLOCK)


class Link(asyncio.Protocol):
    """One connection: requests written back to back, replies matched to them in order."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.reader = hiredis.Reader(replyError=BaseParser.parse_error,
                                     protocolError=InvalidResponse)
        self.waiting: collections.deque[Request | asyncio.Future] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.progress = 0.0  # when a reply last came, or the first request of a lull went
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self.progress = asyncio.get_running_loop().time()
        while not self.closed:
            try:
                reply = self.reader.gets()
            except InvalidResponse as exc:  # the stream is broken: nothing after is trusted
                self.abort(exc)
                return
            if reply is False:
                return
            request = self.waiting.popleft()
            if isinstance(request, asyncio.Future):  # (the connection's own AUTH/SELECT)
                if not request.done():
                    request.set_result(reply)
                continue
            self.lane.answer(self, request, reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.lane.lost(self, exc)

    def send(self, requests: list[Request]) -> None:
        if not self.waiting:
            self.progress = asyncio.get_running_loop().time()
        self.waiting.extend(requests)
        for request in requests:
            request.sends += 1
        assert self.transport is not None
        self.transport.write(b"".join(r.packed for r in requests))

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the connection: no reply after this one is read (connection_lost follows,
        and with it the retries of what was not answered)."""
        if not self.closed and self.transport is not None:
            log.debug("Redis connection dropped: %s", exc)
            self.closed = True
            self.transport.abort()


class Lane:
    """A connection of ``client``'s and the requests it carries (``serial``: one at a time)."""

    def __init__(self, client: Redis, retries: int, timeout: float, serial: bool = False) -> None:
        self.client = client
        self.retries = retries
        self.timeout = timeout
        self.serial = serial
        self.pending: list[Request] = []
        self.link: Link | None = None
        self._scheduled = False
        self._connecting: asyncio.Task | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing = False
        self.writes = 0  # (for tests and benchmarks)
        self.requests = 0

    @property
    def idle(self) -> bool:
        return not self.pending and (self.link is None or not self.link.waiting)

    def ask(self, args: tuple[Any, ...], options: dict[str, Any], grace: float = 0.0
            ) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append(Request(args, options, fut, pack(self.client, args), grace))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)
        return fut

    def flush(self) -> None:
        self._scheduled = False
        link = self.link
        if link is None or link.closed:
            self._connect_soon()
            return
        if self.serial:
            if link.waiting:
                return  # the next goes when this one is answered
            while self.pending and self.pending[0].future.done():
                self.pending.pop(0)
            requests = self.pending[:1]
            del self.pending[:1]
        else:
            requests = [r for r in self.pending if not r.future.done()]
            self.pending = []
        if requests:
            self.writes += 1
            self.requests += len(requests)
            link.send(requests)
            self._watch()

    def _connect_soon(self, delay: float = 0.0) -> None:
        if self._connecting is None and not self._closing:
            self._connecting = asyncio.ensure_future(self._connect(delay))

    async def _connect(self, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            failures = 0
            while self.pending and not self._closing and (
                    self.link is None or self.link.closed):
                try:
                    self.link = await self._open()
                except (TimeoutError, OSError, RedisError) as exc:
                    self._give_up_some(exc)
                    failures += 1
                    if self.pending:
                        await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
        finally:
            self._connecting = None
        if self.pending and self.link is not None and not self.link.closed:
            self.flush()

    async def _open(self) -> Link:
        pool = self.client.connection_pool
        kw = pool.connection_kwargs
        loop = asyncio.get_running_loop()
        connect_timeout = kw.get("socket_connect_timeout") or self.timeout
        if isinstance(pool, SentinelConnectionPool):
            host, port = await pool.get_master_address()
            opening = loop.create_connection(lambda: Link(self), host, port)
        elif kw.get("path"):
            opening = loop.create_unix_connection(lambda: Link(self), kw["path"])
        else:
            opening = loop.create_connection(lambda: Link(self), kw.get("host", "localhost"),
                                             int(kw.get("port", 6379)))
        _, link = await asyncio.wait_for(opening, connect_timeout)
        hello: list[tuple[Any, ...]] = []
        if kw.get("password"):
            hello.append(("AUTH", kw["username"], kw["password"]) if kw.get("username")
                         else ("AUTH", kw["password"]))
        if kw.get("db"):
            hello.append(("SELECT", kw["db"]))
        if kw.get("client_name"):
            hello.append(("CLIENT", "SETNAME", kw["client_name"]))
        if hello:
            futures = [loop.create_future() for _ in hello]
            link.waiting.extend(futures)
            assert link.transport is not None
            link.transport.write(b"".join(pack(self.client, h) for h in hello))
            try:
                replies = await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
            except BaseException:
                link.abort()
                raise
            for reply in replies:
                if isinstance(reply, Exception):
                    link.abort()
                    raise reply
        return link

    def _give_up_some(self, exc: BaseException) -> None:
        """A connection could not be made: every waiting request used a send."""
        for request in self.pending:
            request.sends += 1
        self.pending = self._to_send_again(self.pending, f"Redis unavailable: "
                                                         f"{exc or type(exc).__name__}")

    def _to_send_again(self, requests: list[Request], why: str) -> list[Request]:
        """Of ``requests``, those still owed a reply with sends left; the ones out of sends
        (or every one, the lane closing) fail with ConnectionError: never left waiting."""
        kept = []
        for request in requests:
            if request.future.done():
                continue
            if request.sends > self.retries or self._closing:
                request.future.set_exception(RedisConnectionError(why))
            else:
                kept.append(request)
        return kept

    # ---- answers ---------------------------------------------------------------------------
    def answer(self, link: Link, request: Request, reply: Any) -> None:
        if self.serial and self.pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        fut = request.future
        if isinstance(reply, RedisError):
            if isinstance(reply, (RedisConnectionError, ReadOnlyError)):
                # LOADING (a restarted Redis), READONLY (a demoted primary): this connection
                # is no use; this request goes again on the next, with the ones after it.
                link.waiting.appendleft(request)
                link.abort(reply)
                return
            if fut.done():
                return
            if EMPTY_RESPONSE in request.options:
                fut.set_result(request.options[EMPTY_RESPONSE])
            else:
                fut.set_exception(reply)
            return
        if fut.done():
            return
        name = word(request.args[0])
        callback = CALLBACKS.get(name)
        if callback is None:
            fut.set_result(reply)
            return
        options = {k: v for k, v in request.options.items()
                   if k not in ("keys", EMPTY_RESPONSE)}
        try:
            fut.set_result(callback(reply, **options))
        except Exception as exc:
            fut.set_exception(exc)

    def lost(self, link: Link, exc: Exception | None) -> None:
        """The connection went: what it had not answered goes again on a new one."""
        if self.link is link:
            self.link = None
        unanswered = [r for r in link.waiting if isinstance(r, Request)]
        link.waiting.clear()
        again = self._to_send_again(unanswered, f"Redis connection lost: "
                                                f"{exc or 'closed by the server'}")
        if again or self.pending:
            self.pending = again + self.pending
            sends = max((r.sends for r in again), default=1)
            self._connect_soon(BACKOFF_S[min(sends, len(BACKOFF_S)) - 1])

    def _allowed(self, link: Link) -> float:
        head = link.waiting[0] if link.waiting else None
        return self.timeout + (head.grace if isinstance(head, Request) else 0.0)

    def _watch(self) -> None:
        if self._watchdog is None and self.link is not None:
            self._watchdog = asyncio.get_running_loop().call_later(
                self._allowed(self.link), self._stalled)

    def _stalled(self) -> None:
        """No reply for ``socket_timeout`` while some were owed: the connection is dead."""
        self._watchdog = None
        link = self.link
        if link is None or not link.waiting:
            return
        if asyncio.get_running_loop().time() - link.progress >= self._allowed(link):
            link.abort(TimeoutError("no reply from Redis"))
        else:
            self._watch()

    def close(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        owed = list(self.pending)
        if self.link is not None:
            owed += [r for r in self.link.waiting if isinstance(r, Request)]
            self.link.waiting.clear()
            if self.link.transport is not None:
                self.link.closed = True
                self.link.transport.close()
        self.pending = self._to_send_again(owed, "the Redis client closed")  # (fails them all)
