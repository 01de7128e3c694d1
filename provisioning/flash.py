"""esptool for the installer: check a MicroPython image, merge parts, detect the chip, flash.

Everything goes through esptool's own Python API (``esptool.cmds``, ``esptool.bin_image``,
``esptool.targets``); this module adds the installer's checks and turns esptool's failures into
:mod:`provisioning.errors`.

* :func:`check_image` -- the SHA-256 the installer was given must match, the file must be an ESP
  firmware image (magic 0xE9, valid checksum and appended SHA-256 digest of its first image) and
  names its chip family in the extended header.
* :func:`flash_offset` -- where a merged image goes: the chip's bootloader offset, 0x1000 on
  ESP32 and ESP32-S2, 0x0 on ESP32-S3/C3/C6 (``BOOTLOADER_FLASH_OFFSET`` in esptool's targets).
* :func:`merge_image` -- bootloader, partition table and app into one file (esptool merge-bin).
* :func:`detect` / :func:`flash` -- talk to the ROM bootloader on a serial port.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial
from esp_pylib.logger import EspLog, EspLogBase
from esptool import cmds
from esptool.bin_image import LoadFirmwareImage
from esptool.loader import ESPLoader
from esptool.targets import CHIP_DEFS, ROM_LIST
from esptool.util import FatalError

from provisioning.board import open_port_check
from provisioning.errors import (
    BoardBusyError,
    ChecksumMismatchError,
    FlashError,
    ImageError,
    NoBoardError,
    ProvisionError,
    WrongChipError,
)

__all__ = [
    "ImageInfo",
    "check_image",
    "chip_key",
    "detect",
    "flash",
    "flash_offset",
    "merge_image",
]

Progress = Callable[[int], None]


def chip_key(name: str) -> str:
    """esptool's key for a chip name: ``"ESP32-S3"`` -> ``"esp32s3"``.

    Raises :class:`ImageError` for a chip esptool does not know.
    """
    key = re.sub(r"[-_() ]", "", name.lower())
    if key not in CHIP_DEFS:
        known = ", ".join(sorted(CHIP_DEFS))
        raise ImageError(f"unknown chip {name!r} (esptool knows {known})")
    return key


def flash_offset(chip: str) -> int:
    """Flash address of a merged image (its bootloader) for ``chip``: 0x1000 or 0x0 (bytes)."""
    return int(CHIP_DEFS[chip_key(chip)].BOOTLOADER_FLASH_OFFSET)


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """A checked firmware image: its bytes, SHA-256, chip family and flash offset."""

    path: Path
    data: bytes
    sha256: str
    chip: str  # esptool key, e.g. "esp32"
    chip_name: str  # e.g. "ESP32"
    offset: int

    @property
    def size(self) -> int:
        return len(self.data)


def _image_chip(data: bytes, path: Path) -> str:
    if len(data) < 24 or data[0] != ESPLoader.ESP_IMAGE_MAGIC:
        raise ImageError(
            f"{path} is not an ESP32 firmware image (it does not start with 0xE9): download "
            "the .bin for your board from micropython.org/download"
        )
    chip_id = int.from_bytes(data[12:14], "little")
    for rom in ROM_LIST:
        if chip_id == rom.IMAGE_CHIP_ID and rom.CHIP_NAME != "ESP8266":
            return chip_key(rom.CHIP_NAME)
    raise ImageError(f"{path} names an unknown chip (id {chip_id}) in its header")


def check_image(path: Path, *, sha256: str | None) -> ImageInfo:
    """Read and check the image at ``path``; ``sha256`` is the hex digest the installer was given.

    Raises :class:`ChecksumMismatchError` if the digest differs (checked first: a wrong
    download should be reported as such), :class:`ImageError` if the file is missing, not an
    ESP image, or its first image's checksum or digest is wrong.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"cannot read image {path}: {err.strerror}") from err
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None:
        expected = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise ImageError(f"--sha256 {sha256!r} is not 64 hex digits")
        if actual != expected:
            raise ChecksumMismatchError(
                f"{path} has SHA-256 {actual}, not the expected {expected}: the download is "
                "corrupt or it is a different file; download it again",
                expected=expected,
                actual=actual,
            )
    chip = _image_chip(data, path)
    try:
        image = LoadFirmwareImage(chip, data)
    except (FatalError, ValueError, IndexError) as err:
        raise ImageError(f"{path} is not a valid {chip} image: {err}") from err
    if image.checksum != image.calculate_checksum():
        raise ImageError(f"{path} is damaged: its image checksum does not match its contents")
    stored = getattr(image, "stored_digest", None)
    if stored is not None and stored != image.calc_digest:
        raise ImageError(f"{path} is damaged: its appended SHA-256 digest does not match")
    return ImageInfo(
        path=path,
        data=data,
        sha256=actual,
        chip=chip,
        chip_name=CHIP_DEFS[chip].CHIP_NAME,
        offset=flash_offset(chip),
    )


def merge_image(parts: Sequence[tuple[int, Path]], *, chip: str, out: Path) -> ImageInfo:
    """Merge ``(flash address, file)`` parts into one image at ``out`` with esptool merge-bin.

    The result starts at the chip's bootloader offset, so it is flashed at
    :func:`flash_offset`. Returns the checked result. Raises :class:`ImageError` if esptool
    refuses the parts (overlap, unreadable file).
    """
    key = chip_key(chip)
    try:
        with _esptool_log():
            cmds.merge_bin(
                [(address, str(path)) for address, path in parts],
                key,
                output=str(out),
                target_offset=flash_offset(key),
            )
    except (FatalError, OSError) as err:
        raise ImageError(f"cannot merge the image parts: {err}") from err
    return check_image(out, sha256=None)


# -- talking to the ROM bootloader ----------------------------------------------------------------


class _QuietLogger(EspLogBase):
    """esptool's output collected per thread, its progress bars forwarded to a callback."""

    def __init__(self) -> None:
        self.local = threading.local()

    def _lines(self) -> list[str]:
        if not hasattr(self.local, "lines"):
            self.local.lines = []
        lines: list[str] = self.local.lines
        return lines

    def print(self, *args: Any, **kwargs: Any) -> None:
        self._lines().append(" ".join(str(a) for a in args))

    def note(self, message: str) -> None:
        self.print(message)

    def hint(self, message: str) -> None:
        self.print(message)

    def warn(self, *args: Any, suggestion: str | None = None) -> None:
        self.print("warning:", *args)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        self.print("error:", *args)

    def debug(self, *args: Any) -> None:
        pass

    def set_verbosity(self, mode: int | str) -> None:
        pass

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        callback: Callable[[int, int], None] | None = getattr(self.local, "progress", None)
        if callback is not None:
            callback(cur_iter, total_iters)


_LOGGER = _QuietLogger()
_LOGGER_LOCK = threading.Lock()


@contextlib.contextmanager
def _esptool_log(progress: Callable[[int, int], None] | None = None) -> Iterator[list[str]]:
    with _LOGGER_LOCK:
        # esptool logs through one process-wide singleton; ours keeps the terminal for our bars.
        if EspLog.instance is not _LOGGER:
            EspLog.instance = _LOGGER
    _LOGGER.local.lines = []
    _LOGGER.local.progress = progress
    try:
        yield _LOGGER._lines()
    finally:
        _LOGGER.local.progress = None


def _serial_error(err: BaseException, port: str) -> ProvisionError:
    text = str(err)
    if "No such file" in text or "[Errno 2]" in text:
        return NoBoardError(
            "no such serial port: check the USB cable (a charge-only cable shows no port)",
            port=port,
        )
    if "exclusively lock" in text or "busy" in text.lower() or "[Errno 11]" in text:
        return BoardBusyError(
            "the port is in use by another program (a serial monitor, mpremote, another ngrid "
            "run): close it and try again",
            port=port,
        )
    return FlashError(f"serial port error: {text}", port=port)


def detect(
    port: str,
    *,
    expect: str | None = None,
    connect_attempts: int = 3,
    connect_mode: str = "default-reset",
) -> ESPLoader:
    """Connect to the ROM bootloader on ``port`` and return esptool's loader for its chip.

    ``port`` is a serial device or any pyserial URL (``socket://host:port`` for the simulated
    peer in the tests). With ``expect`` (a chip name or key), a different chip raises
    :class:`WrongChipError`. Raises :class:`NoBoardError` if the bootloader never answers,
    :class:`BoardBusyError` if the port is held by another program. Close it with
    ``loader._port.close()`` (or use :func:`flash`, which does).
    """
    if "://" not in port:
        open_port_check(port)  # tell "no such port" from "busy" before esptool blurs them
    with _esptool_log() as lines:
        try:
            esp = cmds.detect_chip(
                port, connect_mode=connect_mode, connect_attempts=connect_attempts
            )
        except serial.SerialException as err:
            raise _serial_error(err, port) from err
        except FatalError as err:
            text = str(err)
            if "Failed to connect" in text or "No serial data received" in text:
                raise NoBoardError(
                    "no ESP32 bootloader answers: hold the BOOT button, tap EN/RST, release "
                    "BOOT, and run the command again (some boards need a different USB cable)",
                    port=port,
                ) from err
            detail = " / ".join(lines[-3:])
            raise FlashError(f"chip detection failed: {text} {detail}".strip(), port=port) from err
    if expect is not None and chip_key(esp.CHIP_NAME) != chip_key(expect):
        found = esp.CHIP_NAME
        wanted = CHIP_DEFS[chip_key(expect)].CHIP_NAME
        esp._port.close()
        raise WrongChipError(
            f"the board is an {found}, but the image is for {wanted}: download the MicroPython "
            f"image for {found} boards",
            port=port,
            found=found,
            expected=wanted,
        )
    return esp


def flash(
    port: str,
    image: ImageInfo,
    *,
    erase: bool = False,
    progress: Progress | None = None,
    connect_attempts: int = 3,
    connect_mode: str = "default-reset",
    use_stub: bool = True,
) -> str:
    """Detect the chip on ``port``, optionally erase it, write ``image`` at its offset, verify it
    (esptool's MD5 check) and hard-reset into MicroPython. Returns the chip name.

    ``progress(n)`` receives the bytes written since its last call. Raises the errors of
    :func:`detect` (the chip must match the image), and :class:`FlashError` if erasing or
    writing fails.
    """
    esp = detect(
        port, expect=image.chip, connect_attempts=connect_attempts, connect_mode=connect_mode
    )
    done = 0

    def on_progress(current: int, total: int) -> None:
        nonlocal done
        if progress is not None and current > done:
            progress(current - done)
        done = max(done, current)

    try:
        with _esptool_log(on_progress) as lines:
            try:
                if use_stub:
                    esp = cmds.run_stub(esp)
                cmds.attach_flash(esp)
                if erase:
                    cmds.erase_flash(esp)
                cmds.write_flash(esp, [(image.offset, image.data)], flash_size="keep")
                cmds.reset_chip(esp, "hard-reset")
            except (FatalError, serial.SerialException, OSError) as err:
                detail = " / ".join(lines[-3:])
                raise FlashError(
                    f"writing the flash failed: {err} ({detail}). Re-run the command; if it "
                    "fails again, try --erase, a shorter cable or another USB port",
                    port=port,
                ) from err
    finally:
        with contextlib.suppress(Exception):
            esp._port.close()
    if progress is not None and image.size > done:
        progress(image.size - done)
    return str(esp.CHIP_NAME)
