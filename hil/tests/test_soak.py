"""Soak: a stream of commands for --soak-minutes (default a 20-second burst), recording memory
and reconnects. The figures are printed and attached to the test report (record_property)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hil.plugin import Firmware, GatewayPeer, Provisioned


@pytest.mark.soak
def test_soak_command_stream(
    meter: Provisioned,
    firmware: Firmware,
    gateway_peer: GatewayPeer,
    soak_seconds: float,
    record_property: Any,
) -> None:
    peer = gateway_peer
    peer.wait("state")
    start_mark = peer.mark()
    sent: dict[int, str] = {}
    deadline = time.monotonic() + soak_seconds
    round_ = 0
    while time.monotonic() < deadline:
        round_ += 1
        trade = f"soak-{round_}"
        seq, _ = peer.lock(trade=trade, wh=10, seconds=3_600)
        sent[seq] = "lock"
        sent[peer.release(trade=trade)] = "release"
        last = peer.ping()
        sent[last] = "ping"
        # One round at a time: wait for its acks, as a gateway awaits each lock's ack.
        peer.wait("ack", lambda a, s=last: a.cmd == s, after=start_mark, timeout=30)
    acks = [
        a for a in peer.parsed("ack", after=start_mark) if a.cmd in sent and a.op == sent[a.cmd]
    ]
    refused = [a for a in acks if not a.ok]
    onlines = [s for s in peer.parsed("status", after=start_mark) if s == "online"]
    allocated, free = firmware.sample_memory(restart=False)
    summary = {
        "seconds": round(soak_seconds),
        "commands": len(sent),
        "acked": len({a.cmd for a in acks}),
        "refused": len(refused),
        "reconnects": len(onlines),
        "mem_alloc_end": allocated,
        "mem_free_end": free,
    }
    for name, value in summary.items():
        record_property(name, value)
    print("soak:", summary)
    assert summary["acked"] == len(sent), summary  # every command answered
    assert not refused, refused[:3]
    assert summary["reconnects"] == 0, summary  # a healthy link never drops
    assert free > 16 * 1024, summary
