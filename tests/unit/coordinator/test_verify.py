"""coordinator.verify on batches made by the real pipeline (market replay, zk proofs, sealing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.verify import (
    ChainState,
    GatewayKey,
    MemoryHistory,
    Verification,
    verify_batch,
    verify_chain,
)
from edge.batch import Batch, batch_hash, decode_batch, encode_batch
from edge.market import CloseInterval, Engine, Prune
from edge.market import settle as market_settle
from tests.unit.coordinator.pipeline import GatewaySim, make_record, reseal, resign


@dataclasses.dataclass
class Chain:
    sim: GatewaySim
    b1: Batch
    b2: Batch
    carried: str  # matched in batch 1's log, settled in batch 2
    voided: str


@pytest.fixture(scope="module")
def chain() -> Chain:
    """Two batches: b1 settles two trades (a third is matched but settles later, a fourth is
    voided); b2 settles the carried trade and a new one, and reports two deliveries."""
    sim = GatewaySim(gateway="gw-a")
    t1, t2, t3, t4 = (sim.pair() for _ in range(4))
    sim.void(t4.id)
    sim.cancel(sim.rest())
    b1 = sim.seal(settle_ids=[t1.id, t2.id])
    t5 = sim.pair()
    b2 = sim.seal(
        settle_ids=[t3.id, t5.id],
        deliveries=[sim.delivery(t1.id), sim.delivery(t2.id, delivered_wh=10)],
    )
    return Chain(sim=sim, b1=b1, b2=b2, carried=t3.id, voided=t4.id)


def registry(*sims: GatewaySim) -> dict[str, GatewayKey]:
    return {s.gateway: s.registry_key for s in sims}


def run(
    batch: Batch,
    reg: Mapping[str, GatewayKey],
    history: MemoryHistory | None = None,
) -> Verification:
    history = history if history is not None else MemoryHistory()
    result = verify_batch(
        batch, registry=reg, chain=history.chain(batch.header.gateway), history=history
    )
    history.record(batch, result)
    return result


def accepted_b1(chain: Chain) -> MemoryHistory:
    history = MemoryHistory()
    assert run(chain.b1, registry(chain.sim), history).verdict == "accepted"
    return history


def failing(result: Verification) -> set[str]:
    return {f.check for f in result.failures}


def test_a_valid_chain_is_accepted_with_every_check_passing(chain: Chain) -> None:
    history = MemoryHistory()
    r1 = run(chain.b1, registry(chain.sim), history)
    r2 = run(chain.b2, registry(chain.sim), history)
    assert (r1.verdict, r2.verdict) == ("accepted", "accepted")
    assert not r1.failures and not r2.failures
    checks = {f.check for f in r2.findings}
    for name in (
        "signature",
        "merkle_root",
        "totals",
        "chain.prev_hash",
        "proof",
        "settlement",
        "replay",
        "trade.cross_gateway",
        "trade.meter",
        "delivery",
    ):
        assert name in checks
    # the carried trade was open after b1 and is settled by b2; the voided one is gone
    assert r1.state is not None and chain.carried in r1.state.open_trades
    assert chain.voided not in r1.state.open_trades
    assert r2.state is not None and r2.state.open_trades == frozenset()
    assert r2.state.hash == batch_hash(chain.b2) and r2.state.log_last == chain.b2.header.log_last


def test_the_batch_survives_its_wire_encoding(chain: Chain) -> None:
    decoded = [decode_batch(encode_batch(b)) for b in (chain.b1, chain.b2)]
    results = verify_chain(decoded, registry=registry(chain.sim))
    assert [r.verdict for r in results] == ["accepted", "accepted"]


def test_a_signature_by_another_key_is_the_signature_finding(chain: Chain) -> None:
    forged = resign(chain.b1, Ed25519PrivateKey.generate())
    result = run(forged, registry(chain.sim))
    assert result.verdict == "refused"
    assert failing(result) == {"signature"}


def test_a_trades_price_is_the_replay_finding(chain: Chain) -> None:
    t = chain.b1.trades[0]
    cheaper = dataclasses.replace(t, price=t.price - 10)
    s = market_settle(cheaper, chain.sim.rates)  # a careful liar keeps the money consistent
    cheaper = dataclasses.replace(
        cheaper,
        value=s.value,
        buyer_pays=s.buyer_pays,
        seller_receives=s.seller_receives,
        commission=s.commission,
        grid_fee=s.grid_fee,
        yield_accrual=s.yield_accrual,
    )
    tampered = reseal(chain.b1, chain.sim.key, trades=(cheaper, *chain.b1.trades[1:]))
    result = run(tampered, registry(chain.sim))
    assert failing(result) == {"replay.mismatch"}
    (finding,) = result.failures
    assert finding.trade == t.id and "price" in finding.detail


def test_a_careless_price_change_also_breaks_the_settlement(chain: Chain) -> None:
    t = chain.b1.trades[1]
    tampered = reseal(
        chain.b1,
        chain.sim.key,
        trades=(chain.b1.trades[0], dataclasses.replace(t, price=t.price + 1)),
    )
    assert failing(run(tampered, registry(chain.sim))) == {"replay.mismatch", "settlement"}


def test_a_flipped_proof_byte_is_the_proof_finding(chain: Chain) -> None:
    t = chain.b1.trades[1]
    proof = bytearray(t.proof)
    proof[100] ^= 0x01
    tampered = reseal(
        chain.b1,
        chain.sim.key,
        trades=(chain.b1.trades[0], dataclasses.replace(t, proof=bytes(proof))),
    )
    result = run(tampered, registry(chain.sim))
    assert failing(result) == {"proof"}
    assert [f.trade for f in result.failures] == [t.id]


def test_a_proof_of_another_trade_does_not_verify_here(chain: Chain) -> None:
    a, b = chain.b1.trades
    swapped = (
        dataclasses.replace(a, commitment=b.commitment, proof=b.proof),
        dataclasses.replace(b, commitment=a.commitment, proof=a.proof),
    )
    result = run(reseal(chain.b1, chain.sim.key, trades=swapped), registry(chain.sim))
    assert failing(result) == {"proof"}
    assert {f.trade for f in result.failures} == {a.id, b.id}


def test_a_wrong_total_is_the_totals_finding(chain: Chain) -> None:
    totals = dict(chain.b1.header.totals)
    totals["tokens_burned"] += 1
    result = run(resign(chain.b1, chain.sim.key, totals=totals), registry(chain.sim))
    assert failing(result) == {"totals"}
    assert "tokens_burned" in result.failures[0].detail


def test_a_wrong_commission_is_the_settlement_finding(chain: Chain) -> None:
    t = chain.b1.trades[0]
    skimmed = dataclasses.replace(
        t, commission=t.commission + 1000, seller_receives=t.seller_receives - 1000
    )
    tampered = reseal(chain.b1, chain.sim.key, trades=(skimmed, chain.b1.trades[1]))
    result = run(tampered, registry(chain.sim))
    assert failing(result) == {"settlement"}
    assert "commission" in result.failures[0].detail


def test_broken_conservation_is_named(chain: Chain) -> None:
    t = chain.b1.trades[0]
    tampered = reseal(
        chain.b1,
        chain.sim.key,
        trades=(dataclasses.replace(t, buyer_pays=t.buyer_pays + 1), chain.b1.trades[1]),
    )
    result = run(tampered, registry(chain.sim))
    assert failing(result) == {"settlement"}
    assert "buyer_pays != seller_receives + commission + grid_fee" in result.failures[0].detail


def test_an_edited_order_log_is_the_replay_finding(chain: Chain) -> None:
    log = [dict(e) for e in chain.b1.log]
    buy = next(i for i, e in enumerate(log) if e["op"] == "order" and e["side"] == "buy")
    log[buy]["wh"] -= 1  # the first trade would have been 1 Wh smaller
    result = run(reseal(chain.b1, chain.sim.key, log=log), registry(chain.sim))
    assert failing(result) == {"replay.mismatch"}
    assert "wh" in result.failures[0].detail


def test_a_log_the_market_refuses_is_named_by_its_record(chain: Chain) -> None:
    log = [dict(e) for e in chain.b1.log]
    log[2] = {"seq": log[2]["seq"], "op": "cancel", "id": "never-placed", "ts": 5}
    result = run(reseal(chain.b1, chain.sim.key, log=log), registry(chain.sim))
    assert failing(result) == {"replay.log"}
    assert "log record 3" in result.failures[0].detail


def test_contents_changed_after_signing_break_the_digests(chain: Chain) -> None:
    t = chain.b1.trades[0]
    swapped = dataclasses.replace(
        chain.b1, trades=(dataclasses.replace(t, wh=t.wh + 1), *chain.b1.trades[1:])
    )
    assert "merkle_root" in failing(run(swapped, registry(chain.sim)))
    log = [dict(e) for e in chain.b1.log]
    log[0]["price"] += 1
    relogged = dataclasses.replace(chain.b1, log=tuple(log))
    assert "log_hash" in failing(run(relogged, registry(chain.sim)))


def test_a_wrong_previous_hash_is_a_fork(chain: Chain) -> None:
    history = accepted_b1(chain)
    tampered = resign(chain.b2, chain.sim.key, prev_hash=bytes(32))
    result = run(tampered, registry(chain.sim), history)
    assert result.verdict == "refused" and result.fork
    assert failing(result) == {"chain.prev_hash"}


def test_a_gap_is_held_and_verified_once_filled(chain: Chain) -> None:
    history = MemoryHistory()
    held = run(chain.b2, registry(chain.sim), history)
    assert held.verdict == "held" and not held.failures and held.state is None
    assert [f.status for f in held.findings if f.check == "chain.seq"] == ["held"]
    assert run(chain.b1, registry(chain.sim), history).verdict == "accepted"
    assert run(chain.b2, registry(chain.sim), history).verdict == "accepted"


def test_a_badly_signed_batch_after_a_gap_is_refused_at_once(chain: Chain) -> None:
    forged = resign(chain.b2, Ed25519PrivateKey.generate())
    assert run(forged, registry(chain.sim)).verdict == "refused"


def test_a_second_batch_with_an_accepted_seq_is_a_fork_and_the_same_is_a_duplicate(
    chain: Chain,
) -> None:
    history = accepted_b1(chain)
    assert run(chain.b2, registry(chain.sim), history).verdict == "accepted"
    again = run(chain.b2, registry(chain.sim), history)
    assert again.verdict == "duplicate" and not again.failures
    other = resign(chain.b2, chain.sim.key, created_ts=chain.b2.header.created_ts + 1)
    forked = run(other, registry(chain.sim), history)
    assert forked.verdict == "refused" and forked.fork
    assert failing(forked) == {"chain.fork"}


def test_a_trade_settled_twice_is_a_duplicate(chain: Chain) -> None:
    history = accepted_b1(chain)
    again = chain.b1.trades[0]
    tampered = reseal(chain.b2, chain.sim.key, trades=(*chain.b2.trades, again))
    result = run(tampered, registry(chain.sim), history)
    assert "trade.duplicate" in failing(result)
    assert all(f.trade == again.id for f in result.failures)


def test_a_void_of_a_settled_trade_is_named(chain: Chain) -> None:
    history = accepted_b1(chain)
    log = [dict(e) for e in chain.b2.log]
    settled = chain.b1.trades[0].id
    log.append({"seq": log[-1]["seq"] + 1, "op": "void", "trade": settled, "ts": 9})
    result = run(reseal(chain.b2, chain.sim.key, log=log), registry(chain.sim), history)
    assert "replay.void_settled" in failing(result)


def test_a_settled_trade_the_log_voided_is_named(chain: Chain) -> None:
    sim = GatewaySim(gateway="gw-v")
    t = sim.pair()
    record = sim.records([t])[0]
    sim.void(t.id)
    batch = sim.seal(records=[record])
    assert failing(run(batch, registry(sim))) == {"replay.voided"}


def test_a_trade_the_log_never_made_is_named(chain: Chain) -> None:
    sim = GatewaySim(gateway="gw-a", key=chain.sim.key)
    sim.pair()  # the log has one trade; the batch claims t1 and a made-up t9
    t1 = sim.matched["t1"]
    ghost = dataclasses.replace(t1, id="t9")
    batch = sim.seal(records=sim.records([t1, ghost]))
    assert failing(run(batch, registry(chain.sim))) == {"replay.unknown"}


def test_a_trade_copied_from_another_gateway_is_flagged(chain: Chain) -> None:
    history = accepted_b1(chain)
    other = GatewaySim(gateway="gw-b")
    other.pair()
    copied = chain.b1.trades[0]  # same id "t1", same commitment and proof
    batch = other.seal(records=[copied])
    result = run(batch, registry(chain.sim, other), history)
    assert "trade.cross_gateway" in failing(result)
    # the copy's proof is bound to gw-a, so it fails here too
    assert "proof" in failing(result)


def test_same_trade_ids_on_two_gateways_are_not_a_conflict(chain: Chain) -> None:
    history = accepted_b1(chain)
    other = GatewaySim(gateway="gw-b")
    other.pair()
    other.pair()
    assert run(other.seal(), registry(chain.sim, other), history).verdict == "accepted"


def test_a_meter_under_two_gateways_is_flagged(chain: Chain) -> None:
    other = GatewaySim(gateway="gw-b", meters=["shared-m", "gw-b-m1"])
    reg = registry(chain.sim, other)
    reg["gw-a"] = dataclasses.replace(reg["gw-a"], meters=reg["gw-a"].meters | {"shared-m"})
    result = run(chain.b1, reg)
    assert failing(result) == {"meter.cross_gateway"}
    assert "shared-m" in result.failures[0].detail


def test_a_seller_meter_not_registered_to_the_gateway_is_named() -> None:
    """A trade that names a meter outside the gateway's registration, even with a proof made
    for that meter and the batch signed by the gateway's own key, fails ``trade.meter`` only;
    the other trades pass."""
    sim = GatewaySim(gateway="gw-a")
    other = GatewaySim(gateway="gw-b")
    t1, t2 = sim.pair(), sim.pair()
    good = sim.records([t1])[0]
    foreign = make_record("gw-a", t2, sim.rates, meter="gw-b-m1")  # proof bound to that meter
    assert foreign.meter not in sim.meters and foreign.meter in other.meters
    batch = sim.seal(records=[good, foreign])
    result = run(batch, registry(sim, other))
    assert result.verdict == "refused" and failing(result) == {"trade.meter"}
    (finding,) = result.failures
    assert finding.trade == t2.id and "gw-b-m1" in finding.detail and "gw-a" in finding.detail


def test_a_proof_moved_to_another_meter_fails_the_proof() -> None:
    """The proof is bound to the seller's meter: renaming the meter (to another registered one
    of the same gateway) and re-sealing breaks the proof, not the meter check."""
    sim = GatewaySim(gateway="gw-a")
    t1 = sim.pair()
    record = sim.records([t1])[0]
    other_meter = next(m for m in sorted(sim.meters) if m != record.meter)
    batch = sim.seal(records=[dataclasses.replace(record, meter=other_meter)])
    result = run(batch, registry(sim))
    assert failing(result) == {"proof"} and result.failures[0].trade == t1.id


def test_an_unregistered_gateway_is_refused(chain: Chain) -> None:
    result = run(chain.b1, {})
    assert result.verdict == "refused" and failing(result) == {"gateway.registered"}


def test_a_delivery_of_an_unknown_trade_is_named(chain: Chain) -> None:
    history = accepted_b1(chain)
    d = dataclasses.replace(chain.b2.deliveries[0], trade="t99")
    tampered = reseal(chain.b2, chain.sim.key, deliveries=(d, chain.b2.deliveries[1]))
    result = run(tampered, registry(chain.sim), history)
    assert failing(result) == {"delivery"} and result.failures[0].trade == "t99"


def test_a_delivered_status_short_of_the_wh_is_named(chain: Chain) -> None:
    history = accepted_b1(chain)
    d = dataclasses.replace(chain.b2.deliveries[1], status="delivered")
    tampered = reseal(chain.b2, chain.sim.key, deliveries=(chain.b2.deliveries[0], d))
    assert failing(run(tampered, registry(chain.sim), history)) == {"delivery"}


def test_a_threshold_below_the_reserve_is_named() -> None:
    from edge.batch import proof_context
    from edge.zk import commit, prove_at_least

    sim = GatewaySim(gateway="gw-r")
    t = sim.pair()
    record = sim.records([t])[0]
    commitment, opening = commit(1500)
    ctx = proof_context(
        gateway="gw-r",
        trade=t.id,
        seller=t.seller,
        meter=record.meter,
        wh=t.wh,
        interval=t.interval,
    )
    low = dataclasses.replace(
        record,
        commitment=commitment,
        soc_threshold_bp=1000,
        proof=prove_at_least(opening, threshold=1000, reserved=0, context=ctx),
    )
    result = run(sim.seal(records=[low]), registry(sim))
    assert failing(result) == {"proof.threshold"}


def test_an_empty_chain_state_is_the_genesis() -> None:
    assert ChainState().seq == 0 and ChainState().hash == bytes(32)


# ---------------------------------------------------------------------- pruned intervals


def closed_and_pruned(sim: GatewaySim, interval: int = 0) -> None:
    """Log what a gateway logs once an interval is over: its close, then its prune."""
    sim.ts += 1
    sim.event(CloseInterval(interval, sim.ts))
    sim.event(Prune(interval, sim.ts))


def test_a_prune_after_its_trades_are_settled_or_voided_is_accepted() -> None:
    sim = GatewaySim(gateway="gw-p")
    t1, t2 = sim.pair(), sim.pair()
    sim.void(t2.id)
    history = MemoryHistory()
    assert run(sim.seal(settle_ids=[t1.id]), registry(sim), history).verdict == "accepted"
    closed_and_pruned(sim)
    result = run(sim.seal(settle_ids=[]), registry(sim), history)
    assert result.verdict == "accepted" and not result.failures
    assert result.state is not None and result.state.open_trades == frozenset()
    assert result.state.engine is not None
    kept = Engine.restore(result.state.engine)  # what the coordinator keeps has forgotten t1
    assert kept.trade(t1.id) is None and kept.pruned_through == 0


def test_a_void_and_a_prune_in_one_slice_leave_nothing_open() -> None:
    sim = GatewaySim(gateway="gw-p")
    t1 = sim.pair()
    history = MemoryHistory()
    first = run(sim.seal(settle_ids=[]), registry(sim), history)
    assert first.state is not None and first.state.open_trades == {t1.id}
    sim.void(t1.id)
    closed_and_pruned(sim)  # the prune forgets t1's void mark with t1
    result = run(sim.seal(settle_ids=[]), registry(sim), history)
    assert result.verdict == "accepted" and not result.failures
    assert result.state is not None and result.state.open_trades == frozenset()


def test_a_prune_of_an_open_trade_is_named() -> None:
    sim = GatewaySim(gateway="gw-p")
    t1 = sim.pair()
    history = MemoryHistory()
    assert run(sim.seal(settle_ids=[]), registry(sim), history).verdict == "accepted"
    closed_and_pruned(sim)  # t1 is neither settled nor voided
    result = run(sim.seal(settle_ids=[]), registry(sim), history)
    assert failing(result) == {"replay.pruned"}
    assert [f.trade for f in result.failures] == [t1.id]


def test_settling_a_trade_the_same_slice_pruned_is_named() -> None:
    sim = GatewaySim(gateway="gw-p")
    t1 = sim.pair()
    closed_and_pruned(sim)
    result = run(sim.seal(settle_ids=[t1.id]), registry(sim))
    assert [(f.check, f.trade) for f in result.failures] == [("replay.pruned", t1.id)]  # once
