"""A simulated ESP32-family serial bootloader for testing esptool-driven code without a chip.

What it stands in for: the ROM download mode of an ESP32 (or ESP32-S3/C3) on the other end of a
USB serial adapter, and -- after esptool uploads its flasher stub into RAM -- that stub. It
speaks esptool's real wire protocol over TCP (pyserial's ``socket://`` URL, which esptool opens
like any port): SLIP framing (0xC0 delimiters, 0xDB escapes), 8-byte command headers, SYNC
(answered eight times, as the ROM does), READ_REG/WRITE_REG (a register file; the chip-detect
magic at 0x40001000 for ESP32, GET_SECURITY_INFO with a chip id for the S3/C3), MEM_BEGIN/
MEM_DATA/MEM_END (after which it greets "OHAI" and answers as the stub, with 2 status bytes
instead of the ROM's 4), SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE, ERASE_FLASH,
FLASH_BEGIN/DATA/END, FLASH_DEFL_BEGIN/DATA/END (zlib-inflated into a 4 MB flash array) and
SPI_FLASH_MD5. What it does not do: run code, time anything, or model electrical resets (DTR/RTS
are no-ops on a socket). ``silent=True`` models a board that is not in download mode,
``corrupt=True`` a link that flips a bit in each flash write.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import zlib
from dataclasses import dataclass, field

__all__ = ["RomPeer"]

ESP32_MAGIC = 0x00F01D83
CHIP_IDS = {"esp32s3": 9, "esp32c3": 5}
SPI_BASE = {"esp32": 0x3FF42000, "esp32s3": 0x60002000, "esp32c3": 0x60002000}
FLASH_ID_REG = {"esp32": 0x3FF42080, "esp32s3": 0x60002058, "esp32c3": 0x60002058}


@dataclass
class RomPeer:
    chip: str = "esp32"
    flash_size: int = 4 * 1024 * 1024
    silent: bool = False
    corrupt: bool = False  # flip one bit of every flash write: a flaky cable
    flash: bytearray = field(init=False)
    ops: list[int] = field(default_factory=list, init=False)
    erased: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.flash = bytearray(b"\x00" * self.flash_size)  # not erased: erase sets 0xFF
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rom-peer", daemon=True)
        self.regs: dict[int, int] = {FLASH_ID_REG[self.chip]: 0x001640EF}  # 4 MB flash
        self.stub = False

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self._server.getsockname()[1]}"

    def __enter__(self) -> RomPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()

    # -- transport --------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.2)
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        buf = bytearray()
        frame: bytearray | None = None
        escape = False
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            for byte in bytes(buf):
                if frame is None:
                    if byte == 0xC0:
                        frame = bytearray()
                    continue
                if byte == 0xC0:
                    if frame:
                        self._handle(conn, bytes(frame))
                        frame = None
                    continue  # 0xC0 0xC0: an empty frame, keep the new one open
                if escape:
                    frame.append({0xDC: 0xC0, 0xDD: 0xDB}[byte])
                    escape = False
                elif byte == 0xDB:
                    escape = True
                else:
                    frame.append(byte)
            buf.clear()

    @staticmethod
    def _slip(data: bytes) -> bytes:
        return b"\xc0" + data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"

    def _reply(
        self, conn: socket.socket, op: int, *, val: int = 0, data: bytes = b"", error: int = 0
    ) -> None:
        status = bytes([1 if error else 0, error]) + (b"" if self.stub else b"\x00\x00")
        body = data + status
        conn.sendall(self._slip(struct.pack("<BBHI", 1, op, len(body), val) + body))

    # -- commands ---------------------------------------------------------------------------------
    def _handle(self, conn: socket.socket, frame: bytes) -> None:
        if self.silent or len(frame) < 8 or frame[0] != 0:
            return
        _, op, length, _chk = struct.unpack("<BBHI", frame[:8])
        data = frame[8 : 8 + length]
        self.ops.append(op)
        if op == 0x08:  # SYNC: the ROM answers eight times
            for _ in range(8):
                self._reply(conn, op, val=0 if self.stub else 0x20120707)
        elif op == 0x14:  # GET_SECURITY_INFO
            if self.chip == "esp32":
                self._reply(conn, op, error=0x05)  # not supported by the ESP32 ROM
            else:
                info = struct.pack("<IBBBBBBBBII", 0, 0, *([0] * 7), CHIP_IDS[self.chip], 0)
                self._reply(conn, op, data=info)
        elif op == 0x0A:  # READ_REG
            (addr,) = struct.unpack("<I", data[:4])
            value = ESP32_MAGIC if addr == 0x40001000 and self.chip == "esp32" else 0
            self._reply(conn, op, val=self.regs.get(addr, value))
        elif op == 0x09:  # WRITE_REG
            addr, value = struct.unpack("<II", data[:8])
            if addr == SPI_BASE[self.chip]:
                self.regs[addr] = 0  # SPI_CMD_REG: the SPI command "runs" at once and clears
            elif addr != FLASH_ID_REG[self.chip]:  # W0 keeps answering with the flash id
                self.regs[addr] = value
            self._reply(conn, op)
        elif op in (0x05, 0x07):  # MEM_BEGIN, MEM_DATA: the stub's text and data into RAM
            self._reply(conn, op)
        elif op == 0x06:  # MEM_END: "run" the stub
            self._reply(conn, op)
            self.stub = True
            conn.sendall(self._slip(b"OHAI"))
        elif op in (0x0B, 0x0D, 0x0F):  # SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE
            self._reply(conn, op)
        elif op == 0xD0:  # ERASE_FLASH (stub only)
            if not self.stub:
                self._reply(conn, op, error=0x05)
                return
            self.flash[:] = b"\xff" * self.flash_size
            self.erased = True
            self._reply(conn, op)
        elif op in (0x02, 0x10):  # FLASH_BEGIN, FLASH_DEFL_BEGIN
            _size, _blocks, _block_size, offset = struct.unpack("<IIII", data[:16])
            self._write_at = offset
            self._inflate = zlib.decompressobj() if op == 0x10 else None
            self._reply(conn, op)
        elif op in (0x03, 0x11):  # FLASH_DATA, FLASH_DEFL_DATA
            size, _seq = struct.unpack("<II", data[:8])
            payload = data[16 : 16 + size]
            if self._inflate is not None:
                payload = self._inflate.decompress(payload)
            if self.corrupt and payload:
                payload = bytes([payload[0] ^ 0x01]) + payload[1:]
            end = self._write_at + len(payload)
            self.flash[self._write_at : end] = payload
            self._write_at = end
            self._reply(conn, op)
        elif op in (0x04, 0x12):  # FLASH_END, FLASH_DEFL_END
            self._reply(conn, op)
        elif op == 0x13:  # SPI_FLASH_MD5
            addr, size = struct.unpack("<II", data[:8])
            digest = hashlib.md5(self.flash[addr : addr + size]).digest()
            self._reply(conn, op, data=digest if self.stub else digest.hex().encode())
        else:
            self._reply(conn, op, error=0x05)
