"""Pure verification of a gateway's settlement batch: a list of precise findings.

The coordinator trusts no gateway (issue 7, DESIGN.md "The flow"). :func:`verify_batch` checks one
decoded batch (:mod:`edge.batch`, format in docs/gateway.md "Batch format") against

- the **registry**: the gateway is registered; its Ed25519 key verifies the header signature
  (RFC 8032); no meter is allowed under two gateways; each trade's seller meter is one of the
  gateway's registered meters;
- **integrity**: the log slice's range, the Merkle root (RFC 6962) over the trades, the digests
  of the log slice and of the deliveries, the header's totals (:func:`edge.batch.totals_of`);
- the **chain**: ``seq == last + 1`` and ``prev_hash`` is the hash of the gateway's last accepted
  batch, the log slice continues the previous one; a later ``seq`` is *held* until the missing
  batches arrive; an earlier ``seq`` with another hash, or a ``prev_hash`` that is not ours, is a
  *fork* (refused, and the caller raises an anomaly);
- every **range proof**: ``SoC - reserved >= threshold`` (edge.zk ``at_least_statement``) bound to
  :func:`edge.batch.proof_context` of this gateway, trade and seller meter, checked with
  edge.zk's batch verification in chunks, then one by one inside a failing chunk to name the
  trades; the threshold must cover the community's minimum reserve;
- the **settlement identities** of each trade (token burn, carbon, commission, grid fee, yield,
  conservation ``buyer_pays == seller_receives + commission + grid_fee``), recomputed by
  :func:`edge.market.check_settlement` (the gateway's own rules, never a copy);
- a deterministic **replay** of the order-log slice with edge.market, continuing the engine state
  after the previous accepted batch: every trade of the batch must be a trade the log produced
  (field by field: ids, parties, Wh, price, interval, stamp, maker), not voided, settled once;
  a void must never hit a settled trade;
- **uniqueness**: a trade settled once per gateway; a trade's commitment (a Pedersen commitment
  with a fresh blinding, so one per trade) never under two gateways or two trades;
- **deliveries**: each refers to a settled trade, once, with its Wh, and its status agrees with
  the delivered Wh.

Trade ids are the engine's ``t<n>``, counted per gateway, so a trade is named by
``(gateway, id)``; "the same trade under two gateways" is recognised by its commitment.

Pure: no clock, no I/O. What the verifier needs to know about earlier batches comes in as a
:class:`ChainState` and a :class:`History` (the store prefetches it; :class:`MemoryHistory`
serves offline use and tests). Randomness for the batch proof check is a parameter.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.batch import (
    BATCH_FORMAT,
    GENESIS_HASH,
    Batch,
    TradeRecord,
    batch_hash,
    canonical_bytes,
    merkle_root,
    proof_context,
    totals_of,
    trade_leaf,
)
from edge.market import (
    Engine,
    InvalidEvent,
    LogError,
    MarketError,
    MarketParams,
    Rates,
    Settlement,
    SettlementError,
    Trade,
    Void,
    check_settlement,
    parse_event,
)
from edge.zk import at_least_statement, verify_range
from edge.zk import verify_batch as zk_verify_batch

__all__ = [
    "FAIL",
    "HELD",
    "PASS",
    "TRADE_FIELDS",
    "VERDICTS",
    "ChainState",
    "Finding",
    "GatewayKey",
    "History",
    "MemoryHistory",
    "Rules",
    "SettledTrade",
    "Verification",
    "check_chain",
    "check_deliveries",
    "check_integrity",
    "check_meters",
    "check_proofs",
    "check_registry",
    "check_replay",
    "check_settlements",
    "check_signature",
    "check_uniqueness",
    "verify_batch",
    "verify_chain",
]

PASS = "pass"
FAIL = "fail"
HELD = "held"

#: ``accepted`` (every check passed), ``held`` (a gap before it: re-verified when it fills),
#: ``refused`` (a check failed), ``duplicate`` (this very batch was accepted before).
VERDICTS = ("accepted", "held", "refused", "duplicate")

#: The fields a batch's trade shares with :class:`edge.market.Trade` (compared after replay).
TRADE_FIELDS = ("buy", "sell", "buyer", "seller", "wh", "price", "interval", "ts", "maker")

RandBelow = Callable[[int], int]


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One check's outcome. ``check`` is a dotted name (``signature``, ``chain.prev_hash``,
    ``proof`` …, listed in docs/coordinator.md), ``status`` is ``pass``, ``fail`` or ``held``,
    ``detail`` says what was found, ``trade`` names the trade it concerns, if one."""

    check: str
    status: str
    detail: str
    trade: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "status": self.status, "detail": self.detail}
        if self.trade is not None:
            out["trade"] = self.trade
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Finding:
        return cls(
            check=obj["check"], status=obj["status"], detail=obj["detail"], trade=obj.get("trade")
        )


@dataclass(frozen=True, kw_only=True)
class GatewayKey:
    """A registered gateway: its id, raw Ed25519 public key (32 bytes) and allowed meters."""

    id: str
    public_key: bytes
    meters: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class ChainState:
    """What the coordinator keeps per gateway after its last accepted batch.

    ``seq`` (0 before the first), its ``hash`` (:func:`edge.batch.batch_hash`), the order log's
    last sequence number ``log_last``, the market ``engine`` snapshot after that log
    (:meth:`edge.market.Engine.snapshot`; None: a fresh engine) and ``open_trades``: trades
    the log produced that are neither settled in an accepted batch nor voided yet.
    """

    seq: int = 0
    hash: bytes = GENESIS_HASH
    log_last: int = 0
    engine: bytes | None = None
    open_trades: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class SettledTrade:
    """A trade settled in an accepted batch: the batch's ``seq``, the trade's ``wh``."""

    batch_seq: int
    wh: int


class History(Protocol):
    """What the verifier asks about accepted batches (the store answers, in bulk)."""

    def accepted_hash(self, gateway: str, seq: int) -> bytes | None:
        """The hash of ``gateway``'s accepted batch ``seq``, if there is one."""
        ...

    def settled(self, gateway: str, trades: Collection[str]) -> Mapping[str, SettledTrade]:
        """Those of ``trades`` settled in an accepted batch of ``gateway``."""
        ...

    def commitment_owners(self, commitments: Collection[bytes]) -> Mapping[bytes, tuple[str, str]]:
        """``commitment -> (gateway, trade)`` for those already in an accepted batch."""
        ...

    def delivered(self, gateway: str, trades: Collection[str]) -> Collection[str]:
        """Those of ``trades`` whose delivery outcome an accepted batch already holds."""
        ...


@dataclass(frozen=True, kw_only=True)
class Rules:
    """The community's rules the batches are checked against (coordinator.toml).

    ``market``: the replay parameters; ``rates``: the settlement rates; ``min_reserve_bp``:
    the least threshold a SoC proof may prove (the 20 % reserve); ``proof_chunk``: how many
    proofs one batch check combines.
    """

    market: MarketParams = field(default_factory=MarketParams)
    rates: Rates = field(default_factory=Rates)
    min_reserve_bp: int = 2000
    proof_chunk: int = 256


@dataclass(frozen=True, kw_only=True)
class Verification:
    """The outcome for one batch: ``verdict`` (one of :data:`VERDICTS`), the ``findings`` in
    check order, ``fork`` (the batch contradicts an accepted one: raise an anomaly) and, when
    accepted, the gateway's :class:`ChainState` after it (``state``)."""

    gateway: str
    seq: int
    hash: bytes
    verdict: str
    findings: tuple[Finding, ...]
    fork: bool = False
    state: ChainState | None = None

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.failed]

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "seq": self.seq,
            "hash": self.hash.hex(),
            "verdict": self.verdict,
            "fork": self.fork,
            "findings": [f.to_json() for f in self.findings],
        }


# ---------------------------------------------------------------------- the checks


def _ok(check: str, detail: str) -> Finding:
    return Finding(check=check, status=PASS, detail=detail)


def _fail(check: str, detail: str, trade: str | None = None) -> Finding:
    return Finding(check=check, status=FAIL, detail=detail, trade=trade)


def check_registry(batch: Batch, registry: Mapping[str, GatewayKey]) -> list[Finding]:
    """The gateway is registered; none of its meters is registered under another gateway."""
    gateway = batch.header.gateway
    key = registry.get(gateway)
    if key is None:
        return [_fail("gateway.registered", f"gateway {gateway!r} is not registered")]
    out = [_ok("gateway.registered", f"gateway {gateway!r} is registered")]
    clashes = sorted(
        f"{m} (also {other.id})"
        for other in registry.values()
        if other.id != gateway
        for m in key.meters & other.meters
    )
    if clashes:
        out.append(_fail("meter.cross_gateway", "meters under two gateways: " + ", ".join(clashes)))
    else:
        out.append(_ok("meter.cross_gateway", f"{len(key.meters)} meters, none shared"))
    return out


def check_meters(batch: Batch, key: GatewayKey) -> list[Finding]:
    """Each trade's seller meter is one of the meters registered to the batch's gateway (one
    ``trade.meter`` failure per trade that names another)."""
    out = [
        _fail(
            "trade.meter",
            f"trade {t.id}: seller meter {t.meter!r} is not registered to {key.id}",
            t.id,
        )
        for t in batch.trades
        if t.meter not in key.meters
    ]
    if not out:
        out.append(
            _ok("trade.meter", f"{len(batch.trades)} trades' seller meters registered to {key.id}")
        )
    return out


def check_signature(batch: Batch, key: GatewayKey) -> list[Finding]:
    """The Ed25519 signature over the header's canonical bytes verifies under ``key``."""
    try:
        public = Ed25519PublicKey.from_public_bytes(key.public_key)
        public.verify(batch.signature, canonical_bytes(batch.header.to_json()))
    except (InvalidSignature, ValueError):
        return [_fail("signature", f"Ed25519 signature does not verify under {key.id}'s key")]
    return [_ok("signature", f"Ed25519 signature verifies under {key.id}'s key")]


def _digest(value: Any) -> bytes:
    return hashlib.sha256(canonical_bytes(value)).digest()


def check_integrity(batch: Batch) -> list[Finding]:
    """Format, log range, Merkle root, log and deliveries digests, totals, unique trade ids."""
    h = batch.header
    out: list[Finding] = []
    if h.format != BATCH_FORMAT:
        out.append(_fail("format", f"unsupported format {h.format!r}"))
    if h.seq < 1 or h.log_first < 1:
        out.append(_fail("format", "seq and log_first must be >= 1"))
    bad_seq = [
        i for i, e in enumerate(batch.log) if e.get("seq") != h.log_first + i
    ]  # decode_batch checks this too; a Batch built in memory may not have been decoded
    if h.log_last != h.log_first + len(batch.log) - 1 or bad_seq:
        out.append(
            _fail("log.range", f"log slice {h.log_first}..{h.log_last} does not match its records")
        )
    else:
        out.append(_ok("log.range", f"log records {h.log_first}..{h.log_last}"))
    root = merkle_root([trade_leaf(t) for t in batch.trades])
    if root != h.merkle_root:
        out.append(_fail("merkle_root", "the Merkle root does not match the trades"))
    else:
        out.append(_ok("merkle_root", f"Merkle root over {len(batch.trades)} trades matches"))
    if _digest([dict(e) for e in batch.log]) != h.log_hash:
        out.append(_fail("log_hash", "the log digest does not match the log slice"))
    else:
        out.append(_ok("log_hash", "log digest matches"))
    if _digest([d.to_json() for d in batch.deliveries]) != h.deliveries_hash:
        out.append(_fail("deliveries_hash", "the deliveries digest does not match"))
    else:
        out.append(_ok("deliveries_hash", "deliveries digest matches"))
    totals = totals_of(batch.trades)
    claimed = dict(h.totals)
    wrong = sorted(
        f"{name}: header {claimed.get(name)!r}, trades sum to {totals.get(name)!r}"
        for name in set(totals) | set(claimed)
        if claimed.get(name) != totals.get(name)
    )
    if wrong:
        out.append(_fail("totals", "; ".join(wrong)))
    else:
        out.append(_ok("totals", f"totals of {len(batch.trades)} trades match"))
    seen: set[str] = set()
    for t in batch.trades:
        if t.id in seen:
            out.append(_fail("trade.duplicate", f"trade {t.id} appears twice in the batch", t.id))
        seen.add(t.id)
    return out


def check_chain(
    batch: Batch, chain: ChainState, history: History
) -> tuple[list[Finding], str | None, bool]:
    """Sequence, previous hash and log continuity against the gateway's last accepted batch.

    Returns ``(findings, verdict, fork)`` where ``verdict`` is ``held`` for a gap,
    ``duplicate`` for this very batch accepted before, else None (go on checking).
    """
    h = batch.header
    own = batch_hash(batch)
    if h.seq <= chain.seq:
        accepted = history.accepted_hash(h.gateway, h.seq)
        if accepted == own:
            return [_ok("chain.seq", f"batch {h.seq} was accepted before")], "duplicate", False
        return (
            [
                _fail(
                    "chain.fork",
                    f"batch {h.seq} differs from the accepted batch {h.seq} "
                    f"(last accepted {chain.seq})",
                )
            ],
            None,
            True,
        )
    if h.seq > chain.seq + 1:
        missing = f"{chain.seq + 1}" if h.seq == chain.seq + 2 else f"{chain.seq + 1}..{h.seq - 1}"
        return (
            [Finding(check="chain.seq", status=HELD, detail=f"held: batch {missing} missing")],
            "held",
            False,
        )
    out = [_ok("chain.seq", f"seq {h.seq} follows {chain.seq}")]
    fork = False
    if h.prev_hash != chain.hash:
        fork = chain.seq > 0
        what = "the previous accepted batch's hash" if chain.seq else "the genesis hash"
        out.append(_fail("chain.prev_hash", f"prev_hash {h.prev_hash.hex()[:16]}… is not {what}"))
    else:
        out.append(_ok("chain.prev_hash", "prev_hash is the previous batch's hash"))
    if h.log_first != chain.log_last + 1:
        out.append(
            _fail(
                "chain.log",
                f"log slice starts at {h.log_first}, the previous ended at {chain.log_last}",
            )
        )
    else:
        out.append(_ok("chain.log", f"log slice continues at {h.log_first}"))
    return out, None, fork


def check_proofs(
    batch: Batch, rules: Rules, *, randbelow: RandBelow = secrets.randbelow
) -> list[Finding]:
    """Every trade's range proof, bound to this gateway and trade, in chunked batch checks."""
    gateway = batch.header.gateway
    out: list[Finding] = []
    items: list[tuple[str, tuple[bytes, int, int, bytes, bytes]]] = []
    for t in batch.trades:
        if t.soc_threshold_bp < rules.min_reserve_bp:
            out.append(
                _fail(
                    "proof.threshold",
                    f"threshold {t.soc_threshold_bp} bp is below the {rules.min_reserve_bp} bp "
                    "reserve",
                    t.id,
                )
            )
        context = proof_context(
            gateway=gateway,
            trade=t.id,
            seller=t.seller,
            meter=t.meter,
            wh=t.wh,
            interval=t.interval,
        )
        try:
            statement = at_least_statement(
                t.commitment,
                threshold=t.soc_threshold_bp,
                reserved=t.soc_reserved_bp,
                context=context,
            )
        except (ValueError, TypeError) as err:
            out.append(_fail("proof", f"no valid statement: {err}", t.id))
            continue
        items.append((t.id, (*statement, t.proof)))
    bad: list[str] = []
    chunk = max(1, rules.proof_chunk)
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        if zk_verify_batch([item for _, item in part], randbelow=randbelow):
            continue
        bad.extend(trade for trade, item in part if not verify_range(*item))
    for trade in bad:
        out.append(_fail("proof", "the range proof does not verify", trade))
    if not any(f.failed for f in out):
        out.append(_ok("proof", f"{len(items)} range proofs verify"))
    return out


def check_settlements(batch: Batch, rules: Rules) -> list[Finding]:
    """Each trade's money, token and carbon fields are :func:`edge.market.settle`'s."""
    out: list[Finding] = []
    for t in batch.trades:
        record = Settlement(
            trade=t.id,
            wh=t.wh,
            price=t.price,
            value=t.value,
            buyer_pays=t.buyer_pays,
            seller_receives=t.seller_receives,
            commission=t.commission,
            grid_fee=t.grid_fee,
            yield_accrual=t.yield_accrual,
            tokens_burned=t.tokens_burned,
            carbon_mg=t.carbon_mg,
        )
        try:
            check_settlement(record, t, rules.rates)
        except SettlementError as err:
            out.append(_fail("settlement", "; ".join(err.problems), t.id))
        except ValueError as err:
            out.append(_fail("settlement", str(err), t.id))
    if not out:
        out.append(_ok("settlement", f"settlement identities hold for {len(batch.trades)} trades"))
    return out


@dataclass(frozen=True, kw_only=True)
class _Replay:
    findings: list[Finding]
    engine: Engine | None
    open_trades: frozenset[str]


def check_replay(batch: Batch, chain: ChainState, history: History, rules: Rules) -> _Replay:
    """Replay the log slice from the previous accepted state; compare the batch's trades."""
    gateway = batch.header.gateway
    try:
        engine = (
            Engine.restore(chain.engine)
            if chain.engine is not None
            else Engine(params=rules.market)
        )
    except InvalidEvent as err:  # pragma: no cover - our own snapshot
        return _Replay(
            findings=[_fail("replay", f"bad engine state: {err}")],
            engine=None,
            open_trades=frozenset(),
        )
    produced: set[str] = set()
    voids: list[str] = []
    for entry in batch.log:
        seq = entry.get("seq")
        body = {k: v for k, v in entry.items() if k != "seq"}
        try:
            event = parse_event(body, seq if type(seq) is int else 0)
            trades = engine.submit(event)
        except LogError as err:
            return _Replay(
                findings=[_fail("replay.log", f"log record {seq}: {err}")],
                engine=None,
                open_trades=frozenset(),
            )
        except MarketError as err:  # InvalidEvent, TierError: the engine refuses the event
            return _Replay(
                findings=[_fail("replay.log", f"log record {seq} is refused by the market: {err}")],
                engine=None,
                open_trades=frozenset(),
            )
        if type(event) is Void:
            voids.append(event.trade)
        for trade in trades:
            produced.add(trade.id)
    out: list[Finding] = []
    candidates = set(chain.open_trades) | produced
    earlier = history.settled(gateway, [t.id for t in batch.trades if t.id not in candidates])
    settled_voids = history.settled(gateway, voids)
    for trade_id in voids:
        if trade_id in settled_voids:  # a void of a trade settled here: ``replay.voided``
            out.append(
                _fail("replay.void_settled", f"the log voids settled trade {trade_id}", trade_id)
            )
    settled_now: set[str] = set()
    voided = set(voids)  # a prune in the slice forgets the void marks of what it prunes
    pruned: set[str] = set()  # batch trades the slice pruned (named once, below)
    for t in batch.trades:
        if t.id not in candidates:
            if t.id in earlier:
                out.append(
                    _fail(
                        "trade.duplicate",
                        f"trade {t.id} was settled in batch {earlier[t.id].batch_seq}",
                        t.id,
                    )
                )
            else:
                out.append(_fail("replay.unknown", f"the log produces no open trade {t.id}", t.id))
            continue
        if t.id in voided or engine.is_voided(t.id):
            out.append(_fail("replay.voided", f"the log voids trade {t.id}", t.id))
            continue
        replayed = engine.trade(t.id)
        if replayed is None:  # the log pruned its interval before this batch settled it
            out.append(
                _fail("replay.pruned", f"the log prunes trade {t.id} before it is settled", t.id)
            )
            pruned.add(t.id)
            continue
        diffs = _trade_diffs(t, replayed)
        if diffs:
            out.append(_fail("replay.mismatch", "; ".join(diffs), t.id))
        settled_now.add(t.id)
    open_after = frozenset(
        i
        for i in candidates
        if i not in settled_now and i not in voided and not engine.is_voided(i)
    )
    for trade_id in sorted(open_after, key=lambda i: int(i[1:])):
        if trade_id not in pruned and engine.trade(trade_id) is None:
            out.append(
                _fail(
                    "replay.pruned",
                    f"the log prunes trade {trade_id} before it is settled or voided",
                    trade_id,
                )
            )
    if not out:
        out.append(
            _ok(
                "replay",
                f"{len(batch.log)} log records replay to the batch's {len(batch.trades)} trades "
                f"({len(open_after)} matched trades await settlement)",
            )
        )
    return _Replay(findings=out, engine=engine, open_trades=open_after)


def _trade_diffs(record: TradeRecord, replayed: Trade) -> list[str]:
    return [
        f"{name}: batch {getattr(record, name)!r}, replay {getattr(replayed, name)!r}"
        for name in TRADE_FIELDS
        if getattr(record, name) != getattr(replayed, name)
    ]


def check_uniqueness(batch: Batch, history: History) -> list[Finding]:
    """No commitment is reused: not within the batch, not by another trade or gateway."""
    gateway = batch.header.gateway
    out: list[Finding] = []
    owners = history.commitment_owners([t.commitment for t in batch.trades])
    first: dict[bytes, str] = {}
    for t in batch.trades:
        owner = owners.get(t.commitment)
        if owner is not None and owner != (gateway, t.id):
            other_gw, other_trade = owner
            if other_gw != gateway:
                out.append(
                    _fail(
                        "trade.cross_gateway",
                        f"trade {t.id}'s commitment is trade {other_trade} of gateway {other_gw}",
                        t.id,
                    )
                )
            else:
                out.append(
                    _fail(
                        "trade.duplicate",
                        f"trade {t.id}'s commitment is already trade {other_trade}'s",
                        t.id,
                    )
                )
        elif t.commitment in first:
            out.append(
                _fail(
                    "trade.duplicate",
                    f"trade {t.id} reuses trade {first[t.commitment]}'s commitment",
                    t.id,
                )
            )
        first.setdefault(t.commitment, t.id)
    if not out:
        out.append(_ok("trade.cross_gateway", f"{len(batch.trades)} commitments are new"))
    return out


def check_deliveries(batch: Batch, history: History) -> list[Finding]:
    """Each delivery refers to a settled trade, once, with its Wh and a consistent status."""
    gateway = batch.header.gateway
    here = {t.id: t.wh for t in batch.trades}
    ids = [d.trade for d in batch.deliveries]
    earlier = history.settled(gateway, [i for i in ids if i not in here])
    done = set(history.delivered(gateway, ids))
    out: list[Finding] = []
    seen: set[str] = set()
    for d in batch.deliveries:
        wh = here.get(d.trade)
        if wh is None and d.trade in earlier:
            wh = earlier[d.trade].wh
        if wh is None:
            out.append(_fail("delivery", f"delivery of unsettled trade {d.trade}", d.trade))
            continue
        if d.trade in done or d.trade in seen:
            out.append(_fail("delivery", f"second delivery outcome for {d.trade}", d.trade))
        seen.add(d.trade)
        if d.wh != wh:
            out.append(_fail("delivery", f"locked {d.wh} Wh but the trade has {wh}", d.trade))
        if (d.status == "delivered") != (d.delivered_wh >= d.wh) or d.delivered_wh < 0:
            out.append(
                _fail(
                    "delivery",
                    f"status {d.status!r} with {d.delivered_wh} of {d.wh} Wh delivered",
                    d.trade,
                )
            )
    if not out:
        out.append(_ok("delivery", f"{len(batch.deliveries)} delivery outcomes consistent"))
    return out


# ---------------------------------------------------------------------- the whole batch


def verify_batch(
    batch: Batch,
    *,
    registry: Mapping[str, GatewayKey],
    chain: ChainState,
    history: History,
    rules: Rules | None = None,
    randbelow: RandBelow = secrets.randbelow,
) -> Verification:
    """Check ``batch`` against the registry, the gateway's ``chain`` and the ``history``.

    Every check runs that can (so a tampered batch lists each thing wrong with it), except
    that an unregistered gateway stops at the registry, a held batch (gap) stops after its
    signature and integrity, and the replay needs the chain to continue. The verdict is
    ``refused`` if any finding failed, else ``held``/``duplicate`` from the chain, else
    ``accepted`` with the new :class:`ChainState`. Never raises on a bad batch.
    """
    rules = rules if rules is not None else Rules()
    h = batch.header
    own = batch_hash(batch)
    findings = check_registry(batch, registry)
    key = registry.get(h.gateway)
    if key is None:
        return Verification(
            gateway=h.gateway, seq=h.seq, hash=own, verdict="refused", findings=tuple(findings)
        )
    findings += check_signature(batch, key)
    findings += check_integrity(batch)
    findings += check_meters(batch, key)
    chain_findings, chain_verdict, fork = check_chain(batch, chain, history)
    findings += chain_findings
    if chain_verdict is not None and not any(f.failed for f in findings):
        return Verification(
            gateway=h.gateway, seq=h.seq, hash=own, verdict=chain_verdict, findings=tuple(findings)
        )
    if chain_verdict == "held":  # and something failed already: refuse it now
        return Verification(
            gateway=h.gateway, seq=h.seq, hash=own, verdict="refused", findings=tuple(findings)
        )
    findings += check_proofs(batch, rules, randbelow=randbelow)
    findings += check_settlements(batch, rules)
    replay: _Replay | None = None
    if not fork and chain_verdict is None and h.log_first == chain.log_last + 1:
        replay = check_replay(batch, chain, history, rules)
        findings += replay.findings
    if h.seq > chain.seq:  # an old seq's trades and deliveries are the accepted batch's
        findings += check_uniqueness(batch, history)
        findings += check_deliveries(batch, history)
    failed = any(f.failed for f in findings)
    state = None
    if not failed and replay is not None and replay.engine is not None:
        state = ChainState(
            seq=h.seq,
            hash=own,
            log_last=h.log_last,
            engine=replay.engine.snapshot(),
            open_trades=replay.open_trades,
        )
    verdict = "refused" if failed or state is None else "accepted"
    return Verification(
        gateway=h.gateway,
        seq=h.seq,
        hash=own,
        verdict=verdict,
        findings=tuple(findings),
        fork=fork,
        state=state,
    )


# ---------------------------------------------------------------------- in-memory history


class MemoryHistory:
    """A :class:`History` in memory: for ``ngrid coordinator verify`` and tests.

    :meth:`record` adds an accepted batch; :meth:`chain` gives a gateway's state.
    """

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, int], bytes] = {}
        self._settled: dict[tuple[str, str], SettledTrade] = {}
        self._commitments: dict[bytes, tuple[str, str]] = {}
        self._delivered: set[tuple[str, str]] = set()
        self._chains: dict[str, ChainState] = {}

    def chain(self, gateway: str) -> ChainState:
        return self._chains.get(gateway, ChainState())

    def record(self, batch: Batch, verification: Verification) -> None:
        """Remember an accepted batch (anything else is ignored)."""
        if verification.verdict != "accepted" or verification.state is None:
            return
        gw = batch.header.gateway
        self._hashes[(gw, batch.header.seq)] = verification.hash
        for t in batch.trades:
            self._settled[(gw, t.id)] = SettledTrade(batch_seq=batch.header.seq, wh=t.wh)
            self._commitments[t.commitment] = (gw, t.id)
        for d in batch.deliveries:
            self._delivered.add((gw, d.trade))
        self._chains[gw] = verification.state

    def accepted_hash(self, gateway: str, seq: int) -> bytes | None:
        return self._hashes.get((gateway, seq))

    def settled(self, gateway: str, trades: Collection[str]) -> Mapping[str, SettledTrade]:
        return {t: s for t in trades if (s := self._settled.get((gateway, t))) is not None}

    def commitment_owners(self, commitments: Collection[bytes]) -> Mapping[bytes, tuple[str, str]]:
        return {c: o for c in commitments if (o := self._commitments.get(c)) is not None}

    def delivered(self, gateway: str, trades: Collection[str]) -> Collection[str]:
        return {t for t in trades if (gateway, t) in self._delivered}


def verify_chain(
    batches: Iterable[Batch],
    *,
    registry: Mapping[str, GatewayKey],
    rules: Rules | None = None,
    history: MemoryHistory | None = None,
) -> list[Verification]:
    """Verify ``batches`` in (gateway, seq) order, each against those accepted before it."""
    history = history if history is not None else MemoryHistory()
    out: list[Verification] = []
    ordered: Sequence[Batch] = sorted(batches, key=lambda b: (b.header.gateway, b.header.seq))
    for batch in ordered:
        result = verify_batch(
            batch,
            registry=registry,
            chain=history.chain(batch.header.gateway),
            history=history,
            rules=rules,
        )
        history.record(batch, result)
        out.append(result)
    return out
