"""The local Stellar RPC stand-in over HTTP, driven by the unmodified stellar-sdk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys

import aiohttp
import pytest
from stellar_sdk import Keypair, SorobanServer, SorobanServerAsync, TransactionBuilder, scval
from stellar_sdk import xdr as sx
from stellar_sdk.exceptions import PrepareTransactionException
from stellar_sdk.soroban_rpc import EventFilter, EventFilterType, GetTransactionStatus

from coordinator.soroban import LOCAL_PASSPHRASE, local_soroban
from coordinator.soroban.contract import anchor_wasm


async def _run(server: SorobanServerAsync, kp: Keypair, build) -> object:
    """The SDK's own flow: load account, build, prepare, sign, send, poll."""
    account = await server.load_account(kp.public_key)
    tx = build(TransactionBuilder(account, LOCAL_PASSPHRASE, base_fee=100)).set_timeout(30).build()
    prepared = await server.prepare_transaction(tx)
    prepared.sign(kp)
    sent = await server.send_transaction(prepared)
    assert sent.status.value == "PENDING", sent
    got = await server.poll_transaction(sent.hash, max_attempts=50, sleep_strategy=lambda _: 0.05)
    assert got.status == GetTransactionStatus.SUCCESS, got
    return got


async def test_sdk_deploys_anchors_and_reads_back() -> None:
    async with local_soroban(ledger_close_ms=50) as rpc:
        kp = Keypair.random()
        async with SorobanServerAsync(rpc.url) as server:
            network = await server.get_network()
            assert network.passphrase == LOCAL_PASSPHRASE
            assert network.friendbot_url and network.friendbot_url.startswith(rpc.url)
            # fund through the friendbot endpoint, as on testnet
            async with (
                aiohttp.ClientSession() as http,
                http.get(network.friendbot_url, params={"addr": kp.public_key}) as r,
            ):
                assert r.status == 200
            assert (await server.get_health()).status == "healthy"

            await _run(server, kp, lambda b: b.append_upload_contract_wasm_op(anchor_wasm()))
            wasm_hash = hashlib.sha256(anchor_wasm()).digest()
            assert await server.get_contract_wasm_by_hash(wasm_hash) == anchor_wasm()
            created = await _run(
                server,
                kp,
                lambda b: b.append_create_contract_op(
                    wasm_id=wasm_hash, address=kp.public_key, salt=b"\x07" * 32
                ),
            )
            created_meta = sx.TransactionMeta.from_xdr(created.result_meta_xdr)
            cid = scval.from_address(created_meta.v4.soroban_meta.return_value).address
            await _run(
                server,
                kp,
                lambda b: b.append_invoke_contract_function_op(
                    cid, "init", [scval.to_address(kp.public_key)]
                ),
            )
            root = hashlib.sha256(b"batch 1").digest()
            anchored = await _run(
                server,
                kp,
                lambda b: b.append_invoke_contract_function_op(
                    cid,
                    "anchor",
                    [
                        scval.to_string("gw-oak"),
                        scval.to_uint64(1),
                        scval.to_bytes(root),
                        scval.to_uint32(12),
                    ],
                ),
            )
            meta = sx.TransactionMeta.from_xdr(anchored.result_meta_xdr)
            chain = scval.from_bytes(meta.v4.soroban_meta.return_value)
            assert len(chain) == 32

            events = await server.get_events(
                start_ledger=1,
                filters=[
                    EventFilter(
                        event_type=EventFilterType.CONTRACT,
                        contract_ids=[cid],
                        topics=[[scval.to_symbol("anchored").to_xdr(), "*", "*"]],
                    )
                ],
            )
            (event,) = events.events
            assert event.transaction_hash == anchored.transaction_hash
            assert scval.from_string(event.topic[1]) == b"gw-oak"
            assert scval.from_uint64(event.topic[2]) == 1
            assert scval.from_bytes(event.value) == chain

            from stellar_sdk.soroban_server_async import Durability

            entry = await server.get_contract_data(
                cid,
                scval.to_vec([scval.to_symbol("chain"), scval.to_string("gw-oak")]),
                Durability.PERSISTENT,
            )
            assert entry is not None
            assert (
                scval.from_bytes(sx.LedgerEntryData.from_xdr(entry.xdr).contract_data.val) == chain
            )
            assert entry.last_modified_ledger == anchored.ledger

            # the contract refuses a replay of the same batch at simulation
            account = await server.load_account(kp.public_key)
            again = (
                TransactionBuilder(account, LOCAL_PASSPHRASE, base_fee=100)
                .append_invoke_contract_function_op(
                    cid,
                    "anchor",
                    [
                        scval.to_string("gw-oak"),
                        scval.to_uint64(2),
                        scval.to_bytes(root),
                        scval.to_uint32(12),
                    ],
                )
                .set_timeout(30)
                .build()
            )
            with pytest.raises(PrepareTransactionException) as err:
                await server.prepare_transaction(again)
            assert "Error(Contract, #4)" in err.value.simulate_transaction_response.error

        # the blocking client works too
        sync = SorobanServer(rpc.url)
        latest = await asyncio.to_thread(sync.get_latest_ledger)
        assert latest.sequence >= anchored.ledger
        assert (await asyncio.to_thread(sync.load_account, kp.public_key)).sequence > 0


async def test_another_account_cannot_anchor() -> None:
    async with local_soroban(ledger_close_ms=50) as rpc:
        admin, intruder = Keypair.random(), Keypair.random()
        for kp in (admin, intruder):
            await rpc.fund(kp.public_key)
        async with SorobanServerAsync(rpc.url) as server:
            await _run(server, admin, lambda b: b.append_upload_contract_wasm_op(anchor_wasm()))
            created = await _run(
                server,
                admin,
                lambda b: b.append_create_contract_op(
                    wasm_id=hashlib.sha256(anchor_wasm()).digest(),
                    address=admin.public_key,
                    salt=bytes(32),
                ),
            )
            meta = sx.TransactionMeta.from_xdr(created.result_meta_xdr)
            cid = scval.from_address(meta.v4.soroban_meta.return_value).address
            await _run(
                server,
                admin,
                lambda b: b.append_invoke_contract_function_op(
                    cid, "init", [scval.to_address(admin.public_key)]
                ),
            )
            args = [
                scval.to_string("gw"),
                scval.to_uint64(1),
                scval.to_bytes(b"\x05" * 32),
                scval.to_uint32(1),
            ]
            account = await server.load_account(intruder.public_key)
            tx = (
                TransactionBuilder(account, LOCAL_PASSPHRASE, base_fee=100)
                .append_invoke_contract_function_op(cid, "anchor", args)
                .set_timeout(30)
                .build()
            )
            # simulation asks for the admin's address authorisation; unsigned, it fails on chain
            prepared = await server.prepare_transaction(tx)
            (auth,) = prepared.transaction.operations[0].auth
            assert (
                auth.credentials.type
                != sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT
            )
            prepared.sign(intruder)
            sent = await server.send_transaction(prepared)
            got = await server.poll_transaction(
                sent.hash, max_attempts=50, sleep_strategy=lambda _: 0.05
            )
            assert got.status == GetTransactionStatus.FAILED
            # the same call, signed for by the admin's key through the SDK's authorize_entry, passes
            from stellar_sdk.auth import authorize_entry

            account = await server.load_account(intruder.public_key)
            tx = (
                TransactionBuilder(account, LOCAL_PASSPHRASE, base_fee=100)
                .append_invoke_contract_function_op(cid, "anchor", args)
                .set_timeout(30)
                .build()
            )
            prepared = await server.prepare_transaction(tx)
            latest = await server.get_latest_ledger()
            op = prepared.transaction.operations[0]
            op.auth = [authorize_entry(op.auth[0], admin, latest.sequence + 20, LOCAL_PASSPHRASE)]
            prepared.sign(intruder)
            sent = await server.send_transaction(prepared)
            got = await server.poll_transaction(
                sent.hash, max_attempts=50, sleep_strategy=lambda _: 0.05
            )
            assert got.status == GetTransactionStatus.SUCCESS


def test_soroban_local_command_serves_rpc() -> None:
    env = {**os.environ, "NGRID_SOROBAN_SECRET": Keypair.random().secret}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neighbourgrid.cli",
            "coordinator",
            "soroban-local",
            "--port",
            "0",
            "--ledger-close-ms",
            "50",
            "--deploy",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("soroban-local: Stellar RPC on http://127.0.0.1:"), first
        url = first.split(" on ", 1)[1].split(" ", 1)[0]
        second = proc.stdout.readline()
        assert second.startswith("soroban-local: anchor contract C"), second
        cid = second.split()[3]
        server = SorobanServer(url)
        assert server.get_network().passphrase == LOCAL_PASSPHRASE
        # the instance exists and runs the committed WASM
        assert server.get_contract_wasm(cid) == anchor_wasm()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
