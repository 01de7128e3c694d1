"""The virtual board's ``hal``: what device/hal.py is on an ESP32, for the MicroPython VM.

Loaded by js/vm_board.mjs as the module ``hal`` before the board runs its own main.py from its
flash. Hardware is simulated by simhal (battery, PV, load, lock output; settings from
/tmp/ngrid/sim.json), the clock is the host's, and the MQTT client is simhal.BridgeClient over
the JS module ``ngbridge`` (the host process holds the real connection). ``schedule(step)``
is how main.py hands its loop to an event-driven host: the board calls ``step()`` from Node's
event loop instead of blocking in ``Runner.run()``, so Ctrl-C still reaches the REPL.
"""

import json

import ngbridge
import simhal

with open("/tmp/ngrid/sim.json") as _f:
    _sim = json.loads(_f.read())

_hal = None
_task = None


def _client(*args):
    return simhal.BridgeClient(ngbridge.send, ngbridge.poll, *args)


def init(cfg):
    global _hal
    battery = simhal.SimBattery(
        cfg["capacity_wh"],
        _sim.get("soc_bp", 5000),
        _sim.get("pv_w", 0),
        _sim.get("load_w", 0),
        max_w=_sim.get("max_w", 5000),
        lock_export_w=_sim.get("lock_export_w", 2000),
    )
    if _sim.get("trace"):
        battery.trace = simhal.Trace(_sim["trace"])
    _hal = simhal.SimHal(simhal.WallClock(), battery, _client, seed=_sim.get("seed", 1))
    _hal.init(cfg)


def ticks_ms():
    return _hal.ticks_ms()


def ticks_diff(a, b):
    return simhal.ticks_diff(a, b)


def ticks_add(a, b):
    return simhal.ticks_add(a, b)


def sleep_ms(ms):
    _hal.sleep_ms(ms)


def epoch():
    return _hal.epoch()


def random_below(n):
    return _hal.random_below(n)


def read_soc_bp():
    return _hal.read_soc_bp()


def read_power_w():
    return _hal.read_power_w()


def take_pulses():
    return _hal.take_pulses()


def set_lock(active):
    _hal.set_lock(active)


def lock_output():
    """The simulated lock pin (True while a lock runs)."""
    return _hal.lock_output


def watchdog(ms):
    _hal.watchdog(ms)


def feed():
    _hal.feed()


def network_up():
    return _hal.network_up()


def mqtt_client(client_id, host, port, user, password, keepalive):
    return _hal.mqtt_client(client_id, host, port, user, password, keepalive)


def log(msg):
    if _sim.get("debug"):
        print(msg)


def reset():
    raise SystemExit("hal.reset()")


def schedule(step):
    global _task
    _task = step


def run_once():
    """One step of the scheduled task; the ms to wait before the next (None: no task)."""
    if _task is None:
        return None
    return _task()
