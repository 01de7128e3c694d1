"""The gateway's decision logic as a pure state machine: events in, effects out.

:class:`GatewayCore` takes the gateway's inputs (meter telemetry and acks as received from MQTT,
orders and cancels from the API, finished range proofs, timer ticks) with the current time as a
parameter, and returns the effects the shell must perform, in order:

- :class:`Append`: order-log records; the shell appends and fsyncs them before it performs any
  later effect of the same call, and before it acknowledges the request that caused them.
- :class:`Prove`: make a commitment to a seller's SoC and the at-least range proof.
- :class:`Publish`: an MQTT command to a meter (QoS 1, never retained).
- :class:`Settle`: one ledger transaction with a trade's settlement records.
- :class:`Deliver`: one ledger transaction with a lock's delivery outcome.
- :class:`Seal`: close a settlement batch now.
- :class:`SaveSnapshot`: keep an engine snapshot for a faster restart (one ledger write).
- :class:`Note`: a structured log line.

No clock, randomness or I/O: the shell (edge.gateway.service) supplies time and performs effects;
tests drive the core directly. Matching runs on each event, never on a poll.

Rules (docs/gateway.md):

- Telemetry is accepted only if the meter is registered, the payload parses and its MAC verifies
  under the meter's key, its sequence number is above the last accepted one, its time is within
  ``[now - max_age_s, now + max_future_s]``, SoC is in 0..10000, |power| <= ``max_power_w`` and
  the energy counters do not go backwards. Anything else is refused and counted by reason.
- Community SoC is the capacity-weighted mean SoC of meters whose last verified telemetry is
  younger than ``stale_after_s``, floored to ``soc_step_bp``; the reference price is
  ``base_price * (10**8 + scarcity_bp * (10000 - soc)) // 10**8`` ticks/kWh (``base_price`` at
  full charge, ``base_price * (1 + scarcity_bp / 10000)`` when empty). A change is an order-log
  event (edge.market ReferencePrice).
- A trade is locked only if ``SoC - reserved >= reserve_bp + ceil(wh * 10000 / capacity_wh)``
  on the seller meter's fresh telemetry, ``reserved`` being ``ceil(locked Wh * 10000 /
  capacity_wh)`` over the meter's undecided locks. Without fresh telemetry the trade waits up to
  ``telemetry_wait_ms`` for it (a restarted gateway has heard nobody yet). If the SoC does not
  cover the sale, or the meter stays silent, or the seller has no meter, the trade is voided and
  the rest of the sell order cancelled (both logged).
- The lock command is due right after the check above (the default), the proof being made
  meanwhile and awaited before settlement, or after the proof (``prove_before_lock``). The
  lock's ack settles the trade once its proof is there; a refusal other than ``busy``, or no
  ack by ``timeout_ms`` after the lock was due, voids it.
- Commands to one meter: at most ``max_in_flight`` (4, the firmware's inbox) sent and not yet
  acknowledged; the rest wait in a FIFO of at most ``queue_max``. A ``busy`` ack (the meter's
  inbox was full, the command changed nothing) puts the command back in its place, to be sent
  again with a new seq after a back-off; past the queue's bound a lock voids its trade
  (``queue_full``) and a release is dropped (docs/gateway.md, "Commands to a meter").
- Delivery: the meter reports, authenticated, what it exported against each lock when the
  lock's interval ends (docs/wire.md ``delivery``). The lock is ``delivered`` if that covers its
  Wh, else ``defaulted`` with what it got. Without a report by the interval's end plus
  ``max_age_s``, the export counter's rise since settlement decides instead (shared among the
  meter's locks of that interval in settlement order) and the lock is released.
- At each interval start, standing policies place orders for the new interval.
- Pruning (docs/gateway.md, "Memory"): once every trade of the closed intervals up to ``k`` is
  voided, or settled and sealed in a batch, the core logs ``Prune(k)`` (edge.market) so the engine
  forgets those intervals' orders and trades, drops them from each home's order list and saves
  a snapshot. The prune lands in a later batch than any trade it forgets, so the coordinator's
  replay still has every trade it checks. A snapshot is also saved once the log has grown by
  ``snapshot_records`` since the last one, so a restart replays a bounded tail of the log.
- On restart (:meth:`GatewayCore.restore`) every trade of the replayed log that the ledger has not
  settled is voided (reason ``restart``), and a release is sent to its meter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.batch import DeliveryRecord, TradeRecord, proof_context
from edge.errors import GatewayError
from edge.gateway.config import GatewayConfig, Home, Meter
from edge.market import (
    Cancel,
    CloseInterval,
    Engine,
    Event,
    InvalidEvent,
    Order,
    Prune,
    ReferencePrice,
    Trade,
    Void,
    event_to_dict,
    parse_event,
    settle,
)
from edge.wire import METER_MAX_LOCKS

__all__ = [
    "Ack",
    "Append",
    "Deliver",
    "GatewayCore",
    "LogNotKept",
    "MeterCodec",
    "Note",
    "OrderRejected",
    "Prove",
    "Publish",
    "SaveSnapshot",
    "Seal",
    "Settle",
    "Snapshot",
    "Telemetry",
    "WireRefused",
    "reference_price",
]


# ---------------------------------------------------------------------- wire seam


@dataclass(frozen=True, kw_only=True)
class Telemetry:
    """One verified telemetry message: SoC in bp, counters in Wh, power in W, ``ts`` in ms."""

    meter: str
    seq: int
    ts: int
    soc_bp: int
    import_wh: int
    export_wh: int
    power_w: int
    locked_wh: int


@dataclass(frozen=True, kw_only=True)
class DeliveryReport:
    """A meter's verified report of what it exported against one lock (``ts`` in ms)."""

    meter: str
    seq: int
    ts: int
    trade: str
    wh: int
    delivered_wh: int


@dataclass(frozen=True, kw_only=True)
class Ack:
    """A meter's verified answer to a command of kind ``op``: ``ok`` or refused (``reason``)."""

    meter: str
    seq: int
    trade: str
    op: str
    ok: bool
    reason: str = ""
    cmd: int = 0  # the acknowledged command's seq (0: the meter could not read it)


class WireRefused(GatewayError):
    """A meter message failed to parse or verify; ``reason`` is the refusal counter's name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class MeterCodec(Protocol):
    """The wire format (edge.wire) as the core uses it; see edge.gateway.meterwire."""

    def telemetry(self, meter: Meter, payload: bytes) -> Telemetry | DeliveryReport: ...

    def ack(self, meter: Meter, payload: bytes) -> Ack: ...

    def lock(
        self,
        meter: Meter,
        *,
        seq: int,
        trade: str,
        wh: int,
        start: int,
        end: int,
        expiry: int,
        now: int,
    ) -> bytes: ...

    def release(self, meter: Meter, *, seq: int, trade: str, expiry: int, now: int) -> bytes: ...


# ---------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Append:
    records: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Prove:
    trade: str
    soc_bp: int
    threshold_bp: int
    reserved_bp: int
    context: bytes


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    trade: str = ""
    kind: str = ""


@dataclass(frozen=True)
class Settle:
    record: TradeRecord  # record.meter: the seller's meter that locked the energy
    export_start_wh: int


@dataclass(frozen=True)
class Deliver:
    record: DeliveryRecord


@dataclass(frozen=True)
class Seal:
    reason: str


@dataclass(frozen=True)
class SaveSnapshot:
    snapshot: Snapshot


@dataclass(frozen=True)
class Note:
    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Effect = Append | Prove | Publish | Settle | Deliver | Seal | SaveSnapshot | Note


class LogNotKept(GatewayError):
    """:meth:`GatewayCore.restore` needs order-log records before the first one it was given
    (the snapshot it was told to start from cannot be used); the shell reloads the whole log."""


class OrderRejected(GatewayError, ValueError):
    """An API order or cancel is refused before anything is logged; ``status`` is the HTTP one."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


# ---------------------------------------------------------------------- state


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The engine after order-log record ``log_seq`` (edge.market snapshot bytes), and which
    orders belong to which home."""

    log_seq: int
    engine: bytes
    home_orders: Mapping[str, tuple[str, ...]]


@dataclass
class _Pending:
    trade: Trade
    meter: Meter
    checked: bool = False  # SoC checked and proof requested
    wait_until: int | None = None  # waiting for the seller's first fresh telemetry
    soc_bp: int = 0
    threshold_bp: int = 0
    reserved_bp: int = 0
    commitment: bytes | None = None
    proof: bytes | None = None
    deadline: int | None = None  # set when the lock command is due (queued for the meter)
    sent: bool = False  # a lock command was published at least once
    acked: bool = False


@dataclass
class _Command:
    """A command for one meter, from the moment it is due until it is acknowledged (or given
    up). ``n`` orders the meter's queue (FIFO); a ``busy`` command keeps its place."""

    n: int
    meter: Meter
    kind: str  # "lock" or "release"
    trade: str
    give_up: int | None = None  # releases: first send + timeout_ms (locks: the trade's deadline)
    ready_at: int = 0  # not before this (the back-off after a `busy`)
    busy: int = 0  # `busy` acks this command got
    sends: int = 0
    seq: int = 0  # the seq it was last sent with
    expiry: int = 0  # its last send's expiry: in flight until its ack or this time


@dataclass
class _Outbox:
    """One meter's commands: at most ``locks.max_in_flight`` sent and unacknowledged (by seq),
    at most ``locks.queue_max`` waiting, in order of ``n``."""

    in_flight: dict[int, _Command] = field(default_factory=dict)
    waiting: list[_Command] = field(default_factory=list)


@dataclass
class _Lock:
    """A settled trade's lock, until its delivery is decided: the core's own copy of what it
    needs of the trade (its interval may be pruned from the engine meanwhile)."""

    trade: str
    meter: str
    seller: str
    wh: int
    interval: int
    export_start_wh: int
    buyer: str
    price: int  # ticks per kWh


#: Lock refusals after which the seller's meter would refuse the rest of its sell order too.
SELLER_FULL = frozenset({"too_many_locks", "insufficient_reserve"})


def reference_price(*, base_price: int, scarcity_bp: int, soc_bp: int) -> int:
    """``base_price * (10**8 + scarcity_bp * (10000 - soc_bp)) // 10**8`` (ticks/kWh)."""
    return base_price * (100_000_000 + scarcity_bp * (10_000 - soc_bp)) // 100_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class GatewayCore:
    """The gateway's state machine. Build it with :meth:`restore` (also for a fresh start)."""

    def __init__(self, *, config: GatewayConfig, codec: MeterCodec, now: int) -> None:
        self.config = config
        self.codec = codec
        self.engine = Engine(params=config.market_params)
        self.interval_ms = config.market.interval_s * 1000
        self.prefix = config.mqtt.topic_prefix
        self.meters: dict[str, Meter] = {m.id: m for m in config.meters}
        self.home_meter: dict[str, Meter] = {}
        for m in config.meters:
            self.home_meter.setdefault(m.owner, m)
        self.homes: dict[str, Home] = {h.id: h for h in config.homes}
        self.log_seq = 0
        self.telemetry: dict[str, Telemetry] = {}
        self.last_seq: dict[tuple[str, str], int] = {}  # (meter, topic leaf) -> highest seq
        self.refusals: Counter[str] = Counter()
        self.pending: dict[str, _Pending] = {}
        self.locks: dict[str, _Lock] = {}
        self.home_orders: dict[str, list[str]] = {}
        self.voids: Counter[str] = Counter()
        self.interval = now // self.interval_ms
        self.settled_since_batch = 0
        # Settled trades not yet sealed in a batch (trade -> interval): they hold back a prune.
        self.unbatched: dict[str, int] = {}
        self._prune_due = False  # something happened that may let an interval be pruned
        self._snapshot_seq = 0  # the log position of the last engine snapshot saved
        self.last_batch_at = now
        self.batched_log_seq = 0
        # A seal is outstanding (emitted or begun, not yet recorded): no second Seal effect.
        self.sealing = False
        self.replayed_from = 0  # restore: the log position the replay started after
        self._cmd_seq: dict[str, int] = {}
        self._outboxes: dict[str, _Outbox] = {}  # meter -> its commands (see _dispatch)
        self._cmd_n = 0  # commands made due so far: their FIFO order
        self.busy_acks: Counter[str] = Counter()  # meter -> `busy` acks received
        self.resent: Counter[str] = Counter()  # meter -> commands sent again after a `busy`
        self.dropped: Counter[str] = Counter()  # meter -> releases not queued or given up
        self._soc_cap = 0  # sum of soc_bp * capacity over fresh meters
        self._cap = 0
        self._counted: dict[str, tuple[int, int]] = {}  # meter -> (soc*cap, cap) in the sums

    # ------------------------------------------------------------------ restore

    @classmethod
    def restore(
        cls,
        *,
        config: GatewayConfig,
        codec: MeterCodec,
        log: Sequence[Mapping[str, Any]],
        settled: set[str],
        locks: Iterable[Any],
        batched_log_seq: int,
        unbatched: Collection[str],
        now: int,
        last_seq: Mapping[tuple[str, str], int] | None = None,
        snapshot: Snapshot | None = None,
        log_base: int = 0,
    ) -> tuple[GatewayCore, list[Effect]]:
        """Rebuild the state from the order log and the ledger; return it with the effects of
        the restart rule (void every unsettled, unvoided trade; release its meter).

        ``log`` holds order-log records ``log_base + 1`` onwards (all of them by default);
        ``unbatched`` the ids of settled trades not yet in a batch. ``last_seq`` is the highest
        accepted seq per (meter, topic leaf) as last saved, so that old messages stay refused as
        replays after a restart. ``snapshot`` (from :meth:`snapshot`) lets the engine start from
        its state instead of the log's beginning; it is ignored if ``log`` does not reach it or
        the market parameters changed, and then, if ``log`` does not start at record 1,
        :class:`LogNotKept` is raised. A log record the engine refuses raises
        :class:`~edge.errors.GatewayError`."""
        core = cls(config=config, codec=codec, now=now)
        core.last_seq.update(last_seq or {})
        core.batched_log_seq = batched_log_seq
        log_last = log_base + len(log)
        start = 0
        if snapshot is not None and log_base <= snapshot.log_seq <= log_last:
            # A snapshot is used only if the log on disk reaches it (the two are written by
            # different threads); otherwise the whole log is replayed.
            engine = Engine.restore(snapshot.engine)
            if engine.params == config.market_params:
                core.engine = engine
                core.home_orders = {h: list(ids) for h, ids in snapshot.home_orders.items()}
                start = snapshot.log_seq
        if start < log_base:
            raise LogNotKept(
                f"the order log is kept from record {log_base + 1}, "
                f"the replay starts at {start + 1}"
            )
        core.replayed_from = core._snapshot_seq = start
        for n, record in enumerate(log[start - log_base :], start=start + 1):
            body = {k: v for k, v in record.items() if k != "seq"}
            try:
                event = parse_event(body, n)
                core.engine.submit(event)
            except InvalidEvent as err:
                raise GatewayError(f"order log line {n} does not replay: {err}") from err
            if isinstance(event, Order):
                core.home_orders.setdefault(event.owner, []).append(event.id)
            elif isinstance(event, Prune):
                core._forget_pruned_orders()
        core.log_seq = log_last
        for lock in locks:
            core.locks[lock.trade] = _Lock(
                trade=lock.trade,
                meter=lock.meter,
                seller=lock.seller,
                wh=lock.wh,
                interval=lock.interval,
                export_start_wh=lock.export_start_wh,
                buyer=lock.buyer,
                price=lock.price,
            )
        out: list[Effect] = []
        for trade in core.engine.trades():
            if trade.id in settled or core.engine.is_voided(trade.id):
                continue
            meter = core.home_meter.get(trade.seller)
            if meter is not None:
                core._release(meter, trade.id, now, out)
            core._void(trade.id, "restart", now, out)
        for trade_id in unbatched:
            kept = core.engine.trade(trade_id)
            if kept is not None:
                core.unbatched[trade_id] = kept.interval
        core.settled_since_batch = len(unbatched)
        core._prune_due = True
        return core, out

    def snapshot(self) -> Snapshot:
        """The engine's state after log record :attr:`log_seq`, for a faster restart."""
        return Snapshot(
            log_seq=self.log_seq,
            engine=self.engine.snapshot(),
            home_orders={h: tuple(ids) for h, ids in self.home_orders.items()},
        )

    # ------------------------------------------------------------------ helpers

    def current_interval(self, now: int) -> int:
        return now // self.interval_ms

    def _log(self, event: Event, out: list[Effect]) -> list[Trade]:
        """Check, log and submit one market event; return its trades (not yet handled)."""
        self.engine.check(event)
        self.log_seq += 1
        out.append(Append(({"seq": self.log_seq, **event_to_dict(event)},)))
        return self.engine.submit(event)

    def _cmd(self, meter: str, now: int) -> int:
        seq = max(self._cmd_seq.get(meter, 0) + 1, now)
        self._cmd_seq[meter] = seq
        return seq

    def _topic(self, meter: str, leaf: str) -> str:
        return f"{self.prefix}/{meter}/{leaf}"

    # ------------------------------------------------------------------ commands

    def _release(self, meter: Meter, trade: str, now: int, out: list[Effect]) -> None:
        """Queue a ``release`` of ``trade`` for ``meter`` (sent at once if a slot is free).
        Past the queue's bound it is dropped, counted and logged: the meter still drops the
        lock at its interval's end (docs/gateway.md, "Commands to a meter")."""
        self._cmd_n += 1
        command = _Command(n=self._cmd_n, meter=meter, kind="release", trade=trade)
        if not self._enqueue(command, now, out):
            self.dropped[meter.id] += 1
            out.append(Note("release_dropped", {"meter": meter.id, "trade": trade}))

    def _enqueue(self, command: _Command, now: int, out: list[Effect]) -> bool:
        """Append a new command to its meter's queue and send what may go; False (and nothing
        queued) if the queue already holds ``locks.queue_max`` commands it cannot send."""
        box = self._outboxes.setdefault(command.meter.id, _Outbox())
        box.waiting.append(command)  # the newest n: the end of the FIFO
        self._dispatch(command.meter, now, out)
        if len(box.waiting) > self.config.locks.queue_max:
            # Nothing was sent (sending any ready command sends the older ones first).
            box.waiting.remove(command)
            return False
        return True

    def _dispatch(self, meter: Meter, now: int, out: list[Effect]) -> None:
        """Send ``meter``'s waiting commands, oldest first, while fewer than
        ``locks.max_in_flight`` are unacknowledged (the firmware's inbox, docs/wire.md
        "Inbox"). A command whose back-off after ``busy`` has not run out lets later ones go
        first. A command counts as in flight until its ack or its own expiry (after which the
        meter refuses it as ``expired`` if it ever reads it)."""
        box = self._outboxes.get(meter.id)
        if box is None:
            return
        for seq, command in list(box.in_flight.items()):
            if now >= command.expiry:
                del box.in_flight[seq]
                out.append(
                    Note(
                        "command_unacked",
                        {"meter": meter.id, "op": command.kind, "trade": command.trade, "cmd": seq},
                    )
                )
        limit = self.config.locks.max_in_flight
        i = 0
        while len(box.in_flight) < limit and i < len(box.waiting):
            command = box.waiting[i]
            if command.ready_at > now:
                i += 1
                continue
            del box.waiting[i]
            self._send(box, command, now, out)

    def _send(self, box: _Outbox, command: _Command, now: int, out: list[Effect]) -> None:
        """Publish ``command`` with a new seq; a lock's expiry is its trade's deadline, a
        release's its first send plus ``timeout_ms``, so a command sent again never outlives
        the first. Nothing is sent for a lock whose trade was decided meanwhile."""
        meter = command.meter
        if command.kind == "lock":
            p = self.pending.get(command.trade)
            if p is None or p.acked or p.deadline is None or now >= p.deadline:
                return  # voided, settled, or about to time out (tick voids it)
            command.seq = self._cmd(meter.id, now)
            command.expiry = p.deadline
            payload = self.codec.lock(
                meter,
                seq=command.seq,
                trade=p.trade.id,
                wh=p.trade.wh,
                start=p.trade.interval * self.interval_ms,
                end=(p.trade.interval + 1) * self.interval_ms,
                expiry=p.deadline,
                now=now,
            )
            p.sent = True
        else:
            if command.give_up is None:
                command.give_up = now + self.config.locks.timeout_ms
            elif now >= command.give_up:
                self.dropped[meter.id] += 1
                out.append(Note("release_given_up", {"meter": meter.id, "trade": command.trade}))
                return
            command.seq = self._cmd(meter.id, now)
            command.expiry = command.give_up
            payload = self.codec.release(
                meter, seq=command.seq, trade=command.trade, expiry=command.give_up, now=now
            )
        if command.sends:
            self.resent[meter.id] += 1
            out.append(
                Note(
                    "resent",
                    {
                        "meter": meter.id,
                        "op": command.kind,
                        "trade": command.trade,
                        "cmd": command.seq,
                        "busy": command.busy,
                    },
                )
            )
        command.sends += 1
        box.in_flight[command.seq] = command
        out.append(Publish(self._topic(meter.id, "cmd"), payload, command.trade, command.kind))

    def _acked(self, meter: Meter, ack: Ack, now: int, out: list[Effect]) -> None:
        """Take the acknowledged command out of flight; after a ``busy``, queue it again (in
        its old place, after a back-off doubling from ``busy_backoff_ms`` per ``busy``, at most
        16 times that) unless its trade was decided or it is past its time."""
        box = self._outboxes.get(meter.id)
        command = box.in_flight.get(ack.cmd) if box is not None else None
        if box is not None and (
            command is None or command.kind != ack.op or command.trade != ack.trade
        ):
            command = next(
                (c for c in box.in_flight.values() if c.kind == ack.op and c.trade == ack.trade),
                None,
            )
        if box is not None and command is not None:
            del box.in_flight[command.seq]
        if ack.reason != "busy":
            return
        self.busy_acks[meter.id] += 1
        out.append(
            Note("busy", {"meter": meter.id, "op": ack.op, "trade": ack.trade, "cmd": ack.cmd})
        )
        if box is None or command is None:
            return  # not a command in flight (its time ran out): nothing to send again
        if command.kind == "lock":
            p = self.pending.get(command.trade)
            wanted = p is not None and not p.acked and p.deadline is not None and now < p.deadline
        else:
            wanted = command.give_up is None or now < command.give_up
        if not wanted:
            return
        command.busy += 1
        base = self.config.locks.busy_backoff_ms
        command.ready_at = now + min(base << min(command.busy - 1, 4), base * 16)
        at = next((i for i, c in enumerate(box.waiting) if c.n > command.n), len(box.waiting))
        box.waiting.insert(at, command)

    def _forget_lock(self, meter: str, trade: str) -> None:
        """Drop ``trade``'s lock from ``meter``'s queue (not from flight: its ack will come)."""
        box = self._outboxes.get(meter)
        if box is not None:
            box.waiting = [c for c in box.waiting if not (c.kind == "lock" and c.trade == trade)]

    def _held_wh(self, meter: str) -> list[int]:
        """The Wh of each lock ``meter`` holds or has been asked to take: settled and
        undecided, or checked and awaiting its ack."""
        held = [p.trade.wh for p in self.pending.values() if p.meter.id == meter and p.checked]
        return held + [lk.wh for lk in self.locks.values() if lk.meter == meter]

    def _reserved_wh(self, meter: str) -> int:
        return sum(self._held_wh(meter))

    def _fresh(self, tel: Telemetry | None, now: int) -> bool:
        return tel is not None and now - tel.ts <= self.config.telemetry.stale_after_s * 1000

    # ------------------------------------------------------------------ orders

    def place(
        self,
        *,
        home: str,
        side: str,
        wh: int,
        price: int,
        interval: int | None,
        now: int,
    ) -> tuple[str, list[Effect]]:
        """Place a limit order for ``home``; return its id and the effects.

        Raises :class:`OrderRejected` (nothing logged) for a bad side, a non-positive or
        non-integer ``wh``/``price``, a past or closed interval, or a sell from a home without
        a registered meter.
        """
        if side not in ("buy", "sell"):
            raise OrderRejected("side must be 'buy' or 'sell'")
        for name, value in (("wh", wh), ("price", price)):
            if type(value) is not int or value <= 0:
                raise OrderRejected(f"{name} must be a positive integer")
        current = self.current_interval(now)
        if interval is None:
            interval = current
        if type(interval) is not int or interval < current:
            raise OrderRejected(f"interval must be an integer >= the current one ({current})")
        if side == "sell" and home not in self.home_meter:
            raise OrderRejected("a home without a registered meter cannot sell", status=409)
        order_id = f"o{self.log_seq + 1}"
        out: list[Effect] = []
        event = Order(order_id, home, side, wh, price, now, interval)
        try:
            trades = self._log(event, out)
        except InvalidEvent as err:
            raise OrderRejected(str(err)) from err
        self.home_orders.setdefault(home, []).append(order_id)
        self._on_trades(trades, now, out)
        return order_id, out

    def cancel(self, *, home: str, order_id: str, now: int) -> list[Effect]:
        """Cancel the rest of one of ``home``'s open orders (404 if not theirs, 409 if done)."""
        if order_id not in self.home_orders.get(home, ()):
            raise OrderRejected(f"no order {order_id!r} of this home", status=404)
        state = self.engine.order(order_id)
        if state is None or state.status != "open":
            raise OrderRejected(f"order {order_id!r} is not open", status=409)
        out: list[Effect] = []
        self._log(Cancel(order_id, now), out)
        return out

    def orders_of(self, home: str) -> list[dict[str, Any]]:
        out = []
        for oid in self.home_orders.get(home, ()):
            state = self.engine.order(oid)
            if state is not None:
                out.append(
                    {
                        "id": state.id,
                        "side": state.side,
                        "wh": state.wh,
                        "price": state.price,
                        "interval": state.interval,
                        "ts": state.ts,
                        "remaining": state.remaining,
                        "status": state.status,
                    }
                )
        return out

    def pending_of(self, home: str) -> list[dict[str, Any]]:
        """Matched trades awaiting their lock ack (not yet in the ledger)."""
        return [
            {**p.trade.to_dict(), "status": "locking"}
            for p in self.pending.values()
            if home in (p.trade.buyer, p.trade.seller)
        ]

    # ------------------------------------------------------------------ trades and locks

    def _on_trades(self, trades: list[Trade], now: int, out: list[Effect]) -> None:
        for trade in trades:
            meter = self.home_meter.get(trade.seller)
            if meter is None:
                self._void(trade.id, "no_meter", now, out, cancel=trade.sell)
                continue
            pending = _Pending(trade=trade, meter=meter)
            self.pending[trade.id] = pending
            out.append(Note("matched", {"trade": trade.id, "wh": trade.wh, "price": trade.price}))
            tel = self.telemetry.get(meter.id)
            if tel is not None and self._fresh(tel, now):
                self._check(pending, tel, now, out)
            else:
                pending.wait_until = now + self.config.locks.telemetry_wait_ms
                out.append(Note("awaiting_telemetry", {"trade": trade.id, "meter": meter.id}))

    def _check(self, p: _Pending, tel: Telemetry, now: int, out: list[Effect]) -> None:
        """The seller's SoC must cover the sale above the reserve, counting locks held, and
        the meter must have room for one more lock (:data:`edge.wire.METER_MAX_LOCKS`)."""
        meter, trade = p.meter, p.trade
        p.wait_until = None
        held = self._held_wh(meter.id)
        if len(held) >= METER_MAX_LOCKS:
            # The meter would refuse it (too_many_locks) and the rest of the sell order too.
            self._void(trade.id, "meter_full", now, out, cancel=trade.sell)
            return
        reserved_bp = _ceil_div(sum(held) * 10_000, meter.capacity_wh)
        threshold_bp = meter.reserve_bp + _ceil_div(trade.wh * 10_000, meter.capacity_wh)
        if tel.soc_bp - reserved_bp < threshold_bp:
            self._void(trade.id, "soc_below_reserve", now, out, cancel=trade.sell)
            return
        p.soc_bp, p.threshold_bp, p.reserved_bp = tel.soc_bp, threshold_bp, reserved_bp
        p.checked = True
        out.append(
            Prove(
                trade=trade.id,
                soc_bp=tel.soc_bp,
                threshold_bp=threshold_bp,
                reserved_bp=reserved_bp,
                context=proof_context(
                    gateway=self.config.id,
                    trade=trade.id,
                    seller=trade.seller,
                    meter=meter.id,
                    wh=trade.wh,
                    interval=trade.interval,
                ),
            )
        )
        if not self.config.locks.prove_before_lock:
            self._lock_due(p, now, out)

    def _lock_due(self, p: _Pending, now: int, out: list[Effect]) -> None:
        """The trade's lock command is due: its deadline starts now (``timeout_ms``, whether
        the command waits in the meter's queue, is sent, or is sent again after ``busy``).
        If the meter's queue is full the trade is voided (``queue_full``) and the rest of the
        sell order cancelled, as when the seller's meter cannot take the lock."""
        p.deadline = now + self.config.locks.timeout_ms
        self._cmd_n += 1
        command = _Command(n=self._cmd_n, meter=p.meter, kind="lock", trade=p.trade.id)
        if not self._enqueue(command, now, out):
            out.append(Note("queue_full", {"meter": p.meter.id, "trade": p.trade.id}))
            self._void(p.trade.id, "queue_full", now, out, cancel=p.trade.sell)

    def _void(
        self, trade_id: str, reason: str, now: int, out: list[Effect], *, cancel: str = ""
    ) -> None:
        p = self.pending.pop(trade_id, None)
        if p is not None:
            self._forget_lock(p.meter.id, trade_id)
            self._prune_due = True
        self.voids[reason] += 1
        out.append(Note("voided", {"trade": trade_id, "reason": reason}))
        trades = self._log(Void(trade_id, now), out)
        if cancel:
            state = self.engine.order(cancel)
            if state is not None and state.status == "open":
                self._log(Cancel(cancel, now), out)
                out.append(Note("cancelled", {"order": cancel, "reason": reason}))
        self._on_trades(trades, now, out)

    def proof_ready(self, *, trade: str, commitment: bytes, proof: bytes, now: int) -> list[Effect]:
        """A :class:`Prove` effect finished; send the lock or settle an early ack."""
        out: list[Effect] = []
        p = self.pending.get(trade)
        if p is None:
            return out  # voided meanwhile
        p.commitment, p.proof = commitment, proof
        if p.deadline is None:
            self._lock_due(p, now, out)
        elif p.acked:
            self._settle(p, now, out)
        return out

    def proof_failed(self, *, trade: str, error: str, now: int) -> list[Effect]:
        """A :class:`Prove` effect failed (it should not: the core checked the statement)."""
        out: list[Effect] = []
        p = self.pending.get(trade)
        if p is not None:
            if p.sent:
                self._release(p.meter, trade, now, out)
            out.append(Note("proof_failed", {"trade": trade, "error": error}))
            self._void(trade, "proof_failed", now, out)
        return out

    def _settle(self, p: _Pending, now: int, out: list[Effect]) -> None:
        assert p.commitment is not None and p.proof is not None
        t = p.trade
        record = TradeRecord.of(
            t,
            settle(t, self.config.rates),
            meter=p.meter.id,
            settled_ts=now,
            commitment=p.commitment,
            proof=p.proof,
            soc_threshold_bp=p.threshold_bp,
            soc_reserved_bp=p.reserved_bp,
        )
        del self.pending[t.id]
        tel = self.telemetry.get(p.meter.id)
        export_start = tel.export_wh if tel else 0
        self.locks[t.id] = _Lock(
            trade=t.id,
            meter=p.meter.id,
            seller=t.seller,
            wh=t.wh,
            interval=t.interval,
            export_start_wh=export_start,
            buyer=t.buyer,
            price=t.price,
        )
        out.append(Settle(record, export_start))
        self.unbatched[t.id] = t.interval
        out.append(Note("settled", {"trade": t.id, "wh": t.wh, "value": record.value}))
        self.settled_since_batch += 1
        if self.settled_since_batch >= self.config.batch.max_trades and not self.sealing:
            self.sealing = True
            out.append(Seal("max_trades"))

    # ------------------------------------------------------------------ MQTT input

    def on_message(self, *, topic: str, payload: bytes, now: int) -> list[Effect]:
        """A message from a meter topic ``<prefix>/<meter>/state`` or ``.../ack``."""
        out: list[Effect] = []
        rest = topic[len(self.prefix) + 1 :] if topic.startswith(self.prefix + "/") else ""
        meter_id, _, leaf = rest.partition("/")
        if leaf not in ("state", "ack"):
            return out
        meter = self.meters.get(meter_id)
        if meter is None:
            return self._refuse("unknown_meter", meter_id, leaf)
        try:
            message = (
                self.codec.telemetry(meter, payload)
                if leaf == "state"
                else self.codec.ack(meter, payload)
            )
        except WireRefused as err:
            return self._refuse(err.reason, meter_id, leaf, str(err))
        if message.meter != meter.id:
            return self._refuse("wrong_meter", meter.id, leaf, message.meter)
        last = self.last_seq.get((meter.id, leaf), -1)
        if message.seq <= last:
            return self._refuse("replay", meter.id, leaf, f"seq {message.seq} <= {last}")
        if isinstance(message, Ack):
            self.last_seq[(meter.id, leaf)] = message.seq
            return self._on_ack(meter, message, now)
        cfg = self.config.telemetry
        if message.ts > now + cfg.max_future_s * 1000:
            return self._refuse("future", meter.id, leaf, f"ts {message.ts}")
        if message.ts < now - cfg.max_age_s * 1000:
            return self._refuse("stale", meter.id, leaf, f"ts {message.ts}")
        if isinstance(message, DeliveryReport):
            self.last_seq[(meter.id, leaf)] = message.seq
            return self._on_delivery(meter, message, now)
        return self._on_telemetry(meter, message, now)

    def _refuse(self, reason: str, meter: str, leaf: str, detail: str = "") -> list[Effect]:
        key = reason if leaf == "state" else f"ack_{reason}"
        self.refusals[key] += 1
        return [Note("refused", {"reason": key, "meter": meter, "detail": detail})]

    def _on_telemetry(self, meter: Meter, tel: Telemetry, now: int) -> list[Effect]:
        cfg = self.config.telemetry
        last = self.telemetry.get(meter.id)
        if (
            not 0 <= tel.soc_bp <= 10_000
            or abs(tel.power_w) > cfg.max_power_w
            or tel.locked_wh < 0
            or tel.import_wh < 0
            or tel.export_wh < 0
            or (
                last is not None
                and (tel.import_wh < last.import_wh or tel.export_wh < last.export_wh)
            )
        ):
            return self._refuse("implausible", meter.id, "state")
        self.telemetry[meter.id] = tel
        self.last_seq[(meter.id, "state")] = tel.seq
        old = self._counted.pop(meter.id, (0, 0))
        new = (tel.soc_bp * meter.capacity_wh, meter.capacity_wh)
        self._counted[meter.id] = new
        self._soc_cap += new[0] - old[0]
        self._cap += new[1] - old[1]
        out: list[Effect] = []
        for p in list(self.pending.values()):
            if p.meter.id == meter.id and p.wait_until is not None and p.trade.id in self.pending:
                self._check(p, tel, now, out)
        self._update_reference(now, out)
        return out

    def _on_ack(self, meter: Meter, ack: Ack, now: int) -> list[Effect]:
        out: list[Effect] = []
        self._acked(meter, ack, now, out)
        if ack.reason != "busy":  # a busy command was not read: nothing else to decide
            self._on_answer(meter, ack, now, out)
        self._dispatch(meter, now, out)  # a slot is free, or a back-off ran out
        return out

    def _on_answer(self, meter: Meter, ack: Ack, now: int, out: list[Effect]) -> None:
        if ack.op != "lock":
            out.append(Note("ack", {"meter": meter.id, "op": ack.op, "reason": ack.reason}))
            return
        p = self.pending.get(ack.trade)
        if p is None or p.meter.id != meter.id or not p.sent:
            out.append(Note("ack_ignored", {"trade": ack.trade, "meter": meter.id, "ok": ack.ok}))
            if ack.ok and ack.trade not in self.locks and ack.trade not in self.pending:
                self._release(meter, ack.trade, now, out)  # a late ack of a void
            return
        if not ack.ok:
            # A meter that holds all the locks it can, or cannot cover more above its reserve,
            # would refuse the rest of the sell order the same way: cancel it, as when the
            # gateway's own SoC check fails, rather than match it again buyer after buyer.
            full = ack.reason in SELLER_FULL
            self._void(ack.trade, "refused", now, out, cancel=p.trade.sell if full else "")
            out.append(Note("lock_refused", {"trade": ack.trade, "reason": ack.reason}))
            return
        p.acked = True
        if p.proof is not None:
            self._settle(p, now, out)

    # ------------------------------------------------------------------ reference price

    def community_soc(self) -> int | None:
        """Capacity-weighted mean SoC (bp) of the meters counted fresh, or None."""
        return self._soc_cap // self._cap if self._cap else None

    def _update_reference(self, now: int, out: list[Effect]) -> None:
        soc = self.community_soc()
        if soc is None:
            return
        step = self.config.reference.soc_step_bp
        ref = reference_price(
            base_price=self.config.reference.base_price,
            scarcity_bp=self.config.reference.scarcity_bp,
            soc_bp=soc // step * step,
        )
        if ref != self.engine.reference_price:
            trades = self._log(ReferencePrice(ref, now), out)
            self._on_trades(trades, now, out)

    # ------------------------------------------------------------------ delivery

    def _decide(self, lock: _Lock, delivered: int, now: int, out: list[Effect]) -> None:
        got = min(lock.wh, delivered)
        status = "delivered" if got >= lock.wh else "defaulted"
        del self.locks[lock.trade]
        out.append(
            Deliver(
                DeliveryRecord(
                    trade=lock.trade, status=status, wh=lock.wh, delivered_wh=got, ts=now
                )
            )
        )
        out.append(Note(status, {"trade": lock.trade, "wh": lock.wh, "delivered": got}))

    def _on_delivery(self, meter: Meter, report: DeliveryReport, now: int) -> list[Effect]:
        """The meter's own account of a lock: it ended (or was released) and dropped it."""
        out: list[Effect] = []
        lock = self.locks.get(report.trade)
        if lock is None or lock.meter != meter.id:
            out.append(Note("delivery_ignored", {"trade": report.trade, "meter": meter.id}))
            return out
        self._decide(lock, report.delivered_wh, now, out)
        return out

    def _deliveries(self, now: int, out: list[Effect]) -> None:
        """Locks whose meter sent no delivery report by interval end + ``max_age_s``: decide
        from the export counter since settlement, shared in settlement order, and release."""
        grace = self.config.telemetry.max_age_s * 1000
        due: dict[tuple[str, int], list[_Lock]] = {}
        for lock in self.locks.values():
            if now >= (lock.interval + 1) * self.interval_ms + grace:
                due.setdefault((lock.meter, lock.interval), []).append(lock)
        for (meter_id, _), group in due.items():
            last = self.telemetry.get(meter_id)
            start = min(lk.export_start_wh for lk in group)
            pool = max(0, (last.export_wh if last else start) - start)
            for lock in group:
                got = min(lock.wh, pool)
                pool -= got
                self._decide(lock, got, now, out)
                m = self.meters.get(meter_id)
                if m is not None:
                    self._release(m, lock.trade, now, out)

    # ------------------------------------------------------------------ timer

    def tick(self, *, now: int) -> list[Effect]:
        """Lock timeouts, interval closes, delivery checks, standing policies, batch timing."""
        out: list[Effect] = []
        for trade_id, p in list(self.pending.items()):
            if p.wait_until is not None and now >= p.wait_until and trade_id in self.pending:
                self._void(trade_id, "no_telemetry", now, out, cancel=p.trade.sell)
                continue
            if (
                p.deadline is not None
                and not p.acked
                and now >= p.deadline
                and trade_id in self.pending
            ):
                # A `busy` never voids by itself; the deadline does, resends or not.
                if p.sent:
                    self._release(p.meter, trade_id, now, out)
                self._void(trade_id, "timeout", now, out)
        for meter_id in [m for m, box in self._outboxes.items() if box.waiting or box.in_flight]:
            self._dispatch(self.meters[meter_id], now, out)  # back-offs, expired commands
        stale_before = now - self.config.telemetry.stale_after_s * 1000
        for meter_id, tel in self.telemetry.items():
            if tel.ts < stale_before and meter_id in self._counted:
                soc_cap, cap = self._counted.pop(meter_id)
                self._soc_cap -= soc_cap
                self._cap -= cap
        current = self.current_interval(now)
        for interval in self.engine.open_intervals():
            if interval < current:
                self._log(CloseInterval(interval, now), out)
                self._prune_due = True
        if self._prune_due:
            self._prune_due = False
            self._prune(now, out)
        if self.log_seq - self._snapshot_seq >= self.config.snapshot_records:
            self._save_snapshot(out)
        if current != self.interval:
            self.interval = current
            self._policies(now, out)
        self._deliveries(now, out)
        if not self.sealing:
            if self.settled_since_batch >= self.config.batch.max_trades:
                self.sealing = True
                out.append(Seal("max_trades"))
            elif now - self.last_batch_at >= self.config.batch.every_s * 1000 and (
                self.log_seq > self.batched_log_seq or self.settled_since_batch
            ):
                self.sealing = True
                out.append(Seal("every_s"))
        return out

    def prunable(self) -> int | None:
        """The highest closed interval ``k`` that :meth:`tick` may prune now, or None: every
        interval up to ``k`` is closed (no open book) and none of its trades is pending or
        settled but not yet sealed in a batch."""
        closed = self.engine.closed_intervals()
        if not closed:
            return None
        limit = closed[-1]
        open_books = self.engine.open_intervals()
        if open_books:
            limit = min(limit, open_books[0] - 1)
        for p in self.pending.values():
            limit = min(limit, p.trade.interval - 1)
        for interval in self.unbatched.values():
            limit = min(limit, interval - 1)
        kept = [k for k in closed if k <= limit]
        return kept[-1] if kept else None

    def prune_waiting(self) -> bool:
        """True until the next :meth:`tick` has looked for closed intervals to prune after
        something that may let one go (a close, a void, a sealed batch)."""
        return self._prune_due

    def _prune(self, now: int, out: list[Effect]) -> None:
        k = self.prunable()
        if k is None:
            return
        self._log(Prune(k, now), out)
        self._forget_pruned_orders()
        out.append(Note("pruned", {"through": k, "log_seq": self.log_seq}))
        self._save_snapshot(out)

    def _save_snapshot(self, out: list[Effect]) -> None:
        """Save the engine's state now (after a prune it is at its smallest)."""
        self._snapshot_seq = self.log_seq
        out.append(SaveSnapshot(self.snapshot()))

    def _forget_pruned_orders(self) -> None:
        """Drop orders the engine has forgotten from each home's list (and homes left with
        none)."""
        order = self.engine.order
        kept = {h: [o for o in ids if order(o) is not None] for h, ids in self.home_orders.items()}
        self.home_orders = {h: ids for h, ids in kept.items() if ids}

    def begin_seal(self) -> int:
        """The shell starts sealing: mark a seal outstanding (so neither :meth:`tick` nor a
        settlement emits another :class:`Seal`) and return the batch's first log seq, the one
        after the last batch's. Pair with :meth:`batch_sealed` or :meth:`seal_skipped`; the
        shell runs one seal at a time."""
        self.sealing = True
        return self.batched_log_seq + 1

    def batch_sealed(self, *, log_last: int, trades: Collection[str], now: int) -> None:
        """The shell sealed a batch covering the log up to ``log_last`` with the settled
        trades ``trades`` (ids; trades settled while it was sealing count towards the next
        one). Their intervals may now be pruned (at the next :meth:`tick`)."""
        self.batched_log_seq = log_last
        self.settled_since_batch = max(0, self.settled_since_batch - len(trades))
        for trade_id in trades:
            self.unbatched.pop(trade_id, None)
        self._prune_due = True
        self.last_batch_at = now
        self.sealing = False

    def seal_skipped(self, *, now: int) -> None:
        """The shell's seal found nothing to seal on disk, or failed: no seal is outstanding
        any more; the timer waits a full ``batch.every_s`` before it tries again."""
        self.last_batch_at = now
        self.sealing = False

    # ------------------------------------------------------------------ policies

    def set_policy(self, home: str, **policy: int | None) -> None:
        """Replace ``home``'s standing policies (fields of :class:`Home`)."""
        from dataclasses import replace

        self.homes[home] = replace(self.homes[home], **policy)  # type: ignore[arg-type]

    def _policies(self, now: int, out: list[Effect]) -> None:
        for home in self.homes.values():
            meter = self.home_meter.get(home.id)
            tel = self.telemetry.get(meter.id) if meter else None
            if meter is None or tel is None or not self._fresh(tel, now):
                continue
            reserved_bp = _ceil_div(self._reserved_wh(meter.id) * 10_000, meter.capacity_wh)
            if home.sell_above_bp is not None and home.sell_price is not None:
                floor = max(home.sell_above_bp, meter.reserve_bp)
                wh = (tel.soc_bp - reserved_bp - floor) * meter.capacity_wh // 10_000
                if wh > 0:
                    self._policy_order(home.id, "sell", wh, home.sell_price, now, out)
            if home.buy_below_bp is not None and home.buy_price is not None:
                wh = (home.buy_below_bp - tel.soc_bp) * meter.capacity_wh // 10_000
                if wh > 0:
                    self._policy_order(home.id, "buy", wh, home.buy_price, now, out)

    def _policy_order(
        self, home: str, side: str, wh: int, price: int, now: int, out: list[Effect]
    ) -> None:
        order_id = f"o{self.log_seq + 1}"
        trades = self._log(Order(order_id, home, side, wh, price, now, self.interval), out)
        self.home_orders.setdefault(home, []).append(order_id)
        out.append(Note("policy_order", {"home": home, "order": order_id, "side": side, "wh": wh}))
        self._on_trades(trades, now, out)

    # ------------------------------------------------------------------ views

    def meter_state(self, home: str) -> dict[str, Any] | None:
        meter = self.home_meter.get(home)
        if meter is None:
            return None
        tel = self.telemetry.get(meter.id)
        return {
            "meter": meter.id,
            "capacity_wh": meter.capacity_wh,
            "reserve_bp": meter.reserve_bp,
            "locked_wh": self._reserved_wh(meter.id),
            "telemetry": None
            if tel is None
            else {
                "seq": tel.seq,
                "ts": tel.ts,
                "soc_bp": tel.soc_bp,
                "import_wh": tel.import_wh,
                "export_wh": tel.export_wh,
                "power_w": tel.power_w,
                "locked_wh": tel.locked_wh,
            },
        }

    def status(self) -> dict[str, Any]:
        return {
            "gateway": self.config.id,
            "log_seq": self.log_seq,
            "reference_price": self.engine.reference_price,
            "pruned_through": self.engine.pruned_through,
            "community_soc_bp": self.community_soc(),
            "pending_locks": len(self.pending),
            "active_locks": len(self.locks),
            "refusals": dict(self.refusals),
            "voids": dict(self.voids),
            "meters_fresh": len(self._counted),
            "commands": self.command_status(),
        }

    def commands_outstanding(self, meter: str) -> int:
        """Commands to ``meter`` sent and unacknowledged plus those waiting to be sent."""
        box = self._outboxes.get(meter)
        return 0 if box is None else len(box.in_flight) + len(box.waiting)

    def command_status(self) -> dict[str, dict[str, int]]:
        """Per meter: commands ``in_flight`` (sent, unacknowledged) and ``waiting`` now;
        ``busy`` acks received, commands ``resent`` after one, releases ``dropped`` (queue
        full or past their time), since start."""
        return {
            "in_flight": {m: len(b.in_flight) for m, b in self._outboxes.items() if b.in_flight},
            "waiting": {m: len(b.waiting) for m, b in self._outboxes.items() if b.waiting},
            "busy": dict(self.busy_acks),
            "resent": dict(self.resent),
            "dropped": dict(self.dropped),
        }
