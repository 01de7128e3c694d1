"""Locks honoured and refused as specified (docs/wire.md), and a reset in the middle of a lock."""

from __future__ import annotations

import os
from typing import Any

import pytest

from hil.plugin import Firmware, GatewayPeer, Provisioned


def ack_of(peer: GatewayPeer, seq: int, *, trade: str | None = None, after: int = 0) -> Any:
    """The ack of lock command ``seq`` (and ``trade``, when several commands share a seq)."""
    return peer.wait(
        "ack",
        lambda a: a.cmd == seq and a.op == "lock" and trade in (None, a.trade),
        after=after,
    )


def holds(locked_wh: int, expected: int) -> bool:
    """Locked Wh as reported: the lock's Wh less what was already delivered against it (the
    simulated battery exports while locked), so at most ``expected`` and a little below."""
    return expected - 20 <= locked_wh <= expected


def available_wh(peer: GatewayPeer, meter: Provisioned) -> int:
    """Wh the meter can still lock, from its latest verified telemetry (SoC above reserve)."""
    state = peer.wait("state", after=peer.mark())
    above = max(0, state.soc_bp - meter.reserve_bp)
    return meter.capacity_wh * above // 10_000 - state.locked_wh


def test_locks_honoured_and_refused(
    meter: Provisioned, firmware: Any, gateway_peer: GatewayPeer
) -> None:
    peer = gateway_peer
    peer.wait("state")

    seq, payload = peer.lock(trade="t-1", wh=1_000)
    ack = ack_of(peer, seq)
    assert (ack.ok, ack.reason, ack.trade) == (True, "ok", "t-1")
    assert holds(ack.locked_wh, 1_000)
    assert holds(peer.wait("state", after=peer.mark()).locked_wh, 1_000)

    mark = peer.mark()
    peer.send(payload)  # the very same command again: idempotent, nothing more is locked
    again = ack_of(peer, seq, after=mark)
    assert again.ok and holds(again.locked_wh, 1_000)

    refusals = {}
    _, _ = peer.lock(trade="t-replay", wh=10, seq=seq)  # a new trade with a used seq
    refusals["replay"] = ack_of(peer, seq, trade="t-replay", after=mark)
    forged_seq, _ = peer.lock(trade="t-forged", wh=10, key=os.urandom(32))
    refusals["bad_mac"] = ack_of(peer, forged_seq)
    late_seq, _ = peer.lock(trade="t-late", wh=10, expires_in=-5)
    refusals["expired"] = ack_of(peer, late_seq)
    big_seq, _ = peer.lock(trade="t-big", wh=available_wh(peer, meter) + 500)
    refusals["insufficient_reserve"] = ack_of(peer, big_seq)
    for reason, refusal in refusals.items():
        assert (refusal.ok, refusal.reason) == (False, reason), reason
        assert holds(refusal.locked_wh, 1_000)  # a refusal locks nothing

    fit_seq, _ = peer.lock(trade="t-2", wh=500)
    fit = ack_of(peer, fit_seq)
    assert fit.ok and holds(fit.locked_wh, 1_500)


def test_survives_a_reset_in_the_middle_of_a_lock(
    meter: Provisioned, firmware: Firmware, gateway_peer: GatewayPeer
) -> None:
    peer = gateway_peer
    peer.wait("state")  # connected and subscribed
    seq, _ = peer.lock(trade="t-reset", wh=800, seconds=3_600)
    assert ack_of(peer, seq).ok
    before = peer.wait("state", lambda s: s.locked_wh > 0, after=peer.mark())

    mark = peer.mark()
    firmware.crash()  # power cut / EN reset: no clean disconnect, then the board boots again
    assert peer.wait("status", lambda s: s == "offline", after=mark) == "offline"  # last will
    assert peer.wait("status", lambda s: s == "online", after=mark, timeout=60) == "online"
    state = peer.wait("state", after=mark, timeout=30)
    assert holds(state.locked_wh, 800)  # the lock came back from flash
    assert state.seq > before.seq  # sequence numbers never go back across a reboot
    # The restored lock still counts: a new lock adds to it, and the old command stays spent.
    seq2, _ = peer.lock(trade="t-next", wh=100)
    assert holds(ack_of(peer, seq2).locked_wh, 900)
    replayed, _ = peer.lock(trade="t-again", wh=10, seq=seq)
    assert ack_of(peer, replayed, trade="t-again").reason == "replay"


@pytest.mark.hardware
def test_lock_pin_follows_the_lock(
    meter: Provisioned, firmware: Firmware, gateway_peer: GatewayPeer
) -> None:
    """On a bench the relay/LED on the lock pin is on while energy is locked, off once released."""
    from provisioning.board import Board

    read_pin = "__import__('machine').Pin(__import__('hal').DEFAULTS['lock_pin']).value()"
    peer = gateway_peer
    peer.wait("state")
    seq, _ = peer.lock(trade="t-pin", wh=100, seconds=600)
    assert ack_of(peer, seq).ok
    peer.wait("state", lambda s: s.locked_wh > 0, after=peer.mark())
    with Board(port=firmware.board.port) as session:
        session.interrupt()
        assert session.eval_json(read_pin) == 1
        session.soft_reset()
    released = peer.release(trade="t-pin")
    assert ack_of(peer, released).ok
    peer.wait("state", lambda s: s.locked_wh == 0, after=peer.mark())
    with Board(port=firmware.board.port) as session:
        session.interrupt()
        assert session.eval_json(read_pin) == 0
