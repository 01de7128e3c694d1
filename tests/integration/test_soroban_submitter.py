"""The submitter against the local stand-in over HTTP: status rules, restarts, exactly once."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stellar_sdk import Keypair, SorobanServerAsync, scval

from coordinator.errors import AnchorRefusedError
from coordinator.soroban import (
    LOCAL_PASSPHRASE,
    LocalSoroban,
    SorobanConfig,
    SqliteEnvelopeStore,
    Submitter,
    anchor_contract_id,
    deploy_anchor_contract,
    expected_chain,
    local_soroban,
)


@dataclass
class Deployed:
    rpc: LocalSoroban
    kp: Keypair
    contract_id: str
    db: Path

    def config(self, **kw: object) -> SorobanConfig:
        return SorobanConfig(
            rpc_url=self.rpc.url,
            network_passphrase=LOCAL_PASSPHRASE,
            contract_id=self.contract_id,
            **kw,  # type: ignore[arg-type]
        )

    def submitter(self, *, server: SorobanServerAsync | None = None, **kw: object) -> Submitter:
        return Submitter(
            config=self.config(),
            store=SqliteEnvelopeStore(path=self.db),
            keypair=self.kp,
            server=server,
            poll_interval_s=0.02,
            **kw,  # type: ignore[arg-type]
        )

    def anchored(self, gateway: str) -> list[int]:
        """Sequence numbers of the anchored events for ``gateway``, from the chain's events."""
        out = []
        for ev in self.rpc.rpc.events:
            if (
                ev.contract_id == self.contract_id
                and ev.topics[1] == scval.to_string(gateway).to_xdr()
            ):
                out.append(scval.from_uint64(ev.topics[2]))
        return out


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Deployed]:
    async with local_soroban(ledger_close_ms=50) as rpc:
        kp = Keypair.random()
        await rpc.fund(kp.public_key)
        store = SqliteEnvelopeStore(path=":memory:")
        config = SorobanConfig(rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id="")
        async with Submitter(config=config, store=store, keypair=kp, poll_interval_s=0.02) as sub:
            cid = await deploy_anchor_contract(submitter=sub)
        yield Deployed(rpc=rpc, kp=kp, contract_id=cid, db=tmp_path / "anchors.sqlite")


def root(n: int) -> bytes:
    return hashlib.sha256(f"batch {n}".encode()).digest()


class Crash(Exception):
    """Stands for the process dying."""


class CrashAfterSend(SorobanServerAsync):
    """The real SDK client, but the process 'dies' right after the first send reaches the RPC."""

    async def send_transaction(self, transaction_envelope):  # type: ignore[no-untyped-def]
        await super().send_transaction(transaction_envelope)
        raise Crash


class CrashBeforeSend(SorobanServerAsync):
    async def send_transaction(self, transaction_envelope):  # type: ignore[no-untyped-def]
        raise Crash


class LoseQueueAfterSend(SorobanServerAsync):
    """After the first send, the node loses its queue (the envelope is never included)."""

    def __init__(self, url: str, rpc: LocalSoroban) -> None:
        super().__init__(url)
        self.rpc = rpc
        self.sent: list[str] = []

    async def send_transaction(self, transaction_envelope):  # type: ignore[no-untyped-def]
        reply = await super().send_transaction(transaction_envelope)
        self.sent.append(reply.hash)
        if len(self.sent) == 1:
            self.rpc.rpc.drop_queue()
        return reply


async def test_happy_path_anchors_and_chains(deployed: Deployed) -> None:
    async with deployed.submitter() as sub:
        first = await sub.anchor("gw-oak", 1, root(1), 40)
        second = await sub.anchor("gw-oak", 2, root(2), 41)
    assert first.status == second.status == "SUCCESS"
    assert second.ledger > first.ledger > 0
    assert first.chain == expected_chain(bytes(32), root(1), 1, 40)
    assert second.chain == expected_chain(first.chain, root(2), 2, 41)
    assert deployed.anchored("gw-oak") == [1, 2]
    applied = deployed.rpc.rpc.applied[first.tx_hash]
    assert applied.status == "SUCCESS" and applied.ledger == first.ledger


async def test_same_batch_twice_anchors_once(deployed: Deployed) -> None:
    async with deployed.submitter() as sub:
        a = await sub.anchor("gw-oak", 1, root(1), 1)
        b = await sub.anchor("gw-oak", 1, root(1), 1)
    assert a == b
    assert deployed.anchored("gw-oak") == [1]


async def test_contract_refusals_are_reported(deployed: Deployed) -> None:
    async with deployed.submitter() as sub:
        with pytest.raises(AnchorRefusedError) as err:
            await sub.anchor("gw-oak", 2, root(2), 1)
        assert err.value.case == "OUT_OF_ORDER"
        await sub.anchor("gw-oak", 1, root(1), 1)
        with pytest.raises(AnchorRefusedError) as err:
            await sub.anchor("gw-elm", 1, root(1), 1)
        assert err.value.case == "DUPLICATE_ROOT"
    assert deployed.anchored("gw-elm") == []


async def test_try_again_later_backs_off_and_resends_the_same_envelope(deployed: Deployed) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0.01)

    deployed.rpc.rpc.inject_try_again_later(3)
    async with deployed.submitter(sleep=sleep, backoff_s=0.5, backoff_max_s=1.0) as sub:
        result = await sub.anchor("gw-oak", 1, root(1), 5)
    assert slept[:3] == [0.5, 1.0, 1.0]  # capped exponential back-off
    assert deployed.anchored("gw-oak") == [1]
    stored = SqliteEnvelopeStore(path=deployed.db).get("anchor/gw-oak/1")
    assert stored is not None and stored.tx_hash == result.tx_hash  # never rebuilt


async def test_bad_seq_reloads_the_account_and_re_signs(deployed: Deployed) -> None:
    crashed = deployed.submitter(server=CrashBeforeSend(deployed.rpc.url))
    with pytest.raises(Crash):
        await crashed.anchor("gw-oak", 1, root(1), 5)
    await crashed.close()
    stale = SqliteEnvelopeStore(path=deployed.db).get("anchor/gw-oak/1")
    assert stale is not None and stale.status == "sent"
    # meanwhile the same account uses its next sequence number (another gateway's batch)
    other = Submitter(
        config=deployed.config(),
        store=SqliteEnvelopeStore(path=":memory:"),
        keypair=deployed.kp,
        poll_interval_s=0.02,
    )
    async with other:
        await other.anchor("gw-elm", 1, root(100), 1)
    async with deployed.submitter() as sub:
        result = await sub.anchor("gw-oak", 1, root(1), 5)
    assert result.tx_hash != stale.tx_hash  # rebuilt with a fresh sequence number
    assert stale.tx_hash not in deployed.rpc.rpc.applied
    assert deployed.anchored("gw-oak") == [1]


async def test_restart_between_send_and_confirmation_anchors_exactly_once(
    deployed: Deployed,
) -> None:
    first = deployed.submitter(server=CrashAfterSend(deployed.rpc.url))
    with pytest.raises(Crash):
        await first.anchor("gw-oak", 1, root(1), 9)
    await first.close()
    stored = SqliteEnvelopeStore(path=deployed.db).get("anchor/gw-oak/1")
    assert stored is not None and stored.status == "sent"
    await asyncio.sleep(0.2)  # the sent envelope gets applied while the coordinator is down

    async with deployed.submitter() as restarted:
        (resumed,) = await restarted.resume()
        again = await restarted.anchor("gw-oak", 1, root(1), 9)
    assert resumed.tx_hash == stored.tx_hash == again.tx_hash
    assert resumed.chain == expected_chain(bytes(32), root(1), 1, 9)
    assert deployed.anchored("gw-oak") == [1]


async def test_restart_before_the_envelope_is_applied_resends_it(deployed: Deployed) -> None:
    # a node that closes no ledger while the coordinator restarts: the resend is a DUPLICATE
    deployed.rpc.ledger_close_ms = 400
    first = deployed.submitter(server=CrashAfterSend(deployed.rpc.url))
    with pytest.raises(Crash):
        await first.anchor("gw-oak", 1, root(1), 9)
    await first.close()
    async with deployed.submitter() as restarted:
        result = await restarted.anchor("gw-oak", 1, root(1), 9)
    stored = SqliteEnvelopeStore(path=deployed.db).get("anchor/gw-oak/1")
    assert stored is not None and stored.status == "success" and stored.tx_hash == result.tx_hash
    assert deployed.anchored("gw-oak") == [1]


async def test_not_found_after_max_time_is_rebuilt(deployed: Deployed) -> None:
    server = LoseQueueAfterSend(deployed.rpc.url, deployed.rpc)
    config = deployed.config(tx_timeout_s=1)
    sub = Submitter(
        config=config,
        store=SqliteEnvelopeStore(path=deployed.db),
        keypair=deployed.kp,
        server=server,
        poll_interval_s=0.05,
    )
    async with sub:
        result = await sub.anchor("gw-oak", 1, root(1), 3)
    assert len(server.sent) == 2 and server.sent[0] != server.sent[1]
    assert result.tx_hash == server.sent[1]
    assert server.sent[0] not in deployed.rpc.rpc.applied
    assert deployed.anchored("gw-oak") == [1]


def test_secret_key_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coordinator.errors import ConfigError

    kp = Keypair.random()
    base = SorobanConfig(rpc_url="http://x/", network_passphrase=LOCAL_PASSPHRASE, contract_id="C")
    monkeypatch.delenv("NGRID_SOROBAN_SECRET", raising=False)
    with pytest.raises(ConfigError):
        base.keypair()
    monkeypatch.setenv("NGRID_SOROBAN_SECRET", kp.secret)
    assert base.keypair().public_key == kp.public_key
    secret = tmp_path / "coordinator.secret"
    secret.write_text("not a key\n")
    filed = SorobanConfig(
        rpc_url="http://x/",
        network_passphrase=LOCAL_PASSPHRASE,
        contract_id="C",
        secret_file=secret,
    )
    with pytest.raises(ConfigError):
        filed.keypair()
    secret.write_text(kp.secret + "\n")
    assert filed.keypair().public_key == kp.public_key


async def test_one_transaction_in_flight_per_account(deployed: Deployed) -> None:
    deployed.rpc.ledger_close_ms = 100
    async with deployed.submitter() as sub:
        results = await asyncio.gather(
            sub.anchor("gw-oak", 1, root(1), 1),
            sub.anchor("gw-elm", 1, root(2), 1),
            sub.anchor("gw-ash", 1, root(3), 1),
        )
    ledgers = sorted(r.ledger for r in results)
    assert len(set(ledgers)) == 3  # serialised: one per ledger, none refused for its sequence
    for gateway in ("gw-oak", "gw-elm", "gw-ash"):
        assert deployed.anchored(gateway) == [1]


async def test_state_file_survives_a_restart_of_the_stand_in(tmp_path: Path) -> None:
    state = tmp_path / "chain.json"
    kp = Keypair.random()
    store = SqliteEnvelopeStore(path=tmp_path / "anchors.sqlite")
    async with local_soroban(ledger_close_ms=50, state_path=state) as rpc:
        await rpc.fund(kp.public_key)
        config = SorobanConfig(rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id="")
        async with Submitter(config=config, store=store, keypair=kp, poll_interval_s=0.02) as sub:
            cid = await deploy_anchor_contract(submitter=sub)
        config = SorobanConfig(
            rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id=cid
        )
        async with Submitter(config=config, store=store, keypair=kp, poll_interval_s=0.02) as sub:
            first = await sub.anchor("gw", 1, root(1), 2)
    async with local_soroban(ledger_close_ms=50, state_path=state) as rpc:
        assert rpc.rpc.applied[first.tx_hash].ledger == first.ledger
        config = SorobanConfig(rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id="")
        fresh_store = SqliteEnvelopeStore(path=":memory:")
        async with Submitter(config=config, store=fresh_store, keypair=kp) as sub:
            assert await deploy_anchor_contract(submitter=sub) == cid  # found, not redeployed
        assert cid == anchor_contract_id(
            deployer=kp.public_key, salt=bytes(32), network_passphrase=LOCAL_PASSPHRASE
        )
        config = SorobanConfig(
            rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id=cid
        )
        async with Submitter(config=config, store=store, keypair=kp, poll_interval_s=0.02) as sub:
            assert await sub.anchor("gw", 1, root(1), 2) == first  # from the store
            second = await sub.anchor("gw", 2, root(2), 2)
        fresh = Submitter(config=config, store=SqliteEnvelopeStore(path=":memory:"), keypair=kp)
        async with fresh:
            with pytest.raises(AnchorRefusedError) as err:  # the replayed chain knows batch 2
                await fresh.anchor("gw", 2, root(7), 2)
            assert err.value.case == "OUT_OF_ORDER"
    assert second.chain == expected_chain(first.chain, root(2), 2, 2)
