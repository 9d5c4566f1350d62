"""The small etcd interface topology/ needs, and its implementation on the ``aetcd`` client.

Everything else in topology/ talks to :class:`Etcd` only: key-value get/put/delete, one
transaction form (compare, then puts and deletes), leases, watches that report compaction, and
compaction itself (for tests and operators). Errors come out as :class:`EtcdUnavailable` (etcd
cannot be reached or did not answer in time: the outcome of a write is then unknown) or
:class:`WatchCompacted`; nothing of aetcd or gRPC leaks.

:class:`AetcdClient` uses aetcd's ``Client`` for unary calls, rotating to the next endpoint
when one is unreachable, and drives watches on the raw gRPC ``Watch`` stream of aetcd's
generated stubs: one stream per watch, so that a broken or compacted watch fails alone and is
simply started again by its owner, and progress (revision) responses are visible. Every unary
call carries a gRPC deadline (``timeout``); a watch must be confirmed within it, and a watch
that has been silent for ``watch_idle`` seconds is probed with a progress request that must be
answered within it too, so a dead stream (a half-open connection after an etcd restart, a
paused etcd) ends the watch with :class:`EtcdUnavailable` instead of blocking its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .config import Endpoint


class EtcdError(Exception):
    """Base class of the errors of :class:`Etcd`."""


class EtcdUnavailable(EtcdError):
    """etcd could not be reached or did not answer in time."""


class LeaseNotFound(EtcdError):
    """A put named a lease that has expired or was revoked."""


class WatchCompacted(EtcdError):
    """The watch's start revision was compacted away: re-read, then watch again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue  # for a delete: the key, empty value, mod_revision = revision of the delete


@dataclass(frozen=True)
class WatchBatch:
    """One watch response: its events, and the store revision it reflects.

    The first batch of every watch has ``created`` set and no events: the watch is in place.
    Its revision is the store's current one, which events still to come may precede (when the
    watch started in the past). A later batch without events is a progress notification: every
    event up to its revision has been delivered.
    """

    revision: int
    events: tuple[WatchEvent, ...] = ()
    created: bool = False


@dataclass(frozen=True)
class Compare:
    """A transaction condition: ``target(key) op value``.

    ``target``: ``mod`` (mod_revision), ``create`` (create_revision; 0 means absent),
    ``version`` or ``value``.
    """

    key: bytes
    target: Literal["mod", "create", "version", "value"]
    op: Literal["==", "!=", "<", ">"]
    value: int | bytes

    @classmethod
    def absent(cls, key: bytes) -> Compare:
        return cls(key, "create", "==", 0)

    @classmethod
    def mod_revision(cls, key: bytes, revision: int) -> Compare:
        return cls(key, "mod", "==", revision)

    @classmethod
    def created_at(cls, key: bytes, revision: int) -> Compare:
        return cls(key, "create", "==", revision)


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: bytes


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[Any] = field(default_factory=list)


class Etcd(Protocol):
    """What topology/ needs from etcd."""

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        """The key (or None) and the store revision of the read."""

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """All keys under ``prefix`` in key order, and the store revision of the read."""

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Writes the key (attached to ``lease`` unless 0); the new revision."""

    async def delete(self, key: bytes) -> int:
        """Deletes the key; the revision afterwards."""

    async def txn(self, compares: Sequence[Compare], success: Sequence[Put | Delete],
                  failure: Sequence[Put | Delete] = ()) -> TxnResult:
        """If all compares hold, applies ``success``, else ``failure``."""

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, granted TTL in seconds)."""

    async def keepalive(self, lease: int) -> int:
        """Renews the lease; its remaining TTL, 0 if it no longer exists."""

    async def revoke(self, lease: int) -> None:
        """Ends the lease now, deleting its keys."""

    def watch(self, key: bytes, *, prefix: bool = False,
              start_revision: int = 0) -> AsyncIterator[WatchBatch]:
        """Batches of changes from ``start_revision`` (0: from now). Raises
        :class:`WatchCompacted` or :class:`EtcdUnavailable`; never ends by itself."""

    async def compact(self, revision: int) -> None:
        """Drops the history before ``revision``."""

    async def close(self) -> None:
        """Releases connections; the client is unusable afterwards."""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    out = bytearray(prefix)
    for i in reversed(range(len(out))):
        if out[i] < 0xFF:
            out[i] += 1
            return bytes(out[: i + 1])
    return b"\0"


# ------------------------------------------------------------------------------------------
# aetcd implementation


def _kv(raw: Any) -> KeyValue:
    return KeyValue(bytes(raw.key), bytes(raw.value), int(raw.create_revision),
                    int(raw.mod_revision), int(raw.version), int(raw.lease))


class AetcdClient:
    """:class:`Etcd` over ``aetcd.Client``; ``endpoints`` are tried in turn when one is down."""

    def __init__(self, endpoints: Sequence[Endpoint], *, timeout: float = 2.0,
                 watch_idle: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoints")
        self._endpoints = list(endpoints)
        #: deadline of every unary call (gRPC ``timeout=``) and of every watch confirmation
        self._timeout = timeout
        #: a watch silent this long is probed (progress request) to prove it is alive
        self._watch_idle = watch_idle
        self._clients: dict[int, Any] = {}
        self._current = 0
        self._closed = False

    def _client(self, index: int) -> Any:
        import aetcd

        client = self._clients.get(index)
        if client is None:
            endpoint = self._endpoints[index]
            # gRPC keepalive pings notice a peer that vanished without closing the connection;
            # etcd refuses pings more often than every 5 s.
            options = {"grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 5_000}
            client = aetcd.Client(endpoint.host, endpoint.port, timeout=self._timeout,
                                  options=options)
            self._clients[index] = client
        return client

    async def _call(self, op: Any) -> Any:
        """Runs ``op(client)``, moving to the next endpoint while one is unreachable."""
        import aetcd

        if self._closed:
            raise EtcdUnavailable("etcd client is closed")
        last: Exception | None = None
        for attempt in range(len(self._endpoints)):
            index = (self._current + attempt) % len(self._endpoints)
            client = self._client(index)
            try:
                result = await op(client)
            except aetcd.ConnectionFailedError as exc:
                last = exc
                continue
            except aetcd.ConnectionTimeoutError as exc:
                raise EtcdUnavailable(f"etcd at {self._endpoints[index]} did not answer within "
                                      f"{self._timeout:g} s") from exc
            except aetcd.ClientError as exc:
                if "requested lease not found" in str(exc):
                    raise LeaseNotFound(str(exc)) from exc
                raise EtcdError(str(exc)) from exc
            except Exception as exc:
                raise EtcdUnavailable(f"etcd request failed: {exc!r}") from exc
            self._current = index
            return result
        raise EtcdUnavailable(f"no etcd endpoint reachable ({', '.join(map(str, self._endpoints))}"
                              f"): {last}") from last

    async def get(self, key: bytes) -> tuple[KeyValue | None, int]:
        async def op(client: Any) -> Any:
            await client.connect()
            from aetcd import rpc

            response = await client.kvstub.Range(rpc.RangeRequest(key=key),
                                                 timeout=self._timeout, metadata=client.metadata)
            kv = _kv(response.kvs[0]) if response.kvs else None
            return kv, int(response.header.revision)
        return await self._call(_wrapped(op))  # type: ignore[no-any-return]

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        async def op(client: Any) -> Any:
            await client.connect()
            from aetcd import rpc

            response = await client.kvstub.Range(
                rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix)),
                timeout=self._timeout, metadata=client.metadata)
            return [_kv(kv) for kv in response.kvs], int(response.header.revision)
        return await self._call(_wrapped(op))  # type: ignore[no-any-return]

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        async def op(client: Any) -> int:
            result = await client.put(key, value, lease=lease or None)
            return int(result.header.revision)
        return await self._call(op)  # type: ignore[no-any-return]

    async def delete(self, key: bytes) -> int:
        result = await self.txn([], [Delete(key)])
        return result.revision

    async def txn(self, compares: Sequence[Compare], success: Sequence[Put | Delete],
                  failure: Sequence[Put | Delete] = ()) -> TxnResult:
        async def op(client: Any) -> TxnResult:
            await client.connect()
            from aetcd import rpc

            request = rpc.TxnRequest(compare=[_compare(c) for c in compares],
                                     success=[_request_op(o) for o in success],
                                     failure=[_request_op(o) for o in failure])
            response = await client.kvstub.Txn(request, timeout=self._timeout,
                                               metadata=client.metadata)
            return TxnResult(bool(response.succeeded), int(response.header.revision),
                             list(response.responses))
        return await self._call(_wrapped(op))  # type: ignore[no-any-return]

    async def grant(self, ttl: int) -> tuple[int, int]:
        async def op(client: Any) -> tuple[int, int]:
            lease = await client.lease(ttl)
            return int(lease.id), int(lease.ttl)
        return await self._call(op)  # type: ignore[no-any-return]

    async def keepalive(self, lease: int) -> int:
        async def op(client: Any) -> int:
            reply = await client.refresh_lease(lease)
            return int(reply.TTL) if reply is not None else 0
        return await self._call(op)  # type: ignore[no-any-return]

    async def revoke(self, lease: int) -> None:
        async def op(client: Any) -> None:
            await client.revoke_lease(lease)
        try:
            await self._call(op)
        except EtcdError as exc:
            if "requested lease not found" not in str(exc):
                raise

    async def compact(self, revision: int) -> None:
        async def op(client: Any) -> None:
            await client.compact(revision, physical=True)
        await self._call(op)

    async def watch(self, key: bytes, *, prefix: bool = False,
                    start_revision: int = 0) -> AsyncIterator[WatchBatch]:
        """See :meth:`Etcd.watch`. The stream is never trusted to stay alive by itself: etcd
        must confirm the watch within the client timeout, and whenever the stream has been
        silent for ``watch_idle`` seconds a progress request is sent that etcd must answer
        within the timeout too; otherwise :class:`EtcdUnavailable` (a dead connection, e.g.
        half-open after an etcd restart or a paused etcd, would otherwise never end the
        watch)."""
        from aetcd import rpc

        if self._closed:
            raise EtcdUnavailable("etcd client is closed")
        client = self._client(self._current)
        await self._call_connect(client)
        create = rpc.WatchCreateRequest(key=key, start_revision=start_revision,
                                        progress_notify=True)
        if prefix:
            create.range_end = prefix_end(key)
        probes: asyncio.Queue[None] = asyncio.Queue()

        async def requests() -> AsyncIterator[Any]:
            yield rpc.WatchRequest(create_request=create)
            while True:
                await probes.get()
                yield rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())

        call = rpc.WatchStub(client.channel).Watch(requests(), metadata=client.metadata)
        responses = call.__aiter__()
        pending: asyncio.Future[Any] | None = None
        created = False
        try:
            while True:
                pending = asyncio.ensure_future(responses.__anext__())
                # Waiting with asyncio.wait leaves the read running (cancelling a read would
                # cancel the whole gRPC call), so a quiet stream can be probed and kept.
                if created:
                    await asyncio.wait({pending}, timeout=self._watch_idle)
                    if not pending.done():
                        probes.put_nowait(None)
                await asyncio.wait({pending}, timeout=self._timeout)
                if not pending.done():
                    what = "confirm the watch" if not created else "answer a progress request"
                    raise EtcdUnavailable(f"etcd did not {what} within {self._timeout:g} s")
                try:
                    response = pending.result()
                except StopAsyncIteration:
                    raise EtcdUnavailable("etcd closed the watch stream") from None
                finally:
                    pending = None
                if response.compact_revision:
                    raise WatchCompacted(int(response.compact_revision))
                if response.canceled:
                    raise EtcdError(f"watch canceled by etcd: {response.cancel_reason}")
                if response.created:
                    created = True
                    yield WatchBatch(int(response.header.revision), (), created=True)
                    continue
                if response.watch_id == -1:
                    # The answer to a progress request: the stream is alive. Its revision is
                    # not used (etcd < 3.5.8 may send it before a lagging watch caught up).
                    continue
                events = tuple(
                    WatchEvent("delete" if event.type == rpc.Event.DELETE else "put",
                               _kv(event.kv)) for event in response.events)
                yield WatchBatch(int(response.header.revision), events)
        except rpc.AioRpcError as exc:
            self._current = (self._current + 1) % len(self._endpoints)
            raise EtcdUnavailable(f"watch failed: {exc.code().name}: {exc.details()}") from exc
        except EtcdUnavailable:
            self._current = (self._current + 1) % len(self._endpoints)
            raise
        except EtcdError:
            raise
        except Exception as exc:
            raise EtcdUnavailable(f"watch failed: {exc!r}") from exc
        finally:
            call.cancel()
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(Exception):
                    # bounded: the call is cancelled, so the read ends at once
                    await asyncio.wait({pending}, timeout=self._timeout)

    async def _call_connect(self, client: Any) -> None:
        try:
            await client.connect()
        except Exception as exc:
            raise EtcdUnavailable(f"cannot connect to etcd: {exc!r}") from exc

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            # bounded: closing must not wait on a call stuck on a dead connection
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout):
                    await client.close()


def _wrapped(op: Any) -> Any:
    """Maps raw gRPC errors of direct stub calls to aetcd's exceptions, as its methods do."""
    async def run(client: Any) -> Any:
        from aetcd import exceptions, rpc

        try:
            return await op(client)
        except rpc.AioRpcError as exc:
            exceptions._handle_exception(exc)
    return run


def _compare(c: Compare) -> Any:
    from aetcd import rpc

    ops = {"==": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL, "<": rpc.Compare.LESS,
           ">": rpc.Compare.GREATER}
    message = rpc.Compare(key=c.key, result=ops[c.op])
    if c.target == "mod":
        message.target, message.mod_revision = rpc.Compare.MOD, int(c.value)
    elif c.target == "create":
        message.target, message.create_revision = rpc.Compare.CREATE, int(c.value)
    elif c.target == "version":
        message.target, message.version = rpc.Compare.VERSION, int(c.value)
    else:
        assert isinstance(c.value, bytes)
        message.target, message.value = rpc.Compare.VALUE, c.value
    return message


def _request_op(op: Put | Delete) -> Any:
    from aetcd import rpc

    if isinstance(op, Put):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key, value=op.value,
                                                        lease=op.lease))
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=op.key))


def connect(endpoints: Sequence[Endpoint], *, timeout: float = 2.0) -> Etcd:
    """The default :class:`Etcd` implementation."""
    return AetcdClient(endpoints, timeout=timeout)
