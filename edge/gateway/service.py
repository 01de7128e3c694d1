"""The gateway service: the asyncio shell around :class:`edge.gateway.core.GatewayCore`.

One :class:`asyncio.TaskGroup` runs named tasks: ``mqtt`` (connect with capped backoff,
subscribe to the meters' ``state`` and ``ack`` topics, feed each message to the core),
``publisher`` (sends commands, QoS 1, never retained, in order), ``http`` (the homes' API,
edge.gateway.api), ``ticker`` (timer ticks: lock timeouts, interval ends, batch timing),
``outbox`` (uploads sealed batches to the coordinator) and ``stopper`` (SIGTERM/SIGINT: stop
accepting work, finish what is in hand, close the ledger). Range proofs run in a worker process
(edge.gateway.prover) so that the event loop never waits on them. Time comes from ``clock``
(ms since the epoch).

Effects are performed synchronously on the loop, in the order the core returned them, so an
order-log append is on disk before any later effect of the same event and before the API
answers.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import errno
import functools
import json
import logging
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.batch import GENESIS_HASH, batch_hash, encode_batch, seal_batch
from edge.errors import ConfigError, GatewayError
from edge.gateway.config import GatewayConfig
from edge.gateway.core import (
    Append,
    Deliver,
    Effect,
    GatewayCore,
    LogNotKept,
    MeterCodec,
    Note,
    Prove,
    Publish,
    SaveSnapshot,
    Seal,
    Settle,
    Snapshot,
)
from edge.gateway.ledger import Ledger
from edge.gateway.meterwire import WireCodec
from edge.gateway.orderlog import OrderLog
from edge.gateway.prover import ProofPool, make_proof

__all__ = [
    "LIBRARY_LOGGERS",
    "GatewayService",
    "JsonFormatter",
    "LockView",
    "load_signing_key",
    "make_proof",
    "run_gateway",
]
# make_proof is re-exported for callers that prove outside the service (tests, tools).

log = logging.getLogger("ngrid.gateway")

#: How often the highest accepted seq per meter is saved (and at shutdown): after a crash, a
#: replay of a message newer than the last save is refused only by the freshness window.
SAVE_SEQS_S = 5.0


class JsonFormatter(logging.Formatter):
    """Structured logs: one JSON object per line (``ts``, ``level``, ``event`` and fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        if not record.name.startswith("ngrid"):
            out["logger"] = record.name  # a library's record (LIBRARY_LOGGERS)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The gateway's Ed25519 key: PKCS#8 PEM (as ``ngrid provision gateway`` writes it)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}", key="gateway.signing_key") from err
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path} is not a PEM private key", key="gateway.signing_key") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key", key="gateway.signing_key")
    return key


def _snapshot(saved: tuple[int, bytes, dict[str, list[str]]] | None) -> Snapshot | None:
    if saved is None:
        return None
    log_seq, engine, home_orders = saved
    return Snapshot(
        log_seq=log_seq,
        engine=engine,
        home_orders={h: tuple(ids) for h, ids in home_orders.items()},
    )


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` if the current task is being cancelled.

    A retry loop calls it before each attempt, after each connect and in each ``except``: a
    library may turn a cancellation into its own error (aiomqtt raises ``MqttError`` when the
    DISCONNECT its ``__aexit__`` sends on cancellation times out or fails) or lose it (Python
    3.11's ``asyncio.wait_for`` returns the result when the awaited future completes in the
    same step as the cancel). A loop that carried on would keep the TaskGroup -- and the
    gateway -- from ever finishing.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _bind_error(host: str, port: int, err: OSError) -> GatewayError:
    """A one-line message for an API socket that cannot be bound, naming the key to change."""
    if err.errno == errno.EADDRINUSE:
        return GatewayError(f"api.port: port {port} on {host} is in use")
    if err.errno == errno.EACCES:
        return GatewayError(f"api.port: no permission to listen on port {port} on {host}")
    if err.errno == errno.EADDRNOTAVAIL:
        return GatewayError(f"api.host: {host} is not an address of this machine")
    return GatewayError(f"api.host/api.port: cannot listen on {host}:{port}: {err.strerror}")


class _Dispatch(asyncio.Queue):  # type: ignore[type-arg]
    """aiomqtt's ``queue_type`` hook as a dispatcher: each incoming message is handed to
    ``handle`` as the MQTT client's socket reader parses it, instead of being queued for
    ``client.messages``. That saves the task and ``asyncio.wait`` aiomqtt 2.5's message iterator
    makes per message: about a fifth of the gateway's Python time with 500 meters at 1 Hz (py-spy
    profile of bench/gateway.py). Order is the broker's, as before."""

    def __init__(self, handle: Callable[[aiomqtt.Message], None], maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._handle = handle

    def put_nowait(self, item: aiomqtt.Message) -> None:
        self._handle(item)


@dataclass(frozen=True, kw_only=True)
class LockView:
    """A settled trade's lock on its seller's meter, awaiting its delivery decision (Wh; price
    in ticks per kWh; ``interval`` the delivery interval's number)."""

    trade: str
    meter: str
    seller: str
    buyer: str
    wh: int
    price: int
    interval: int


@dataclass
class _Outgoing:
    topic: str
    payload: bytes
    started: float | None = None  # perf_counter when the order that caused a lock arrived


class GatewayService:
    """Wire the core to MQTT, HTTP, the order log, the ledger, the prover and the outbox."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        codec: MeterCodec | None = None,
        clock: Callable[[], int] = _wall_ms,
        tick_s: float = 0.1,
        handle_signals: bool = True,
        core_class: type[GatewayCore] = GatewayCore,
    ) -> None:
        self.config = config
        self.codec = codec or WireCodec()
        self.clock = clock
        self.tick_s = tick_s
        self.ticked_at: int | None = None  # the clock at the timer's last tick (ms)
        # meter -> [(seq, future)] of a host's wait_meter_seq, woken by _on_mqtt_message
        self._seq_waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self.handle_signals = handle_signals
        self.key = load_signing_key(config.signing_key)
        self.ledger = Ledger(config.ledger_path)
        last = self.ledger.last_batch()
        batched_log_seq = last.log_last if last else 0
        settled = self.ledger.settled_ids()
        unbatched, _ = self.ledger.unbatched()
        snapshot = _snapshot(self.ledger.load_snapshot())
        # Memory keeps the order log from the snapshot (the replay) or the last batch (the next
        # batch's slice), whichever is earlier; if the snapshot turns out unusable, all of it.
        keep_after = min(batched_log_seq, snapshot.log_seq) if snapshot else 0
        self.orderlog = OrderLog(config.orderlog_path, keep_after=keep_after)
        now = self.clock()

        def restore() -> tuple[GatewayCore, list[Effect]]:
            return core_class.restore(
                config=config,
                codec=self.codec,
                log=self.orderlog.records,
                log_base=self.orderlog.base,
                settled=settled,
                locks=self.ledger.active_locks(),
                batched_log_seq=batched_log_seq,
                unbatched=[t.id for t in unbatched],
                now=now,
                last_seq=self.ledger.meter_seqs(),
                snapshot=snapshot,
            )

        try:
            self.core, restart = restore()
        except LogNotKept:
            self.orderlog.close()
            self.orderlog = OrderLog(config.orderlog_path)
            self.core, restart = restore()
        self.orderlog.forget_through(min(batched_log_seq, self.orderlog.last_seq))
        self.outgoing: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._effect_queue: asyncio.Queue[tuple[list[Effect], asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self._busy = False
        self._seal_lock = asyncio.Lock()  # one seal at a time (see seal)
        self._background: set[asyncio.Task[Any]] = set()
        self.failure: BaseException | None = None
        # One thread appends to the order log, one runs the ledger's transactions and queries:
        # an order's fsync never waits behind an unrelated settlement's commit.
        self._log_io = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ngrid-orderlog"
        )
        self._io = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ngrid-ledger"
        )
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        self.outbox_wake = asyncio.Event()
        self.mqtt_connected = asyncio.Event()
        self.prover = ProofPool(config.locks.proof_workers)
        self.uploads = 0
        # In-process view of order -> lock command: API arrival to the publish call (ms).
        self.order_arrival: dict[str, float] = {}
        self.lock_latency: collections.deque[float] = collections.deque(maxlen=10_000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopper_task: asyncio.Task[None] | None = None
        self._restart_effects = restart
        self.api_port: int | None = None
        log.info(
            "restored",
            extra={
                "fields": {
                    "log_seq": self.core.log_seq,
                    "snapshot_at": self.core.replayed_from,
                    "settled": len(settled),
                    "active_locks": len(self.core.locks),
                    "voided_on_restart": self.core.voids.get("restart", 0),
                    "truncated_log_bytes": self.orderlog.truncated_bytes,
                }
            },
        )

    # ------------------------------------------------------------------ effects

    def perform(self, effects: Sequence[Effect]) -> asyncio.Future[None]:
        """Queue the core's effects; the returned future resolves once they are performed.

        Effects run in the order the core returned them, batch after batch, in the ``effects``
        task. Disk writes (order-log append + fsync, ledger transactions) run on one disk thread
        so the event loop is not blocked while the disk flushes; the order-log records of every
        batch queued meanwhile are appended with one fsync (group commit) before any of those
        batches' other effects, so nothing is published, settled or acknowledged before the log
        records that caused it are on disk.
        """
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        if effects:
            self._effect_queue.put_nowait((list(effects), future))
        else:
            future.set_result(None)
        return future

    async def disk(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a ledger call on the ledger thread (the only thread that touches the ledger
        while the service runs; calls run in submission order)."""
        assert self._loop is not None
        return await self._loop.run_in_executor(self._io, functools.partial(fn, *args, **kwargs))

    def _ledger_write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue a ledger transaction (in order, on the ledger thread) without waiting for it;
        a failure stops the service (a restart recovers: the trade is voided)."""
        assert self._loop is not None
        future = self._loop.run_in_executor(self._io, functools.partial(fn, *args, **kwargs))

        def done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.error("ledger_write_failed", extra={"fields": {"error": repr(f.exception())}})
                self.failure = f.exception()
                self.stop()

        future.add_done_callback(done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("seal_failed", extra={"fields": {"error": repr(task.exception())}})
            self.failure = task.exception()
            self.stop()

    async def _effects(self) -> None:
        while True:
            batch = [await self._effect_queue.get()]
            while not self._effect_queue.empty():
                batch.append(self._effect_queue.get_nowait())
            self._busy = True
            try:
                await self._execute([effects for effects, _ in batch])
            except BaseException as err:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(GatewayError(f"effects failed: {err!r}"))
                raise
            finally:
                self._busy = False
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _execute(self, batches: list[list[Effect]]) -> None:
        records = [
            r for effects in batches for e in effects if isinstance(e, Append) for r in e.records
        ]
        if records:
            assert self._loop is not None
            await self._loop.run_in_executor(self._log_io, self.orderlog.append, records)
        for effects in batches:
            for effect in effects:
                if isinstance(effect, Publish):
                    started = None
                    p = self.core.pending.get(effect.trade) if effect.kind == "lock" else None
                    if p is not None:
                        taker = p.trade.sell if p.trade.maker == "buy" else p.trade.buy
                        started = self.order_arrival.pop(taker, None)
                    self.outgoing.put_nowait(_Outgoing(effect.topic, effect.payload, started))
                elif isinstance(effect, Prove):
                    self._prove(effect)
                elif isinstance(effect, Settle):
                    self._ledger_write(
                        self.ledger.settle, effect.record, export_start_wh=effect.export_start_wh
                    )
                elif isinstance(effect, Deliver):
                    self._ledger_write(self.ledger.record_delivery, effect.record)
                elif isinstance(effect, SaveSnapshot):
                    snap = effect.snapshot
                    self._ledger_write(
                        self.ledger.save_snapshot,
                        snap.log_seq,
                        snap.engine,
                        {h: list(ids) for h, ids in snap.home_orders.items()},
                    )
                    # Forget the arrival times of orders the engine no longer keeps (pruned).
                    known = self.core.engine.order
                    self.order_arrival = {
                        o: t for o, t in self.order_arrival.items() if known(o) is not None
                    }
                elif isinstance(effect, Seal):
                    task = asyncio.create_task(self.seal(effect.reason))
                    self._background.add(task)
                    task.add_done_callback(self._background_done)
                elif isinstance(effect, Note):
                    log.info(effect.event, extra={"fields": dict(effect.fields)})

    def _prove(self, p: Prove) -> None:
        def done(result: tuple[bytes, bytes] | None, error: str | None) -> None:
            now = self.clock()
            if result is None:
                self.perform(self.core.proof_failed(trade=p.trade, error=str(error), now=now))
            else:
                commitment, proof = result
                self.perform(
                    self.core.proof_ready(
                        trade=p.trade, commitment=commitment, proof=proof, now=now
                    )
                )

        self.prover.submit(p.soc_bp, p.threshold_bp, p.reserved_bp, p.context, done)

    async def seal(self, reason: str = "manual") -> int | None:
        """Seal a batch of everything settled and logged since the last; return its seq, or
        None when there was nothing to seal.

        Single-flight: seals run one at a time (an :class:`asyncio.Lock`), and the core knows a
        seal is outstanding from :meth:`GatewayCore.begin_seal` until
        :meth:`GatewayCore.batch_sealed` / :meth:`GatewayCore.seal_skipped`, so its timer and
        settlements emit no second :class:`Seal` meanwhile. The batch's first log seq is taken
        and the seal recorded under the lock, so consecutive batches' log slices always join
        (``log_first`` = previous ``log_last`` + 1) however fast the clock runs. Call it
        directly for a seal on demand (it waits for a seal in progress, then seals what is
        left). Once it is sealed, the batch's log records leave memory (the file keeps them).
        """
        async with self._seal_lock:
            first = self.core.begin_seal()
            now = self.clock()
            try:
                sealed = await self.disk(self._seal_on_disk, first, now)
            except BaseException:
                self.core.seal_skipped(now=now)
                raise
            if sealed is None:
                self.core.seal_skipped(now=now)
                return None
            seq, last_seq, trade_ids = sealed
            n_trades = len(trade_ids)
            self.core.batch_sealed(log_last=last_seq, trades=trade_ids, now=now)
        self.outbox_wake.set()
        log.info(
            "batch_sealed",
            extra={
                "fields": {"seq": seq, "trades": n_trades, "log_last": last_seq, "reason": reason}
            },
        )
        return int(seq)

    def _seal_on_disk(self, first: int, now: int) -> tuple[int, int, list[str]] | None:
        trades, deliveries = self.ledger.unbatched()
        last_seq = self.orderlog.last_seq
        if not trades and not deliveries and last_seq < first:
            return None
        previous = self.ledger.last_batch()
        seq = previous.seq + 1 if previous else 1
        batch = seal_batch(
            gateway=self.config.id,
            seq=seq,
            prev_hash=previous.hash if previous else GENESIS_HASH,
            created_ts=now,
            log_first=first,
            trades=trades,
            deliveries=deliveries,
            log=self.orderlog.slice(first, last_seq),
            key=self.key,
        )
        trade_ids = [t.id for t in trades]
        self.ledger.store_batch(
            seq=seq,
            hash=batch_hash(batch),
            created_ts=now,
            log_last=last_seq,
            body=encode_batch(batch),
            trades=trade_ids,
            deliveries=[d.trade for d in deliveries],
        )
        # The batch holds these records now (and the file keeps them): memory need not.
        self.orderlog.forget_through(last_seq)
        return seq, last_seq, trade_ids

    # ------------------------------------------------------------------ observing

    @property
    def idle(self) -> bool:
        """True when nothing is in hand: no trade between match and settlement (awaiting its
        seller's telemetry, its proof or its lock's ack), no effects queued or being performed,
        no seal in progress. Telemetry, orders or a timer tick can make it busy again at once;
        poll it while driving the meters, then :meth:`quiesce` before reading the ledger."""
        return (
            not self.core.pending
            and self._effect_queue.empty()
            and not self._busy
            and not self._background
            and not self._seal_lock.locked()
        )

    async def quiesce(self) -> None:
        """Wait until every effect the core returned before this call is performed, every seal
        started meanwhile is done, and the ledger transactions they queued are committed; then
        :meth:`disk` reads see all of it. It does not wait for trades awaiting a meter (see
        :attr:`idle`): their acks must still arrive. Not to be awaited inside :meth:`seal`."""
        assert self._loop is not None
        marker: asyncio.Future[None] = self._loop.create_future()
        self._effect_queue.put_nowait(([], marker))  # effects run in order: a no-op marker
        await marker
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        async with self._seal_lock:  # a seal on demand in progress
            pass
        await self.disk(lambda: None)  # the ledger thread runs its calls in order

    @property
    def interval(self) -> int:
        """The delivery interval the gateway has opened (``now // (interval_s * 1000)`` at its
        last tick): the ones before are closed and its standing policies have run."""
        return self.core.interval

    @property
    def reference_price(self) -> int | None:
        """The current reference price, ticks per kWh (None before any verified telemetry)."""
        return self.core.engine.reference_price

    def telemetry_seq(self, meter: str) -> int | None:
        """The seq of ``meter``'s last accepted telemetry, or None if none was accepted."""
        tel = self.core.telemetry.get(meter)
        return None if tel is None else tel.seq

    def meter_seq(self, meter: str) -> int:
        """The highest seq of ``meter``'s messages the gateway has accepted (telemetry,
        delivery reports and acks share the meter's one counter), or -1 if none. A host that
        steps meters one at a time waits for this to reach the meter's last published seq."""
        last = self.core.last_seq
        return max(last.get((meter, "state"), -1), last.get((meter, "ack"), -1))

    async def wait_meter_seq(self, meter: str, seq: int) -> None:
        """Return once :meth:`meter_seq` of ``meter`` is at least ``seq`` (woken by the message
        itself, not by polling). A message the gateway refuses does not count: wrap the call
        in a timeout."""
        if self.meter_seq(meter) >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._seq_waiters.setdefault(meter, [])
        waiters.append((seq, future))
        try:
            await future
        finally:
            if (seq, future) in waiters:
                waiters.remove((seq, future))
            if not waiters:
                self._seq_waiters.pop(meter, None)

    def _wake_seq_waiters(self) -> None:
        for meter, waiters in self._seq_waiters.items():
            seen = self.meter_seq(meter)
            for seq, future in waiters:
                if seq <= seen and not future.done():
                    future.set_result(None)

    @property
    def prune_waiting(self) -> bool:
        """True until the timer's next tick has pruned what a close, a void or a sealed batch
        let go (:meth:`GatewayCore.prune_waiting`)."""
        return self.core.prune_waiting()

    def commands_outstanding(self, meter: str) -> int:
        """Commands to ``meter`` sent and not yet acknowledged, plus those waiting to be sent."""
        return self.core.commands_outstanding(meter)

    def locks(self, *, interval: int | None = None) -> list[LockView]:
        """Settled trades whose delivery is not decided yet (all, or those of ``interval``),
        in settlement order."""
        out = []
        for lock in self.core.locks.values():
            if interval is not None and lock.interval != interval:
                continue
            out.append(
                LockView(
                    trade=lock.trade,
                    meter=lock.meter,
                    seller=lock.seller,
                    buyer=lock.buyer,
                    wh=lock.wh,
                    price=lock.price,
                    interval=lock.interval,
                )
            )
        return out

    def status(self) -> dict[str, Any]:
        """The core's status (docs/gateway.md ``GET /v1/status``, without the disk's part)."""
        return self.core.status()

    # ------------------------------------------------------------------ tasks

    async def _mqtt(self) -> None:
        cfg = self.config.mqtt
        prefix = self.config.mqtt.topic_prefix
        delay = 0.5
        while True:
            _check_cancelled()
            try:
                async with aiomqtt.Client(
                    hostname=cfg.host,
                    port=cfg.port,
                    username=cfg.username,
                    password=cfg.password,
                    identifier=f"ngrid-gateway-{self.config.id}",
                    keepalive=30,
                    queue_type=functools.partial(_Dispatch, self._on_mqtt_message),
                    # Small command packets must not wait for Nagle's algorithm (paho leaves it on).
                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                ) as client:
                    # Telemetry at QoS 0: the session is clean (nothing is redelivered after a
                    # reconnect whatever the QoS), so a PUBACK per state message would only cost
                    # a send and a wake-up, 500 a second with 500 meters. Acks are few: they
                    # keep QoS 1, which costs nothing there.
                    await client.subscribe(f"{prefix}/+/state", qos=0)
                    await client.subscribe(f"{prefix}/+/ack", qos=1)
                    _check_cancelled()  # a cancel lost inside the connect or subscribe
                    self._client = client
                    self.mqtt_connected.set()
                    delay = 0.5
                    log.info(
                        "mqtt_connected", extra={"fields": {"host": cfg.host, "port": cfg.port}}
                    )
                    # Messages go to the core as paho reads them (_Dispatch); the queue stays
                    # empty, so this only waits for the connection to drop (MqttError).
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as err:
                self.mqtt_connected.clear()
                _check_cancelled()  # the error may stand for our own cancellation
                log.warning(
                    "mqtt_disconnected", extra={"fields": {"error": str(err), "retry_s": delay}}
                )
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 30.0)

    def _on_mqtt_message(self, message: aiomqtt.Message) -> None:
        """One message from a meter topic, straight from the MQTT client's reader: to the core,
        and its effects queued. A failure here is the core's bug: the service stops with it
        rather than go on with a core in an unknown state (paho would only log it)."""
        try:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            effects = self.core.on_message(
                topic=message.topic.value, payload=bytes(payload), now=self.clock()
            )
            if effects:  # most telemetry changes nothing that needs doing
                self.perform(effects)
            if self._seq_waiters:  # a host stepping meters one at a time (wait_meter_seq)
                self._wake_seq_waiters()
        except Exception as err:
            log.error("message_failed", extra={"fields": {"error": repr(err)}})
            self.failure = err
            self.stop()

    async def _publisher(self) -> None:
        """Send queued commands in order without waiting for each PUBACK before the next (the
        packet is written when ``publish`` is called; the task only awaits the broker's ack).
        A command that fails (connection lost) is queued again and re-sent after reconnect."""
        inflight: set[asyncio.Task[None]] = set()

        async def send(item: _Outgoing) -> None:
            if item.started is not None:  # paho writes the packet in the first step below
                self.lock_latency.append((time.perf_counter() - item.started) * 1000)
            await self._client.publish(item.topic, item.payload, qos=1, retain=False)

        def sent(item: _Outgoing, task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self.mqtt_connected.clear()
                self.outgoing.put_nowait(item)

        while True:
            item = await self.outgoing.get()
            await self.mqtt_connected.wait()
            task = asyncio.create_task(send(item))
            inflight.add(task)
            task.add_done_callback(functools.partial(sent, item))

    async def _ticker(self) -> None:
        saved_at = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            now = self.clock()
            self.perform(self.core.tick(now=now))
            self.ticked_at = now
            if time.monotonic() - saved_at >= SAVE_SEQS_S:
                saved_at = time.monotonic()
                self._ledger_write(self.ledger.save_meter_seqs, dict(self.core.last_seq))

    async def _outbox(self) -> None:
        url = self.config.coordinator.url
        cfg = self.config.coordinator
        if not url:
            return
        delay = cfg.backoff_initial_s
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                _check_cancelled()
                self.outbox_wake.clear()
                failed = False
                # One batch at a time, oldest first: a week's queue is not loaded at once.
                while (batch := await self.disk(self.ledger.outbox_next)) is not None:
                    try:
                        async with session.post(
                            f"{url}/batches",
                            data=batch.body,
                            headers={
                                "Content-Type": "application/json",
                                "Idempotency-Key": f"{self.config.id}:{batch.seq}",
                            },
                        ) as response:
                            text = await response.text()
                            ok = 200 <= response.status < 300
                    except (aiohttp.ClientError, TimeoutError) as err:
                        _check_cancelled()  # a timeout that stood for our cancellation
                        ok, text = False, repr(err)
                    if not ok:
                        await self.disk(self.ledger.count_attempt, batch.seq)
                        log.warning(
                            "upload_failed",
                            extra={
                                "fields": {"seq": batch.seq, "retry_s": delay, "detail": text[:200]}
                            },
                        )
                        failed = True
                        break
                    await self.disk(self.ledger.mark_uploaded, batch.seq, self.clock())
                    self.uploads += 1
                    log.info("batch_uploaded", extra={"fields": {"seq": batch.seq}})
                if failed:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, cfg.backoff_max_s)
                    continue
                delay = cfg.backoff_initial_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox_wake.wait(), timeout=cfg.backoff_max_s)

    async def _bind_api(self) -> list[socket.socket]:
        """Bind and listen on ``[api] host:port`` (every address the host resolves to, one
        port); :class:`GatewayError` naming the key if that is impossible (port in use, no
        permission, not a local address). Done before the TaskGroup starts, so a taken port is a
        plain error at startup; connections wait in the backlog until ``http`` serves them."""
        assert self._loop is not None
        host, port = self.config.api.host, self.config.api.port
        try:
            infos = await self._loop.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as err:
            raise GatewayError(f"api.host: cannot resolve {host!r}: {err.strerror}") from err
        sockets: list[socket.socket] = []
        seen: set[tuple[int, Any]] = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and len(sockets) > 1:  # the same free port on every address
                    address = (address[0], sockets[0].getsockname()[1], *address[2:])
                try:
                    sock.bind(address)
                except OSError as err:
                    raise _bind_error(host, port, err) from err
                sock.listen(128)
                sock.setblocking(False)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    async def _http(self, sockets: list[socket.socket]) -> None:
        """Serve the API on the sockets :meth:`_bind_api` bound."""
        from aiohttp import web

        from edge.gateway.api import make_app

        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        try:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
            self.api_port = sockets[0].getsockname()[1]
            log.info(
                "api_listening",
                extra={"fields": {"host": self.config.api.host, "port": self.api_port}},
            )
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _broker(self) -> None:
        """``--embedded-broker``: an amqtt broker on the configured host/port (trials only)."""
        from amqtt.broker import Broker  # type: ignore[import-untyped]

        cfg = self.config.mqtt
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{cfg.host}:{cfg.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await broker.start()
        log.info("embedded_broker", extra={"fields": {"host": cfg.host, "port": cfg.port}})
        try:
            await asyncio.Event().wait()
        finally:
            await broker.shutdown()

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT); then shut down cleanly.

        Raises :class:`GatewayError` before any task starts if the API cannot listen
        (``api.port: port 8080 on 127.0.0.1 is in use``); a task that fails stops the others
        and ends ``run`` with its error (in an ExceptionGroup)."""
        self._loop = asyncio.get_running_loop()
        sockets: list[socket.socket] = []
        try:
            sockets = await self._bind_api()
            if self.handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        self._loop.add_signal_handler(sig, self.stop)
            # From here on the ledger is the disk thread's alone (a call from the loop raises).
            await self.disk(self.ledger.bind_thread)
            self.perform(self._restart_effects)
            self._restart_effects = []
            # The proof worker was started before any socket was open; make one proof so the
            # first trade does not wait for its imports.
            self.prover.attach(self._loop)
            await self.prover.warm_up()
            async with asyncio.TaskGroup() as group:
                if self.config.mqtt.embedded_broker:
                    self._tasks.append(group.create_task(self._broker(), name="broker"))
                    await asyncio.sleep(0.5)
                for name, coro in (
                    ("effects", self._effects()),
                    ("mqtt", self._mqtt()),
                    ("publisher", self._publisher()),
                    ("ticker", self._ticker()),
                    ("outbox", self._outbox()),
                    ("http", self._http(sockets)),
                ):
                    self._tasks.append(group.create_task(coro, name=name))
                self._stopper_task = group.create_task(self._stopper(), name="stopper")
                self.ready.set()
        finally:
            for sock in sockets:  # closed by the server already, unless it never started
                sock.close()
            self.close()
        if self.failure is not None:
            raise GatewayError(f"stopped after a failure: {self.failure!r}")

    async def _stopper(self) -> None:
        await self.stop_event.wait()
        log.info("stopping")
        # Finish the effects in hand (log appends, settlements), then let queued commands go out.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while not self._effect_queue.empty() or self._busy:
                    await asyncio.sleep(0.01)
                await self.disk(lambda: None)  # the ledger thread has finished what was queued
        # Let queued commands go out briefly, then cancel the tasks.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                while not self.outgoing.empty() and self.mqtt_connected.is_set():
                    await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()

    def stop(self) -> None:
        """Graceful shutdown, as SIGTERM. Once the ``stopper`` task has ended (it cancelled the
        tasks, or the TaskGroup cancelled it because a task failed), another call cancels the
        tasks still running again."""
        self.stop_event.set()
        if self._stopper_task is not None and self._stopper_task.done():
            for task in self._tasks:
                task.cancel()

    def close(self) -> None:
        self._log_io.shutdown(wait=True)
        self._io.shutdown(wait=True)
        self.ledger.unbind()  # the disk thread is gone
        self.prover.close()
        with contextlib.suppress(Exception):
            self.ledger.save_meter_seqs(self.core.last_seq)
            self.ledger.set_meta([("last_stop_ms", str(self.clock()))])
        self.ledger.close()
        self.orderlog.close()
        log.info("stopped")


#: The libraries the gateway runs that log on their own, by logger name: amqtt (the
#: ``embedded_broker``; "N messages not broadcasted" when it stops with messages queued) and
#: the state machine it drives (transitions), aiomqtt ("mqtt": "There are N pending publish
#: calls" once more than 10 QoS 1 commands await their PUBACK, which a burst of locks does by
#: design; paho logs through it too) and aiohttp (the API and the coordinator client). Without
#: a handler of their own their warnings reach Python's last-resort handler: bare lines on the
#: terminal, outside the log.
LIBRARY_LOGGERS = ("amqtt", "transitions", "mqtt", "aiohttp")


def setup_logging(level: str, *, path: Path | None = None) -> logging.Handler:
    """The gateway's log: JSON lines (:class:`JsonFormatter`) on stderr, or appended to
    ``path``. The gateway's records (``ngrid.*``) at ``level``; the libraries'
    (:data:`LIBRARY_LOGGERS`) through the same handler, at ``level`` but never below warning
    (their info and debug lines are per connection or per packet), each with its ``logger``.
    Neither propagates to the root logger. Returns the handler (a host that runs the gateway
    in-process, as ``ngrid simulate`` does, passes ``path`` and closes it at the end)."""
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if path is None else logging.FileHandler(path)
    )
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("ngrid")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    library_level = max(logging.WARNING, logging.getLevelName(level.upper()))
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers[:] = [handler]
        library.setLevel(library_level)
        library.propagate = False
    return handler


def run_gateway(config: GatewayConfig) -> None:
    """Run the service until SIGTERM/SIGINT (``ngrid gateway run``)."""
    setup_logging(config.log_level)

    async def main() -> None:
        service = GatewayService(config=config)
        await service.run()

    try:
        asyncio.run(main())
    except* GatewayError as group:
        raise group.exceptions[0] from None
