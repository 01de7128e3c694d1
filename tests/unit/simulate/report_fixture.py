"""A small report's data with two trades settled in a real gateway ledger.

The money fields are hand-computed (default settlement rates: 2.5 % commission, 20 ticks/kWh
grid fee; 1 tick = EUR 0.001; money in µticks = 1e-6 tick) and written as literals, so the
tests compare the report with an oracle that does not come from the code under test:

* t1: home-03 sells 12,000 Wh at 150 ticks/kWh to home-01, delivered in full.
  value 12,000 x 150 x 1000 = 1,800,000,000 µticks (EUR 1.80); grid fee 12,000 x 20 x 1000 =
  240,000,000 (EUR 0.24); commission 2.5 % = 45,000,000 (EUR 0.045); buyer pays
  2,040,000,000 (EUR 2.04); seller receives 1,755,000,000 (EUR 1.755).
* t2: home-04 sells 8,000 Wh at 125 ticks/kWh to home-02; its meter delivers 5,000 Wh
  (defaulted). value 1,000,000,000 (EUR 1.00); fee 160,000,000 (EUR 0.16); commission
  25,000,000 (EUR 0.025); buyer pays 1,160,000,000 (EUR 1.16); seller receives 975,000,000
  (EUR 0.975).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from edge.batch import DeliveryRecord, TradeRecord
from edge.gateway.ledger import Ledger
from neighbourgrid.simulate.homes import make_homes
from neighbourgrid.simulate.physics import run_baseline
from neighbourgrid.simulate.report import ReportData

START = date(2025, 4, 11)
#: 2025-04-11 12:00 and 18:30 (local time laid on the epoch as UTC), as 15-minute interval numbers
NOON = int(datetime(2025, 4, 11, 12, 0, tzinfo=UTC).timestamp()) // 900
EVENING = int(datetime(2025, 4, 11, 18, 30, tzinfo=UTC).timestamp()) // 900


def _trade(
    n: int, *, seller: str, buyer: str, wh: int, price: int, interval: int, money: tuple[int, ...]
) -> TradeRecord:
    value, buyer_pays, seller_receives, commission, grid_fee = money
    return TradeRecord(
        id=f"t{n}",
        buy=f"b{n}",
        sell=f"s{n}",
        buyer=buyer,
        seller=seller,
        wh=wh,
        price=price,
        interval=interval,
        ts=interval * 900_000,
        maker="sell",
        meter=f"m-{seller}",
        settled_ts=interval * 900_000 + 50,
        value=value,
        buyer_pays=buyer_pays,
        seller_receives=seller_receives,
        commission=commission,
        grid_fee=grid_fee,
        yield_accrual=0,
        tokens_burned=wh,
        carbon_mg=820 * wh,
        commitment=b"\x02" * 33,
        proof=b"p" * 10,
        soc_threshold_bp=2100,
        soc_reserved_bp=0,
    )


def report_data(tmp: Path) -> ReportData:
    """4 homes (home-01/02 buy, home-03/04 sell), one day, the two trades above."""
    ledger = Ledger(tmp / "ledger.sqlite3")
    try:
        ledger.settle(
            _trade(
                1,
                seller="home-03",
                buyer="home-01",
                wh=12_000,
                price=150,
                interval=NOON,
                money=(1_800_000_000, 2_040_000_000, 1_755_000_000, 45_000_000, 240_000_000),
            ),
            export_start_wh=0,
        )
        ledger.settle(
            _trade(
                2,
                seller="home-04",
                buyer="home-02",
                wh=8_000,
                price=125,
                interval=EVENING,
                money=(1_000_000_000, 1_160_000_000, 975_000_000, 25_000_000, 160_000_000),
            ),
            export_start_wh=0,
        )
        ledger.record_delivery(
            DeliveryRecord(trade="t1", status="delivered", wh=12_000, delivered_wh=12_000, ts=1)
        )
        ledger.record_delivery(
            DeliveryRecord(trade="t2", status="defaulted", wh=8_000, delivered_wh=5_000, ts=2)
        )
        homes = make_homes(4, 7)
        statements = {h.id: ledger.statement(h.id) for h in homes}
        trades = ledger.trades()
    finally:
        ledger.close()
    base = run_baseline(homes=homes, start=START, days=1)
    n = base.intervals
    traded = [0] * n
    clearing: list[float | None] = [None] * n
    traded[48], clearing[48] = 12_000, 150.0
    traded[74], clearing[74] = 8_000, 125.0
    return ReportData(
        homes=homes,
        start=START,
        days=1,
        baseline=base,
        trading=run_baseline(homes=homes, start=START, days=1),
        traded_wh=traded,
        clearing_price=clearing,
        reference_price=[160] * n,
        statements=statements,
        trades=trades,
        summary={
            "homes": 4,
            "days": 1,
            "seed": 7,
            "trades": 2,
            "wh_traded": 20_000,
            "defaults": 1,
            "avg_price": 140.0,
            "carbon_mg": 16_400_000,
            "self_sufficiency_pct": 41.3,
            "grid_import_wh_with_trading": 20_100,
            "grid_import_wh_without_trading": 37_100,
            "batches": 1,
            "batches_anchored": 1,
            "proofs_verified": 2,
            "replay_ok": True,
            "receipts_verified": 2,
        },
        stages={
            "inputs (BDEW H0, pvlib TMY3)": "ran",
            "no-trading baseline": "ran",
            "broker": "ran (embedded amqtt on 127.0.0.1:40000)",
            "gateway (policies, matching, proofs, locks, settlement, ledger)": "ran",
            "meters": "ran (the real firmware, device/ngmeter, hosted on CPython); "
            "lock refusals by the firmware: 0",
            "coordinator (verification with replay, store)": "ran",
            "Soroban anchoring (local RPC stand-in)": "ran",
            "receipts (Merkle inclusion, from the coordinator)": "ran",
        },
        grid_price=320,
        feed_in_price=80,
    )
