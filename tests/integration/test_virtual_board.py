"""The virtual board (the MicroPython VM's REPL on a pty) driven by the real mpremote."""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge import wire
from hil.virtual.board import VirtualBoard
from hil.virtual.firmware import DEVICE_DIR
from hil.virtual.meter import SimSettings
from hil.virtual.vm import vm_available
from tests.brokers import Broker


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    if not vm_available():
        pytest.fail("the MicroPython VM is missing: run `npm ci` in the repository root")
    with VirtualBoard(root=tmp_path / "flash") as vboard:
        yield vboard


def mpremote(board: VirtualBoard, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", board.port, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_mpremote_exec_runs_on_micropython(board: VirtualBoard) -> None:
    out = mpremote(board, "exec", "import sys; print(sys.implementation.name, 6 * 7)")
    assert out.strip() == "micropython 42"


def test_mpremote_copies_the_firmware_and_it_runs_after_a_reset(
    board: VirtualBoard, tmp_path: Path
) -> None:
    mpremote(board, "fs", "mkdir", "lib")
    mpremote(board, "fs", "cp", "-r", str(DEVICE_DIR / "ngmeter"), ":lib/")
    mpremote(board, "fs", "cp", str(DEVICE_DIR / "boot.py"), ":boot.py")
    listing = mpremote(board, "fs", "ls", "lib/ngmeter")
    assert "wire.py" in listing and "runner.py" in listing
    size = (DEVICE_DIR / "ngmeter" / "wire.py").stat().st_size
    assert f"{size} wire.py" in listing
    assert (board.files / "lib" / "ngmeter" / "wire.py").read_bytes() == (
        DEVICE_DIR / "ngmeter" / "wire.py"
    ).read_bytes()

    board.reset()  # a hard reset keeps the files, like flash
    out = mpremote(
        board,
        "exec",
        "from ngmeter import wire; print(wire.mac_hex(bytes(range(32)), {'kind': 'x', 'n': 1}))",
    )
    import hmac
    from hashlib import sha256

    expected = hmac.new(bytes(range(32)), b'{"kind":"x","n":1}', sha256).hexdigest()
    assert out.strip() == expected


def test_missing_files_raise_micropython_errnos(board: VirtualBoard, tmp_path: Path) -> None:
    code = (
        "import os, errno\n"
        "try:\n os.stat('nope')\n"
        "except OSError as e:\n print(e.errno == errno.ENOENT)"
    )
    out = mpremote(board, "exec", code)
    assert out.strip() == "True"
    mpremote(board, "fs", "cp", str(DEVICE_DIR / "boot.py"), ":x.py")
    mpremote(board, "fs", "rm", "x.py")
    assert not (board.files / "x.py").exists()
    copied = tmp_path / "back.py"
    mpremote(board, "fs", "cp", str(DEVICE_DIR / "main.py"), ":main.py")
    mpremote(board, "fs", "cp", ":main.py", str(copied))
    assert copied.read_bytes() == (DEVICE_DIR / "main.py").read_bytes()


def test_board_runs_its_firmware_against_a_broker(tmp_path: Path, mosquitto: Broker) -> None:
    """Installer flow on the virtual board: upload with mpremote, reset, the firmware reports
    and honours a lock; a reset in the middle of the lock keeps it; mpremote interrupts it."""
    if not vm_available():
        pytest.fail("the MicroPython VM is missing: run `npm ci` in the repository root")
    key = bytes(range(100, 132))
    gateway = f"gw-{tmp_path.name[-8:]}".replace("_", "-")
    config = {
        "device_id": "m-7",
        "gateway_id": gateway,
        "broker_host": mosquitto.host,
        "broker_port": mosquitto.port,
        "mac_key": key.hex(),
        "capacity_wh": 10000,
        "report_s": 1,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    seen: queue.Queue[tuple[str, bytes]] = queue.Queue()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_message = lambda c, u, m: seen.put((m.topic.rsplit("/", 1)[-1], m.payload))
    listener.connect(mosquitto.host, mosquitto.port)
    listener.subscribe(f"ngrid/{gateway}/m-7/#", qos=1)
    listener.loop_start()

    def wait_for(leaf: str, kind: type, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got_leaf, payload = seen.get(timeout=0.5)
            except queue.Empty:
                continue
            if got_leaf == leaf:
                if kind is bytes:
                    return payload
                message = wire.parse_meter_message(payload, key=key, meter="m-7")
                if isinstance(message, kind):
                    return message
        raise AssertionError(f"no {kind.__name__} on {leaf}")

    sim = SimSettings(soc_bp=9000, lock_export_w=3600)
    try:
        with VirtualBoard(root=tmp_path / "flash", sim=sim) as vboard:
            sources = sorted(str(p) for p in (DEVICE_DIR / "ngmeter").glob("*.py"))
            mpremote(vboard, "fs", "mkdir", "ngmeter")
            mpremote(vboard, "fs", "cp", *sources, ":ngmeter/")
            mpremote(vboard, "fs", "cp", str(DEVICE_DIR / "main.py"), ":main.py")
            mpremote(vboard, "fs", "cp", str(tmp_path / "config.json"), ":config.json")
            vboard.reset()
            assert wait_for("status", bytes) == b"online"
            assert wait_for("state", wire.Telemetry).soc_bp == 9000

            now = int(time.time())
            lock = wire.build_lock(
                key=key,
                meter="m-7",
                seq=1,
                ts=now,
                exp=now + 60,
                trade="t-1",
                wh=50,
                start=now,
                end=now + 8,
            )
            listener.publish(f"ngrid/{gateway}/m-7/cmd", lock, qos=1)
            assert wait_for("ack", wire.Ack).reason == "ok"

            vboard.reset()  # mid-lock: the lock is on flash and comes back
            state = json.loads((vboard.files / "state.json").read_text())
            assert [lk[0] for lk in state["locks"]] == ["t-1"]
            delivery = wait_for("state", wire.Delivery, timeout=30)
            assert delivery.trade == "t-1" and 0 < delivery.delivered_wh <= 50

            # mpremote interrupts the running firmware (Ctrl-C) and gets the REPL.
            out = mpremote(vboard, "exec", "import os; print('state.json' in os.listdir())")
            assert out.strip() == "True"
            assert wait_for("status", bytes) == b"offline"  # the will, once the program stops
            assert vboard.error is None
    finally:
        listener.loop_stop()
        listener.disconnect()


def test_raw_paste_request_is_declined(board: VirtualBoard) -> None:
    """The port's REPL cannot do raw paste: the board answers Ctrl-E 'A' Ctrl-A with R\\x00."""
    fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)

        def read_until(marker: bytes, timeout: float = 10.0) -> bytes:
            data = b""
            deadline = time.monotonic() + timeout
            while marker not in data:
                assert time.monotonic() < deadline, data
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    data += os.read(fd, 256)
            return data

        os.write(fd, b"\r\x03\x03")
        read_until(b">>> ")
        os.write(fd, b"\x01")
        read_until(b"raw REPL; CTRL-B to exit\r\n>")
        os.write(fd, b"\x05A\x01")
        assert read_until(b"R\x00") == b"R\x00"
        os.write(fd, b"print(6 * 7)\x04")
        assert b"OK42" in read_until(b"\x04>")
        os.write(fd, b"\x02")
    finally:
        os.close(fd)
