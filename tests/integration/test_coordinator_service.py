"""The coordinator service over HTTP, anchoring on the local Soroban stand-in (real stellar-sdk).

Batches come from the real pipeline (tests/unit/coordinator/pipeline.py): market replay, edge.zk
proofs, edge.batch sealing with a fresh Ed25519 key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from stellar_sdk import Keypair, SorobanServerAsync, scval
from stellar_sdk import xdr as sx
from stellar_sdk.soroban_server_async import Durability

from coordinator.config import CoordinatorConfig, parse_config
from coordinator.service import Coordinator, parse_registration, running
from coordinator.soroban import (
    LOCAL_PASSPHRASE,
    LocalSoroban,
    SorobanConfig,
    SqliteEnvelopeStore,
    Submitter,
    deploy_anchor_contract,
    expected_chain,
    local_soroban,
)
from edge.batch import batch_hash, canonical_bytes, encode_batch, verify_inclusion
from edge.batch.canonical import from_hex
from tests.unit.coordinator.pipeline import GatewaySim, reseal

ADMIN = "admin-token-0123456789abcdef"


@dataclasses.dataclass
class Stack:
    rpc: LocalSoroban
    contract_id: str
    config: CoordinatorConfig
    coordinator: Coordinator
    url: str
    http: aiohttp.ClientSession

    async def post(self, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.url + path, **kw) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(self.url + path) as r:
            return r.status, await r.json()

    async def upload(self, body: bytes) -> tuple[int, dict[str, Any]]:
        return await self.post("/batches", data=body, headers={"Content-Type": "application/json"})

    async def register(self, sim: GatewaySim) -> tuple[int, dict[str, Any]]:
        return await self.post(
            "/gateways",
            json=sim.registration(),
            headers={"Authorization": f"Bearer {ADMIN}"},
        )

    async def anchored(self, gateway: str, seq: int, timeout: float = 20.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            _, body = await self.get(f"/batches/{gateway}/{seq}")
            anchor = body.get("anchor") or {}
            if anchor.get("status") == "anchored":
                return body
            assert anchor.get("status") != "refused", body
            assert asyncio.get_running_loop().time() < deadline, body
            await asyncio.sleep(0.05)

    def anchored_seqs(self, gateway: str) -> list[int]:
        out = []
        for ev in self.rpc.rpc.events:
            if (
                ev.contract_id == self.contract_id
                and ev.topics[1] == scval.to_string(gateway).to_xdr()
            ):
                out.append(scval.from_uint64(sx.SCVal.from_xdr(ev.topics[2])))
        return out


def coordinator_config(
    tmp: Path, rpc_url: str, contract_id: str, secret: Path
) -> CoordinatorConfig:
    (tmp / "admin.token").write_text(ADMIN)
    return parse_config(
        {
            "http": {"port": 0, "admin_token_file": "admin.token"},
            "store": {"path": "coordinator.sqlite3"},
            "soroban": {
                "rpc_url": rpc_url,
                "contract_id": contract_id,
                "secret_file": str(secret),
                "poll_interval_s": 0.02,
                "retry_max_s": 0.5,
            },
        },
        base=tmp,
    )


@pytest.fixture
async def chain_env(tmp_path: Path) -> AsyncIterator[tuple[LocalSoroban, str, Path]]:
    async with local_soroban(ledger_close_ms=50) as rpc:
        kp = Keypair.random()
        await rpc.fund(kp.public_key)
        secret = tmp_path / "coordinator.secret"
        secret.write_text(kp.secret)
        config = SorobanConfig(rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id="")
        async with Submitter(
            config=config,
            store=SqliteEnvelopeStore(path=":memory:"),
            keypair=kp,
            poll_interval_s=0.02,
        ) as sub:
            cid = await deploy_anchor_contract(submitter=sub)
        yield rpc, cid, secret


@pytest.fixture
async def stack(tmp_path: Path, chain_env: tuple[LocalSoroban, str, Path]) -> AsyncIterator[Stack]:
    rpc, cid, secret = chain_env
    config = coordinator_config(tmp_path, rpc.url, cid, secret)
    async with running(config) as (coordinator, url), aiohttp.ClientSession() as http:
        yield Stack(
            rpc=rpc, contract_id=cid, config=config, coordinator=coordinator, url=url, http=http
        )


@pytest.fixture(scope="module")
def sim() -> GatewaySim:
    """gw-a's chain: three batches, a trade carried from the first to the second."""
    s = GatewaySim(gateway="gw-a")
    t1, t2, t3 = s.pair(), s.pair(), s.pair()
    s.seal(settle_ids=[t1.id, t2.id])
    t4 = s.pair()
    s.seal(settle_ids=[t3.id, t4.id], deliveries=[s.delivery(t1.id)])
    s.pair()
    s.seal()
    return s


async def test_registration_needs_the_admin_token_and_is_idempotent(
    stack: Stack, sim: GatewaySim
) -> None:
    status, body = await stack.post("/gateways", json=sim.registration())
    assert status == 401
    status, body = await stack.register(sim)
    assert (status, body["outcome"]) == (201, "created")
    status, body = await stack.register(sim)
    assert (status, body["outcome"]) == (200, "unchanged")
    forged = sim.registration() | {"meters": ["someone-elses-meter"]}
    status, body = await stack.post(
        "/gateways", json=forged, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert status == 400 and "does not verify" in body["error"]
    status, body = await stack.get("/gateways")
    assert [g["id"] for g in body["gateways"]] == ["gw-a"]


async def test_a_meter_under_a_second_gateway_is_refused_and_raised(
    stack: Stack, sim: GatewaySim
) -> None:
    await stack.register(sim)
    other = GatewaySim(gateway="gw-b", meters=[next(iter(sim.meters)), "gw-b-m9"])
    status, body = await stack.register(other)
    assert status == 409 and body["reason"] == "meter"
    _, anomalies = await stack.get("/anomalies")
    assert [a["kind"] for a in anomalies["anomalies"]] == ["registration_meter"]


async def test_a_valid_batch_is_accepted_anchored_once_and_its_receipts_verify(
    stack: Stack, sim: GatewaySim
) -> None:
    await stack.register(sim)
    b1 = sim.batches[0]
    status, body = await stack.upload(encode_batch(b1))
    assert status == 200 and body["status"] == "accepted", body
    assert not [f for f in body["findings"] if f["status"] == "fail"]
    done = await stack.anchored("gw-a", 1)
    assert done["anchor"]["tx_hash"] and done["anchor"]["ledger"] > 0
    root = batch_hash(b1)
    assert done["hash"] == root.hex()
    assert bytes.fromhex(done["anchor"]["chain"]) == expected_chain(bytes(32), root, 1, 2)

    # the same bytes again: the same answer, nothing verified or anchored again
    status, again = await stack.upload(encode_batch(b1))
    assert status == 200 and again["repeated"] is True
    assert {k: v for k, v in again.items() if k != "repeated"} == {
        k: v for k, v in (await stack.get("/batches/gw-a/1"))[1].items() if k != "repeated"
    }
    assert stack.anchored_seqs("gw-a") == [1] and stack.coordinator.anchored == 1

    # a receipt: leaf -> Merkle root -> signed header -> its hash, which the contract holds
    for trade in b1.trades:
        status, rc = await stack.get(f"/receipts/gw-a/{trade.id}")
        assert status == 200
        leaf = canonical_bytes(rc["trade"])
        assert verify_inclusion(
            leaf=leaf,
            index=rc["index"],
            size=rc["size"],
            proof=[bytes.fromhex(p) for p in rc["path"]],
            root=bytes.fromhex(rc["merkle_root"]),
        )
        assert rc["header"]["merkle_root"] == rc["merkle_root"]
        header_hash = hashlib.sha256(canonical_bytes(rc["header"])).digest()
        assert header_hash.hex() == rc["batch_hash"]
        assert from_hex(rc["trade"]["proof"], field="proof") == trade.proof
        server = SorobanServerAsync(stack.rpc.url)
        try:
            entry = await server.get_contract_data(
                stack.contract_id,
                scval.to_vec([scval.to_symbol("root"), scval.to_bytes(header_hash)]),
                Durability.PERSISTENT,
            )
        finally:
            await server.close()
        assert entry is not None, "the receipt's root is not anchored"
        anchored_seq = scval.from_uint64(sx.LedgerEntryData.from_xdr(entry.xdr).contract_data.val)
        assert anchored_seq == rc["batch_seq"] == 1
        assert rc["anchor"]["ledger"] == entry.last_modified_ledger
    status, _ = await stack.get("/receipts/gw-a/t99")
    assert status == 404

    # Anchored once: the anchoring loop takes pending batches in (gateway, seq) order, so once
    # the next batch is anchored, a second anchoring of batch 1 caused by the repeat is done too.
    status, body = await stack.upload(encode_batch(sim.batches[1]))
    assert status == 200 and body["status"] == "accepted", body
    await stack.anchored("gw-a", 2)
    assert stack.anchored_seqs("gw-a") == [1, 2] and stack.coordinator.anchored == 2


async def test_a_gap_is_held_then_filled_and_anchored_in_order(
    stack: Stack, sim: GatewaySim
) -> None:
    await stack.register(sim)
    b1, b2, b3 = sim.batches
    assert (await stack.upload(encode_batch(b1)))[0] == 200
    status, body = await stack.upload(encode_batch(b3))
    assert status == 202 and body["status"] == "held"
    assert "missing" in next(f for f in body["findings"] if f["check"] == "chain.seq")["detail"]
    status, body = await stack.upload(encode_batch(b3))  # the gateway retries: same answer
    assert status == 202 and body["repeated"]
    status, body = await stack.upload(encode_batch(b2))
    assert status == 200, body
    status, body = await stack.get("/batches/gw-a/3")
    assert body["status"] == "accepted"
    await stack.anchored("gw-a", 3)
    assert stack.anchored_seqs("gw-a") == [1, 2, 3]
    # the trade matched in batch 1's log and settled in batch 2 has a receipt from batch 2
    status, rc = await stack.get("/receipts/gw-a/t3")
    assert status == 200 and rc["batch_seq"] == 2


async def test_a_fork_is_refused_and_raised_as_an_anomaly(stack: Stack, sim: GatewaySim) -> None:
    await stack.register(sim)
    b1, b2, _ = sim.batches
    await stack.upload(encode_batch(b1))
    await stack.upload(encode_batch(b2))
    # the gateway signs a second, different batch 2 (it drops a trade)
    fork = reseal(b2, sim.key, trades=b2.trades[:1])
    status, body = await stack.upload(encode_batch(fork))
    assert status == 422 and body["fork"] is True
    assert {f["check"] for f in body["findings"] if f["status"] == "fail"} == {"chain.fork"}
    _, anomalies = await stack.get("/anomalies?gateway=gw-a")
    assert [a["kind"] for a in anomalies["anomalies"]] == ["fork"]
    assert anomalies["anomalies"][0]["seq"] == 2
    status, body = await stack.get("/batches/gw-a/2")
    assert body["status"] == "accepted" and body["hash"] == batch_hash(b2).hex()


async def test_a_tampered_batch_is_refused_with_its_finding(stack: Stack, sim: GatewaySim) -> None:
    await stack.register(sim)
    b1 = sim.batches[0]
    t = b1.trades[0]
    proof = bytearray(t.proof)
    proof[7] ^= 0x80
    bad = reseal(b1, sim.key, trades=(dataclasses.replace(t, proof=bytes(proof)), *b1.trades[1:]))
    status, body = await stack.upload(encode_batch(bad))
    assert status == 422
    fails = [(f["check"], f.get("trade")) for f in body["findings"] if f["status"] == "fail"]
    assert fails == [("proof", t.id)]
    _, anomalies = await stack.get("/anomalies")
    assert [a["kind"] for a in anomalies["anomalies"]] == ["refused"]
    # the honest batch 1 is still welcome
    assert (await stack.upload(encode_batch(b1)))[0] == 200


async def test_a_trade_copied_to_a_second_gateway_is_flagged(stack: Stack, sim: GatewaySim) -> None:
    await stack.register(sim)
    await stack.upload(encode_batch(sim.batches[0]))
    other = GatewaySim(gateway="gw-b")
    await stack.register(other)
    other.pair()
    copy = other.seal(records=[sim.batches[0].trades[0]])
    status, body = await stack.upload(encode_batch(copy))
    assert status == 422
    assert "trade.cross_gateway" in {f["check"] for f in body["findings"] if f["status"] == "fail"}
    _, anomalies = await stack.get("/anomalies?gateway=gw-b")
    assert [a["kind"] for a in anomalies["anomalies"]] == ["cross_gateway"]


async def test_unknown_gateways_and_garbage_are_turned_away(stack: Stack, sim: GatewaySim) -> None:
    status, body = await stack.upload(encode_batch(sim.batches[0]))
    assert status == 403
    assert body["findings"][0]["check"] == "gateway.registered"
    status, body = await stack.upload(b'{"not": "a batch"}')
    assert status == 400 and body["findings"][0]["check"] == "format"
    status, _ = await stack.get("/batches/gw-a/x")
    assert status == 400


async def test_state_survives_a_restart(
    tmp_path: Path, chain_env: tuple[LocalSoroban, str, Path], sim: GatewaySim
) -> None:
    rpc, cid, secret = chain_env
    config = coordinator_config(tmp_path, rpc.url, cid, secret)
    async with aiohttp.ClientSession() as http:
        async with running(config) as (coordinator, url):
            s = Stack(
                rpc=rpc, contract_id=cid, config=config, coordinator=coordinator, url=url, http=http
            )
            await s.register(sim)
            assert (await s.upload(encode_batch(sim.batches[0])))[0] == 200
            await s.anchored("gw-a", 1)
        async with running(config) as (coordinator, url):
            s = Stack(
                rpc=rpc, contract_id=cid, config=config, coordinator=coordinator, url=url, http=http
            )
            # the engine state after batch 1 comes back from the store: batch 2 replays
            status, body = await s.upload(encode_batch(sim.batches[1]))
            assert status == 200, body
            await s.anchored("gw-a", 2)
            status, again = await s.upload(encode_batch(sim.batches[0]))
            assert status == 200 and again["repeated"]
    assert s.anchored_seqs("gw-a") == [1, 2]


class Crash(Exception):
    """Stands for the process dying."""


class CrashAfterSend(SorobanServerAsync):
    """The real SDK client, but the process 'dies' right after its send reaches the RPC."""

    async def send_transaction(self, transaction_envelope):  # type: ignore[no-untyped-def]
        await super().send_transaction(transaction_envelope)
        raise Crash


async def test_a_restart_between_send_and_confirmation_anchors_once(
    tmp_path: Path, chain_env: tuple[LocalSoroban, str, Path], sim: GatewaySim
) -> None:
    rpc, cid, secret = chain_env
    config = coordinator_config(tmp_path, rpc.url, cid, secret)
    envelopes = SqliteEnvelopeStore(path=config.store_path)
    crashing = Submitter(
        config=config.soroban.submitter_config(cid),
        store=envelopes,
        server=CrashAfterSend(rpc.url),
        poll_interval_s=0.02,
    )
    async with aiohttp.ClientSession() as http:
        async with running(config, submitter=crashing) as (coordinator, url):
            s = Stack(
                rpc=rpc, contract_id=cid, config=config, coordinator=coordinator, url=url, http=http
            )
            await s.register(sim)
            assert (await s.upload(encode_batch(sim.batches[0])))[0] == 200
            for _ in range(200):
                _, body = await s.get("/batches/gw-a/1")
                if body["anchor"]["error"]:
                    break
                await asyncio.sleep(0.02)
            assert "Crash" in body["anchor"]["error"] and body["anchor"]["status"] == "pending"
        await crashing.close()
        envelopes.close()
        # the envelope sent before the "crash" is applied meanwhile: wait until the chain has it
        async with asyncio.timeout(20):
            while s.anchored_seqs("gw-a") != [1]:
                await asyncio.sleep(0.02)
        async with running(config) as (coordinator, url):
            s = Stack(
                rpc=rpc, contract_id=cid, config=config, coordinator=coordinator, url=url, http=http
            )
            done = await s.anchored("gw-a", 1)
    assert s.anchored_seqs("gw-a") == [1]
    assert (
        done["anchor"]["chain"]
        == expected_chain(
            bytes(32), batch_hash(sim.batches[0]), 1, len(sim.batches[0].trades)
        ).hex()
    )


async def test_try_again_later_is_waited_out(stack: Stack, sim: GatewaySim) -> None:
    await stack.register(sim)
    stack.rpc.rpc.inject_try_again_later(3)
    assert (await stack.upload(encode_batch(sim.batches[0])))[0] == 200
    await stack.anchored("gw-a", 1)
    assert stack.anchored_seqs("gw-a") == [1]


async def test_without_soroban_or_admin_token_it_verifies_only(
    tmp_path: Path, sim: GatewaySim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NGRID_COORDINATOR_ADMIN_TOKEN", raising=False)
    config = parse_config(
        {"http": {"port": 0, "max_body_mb": 1}, "soroban": {"enabled": False}}, base=tmp_path
    )
    async with running(config) as (coordinator, url), aiohttp.ClientSession() as http:
        async with http.post(url + "/gateways", json=sim.registration()) as r:
            assert r.status == 403 and "disabled" in (await r.json())["error"]
        async with http.post(url + "/batches", data=b"x" * (1024 * 1024 + 1)) as r:
            assert r.status == 413
        async with http.get(url + "/health") as r:
            assert (await r.json())["anchoring"] is False
        coordinator.store.register(  # registered out of band: verification still runs
            parse_registration(sim.registration()),
            now=1,
        )
        async with http.post(url + "/batches", data=encode_batch(sim.batches[0])) as r:
            body = await r.json()
            assert r.status == 200 and body["anchor"]["status"] == "pending"


async def test_a_gap_filled_before_a_restart_releases_the_held_batch_at_start(
    tmp_path: Path, sim: GatewaySim
) -> None:
    """A crash between recording batch 2 and re-verifying held batch 3 leaves 3 held; the next
    start verifies it."""
    from coordinator.store import Store
    from coordinator.verify import verify_batch

    config = parse_config({"http": {"port": 0}, "soroban": {"enabled": False}}, base=tmp_path)
    store = Store(path=config.store_path)
    store.register(parse_registration(sim.registration()), now=1)
    for batch in (sim.batches[0], sim.batches[2], sim.batches[1]):  # 3 arrives before 2
        v = verify_batch(
            batch,
            registry=store.registry(),
            chain=store.chain("gw-a"),
            history=store.history_for(batch),
        )
        body = encode_batch(batch)
        store.record(
            batch=batch, body=body, digest=hashlib.sha256(body).digest(), verification=v, now=2
        )
    assert store.batch("gw-a", 3).status == "held"  # type: ignore[union-attr]
    store.close()
    async with running(config) as (coordinator, _):
        assert coordinator.store.batch("gw-a", 3).status == "accepted"  # type: ignore[union-attr]
        assert coordinator.store.chain("gw-a").seq == 3
