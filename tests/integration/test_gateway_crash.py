"""kill -9 of the gateway process inside a settlement transaction, then restart.

The ledger must hold every trade wholly settled or not at all, the restart rule must void every
matched-but-unsettled trade in the order log, and no trade may be lost or doubled: replaying the
order log with edge.market gives exactly the ledger's trades plus the voided ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from edge.gateway.ledger import CRASH_ENV
from edge.gateway.orderlog import OrderLog
from edge.market import Engine, Void, parse_event
from tests.brokers import Broker, free_port
from tests.integration.gateway_harness import (
    Api,
    MeterStandIn,
    eventually,
    gateway_config,
    toml_text,
)

NGRID = str(Path(sys.executable).with_name("ngrid"))


def start(config: Path, log: Path, crash: int | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash is not None:
        env[CRASH_ENV] = str(crash)
    return subprocess.Popen(
        [NGRID, "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=env,
    )


async def api_up(api: Api) -> bool:
    try:
        status, _ = await api.call("GET", "/v1/status", "alice")
    except OSError:
        return False
    return status == 200


def ledger_rows(path: Path) -> dict[str, dict[str, int]]:
    db = sqlite3.connect(path)
    try:
        out: dict[str, dict[str, int]] = {}
        for table, column in [
            ("trades", "id"),
            ("fills", "trade"),
            ("yields", "trade"),
            ("token_burns", "trade"),
            ("carbon_credits", "trade"),
        ]:
            for trade, count in db.execute(
                f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}"
            ):
                out.setdefault(trade, {})[table] = count
        return out
    finally:
        db.close()


async def test_kill_9_in_settlement_then_restart(
    mosquitto: Broker, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    # Batches every second and an engine snapshot at each tick that logged something, so the
    # restart starts from a snapshot.
    data = gateway_config(
        tmp_path,
        port=mosquitto.port,
        prefix=topic_prefix,
        batch={"every_s": 1},
        ledger={"snapshot_records": 1},
    )
    data["api"]["port"] = port
    config = tmp_path / "gateway.toml"
    config.write_text(toml_text(data))
    log = tmp_path / "gateway.log"
    api = Api(port)

    gateway = start(config, log, crash=4)
    try:
        async with MeterStandIn(
            "m-a", port=mosquitto.port, prefix=topic_prefix, soc_bp=9000
        ).running(period=0.3):
            await eventually(lambda: api_up(api), timeout=20)
            await asyncio.sleep(0.5)  # a telemetry message has reached the gateway
            status, _ = await api.call(
                "POST", "/v1/orders", "alice", {"side": "sell", "wh": 5000, "price": 100}
            )
            assert status == 201
            await asyncio.sleep(1.5)  # a snapshot is saved after the sell
            for _ in range(8):
                status, _ = await api.call(
                    "POST", "/v1/orders", "bob", {"side": "buy", "wh": 100, "price": 300}
                )
                assert status == 201
            await eventually(lambda: gateway.poll() is not None, timeout=30)
            assert gateway.returncode == -signal.SIGKILL

            rows = ledger_rows(tmp_path / "ledger.sqlite3")
            assert len(rows) == 3  # the 4th settlement died before its commit
            for counts in rows.values():
                assert counts == {
                    "trades": 1,
                    "fills": 2,
                    "yields": 2,
                    "token_burns": 1,
                    "carbon_credits": 1,
                }

            gateway = start(config, log)
            await eventually(lambda: api_up(api), timeout=20)
            status, _ = await api.call(
                "POST", "/v1/orders", "carol", {"side": "buy", "wh": 100, "price": 300}
            )
            assert status == 201

            async def quiet() -> bool:
                _, state = await api.call("GET", "/v1/status", "alice")
                return state["pending_locks"] == 0 and state["active_locks"] == 4

            await eventually(quiet, timeout=20)
            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait(timeout=15) == 0  # graceful shutdown
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()

    rows = ledger_rows(tmp_path / "ledger.sqlite3")
    for counts in rows.values():
        assert counts == {
            "trades": 1,
            "fills": 2,
            "yields": 2,
            "token_burns": 1,
            "carbon_credits": 1,
        }
    # Replay the order log with the market core: every trade is settled xor voided.
    records = OrderLog(tmp_path / "orderlog.jsonl").records
    engine = Engine()
    matched: list[str] = []
    voided: list[str] = []
    for record in records:
        event = parse_event({k: v for k, v in record.items() if k != "seq"})
        matched += [t.id for t in engine.submit(event)]
        if isinstance(event, Void):
            voided.append(event.trade)
    assert len(voided) == len(set(voided))
    assert set(rows) == set(matched) - set(voided)
    assert set(rows) & set(voided) == set()
    assert len(rows) == 4  # three before the crash, carol's after the restart
    text = log.read_text()
    assert "restart" in text
    restored = [json.loads(line) for line in text.splitlines() if '"event": "restored"' in line]
    assert restored[0]["snapshot_at"] == 0 and restored[1]["snapshot_at"] >= 2
