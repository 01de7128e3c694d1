"""Run Python in the real MicroPython VM (the WebAssembly port from npm, under Node).

:func:`run_in_vm` writes files into the VM's filesystem, runs a script, and returns its printed
output, the JSON it wrote to ``/result.json`` and the files under a directory (the "flash", to
carry into the next boot). The VM is ``@micropython/micropython-webassembly-pyscript``, pinned in
package-lock.json (``npm ci`` at the repository root installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hil.virtual.firmware import REPO_ROOT, firmware_files

__all__ = [
    "JS_DIR",
    "VM_MODULE",
    "VmError",
    "VmResult",
    "flash_files",
    "node_path",
    "run_in_vm",
    "vm_available",
]

JS_DIR: Final = Path(__file__).with_name("js")
VM_MODULE: Final = REPO_ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
SIMHAL: Final = Path(__file__).with_name("simhal.py")


class VmError(RuntimeError):
    """The VM could not be started, or the script raised (the message has its traceback)."""


@dataclass(frozen=True)
class VmResult:
    """What a VM run left behind: printed text, /result.json, and the collected files."""

    stdout: str
    result: Any
    files: dict[str, str] = field(default_factory=dict)


def node_path() -> str | None:
    return shutil.which("node")


def vm_available() -> bool:
    """True when Node and the pinned VM package are installed."""
    return node_path() is not None and (VM_MODULE / "micropython.mjs").exists()


def flash_files(root: str = "/flash", *, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The firmware (without device/hal.py) plus simhal.py, as VM paths under ``root``."""
    files = {
        f"{root}/{rel}": data.decode() for rel, data in firmware_files(include_hal=False).items()
    }
    files[f"{root}/simhal.py"] = SIMHAL.read_text()
    for rel, text in (extra or {}).items():
        files[f"{root}/{rel}"] = text
    return files


def run_in_vm(
    *,
    files: dict[str, str],
    script: str,
    collect: str | None = "/flash",
    repeat: tuple[str, int] | None = None,
    finish: str | None = None,
    heapsize: int = 256 * 1024,
    timeout: float = 120.0,
) -> VmResult:
    """Run ``script`` in a fresh VM with ``files`` (absolute VM path -> text) written first.

    ``repeat=(script, n)`` then runs ``script`` n times, each a separate execution (the
    WebAssembly port frees memory only between executions), and ``finish`` once at the end.
    Raises VmError if Node or the VM is missing, or the script raised.
    """
    node = node_path()
    if node is None or not vm_available():
        raise VmError("the MicroPython VM is not installed: run `npm ci` in the repository root")
    request: dict[str, Any] = {
        "files": files,
        "script": script,
        "collect": collect,
        "heapsize": heapsize,
        "finish": finish,
    }
    if repeat is not None:
        request["repeat"] = {"script": repeat[0], "count": repeat[1]}
    proc = subprocess.run(
        [node, str(JS_DIR / "vm_run.mjs")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise VmError(f"node exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    if not reply["ok"]:
        raise VmError(f"{reply['error']}\n--- VM output ---\n{reply['stdout']}")
    return VmResult(stdout=reply["stdout"], result=reply["result"], files=reply["files"])
