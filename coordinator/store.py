"""The coordinator's SQLite store (WAL, synchronous=FULL): registry, batches, chains, receipts.

Schema (version :data:`SCHEMA_VERSION`, in ``meta``)::

    meta(key PK, value)                               schema_version
    gateways(id PK, public_key BLOB(32), registered_ts, registration JSON)
    gateway_meters(meter PK, gateway)                 a meter belongs to one gateway only
    batches(id PK, gateway, seq, hash BLOB, digest BLOB UNIQUE, body BLOB, status, fork,
            trades, findings JSON, received_ts, verified_ts,
            anchor_status, anchor_tx, anchor_ledger, anchor_chain BLOB, anchor_error)
        status: accepted | held | refused; at most one accepted per (gateway, seq).
        digest: SHA-256 of the canonical body (what makes a re-submission "the same batch").
        hash: edge.batch.batch_hash (the header hash: chained, and what is anchored).
        anchor_status: pending | anchored | refused (accepted batches only).
    chains(gateway PK, seq, hash, log_last, engine BLOB, open_trades JSON)
        the verifier's ChainState after the gateway's last accepted batch
    trades(gateway, trade, batch_seq, idx, wh, commitment BLOB UNIQUE; PK (gateway, trade))
        every trade of an accepted batch: receipts and the uniqueness checks
    deliveries(gateway, trade, batch_seq, status; PK (gateway, trade))
    anomalies(id PK, ts, kind, gateway, seq, batch_hash BLOB, detail)

Times are ms since the Unix epoch, passed in by the caller. Each write is one transaction, so a
crash leaves a batch either wholly recorded (with its trades, chain and anomalies) or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.errors import RegistrationConflict, StoreError
from coordinator.verify import ChainState, GatewayKey, SettledTrade, Verification
from edge.batch import Batch

__all__ = [
    "SCHEMA_VERSION",
    "Anomaly",
    "BatchRow",
    "Registration",
    "RegistrationConflict",
    "Store",
    "StoreError",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    registered_ts INTEGER NOT NULL,
    registration TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_meters (
    meter TEXT PRIMARY KEY,
    gateway TEXT NOT NULL REFERENCES gateways(id)
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    digest BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'held', 'refused')),
    fork INTEGER NOT NULL DEFAULT 0,
    trades INTEGER NOT NULL,
    findings TEXT NOT NULL,
    received_ts INTEGER NOT NULL,
    verified_ts INTEGER,
    anchor_status TEXT CHECK (anchor_status IN ('pending', 'anchored', 'refused')),
    anchor_tx TEXT,
    anchor_ledger INTEGER,
    anchor_chain BLOB,
    anchor_error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_accepted ON batches (gateway, seq)
    WHERE status = 'accepted';
CREATE INDEX IF NOT EXISTS batches_by_seq ON batches (gateway, seq);
CREATE INDEX IF NOT EXISTS batches_pending ON batches (anchor_status)
    WHERE anchor_status = 'pending';
CREATE TABLE IF NOT EXISTS chains (
    gateway TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    log_last INTEGER NOT NULL,
    engine BLOB,
    open_trades TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    gateway TEXT NOT NULL,
    trade TEXT NOT NULL,
    batch_seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    wh INTEGER NOT NULL,
    commitment BLOB NOT NULL UNIQUE,
    PRIMARY KEY (gateway, trade)
);
CREATE TABLE IF NOT EXISTS deliveries (
    gateway TEXT NOT NULL,
    trade TEXT NOT NULL,
    batch_seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (gateway, trade)
);
CREATE TABLE IF NOT EXISTS anomalies (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq INTEGER,
    batch_hash BLOB,
    detail TEXT NOT NULL
);
"""

_BATCH_COLUMNS = (
    "id, gateway, seq, hash, digest, status, fork, trades, findings, received_ts, verified_ts, "
    "anchor_status, anchor_tx, anchor_ledger, anchor_chain, anchor_error"
)
_CHUNK = 500


@dataclass(frozen=True, kw_only=True)
class Registration:
    """A checked registration request (``ngrid provision gateway``'s registration.json)."""

    gateway: str
    public_key: bytes
    meters: tuple[str, ...]
    document: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class BatchRow:
    """A stored batch without its body; ``findings`` as JSON objects."""

    id: int
    gateway: str
    seq: int
    hash: bytes
    digest: bytes
    status: str
    fork: bool
    trades: int
    findings: list[dict[str, Any]]
    received_ts: int
    verified_ts: int | None
    anchor_status: str | None
    anchor_tx: str | None
    anchor_ledger: int | None
    anchor_chain: bytes | None
    anchor_error: str | None

    def to_json(self) -> dict[str, Any]:
        anchor: dict[str, Any] | None = None
        if self.anchor_status is not None:
            anchor = {
                "status": self.anchor_status,
                "tx_hash": self.anchor_tx,
                "ledger": self.anchor_ledger,
                "chain": self.anchor_chain.hex() if self.anchor_chain else None,
                "error": self.anchor_error,
            }
        return {
            "gateway": self.gateway,
            "seq": self.seq,
            "hash": self.hash.hex(),
            "status": self.status,
            "fork": self.fork,
            "trades": self.trades,
            "received_ts": self.received_ts,
            "verified_ts": self.verified_ts,
            "anchor": anchor,
            "findings": self.findings,
        }


@dataclass(frozen=True, kw_only=True)
class Anomaly:
    id: int
    ts: int
    kind: str
    gateway: str
    seq: int | None
    batch_hash: bytes | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "kind": self.kind,
            "gateway": self.gateway,
            "seq": self.seq,
            "batch_hash": self.batch_hash.hex() if self.batch_hash else None,
            "detail": self.detail,
        }


def _batch_row(row: Sequence[Any]) -> BatchRow:
    return BatchRow(
        id=row[0],
        gateway=row[1],
        seq=row[2],
        hash=row[3],
        digest=row[4],
        status=row[5],
        fork=bool(row[6]),
        trades=row[7],
        findings=json.loads(row[8]),
        received_ts=row[9],
        verified_ts=row[10],
        anchor_status=row[11],
        anchor_tx=row[12],
        anchor_ledger=row[13],
        anchor_chain=row[14],
        anchor_error=row[15],
    )


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class PrefetchedHistory:
    """The answers a verification of one batch needs, read up front (the verifier then runs
    without the database, in a worker thread). Asking for anything not prefetched is a bug."""

    def __init__(
        self,
        *,
        gateway: str,
        accepted: Mapping[int, bytes],
        settled: Mapping[str, SettledTrade],
        settled_asked: Collection[str],
        owners: Mapping[bytes, tuple[str, str]],
        owners_asked: Collection[bytes],
        delivered: Collection[str],
        delivered_asked: Collection[str],
    ) -> None:
        self.gateway = gateway
        self._accepted = accepted
        self._settled = settled
        self._settled_asked = set(settled_asked)
        self._owners = owners
        self._owners_asked = set(owners_asked)
        self._delivered = set(delivered)
        self._delivered_asked = set(delivered_asked)

    def accepted_hash(self, gateway: str, seq: int) -> bytes | None:
        assert gateway == self.gateway
        return self._accepted.get(seq)

    def settled(self, gateway: str, trades: Collection[str]) -> Mapping[str, SettledTrade]:
        assert gateway == self.gateway and self._settled_asked.issuperset(trades)
        return {t: self._settled[t] for t in trades if t in self._settled}

    def commitment_owners(self, commitments: Collection[bytes]) -> Mapping[bytes, tuple[str, str]]:
        assert self._owners_asked.issuperset(commitments)
        return {c: self._owners[c] for c in commitments if c in self._owners}

    def delivered(self, gateway: str, trades: Collection[str]) -> Collection[str]:
        assert gateway == self.gateway and self._delivered_asked.issuperset(trades)
        return {t for t in trades if t in self._delivered}


class Store:
    """The coordinator's database. One instance per process; not thread-safe (use it from the
    event loop's thread; the verifier gets a :class:`PrefetchedHistory`)."""

    def __init__(self, *, path: Path | str) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as err:
            raise StoreError(f"cannot open the store {path}: {err}") from err

    def _migrate(self) -> None:
        with self._tx():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row[0]}; this coordinator knows "
                    f"{SCHEMA_VERSION}"
                )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def schema_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ registry

    def register(self, reg: Registration, *, now: int) -> str:
        """Add or refresh a gateway; return ``created``, ``updated`` or ``unchanged``.

        Raises :class:`RegistrationConflict` if the gateway has another key, or one of its meters
        belongs to another gateway (nothing is written then).
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT public_key FROM gateways WHERE id=?", (reg.gateway,)
            ).fetchone()
            if row is not None and bytes(row[0]) != reg.public_key:
                raise RegistrationConflict(
                    f"gateway {reg.gateway} is registered with another public key", reason="key"
                )
            clashes: list[str] = []
            for part in _chunks(list(reg.meters)):
                marks = ",".join("?" * len(part))
                clashes += [
                    f"{m} ({g})"
                    for m, g in db.execute(
                        f"SELECT meter, gateway FROM gateway_meters WHERE meter IN ({marks}) "
                        "AND gateway != ?",
                        (*part, reg.gateway),
                    )
                ]
            if clashes:
                raise RegistrationConflict(
                    "meters already registered under another gateway: "
                    + ", ".join(sorted(clashes)),
                    reason="meter",
                )
            before = {
                m
                for (m,) in db.execute(
                    "SELECT meter FROM gateway_meters WHERE gateway=?", (reg.gateway,)
                )
            }
            document = json.dumps(dict(reg.document), sort_keys=True)
            if row is None:
                db.execute(
                    "INSERT INTO gateways (id, public_key, registered_ts, registration) "
                    "VALUES (?,?,?,?)",
                    (reg.gateway, reg.public_key, now, document),
                )
                outcome = "created"
            elif before == set(reg.meters):
                return "unchanged"
            else:
                db.execute("UPDATE gateways SET registration=? WHERE id=?", (document, reg.gateway))
                outcome = "updated"
            db.execute("DELETE FROM gateway_meters WHERE gateway=?", (reg.gateway,))
            db.executemany(
                "INSERT INTO gateway_meters (meter, gateway) VALUES (?,?)",
                [(m, reg.gateway) for m in sorted(set(reg.meters))],
            )
            return outcome

    def registry(self) -> dict[str, GatewayKey]:
        meters: dict[str, set[str]] = {}
        for meter, gateway in self.db.execute("SELECT meter, gateway FROM gateway_meters"):
            meters.setdefault(gateway, set()).add(meter)
        return {
            gid: GatewayKey(id=gid, public_key=bytes(key), meters=frozenset(meters.get(gid, ())))
            for gid, key in self.db.execute("SELECT id, public_key FROM gateways")
        }

    def gateways(self) -> list[dict[str, Any]]:
        out = []
        for gid, key, ts in self.db.execute(
            "SELECT id, public_key, registered_ts FROM gateways ORDER BY id"
        ):
            meters = [
                m
                for (m,) in self.db.execute(
                    "SELECT meter FROM gateway_meters WHERE gateway=? ORDER BY meter", (gid,)
                )
            ]
            chain = self.chain(gid)
            out.append(
                {
                    "id": gid,
                    "public_key": bytes(key).hex(),
                    "registered_ts": ts,
                    "meters": meters,
                    "last_seq": chain.seq,
                }
            )
        return out

    # ------------------------------------------------------------------ chains, history

    def chain(self, gateway: str) -> ChainState:
        row = self.db.execute(
            "SELECT seq, hash, log_last, engine, open_trades FROM chains WHERE gateway=?",
            (gateway,),
        ).fetchone()
        if row is None:
            return ChainState()
        return ChainState(
            seq=row[0],
            hash=bytes(row[1]),
            log_last=row[2],
            engine=bytes(row[3]) if row[3] is not None else None,
            open_trades=frozenset(json.loads(row[4])),
        )

    def history_for(self, batch: Batch) -> PrefetchedHistory:
        """Everything :func:`coordinator.verify.verify_batch` will ask about ``batch``."""
        gw = batch.header.gateway
        voids = [str(e["trade"]) for e in batch.log if e.get("op") == "void" and "trade" in e]
        ids = sorted(
            {t.id for t in batch.trades} | set(voids) | {d.trade for d in batch.deliveries}
        )
        settled: dict[str, SettledTrade] = {}
        for part in _chunks(ids):
            marks = ",".join("?" * len(part))
            for trade, seq, wh in self.db.execute(
                f"SELECT trade, batch_seq, wh FROM trades WHERE gateway=? AND trade IN ({marks})",
                (gw, *part),
            ):
                settled[trade] = SettledTrade(batch_seq=seq, wh=wh)
        commitments = [t.commitment for t in batch.trades]
        owners: dict[bytes, tuple[str, str]] = {}
        for part in _chunks(commitments):
            marks = ",".join("?" * len(part))
            for c, g, t in self.db.execute(
                f"SELECT commitment, gateway, trade FROM trades WHERE commitment IN ({marks})",
                tuple(part),
            ):
                owners[bytes(c)] = (g, t)
        delivery_ids = [d.trade for d in batch.deliveries]
        delivered: set[str] = set()
        for part in _chunks(delivery_ids):
            marks = ",".join("?" * len(part))
            delivered |= {
                t
                for (t,) in self.db.execute(
                    f"SELECT trade FROM deliveries WHERE gateway=? AND trade IN ({marks})",
                    (gw, *part),
                )
            }
        accepted: dict[int, bytes] = {}
        row = self.db.execute(
            "SELECT hash FROM batches WHERE gateway=? AND seq=? AND status='accepted'",
            (gw, batch.header.seq),
        ).fetchone()
        if row is not None:
            accepted[batch.header.seq] = bytes(row[0])
        return PrefetchedHistory(
            gateway=gw,
            accepted=accepted,
            settled=settled,
            settled_asked=ids,
            owners=owners,
            owners_asked=commitments,
            delivered=delivered,
            delivered_asked=delivery_ids,
        )

    # ------------------------------------------------------------------ batches

    def by_digest(self, digest: bytes) -> BatchRow | None:
        row = self.db.execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE digest=?", (digest,)
        ).fetchone()
        return _batch_row(row) if row else None

    def batch(self, gateway: str, seq: int) -> BatchRow | None:
        """The accepted batch ``seq`` of ``gateway``, else the latest one received with it."""
        row = self.db.execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE gateway=? AND seq=? "
            "ORDER BY status='accepted' DESC, id DESC LIMIT 1",
            (gateway, seq),
        ).fetchone()
        return _batch_row(row) if row else None

    def body(self, batch_id: int) -> bytes:
        row = self.db.execute("SELECT body FROM batches WHERE id=?", (batch_id,)).fetchone()
        if row is None:
            raise KeyError(batch_id)
        return bytes(row[0])

    def held(self, gateway: str, seq: int) -> list[BatchRow]:
        """Held batches of ``gateway`` with sequence number ``seq``, oldest first."""
        return [
            _batch_row(r)
            for r in self.db.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE gateway=? AND seq=? "
                "AND status='held' ORDER BY id",
                (gateway, seq),
            )
        ]

    def held_gateways(self) -> list[str]:
        return [
            g
            for (g,) in self.db.execute("SELECT DISTINCT gateway FROM batches WHERE status='held'")
        ]

    def record(
        self,
        *,
        batch: Batch,
        body: bytes,
        digest: bytes,
        verification: Verification,
        now: int,
        row_id: int | None = None,
    ) -> BatchRow:
        """Store ``batch`` with its verification, in one transaction.

        ``row_id`` re-records a held batch. An accepted batch also writes its trades and
        deliveries, the gateway's new chain state and an anchoring job (``pending``); a
        refused one raises an anomaly (``fork`` or ``refused``).
        """
        v = verification
        status = {"accepted": "accepted", "held": "held"}.get(v.verdict, "refused")
        findings = json.dumps([f.to_json() for f in v.findings])
        anchor = "pending" if status == "accepted" else None
        h = batch.header
        with self._tx() as db:
            if row_id is None:
                cur = db.execute(
                    "INSERT INTO batches (gateway, seq, hash, digest, body, status, fork, trades, "
                    "findings, received_ts, verified_ts, anchor_status) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        h.gateway,
                        h.seq,
                        v.hash,
                        digest,
                        body,
                        status,
                        int(v.fork),
                        len(batch.trades),
                        findings,
                        now,
                        None if status == "held" else now,
                        anchor,
                    ),
                )
                row_id = int(cur.lastrowid or 0)
            else:
                db.execute(
                    "UPDATE batches SET status=?, fork=?, findings=?, verified_ts=?, "
                    "anchor_status=? WHERE id=?",
                    (status, int(v.fork), findings, now, anchor, row_id),
                )
            if status == "accepted":
                assert v.state is not None
                db.executemany(
                    "INSERT INTO trades (gateway, trade, batch_seq, idx, wh, commitment) "
                    "VALUES (?,?,?,?,?,?)",
                    [
                        (h.gateway, t.id, h.seq, i, t.wh, t.commitment)
                        for i, t in enumerate(batch.trades)
                    ],
                )
                db.executemany(
                    "INSERT INTO deliveries (gateway, trade, batch_seq, status) VALUES (?,?,?,?)",
                    [(h.gateway, d.trade, h.seq, d.status) for d in batch.deliveries],
                )
                db.execute(
                    "INSERT INTO chains (gateway, seq, hash, log_last, engine, open_trades) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (gateway) DO UPDATE SET seq=excluded.seq, "
                    "hash=excluded.hash, log_last=excluded.log_last, engine=excluded.engine, "
                    "open_trades=excluded.open_trades",
                    (
                        h.gateway,
                        v.state.seq,
                        v.state.hash,
                        v.state.log_last,
                        v.state.engine,
                        json.dumps(sorted(v.state.open_trades)),
                    ),
                )
            elif status == "refused":
                kinds = {f.check for f in v.failures}
                kind = (
                    "fork"
                    if v.fork
                    else "cross_gateway"
                    if kinds & {"trade.cross_gateway", "meter.cross_gateway"}
                    else "refused"
                )
                detail = "; ".join(
                    f"{f.check}{f' [{f.trade}]' if f.trade else ''}: {f.detail}"
                    for f in v.failures[:20]
                )
                if len(v.failures) > 20:
                    detail += f"; … {len(v.failures) - 20} more"
                db.execute(
                    "INSERT INTO anomalies (ts, kind, gateway, seq, batch_hash, detail) "
                    "VALUES (?,?,?,?,?,?)",
                    (now, kind, h.gateway, h.seq, v.hash, detail),
                )
        row = self.db.execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id=?", (row_id,)
        ).fetchone()
        return _batch_row(row)

    # ------------------------------------------------------------------ receipts

    def trade_batch(self, gateway: str, trade: str) -> tuple[BatchRow, int] | None:
        """The accepted batch holding ``(gateway, trade)`` and the trade's index in it."""
        row = self.db.execute(
            "SELECT batch_seq, idx FROM trades WHERE gateway=? AND trade=?", (gateway, trade)
        ).fetchone()
        if row is None:
            return None
        batch = self.batch(gateway, row[0])
        assert batch is not None and batch.status == "accepted"
        return batch, row[1]

    # ------------------------------------------------------------------ anchoring

    def pending_anchors(self) -> list[BatchRow]:
        return [
            _batch_row(r)
            for r in self.db.execute(
                f"SELECT {_BATCH_COLUMNS} FROM batches WHERE anchor_status='pending' "
                "ORDER BY gateway, seq"
            )
        ]

    def set_anchored(self, batch_id: int, *, tx_hash: str, ledger: int, chain: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE batches SET anchor_status='anchored', anchor_tx=?, anchor_ledger=?, "
                "anchor_chain=?, anchor_error=NULL WHERE id=?",
                (tx_hash, ledger, chain, batch_id),
            )

    def set_anchor_error(self, batch_id: int, *, error: str, refused: bool, now: int) -> None:
        """Note a failed attempt; ``refused`` (the contract said no) is final and an anomaly."""
        with self._tx() as db:
            db.execute(
                "UPDATE batches SET anchor_error=?, anchor_status=? WHERE id=?",
                (error, "refused" if refused else "pending", batch_id),
            )
            if refused:
                gw, seq, h = db.execute(
                    "SELECT gateway, seq, hash FROM batches WHERE id=?", (batch_id,)
                ).fetchone()
                db.execute(
                    "INSERT INTO anomalies (ts, kind, gateway, seq, batch_hash, detail) "
                    "VALUES (?,?,?,?,?,?)",
                    (now, "anchor_refused", gw, seq, h, error),
                )

    # ------------------------------------------------------------------ anomalies

    def add_anomaly(
        self,
        *,
        kind: str,
        gateway: str,
        detail: str,
        now: int,
        seq: int | None = None,
        batch_hash: bytes | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO anomalies (ts, kind, gateway, seq, batch_hash, detail) "
                "VALUES (?,?,?,?,?,?)",
                (now, kind, gateway, seq, batch_hash, detail),
            )

    def anomalies(
        self, *, after: int = 0, limit: int = 100, gateway: str | None = None
    ) -> list[Anomaly]:
        sql = "SELECT id, ts, kind, gateway, seq, batch_hash, detail FROM anomalies WHERE id > ?"
        args: list[Any] = [after]
        if gateway is not None:
            sql += " AND gateway = ?"
            args.append(gateway)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [
            Anomaly(
                id=r[0],
                ts=r[1],
                kind=r[2],
                gateway=r[3],
                seq=r[4],
                batch_hash=bytes(r[5]) if r[5] is not None else None,
                detail=r[6],
            )
            for r in self.db.execute(sql, args)
        ]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("accepted", "held", "refused")}
        for status, n in self.db.execute("SELECT status, count(*) FROM batches GROUP BY status"):
            out[status] = n
        out["anchored"] = self.db.execute(
            "SELECT count(*) FROM batches WHERE anchor_status='anchored'"
        ).fetchone()[0]
        return out

    def iter_accepted(self, gateway: str) -> Iterable[BatchRow]:
        for r in self.db.execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches WHERE gateway=? AND status='accepted' "
            "ORDER BY seq",
            (gateway,),
        ):
            yield _batch_row(r)
