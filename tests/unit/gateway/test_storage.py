"""Order log durability rules and the SQLite ledger's transactions, schema and outbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.batch import DeliveryRecord, TradeRecord
from edge.gateway.ledger import SCHEMA_VERSION, Ledger, LedgerError
from edge.gateway.orderlog import OrderLog, OrderLogError


def record(n: int, **over: object) -> TradeRecord:
    base = dict(
        id=f"t{n}",
        buy=f"b{n}",
        sell=f"s{n}",
        buyer="bob",
        seller="alice",
        wh=100,
        price=120,
        interval=3,
        ts=10,
        maker="sell",
        meter="m-a",
        settled_ts=20,
        value=12_000_000,
        buyer_pays=14_000_000,
        seller_receives=11_700_000,
        commission=300_000,
        grid_fee=2_000_000,
        yield_accrual=17,
        tokens_burned=100,
        carbon_mg=82_000,
        commitment=b"\x02" * 33,
        proof=b"p" * 10,
        soc_threshold_bp=2100,
        soc_reserved_bp=0,
    )
    base.update(over)
    return TradeRecord(**base)  # type: ignore[arg-type]


def test_orderlog_appends_durably_and_reloads(tmp_path: Path) -> None:
    log = OrderLog(tmp_path / "log.jsonl")
    log.append([{"seq": 1, "op": "cancel", "id": "o1", "ts": 1}])
    log.append(
        [
            {"seq": 2, "op": "cancel", "id": "o2", "ts": 2},
            {"seq": 3, "op": "cancel", "id": "o3", "ts": 3},
        ]
    )
    with pytest.raises(OrderLogError):
        log.append([{"seq": 5, "op": "cancel", "id": "o5", "ts": 5}])
    log.close()
    again = OrderLog(tmp_path / "log.jsonl")
    assert [r["id"] for r in again.records] == ["o1", "o2", "o3"]
    assert again.slice(2, 3) == again.records[1:]


def test_orderlog_keeps_only_the_tail_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = OrderLog(path)
    log.append([{"seq": n, "op": "cancel", "id": f"o{n}", "ts": n} for n in range(1, 6)])
    log.forget_through(3)  # a batch sealed records 1..3
    assert (log.base, log.last_seq) == (3, 5)
    assert [r["id"] for r in log.records] == ["o4", "o5"]
    assert [r["id"] for r in log.slice(4, 5)] == ["o4", "o5"]
    with pytest.raises(OrderLogError, match="no longer in memory"):
        log.slice(3, 5)
    log.forget_through(2)  # already forgotten: nothing changes
    assert log.base == 3
    with pytest.raises(OrderLogError, match="ends at 5"):
        log.forget_through(6)
    log.append([{"seq": 6, "op": "cancel", "id": "o6", "ts": 6}])  # appends continue at 6
    assert [r["id"] for r in log.read(5)] == ["o5", "o6"]  # the file keeps everything
    assert [r["seq"] for r in log.read()] == [1, 2, 3, 4, 5, 6]
    log.close()
    # Reopened keeping records after 4: every line is still checked, only 5.. are kept.
    again = OrderLog(path, keep_after=4)
    assert (again.base, again.last_seq, [r["id"] for r in again.records]) == (4, 6, ["o5", "o6"])
    again.close()
    beyond = OrderLog(path, keep_after=10)  # past the end: nothing kept, appends go on at 7
    assert (beyond.base, beyond.last_seq, beyond.records) == (6, 6, [])
    beyond.close()
    path.write_bytes(path.read_bytes().replace(b'"o2"', b"o2"))
    with pytest.raises(OrderLogError, match=":2:"):
        OrderLog(path, keep_after=4)


def test_orderlog_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"id":"o1","op":"cancel","seq":1,"ts":1}\n{"id":"o2","op":"ca')
    log = OrderLog(path)
    assert log.last_seq == 1 and log.truncated_bytes == len(b'{"id":"o2","op":"ca')
    log.append([{"seq": 2, "op": "cancel", "id": "o9", "ts": 2}])
    log.close()
    assert OrderLog(path).records[-1]["id"] == "o9"


def test_orderlog_refuses_corruption_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"seq":1}\nxx\n{"seq":3}\n')
    with pytest.raises(OrderLogError, match=":2:"):
        OrderLog(path)


def test_ledger_pragmas_and_schema(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert ledger.schema_version == SCHEMA_VERSION
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ledger.close()
    db = sqlite3.connect(tmp_path / "l.sqlite3")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LedgerError, match="newer"):
        Ledger(tmp_path / "l.sqlite3")


def test_settlement_writes_every_record_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert ledger.settle(record(1), export_start_wh=5)
    assert not ledger.settle(record(1), export_start_wh=5)
    totals = ledger.totals()
    assert totals["trades"] == 1 and totals["fills"] == 2 and totals["yields"] == 2
    assert totals["burn_records"] == 1 and totals["carbon_records"] == 1
    assert totals["token_burns"] == 100
    row = ledger.trade("t1")
    assert row is not None and row["status"] == "pending" and row["chain_ref"] == "pending"
    statement = ledger.statement("alice")
    assert statement["received_microticks"] == 11_700_000 and statement["carbon_mg"] == 82_000
    assert statement["yield_microticks"] == 17
    assert ledger.statement("bob")["paid_microticks"] == 14_000_000


def test_a_failed_settlement_leaves_nothing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    with pytest.raises(sqlite3.IntegrityError):
        ledger.settle(record(1, wh=0), export_start_wh=0)  # CHECK (wh > 0)
    assert ledger.totals()["trades"] == 0 and ledger.totals()["fills"] == 0
    # the failure happened after nothing else: also a failure in the middle rolls back
    ledger.db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON carbon_credits BEGIN SELECT RAISE(ABORT, 'x'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        ledger.settle(record(2), export_start_wh=0)
    totals = ledger.totals()
    assert (totals["trades"], totals["fills"], totals["yields"], totals["burn_records"]) == (
        0,
        0,
        0,
        0,
    )


def test_delivery_and_batches(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.settle(record(1), export_start_wh=5)
    ledger.settle(record(2), export_start_wh=5)
    assert [lk.trade for lk in ledger.active_locks()] == ["t1", "t2"]
    lock = ledger.active_locks()[0]  # what a restart needs of the trade, from the ledger alone
    assert (lock.seller, lock.buyer, lock.wh, lock.price, lock.interval) == (
        "alice",
        "bob",
        100,
        120,
        3,
    )
    ledger.record_delivery(
        DeliveryRecord(trade="t1", status="defaulted", wh=100, delivered_wh=40, ts=9)
    )
    assert [lk.trade for lk in ledger.active_locks()] == ["t2"]
    totals = ledger.totals()  # t2's delivery is not decided: it counts in neither figure
    assert (totals["wh"], totals["value"], totals["wh_delivered"], totals["defaults"]) == (
        200,
        2 * 100 * 120,
        40,
        1,
    )
    assert totals["carbon_mg"] == 2 * 100 * 820
    trades, deliveries = ledger.unbatched()
    assert [t.id for t in trades] == ["t1", "t2"] and trades[0] == record(1)
    assert [d.trade for d in deliveries] == ["t1"]
    ledger.store_batch(
        seq=1,
        hash=b"h" * 32,
        created_ts=1,
        log_last=7,
        body=b"{}",
        trades=["t1", "t2"],
        deliveries=["t1"],
    )
    assert ledger.unbatched() == ([], [])
    ledger.store_batch(
        seq=2, hash=b"i" * 32, created_ts=2, log_last=9, body=b"[]", trades=[], deliveries=[]
    )
    assert [b.seq for b in ledger.outbox()] == [1, 2]
    head = ledger.outbox_next()
    assert head is not None and (head.seq, head.body) == (1, b"{}")
    assert ledger.outbox_count() == 2
    ledger.mark_uploaded(1, 99)
    next_head = ledger.outbox_next()
    assert next_head is not None and next_head.seq == 2 and ledger.outbox_count() == 1
    ledger.mark_uploaded(2, 100)
    assert ledger.outbox() == [] and ledger.outbox_next() is None and ledger.outbox_count() == 0
    last = ledger.last_batch()
    assert last is not None and last.log_last == 9 and last.uploaded_ts == 100


def test_meter_sequence_numbers_are_saved(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.save_meter_seqs({("m-a", "state"): 7, ("m-a", "ack"): 9})
    ledger.save_meter_seqs({("m-a", "state"): 8})
    ledger.close()
    assert Ledger(tmp_path / "l.sqlite3").meter_seqs() == {("m-a", "state"): 8, ("m-a", "ack"): 9}


def test_engine_snapshot_is_kept(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert ledger.load_snapshot() is None
    ledger.save_snapshot(12, b'{"format":"x"}', {"alice": ["o1", "o3"]})
    assert ledger.load_snapshot() == (12, b'{"format":"x"}', {"alice": ["o1", "o3"]})


def test_a_bound_ledger_refuses_other_threads(tmp_path: Path) -> None:
    import concurrent.futures

    ledger = Ledger(tmp_path / "l.sqlite3")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as disk:
        disk.submit(ledger.bind_thread).result()
        assert disk.submit(ledger.totals).result()["trades"] == 0  # the owner may
        with pytest.raises(LedgerError, match="disk thread"):
            ledger.totals()  # another thread may not
        with pytest.raises(LedgerError):
            ledger.settle(record(1), export_start_wh=0)
    ledger.unbind()
    assert ledger.totals()["trades"] == 0
    ledger.close()


def _v1_ledger(path: Path, *, batch_seqs: list[int | None]) -> None:
    """A ledger file as schema version 1 left it, with one trade per entry of ``batch_seqs``."""
    from edge.gateway.ledger import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    v1 = MIGRATIONS[0]
    assert isinstance(v1, str)
    db.executescript(v1)
    db.execute("PRAGMA user_version=1")
    for n, batch_seq in enumerate(batch_seqs, start=1):
        row = record(n).to_json()
        row["commitment"], row["proof"] = b"\x02" * 33, b"p"
        row |= {"export_start_wh": 0, "batch_seq": batch_seq}
        db.execute(
            f"INSERT INTO trades ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
            list(row.values()),
        )
    db.close()


def test_migration_to_v2_keeps_batched_trades(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    _v1_ledger(path, batch_seqs=[1, 1])
    ledger = Ledger(path)
    assert ledger.schema_version == SCHEMA_VERSION == 2
    indexes = {r[0] for r in ledger.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "trades_meter" in indexes
    assert ledger.settled_ids() == {"t1", "t2"} and ledger.unbatched() == ([], [])
    assert ledger.settle(record(3), export_start_wh=0)
    (t3,), _ = ledger.unbatched()
    assert t3 == record(3)  # the batch record round-trips, seller meter included
    ledger.close()


def test_migration_to_v2_refuses_unbatched_v1_trades(tmp_path: Path) -> None:
    """Their proofs are bound to the v1 proof context (no meter): no coordinator of this
    version would verify them, so the upgrade waits until they are batched."""
    path = tmp_path / "l.sqlite3"
    _v1_ledger(path, batch_seqs=[1, None])
    with pytest.raises(LedgerError, match="1 trades settled under ledger schema 1"):
        Ledger(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1  # nothing changed
    assert db.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == 2
    db.close()


def test_trades_are_read_in_settlement_order_with_their_delivery(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    for n in (3, 1, 2):  # settlement order, not id order
        ledger.settle(record(n), export_start_wh=0)
    ledger.record_delivery(
        DeliveryRecord(trade="t1", status="defaulted", wh=100, delivered_wh=40, ts=30)
    )
    trades = ledger.trades()
    assert [t["id"] for t in trades] == ["t3", "t1", "t2"]
    assert [t["id"] for t in ledger.trades(limit=2)] == ["t3", "t1"]
    assert (trades[1]["status"], trades[1]["delivered_wh"]) == ("defaulted", 40)
    assert (trades[0]["status"], trades[0]["delivered_wh"]) == ("pending", None)
    assert trades[0]["buyer_pays"] == 14_000_000 and trades[0]["interval"] == 3
    assert set(trades[0]) == set(ledger.trades_of("bob")[0])
    ledger.close()
