"""The on-board self-test, run in the real MicroPython VM (hil.virtual.vm) on the real firmware,
and the configuration `ngrid provision meter` writes, checked by the firmware's own parser."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest

from hil.virtual.firmware import firmware_files, import_firmware
from hil.virtual.vm import run_in_vm, vm_available
from provisioning.errors import SelfTestError
from provisioning.meter import meter_config
from provisioning.selftest import run_self_test
from tests.unit.provisioning.mqtt_peer import USOCKET
from tests.unit.provisioning.test_inventory import gateway

KEY = bytes(range(32))


def config(meter_id: str = "m-1", key: bytes = KEY) -> dict[str, object]:
    return meter_config(
        meter_id=meter_id,
        gateway=gateway(),
        mac_key=key,
        mqtt_password="broker-pw",
        capacity_wh=13_500,
        reserve_bp=2_000,
        wifi=None,
    )


def test_the_firmware_accepts_the_configuration() -> None:
    parse = import_firmware("ngmeter.config").parse
    parsed = parse(json.dumps(config()))
    assert parsed["key"] == KEY
    assert (parsed["device_id"], parsed["broker_user"], parsed["broker_password"]) == (
        "m-1",
        "m-1",
        "broker-pw",
    )
    assert (parsed["capacity_wh"], parsed["reserve_bp"]) == (13_500, 2_000)


@dataclass
class VmBoard:
    """Runs each exec in a fresh real MicroPython VM whose filesystem holds ``files``."""

    files: dict[str, str]
    port: str = "vm"
    runs: list[str] = field(default_factory=list)

    def exec(self, code: str, *, timeout: float | None = None) -> str:
        self.runs.append(code)
        script = "import sys\nsys.path.insert(0, '/')\n" + code
        return run_in_vm(files=self.files, script=script, collect=None).stdout


def board_with(config_text: str | None) -> VmBoard:
    if not vm_available():
        pytest.fail("the MicroPython VM is not installed: run `npm ci` (make deps)")
    files = {"/" + path: data.decode() for path, data in firmware_files().items()}
    if config_text is not None:
        files["/config.json"] = config_text
    return VmBoard(files)


def test_self_test_passes_on_a_provisioned_firmware() -> None:
    checks = run_self_test(board_with(json.dumps(config())), meter_id="m-1", mac_key=KEY)
    assert checks["config"] == "m-1"
    assert checks["hmac"] == "RFC 4231 test case 2"
    assert checks["hal"] == "absent"  # the VM has no machine module
    assert checks["memory"] >= 16 * 1024 and checks["fs"] >= 16 * 1024
    # The VM has no usocket: the check finds the MQTT client the upload puts in /lib.
    assert checks["mqtt"].startswith("/lib/umqtt/simple.py")


def test_self_test_imports_the_mqtt_client_where_there_is_a_network_stack() -> None:
    board = board_with(json.dumps(config()))
    board.files["/usocket.py"] = USOCKET  # a stand-in network stack (tests/.../mqtt_peer.py)
    checks = run_self_test(board, meter_id="m-1", mac_key=KEY)
    assert checks["mqtt"] == "/lib/umqtt/simple.py"  # imported from /lib: the VM freezes none


def test_self_test_catches_a_board_without_the_mqtt_client() -> None:
    board = board_with(json.dumps(config()))
    del board.files["/lib/umqtt/simple.py"]
    with pytest.raises(SelfTestError, match=r"mqtt: .*umqtt.simple is not on the board"):
        run_self_test(board, meter_id="m-1", mac_key=KEY)


def test_self_test_catches_a_key_the_host_does_not_hold() -> None:
    board = board_with(json.dumps(config(key=os.urandom(32))))
    with pytest.raises(SelfTestError, match="seal: the board's MAC does not verify"):
        run_self_test(board, meter_id="m-1", mac_key=KEY)


def test_self_test_catches_a_config_the_firmware_refuses() -> None:
    bad = dict(config())
    bad["reserve_bp"] = 12_000
    with pytest.raises(SelfTestError, match=r"config: .*reserve_bp"):
        run_self_test(board_with(json.dumps(bad)), meter_id="m-1", mac_key=KEY)
    with pytest.raises(SelfTestError, match=r"config: .*no config file"):
        run_self_test(board_with(None), meter_id="m-1", mac_key=KEY)


def test_self_test_catches_another_meters_board() -> None:
    board = board_with(json.dumps(config(meter_id="m-2")))
    with pytest.raises(SelfTestError, match="says it is 'm-2', not 'm-1'"):
        run_self_test(board, meter_id="m-1", mac_key=KEY)
