"""The real gateway (edge.gateway, on the real Mosquitto) uploads to the real coordinator, which
verifies each batch and anchors it on the local Soroban stand-in.

The gateway's outbox speaks ``POST {coordinator.url}/batches`` with the canonical batch bytes;
the coordinator answers 200 (accepted) / 202 (held) so the gateway marks the batch uploaded.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import serialization

from coordinator.service import running
from coordinator.soroban import LocalSoroban
from provisioning.gateway import canonical_json
from tests.brokers import Broker
from tests.integration.gateway_harness import (
    SIGNING_KEY,
    Api,
    MeterStandIn,
    eventually,
    gateway_config,
    load,
    running_gateway,
)
from tests.integration.test_coordinator_service import (  # the stand-in with the contract
    ADMIN,
    chain_env,  # noqa: F401 (a fixture)
    coordinator_config,
)


def registration(gateway: str, meters: list[str]) -> dict[str, object]:
    public = SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    request = {
        "type": "ngrid.gateway.registration",
        "version": 1,
        "gateway_id": gateway,
        "key_algorithm": "ed25519",
        "public_key": public.hex(),
        "meters": meters,
        "created_at": "2026-11-21T00:00:00Z",
    }
    return request | {"signature": SIGNING_KEY.sign(canonical_json(request)).hex()}


async def test_the_gateways_batches_are_verified_and_anchored(
    mosquitto: Broker,
    topic_prefix: str,
    tmp_path: Path,
    chain_env: tuple[LocalSoroban, str, Path],  # noqa: F811
) -> None:
    rpc, cid, secret = chain_env
    (tmp_path / "coordinator").mkdir()
    config = coordinator_config(tmp_path / "coordinator", rpc.url, cid, secret)
    async with running(config) as (_, url), aiohttp.ClientSession() as http:
        async with http.post(
            url + "/gateways",
            json=registration("gw1", ["m-a", "m-b"]),
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as r:
            assert r.status == 201, await r.text()
        data = gateway_config(
            tmp_path / "gateway",
            port=mosquitto.port,
            prefix=topic_prefix,
            coordinator=url,
            batch={"every_s": 1},
        )
        async with (
            running_gateway(load(data, tmp_path / "gateway")) as gw,
            MeterStandIn("m-a", port=mosquitto.port, prefix=topic_prefix).running(),
        ):
            api = Api(gw.api_port)
            await eventually(lambda: gw.telemetry_seq("m-a") is not None)
            await api.call("POST", "/v1/orders", "alice", {"side": "sell", "wh": 900, "price": 100})

            # The ledger belongs to the gateway's disk thread: read it through gw.disk.
            async def trades_are(n: int) -> bool:
                return bool((await gw.disk(gw.ledger.totals))["trades"] == n)

            async def all_uploaded() -> bool:
                unbatched, _ = await gw.disk(gw.ledger.unbatched)
                return not unbatched and await gw.disk(gw.ledger.outbox) == []

            for n in range(3):
                await api.call(
                    "POST", "/v1/orders", "bob", {"side": "buy", "wh": 150, "price": 120}
                )
                await eventually(lambda n=n: trades_are(n + 1))
                await asyncio.sleep(0.6)  # batches every second: trades spread over batches
            # every settled trade sealed in a batch, every batch uploaded
            await eventually(all_uploaded, timeout=20)
            sealed = await gw.disk(gw.ledger.last_batch)
            assert sealed is not None
            settled = {t["id"] for t in await gw.disk(gw.ledger.trades_of, "bob")}

        for seq in range(1, sealed.seq + 1):
            for _ in range(400):
                async with http.get(f"{url}/batches/gw1/{seq}") as r:
                    body = await r.json()
                if body["status"] == "accepted" and body["anchor"]["status"] == "anchored":
                    break
                assert body["status"] == "accepted", body
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(body)
            failed = [f for f in body["findings"] if f["status"] == "fail"]
            assert not failed, failed
        for trade in settled:
            async with http.get(f"{url}/receipts/gw1/{trade}") as r:
                receipt = await r.json()
                assert r.status == 200, receipt
            assert receipt["anchor"]["status"] == "anchored"
        async with http.get(url + "/anomalies") as r:
            assert (await r.json())["anomalies"] == []
        assert len(settled) == 3
