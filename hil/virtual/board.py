"""The virtual board: the MicroPython VM's REPL on a pseudo-terminal, for mpremote and the rig.

It stands in for an ESP32 on a USB serial port: ``mpremote connect /dev/pts/N exec ...``,
``fs cp``, ``fs ls`` and soft resets work against it. Its filesystem is mirrored to a host
directory (``files``) after every raw-REPL execution and every step of main.py, so it survives
:meth:`~VirtualBoard.reset` (a hard reset: a new VM on the same files) the way flash does.

Like a board, it runs its own boot.py and main.py at every hard reset (and at a soft reset from
the friendly REPL) with ``hal`` = hil/virtual/vhal.py: a simulated battery, PV, load and lock
pin (``sim``), the host's clock, and MQTT bridged through this process to whatever broker the
board's config.json names. main.py hands its loop to the board (``hal.schedule``), which steps
it from Node's event loop, so Ctrl-C on the serial line (mpremote sends it) interrupts main.py
and leaves the REPL. What it cannot do is what the WebAssembly port cannot: no ``machine``,
``network`` or sockets of its own, and a script run from the REPL that never returns cannot be
interrupted (the VM runs on Node's only thread).

Use it as a context manager::

    with VirtualBoard() as board:
        subprocess.run(["mpremote", "connect", board.port, "exec", "print(1)"])
        (board.files / "main.py").exists()
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import termios
import threading
import tty
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from hil.virtual.firmware import REPO_ROOT
from hil.virtual.meter import SimSettings, _Relay
from hil.virtual.vm import JS_DIR, VmError, node_path, vm_available

__all__ = ["VirtualBoard"]


class VirtualBoard:
    """The VM's REPL on a pty. ``port`` is the pts path; ``files`` the board's filesystem.

    ``root``: the host directory that holds the board's files (a temporary one, removed on
    :meth:`stop`, when omitted). ``sim``: the simulated hardware main.py sees; ``run_main``:
    run main.py at boot (default True); ``seed``: the reconnect-jitter seed. Raises VmError
    if Node or the VM package is missing or the VM does not come up within ``start_timeout`` s.
    """

    def __init__(
        self,
        *,
        root: Path | None = None,
        sim: SimSettings | None = None,
        run_main: bool = True,
        seed: int = 1,
        start_timeout: float = 20.0,
    ) -> None:
        self._own_root = root is None
        self.sim = sim or SimSettings()
        self.run_main = run_main
        self.seed = seed
        self.error: str | None = None
        self._relay: _Relay | None = None
        self._relay_thread: threading.Thread | None = None
        self.files = Path(tempfile.mkdtemp(prefix="ngrid-board-")) if root is None else root
        self.files.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self._master: int | None = None
        self._slave: int | None = None
        self._proc: subprocess.Popen[str] | None = None
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
                "--sim",
                json.dumps(self._sim_json()),
                *([] if self.run_main else ["--no-main"]),
            ],
            text=True,
            bufsize=1,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(self._master,),
            cwd=REPO_ROOT,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "ready":
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self._kill()
            raise VmError(f"the virtual board did not start: {line!r} {err[-2000:]}")
        # From here on stdout carries the firmware's MQTT operations (simhal.BridgeClient).
        self._relay = _Relay(self._proc, self)
        self._relay_thread = threading.Thread(
            target=self._relay.run, name="virtual-board-mqtt", daemon=True
        )
        self._relay_thread.start()

    def _sim_json(self) -> dict[str, Any]:
        sim = self.sim
        return {
            "soc_bp": sim.soc_bp,
            "pv_w": sim.pv_w,
            "load_w": sim.load_w,
            "max_w": sim.max_w,
            "lock_export_w": sim.lock_export_w,
            "trace": [list(row) for row in sim.trace] if sim.trace else None,
            "seed": self.seed,
        }

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
        if self._relay_thread is not None:
            self._relay_thread.join(timeout=5)
        if self._relay is not None:
            self._relay.close()
        self._relay = self._relay_thread = None
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
