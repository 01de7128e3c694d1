"""The whole meter flow except the esptool flash, on the virtual board: the real MicroPython VM's
REPL on a pseudo-terminal (hil.virtual.board), reached through mpremote's serial transport.

The flash step is tested through esptool against a simulated ROM bootloader in
tests/unit/provisioning/test_flash.py; here the boards already run MicroPython.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from provisioning.board import Board, firmware_files, tree_digest
from provisioning.errors import UnknownGatewayError, UploadVerificationError, WrongChipError
from provisioning.gateway import export_registry, provision_gateway
from provisioning.inventory import Inventory, fingerprint
from provisioning.meter import CONFIG_PATH, MeterSpec, provision_meter, provision_meters

DEVICE_DIR = Path(__file__).resolve().parents[2] / "device"
NOW = datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


@pytest.fixture
def virtual_board() -> Iterator[str]:
    from hil.virtual.board import VirtualBoard

    with VirtualBoard() as board:
        yield board.port


@pytest.fixture
def inventory(tmp_path: Path) -> Iterator[Inventory]:
    with Inventory(path=tmp_path / "inventory.json") as inv:
        provision_gateway(
            inventory=inv,
            name="gw1",
            out_dir=tmp_path / "bundle",
            broker_host="10.0.0.2",
            now=NOW,
            by="ann@laptop",
        )
        yield inv


class Bars:
    """A progress factory that records what the flow reported."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def __call__(self, label: str, total: int, slot: int) -> Bars.Bar:
        self.totals[label] = total
        self.done[label] = 0
        return Bars.Bar(self, label)

    class Bar:
        def __init__(self, owner: Bars, label: str) -> None:
            self.owner, self.label = owner, label

        def update(self, n: int) -> None:
            self.owner.done[self.label] += n

        def close(self) -> None:
            pass


def board_config(port: str) -> dict[str, object]:
    with Board(port=port) as board:
        board.interrupt()
        raw = board.read_file(CONFIG_PATH)
    assert raw is not None, "no configuration on the board"
    return dict(json.loads(raw))


def board_state(port: str) -> dict[str, int]:
    with Board(port=port) as board:
        board.interrupt()
        raw = board.read_file("/state.json")
    return dict(json.loads(raw)) if raw else {}


def test_provision_records_verifies_and_keeps_identity(
    virtual_board: str, inventory: Inventory
) -> None:
    files = firmware_files(DEVICE_DIR)
    spec = MeterSpec(port=virtual_board, owner="no-4", capacity_wh=13_500, reserve_bp=2_500)
    bars = Bars()
    first = provision_meter(
        inventory=inventory,
        spec=spec,
        gateway="gw1",
        files=files,
        progress=bars,
        now=NOW,
        by="ann@laptop",
    )
    record = first.record
    assert record is not None and not first.reused_identity
    assert record.self_test == "passed"
    assert record.firmware_sha256 == tree_digest(files)
    assert (record.provisioned_by, record.provisioned_at) == ("ann@laptop", NOW.isoformat())
    upload = f"{virtual_board} upload"
    assert bars.done[upload] == bars.totals[upload] == sum(len(f.data) for f in files)

    config = board_config(virtual_board)
    key = bytes.fromhex(str(config["mac_key"]))
    assert config["device_id"] == record.id and config["gateway_id"] == "gw1"
    assert (config["broker_host"], config["reserve_bp"]) == ("10.0.0.2", 2_500)
    assert fingerprint(key) == record.key_fingerprint
    assert inventory.keystore.get(record.id) == key

    old_state = b'{"seq_ceil": 123456, "import_wh": 7, "export_wh": 9, "cmd_seq": 77, "locks": []}'
    with Board(port=virtual_board) as board:
        board.interrupt()
        board.write_file("/state.json", old_state)

    again = provision_meter(inventory=inventory, spec=spec, gateway="gw1", files=files)
    assert again.reused_identity and again.record is not None
    assert (again.record.id, again.record.key_fingerprint) == (record.id, record.key_fingerprint)
    assert again.record.mqtt_password_hash == record.mqtt_password_hash
    assert len(inventory.meters()) == 1
    assert board_state(virtual_board)["seq_ceil"] >= 123456  # kept with the identity

    fresh = provision_meter(
        inventory=inventory, spec=spec, gateway="gw1", files=files, new_identity=True
    )
    assert fresh.record is not None and fresh.record.id != record.id
    assert fresh.record.key_fingerprint != record.key_fingerprint
    # The old identity's sequence numbers and locks went with it (the firmware may have
    # started a fresh state since).
    assert board_state(virtual_board).get("seq_ceil", 0) < 123456
    path, count = export_registry(inventory=inventory, gateway="gw1")
    exported = {m["id"]: m for m in json.loads(path.read_text())["meters"]}
    assert count == 2
    assert exported[fresh.record.id]["mac_key"] == board_config(virtual_board)["mac_key"]


def test_a_corrupted_upload_is_caught_by_hashing_on_the_board(
    virtual_board: str, inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = firmware_files(DEVICE_DIR)
    victim = files[len(files) // 2].path
    original = Board.write_file

    def flaky_cable(self: Board, path: str, data: bytes, **kwargs: object) -> None:
        if path == "/" + victim:
            data = data[:-1] + bytes([data[-1] ^ 0x20])
        original(self, path, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Board, "write_file", flaky_cable)
    spec = MeterSpec(port=virtual_board, owner="no-4", capacity_wh=13_500)
    with pytest.raises(UploadVerificationError, match="differ from what was uploaded") as caught:
        provision_meter(inventory=inventory, spec=spec, gateway="gw1", files=files)
    assert caught.value.paths == (victim,)
    assert inventory.meters() == []  # nothing recorded for a board that failed


def test_wrong_chip_family_and_unknown_gateway(virtual_board: str, inventory: Inventory) -> None:
    files = firmware_files(DEVICE_DIR)
    spec = MeterSpec(port=virtual_board, owner="no-4", capacity_wh=13_500)
    with pytest.raises(WrongChipError, match="not esp32s3"):
        provision_meter(
            inventory=inventory, spec=spec, gateway="gw1", files=files, expect_chip="esp32s3"
        )
    with pytest.raises(UnknownGatewayError):
        provision_meter(inventory=inventory, spec=spec, gateway="gw9", files=files)
    assert inventory.meters() == []


def test_two_boards_in_one_run(inventory: Inventory) -> None:
    from hil.virtual.board import VirtualBoard

    with VirtualBoard() as one, VirtualBoard() as two:
        outcomes = provision_meters(
            inventory=inventory,
            specs=[
                MeterSpec(port=one.port, owner="no-4", capacity_wh=13_500),
                MeterSpec(port=two.port, owner="no-6", capacity_wh=10_000),
            ],
            gateway="gw1",
            files=firmware_files(DEVICE_DIR),
        )
    assert [o.error for o in outcomes] == [None, None]
    ids = {o.record.id for o in outcomes if o.record is not None}
    assert len(ids) == 2
    assert {m.owner for m in inventory.meters(gateway="gw1")} == {"no-4", "no-6"}


def test_flash_then_provision_records_the_image(
    virtual_board: str, inventory: Inventory, tmp_path: Path
) -> None:
    """The flash step's place in the flow: esptool writes the image (to the simulated ROM
    bootloader of tests/unit/provisioning/rom_peer.py, since a virtual board has no ROM), the
    flow then finds MicroPython's REPL on the port and records the image's digest."""
    from provisioning.flash import ImageInfo, check_image, flash
    from tests.unit.provisioning.rom_peer import RomPeer
    from tests.unit.provisioning.test_flash import make_image

    image = check_image(make_image(tmp_path / "micropython.bin"), sha256=None)
    bars = Bars()
    with RomPeer(chip="esp32") as peer:

        def flash_to_peer(port: str, info: ImageInfo, **kwargs: Any) -> str:
            assert port == virtual_board
            return flash(peer.url, info, connect_attempts=1, **kwargs)

        outcome = provision_meter(
            inventory=inventory,
            spec=MeterSpec(port=virtual_board, owner="no-8", capacity_wh=5_000),
            gateway="gw1",
            files=firmware_files(DEVICE_DIR),
            image=image,
            erase=True,
            progress=bars,
            flasher=flash_to_peer,
        )
        assert peer.erased
        assert bytes(peer.flash[0x1000 : 0x1000 + image.size]) == image.data
    assert outcome.flashed and outcome.record is not None
    assert (outcome.record.image_sha256, outcome.record.chip) == (image.sha256, "ESP32")
    label = f"{virtual_board} flash"
    assert bars.done[label] == bars.totals[label] == image.size


def test_mpy_cross_compiled_upload_replaces_the_sources(
    virtual_board: str, inventory: Inventory
) -> None:
    """--mpy: modules compiled by mpy-cross run on the board (the self-test imports them) and
    the .py files of an earlier upload are gone, so they cannot shadow the .mpy ones."""
    spec = MeterSpec(port=virtual_board, owner="no-4", capacity_wh=13_500)
    provision_meter(inventory=inventory, spec=spec, gateway="gw1", files=firmware_files(DEVICE_DIR))
    compiled = firmware_files(DEVICE_DIR, compile_mpy=True)
    outcome = provision_meter(inventory=inventory, spec=spec, gateway="gw1", files=compiled)
    assert outcome.record is not None and outcome.record.self_test == "passed"
    assert outcome.record.firmware_sha256 == tree_digest(compiled)
    with Board(port=virtual_board) as board:
        board.interrupt()
        assert board.exists("/ngmeter/wire.mpy")
        assert not board.exists("/ngmeter/wire.py")
        assert board.exists("/lib/umqtt/simple.mpy")  # the vendored MQTT client, compiled too
        assert not board.exists("/lib/umqtt/simple.py")
        assert board.exists("/main.py")  # boot.py and main.py stay source


def test_the_mqtt_client_is_uploaded_and_runs_on_the_board(
    virtual_board: str, inventory: Inventory
) -> None:
    """device/hal.py needs micropython-lib's umqtt.simple. Provisioning uploads the vendored copy
    (device/lib) to /lib, where MicroPython looks after its frozen modules; on the board it
    imports and writes the CONNECT packet the meter's broker login needs (MQTT 3.1.1, 3.1)."""
    from tests.unit.provisioning.mqtt_peer import USOCKET, parse_connect

    files = firmware_files(DEVICE_DIR)
    vendored = (DEVICE_DIR / "lib/umqtt/simple.py").read_bytes()
    assert [f.data for f in files if f.path == "lib/umqtt/simple.py"] == [vendored]
    outcome = provision_meter(
        inventory=inventory,
        spec=MeterSpec(port=virtual_board, owner="no-4", capacity_wh=13_500),
        gateway="gw1",
        files=files,
    )
    assert outcome.record is not None and outcome.record.self_test == "passed"
    config = board_config(virtual_board)
    with Board(port=virtual_board) as board:
        board.interrupt()
        assert board.read_file("/lib/umqtt/simple.py") == vendored
        # The VM has no network stack: a stand-in usocket records what the client writes.
        board.write_file("/usocket.py", USOCKET.encode())
        out = board.exec(
            "import sys, binascii, json, usocket\n"
            "sys.path.insert(0, '/')\n"
            "import umqtt.simple as m\n"
            "cfg = json.loads(open('/config.json').read())\n"
            "c = m.MQTTClient(cfg['device_id'], cfg['broker_host'], port=cfg['broker_port'],\n"
            "                 user=cfg['broker_user'], password=cfg['broker_password'],\n"
            "                 keepalive=60)\n"
            "c.set_last_will(b'ngrid/gw1/' + cfg['device_id'] + '/status', b'offline',\n"
            "                retain=True, qos=1)\n"
            "c.connect()\n"
            "print(m.__file__, binascii.hexlify(b''.join(usocket.written)).decode())\n"
        )
        board.remove("/usocket.py")
    module_file, packet = out.strip().splitlines()[-1].split()
    assert module_file == "/lib/umqtt/simple.py"
    connect = parse_connect(bytes.fromhex(packet))
    assert (connect.protocol, connect.level, connect.keepalive) == (b"MQTT", 4, 60)
    # username, password, will retain, will QoS 1, will flag, clean session (3.1.2.3)
    assert connect.flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02
    assert connect.client_id == connect.username == str(config["device_id"]).encode()
    assert connect.password == str(config["broker_password"]).encode()
    assert connect.will_topic == f"ngrid/gw1/{config['device_id']}/status".encode()
    assert connect.will_message == b"offline"
