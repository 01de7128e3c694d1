"""Firmware scenarios that run unchanged on MicroPython (in the VM) and on CPython.

Each function takes JSON-able arguments and returns a JSON-able dict of what it observed; the
tests in this folder assert on those observations for both interpreters. The firmware runs
with hil/virtual/simhal.py as its hal (a simulated battery, clock and an in-memory broker).
"""

import gc
import json

try:
    import simhal  # in the VM: next to the firmware on the flash
except ImportError:
    from hil.virtual import simhal

from ngmeter import wire
from ngmeter.runner import Runner


def _write_config(root, cfg):
    with open(root + "/config.json", "w") as f:
        f.write(json.dumps(cfg))


def _store_view(store):
    return {
        "seq": store.seq,
        "seq_ceil": store.seq_ceil,
        "cmd_seq": store.cmd_seq,
        "import_wh": store.import_wh,
        "export_wh": store.export_wh,
        "locks": [list(lock) for lock in store.locks],
    }


def session(root, cfg, battery, epoch_s, actions, tmp_garbage=False):
    """Boot the firmware on ``root`` (its flash) and play ``actions``; return what it did.

    ``battery``: {capacity_wh, soc_bp, pv_w, load_w, lock_export_w}. Actions: ["cmd", payload]
    (deliver a command, then one step), ["burst", [payload, ...]] (all reach the broker back to
    back, then one step), ["steps", n, ms] (n times: advance ms, step),
    ["net", 0|1] (broker reachable), ["soc", bp]. ``tmp_garbage`` leaves a half-written
    state.tmp first, as a power cut in the middle of a save would.
    """
    if cfg is not None:
        _write_config(root, cfg)
    if tmp_garbage:
        with open(root + "/state.tmp", "w") as f:
            f.write('{"seq_ceil": 99999')
    clock = simhal.ManualClock(epoch_s)
    bat = simhal.SimBattery(
        battery["capacity_wh"],
        battery["soc_bp"],
        battery.get("pv_w", 0),
        battery.get("load_w", 0),
        lock_export_w=battery.get("lock_export_w", 2000),
    )
    broker = simhal.FakeBroker()
    hal = simhal.SimHal(clock, bat, lambda cid, *a: simhal.FakeClient(broker, cid))
    runner = Runner(hal, root)
    boot_store = _store_view(runner.store)
    cmd_topic = runner.meter.t_cmd
    runner.step()
    lock_seen = False
    for action in actions:
        op = action[0]
        if op == "cmd":
            broker.inject(cmd_topic, action[1].encode())
            runner.step()
        elif op == "burst":
            for payload in action[1]:
                broker.inject(cmd_topic, payload.encode())
            runner.step()
        elif op == "steps":
            for _ in range(action[1]):
                clock.advance(action[2])
                runner.step()
                lock_seen = lock_seen or hal.lock_output
        elif op == "net":
            broker.down = not action[1]
        elif op == "soc":
            bat.stored_wms = bat.capacity_wh * action[1] // 10000 * simhal.WMS_PER_WH
        else:
            raise ValueError("unknown action " + op)
    return {
        "published": [[t, p.decode(), r, q] for t, p, r, q in broker.published],
        "will": [broker.will[0], broker.will[1].decode(), broker.will[2], broker.will[3]],
        "subscriptions": broker.subscriptions,
        "connects": broker.connects,
        "lock_output": hal.lock_output,
        "lock_seen": lock_seen,
        "feeds": hal.feeds,
        "watchdog_ms": hal.watchdog_ms,
        "boot_store": boot_store,
        "store": _store_view(runner.store),
        "writes": runner.store.writes,
        "busy": runner.busy,
        "overflows": runner.overflows,
        "waiting": runner.inbox_len + runner.refused_len + len(broker.pending),
    }


def backoff(root, cfg, failures):
    """The reconnect delays (ms) the Runner picks after 0..failures-1 failed connects."""
    _write_config(root, cfg)
    clock = simhal.ManualClock()
    broker = simhal.FakeBroker()
    hal = simhal.SimHal(
        clock, simhal.SimBattery(1000, 5000), lambda cid, *a: simhal.FakeClient(broker, cid)
    )
    runner = Runner(hal, root)
    delays = []
    for n in range(failures):
        runner.failures = n
        delays.append(runner.backoff_ms())
    return {"delays": delays}


def golden(root, vectors):
    """The firmware's wire module against the golden vectors."""
    import binascii

    out = {"hmac": [], "messages": [], "invalid": [], "builtin_hmac": None}
    for v in vectors["hmac_sha256"]:
        key, data = binascii.unhexlify(v["key"]), binascii.unhexlify(v["data"])
        out["hmac"].append(binascii.hexlify(wire.hmac_sha256(key, data)).decode())
    for v in vectors["messages"]:
        key = binascii.unhexlify(v["key"])
        payload = v["payload"].encode()
        opened = wire.open_payload(key, payload)
        out["messages"].append(
            {
                "canonical": wire.canonical(v["fields"]).decode(),
                "mac": wire.mac_hex(key, v["fields"]),
                "payload": wire.seal(key, v["fields"]).decode(),
                "opened_equal": opened == v["fields"],
            }
        )
    for v in vectors["invalid"]:
        try:
            wire.open_payload(binascii.unhexlify(v["key"]), v["payload"].encode())
            out["invalid"].append("accepted")
        except wire.WireError as err:
            out["invalid"].append(err.reason)
    try:
        import hashlib
        import hmac

        out["builtin_hmac"] = [
            hmac.new(
                binascii.unhexlify(v["key"]), binascii.unhexlify(v["data"]), hashlib.sha256
            ).hexdigest()
            for v in vectors["hmac_sha256"]
        ]
    except ImportError:
        pass
    return out


_mem = {}


def memory_setup(root, cfg, commands):
    """Boot a Runner for the command-stream memory test; ``memory_step`` feeds it one command.

    gc.mem_alloc() is sampled at every publish and check_msg (mid-handling, when the garbage of
    the current command is at its peak) and after the collect that starts each step.
    """
    _write_config(root, cfg)
    clock = simhal.ManualClock()
    broker = simhal.FakeBroker()
    bat = simhal.SimBattery(cfg["capacity_wh"], 9000, 1000, 500)
    hal = simhal.SimHal(clock, bat, lambda cid, *a: simhal.FakeClient(broker, cid))
    runner = Runner(hal, root)
    runner.step()
    # The stream waits in a file (not on the heap) so that only the firmware is measured.
    with open(root + "/commands.txt", "w") as f:
        for c in commands:
            f.write(c + "\n")
    _mem.update(clock=clock, broker=broker, runner=runner, source=open(root + "/commands.txt"))  # noqa: SIM115
    _mem.update(i=0, peak=0, floor=[], handled=0, base=None)

    def sample():
        used = gc.mem_alloc()
        if used > _mem["peak"]:
            _mem["peak"] = used

    broker.on_io = sample
    return {}


def memory_step():
    gc.collect()
    used = gc.mem_alloc()
    if _mem["base"] is None:
        _mem["base"] = used
    if _mem["i"] % 100 == 0:
        _mem["floor"].append(used)
    runner, broker = _mem["runner"], _mem["broker"]
    broker.inject(runner.meter.t_cmd, _mem["source"].readline().rstrip("\n").encode())
    _mem["i"] += 1
    _mem["clock"].advance(100)
    runner.step()
    _mem["handled"] += 1
    del broker.published[:]


def memory_result():
    return {
        "baseline": _mem["base"],
        "peak": _mem["peak"],
        "after_collect": _mem["floor"],
        "handled": _mem["handled"],
        "busy": _mem["runner"].busy,
        "overflows": _mem["runner"].overflows,
        "refusals": _mem["runner"].meter.refusals,
    }


def config_errors(root, texts):
    """[key, message] for each config text, or ["", "ok"] when it is accepted."""
    from ngmeter import config

    out = []
    for text in texts:
        try:
            config.parse(text)
            out.append(["", "ok"])
        except config.ConfigError as err:
            out.append([err.key or "", str(err)])
    return out


def device_hal(root, cfg):
    """device/hal.py over the stand-in machine/network/umqtt modules (tests/vm/fakes)."""
    import hal
    import machine
    import network
    import ntptime
    from umqtt import simple

    hal.init({"hal": {"debug": False}, "wifi_ssid": "home", "wifi_password": "pw"})
    out = {"soc": hal.read_soc_bp(), "power": hal.read_power_w()}
    machine.PINS[34].pulse(5)  # import pulses
    machine.PINS[35].pulse(2)  # export pulses
    out["pulses"] = list(hal.take_pulses())
    out["pulses_again"] = list(hal.take_pulses())
    out["irq_balanced"] = machine.IRQ_STATE["disabled"] == 0
    hal.set_lock(True)
    out["lock_pin"] = machine.PINS[2].value()
    hal.set_lock(False)
    out["lock_pin_off"] = machine.PINS[2].value()
    hal.watchdog(30000)
    hal.feed()
    out["feeds"] = machine.WDT_FEEDS[0]
    out["network_up"] = hal.network_up()
    out["ntp_calls"] = ntptime.CALLS[0]
    network.STATE["connected"] = False
    out["network_down"] = hal.network_up()
    out["wifi_connects"] = network.STATE["connect_calls"]
    client = hal.mqtt_client("m-1", "10.0.0.2", 1883, "", "", 60)
    out["mqtt_args"] = list(client.args)
    out["mqtt_created"] = len(simple.CREATED)
    out["epoch_is_unix"] = hal.epoch() > 1600000000
    jitter = [hal.random_below(1000) for _ in range(20)]
    out["jitter_in_range"] = all(0 <= j < 1000 for j in jitter) and len(set(jitter)) > 1
    errors = []
    machine.BMS["corrupt"] = True
    try:
        hal.read_soc_bp()
    except ValueError as err:
        errors.append(str(err))
    machine.BMS["corrupt"] = False
    machine.BMS["silent"] = True
    try:
        hal.read_soc_bp()
    except OSError as err:
        errors.append(str(err))
    machine.BMS["silent"] = False
    machine.BMS["registers"][0x0100] = 10001
    try:
        hal.read_soc_bp()
    except ValueError as err:
        errors.append(str(err))
    out["errors"] = errors
    return out


def modbus_frames(root):
    """Frames and CRCs from ngmeter.modbus for known Modbus RTU examples."""
    from ngmeter import modbus

    return {
        "req_1_reg": modbus.read_request(1, 0, 1).hex(),
        "req_10_regs": modbus.read_request(1, 0, 10).hex(),
        "resp": modbus.parse_read_response(1, 1, bytes.fromhex("010302000179 84".replace(" ", ""))),
        "signed": [modbus.signed16(0xF8D8), modbus.signed16(0x0100)],
    }
