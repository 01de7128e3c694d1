"""A stand-in for MicroPython's ``machine`` module on an ESP32, for testing device/hal.py in the VM.

Simulates what hal.py talks to: a BMS answering Modbus RTU on the UART (holding registers in
``BMS``), pins whose IRQ handlers the test can fire (pulse inputs), an output pin (lock), the
watchdog and the IRQ mask. Real protocol bytes, no hardware.
"""

from ngmeter import modbus

BMS = {"unit": 1, "registers": {0x0100: 7350, 0x0101: 0xF8D8}, "silent": False, "corrupt": False}
PINS = {}
WDT_FEEDS = [0]
IRQ_STATE = {"disabled": 0}


class UART:
    def __init__(self, uart_id, baudrate=9600, tx=None, rx=None, timeout=0):
        self.reply = b""
        self.requests = []

    def any(self):
        return len(self.reply)

    def read(self, n=None):
        data = self.reply if n is None else self.reply[:n]
        self.reply = self.reply[len(data) :]
        return data or None

    def write(self, frame):
        frame = bytes(frame)
        self.requests.append(frame)
        if BMS["silent"]:
            return len(frame)
        unit, func = frame[0], frame[1]
        start = (frame[2] << 8) | frame[3]
        count = (frame[4] << 8) | frame[5]
        if unit != BMS["unit"] or func != 3 or modbus.read_request(unit, start, count) != frame:
            return len(frame)
        body = bytes([unit, 3, 2 * count])
        for reg in range(start, start + count):
            value = BMS["registers"].get(reg, 0)
            body += bytes([value >> 8, value & 0xFF])
        crc = modbus.crc16(body)
        if BMS["corrupt"]:
            crc ^= 1
        self.reply = body + bytes([crc & 0xFF, crc >> 8])
        return len(frame)


class Pin:
    IN = 0
    OUT = 1
    IRQ_FALLING = 2

    def __init__(self, number, mode=IN, value=None):
        self.number = number
        self.mode = mode
        self.level = value or 0
        self.handler = None
        PINS[number] = self

    def irq(self, trigger=None, handler=None):
        self.handler = handler

    def value(self, level=None):
        if level is None:
            return self.level
        self.level = level

    def pulse(self, n=1):
        for _ in range(n):
            self.handler(self)


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout

    def feed(self):
        WDT_FEEDS[0] += 1


def disable_irq():
    IRQ_STATE["disabled"] += 1
    return 1


def enable_irq(state):
    IRQ_STATE["disabled"] -= 1


def reset():
    raise SystemExit("machine.reset()")
