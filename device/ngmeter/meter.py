"""The meter's logic: commands in, acks/telemetry/delivery reports out (docs/wire.md).

Pure (no hal, no I/O besides the Store's flash writes): the Runner feeds it readings, payloads
and the time, and publishes what it returns. Runs unchanged on MicroPython and CPython.
"""

from ngmeter import FW_VERSION, wire
from ngmeter.locks import DELIVERED, END, START, TRADE, WH, LockBook


class Meter:
    """One meter: ``cfg`` from config.parse, ``store`` a loaded Store."""

    def __init__(self, cfg, store):
        self.cfg = cfg
        self.key = cfg["key"]
        self.id = cfg["device_id"]
        base = "ngrid/" + cfg["gateway_id"] + "/" + self.id + "/"
        self.t_state = base + "state"
        self.t_cmd = base + "cmd"
        self.t_ack = base + "ack"
        self.t_status = base + "status"
        self.store = store
        self.book = LockBook(cfg["capacity_wh"], cfg["reserve_bp"], store.locks)
        self.import_wh = store.import_wh  # live counters; the store holds the durable ones
        self.export_wh = store.export_wh
        self.saved_at = None
        self.soc_bp = 0
        self.power_w = 0
        self.refusals = 0

    # -- readings ---------------------------------------------------------------------------

    def count(self, import_wh, export_wh, now):
        """Add pulses read since the last call (Wh) and credit exports to active locks."""
        self.import_wh += import_wh
        self.export_wh += export_wh
        self.book.credit(export_wh, now)

    def persist(self, now, force=False):
        """Write the counters (and delivered Wh) to flash if the persist policy asks for it."""
        store = self.store
        delta = (self.import_wh - store.import_wh) + (self.export_wh - store.export_wh)
        if self.saved_at is None:
            self.saved_at = now
        if delta == 0 and not force:
            return False
        if force or delta >= self.cfg["persist_wh"] or now - self.saved_at >= self.cfg["persist_s"]:
            store.import_wh = self.import_wh
            store.export_wh = self.export_wh
            store.save()
            self.saved_at = now
            return True
        return False

    # -- outgoing messages ------------------------------------------------------------------

    def telemetry(self, now):
        """(topic, payload) of a state message; counters reported are the durable ones."""
        self.persist(now)
        store = self.store
        fields = wire.state(
            self.id,
            store.next_seq(),
            now,
            self.soc_bp,
            store.import_wh,
            store.export_wh,
            self.power_w,
            self.book.held_wh(now),
            FW_VERSION,
        )
        return self.t_state, wire.seal(self.key, fields)

    def delivery(self, lock, now):
        """(topic, payload) of the delivery report of ``lock``."""
        fields = wire.delivery(
            self.id,
            self.store.next_seq(),
            now,
            lock[TRADE],
            lock[WH],
            lock[DELIVERED],
            lock[START],
            lock[END],
        )
        return self.t_state, wire.seal(self.key, fields)

    def due(self, now):
        """Locks whose interval has ended: [(trade, topic, payload)] to publish, then drop()."""
        return [(lk[TRADE],) + self.delivery(lk, now) for lk in self.book.ended(now)]

    def drop(self, trade, now):
        """Forget a lock whose delivery report went out; persisted atomically."""
        if self.book.remove(trade) is not None:
            self.persist(now, force=True)

    def _ack(self, now, cmd, op, trade, reason):
        if reason != wire.OK:
            self.refusals += 1
        fields = wire.ack(
            self.id,
            self.store.next_seq(),
            now,
            cmd,
            op,
            trade,
            reason == wire.OK,
            reason,
            self.book.held_wh(now),
        )
        return self.t_ack, wire.seal(self.key, fields)

    # -- commands ---------------------------------------------------------------------------

    def busy(self, cmd, op, trade, now):
        """(topic, payload) of the ``busy`` ack of a command the inbox had no room for.

        ``cmd``, ``op``, ``trade``: what wire.peek_command read from it (unverified; the
        command was not checked and changes nothing, docs/wire.md "Inbox").
        """
        return self._ack(now, cmd, op, trade, wire.BUSY)

    def handle(self, payload, now):
        """Check and carry out one command; return [(topic, payload)] to publish (ack first).

        Checks in the order of docs/wire.md: malformed, bad_mac, wrong_meter, expired,
        idempotent repeat, replay, then the command's own rules. A refusal changes nothing.
        """
        try:
            f = wire.open_payload(self.key, payload)
        except wire.WireError as err:
            op, cmd = wire.peek(payload)
            return [self._ack(now, cmd, op, "", err.reason)]
        kind, seq = f["kind"], f["seq"]
        trade = f.get("trade", "")
        if kind not in wire.COMMANDS or type(seq) is not int or seq < 1:
            return [self._ack(now, seq if type(seq) is int else 0, kind, "", wire.MALFORMED)]
        if f["meter"] != self.id:
            return [self._ack(now, seq, kind, trade, wire.WRONG_METER)]
        exp = f["exp"]
        if type(exp) is not int:
            return [self._ack(now, seq, kind, trade, wire.MALFORMED)]
        if now > exp:
            return [self._ack(now, seq, kind, trade, wire.EXPIRED)]
        store = self.store
        if kind == "lock":
            wh, start, end = f["wh"], f["start"], f["end"]
            if not (type(wh) is int and type(start) is int and type(end) is int and trade) or not (
                wh >= 1 and end > start
            ):
                return [self._ack(now, seq, kind, trade, wire.MALFORMED)]
            reason, repeat = self.book.check(trade, wh, start, end, self.soc_bp, now)
            if repeat:
                return [self._ack(now, seq, kind, trade, wire.OK)]
            if seq <= store.cmd_seq:
                return [self._ack(now, seq, kind, trade, wire.REPLAY)]
            if reason != wire.OK:
                return [self._ack(now, seq, kind, trade, reason)]
            self.book.add(trade, wh, start, end)
            store.cmd_seq = seq
            self.persist(now, force=True)  # the lock is on flash before it is acknowledged
            return [self._ack(now, seq, kind, trade, wire.OK)]
        if seq <= store.cmd_seq:
            return [self._ack(now, seq, kind, trade, wire.REPLAY)]
        if kind == "ping":
            store.cmd_seq = seq  # in RAM; flash catches up with the next write
            return [self._ack(now, seq, kind, trade, wire.OK)]
        if not trade:
            return [self._ack(now, seq, kind, trade, wire.MALFORMED)]
        lock = self.book.find(trade)
        if lock is None:
            return [self._ack(now, seq, kind, trade, wire.UNKNOWN_TRADE)]
        report = self.delivery(lock, now)
        self.book.remove(trade)
        store.cmd_seq = seq
        self.persist(now, force=True)
        return [self._ack(now, seq, kind, trade, wire.OK), report]
