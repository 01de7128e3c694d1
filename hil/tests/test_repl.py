"""The dut fixture chain (board -> transport -> dut): the firmware's board at its serial REPL."""

from __future__ import annotations

from hil.plugin import Dut, Provisioned


def test_interrupt_main_use_the_repl_and_soft_reset(meter: Provisioned, dut: Dut) -> None:
    dut.interrupt()  # Ctrl-C stops main.py and leaves the friendly REPL
    dut.write("import ngmeter.wire as w; print('wire v%d' % w.VERSION)\r")
    dut.expect(r"wire v1\r?\n")
    dut.write("import json; print(json.load(open('/config.json'))['device_id'])\r")
    match = dut.expect(r"(m-[0-9a-f]{8})\r?\n")
    assert match.group(1).decode() == meter.meter_id
    dut.write(b"\x04")  # Ctrl-D: soft reset, main.py starts again
    dut.expect(r"soft reboot")
