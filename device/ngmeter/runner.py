"""The meter's main loop: MQTT session, reconnects, telemetry, commands, watchdog.

``Runner(hal, root).step()`` does one bounded slice of work and returns how many ms to wait
before the next call; ``run()`` loops it on the board. Hosts that drive time themselves (the
MicroPython VM under Node, the CPython virtual meter) call ``step()`` directly. All timers use
``hal.ticks_diff`` (wraparound-safe); the inbox is a fixed-size ring; reconnects back off
exponentially with jitter, capped.

The hal (device/hal.py on the board) provides: init(cfg), ticks_ms(), ticks_diff(a, b),
ticks_add(a, b), sleep_ms(ms), epoch() (Unix s), random_below(n), read_soc_bp(), read_power_w(),
take_pulses() -> (import_wh, export_wh), set_lock(active), watchdog(ms), feed(), network_up(),
mqtt_client(client_id, host, port, user, password, keepalive) (umqtt.simple's API), log(msg).
"""

import gc
import sys

from ngmeter import config
from ngmeter.meter import Meter
from ngmeter.store import Store

INBOX = 4  # commands buffered between check_msg() and handling; more are dropped (and counted)
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
        self.inbox_len = 0
        self.dropped = 0
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
        if self.inbox_len == INBOX:
            self.dropped += 1
            return
        self.inbox[self.inbox_len] = msg
        self.inbox_len += 1

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
            self.client.check_msg()
            if self.inbox_len:
                self._read_battery()
                for i in range(self.inbox_len):
                    msg, self.inbox[i] = self.inbox[i], None
                    for topic, payload in meter.handle(msg, now):
                        self._publish(topic, payload)
                self.inbox_len = 0
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
