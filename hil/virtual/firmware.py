"""Where the meter firmware lives and how the host loads it.

The firmware is the ``device/`` tree: ``boot.py``, ``main.py`` and ``hal.py`` at the top (as on
the board's flash) and the ``ngmeter`` package, which runs unchanged on MicroPython and CPython.
:func:`import_firmware` puts ``device/`` on ``sys.path`` so CPython imports the very same files;
:func:`firmware_files` lists them for upload into the MicroPython VM or onto a board.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Final

__all__ = ["DEVICE_DIR", "REPO_ROOT", "firmware_files", "import_firmware"]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DEVICE_DIR: Final = REPO_ROOT / "device"


def firmware_files(*, include_hal: bool = True) -> dict[str, bytes]:
    """The firmware as ``{relative path on flash: bytes}`` (``ngmeter/wire.py``, ``main.py`` …).

    ``include_hal=False`` leaves out device/hal.py, for hosts that bring their own hal.
    """
    files: dict[str, bytes] = {}
    for path in sorted(DEVICE_DIR.rglob("*.py")):
        rel = path.relative_to(DEVICE_DIR).as_posix()
        if "__pycache__" in rel or (rel == "hal.py" and not include_hal):
            continue
        files[rel] = path.read_bytes()
    return files


def import_firmware(name: str) -> ModuleType:
    """Import firmware module ``name`` (e.g. ``"ngmeter.wire"``) from device/ under CPython."""
    if str(DEVICE_DIR) not in sys.path:
        sys.path.insert(0, str(DEVICE_DIR))
    module = importlib.import_module(name)
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if DEVICE_DIR not in origin.parents:
        raise ImportError(f"{name} resolved to {origin}, not the firmware in {DEVICE_DIR}")
    return module
