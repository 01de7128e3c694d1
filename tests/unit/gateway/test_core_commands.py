"""Commands to a meter: a ``busy`` ack is answered by sending the command again (never a void by
itself), at most ``locks.max_in_flight`` commands per meter are unacknowledged, the rest wait in
a bounded FIFO (docs/wire.md "Inbox", docs/gateway.md "Commands to a meter")."""

from __future__ import annotations

from edge.gateway.config import GatewayConfig
from edge.gateway.core import Effect, GatewayCore, Prove, Publish, Settle
from edge.wire import Command, parse_command
from tests.unit.gateway.conftest import KEY_A, T0, ack, make_config
from tests.unit.gateway.test_core import PREFIX, log_ops, new_core, of, prove, report


def sent(effects: list[Effect]) -> list[Command]:
    """The commands published to m-a, verified with its key (edge.wire checks the MAC)."""
    return [
        parse_command(p.payload, key=KEY_A, meter="m-a")
        for p in of(effects, Publish)
        if p.topic == f"{PREFIX}/m-a/cmd"
    ]


def answer(
    core: GatewayCore, cmd: Command, *, seq: int, now: int, reason: str = "ok"
) -> list[Effect]:
    """m-a's authenticated ack of ``cmd``."""
    payload = ack(
        KEY_A,
        "m-a",
        seq=seq,
        trade=cmd.trade,
        op=cmd.kind,
        ok=reason == "ok",
        reason=reason,
        cmd=cmd.seq,
        ts=now,
    )
    return core.on_message(topic=f"{PREFIX}/m-a/ack", payload=payload, now=now)


def locked(core: GatewayCore, now: int = T0 + 10) -> Command:
    """alice sells to bob; the proof is made and the lock goes out: that lock command."""
    report(core, "m-a", seq=1, now=T0, soc_bp=8000)
    core.place(home="alice", side="sell", wh=1000, price=120, interval=None, now=T0)
    _, effects = core.place(home="bob", side="buy", wh=600, price=150, interval=None, now=T0 + 1)
    (p,) = of(effects, Prove)
    commitment, proof = prove(p)
    (lock,) = sent(core.proof_ready(trade="t1", commitment=commitment, proof=proof, now=now))
    return lock


def burst(core: GatewayCore, n: int, *, now: int = T0) -> list[Effect]:
    """``n`` resting buys, then one sell that matches them all (locks due at once)."""
    report(core, "m-a", seq=1, now=now, soc_bp=8000)
    for i in range(n):
        core.place(home="bob", side="buy", wh=100, price=150, interval=None, now=now + i)
    _, effects = core.place(
        home="alice", side="sell", wh=5000, price=120, interval=None, now=now + n
    )
    return effects


def test_busy_ack_sends_the_lock_again_with_a_new_seq(prove_first: GatewayConfig) -> None:
    config = prove_first
    core = new_core(config)
    first = locked(core)
    effects = answer(core, first, seq=2, now=T0 + 20, reason="busy")
    assert log_ops(effects) == [] and sent(effects) == []  # no void, no immediate resend
    assert core.voids == {} and "t1" in core.pending
    backoff = config.locks.busy_backoff_ms
    assert sent(core.tick(now=T0 + 20 + backoff - 1)) == []
    (again,) = sent(core.tick(now=T0 + 20 + backoff))
    assert (again.kind, again.trade, again.wh) == ("lock", "t1", first.wh)
    assert (again.start, again.end) == (first.start, first.end)
    assert again.seq > first.seq  # the meter recorded the busy seq nowhere, but seqs only rise
    assert again.exp == first.exp  # the trade's own deadline: never later than the first send
    status = core.status()["commands"]
    assert status["busy"] == {"m-a": 1} and status["resent"] == {"m-a": 1}
    assert status["in_flight"] == {"m-a": 1}
    settled = answer(core, again, seq=3, now=T0 + 200)
    assert len(of(settled, Settle)) == 1 and "t1" in core.locks
    assert core.voids == {} and core.status()["commands"]["in_flight"] == {}


def test_repeated_busy_until_the_lock_timeout_voids_by_timeout(prove_first: GatewayConfig) -> None:
    config = prove_first
    core = new_core(config)
    cmd = locked(core)  # sent at T0 + 10
    deadline = T0 + 10 + config.locks.timeout_ms
    backoff = config.locks.busy_backoff_ms
    seqs, gaps, now, meter_seq = [cmd.seq], [], T0 + 20, 2
    while True:
        effects = answer(core, cmd, seq=meter_seq, now=now, reason="busy")
        meter_seq += 1
        assert "void" not in log_ops(effects)
        resent: list[Command] = []
        t = now
        while not resent and t < deadline - 1:
            t += 1
            ticked = core.tick(now=t)
            assert "void" not in log_ops(ticked)
            resent = sent(ticked)
        if not resent:
            break
        (cmd,) = resent
        seqs.append(cmd.seq)
        gaps.append(t - now)
        now = t + 10
    assert core.voids == {} and "t1" in core.pending  # a busy never voids by itself
    assert seqs == sorted(set(seqs)) and len(seqs) >= 4
    assert gaps[:4] == [backoff, 2 * backoff, 4 * backoff, 8 * backoff]  # doubling back-off
    effects = core.tick(now=deadline)
    assert "void" in log_ops(effects)
    assert [c.kind for c in sent(effects)] == ["release"]
    assert core.voids == {"timeout": 1}
    status = core.status()["commands"]
    assert status["busy"] == {"m-a": len(seqs)} and status["resent"] == {"m-a": len(seqs) - 1}


def test_at_most_four_unacknowledged_commands_per_meter(config: GatewayConfig) -> None:
    core = new_core(make_config(locks={"prove_before_lock": False}))
    effects = burst(core, 6)
    first = sent(effects)
    assert [c.trade for c in first] == ["t1", "t2", "t3", "t4"]  # FIFO, the first four
    assert core.status()["commands"]["in_flight"] == {"m-a": 4}
    assert core.status()["commands"]["waiting"] == {"m-a": 2}
    assert sent(core.tick(now=T0 + 100)) == []  # a tick sends nothing while four are out
    for p in of(effects, Prove):
        commitment, proof = prove(p)
        core.proof_ready(trade=p.trade, commitment=commitment, proof=proof, now=T0 + 50)
    # Each ack frees a slot for the next waiting command, in order; seqs keep rising.
    out = [*first]
    meter_seq = 2
    for cmd in first[:2]:
        effects = answer(core, cmd, seq=meter_seq, now=T0 + 200 + meter_seq)
        meter_seq += 1
        assert len(of(effects, Settle)) == 1
        out += sent(effects)
    assert [c.trade for c in out] == ["t1", "t2", "t3", "t4", "t5", "t6"]
    assert [c.seq for c in out] == sorted({c.seq for c in out})
    for cmd in out[2:]:
        assert len(of(answer(core, cmd, seq=meter_seq, now=T0 + 300), Settle)) == 1
        meter_seq += 1
    assert sorted(core.locks) == ["t1", "t2", "t3", "t4", "t5", "t6"] and core.voids == {}


def test_a_busy_command_keeps_its_place_in_the_queue(config: GatewayConfig) -> None:
    core = new_core(make_config(locks={"prove_before_lock": False}))
    first = sent(burst(core, 6))
    effects = answer(core, first[0], seq=2, now=T0 + 20, reason="busy")
    # t1's slot is free but t1 waits out its back-off: t5 may go meanwhile.
    assert [c.trade for c in sent(effects)] == ["t5"]
    effects = answer(core, first[1], seq=3, now=T0 + 30)  # t2 ok: a slot while t1 waits
    assert [c.trade for c in sent(effects)] == ["t6"]
    effects = answer(core, first[2], seq=4, now=T0 + 40)
    assert sent(effects) == []  # t1 is the only one waiting and its back-off is not over
    (again,) = sent(core.tick(now=T0 + 20 + config.locks.busy_backoff_ms))
    assert again.trade == "t1" and again.seq > first[3].seq


def test_past_the_queue_bound_a_lock_is_voided_and_the_sell_cancelled() -> None:
    config = make_config(locks={"prove_before_lock": False, "max_in_flight": 1, "queue_max": 1})
    core = new_core(config)
    effects = burst(core, 3)
    assert [c.trade for c in sent(effects)] == ["t1"]  # one in flight, t2 waits
    assert core.voids == {"queue_full": 1}  # t3 had no room
    assert log_ops(effects).count("void") == 1 and log_ops(effects)[-1] == "cancel"
    assert core.engine.is_voided("t3") and not core.engine.is_voided("t2")
    assert core.orders_of("alice")[0]["status"] == "cancelled"
    assert core.status()["commands"]["waiting"] == {"m-a": 1}


def test_an_unanswered_lock_times_out_and_frees_its_slot() -> None:
    config = make_config(locks={"prove_before_lock": False, "max_in_flight": 1})
    core = new_core(config)
    assert [c.trade for c in sent(burst(core, 2))] == ["t1"]
    deadline = T0 + 2 + config.locks.timeout_ms  # both due when the sell came, at T0 + 2
    assert sent(core.tick(now=deadline - 1)) == []  # t1 still counts as in flight
    effects = core.tick(now=deadline)  # no ack: t1 times out, and t2, which waited
    assert core.voids == {"timeout": 2}
    # t1 was sent: its release goes out (t1's slot expired); t2 never was: nothing to release.
    assert [(c.kind, c.trade) for c in sent(effects)] == [("release", "t1")]


def test_busy_release_is_sent_again(prove_first: GatewayConfig) -> None:
    config = prove_first
    core = new_core(config)
    locked(core)
    deadline = T0 + 10 + config.locks.timeout_ms
    (release,) = sent(core.tick(now=deadline))
    assert release.kind == "release"
    assert sent(answer(core, release, seq=2, now=deadline + 5, reason="busy")) == []
    (again,) = sent(core.tick(now=deadline + 5 + config.locks.busy_backoff_ms))
    assert (again.kind, again.trade) == ("release", "t1") and again.seq > release.seq
    assert again.exp == release.exp
    assert core.status()["commands"]["resent"] == {"m-a": 1}
