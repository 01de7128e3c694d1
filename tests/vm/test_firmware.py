"""The meter firmware on the real MicroPython VM and on CPython: the same files, the same checks.

Commands are built by the gateway's side of the wire format (edge.wire) and the meter's
messages are verified by it, so every scenario also checks that the two sides interoperate.
"""

from __future__ import annotations

import itertools
from typing import Any

from edge import wire
from tests.vm.conftest import CPythonBoard, VmBoard

KEY = bytes(range(32))
T0 = 1767225600
CFG: dict[str, Any] = {
    "device_id": "m-001",
    "gateway_id": "gw-1",
    "broker_host": "127.0.0.1",
    "mac_key": KEY.hex(),
    "capacity_wh": 10000,
    "report_s": 10,
}
Board = VmBoard | CPythonBoard


def lock(seq: int, trade: str, wh: int, *, start: int = T0, end: int = T0 + 900, **kw: Any) -> str:
    args: dict[str, Any] = {"key": KEY, "meter": "m-001", "ts": T0, "exp": T0 + 60} | kw
    return wire.build_lock(seq=seq, trade=trade, wh=wh, start=start, end=end, **args).decode()


def messages(result: dict[str, Any], leaf: str) -> list[wire.Telemetry | wire.Delivery | wire.Ack]:
    return [
        wire.parse_meter_message(payload.encode(), key=KEY, meter="m-001")
        for topic, payload, _, _ in result["published"]
        if topic == f"ngrid/gw-1/m-001/{leaf}"
    ]


def acks(result: dict[str, Any]) -> list[wire.Ack]:
    found = messages(result, "ack")
    assert all(isinstance(a, wire.Ack) for a in found)
    return found  # type: ignore[return-value]


def test_golden_vectors(meter_board: Board) -> None:
    vectors = wire.load_vectors()
    got = meter_board.run("golden", vectors=vectors)
    assert got["hmac"] == [v["mac"] for v in vectors["hmac_sha256"]]
    for mine, vector in zip(got["messages"], vectors["messages"], strict=True):
        assert mine == {
            "canonical": vector["canonical"],
            "mac": vector["mac"],
            "payload": vector["payload"],
            "opened_equal": True,
        }
    assert got["invalid"] == [v["reason"] for v in vectors["invalid"]]
    # The VM's port ships an hmac module; ESP32 builds do not, hence the firmware's own.
    assert got["builtin_hmac"] == [v["mac"] for v in vectors["hmac_sha256"]]


def test_boot_publishes_status_will_and_authenticated_telemetry(meter_board: Board) -> None:
    battery = {"capacity_wh": 10000, "soc_bp": 6400}
    result = meter_board.run(
        "session", cfg=CFG, battery=battery, epoch_s=T0, actions=[["steps", 25, 1000]]
    )
    assert result["will"] == ["ngrid/gw-1/m-001/status", "offline", True, 1]
    assert result["published"][0] == ["ngrid/gw-1/m-001/status", "online", True, 1]
    assert result["subscriptions"] == [["ngrid/gw-1/m-001/cmd", 1]]
    states = messages(result, "state")
    assert len(states) == 3  # at boot, +10 s, +20 s
    assert [s.seq for s in states] == sorted({s.seq for s in states})
    assert all(isinstance(s, wire.Telemetry) and s.soc_bp == 6400 for s in states)
    assert all(q == 1 and not r for t, _, r, q in result["published"] if t.endswith("/state"))
    assert result["watchdog_ms"] == 30000 and result["feeds"] >= 25


def test_refusals_have_distinct_reasons(meter_board: Board) -> None:
    # 10 kWh at 50 %: 5000 Wh stored, 2000 Wh reserve, so 3000 Wh can be promised.
    bad_mac = lock(2, "t2", 100)
    bad_mac = bad_mac[:-3] + ("0" if bad_mac[-3] != "0" else "1") + bad_mac[-2:]
    commands = [
        lock(1, "t1", 1000),
        bad_mac,
        lock(3, "t3", 100, exp=T0 - 1),
        lock(1, "t4", 100),
        lock(4, "t5", 2500),
        lock(5, "t1", 1000),
        lock(6, "t1", 900),
        wire.build_lock(
            key=KEY,
            meter="m-002",
            seq=7,
            ts=T0,
            exp=T0 + 60,
            trade="t7",
            wh=1,
            start=T0,
            end=T0 + 9,
        ).decode(),
        '{"kind":"lock",',
        lock(8, "t6", 2000),
        lock(9, "t8", 1),
        wire.build_release(
            key=KEY, meter="m-001", seq=10, ts=T0, exp=T0 + 60, trade="nope"
        ).decode(),
        wire.build_ping(key=KEY, meter="m-001", seq=11, ts=T0, exp=T0 + 60).decode(),
    ]
    result = meter_board.run(
        "session",
        cfg=CFG,
        battery={"capacity_wh": 10000, "soc_bp": 5000},
        epoch_s=T0,
        actions=[["cmd", c] for c in commands],
    )
    got = [(a.reason, a.ok, a.locked_wh) for a in acks(result)]
    assert got == [
        ("ok", True, 1000),
        ("bad_mac", False, 1000),
        ("expired", False, 1000),
        ("replay", False, 1000),
        ("insufficient_reserve", False, 1000),
        ("ok", True, 1000),  # the same lock again: idempotent per trade id
        ("conflict", False, 1000),
        ("wrong_meter", False, 1000),
        ("malformed", False, 1000),
        ("ok", True, 3000),  # exactly up to the reserve
        ("insufficient_reserve", False, 3000),
        ("unknown_trade", False, 3000),
        ("ok", True, 3000),
    ]
    assert [a.cmd for a in acks(result)] == [1, 2, 3, 1, 4, 5, 6, 7, 0, 8, 9, 10, 11]
    store = result["store"]
    assert [lk[0] for lk in store["locks"]] == ["t1", "t6"]
    assert store["cmd_seq"] == 11


def test_a_burst_of_locks_is_acked_every_one(meter_board: Board) -> None:
    # 8 locks sent back to back (more than the inbox's 4 slots): umqtt.simple hands the ones
    # that arrive while an ack waits for its PUBACK to the callback. Each gets one ack: ok, or
    # busy for those the full inbox could not take; none is lost.
    burst = [lock(n, f"t{n}", 100) for n in range(1, 9)]
    result = meter_board.run(
        "session",
        cfg=CFG,
        battery={"capacity_wh": 10000, "soc_bp": 5000},
        epoch_s=T0,
        actions=[["burst", burst]],
    )
    got = acks(result)
    assert sorted(a.cmd for a in got) == list(range(1, 9))
    assert {a.reason for a in got} == {"ok", "busy"}
    accepted = [a.trade for a in got if a.ok]
    busy = [a for a in got if a.reason == "busy"]
    assert len(busy) == result["busy"] and result["overflows"] == 0
    assert all(not a.ok and a.trade == f"t{a.cmd}" for a in busy)  # echoes what it refused
    # A busy command changed nothing; the accepted ones are held.
    assert sorted(lk[0] for lk in result["store"]["locks"]) == sorted(accepted)
    assert got[-1].locked_wh == 100 * len(accepted)
    # The gateway sends the refused ones again, one at a time: all accepted now.
    again = [lock(8 + a.cmd, a.trade, 100) for a in busy]
    result = meter_board.run(
        "session",
        cfg=None,
        battery={"capacity_wh": 10000, "soc_bp": 5000},
        epoch_s=T0,
        actions=[["cmd", c] for c in again],
    )
    assert [a.reason for a in acks(result)] == ["ok"] * len(busy)
    assert len(result["store"]["locks"]) == 8  # the meter's maximum


def test_an_overflowing_burst_drops_the_connection_and_says_so(meter_board: Board) -> None:
    # More than inbox (4) + busy ring (16) arrive while one ack waits for its PUBACK. The first
    # with no room is not PUBACKed (the callback raises before umqtt sends it): the connection
    # drops, the broker (clean session) forgets what it had not delivered and publishes the
    # meter's last will; the meter reconnects and answers every command it had read.
    burst = [lock(n, f"t{n}", 10) for n in range(1, 31)]
    result = meter_board.run(
        "session",
        cfg=CFG,
        battery={"capacity_wh": 10000, "soc_bp": 5000},
        epoch_s=T0,
        actions=[["burst", burst], ["steps", 5, 1000]],
    )
    got = acks(result)
    assert result["overflows"] == 1 and result["connects"] == 2 and result["waiting"] == 0
    # Commands 1 (handled), 2-5 (inbox) and 6-21 (busy) were read: each has its ack.
    assert sorted(a.cmd for a in got) == list(range(1, 22))
    assert [a.cmd for a in got if a.reason == "busy"] == list(range(6, 22))
    assert result["busy"] == 16


def test_reboot_mid_lock_restores_the_lock_and_reports_delivery(meter_board: Board) -> None:
    battery = {"capacity_wh": 10000, "soc_bp": 8000, "lock_export_w": 3600}
    first = meter_board.run(
        "session",
        cfg=CFG,
        battery=battery,
        epoch_s=T0,
        actions=[["cmd", lock(1, "t1", 500, end=T0 + 300)], ["steps", 10, 10_000]],
    )
    assert [a.reason for a in acks(first)] == ["ok"]
    assert first["lock_output"] is True
    held = first["store"]["locks"]
    assert held[0][:4] == ["t1", 500, T0, T0 + 300] and held[0][4] > 0

    # Power cut, then the board boots again 20 s later with only its flash.
    second = meter_board.run(
        "session",
        cfg=None,
        battery=battery,
        epoch_s=T0 + 120,
        actions=[
            ["cmd", lock(1, "t1", 500, end=T0 + 300, exp=T0 + 500)],  # re-sent: idempotent
            ["cmd", lock(1, "t9", 10, exp=T0 + 500)],  # seq 1 was used before the cut
            ["steps", 30, 10_000],
        ],
    )
    (restored,) = second["boot_store"]["locks"]
    assert restored[:4] == held[0][:4]
    # Delivered Wh reach flash with the counters (every persist_wh = 10 Wh): a cut loses less.
    assert held[0][4] - 10 <= restored[4] <= held[0][4]
    assert second["boot_store"]["cmd_seq"] == 1
    assert [a.reason for a in acks(second)] == ["ok", "replay"]
    deliveries = [m for m in messages(second, "state") if isinstance(m, wire.Delivery)]
    assert len(deliveries) == 1
    delivery = deliveries[0]
    assert (delivery.trade, delivery.wh, delivery.start, delivery.end) == ("t1", 500, T0, T0 + 300)
    assert restored[4] < delivery.delivered_wh <= 500
    assert second["store"]["locks"] == [] and second["lock_output"] is False


def test_counters_and_seq_never_go_backwards_across_reboots(meter_board: Board) -> None:
    seen: list[wire.Telemetry] = []
    homes = [
        {"capacity_wh": 5000, "soc_bp": 9900, "pv_w": 4000, "load_w": 300},  # exporting
        {"capacity_wh": 5000, "soc_bp": 500, "pv_w": 0, "load_w": 2500},  # importing
        {"capacity_wh": 5000, "soc_bp": 9900, "pv_w": 3000, "load_w": 0},
        {"capacity_wh": 5000, "soc_bp": 0, "pv_w": 0, "load_w": 1800},
    ]
    for boot, battery in enumerate(homes):
        result = meter_board.run(
            "session",
            cfg=CFG if boot == 0 else None,
            battery=battery,
            epoch_s=T0 + boot * 1000,
            actions=[["steps", 13, 5000]],
            tmp_garbage=boot == 2,  # a power cut in the middle of a save
        )
        states = [m for m in messages(result, "state") if isinstance(m, wire.Telemetry)]
        assert states, "no telemetry"
        seen += states
        if boot:
            assert result["boot_store"]["seq"] > last_seq  # noqa: F821
        last_seq = states[-1].seq  # noqa: F841
    seqs = [s.seq for s in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for before, after in itertools.pairwise(seen):
        assert after.import_wh >= before.import_wh
        assert after.export_wh >= before.export_wh
    assert seen[-1].import_wh > 0 and seen[-1].export_wh > 0


def test_reconnects_and_resubscribes(meter_board: Board) -> None:
    result = meter_board.run(
        "session",
        cfg=CFG,
        battery={"capacity_wh": 10000, "soc_bp": 5000},
        epoch_s=T0,
        actions=[
            ["steps", 3, 1000],
            ["net", 0],
            ["steps", 40, 1000],
            ["net", 1],
            ["steps", 90, 1000],
        ],
    )
    assert result["connects"] == 2
    assert result["subscriptions"] == [["ngrid/gw-1/m-001/cmd", 1]] * 2
    online = [p for p in result["published"] if p[0].endswith("/status")]
    assert online == [["ngrid/gw-1/m-001/status", "online", True, 1]] * 2


def test_backoff_is_capped_exponential_with_jitter(meter_board: Board) -> None:
    delays = meter_board.run("backoff", cfg=CFG, failures=12)["delays"]
    for n, delay in enumerate(delays):
        ceiling = min(60000, 500 * 2**n)
        assert ceiling // 2 <= delay <= ceiling
    assert len(set(delays)) > 6  # jittered, not a fixed schedule


def test_config_errors_name_the_key(meter_board: Board) -> None:
    import json

    def text(**changes: Any) -> str:
        cfg = {k: v for k, v in (CFG | changes).items() if v is not None}
        return json.dumps(cfg)

    got = meter_board.run(
        "config_errors",
        texts=[
            text(),
            text(mac_key=None),
            text(mac_key="00" * 31),
            text(capacity_wh="10 kWh"),
            text(reserve_bp=12000),
            text(device_id="bad id"),
            text(colour="red"),
            "{not json",
        ],
    )
    assert [key for key, _ in got] == [
        "",
        "mac_key",
        "mac_key",
        "capacity_wh",
        "reserve_bp",
        "device_id",
        "colour",
        "",
    ]
    assert got[1][1] == "mac_key: missing (required)"
    assert "32-byte" in got[2][1] and "JSON" in got[7][1]


def test_ram_stays_bounded_under_a_command_stream(vm_board: VmBoard) -> None:
    commands, count = [], 2000
    for i in range(count // 2):
        commands.append(lock(2 * i + 1, f"t{i}", 100, exp=T0 + 10**6))
        commands.append(
            wire.build_release(
                key=KEY, meter="m-001", seq=2 * i + 2, ts=T0, exp=T0 + 10**6, trade=f"t{i}"
            ).decode()
        )
    # Every 10th command is a replay, a forgery or garbage instead.
    commands = [
        c if n % 10 else ('{"kind":"ping"}', lock(1, "old", 5), c[:-5] + 'abcd"}')[n // 10 % 3]
        for n, c in enumerate(commands)
    ]
    result = vm_board.run_loop(
        "memory_setup",
        count,
        "memory_step",
        "memory_result",
        cfg=CFG | {"watchdog_ms": 0},
        commands=commands,
    )
    floor = result["after_collect"]
    print(
        f"\nfirmware RAM in the MicroPython VM over {result['handled']} commands: "
        f"live after boot {result['baseline']} B, high-water {result['peak']} B "
        f"(gc.mem_alloc() mid-command), live after collect {min(floor)}..{max(floor)} B"
    )
    assert result["handled"] == count
    assert result["busy"] == 0 and result["overflows"] == 0
    # An ESP32 without PSRAM leaves MicroPython ~110 KB of heap; the figure includes the test
    # harness (simhal, scenarios: ~18 KB) and the firmware loaded from source, not .mpy.
    assert result["peak"] < 80 * 1024
    assert max(floor) - min(floor) < 4096  # no growth over the stream


def test_modbus_rtu_frames_match_the_spec_examples(meter_board: Board) -> None:
    got = meter_board.run("modbus_frames")
    # Widely published Modbus RTU examples (function 0x03, unit 1).
    assert got["req_1_reg"] == "010300000001840a"
    assert got["req_10_regs"] == "01030000000ac5cd"
    assert got["resp"] == [1]
    assert got["signed"] == [-1832, 256]


def test_device_hal_over_stand_in_hardware(vm_board: VmBoard) -> None:
    """device/hal.py itself, in the VM, over tests/vm/fakes (machine, network, umqtt)."""
    got = vm_board.run_with_hal("device_hal", cfg=CFG)
    assert (got["soc"], got["power"]) == (7350, -1832)
    assert got["pulses"] == [5, 2] and got["pulses_again"] == [0, 0]
    assert got["irq_balanced"]
    assert (got["lock_pin"], got["lock_pin_off"]) == (1, 0)
    assert got["feeds"] == 1
    assert got["network_up"] is True and got["ntp_calls"] == 1
    assert got["network_down"] is False and got["wifi_connects"] == ["home"]
    assert got["mqtt_args"] == ["m-1", "10.0.0.2", 1883, None, None, 60]
    assert got["epoch_is_unix"] and got["jitter_in_range"]
    assert got["errors"] == ["modbus: bad CRC", "BMS did not answer", "BMS reported SoC 10001 bp"]
