"""Per-meter credentials and an ACL on a real Mosquitto: a meter cannot speak for another."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from tests.brokers import Broker
from tests.integration.gateway_harness import (
    MeterStandIn,
    eventually,
    gateway_config,
    load,
    running_gateway,
)

PREFIX = "ngrid/gw1"
ACL = f"""\
user gateway
topic readwrite {PREFIX}/#

pattern write {PREFIX}/%u/state
pattern write {PREFIX}/%u/ack
pattern write {PREFIX}/%u/status
pattern read {PREFIX}/%u/cmd
"""
USERS = {"gateway": "gw-secret", "m-a": "a-secret", "m-b": "b-secret"}


async def test_meter_cannot_publish_on_another_meters_topics(
    mosquitto_factory: Callable[..., AbstractContextManager[Broker]], tmp_path: Path
) -> None:
    with mosquitto_factory(users=USERS, acl=ACL) as broker:
        data = gateway_config(tmp_path, port=broker.port, prefix=PREFIX)
        data["mqtt"].update(username="gateway", password=USERS["gateway"])
        async with running_gateway(load(data, tmp_path)) as gw:
            # m-a holds m-b's key (say it leaked) but only its own broker credentials.
            intruder = MeterStandIn("m-b", port=broker.port, prefix=PREFIX)
            intruder.username, intruder.password = "m-a", USERS["m-a"]
            async with intruder.running(period=60):
                for _ in range(3):
                    await intruder.publish(intruder.telemetry())
                    await intruder.publish(intruder.telemetry(), "ack")
                # A sentinel on a topic m-a may write, on the same connection: the broker keeps
                # one client's messages in order, so once the gateway has it, any forged message
                # that got through would have been handled before it.
                sentinel = MeterStandIn("m-a", port=broker.port, prefix=PREFIX).telemetry()
                await intruder.publish(sentinel, meter="m-a")
                await eventually(lambda: "m-a" in gw.core.telemetry)
            assert "m-b" not in gw.core.telemetry
            assert sum(gw.core.refusals.values()) == 0  # dropped by the broker, never delivered
            # The same messages with m-b's own credentials do arrive (the control).
            owner = MeterStandIn("m-b", port=broker.port, prefix=PREFIX)
            owner.username, owner.password = "m-b", USERS["m-b"]
            async with owner.running(period=60):
                await eventually(lambda: "m-b" in gw.core.telemetry)
