"""Helpers for the gateway's unit tests: a config with two homes and their meters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.gateway.config import GatewayConfig, parse_config
from edge.wire import seal

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
INTERVAL_MS = 900_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % INTERVAL_MS + 60_000  # 1 min into an interval


def config_dict(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "gateway": {"id": "gw1", "signing_key": "gateway.key"},
        "meters": [
            {"id": "m-a", "mac_key": KEY_A.hex(), "capacity_wh": 10_000, "owner": "alice"},
            {"id": "m-b", "mac_key": KEY_B.hex(), "capacity_wh": 5_000, "owner": "bob"},
        ],
        "homes": [
            {"id": "alice", "token": "a" * 20},
            {"id": "bob", "token": "b" * 20},
            {"id": "carol", "token": "c" * 20},
        ],
    }
    for key, value in over.items():
        data[key] = value
    return data


def make_config(**over: Any) -> GatewayConfig:
    return parse_config(config_dict(**over), base=Path("/tmp"))


def telemetry(
    key: bytes,
    dev: str,
    *,
    seq: int,
    ts: int,
    soc_bp: int = 8000,
    export_wh: int = 0,
    import_wh: int = 0,
    power_w: int = 0,
    locked_wh: int = 0,
) -> bytes:
    """A signed ``state`` message (docs/wire.md); ``ts`` in ms, sent as Unix seconds."""
    return seal(
        key,
        {
            "v": 1,
            "kind": "state",
            "meter": dev,
            "seq": seq,
            "ts": ts // 1000,
            "soc_bp": soc_bp,
            "import_wh": import_wh,
            "export_wh": export_wh,
            "power_w": power_w,
            "locked_wh": locked_wh,
            "fw": "test",
        },
    )


def delivery(
    key: bytes, dev: str, *, seq: int, ts: int, trade: str, wh: int, delivered_wh: int
) -> bytes:
    return seal(
        key,
        {
            "v": 1,
            "kind": "delivery",
            "meter": dev,
            "seq": seq,
            "ts": ts // 1000,
            "trade": trade,
            "wh": wh,
            "delivered_wh": delivered_wh,
            "start": 1,
            "end": 2,
        },
    )


def ack(
    key: bytes,
    dev: str,
    *,
    seq: int,
    trade: str,
    ok: bool = True,
    reason: str = "",
    op: str = "lock",
    ts: int = 0,
    cmd: int = 1,
) -> bytes:
    """A signed ``ack`` of command seq ``cmd``; ``ok`` or refused with ``reason``."""
    return seal(
        key,
        {
            "v": 1,
            "kind": "ack",
            "meter": dev,
            "seq": seq,
            "ts": ts // 1000,
            "cmd": cmd,
            "op": op,
            "trade": trade,
            "ok": 1 if ok else 0,
            "reason": "ok" if ok else (reason or "insufficient_reserve"),
            "locked_wh": 0,
        },
    )


@pytest.fixture
def config() -> GatewayConfig:
    return make_config()


@pytest.fixture
def prove_first() -> GatewayConfig:
    """The config with ``locks.prove_before_lock = true``: no lock command before its proof."""
    return make_config(locks={"prove_before_lock": True})
