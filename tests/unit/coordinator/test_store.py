"""coordinator.store on a real SQLite file: registry, batches, chains, anomalies, atomicity."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from pathlib import Path

import pytest

from coordinator.errors import RegistrationConflict, StoreError
from coordinator.store import SCHEMA_VERSION, Registration, Store
from coordinator.verify import verify_batch
from edge.batch import Batch, encode_batch
from tests.unit.coordinator.pipeline import GatewaySim, resign


@pytest.fixture(scope="module")
def sim() -> GatewaySim:
    s = GatewaySim(gateway="gw-s")
    t1, t2 = s.pair(), s.pair()
    s.seal(settle_ids=[t1.id])
    s.seal(settle_ids=[t2.id], deliveries=[s.delivery(t1.id, delivered_wh=0)])
    return s


def reg(sim: GatewaySim, meters: tuple[str, ...] | None = None) -> Registration:
    return Registration(
        gateway=sim.gateway,
        public_key=sim.public_raw,
        meters=meters if meters is not None else tuple(sorted(sim.meters)),
        document=sim.registration(),
    )


def record(store: Store, batch: Batch, now: int = 1) -> str:
    v = verify_batch(
        batch,
        registry=store.registry(),
        chain=store.chain(batch.header.gateway),
        history=store.history_for(batch),
    )
    body = encode_batch(batch)
    row = store.record(
        batch=batch, body=body, digest=hashlib.sha256(body).digest(), verification=v, now=now
    )
    return row.status


def test_schema_version_is_kept_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = Store(path=path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path=path)


def test_registration_outcomes_and_conflicts(tmp_path: Path, sim: GatewaySim) -> None:
    store = Store(path=tmp_path / "c.sqlite3")
    assert store.register(reg(sim), now=1) == "created"
    assert store.register(reg(sim), now=2) == "unchanged"
    assert store.register(reg(sim, (*sorted(sim.meters), "new-m")), now=3) == "updated"
    assert "new-m" in store.registry()["gw-s"].meters
    other = GatewaySim(gateway="gw-t")
    with pytest.raises(RegistrationConflict) as err:
        store.register(reg(other, ("new-m", "gw-t-m1")), now=4)
    assert err.value.reason == "meter"
    assert "gw-t" not in store.registry()  # nothing written
    impostor = dataclasses.replace(reg(sim), public_key=other.public_raw)
    with pytest.raises(RegistrationConflict) as err:
        store.register(impostor, now=5)
    assert err.value.reason == "key"
    assert store.registry()["gw-s"].public_key == sim.public_raw


def test_accepted_batches_write_their_chain_trades_and_anchor_job(
    tmp_path: Path, sim: GatewaySim
) -> None:
    path = tmp_path / "c.sqlite3"
    store = Store(path=path)
    store.register(reg(sim), now=1)
    b1, b2 = sim.batches
    assert record(store, b1) == "accepted"
    assert record(store, b2) == "accepted"
    store.close()
    store = Store(path=path)  # all of it survives a reopen
    chain = store.chain("gw-s")
    assert (chain.seq, chain.log_last) == (2, b2.header.log_last) and chain.engine
    assert [r.seq for r in store.pending_anchors()] == [1, 2]
    found = store.trade_batch("gw-s", b2.trades[0].id)
    assert found is not None and found[0].seq == 2 and found[1] == 0
    history = store.history_for(b2)
    assert history.delivered("gw-s", [b2.deliveries[0].trade]) == {b2.deliveries[0].trade}
    owners = history.commitment_owners([b2.trades[0].commitment])
    assert owners == {b2.trades[0].commitment: ("gw-s", b2.trades[0].id)}
    row = store.pending_anchors()[0]
    store.set_anchored(row.id, tx_hash="ab" * 32, ledger=7, chain=bytes(32))
    assert store.batch("gw-s", 1).anchor_status == "anchored"  # type: ignore[union-attr]
    assert [r.seq for r in store.pending_anchors()] == [2]


def test_refused_batches_raise_anomalies_and_held_ones_wait(
    tmp_path: Path, sim: GatewaySim
) -> None:
    store = Store(path=tmp_path / "c.sqlite3")
    store.register(reg(sim), now=1)
    b1, b2 = sim.batches
    assert record(store, b2) == "held"
    assert [r.seq for r in store.held("gw-s", 2)] == [2]
    assert store.anomalies() == []
    totals = dict(b1.header.totals)
    totals["wh"] += 1
    assert record(store, resign(b1, sim.key, totals=totals)) == "refused"
    (anomaly,) = store.anomalies()
    assert anomaly.kind == "refused" and "totals" in anomaly.detail and anomaly.seq == 1
    assert store.chain("gw-s").seq == 0
    assert store.pending_anchors() == []


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, sim: GatewaySim) -> None:
    store = Store(path=tmp_path / "c.sqlite3")
    store.register(reg(sim), now=1)
    b1 = sim.batches[0]
    v = verify_batch(
        b1, registry=store.registry(), chain=store.chain("gw-s"), history=store.history_for(b1)
    )
    store.db.execute(  # the trade's commitment is somehow there already: the insert fails
        "INSERT INTO trades (gateway, trade, batch_seq, idx, wh, commitment) "
        "VALUES ('x', 'y', 1, 0, 1, ?)",
        (b1.trades[0].commitment,),
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.record(batch=b1, body=b"b", digest=b"d" * 32, verification=v, now=2)
    assert store.by_digest(b"d" * 32) is None
    assert store.chain("gw-s").seq == 0


def test_anomalies_page_and_filter(tmp_path: Path) -> None:
    store = Store(path=tmp_path / "c.sqlite3")
    for i in range(5):
        store.add_anomaly(kind="fork", gateway=f"gw-{i % 2}", detail=str(i), now=i)
    assert [a.detail for a in store.anomalies(limit=2)] == ["0", "1"]
    first = store.anomalies(limit=2)[-1].id
    assert [a.detail for a in store.anomalies(after=first)] == ["2", "3", "4"]
    assert [a.detail for a in store.anomalies(gateway="gw-1")] == ["1", "3"]
