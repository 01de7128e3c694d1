"""Run firmware scenarios (tests/vm/scenarios.py) in the MicroPython VM and on CPython.

The ``meter_board`` fixture is a board with a flash that survives "reboots": each ``run()`` is a
fresh interpreter (a new Node process for the VM) on the same flash, like a power cycle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil.virtual.firmware import DEVICE_DIR, import_firmware
from hil.virtual.vm import flash_files, run_in_vm, vm_available

SCENARIOS = Path(__file__).with_name("scenarios.py")
FAKES = Path(__file__).with_name("fakes")
STATE_FILES = ("config.json", "state.json", "state.tmp")  # what a reboot keeps


class VmBoard:
    """The firmware in the MicroPython VM; state files carried from one boot to the next."""

    backend = "vm"

    def __init__(self) -> None:
        self.state: dict[str, str] = {}

    def run(self, scenario: str, **kwargs: Any) -> Any:
        files = flash_files(extra={"scenarios.py": SCENARIOS.read_text(), **self.state})
        script = (
            "import sys, json\n"
            "sys.path.insert(0, '/flash')\n"
            "import scenarios\n"
            f"_args = json.loads({json.dumps(json.dumps(kwargs))})\n"
            f"_r = scenarios.{scenario}('/flash', **_args)\n"
            "f = open('/result.json', 'w'); f.write(json.dumps(_r)); f.close()\n"
        )
        result = run_in_vm(files=files, script=script)
        self._carry(result.files)
        return result.result

    def run_with_hal(self, scenario: str, **kwargs: Any) -> Any:
        """Run a scenario with device/hal.py and the stand-in hardware modules (fakes/)."""
        extra = {str(p.relative_to(FAKES)): p.read_text() for p in sorted(FAKES.rglob("*.py"))}
        saved = self.state
        self.state = {**self.state, **extra, "hal.py": (DEVICE_DIR / "hal.py").read_text()}
        try:
            return self.run(scenario, **kwargs)
        finally:
            self.state = saved

    def run_loop(self, setup: str, count: int, step: str, finish: str, **kwargs: Any) -> Any:
        """``setup(**kwargs)`` once, ``step()`` count times (separate executions), ``finish()``."""
        files = flash_files(extra={"scenarios.py": SCENARIOS.read_text(), **self.state})
        script = (
            "import sys, json\n"
            "sys.path.insert(0, '/flash')\n"
            "import scenarios\n"
            f"scenarios.{setup}('/flash', **json.loads({json.dumps(json.dumps(kwargs))}))\n"
        )
        final = (
            f"_r = scenarios.{finish}()\n"
            "f = open('/result.json', 'w'); f.write(json.dumps(_r)); f.close()\n"
        )
        result = run_in_vm(
            files=files, script=script, repeat=(f"scenarios.{step}()", count), finish=final
        )
        self._carry(result.files)
        return result.result

    def _carry(self, files: dict[str, str]) -> None:
        self.state = {
            path.removeprefix("/flash/"): text
            for path, text in files.items()
            if path.removeprefix("/flash/") in STATE_FILES
        }


class CPythonBoard:
    """The same firmware files imported by CPython; the flash is a temporary directory."""

    backend = "cpython"

    def __init__(self, root: Path) -> None:
        self.root = root
        import_firmware("ngmeter.runner")

    def run(self, scenario: str, **kwargs: Any) -> Any:
        import importlib.util

        spec = importlib.util.spec_from_file_location("ngmeter_scenarios", SCENARIOS)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = getattr(module, scenario)(str(self.root), **kwargs)
        # What a VM run returns went through JSON; do the same here.
        return json.loads(json.dumps(result))


@pytest.fixture(params=["cpython", "vm"])
def meter_board(request: pytest.FixtureRequest, tmp_path: Path) -> VmBoard | CPythonBoard:
    if request.param == "vm":
        if not vm_available():
            pytest.fail("the MicroPython VM is missing: run `npm ci` in the repository root")
        return VmBoard()
    return CPythonBoard(tmp_path)


@pytest.fixture
def vm_board() -> VmBoard:
    if not vm_available():
        pytest.fail("the MicroPython VM is missing: run `npm ci` in the repository root")
    return VmBoard()


@pytest.fixture
def fresh_tmp(tmp_path: Path) -> Callable[[], Path]:
    def make() -> Path:
        path = tmp_path / "x"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    return make
