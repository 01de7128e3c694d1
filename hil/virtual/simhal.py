"""A simulated hal for the meter firmware: battery, PV, load, clock and MQTT client, in software.

Runs unchanged on MicroPython (it is loaded into the WebAssembly VM next to the firmware) and on
CPython (the hosted virtual meter). It stands in for device/hal.py: the firmware's Runner calls
the same functions (see ngmeter/runner.py). What it simulates:

- ``ManualClock``: ticks (ms, wrapping like MicroPython's) and Unix time that tests advance by
  hand; ``WallClock``: the host's real clock; ``ScaledClock``: the host's clock run faster;
  ``HostClock``: a clock the host reads from a function (a simulation's clock).
- ``SimBattery``: integer energy model. PV and load in W; the battery absorbs surplus and covers
  deficit within its capacity; while the lock output is on it also exports ``lock_export_w``.
  What the battery cannot take or give flows to the grid and becomes import/export pulses (Wh).
- ``Trace``: PV and load over time (rows of t_s, pv_w, load_w, repeating), driving SimBattery.
- ``FakeBroker``/``FakeClient``: an in-memory stand-in for an MQTT broker with umqtt.simple's
  client API (no network), for the VM tests.
- ``BridgeClient``: umqtt.simple's client API over a line protocol to the host, which holds the
  real MQTT connection (the VM has no sockets); see hil/virtual/meter.py.
- ``SimHal``: the hal functions over those parts: a clock, a battery (``SimBattery`` or anything
  with its sensor side: ``advance(ms)``, ``soc_bp()``, ``power_w``, ``import_wh``/``export_wh``
  counters and a ``lock`` flag; the simulation's physics is one) and an MQTT client factory.
"""

import json

try:
    import time

    _ticks_ms = time.ticks_ms  # MicroPython
except AttributeError:  # CPython
    import time

    _ticks_ms = None

TICKS_PERIOD = 1 << 30  # MicroPython's ticks wrap at 2**30 on 32-bit ports
WMS_PER_WH = 3600000  # watt-milliseconds in a watt-hour


def ticks_add(a, b):
    return (a + b) % TICKS_PERIOD


def ticks_diff(a, b):
    half = TICKS_PERIOD // 2
    return ((a - b + half) % TICKS_PERIOD) - half


class ManualClock:
    """Time that moves only when ``advance(ms)`` is called (ticks start near the wrap)."""

    def __init__(self, epoch_s=1767225600, ticks=TICKS_PERIOD - 5000):
        self.ms = epoch_s * 1000
        self.ticks = ticks

    def advance(self, ms):
        self.ms += ms
        self.ticks = ticks_add(self.ticks, ms)

    def ticks_ms(self):
        return self.ticks

    def epoch(self):
        return self.ms // 1000

    def sleep_ms(self, ms):
        self.advance(ms)


class WallClock:
    """The host's clock (MicroPython: ticks_ms/time; CPython: monotonic/time)."""

    factor = 1  # simulated seconds per real second

    def ticks_ms(self):
        if _ticks_ms is not None:
            return _ticks_ms()
        return int(time.monotonic() * 1000) % TICKS_PERIOD

    def epoch(self):
        return int(time.time())

    def sleep_ms(self, ms):
        time.sleep(ms / 1000)


class ScaledClock:
    """Simulated time running ``factor`` times faster than the host's, from ``epoch_s``
    (CPython only: for compressed-time simulations of many meters)."""

    def __init__(self, factor, epoch_s):
        self.factor = factor
        self.start_epoch_ms = epoch_s * 1000
        self.t0 = time.monotonic()

    def _ms(self):
        return int((time.monotonic() - self.t0) * 1000 * self.factor)

    def ticks_ms(self):
        return self._ms() % TICKS_PERIOD

    def epoch(self):
        return (self.start_epoch_ms + self._ms()) // 1000

    def sleep_ms(self, ms):
        time.sleep(ms / 1000 / self.factor)


class HostClock:
    """Time the host keeps: ``now_ms()`` returns ms since the Unix epoch (e.g. a simulation's
    compressed clock). Ticks are that time modulo the wrap; ``sleep_ms`` returns at once, since
    the host decides when the firmware runs (it steps the Runner itself)."""

    def __init__(self, now_ms):
        self.now_ms = now_ms

    def ticks_ms(self):
        return self.now_ms() % TICKS_PERIOD

    def epoch(self):
        return self.now_ms() // 1000

    def sleep_ms(self, ms):
        pass


class SimBattery:
    """Battery + PV + load + grid connection, all in integer W, Wh and watt-milliseconds."""

    def __init__(self, capacity_wh, soc_bp, pv_w=0, load_w=0, max_w=5000, lock_export_w=2000):
        self.capacity_wh = capacity_wh
        self.stored_wms = capacity_wh * soc_bp // 10000 * WMS_PER_WH
        self.pv_w = pv_w
        self.load_w = load_w
        self.max_w = max_w
        self.lock_export_w = lock_export_w
        self.lock = False
        self.grid_wms = 0  # > 0 imported, < 0 exported, not yet turned into pulses
        self.import_wh = 0
        self.export_wh = 0
        self.power_w = 0
        self.trace = None
        self.elapsed_ms = 0

    def soc_bp(self):
        return self.stored_wms * 10000 // (self.capacity_wh * WMS_PER_WH)

    def advance(self, ms):
        """Run the model for ``ms`` milliseconds."""
        if ms <= 0:
            return
        if self.trace is not None:
            self.pv_w, self.load_w = self.trace.at(self.elapsed_ms // 1000)
        self.elapsed_ms += ms
        want = self.pv_w - self.load_w - (self.lock_export_w if self.lock else 0)
        want = max(-self.max_w, min(self.max_w, want))  # battery W, + charging
        full = self.capacity_wh * WMS_PER_WH
        energy = want * ms
        energy = (
            min(energy, full - self.stored_wms) if energy > 0 else max(energy, -self.stored_wms)
        )
        self.stored_wms += energy
        grid = (self.load_w - self.pv_w) * ms + energy  # + import
        self.power_w = grid // ms
        self.grid_wms += grid
        while self.grid_wms >= WMS_PER_WH:
            self.grid_wms -= WMS_PER_WH
            self.import_wh += 1
        while self.grid_wms <= -WMS_PER_WH:
            self.grid_wms += WMS_PER_WH
            self.export_wh += 1


class Trace:
    """PV and load in W from ``rows`` [(t_s, pv_w, load_w)] sorted by t_s, repeating after
    ``period_s`` (default: the last t_s plus the step before it)."""

    def __init__(self, rows, period_s=None):
        if not rows:
            raise ValueError("trace has no rows")
        self.rows = rows
        if period_s is None:
            step = rows[-1][0] - rows[-2][0] if len(rows) > 1 else 60
            period_s = rows[-1][0] + max(step, 1)
        self.period_s = period_s

    def at(self, t_s):
        """(pv_w, load_w) in force at ``t_s`` seconds from the start."""
        t = t_s % self.period_s
        pv, load = self.rows[0][1], self.rows[0][2]
        for row in self.rows:
            if row[0] > t:
                break
            pv, load = row[1], row[2]
        return pv, load


class FakeBroker:
    """In-memory stand-in for an MQTT broker (no network), for the firmware tests."""

    def __init__(self):
        self.published = []  # (topic, payload, retain, qos)
        self.pending = []  # (topic, payload) waiting for a subscriber's check_msg
        self.subscriptions = []
        self.will = None
        self.down = False
        self.connects = 0
        self.on_io = None  # called at each publish/check_msg (memory sampling)

    def inject(self, topic, payload):
        self.pending.append((topic, payload))


class _Sock:
    def close(self):
        pass


class FakeClient:
    """umqtt.simple's client API over a FakeBroker."""

    def __init__(self, broker, client_id):
        self.broker = broker
        self.client_id = client_id
        self.cb = None
        self.sock = _Sock()

    def _check(self):
        if self.broker.on_io is not None:
            self.broker.on_io()
        if self.broker.down:
            raise OSError("broker down")

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.broker.will = (topic, msg, retain, qos)

    def connect(self, clean_session=True):
        self._check()
        # A clean session: what the broker had not delivered to the last one is gone.
        del self.broker.pending[:]
        self.broker.connects += 1

    def subscribe(self, topic, qos=0):
        self._check()
        self.broker.subscriptions.append((topic, qos))

    def publish(self, topic, msg, retain=False, qos=0):
        self._check()
        self.broker.published.append((topic, bytes(msg), retain, qos))
        if qos == 1:
            # umqtt.simple waits for the PUBACK in wait_msg(), handing every PUBLISH that
            # arrives first to the callback: here, everything the broker already holds.
            while self._deliver():
                pass

    def _deliver(self):
        subscribed = [t for t, q in self.broker.subscriptions]
        while self.broker.pending:
            topic, payload = self.broker.pending.pop(0)
            if topic in subscribed:
                self.cb(topic.encode(), payload)
                return True
        return False

    def check_msg(self):
        # umqtt.simple reads at most one message per call
        self._check()
        self._deliver()

    def ping(self):
        self._check()


class BridgeClient:
    """umqtt.simple's client API over ``send(line)``/``poll() -> line or None`` to the host.

    The host (hil/virtual/meter.py) holds the real MQTT connection. Lines are JSON. To the
    host: {"op": "connect"|"subscribe"|"publish"|"ping"|"close", ...}. From the host:
    {"ev": "connected"}, {"ev": "lost", "error": str}, {"ev": "message", "topic", "payload"}.
    connect() cannot wait for the broker's answer inside the VM, so it returns at once; a
    failure arrives as "lost" and the next check_msg() or publish() raises OSError, which
    sends the Runner into its reconnect backoff exactly as a dropped socket does on a board.
    """

    def __init__(self, send, poll, client_id, host, port, user, password, keepalive):
        self.send = send
        self.poll = poll
        self.args = {
            "client_id": client_id,
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "keepalive": keepalive,
        }
        self.cb = None
        self.will = None
        self.lost = None
        self.sock = self  # Runner closes client.sock on errors

    def _op(self, **fields):
        if self.lost is not None:
            raise OSError(self.lost)
        self.send(json.dumps(fields))

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = [topic, msg.decode(), retain, qos]

    def connect(self, clean_session=True):
        self._op(op="connect", will=self.will, **self.args)

    def subscribe(self, topic, qos=0):
        self._op(op="subscribe", topic=topic, qos=qos)

    def publish(self, topic, msg, retain=False, qos=0):
        if qos == 1:
            # umqtt.simple hands every PUBLISH that arrives before its PUBACK to the callback;
            # the bridge does not wait for the PUBACK, so: every message already waiting.
            while self._next():
                pass
        elif self.lost is not None:
            raise OSError(self.lost)
        self._op(op="publish", topic=topic, payload=msg.decode(), retain=retain, qos=qos)

    def ping(self):
        self._op(op="ping")

    def _next(self):
        # Read host lines up to the next message and hand it to the callback (True), or
        # return False when nothing is waiting. Unread lines stay with the host, as unread
        # bytes stay in a socket: nothing is dropped here. A lost connection raises.
        while self.lost is None:
            line = self.poll()
            if line is None:
                return False
            ev = json.loads(line)
            if ev["ev"] == "lost":
                self.lost = ev.get("error", "connection lost")
            elif ev["ev"] == "message":
                self.cb(ev["topic"].encode(), ev["payload"].encode())
                return True
        raise OSError(self.lost)

    def check_msg(self):
        # At most one message per call, as umqtt.simple's check_msg()
        self._next()

    def close(self):
        if self.lost is None:
            self.lost = "closed"
            self.send(json.dumps({"op": "close"}))


class SimHal:
    """The hal the Runner expects, over a clock, a battery and an MQTT client factory.

    ``clock``: ticks_ms(), epoch(), sleep_ms(ms) (the clocks above). ``battery``: a SimBattery
    or any object with its sensor side (module docstring); ``advance(ms)`` is called with the
    ticks elapsed before each reading, ``take_pulses`` hands out and zeroes ``import_wh`` and
    ``export_wh``, ``set_lock`` sets ``lock``. ``client_factory(client_id, host, port, user,
    password, keepalive)`` returns umqtt.simple's client API."""

    def __init__(self, clock, battery, client_factory, seed=1):
        self.clock = clock
        self.battery = battery
        self.client_factory = client_factory
        self.rand = seed
        self.net_up = True
        self.bms_fail = False
        self.lock_output = False
        self.watchdog_ms = 0
        self.feeds = 0
        self.logs = []
        self.cfg = None
        self._last = clock.ticks_ms()

    def init(self, cfg):
        self.cfg = cfg

    def ticks_ms(self):
        return self.clock.ticks_ms()

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)

    def ticks_add(self, a, b):
        return ticks_add(a, b)

    def sleep_ms(self, ms):
        self.clock.sleep_ms(ms)

    def epoch(self):
        return self.clock.epoch()

    def random_below(self, n):
        self.rand = (self.rand * 1103515245 + 12345) & 0x7FFFFFFF
        return self.rand % n if n > 0 else 0

    def _advance(self):
        now = self.clock.ticks_ms()
        self.battery.advance(ticks_diff(now, self._last))
        self._last = now

    def read_soc_bp(self):
        if self.bms_fail:
            raise OSError("BMS did not answer")
        self._advance()
        return self.battery.soc_bp()

    def read_power_w(self):
        if self.bms_fail:
            raise OSError("BMS did not answer")
        return self.battery.power_w

    def take_pulses(self):
        self._advance()
        b = self.battery
        imp, exp = b.import_wh, b.export_wh
        b.import_wh = b.export_wh = 0
        return imp, exp

    def set_lock(self, active):
        self.lock_output = active
        self.battery.lock = active

    def watchdog(self, ms):
        self.watchdog_ms = ms

    def feed(self):
        self.feeds += 1

    def network_up(self):
        return self.net_up

    def mqtt_client(self, client_id, host, port, user, password, keepalive):
        return self.client_factory(client_id, host, port, user, password, keepalive)

    def log(self, msg):
        if len(self.logs) < 50:
            self.logs.append(msg)

    def reset(self):
        raise SystemExit("reset")
