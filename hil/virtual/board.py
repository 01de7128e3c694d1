"""The virtual board: the MicroPython VM's REPL on a pseudo-terminal, for mpremote and the rig.

It stands in for an ESP32 on a USB serial port. ``mpremote connect /dev/pts/N exec ...``,
``fs cp``, ``fs ls`` and soft resets work against it; what it cannot do is what the WebAssembly
port cannot (no ``machine``, ``network`` or sockets, and a running program cannot be
interrupted with Ctrl-C because the VM runs on Node's only thread). Its filesystem is mirrored
to a host directory (``files``) after every raw-REPL execution, so it survives :meth:`reset`
(a hard reset: a new VM on the same files) the way flash does.

Use it as a context manager::

    with VirtualBoard() as board:
        subprocess.run(["mpremote", "connect", board.port, "exec", "print(1)"])
        (board.files / "main.py").exists()
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import termios
import tty
from pathlib import Path
from types import TracebackType
from typing import Self

from hil.virtual.firmware import REPO_ROOT
from hil.virtual.vm import JS_DIR, VmError, node_path, vm_available

__all__ = ["VirtualBoard"]


class VirtualBoard:
    """The VM's REPL on a pty. ``port`` is the pts path; ``files`` the board's filesystem.

    ``root``: the host directory that holds the board's files (a temporary one, removed on
    :meth:`stop`, when omitted). Raises VmError if Node or the VM package is missing or the VM
    does not come up within ``start_timeout`` seconds.
    """

    def __init__(self, *, root: Path | None = None, start_timeout: float = 20.0) -> None:
        self._own_root = root is None
        self.files = Path(tempfile.mkdtemp(prefix="ngrid-board-")) if root is None else root
        self.files.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self._master: int | None = None
        self._slave: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = ""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Open the pty and boot the VM on it."""
        if not vm_available():
            raise VmError("the MicroPython VM is not installed: run `npm ci` in the repository")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave, termios.TCSANOW)
        self.port = os.ttyname(self._slave)
        self._boot()
        return self

    def _boot(self) -> None:
        node = node_path()
        assert node is not None and self._master is not None
        self._proc = subprocess.Popen(
            [
                node,
                str(JS_DIR / "vm_board.mjs"),
                "--root",
                str(self.files),
                "--fd",
                str(self._master),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(self._master,),
            cwd=REPO_ROOT,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != b"ready":
            err = self._proc.stderr.read().decode() if self._proc.stderr else ""
            self._kill()
            raise VmError(f"the virtual board did not start: {line!r} {err[-2000:]}")

    def reset(self) -> None:
        """Hard reset: stop the VM (its files are saved) and boot a new one on the same pty."""
        self._kill()
        self._boot()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # asks the VM to save its files and exit
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def stop(self) -> None:
        """Stop the VM, close the pty, and remove a temporary ``files`` directory."""
        self._kill()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self._own_root:
            shutil.rmtree(self.files, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
