"""The RPC stand-in's core (no sockets): validation codes, queue rules, ledgers, events, replay."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from stellar_sdk import Account, Keypair, Network, SorobanServer, TransactionBuilder, scval
from stellar_sdk import xdr as sx
from stellar_sdk.soroban_rpc import SimulateTransactionResponse

from coordinator.soroban.contract import anchor_wasm
from coordinator.soroban.rpc import LOCAL_PASSPHRASE, LocalRpc

T0 = 1_800_000_000


def call(rpc: LocalRpc, method: str, **params: Any) -> dict[str, Any]:
    reply = rpc.handle({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
    assert reply["id"] == 7
    assert "error" not in reply, reply
    return reply["result"]


class Chain:
    """Drives the core like a client: builds, simulates, prepares and signs with stellar-sdk."""

    def __init__(self) -> None:
        self.rpc = LocalRpc(now=T0)
        self.kp = Keypair.from_raw_ed25519_seed(hashlib.sha256(b"coordinator").digest())
        self.rpc.fund(self.kp.public_key)
        self.now = T0
        # prepare_transaction with a given simulation does no I/O
        self.sdk = SorobanServer("http://127.0.0.1:9/")

    def close(self) -> None:
        self.now += 5
        self.rpc.close_ledger(self.now)

    def builder(self, *, seq_offset: int = 0, timeout: int = 300) -> TransactionBuilder:
        account = Account(
            self.kp.public_key, self.rpc.accounts[self.kp.public_key].seq + seq_offset
        )
        b = TransactionBuilder(account, LOCAL_PASSPHRASE, base_fee=100)
        b.add_time_bounds(0, self.now + timeout)
        return b

    def prepare(self, builder: TransactionBuilder, *, signer: Keypair | None = None):
        tx = builder.build()
        sim = call(self.rpc, "simulateTransaction", transaction=tx.to_xdr())
        assert "error" not in sim, sim
        prepared = self.sdk.prepare_transaction(tx, SimulateTransactionResponse.model_validate(sim))
        prepared.sign(signer or self.kp)
        return prepared

    def run(self, builder: TransactionBuilder) -> dict[str, Any]:
        env = self.prepare(builder)
        sent = call(self.rpc, "sendTransaction", transaction=env.to_xdr())
        assert sent["status"] == "PENDING", sent
        self.close()
        got = call(self.rpc, "getTransaction", hash=env.hash_hex())
        assert got["status"] == "SUCCESS", got
        return got

    def deploy(self) -> str:
        self.run(self.builder().append_upload_contract_wasm_op(anchor_wasm()))
        got = self.run(
            self.builder().append_create_contract_op(
                wasm_id=hashlib.sha256(anchor_wasm()).digest(),
                address=self.kp.public_key,
                salt=bytes(32),
            )
        )
        meta = sx.TransactionMeta.from_xdr(got["resultMetaXdr"])
        cid = scval.from_address(meta.v4.soroban_meta.return_value).address
        self.run(
            self.builder().append_invoke_contract_function_op(
                cid, "init", [scval.to_address(self.kp.public_key)]
            )
        )
        return cid

    def anchor_op(self, cid: str, seq: int, root: bytes, builder=None) -> TransactionBuilder:
        return (builder or self.builder()).append_invoke_contract_function_op(
            cid,
            "anchor",
            [scval.to_string("gw"), scval.to_uint64(seq), scval.to_bytes(root), scval.to_uint32(1)],
        )


@pytest.fixture
def chain() -> Chain:
    return Chain()


def _code(sent: dict[str, Any]) -> str:
    assert sent["status"] == "ERROR", sent
    return sx.TransactionResult.from_xdr(sent["errorResultXdr"]).result.code.name


def test_network_health_and_ledgers(chain: Chain) -> None:
    net = call(chain.rpc, "getNetwork")
    assert net["passphrase"] == LOCAL_PASSPHRASE and net["protocolVersion"] == 25
    first = call(chain.rpc, "getLatestLedger")
    chain.close()
    second = call(chain.rpc, "getLatestLedger")
    assert second["sequence"] == first["sequence"] + 1
    header = sx.LedgerHeader.from_xdr(second["headerXdr"])
    assert header.ledger_seq.uint32 == second["sequence"]
    assert call(chain.rpc, "getHealth")["status"] == "healthy"


def test_unknown_method_and_bad_xdr_are_jsonrpc_errors(chain: Chain) -> None:
    reply = chain.rpc.handle({"jsonrpc": "2.0", "id": 1, "method": "nope"})
    assert reply["error"]["code"] == -32601
    reply = chain.rpc.handle(
        {"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": {"transaction": "xx"}}
    )
    assert reply["error"]["code"] == -32602


def test_signature_for_another_network_is_bad_auth(chain: Chain) -> None:
    cid = chain.deploy()
    env = chain.prepare(chain.anchor_op(cid, 1, b"\x01" * 32))
    env.signatures = []
    foreign = Network("Test SDF Network ; September 2015")
    from stellar_sdk import TransactionEnvelope

    other = TransactionEnvelope(env.transaction, foreign.network_passphrase)
    other.sign(chain.kp)
    env.signatures = other.signatures
    assert _code(call(chain.rpc, "sendTransaction", transaction=env.to_xdr())) == "txBAD_AUTH"
    unsigned = chain.prepare(chain.anchor_op(cid, 1, b"\x01" * 32), signer=Keypair.random())
    assert _code(call(chain.rpc, "sendTransaction", transaction=unsigned.to_xdr())) == "txBAD_AUTH"


def test_sequence_and_time_bounds_are_checked(chain: Chain) -> None:
    cid = chain.deploy()
    ahead = chain.prepare(chain.anchor_op(cid, 1, b"\x01" * 32, chain.builder(seq_offset=1)))
    assert _code(call(chain.rpc, "sendTransaction", transaction=ahead.to_xdr())) == "txBAD_SEQ"
    stale = chain.prepare(chain.anchor_op(cid, 1, b"\x01" * 32, chain.builder(timeout=3)))
    chain.close()
    assert _code(call(chain.rpc, "sendTransaction", transaction=stale.to_xdr())) == "txTOO_LATE"


def test_queue_rules_duplicate_one_per_account_and_injection(chain: Chain) -> None:
    cid = chain.deploy()
    env = chain.prepare(chain.anchor_op(cid, 1, b"\x01" * 32))
    chain.rpc.inject_try_again_later(1)
    assert (
        call(chain.rpc, "sendTransaction", transaction=env.to_xdr())["status"] == "TRY_AGAIN_LATER"
    )
    assert call(chain.rpc, "sendTransaction", transaction=env.to_xdr())["status"] == "PENDING"
    assert call(chain.rpc, "sendTransaction", transaction=env.to_xdr())["status"] == "DUPLICATE"
    other = chain.prepare(chain.anchor_op(cid, 1, b"\x02" * 32))
    assert (
        call(chain.rpc, "sendTransaction", transaction=other.to_xdr())["status"]
        == "TRY_AGAIN_LATER"
    )
    assert call(chain.rpc, "getTransaction", hash=env.hash_hex())["status"] == "NOT_FOUND"
    chain.close()
    assert call(chain.rpc, "getTransaction", hash=env.hash_hex())["status"] == "SUCCESS"
    # applied: its sequence number is used up
    assert _code(call(chain.rpc, "sendTransaction", transaction=env.to_xdr())) == "txBAD_SEQ"


def test_expired_transaction_is_dropped_from_the_queue(chain: Chain) -> None:
    cid = chain.deploy()
    env = chain.prepare(chain.anchor_op(cid, 1, b"\x01" * 32, chain.builder(timeout=2)))
    assert call(chain.rpc, "sendTransaction", transaction=env.to_xdr())["status"] == "PENDING"
    chain.close()  # closes 5 s later, after the max time
    got = call(chain.rpc, "getTransaction", hash=env.hash_hex())
    assert got["status"] == "NOT_FOUND"
    assert int(got["latestLedgerCloseTime"]) > env.transaction.preconditions.time_bounds.max_time


def test_contract_failure_is_a_failed_transaction(chain: Chain) -> None:
    cid = chain.deploy()
    chain.run(chain.anchor_op(cid, 1, b"\x01" * 32))
    sim = call(
        chain.rpc,
        "simulateTransaction",
        transaction=chain.anchor_op(cid, 1, b"\x02" * 32).build().to_xdr(),
    )
    assert "Error(Contract, #3)" in sim["error"]
    # two transactions both simulated fine for batch 2; the second fails when applied
    a = chain.prepare(chain.anchor_op(cid, 2, b"\x02" * 32))
    b = chain.prepare(chain.anchor_op(cid, 2, b"\x03" * 32, chain.builder(seq_offset=1)))
    assert call(chain.rpc, "sendTransaction", transaction=a.to_xdr())["status"] == "PENDING"
    chain.close()
    assert call(chain.rpc, "sendTransaction", transaction=b.to_xdr())["status"] == "PENDING"
    chain.close()
    assert call(chain.rpc, "getTransaction", hash=a.hash_hex())["status"] == "SUCCESS"
    got = call(chain.rpc, "getTransaction", hash=b.hash_hex())
    assert got["status"] == "FAILED"
    result = sx.TransactionResult.from_xdr(got["resultXdr"])
    assert result.result.code == sx.TransactionResultCode.txFAILED
    assert chain.rpc.accounts[chain.kp.public_key].seq == b.transaction.sequence


def test_events_and_ledger_entries(chain: Chain) -> None:
    cid = chain.deploy()
    got = chain.run(chain.anchor_op(cid, 1, b"\x01" * 32))
    events = call(
        chain.rpc,
        "getEvents",
        startLedger=1,
        filters=[
            {
                "type": "contract",
                "contractIds": [cid],
                "topics": [[scval.to_symbol("anchored").to_xdr(), "*", "*"]],
            }
        ],
    )
    (ev,) = events["events"]
    assert ev["txHash"] == got["txHash"] and ev["ledger"] == got["ledger"]
    none = call(
        chain.rpc,
        "getEvents",
        startLedger=1,
        filters=[{"topics": [[scval.to_symbol("other").to_xdr(), "**"]]}],
    )
    assert none["events"] == []
    key = sx.LedgerKey(
        sx.LedgerEntryType.CONTRACT_DATA,
        contract_data=sx.LedgerKeyContractData(
            contract=scval.to_address(cid).address,
            key=scval.to_vec([scval.to_symbol("seq"), scval.to_string("gw")]),
            durability=sx.ContractDataDurability.PERSISTENT,
        ),
    )
    entries = call(chain.rpc, "getLedgerEntries", keys=[key.to_xdr()])["entries"]
    (entry,) = entries
    data = sx.LedgerEntryData.from_xdr(entry["xdr"])
    assert scval.from_uint64(data.contract_data.val) == 1
    assert entry["lastModifiedLedgerSeq"] == got["ledger"]


def test_snapshot_replays_to_the_same_state(chain: Chain) -> None:
    cid = chain.deploy()
    chain.run(chain.anchor_op(cid, 1, b"\x01" * 32))
    copy = LocalRpc.restore(chain.rpc.snapshot())
    assert copy.ledger == chain.rpc.ledger and copy.close_time == chain.rpc.close_time
    assert copy.accounts[chain.kp.public_key].seq == chain.rpc.accounts[chain.kp.public_key].seq
    assert set(copy.applied) == set(chain.rpc.applied)
    assert [e.event_id for e in copy.events] == [e.event_id for e in chain.rpc.events]
