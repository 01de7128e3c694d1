"""The ``ngrid`` command as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from neighbourgrid.cli import PARTS

NGRID = shutil.which("ngrid") or str(__import__("pathlib").Path(sys.executable).with_name("ngrid"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NGRID, *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_part():
    result = run("--help")
    assert result.returncode == 0
    for part in ("market", "gateway", "coordinator", "provision", "meter", "simulate"):
        assert part in result.stdout
    assert set(PARTS) == {"market", "gateway", "coordinator", "provision", "meter", "simulate"}


@pytest.mark.parametrize("part", sorted(PARTS))
def test_each_part_has_help(part):
    result = run(part, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: ngrid" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = run("no-such-part")
    assert result.returncode == 2
    assert "No such command" in result.stderr
    assert "Traceback" not in result.stderr
