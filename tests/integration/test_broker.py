"""The broker fixtures start a real Mosquitto that carries QoS1 messages and enforces an ACL."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest


async def _roundtrip(port: int, topic: str, **client_kwargs: object) -> bytes:
    async with aiomqtt.Client("127.0.0.1", port, **client_kwargs) as client:  # type: ignore[arg-type]
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"hello", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                return bytes(message.payload)  # type: ignore[arg-type]
    raise AssertionError("no message")


async def test_qos1_roundtrip(mosquitto, topic_prefix):
    assert await _roundtrip(mosquitto.port, f"{topic_prefix}/state") == b"hello"


async def test_credentials_and_acl(mosquitto_factory):
    acl = "pattern readwrite ngrid/gw/%u/#\n"
    with mosquitto_factory(users={"m1": "pw1", "m2": "pw2"}, acl=acl) as broker:
        got = await _roundtrip(broker.port, "ngrid/gw/m1/state", username="m1", password="pw1")
        assert got == b"hello"
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", broker.port, username="m1", password="bad"):
                pass
        # m1 may not read m2's topic: the broker drops the delivery, so nothing arrives.
        async with (
            aiomqtt.Client("127.0.0.1", broker.port, username="m1", password="pw1") as m1,
            aiomqtt.Client("127.0.0.1", broker.port, username="m2", password="pw2") as m2,
        ):
            await m1.subscribe("ngrid/gw/m2/state", qos=1)
            await m2.publish("ngrid/gw/m2/state", b"private", qos=1)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    async for _ in m1.messages:
                        break
