"""The meter's main loop: MQTT session, reconnects, telemetry, commands, watchdog.

``Runner(hal, root).step()`` does one bounded slice of work and returns how many ms to wait
before the next call; ``run()`` loops it on the board. Hosts that drive time themselves (the
MicroPython VM under Node, the CPython virtual meter) call ``step()`` directly. All timers use
``hal.ticks_diff`` (wraparound-safe); reconnects back off exponentially with jitter, capped.

Inbox (docs/wire.md, "Inbox"): commands wait in a preallocated ring of ``INBOX`` payloads.
``check_msg()`` (which reads at most one message, as umqtt.simple's does) is only called while
the ring has room, so a burst waits in the socket and at the broker. A QoS 1 ``publish()``
cannot stop reading: umqtt.simple hands every PUBLISH that arrives before its PUBACK to the
callback and PUBACKs it as soon as the callback returns. A command that arrives then with the
ring full is refused: its (kind, seq, trade) goes to a second preallocated ring of ``BUSY``
entries and is answered with a ``busy`` ack. If that ring is full too the callback raises
OSError before the PUBACK: the connection is dropped (the broker publishes the last will) and
the Runner reconnects. No command is dropped without an ack or a lost connection.

The hal (device/hal.py on the board) provides: init(cfg), ticks_ms(), ticks_diff(a, b),
ticks_add(a, b), sleep_ms(ms), epoch() (Unix s), random_below(n), read_soc_bp(), read_power_w(),
take_pulses() -> (import_wh, export_wh), set_lock(active), watchdog(ms), feed(), network_up(),
mqtt_client(client_id, host, port, user, password, keepalive) (umqtt.simple's API), log(msg).
"""

import gc
import sys

from ngmeter import config, wire
from ngmeter.meter import Meter
from ngmeter.store import Store

INBOX = 4  # commands read and waiting to be handled (a ring of payloads)
BUSY = 16  # commands refused with `busy`, waiting for their ack (a ring of (kind, seq, trade))
DRAIN = INBOX + BUSY  # most entries handled per step (the rest wait for the next step)
SLICE_MS = 50  # poll period while connected
# MicroPython needs gc.collect() between bursts to keep its heap unfragmented; CPython frees by
# reference counting and its gc.collect() is a full pass over every object in the process.
COLLECT = sys.implementation.name == "micropython"


class Runner:
    def __init__(self, hal, root="/", cfg=None, slice_ms=SLICE_MS):
        self.hal = hal
        # Longest wait between steps while connected. A board polls check_msg() every 50 ms;
        # a host that wakes on network input (the CPython virtual meter) can wait longer.
        self.slice_ms = slice_ms
        self.cfg = cfg if cfg is not None else config.load(root)
        hal.init(self.cfg)
        self.store = Store(root)
        self.store.load()
        self.meter = Meter(self.cfg, self.store)
        self.client = None
        self.inbox = [None] * INBOX
        self.inbox_head = 0
        self.inbox_len = 0
        self.refused = [None] * BUSY
        self.refused_head = 0
        self.refused_len = 0
        self.busy = 0  # commands refused with `busy` (counted)
        self.overflows = 0  # connections dropped because both rings were full
        self.failures = 0  # consecutive failed connects
        self.connects = 0
        self.retry_at = hal.ticks_ms()
        self.report_at = hal.ticks_ms()
        self.last_io = hal.ticks_ms()
        self.sensor_errors = 0
        if self.cfg["watchdog_ms"]:
            hal.watchdog(self.cfg["watchdog_ms"])

    # -- MQTT -------------------------------------------------------------------------------

    def _on_message(self, topic, msg):
        if self.inbox_len < INBOX:
            self.inbox[(self.inbox_head + self.inbox_len) % INBOX] = msg
            self.inbox_len += 1
            return
        if self.refused_len < BUSY:
            # (kind, seq, trade) for the ack; an oversized payload is not even parsed
            entry = wire.peek_command(msg) if len(msg) <= wire.MAX_PAYLOAD else ("", 0, "")
            self.refused[(self.refused_head + self.refused_len) % BUSY] = entry
            self.refused_len += 1
            self.busy += 1
            return
        # Raising before umqtt sends the PUBACK: the broker never sees this command acknowledged
        # and the connection is dropped (last will), never a silent loss.
        self.overflows += 1
        raise OSError("inbox full")

    def _take(self):
        msg, self.inbox[self.inbox_head] = self.inbox[self.inbox_head], None
        self.inbox_head = (self.inbox_head + 1) % INBOX
        self.inbox_len -= 1
        return msg

    def _take_refused(self):
        entry, self.refused[self.refused_head] = self.refused[self.refused_head], None
        self.refused_head = (self.refused_head + 1) % BUSY
        self.refused_len -= 1
        return entry

    def _read_inbox(self):
        # One message per check_msg(); stop while the ring is full (the rest waits in the socket).
        while self.inbox_len < INBOX:
            before = self.inbox_len
            self.client.check_msg()
            if self.inbox_len == before:
                return

    def backoff_ms(self):
        """Capped exponential backoff with equal jitter: [d/2, d], d = min(cap, base * 2^n)."""
        cfg = self.cfg
        delay = cfg["backoff_cap_ms"]
        if self.failures < 20:
            delay = min(delay, cfg["backoff_base_ms"] << self.failures)
        half = delay // 2
        return half + self.hal.random_below(delay - half + 1)

    def _connect(self):
        hal, cfg, meter = self.hal, self.cfg, self.meter
        if not hal.network_up():
            raise OSError("network down")
        client = hal.mqtt_client(
            meter.id,
            cfg["broker_host"],
            cfg["broker_port"],
            cfg["broker_user"],
            cfg["broker_password"],
            cfg["keepalive_s"],
        )
        client.set_callback(self._on_message)
        client.set_last_will(meter.t_status, b"offline", retain=True, qos=1)
        client.connect()
        self.client = client  # from here on a failure closes it
        client.subscribe(meter.t_cmd, qos=1)
        client.publish(meter.t_status, b"online", retain=True, qos=1)
        self.connects += 1
        self.failures = 0
        self.report_at = hal.ticks_ms()  # report straight after (re)connecting
        hal.log("mqtt: connected (%d)" % self.connects)

    def _drop(self, err):
        self.hal.log("mqtt: lost (%s)" % (err,))
        client, self.client = self.client, None
        if client is not None:
            try:
                client.sock.close()
            except Exception:
                pass
        self.failures += 1
        self.retry_at = self.hal.ticks_add(self.hal.ticks_ms(), self.backoff_ms())

    def _publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1)
        self.last_io = self.hal.ticks_ms()

    # -- the loop ---------------------------------------------------------------------------

    def _sense(self, now):
        hal, meter = self.hal, self.meter
        imp, exp = hal.take_pulses()
        meter.count(imp, exp, now)
        meter.persist(now)
        hal.set_lock(meter.book.active(now))

    def _read_battery(self):
        try:
            self.meter.soc_bp = self.hal.read_soc_bp()
            self.meter.power_w = self.hal.read_power_w()
        except (OSError, ValueError) as err:
            # Keep the last reading; a lock check then uses it (never an invented value).
            self.sensor_errors += 1
            self.hal.log("bms: %s" % (err,))

    def step(self):
        """One slice of work; returns the ms to wait before the next call."""
        hal, meter = self.hal, self.meter
        hal.feed()
        now = hal.epoch()
        self._sense(now)
        if self.client is None:
            wait = hal.ticks_diff(self.retry_at, hal.ticks_ms())
            if wait > 0:
                return min(wait, 1000)
            try:
                self._read_battery()
                self._connect()
            except OSError as err:
                self._drop(err)
                return 0
        try:
            self._read_inbox()
            if self.inbox_len or self.refused_len:
                self._read_battery()
                # Messages arriving during the acks' publishes join the rings and are handled
                # in this loop too; at most DRAIN per step so telemetry and the watchdog go on.
                for _ in range(DRAIN):
                    if self.inbox_len:
                        for topic, payload in meter.handle(self._take(), now):
                            self._publish(topic, payload)
                    elif self.refused_len:
                        op, cmd, trade = self._take_refused()
                        self._publish(*meter.busy(cmd, op, trade, now))
                    else:
                        break
                    hal.feed()
                if COLLECT:
                    gc.collect()
            for trade, topic, payload in meter.due(now):
                self._publish(topic, payload)
                meter.drop(trade, now)
            ticks = hal.ticks_ms()
            if hal.ticks_diff(ticks, self.report_at) >= 0:
                self._read_battery()
                self._publish(*meter.telemetry(now))
                self.report_at = hal.ticks_add(ticks, self.cfg["report_s"] * 1000)
                if COLLECT:
                    gc.collect()
            elif hal.ticks_diff(ticks, self.last_io) >= self.cfg["keepalive_s"] * 500:
                self.client.ping()
                self.last_io = ticks
        except OSError as err:
            self._drop(err)
            return 0
        until_report = hal.ticks_diff(self.report_at, hal.ticks_ms())
        return max(1, min(self.slice_ms, until_report))

    def run(self):
        """Loop forever (on the board)."""
        while True:
            self.hal.sleep_ms(self.step())
