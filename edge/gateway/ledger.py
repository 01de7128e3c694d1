"""The settlement ledger: SQLite in WAL mode with ``synchronous=FULL``, versioned schema.

Each settled trade is written by :meth:`Ledger.settle` in ONE transaction (DESIGN.md
"Settlement records"): the trade (status ``pending``, ``chain_ref`` ``pending``), both orders'
fills, the seller's yield record, the liquidity pool's commission record, the token burn and the
carbon credit. After a crash at any instant a trade is therefore wholly settled or absent.
Delivery outcomes, sealed batches and the outbox live here too. The schema is in
docs/gateway.md ("Ledger schema"); ``PRAGMA user_version`` holds its version and
:data:`MIGRATIONS` brings an older file up to date inside one transaction.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge.batch import DeliveryRecord, TradeRecord
from edge.errors import GatewayError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ActiveLock",
    "Ledger",
    "LedgerError",
    "StoredBatch",
    "batch_file_name",
]


class LedgerError(GatewayError):
    """The ledger file is unusable (newer schema, corrupt, not writable)."""


_V1 = """
CREATE TABLE trades (
    id TEXT PRIMARY KEY,
    buy TEXT NOT NULL, sell TEXT NOT NULL, buyer TEXT NOT NULL, seller TEXT NOT NULL,
    wh INTEGER NOT NULL CHECK (wh > 0), price INTEGER NOT NULL, interval INTEGER NOT NULL,
    ts INTEGER NOT NULL, maker TEXT NOT NULL, settled_ts INTEGER NOT NULL,
    meter TEXT NOT NULL, export_start_wh INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','delivered','defaulted')),
    delivered_wh INTEGER,
    chain_ref TEXT NOT NULL DEFAULT 'pending',
    value INTEGER NOT NULL, buyer_pays INTEGER NOT NULL, seller_receives INTEGER NOT NULL,
    commission INTEGER NOT NULL, grid_fee INTEGER NOT NULL, yield_accrual INTEGER NOT NULL,
    tokens_burned INTEGER NOT NULL, carbon_mg INTEGER NOT NULL,
    commitment BLOB NOT NULL, proof BLOB NOT NULL,
    soc_threshold_bp INTEGER NOT NULL, soc_reserved_bp INTEGER NOT NULL,
    batch_seq INTEGER
);
CREATE TABLE fills (
    trade TEXT NOT NULL REFERENCES trades(id), side TEXT NOT NULL CHECK (side IN ('buy','sell')),
    order_id TEXT NOT NULL, home TEXT NOT NULL, wh INTEGER NOT NULL,
    PRIMARY KEY (trade, side)
);
CREATE TABLE yields (
    trade TEXT NOT NULL REFERENCES trades(id),
    kind TEXT NOT NULL CHECK (kind IN ('seller_yield','pool_commission')),
    account TEXT NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (trade, kind)
);
CREATE TABLE token_burns (
    trade TEXT PRIMARY KEY REFERENCES trades(id), tokens INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE carbon_credits (
    trade TEXT PRIMARY KEY REFERENCES trades(id), home TEXT NOT NULL, mg INTEGER NOT NULL
);
CREATE TABLE deliveries (
    trade TEXT PRIMARY KEY REFERENCES trades(id),
    status TEXT NOT NULL CHECK (status IN ('delivered','defaulted')),
    wh INTEGER NOT NULL, delivered_wh INTEGER NOT NULL, ts INTEGER NOT NULL,
    batch_seq INTEGER
);
CREATE TABLE batches (
    seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, created_ts INTEGER NOT NULL,
    log_last INTEGER NOT NULL, body BLOB NOT NULL,
    uploaded_ts INTEGER, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX trades_batch ON trades (batch_seq);
CREATE INDEX trades_buyer ON trades (buyer);
CREATE INDEX trades_seller ON trades (seller);
"""


def _v2(db: sqlite3.Connection) -> None:
    """Version 2: a trade's batch record names its seller's meter (``trades.meter``, kept since
    version 1) and its range proof is bound to it (edge.batch ``proof_context``, domain
    ``ngrid/soc-cover/2``, batch format ``ngrid-batch/2``). A trade settled under version 1 has
    a proof bound to the old context, which no coordinator of this version verifies: the
    upgrade is refused while such a trade is not yet in a batch (seal and upload it with the
    previous version first). Adds an index for per-meter queries."""
    (waiting,) = db.execute("SELECT COUNT(*) FROM trades WHERE batch_seq IS NULL").fetchone()
    if waiting:
        raise LedgerError(
            f"{waiting} trades settled under ledger schema 1 are not in a batch yet; their "
            "proofs are bound to the old proof context: let the previous gateway version seal "
            "and upload them, then upgrade"
        )
    db.execute("CREATE INDEX trades_meter ON trades (meter)")


#: ``MIGRATIONS[n]`` takes a file at schema version ``n`` to ``n + 1``: SQL statements, or a
#: function run inside the migration's transaction (raising aborts the upgrade, nothing changed).
MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (_V1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)

POOL_ACCOUNT = "pool"

#: Fault injection for the crash tests (tests/integration/test_gateway_crash.py): when set to
#: ``n``, the process SIGKILLs itself inside the ``n``-th settlement transaction, after the trade
#: and fill rows are written and before the commit. Never set in production.
CRASH_ENV = "NGRID_TEST_CRASH_IN_SETTLEMENT"


@dataclass(frozen=True, kw_only=True)
class ActiveLock:
    """A settled trade whose delivery is not decided yet."""

    trade: str
    meter: str
    seller: str
    wh: int
    interval: int
    export_start_wh: int
    buyer: str
    price: int  # ticks per kWh


@dataclass(frozen=True)
class StoredBatch:
    """A sealed batch in the outbox: ``body`` its canonical bytes, ``hash`` its header hash."""

    seq: int
    hash: bytes
    body: bytes
    log_last: int
    uploaded_ts: int | None
    attempts: int


_TRADE_COLUMNS = [f.name for f in fields(TradeRecord)]
#: The trade columns the read methods (:meth:`Ledger.trades`, :meth:`Ledger.trades_of`) return.
_PUBLIC_COLUMNS = (
    "id, buy, sell, buyer, seller, wh, price, interval, ts, settled_ts, status, delivered_wh, "
    "chain_ref, value, buyer_pays, seller_receives, commission, grid_fee, batch_seq"
)


class Ledger:
    """The gateway's SQLite ledger. One user at a time: the service calls it from its disk
    thread only (``GatewayService.disk``). While a thread is bound (:meth:`bind_thread`), a
    call from any other thread raises :class:`LedgerError` instead of reading a transaction
    half-written by the disk thread on the shared connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._owner: int | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        crash = os.environ.get(CRASH_ENV, "")
        self._crash_countdown = int(crash) if crash.isdigit() else 0
        try:
            # Used by the service's one disk thread (created on the loop's thread).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise LedgerError(f"cannot open the ledger {self.path}: {err}") from err

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the bound thread (or anyone while none is bound)."""
        if self._owner is not None and threading.get_ident() != self._owner:
            raise LedgerError(
                "the ledger belongs to the gateway's disk thread while the service runs: "
                "call it through GatewayService.disk (e.g. await service.disk(ledger.totals))"
            )
        return self._db

    def bind_thread(self) -> None:
        """Only the calling thread may use the ledger from now on (until :meth:`unbind`)."""
        self._owner = threading.get_ident()

    def unbind(self) -> None:
        """Any thread may use the ledger again (the service has stopped its disk thread)."""
        self._owner = None

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} has schema version {version}, newer than this gateway's "
                f"{SCHEMA_VERSION}: upgrade neighbourgrid"
            )
        for n in range(version, SCHEMA_VERSION):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                migration = MIGRATIONS[n]
                if callable(migration):
                    migration(self.db)
                else:
                    for statement in migration.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={n + 1}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ settlement

    def settle(self, trade: TradeRecord, *, export_start_wh: int) -> bool:
        """Write a trade's settlement records in one transaction; False if already settled.
        ``trade.meter`` is the seller's meter (column ``meter``)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM trades WHERE id=?", (trade.id,)).fetchone():
                db.execute("ROLLBACK")
                return False
            row = trade.to_json()
            row["commitment"], row["proof"] = trade.commitment, trade.proof
            cols = [*_TRADE_COLUMNS, "export_start_wh"]
            db.execute(
                f"INSERT INTO trades ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                [*(row[c] for c in _TRADE_COLUMNS), export_start_wh],
            )
            db.executemany(
                "INSERT INTO fills (trade, side, order_id, home, wh) VALUES (?,?,?,?,?)",
                [
                    (trade.id, "buy", trade.buy, trade.buyer, trade.wh),
                    (trade.id, "sell", trade.sell, trade.seller, trade.wh),
                ],
            )
            if self._crash_countdown:
                self._crash_countdown -= 1
                if not self._crash_countdown:
                    os.kill(os.getpid(), signal.SIGKILL)
            db.executemany(
                "INSERT INTO yields (trade, kind, account, amount) VALUES (?,?,?,?)",
                [
                    (trade.id, "seller_yield", trade.seller, trade.yield_accrual),
                    (trade.id, "pool_commission", POOL_ACCOUNT, trade.commission),
                ],
            )
            db.execute(
                "INSERT INTO token_burns (trade, tokens, reason) VALUES (?,?,?)",
                (trade.id, trade.tokens_burned, "trade_settlement"),
            )
            db.execute(
                "INSERT INTO carbon_credits (trade, home, mg) VALUES (?,?,?)",
                (trade.id, trade.seller, trade.carbon_mg),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return True

    def record_delivery(self, delivery: DeliveryRecord) -> None:
        """Record a lock's delivery outcome and update the trade's status (one transaction)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO deliveries (trade, status, wh, delivered_wh, ts) "
                "VALUES (?,?,?,?,?)",
                (delivery.trade, delivery.status, delivery.wh, delivery.delivered_wh, delivery.ts),
            )
            db.execute(
                "UPDATE trades SET status=?, delivered_wh=? WHERE id=? AND status='pending'",
                (delivery.status, delivery.delivered_wh, delivery.trade),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ queries

    def settled_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM trades")}

    def active_locks(self) -> list[ActiveLock]:
        cur = self.db.execute(
            "SELECT id AS trade, meter, seller, wh, interval, export_start_wh, buyer, price "
            "FROM trades WHERE status='pending' ORDER BY rowid"
        )
        return [ActiveLock(**_row(cur, r)) for r in cur.fetchall()]

    def trade(self, trade_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM trades WHERE id=?", (trade_id,))
        row = cur.fetchone()
        return None if row is None else _row(cur, row)

    def trades_of(self, home: str, *, limit: int = 500) -> list[dict[str, Any]]:
        """A home's trades as buyer or seller, newest first (at most ``limit``)."""
        cur = self.db.execute(
            f"SELECT {_PUBLIC_COLUMNS} FROM trades WHERE buyer=? OR seller=? "
            "ORDER BY rowid DESC LIMIT ?",
            (home, home, limit),
        )
        return [_row(cur, r) for r in cur.fetchall()]

    def trades(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Every settled trade in settlement order (the first ``limit`` if given), with the
        columns of :meth:`trades_of`: ids, parties, ``wh``, ``price`` (ticks/kWh),
        ``interval``, ``status``, ``delivered_wh`` and the settlement amounts (µticks)."""
        cur = self.db.execute(
            f"SELECT {_PUBLIC_COLUMNS} FROM trades ORDER BY rowid LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [_row(cur, r) for r in cur.fetchall()]

    def statement(self, home: str) -> dict[str, int]:
        """A home's totals: energy and money bought and sold, yield, carbon credit (integers)."""
        db = self.db
        bought = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(wh),0), COALESCE(SUM(buyer_pays),0) FROM trades "
            "WHERE buyer=?",
            (home,),
        ).fetchone()
        sold = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(wh),0), COALESCE(SUM(seller_receives),0), "
            "COALESCE(SUM(COALESCE(delivered_wh, 0)),0) FROM trades WHERE seller=?",
            (home,),
        ).fetchone()
        yields = db.execute(
            "SELECT COALESCE(SUM(amount),0) FROM yields WHERE account=? AND kind='seller_yield'",
            (home,),
        ).fetchone()
        carbon = db.execute(
            "SELECT COALESCE(SUM(mg),0) FROM carbon_credits WHERE home=?", (home,)
        ).fetchone()
        defaulted = db.execute(
            "SELECT COUNT(*) FROM trades WHERE seller=? AND status='defaulted'", (home,)
        ).fetchone()
        return {
            "bought_trades": bought[0],
            "bought_wh": bought[1],
            "paid_microticks": bought[2],
            "sold_trades": sold[0],
            "sold_wh": sold[1],
            "received_microticks": sold[2],
            "delivered_wh": sold[3],
            "defaulted_trades": defaulted[0],
            "yield_microticks": yields[0],
            "carbon_mg": carbon[0],
        }

    def totals(self) -> dict[str, int]:
        """Ledger-wide sums, for consistency checks and reports: ``trades``, ``wh``, ``value``
        (sum of Wh x price, Wh-ticks/kWh), money (microticks), ``wh_delivered`` and
        ``defaults`` (over trades whose delivery is decided), burns and carbon (mg)."""
        db = self.db
        t = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(wh),0), COALESCE(SUM(buyer_pays),0), "
            "COALESCE(SUM(seller_receives),0), COALESCE(SUM(commission),0), "
            "COALESCE(SUM(grid_fee),0), COALESCE(SUM(wh*price),0), "
            "COALESCE(SUM(CASE WHEN status!='pending' THEN delivered_wh ELSE 0 END),0), "
            "COALESCE(SUM(status='defaulted'),0) FROM trades"
        ).fetchone()
        return {
            "trades": t[0],
            "wh": t[1],
            "buyer_pays": t[2],
            "seller_receives": t[3],
            "commission": t[4],
            "grid_fee": t[5],
            "value": t[6],
            "wh_delivered": t[7],
            "defaults": t[8],
            "carbon_mg": db.execute("SELECT COALESCE(SUM(mg),0) FROM carbon_credits").fetchone()[0],
            "fills": db.execute("SELECT COUNT(*) FROM fills").fetchone()[0],
            "yields": db.execute("SELECT COUNT(*) FROM yields").fetchone()[0],
            "token_burns": db.execute("SELECT COALESCE(SUM(tokens),0) FROM token_burns").fetchone()[
                0
            ],
            "burn_records": db.execute("SELECT COUNT(*) FROM token_burns").fetchone()[0],
            "carbon_records": db.execute("SELECT COUNT(*) FROM carbon_credits").fetchone()[0],
        }

    # ------------------------------------------------------------------ batches and outbox

    def unbatched(self) -> tuple[list[TradeRecord], list[DeliveryRecord]]:
        """Settled trades and delivery outcomes not yet in a batch, in settlement order."""
        cur = self.db.execute(
            f"SELECT {','.join(_TRADE_COLUMNS)} FROM trades WHERE batch_seq IS NULL ORDER BY rowid"
        )
        trades = [TradeRecord(**dict(zip(_TRADE_COLUMNS, r, strict=True))) for r in cur]
        dcur = self.db.execute(
            "SELECT trade, status, wh, delivered_wh, ts FROM deliveries "
            "WHERE batch_seq IS NULL ORDER BY rowid"
        )
        deliveries = [
            DeliveryRecord(trade=r[0], status=r[1], wh=r[2], delivered_wh=r[3], ts=r[4])
            for r in dcur
        ]
        return trades, deliveries

    def last_batch(self) -> StoredBatch | None:
        cur = self.db.execute(
            "SELECT seq, hash, body, log_last, uploaded_ts, attempts FROM batches "
            "ORDER BY seq DESC LIMIT 1"
        )
        row = cur.fetchone()
        return None if row is None else StoredBatch(*row)

    def store_batch(
        self,
        *,
        seq: int,
        hash: bytes,
        created_ts: int,
        log_last: int,
        body: bytes,
        trades: Iterable[str],
        deliveries: Iterable[str],
    ) -> None:
        """Queue a sealed batch in the outbox and mark its contents batched (one transaction)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO batches (seq, hash, created_ts, log_last, body) VALUES (?,?,?,?,?)",
                (seq, hash, created_ts, log_last, body),
            )
            db.executemany("UPDATE trades SET batch_seq=? WHERE id=?", [(seq, t) for t in trades])
            db.executemany(
                "UPDATE deliveries SET batch_seq=? WHERE trade=?", [(seq, t) for t in deliveries]
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def outbox(self) -> list[StoredBatch]:
        """Batches not yet accepted by the coordinator, oldest first."""
        cur = self.db.execute(
            "SELECT seq, hash, body, log_last, uploaded_ts, attempts FROM batches "
            "WHERE uploaded_ts IS NULL ORDER BY seq"
        )
        return [StoredBatch(*r) for r in cur]

    def outbox_next(self) -> StoredBatch | None:
        """The oldest batch not yet accepted by the coordinator, or None: the uploader takes
        one at a time, so a long outage does not load every queued body at once."""
        cur = self.db.execute(
            "SELECT seq, hash, body, log_last, uploaded_ts, attempts FROM batches "
            "WHERE uploaded_ts IS NULL ORDER BY seq LIMIT 1"
        )
        row = cur.fetchone()
        return None if row is None else StoredBatch(*row)

    def outbox_count(self) -> int:
        """How many batches wait for the coordinator."""
        row = self.db.execute("SELECT COUNT(*) FROM batches WHERE uploaded_ts IS NULL").fetchone()
        return int(row[0])

    def mark_uploaded(self, seq: int, ts: int) -> None:
        self.db.execute("UPDATE batches SET uploaded_ts=? WHERE seq=?", (ts, seq))

    def count_attempt(self, seq: int) -> None:
        self.db.execute("UPDATE batches SET attempts=attempts+1 WHERE seq=?", (seq,))

    def batches(self, *, first: int = 1) -> Iterator[StoredBatch]:
        """Every stored batch from seq ``first`` on, uploaded or not, in chain order; read one
        at a time, so a long history is never in memory at once."""
        last = first - 1
        while True:
            row = self.db.execute(
                "SELECT seq, hash, body, log_last, uploaded_ts, attempts FROM batches "
                "WHERE seq > ? ORDER BY seq LIMIT 1",
                (last,),
            ).fetchone()
            if row is None:
                return
            batch = StoredBatch(*row)
            last = batch.seq
            yield batch

    def export_batches(self, directory: Path, *, first: int = 1) -> list[tuple[int, Path]]:
        """Write each stored batch from seq ``first`` on into ``directory`` as
        :func:`batch_file_name` (``batch-000001.json`` …, so the names sort in chain order):
        its canonical bytes exactly as uploaded, which ``ngrid coordinator verify`` reads.
        Each file is written atomically (a file of the same name is replaced). Returns
        ``(seq, path)`` per batch, in chain order."""
        from edge.configfile import atomic_write_bytes

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for batch in self.batches(first=first):
            path = directory / batch_file_name(batch.seq)
            atomic_write_bytes(path, batch.body, mode=0o644)
            written.append((batch.seq, path))
        return written

    # ------------------------------------------------------------------ meta

    def meter_seqs(self) -> dict[tuple[str, str], int]:
        """The saved highest accepted seq per (meter, topic leaf)."""
        out = {}
        for key, value in self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'seq:%'"):
            _, meter, leaf = key.split(":", 2)
            out[(meter, leaf)] = int(value)
        return out

    def save_meter_seqs(self, seqs: Mapping[tuple[str, str], int]) -> None:
        self.set_meta([(f"seq:{meter}:{leaf}", str(seq)) for (meter, leaf), seq in seqs.items()])

    def save_snapshot(self, log_seq: int, engine: bytes, home_orders: Mapping[str, Any]) -> None:
        """Keep the latest engine snapshot (meta ``snapshot``: JSON with the engine bytes)."""
        body = {"log_seq": log_seq, "engine": engine.decode(), "home_orders": home_orders}
        self.set_meta([("snapshot", json.dumps(body))])

    def load_snapshot(self) -> tuple[int, bytes, dict[str, list[str]]] | None:
        text = self.get_meta("snapshot")
        if text is None:
            return None
        body = json.loads(text)
        return int(body["log_seq"]), body["engine"].encode(), dict(body["home_orders"])

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, items: Sequence[tuple[str, str]]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO meta (key, value) VALUES (?,?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                items,
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


def batch_file_name(seq: int) -> str:
    """The file a batch is exported to: ``batch-000007.json`` (six digits, so names sort in
    chain order up to seq 999999)."""
    return f"batch-{seq:06d}.json"


def _row(cur: sqlite3.Cursor, row: Sequence[Any]) -> dict[str, Any]:
    out = {}
    for desc, value in zip(cur.description, row, strict=True):
        out[desc[0]] = value.hex() if isinstance(value, bytes) else value
    return out
