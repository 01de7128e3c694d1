# neighbourgrid meter: the hardware abstraction for an ESP32 on MicroPython.
#
# The only firmware module that imports machine, network or the MQTT client. Everything in
# ngmeter/ receives this module as ``hal`` and runs unchanged elsewhere (CPython host hal,
# the fake hal of the VM tests). Hardware, set by cfg["hal"] (defaults below):
# - battery state of charge and power from the BMS over UART, Modbus RTU function 0x03
#   (soc register in 0.01 % = basis points, power register signed W, import positive);
# - import/export energy from two pulse inputs (S0 outputs of the energy meter, wh_per_pulse);
# - a lock output pin (relay or the inverter's export-limit input), high while a lock runs;
# - the hardware watchdog (machine.WDT); WiFi (network.WLAN) and NTP for the clock.
import random
import time

import machine
import network
from ngmeter import modbus
from umqtt.simple import MQTTClient

DEFAULTS = {
    "uart": 1,
    "tx": 17,
    "rx": 16,
    "baud": 9600,
    "unit": 1,
    "soc_register": 0x0100,
    "power_register": 0x0101,
    "import_pin": 34,
    "export_pin": 35,
    "wh_per_pulse": 1,
    "lock_pin": 2,
    "debug": False,
}
UNIX_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

_hw = {}
_pulses = [0, 0]
_wdt = None
_wlan = None
_cfg = {}
_clock_set = False


def _count_import(pin):
    _pulses[0] += 1


def _count_export(pin):
    _pulses[1] += 1


def init(cfg):
    global _cfg, _wlan
    _cfg = dict(DEFAULTS)
    _cfg.update(cfg["hal"])
    _cfg["wifi_ssid"], _cfg["wifi_password"] = cfg["wifi_ssid"], cfg["wifi_password"]
    _hw["uart"] = machine.UART(
        _cfg["uart"], baudrate=_cfg["baud"], tx=_cfg["tx"], rx=_cfg["rx"], timeout=200
    )
    for name, handler in (("import_pin", _count_import), ("export_pin", _count_export)):
        pin = machine.Pin(_cfg[name], machine.Pin.IN)
        pin.irq(trigger=machine.Pin.IRQ_FALLING, handler=handler)
        _hw[name] = pin
    _hw["lock"] = machine.Pin(_cfg["lock_pin"], machine.Pin.OUT, value=0)
    _wlan = network.WLAN(network.STA_IF)
    _wlan.active(True)


ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add
sleep_ms = time.sleep_ms


def epoch():
    return time.time() + UNIX_OFFSET


def random_below(n):
    # The ESP32 port seeds random from its hardware RNG at boot.
    return random.getrandbits(30) % n if n > 0 else 0


def _read_registers(register, count):
    uart = _hw["uart"]
    while uart.any():
        uart.read()
    uart.write(modbus.read_request(_cfg["unit"], register, count))
    frame = uart.read(5 + 2 * count)
    if not frame:
        raise OSError("BMS did not answer")
    return modbus.parse_read_response(_cfg["unit"], count, frame)


def read_soc_bp():
    soc = _read_registers(_cfg["soc_register"], 1)[0]
    if soc > 10000:
        raise ValueError("BMS reported SoC %d bp" % soc)
    return soc


def read_power_w():
    return modbus.signed16(_read_registers(_cfg["power_register"], 1)[0])


def take_pulses():
    state = machine.disable_irq()
    imp, exp = _pulses[0], _pulses[1]
    _pulses[0] = _pulses[1] = 0
    machine.enable_irq(state)
    per = _cfg["wh_per_pulse"]
    return imp * per, exp * per


def set_lock(active):
    _hw["lock"].value(1 if active else 0)


def watchdog(ms):
    global _wdt
    _wdt = machine.WDT(timeout=ms)


def feed():
    if _wdt is not None:
        _wdt.feed()


def network_up():
    global _clock_set
    if not _wlan.isconnected():
        if _cfg["wifi_ssid"] and _wlan.status() != network.STAT_CONNECTING:
            _wlan.connect(_cfg["wifi_ssid"], _cfg["wifi_password"])
        return False
    if not _clock_set:
        try:
            import ntptime

            ntptime.settime()
            _clock_set = True
        except Exception:
            return False
    return True


def mqtt_client(client_id, host, port, user, password, keepalive):
    return MQTTClient(
        client_id,
        host,
        port=port,
        user=user or None,
        password=password or None,
        keepalive=keepalive,
    )


def log(msg):
    if _cfg.get("debug"):
        print(msg)


def reset():
    machine.reset()
