"""Modbus RTU framing for reading the battery's BMS over UART (pure; used by device/hal.py).

Implements function 0x03 (read holding registers) with the Modbus CRC-16 (poly 0xA001, init
0xFFFF, low byte first), per the Modbus over Serial Line spec v1.02, section 6.2.2.
"""


def crc16(data):
    """Modbus CRC-16 of ``data`` (int)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


def read_request(unit, register, count):
    """The request frame: read ``count`` holding registers from ``register`` of ``unit``."""
    frame = bytes([unit, 0x03, register >> 8, register & 0xFF, count >> 8, count & 0xFF])
    crc = crc16(frame)
    return frame + bytes([crc & 0xFF, crc >> 8])


def parse_read_response(unit, count, frame):
    """The registers (list of unsigned 16-bit ints) from a response; ValueError if it is bad."""
    if len(frame) != 5 + 2 * count:
        raise ValueError("modbus: response length %d" % len(frame))
    crc = crc16(frame[:-2])
    if frame[-2] != crc & 0xFF or frame[-1] != crc >> 8:
        raise ValueError("modbus: bad CRC")
    if frame[0] != unit or frame[1] != 0x03 or frame[2] != 2 * count:
        raise ValueError("modbus: unexpected header")
    return [(frame[3 + 2 * i] << 8) | frame[4 + 2 * i] for i in range(count)]


def signed16(value):
    """Two's-complement view of a 16-bit register."""
    return value - 0x10000 if value & 0x8000 else value
