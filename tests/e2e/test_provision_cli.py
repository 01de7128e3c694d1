"""`ngrid provision ...` as an installer types it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.unit.provisioning.test_flash import make_image

NGRID = [sys.executable, "-m", "neighbourgrid.cli"]


def ngrid(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NGRID_INVENTORY"}
    return subprocess.run(
        [*NGRID, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def test_gateway_then_export_then_list(tmp_path: Path) -> None:
    first = ngrid("provision", "gateway", "--name", "gw1", "--broker-host", "pi.lan", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "bundle created" in first.stdout
    again = ngrid("provision", "gateway", "--name", "gw1", "--broker-host", "pi.lan", cwd=tmp_path)
    assert again.returncode == 0 and "bundle refreshed" in again.stdout
    key = [line for line in first.stdout.splitlines() if "signing key" in line]
    assert key and key == [line for line in again.stdout.splitlines() if "signing key" in line]
    registration = json.loads((tmp_path / "gateway-gw1/registration.json").read_text())
    assert registration["gateway_id"] == "gw1"

    export = ngrid("provision", "export", "--gateway", "gw1", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (
        json.loads((tmp_path / "gateway-gw1/root/etc/ngrid/meters.json").read_text())["meters"]
        == []
    )

    listing = ngrid("provision", "list", cwd=tmp_path)
    assert listing.returncode == 0 and "gateway gw1" in listing.stdout


def test_errors_are_one_line_with_what_to_do(tmp_path: Path) -> None:
    unknown = ngrid("provision", "export", "--gateway", "nope", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "ngrid: error: gateway 'nope' is not in the inventory ngrid-inventory.json (known: none "
        "yet); run `ngrid provision gateway --name nope` first, or pass --inventory"
    ]
    bad_name = ngrid("provision", "gateway", "--name", "GW 1", cwd=tmp_path)
    assert bad_name.returncode == 2 and "not usable" in bad_name.stderr
    assert "Traceback" not in unknown.stderr + bad_name.stderr


def test_meter_refuses_bad_input_before_touching_a_board(tmp_path: Path) -> None:
    assert ngrid("provision", "gateway", "--name", "gw1", cwd=tmp_path).returncode == 0
    image = make_image(tmp_path / "mp.bin")
    base = ["provision", "meter", "--owner", "no-4", "--capacity-wh", "10000"]
    # A port that does not exist would fail with "no such serial port"; each case below must
    # fail earlier, with its own message.
    port = ["--port", str(tmp_path / "ttyUSB7")]
    cases = {
        "gateway 'gw9' is not in the inventory": [*base, *port, "--gateway", "gw9"],
        "--image needs --sha256": [*base, *port, "--gateway", "gw1", "--image", str(image)],
        "has SHA-256": [
            *base,
            *port,
            "--gateway",
            "gw1",
            "--image",
            str(image),
            "--sha256",
            "0" * 64,
        ],
        "once per --port": [
            *base,
            *port,
            "--port",
            "/dev/null2",
            "--owner",
            "a",
            "--owner",
            "b",
            "--owner",
            "c",
            "--gateway",
            "gw1",
        ],
        "--erase only makes sense": [*base, *port, "--gateway", "gw1", "--erase"],
    }
    for expected, args in cases.items():
        result = ngrid(*args, cwd=tmp_path)
        assert result.returncode != 0, expected
        assert expected in result.stderr, (expected, result.stderr)
        assert "Traceback" not in result.stderr


def test_meter_on_a_missing_port_says_check_the_cable(tmp_path: Path) -> None:
    assert ngrid("provision", "gateway", "--name", "gw1", cwd=tmp_path).returncode == 0
    device = tmp_path / "device"
    device.mkdir()
    (device / "main.py").write_text("print('meter')\n")
    image = make_image(tmp_path / "mp.bin")
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    result = ngrid(
        "provision",
        "meter",
        "--port",
        str(tmp_path / "ttyUSB7"),
        "--gateway",
        "gw1",
        "--owner",
        "no-4",
        "--capacity-wh",
        "10000",
        "--device-dir",
        str(device),
        "--image",
        str(image),
        "--sha256",
        digest,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "no such serial port: check the USB cable" in result.stderr
    assert "Traceback" not in result.stderr
    inventory = json.loads((tmp_path / "ngrid-inventory.json").read_text())
    assert inventory.get("meters", {}) == {}


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = ngrid("provision", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("gateway", "meter", "export", "list"):
        assert command in result.stdout


def test_meter_on_the_virtual_board_end_to_end(tmp_path: Path) -> None:
    """The installer's command on a board that runs MicroPython (the virtual board)."""
    from hil.virtual.board import VirtualBoard

    assert ngrid("provision", "gateway", "--name", "gw1", cwd=tmp_path).returncode == 0
    with VirtualBoard(run_main=False) as board:
        args = [
            "provision",
            "meter",
            "--port",
            board.port,
            "--gateway",
            "gw1",
            "--owner",
            "no-4",
            "--capacity-wh",
            "13500",
            "--reserve-bp",
            "2500",
        ]
        first = ngrid(*args, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert "upload: 100%" in first.stderr  # the progress bar (tqdm writes to stderr)
        assert "(new identity)" in first.stdout and "self-test passed" in first.stdout
        again = ngrid(*args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "(kept its identity)" in again.stdout
        meter_id = first.stdout.split("meter ", 1)[1].split()[0]
        assert f"meter {meter_id} " in again.stdout
        wrong = ngrid(*args, "--chip", "esp32s3", cwd=tmp_path)
        assert wrong.returncode == 1
        assert "not esp32s3" in wrong.stderr and "Traceback" not in wrong.stderr
    listing = ngrid("provision", "list", cwd=tmp_path)
    assert f"meter {meter_id}" in listing.stdout and "self-test passed" in listing.stdout
    refreshed = ngrid("provision", "gateway", "--name", "gw1", cwd=tmp_path)
    assert "1 in the password file and ACL" in refreshed.stdout
    acl = (tmp_path / "gateway-gw1/root/etc/mosquitto/ngrid/acl").read_text()
    assert f"topic write ngrid/gw1/{meter_id}/state" in acl
