"""Signed, hash-chained settlement batches: the record a gateway uploads to its coordinator.

A batch carries the trades settled since the previous batch (each with its Pedersen commitment
and range proof), the delivery outcomes decided since then, and the contiguous slice of the
gateway's order log that produced them. Its header commits to all of it: the RFC 6962 Merkle root
over the trades' canonical bytes, SHA-256 digests of the log slice and of the deliveries, totals,
the hash of the previous batch's header, and is signed with the gateway's Ed25519 key
(RFC 8032, via ``cryptography``). The format is specified in docs/gateway.md ("Batch format");
:data:`BATCH_FORMAT` names its version.

Everything here is pure: no clock (``created_ts`` is an input), no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.batch.canonical import CanonicalError, canonical_bytes, from_hex, parse_canonical, to_hex
from edge.batch.merkle import inclusion_proof, merkle_root, verify_inclusion
from edge.errors import NgridError
from edge.market import Settlement, Trade

__all__ = [
    "BATCH_FORMAT",
    "DELIVERY_STATUSES",
    "GENESIS_HASH",
    "TOTAL_FIELDS",
    "Batch",
    "BatchError",
    "BatchHeader",
    "DeliveryRecord",
    "Receipt",
    "TradeRecord",
    "batch_hash",
    "check_batch",
    "decode_batch",
    "encode_batch",
    "proof_context",
    "receipt",
    "seal_batch",
    "totals_of",
    "trade_leaf",
    "verify_receipt",
]

BATCH_FORMAT = "ngrid-batch/2"  # 2: trade records name the seller's meter
GENESIS_HASH = bytes(32)
"""``prev_hash`` of a gateway's first batch (sequence number 1)."""

DELIVERY_STATUSES = ("delivered", "defaulted")

#: Integer fields of :class:`TradeRecord` summed into the header's ``totals`` (plus ``trades``).
TOTAL_FIELDS = (
    "wh",
    "value",
    "buyer_pays",
    "seller_receives",
    "commission",
    "grid_fee",
    "yield_accrual",
    "tokens_burned",
    "carbon_mg",
)


class BatchError(NgridError, ValueError):
    """A batch is malformed, inconsistent, badly signed or out of chain; ``reason`` says which.

    Reasons: ``format`` (schema or encoding), ``merkle_root``, ``log_hash``, ``deliveries_hash``,
    ``totals``, ``signature``, ``chain`` (sequence number or previous hash).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(f"batch {reason}: {message}")


@dataclass(frozen=True, kw_only=True)
class TradeRecord:
    """One settled trade as the batch carries it (a Merkle leaf).

    The first ten fields are :class:`edge.market.Trade`'s (``id`` .. ``maker``), so a replay
    of the order log can be compared field by field; the money fields are
    :class:`edge.market.Settlement`'s (µticks; tokens; mg CO2). ``wh`` in Wh, ``price`` in ticks
    per kWh, ``ts`` the stamp of the event that caused the match, ``settled_ts`` the time the
    seller's lock ack was settled (ms since the Unix epoch, as recorded by the gateway).
    ``meter`` is the seller's meter, the one whose SoC was proven and which locked the energy:
    the coordinator checks it is one of the gateway's registered meters, and the proof is bound
    to it. ``commitment`` is the Pedersen commitment to that meter's SoC (basis points) and
    ``proof`` the range proof that ``SoC - soc_reserved_bp >= soc_threshold_bp`` (edge.zk
    ``prove_at_least``/``verify_at_least``, context :func:`proof_context`): the threshold is
    the meter's reserve plus this sale, ``soc_reserved_bp`` what earlier locks already hold.
    """

    id: str
    buy: str
    sell: str
    buyer: str
    seller: str
    wh: int
    price: int
    interval: int
    ts: int
    maker: str
    meter: str
    settled_ts: int
    value: int
    buyer_pays: int
    seller_receives: int
    commission: int
    grid_fee: int
    yield_accrual: int
    tokens_burned: int
    carbon_mg: int
    commitment: bytes
    proof: bytes
    soc_threshold_bp: int
    soc_reserved_bp: int

    @classmethod
    def of(
        cls,
        trade: Trade,
        settlement: Settlement,
        *,
        meter: str,
        settled_ts: int,
        commitment: bytes,
        proof: bytes,
        soc_threshold_bp: int,
        soc_reserved_bp: int,
    ) -> TradeRecord:
        """The record of ``trade`` settled as ``settlement`` (``edge.market.settle``) with the
        seller's meter and its SoC proof: the one place a market trade becomes a batch leaf."""
        return cls(
            id=trade.id,
            buy=trade.buy,
            sell=trade.sell,
            buyer=trade.buyer,
            seller=trade.seller,
            wh=trade.wh,
            price=trade.price,
            interval=trade.interval,
            ts=trade.ts,
            maker=trade.maker,
            meter=meter,
            settled_ts=settled_ts,
            value=settlement.value,
            buyer_pays=settlement.buyer_pays,
            seller_receives=settlement.seller_receives,
            commission=settlement.commission,
            grid_fee=settlement.grid_fee,
            yield_accrual=settlement.yield_accrual,
            tokens_burned=settlement.tokens_burned,
            carbon_mg=settlement.carbon_mg,
            commitment=commitment,
            proof=proof,
            soc_threshold_bp=soc_threshold_bp,
            soc_reserved_bp=soc_reserved_bp,
        )

    def to_json(self) -> dict[str, Any]:
        """The canonical-JSON object of this record (bytes as lowercase hex)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = to_hex(value) if isinstance(value, bytes) else value
        return out

    @classmethod
    def from_json(cls, obj: object, *, where: str = "trade") -> TradeRecord:
        """Parse a record from its JSON object; raise :class:`BatchError` naming the field."""
        return cls(**_parse_fields(cls, obj, where=where))


@dataclass(frozen=True, kw_only=True)
class DeliveryRecord:
    """The outcome of a lock at the end of its interval.

    ``status`` is ``delivered`` (the seller exported at least the locked Wh) or ``defaulted``
    (``delivered_wh`` < ``wh``: partial or no delivery); ``ts`` in ms since the epoch.
    """

    trade: str
    status: str
    wh: int
    delivered_wh: int
    ts: int

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, obj: object, *, where: str = "delivery") -> DeliveryRecord:
        record = cls(**_parse_fields(cls, obj, where=where))
        if record.status not in DELIVERY_STATUSES:
            raise BatchError(f"{where}.status: {record.status!r}", reason="format")
        return record


def _parse_fields(cls: type, obj: object, *, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BatchError(f"{where}: expected an object", reason="format")
    names = {f.name: f.type for f in fields(cls)}
    if set(obj) != set(names):
        missing = sorted(set(names) - set(obj))
        extra = sorted(set(obj) - set(names))
        raise BatchError(f"{where}: missing {missing} unexpected {extra}", reason="format")
    out: dict[str, Any] = {}
    for name, kind in names.items():
        value = obj[name]
        if kind == "bytes":
            try:
                out[name] = from_hex(value, field=f"{where}.{name}")
            except CanonicalError as err:
                raise BatchError(str(err), reason="format") from err
        elif kind == "int":
            if type(value) is not int:
                raise BatchError(f"{where}.{name}: expected an integer", reason="format")
            out[name] = value
        else:
            if not isinstance(value, str):
                raise BatchError(f"{where}.{name}: expected a string", reason="format")
            out[name] = value
    return out


@dataclass(frozen=True, kw_only=True)
class BatchHeader:
    """What the gateway signs. Hashes are 32 bytes; ``created_ts`` in ms since the epoch.

    ``log_first``..``log_last`` are the inclusive order-log sequence numbers of the slice
    (``log_last == log_first - 1`` for an empty slice); each batch's slice starts right after the
    previous batch's, so the slices concatenate to the whole log.
    """

    format: str
    gateway: str
    seq: int
    prev_hash: bytes
    created_ts: int
    merkle_root: bytes
    log_first: int
    log_last: int
    log_hash: bytes
    deliveries_hash: bytes
    totals: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bytes):
                value = to_hex(value)
            elif f.name == "totals":
                value = dict(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class Batch:
    """A sealed batch: header, contents and the Ed25519 signature over the header's bytes.

    ``log`` entries are the order log's records as canonical-JSON objects, each with an integer
    ``seq`` and a string ``op`` (the edge.market log-line format plus the gateway's ``seq``).
    """

    header: BatchHeader
    trades: tuple[TradeRecord, ...]
    deliveries: tuple[DeliveryRecord, ...]
    log: tuple[Mapping[str, Any], ...]
    signature: bytes


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """Proof that a trade is in a batch: RFC 6962 audit path to the batch's Merkle root."""

    gateway: str
    batch_seq: int
    trade: str
    index: int
    size: int
    path: tuple[bytes, ...]
    root: bytes


def trade_leaf(trade: TradeRecord) -> bytes:
    """A trade's Merkle leaf: the canonical JSON bytes of :meth:`TradeRecord.to_json`."""
    return canonical_bytes(trade.to_json())


def totals_of(trades: Sequence[TradeRecord]) -> dict[str, int]:
    """``{"trades": n}`` plus the sum of each of :data:`TOTAL_FIELDS` over ``trades``."""
    totals = {"trades": len(trades)}
    for name in TOTAL_FIELDS:
        totals[name] = sum(getattr(t, name) for t in trades)
    return totals


def proof_context(
    *, gateway: str, trade: str, seller: str, meter: str, wh: int, interval: int
) -> bytes:
    """The context bytes a trade's range proof is bound to (canonical JSON, domain-tagged
    ``ngrid/soc-cover/2``): the gateway, the trade, the selling home, the seller's meter whose
    SoC is proven, the Wh and the delivery interval. A proof moved to another gateway, trade,
    meter, quantity or interval does not verify."""
    return canonical_bytes(
        {
            "domain": "ngrid/soc-cover/2",
            "gateway": gateway,
            "trade": trade,
            "seller": seller,
            "meter": meter,
            "wh": wh,
            "interval": interval,
        }
    )


def _digest(value: Any) -> bytes:
    return hashlib.sha256(canonical_bytes(value)).digest()


def _check_log(log: Sequence[Mapping[str, Any]], log_first: int) -> None:
    for i, entry in enumerate(log):
        if not isinstance(entry, Mapping):
            raise BatchError(f"log[{i}]: expected an object", reason="format")
        if type(entry.get("seq")) is not int or entry["seq"] != log_first + i:
            raise BatchError(f"log[{i}].seq: expected {log_first + i}", reason="format")
        if not isinstance(entry.get("op"), str):
            raise BatchError(f"log[{i}].op: expected a string", reason="format")


def seal_batch(
    *,
    gateway: str,
    seq: int,
    prev_hash: bytes,
    created_ts: int,
    log_first: int,
    trades: Sequence[TradeRecord],
    deliveries: Sequence[DeliveryRecord],
    log: Sequence[Mapping[str, Any]],
    key: Ed25519PrivateKey,
) -> Batch:
    """Build and sign a batch.

    ``seq`` >= 1; ``prev_hash`` is :func:`batch_hash` of batch ``seq - 1`` (or
    :data:`GENESIS_HASH`); ``log`` holds the order-log records ``log_first``, ``log_first + 1``
    ... in order. Raises :class:`BatchError` (reason ``format``) on a bad argument.
    """
    if seq < 1:
        raise BatchError("seq must be >= 1", reason="format")
    if len(prev_hash) != 32:
        raise BatchError("prev_hash must be 32 bytes", reason="format")
    if log_first < 1:
        raise BatchError("log_first must be >= 1", reason="format")
    _check_log(log, log_first)
    log_json = [dict(entry) for entry in log]
    header = BatchHeader(
        format=BATCH_FORMAT,
        gateway=gateway,
        seq=seq,
        prev_hash=prev_hash,
        created_ts=created_ts,
        merkle_root=merkle_root([trade_leaf(t) for t in trades]),
        log_first=log_first,
        log_last=log_first + len(log) - 1,
        log_hash=_digest(log_json),
        deliveries_hash=_digest([d.to_json() for d in deliveries]),
        totals=totals_of(trades),
    )
    try:
        header_bytes = canonical_bytes(header.to_json())
    except CanonicalError as err:
        raise BatchError(str(err), reason="format") from err
    return Batch(
        header=header,
        trades=tuple(trades),
        deliveries=tuple(deliveries),
        log=tuple(log_json),
        signature=key.sign(header_bytes),
    )


def batch_hash(batch: Batch) -> bytes:
    """SHA-256 of the header's canonical bytes: what the next batch's ``prev_hash`` holds."""
    return _digest(batch.header.to_json())


def encode_batch(batch: Batch) -> bytes:
    """The batch's canonical bytes (what is uploaded and stored)::

    {"deliveries":[...],"header":{...},"log":[...],"signature":"<hex>","trades":[...]}
    """
    return canonical_bytes(
        {
            "header": batch.header.to_json(),
            "trades": [t.to_json() for t in batch.trades],
            "deliveries": [d.to_json() for d in batch.deliveries],
            "log": [dict(e) for e in batch.log],
            "signature": to_hex(batch.signature),
        }
    )


def _header_from_json(obj: object) -> BatchHeader:
    if not isinstance(obj, dict):
        raise BatchError("header: expected an object", reason="format")
    names = [f.name for f in fields(BatchHeader)]
    if set(obj) != set(names):
        raise BatchError(f"header: expected keys {sorted(names)}", reason="format")
    if obj["format"] != BATCH_FORMAT:
        raise BatchError(f"header.format: unsupported {obj['format']!r}", reason="format")
    values: dict[str, Any] = {}
    for name in names:
        value = obj[name]
        if name in ("prev_hash", "merkle_root", "log_hash", "deliveries_hash"):
            try:
                value = from_hex(value, field=f"header.{name}")
            except CanonicalError as err:
                raise BatchError(str(err), reason="format") from err
            if len(value) != 32:
                raise BatchError(f"header.{name}: expected 32 bytes", reason="format")
        elif name in ("seq", "created_ts", "log_first", "log_last"):
            if type(value) is not int:
                raise BatchError(f"header.{name}: expected an integer", reason="format")
        elif name == "totals":
            if not isinstance(value, dict) or any(type(v) is not int for v in value.values()):
                raise BatchError("header.totals: expected an object of integers", reason="format")
        elif not isinstance(value, str):
            raise BatchError(f"header.{name}: expected a string", reason="format")
        values[name] = value
    return BatchHeader(**values)


def decode_batch(data: bytes) -> Batch:
    """Parse a batch from its canonical bytes; raise :class:`BatchError` (reason ``format``).

    Decoding checks the schema only; :func:`check_batch` checks hashes, totals and signature.
    """
    try:
        obj = parse_canonical(data)
    except CanonicalError as err:
        raise BatchError(str(err), reason="format") from err
    keys = {"header", "trades", "deliveries", "log", "signature"}
    if not isinstance(obj, dict) or set(obj) != keys:
        raise BatchError(f"expected an object with keys {sorted(keys)}", reason="format")
    for name in ("trades", "deliveries", "log"):
        if not isinstance(obj[name], list):
            raise BatchError(f"{name}: expected an array", reason="format")
    header = _header_from_json(obj["header"])
    trades = tuple(
        TradeRecord.from_json(t, where=f"trades[{i}]") for i, t in enumerate(obj["trades"])
    )
    deliveries = tuple(
        DeliveryRecord.from_json(d, where=f"deliveries[{i}]")
        for i, d in enumerate(obj["deliveries"])
    )
    _check_log(obj["log"], header.log_first)
    try:
        signature = from_hex(obj["signature"], field="signature")
    except CanonicalError as err:
        raise BatchError(str(err), reason="format") from err
    return Batch(
        header=header,
        trades=trades,
        deliveries=deliveries,
        log=tuple(obj["log"]),
        signature=signature,
    )


def check_batch(
    batch: Batch,
    *,
    public_key: Ed25519PublicKey,
    prev: Batch | None = None,
) -> None:
    """Check a batch's internal consistency, its signature and (given ``prev``) its chain link.

    Recomputes the Merkle root, log and deliveries digests, the totals and the log range, then
    verifies the Ed25519 signature over the header. With ``prev`` (the gateway's batch
    ``seq - 1``) also checks ``seq``, ``prev_hash`` and that the log slice continues
    ``prev``'s; with ``prev=None`` and ``seq == 1``, ``prev_hash`` must be
    :data:`GENESIS_HASH`. Range proofs and order-log replay are the verifier's next steps
    (edge.zk, edge.market). Raises :class:`BatchError` with the first failing ``reason``.
    """
    h = batch.header
    if h.format != BATCH_FORMAT:
        raise BatchError(f"unsupported format {h.format!r}", reason="format")
    _check_log(batch.log, h.log_first)
    if h.log_last != h.log_first + len(batch.log) - 1:
        raise BatchError("log_last does not match the slice", reason="format")
    if merkle_root([trade_leaf(t) for t in batch.trades]) != h.merkle_root:
        raise BatchError("Merkle root does not match the trades", reason="merkle_root")
    if _digest([dict(e) for e in batch.log]) != h.log_hash:
        raise BatchError("log digest does not match the log slice", reason="log_hash")
    if _digest([d.to_json() for d in batch.deliveries]) != h.deliveries_hash:
        raise BatchError("deliveries digest does not match", reason="deliveries_hash")
    if dict(h.totals) != totals_of(batch.trades):
        raise BatchError("totals do not match the trades", reason="totals")
    try:
        public_key.verify(batch.signature, canonical_bytes(h.to_json()))
    except InvalidSignature as err:
        raise BatchError("Ed25519 signature does not verify", reason="signature") from err
    if prev is not None:
        if prev.header.gateway != h.gateway or h.seq != prev.header.seq + 1:
            raise BatchError(f"seq {h.seq} does not follow {prev.header.seq}", reason="chain")
        if h.prev_hash != batch_hash(prev):
            raise BatchError("prev_hash is not the previous batch's hash", reason="chain")
        if h.log_first != prev.header.log_last + 1:
            raise BatchError("log slice does not continue the previous one", reason="chain")
    elif h.seq == 1 and (h.prev_hash != GENESIS_HASH or h.log_first != 1):
        raise BatchError("first batch must start the chain and the log", reason="chain")


def receipt(batch: Batch, trade_id: str) -> Receipt:
    """The Merkle inclusion receipt of trade ``trade_id``; ``KeyError`` if it is not in it."""
    leaves = [trade_leaf(t) for t in batch.trades]
    for index, trade in enumerate(batch.trades):
        if trade.id == trade_id:
            return Receipt(
                gateway=batch.header.gateway,
                batch_seq=batch.header.seq,
                trade=trade_id,
                index=index,
                size=len(leaves),
                path=tuple(inclusion_proof(leaves, index)),
                root=batch.header.merkle_root,
            )
    raise KeyError(trade_id)


def verify_receipt(trade: TradeRecord, rcpt: Receipt) -> bool:
    """True iff ``rcpt`` proves ``trade`` (by its canonical bytes) under ``rcpt.root``."""
    return trade.id == rcpt.trade and verify_inclusion(
        leaf=trade_leaf(trade), index=rcpt.index, size=rcpt.size, proof=rcpt.path, root=rcpt.root
    )
