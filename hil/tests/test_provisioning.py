"""Provisioning followed by the on-board self-test, on the board under test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hil.plugin import BoardTarget, Provisioned, provision_board
from provisioning.inventory import Inventory, fingerprint


def test_provisioning_then_self_test(board: BoardTarget, meter: Provisioned) -> None:
    assert meter.self_test == "passed"
    with Inventory(path=meter.inventory) as inventory:
        record = inventory.find_meter(meter.meter_id)
        assert record is not None and record.gateway == meter.gateway_id
        assert record.key_fingerprint == fingerprint(meter.key)
        assert record.port == board.port


def test_reprovisioning_keeps_identity_and_state(
    board: BoardTarget, meter: Provisioned, hil_broker: Any, tmp_path: Path
) -> None:
    """Re-running the installer's command keeps the meter id, key and durable state."""
    from provisioning.board import Board, firmware_files
    from provisioning.meter import MeterSpec, provision_meter

    with Board(port=board.port) as session:
        session.interrupt()
        state_before = session.read_file("/state.json")
    with Inventory(path=meter.inventory) as inventory:
        again = provision_meter(
            inventory=inventory,
            spec=MeterSpec(port=board.port, owner="bench", capacity_wh=meter.capacity_wh),
            gateway=meter.gateway_id,
            files=firmware_files(Path(__file__).resolve().parents[2] / "device"),
        )
    assert again.reused_identity and again.record is not None
    assert again.record.id == meter.meter_id and again.record.self_test == "passed"
    with Board(port=board.port) as session:
        session.interrupt()
        state_after = session.read_file("/state.json")
        config = json.loads(session.read_file("/config.json") or b"{}")
        session.soft_reset()
    assert bytes.fromhex(config["mac_key"]) == meter.key
    if state_before is not None:  # the firmware had written its state: it must survive
        assert state_after is not None
        assert json.loads(state_after)["seq_ceil"] >= json.loads(state_before)["seq_ceil"]
    fresh = provision_board(
        board, broker_host=hil_broker.host, broker_port=hil_broker.port, directory=tmp_path / "2"
    )
    assert fresh.meter_id != meter.meter_id and fresh.key != meter.key
