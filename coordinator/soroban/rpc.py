"""A local stand-in for Stellar RPC (soroban-rpc) and the one-node network behind it: the core.

What it stands in for
---------------------
A Stellar RPC server in front of a standalone stellar-core with the anchor contract deployed. It
answers the JSON-RPC methods ``getHealth``, ``getNetwork``, ``getLatestLedger``,
``getLedgerEntries``, ``simulateTransaction``, ``sendTransaction``, ``getTransaction`` and
``getEvents`` with the shapes of Stellar RPC (protocol 25) and real XDR built with stellar-sdk's
own XDR classes, so that the unmodified stellar-sdk (``SorobanServer``, ``SorobanServerAsync``,
``TransactionBuilder``, ``prepare_transaction``, ``send_transaction``, ``get_transaction``) works
against it. Accounts are created through :meth:`LocalRpc.fund` (what testnet's friendbot does).

What it checks, as stellar-core does
-------------------------------------
- ed25519 signatures by the source account over the transaction hash of *this* network's
  passphrase (``txBAD_AUTH``); source account exists (``txNO_ACCOUNT``); sequence number is the
  account's + 1 (``txBAD_SEQ``); time bounds (``txTOO_EARLY`` / ``txTOO_LATE``); a Soroban
  operation carries Soroban data (``txSOROBAN_INVALID``); fee at least 100 stroops per operation.
- One transaction per source account in the queue (a second gets ``TRY_AGAIN_LATER``), the same
  envelope again gets ``DUPLICATE``; a queued transaction whose max time passes before a ledger
  closes is dropped, so ``getTransaction`` keeps answering ``NOT_FOUND`` for it.
- Ledgers close when :meth:`LocalRpc.close_ledger` is called (the aiohttp shell calls it on a
  timer); queued transactions are applied in arrival order, consuming the sequence number.
- Contract calls execute the anchor contract's compiled WASM with wasmtime and a Soroban host
  written in Python (:mod:`coordinator.soroban.wasm_host` says what that host models); the
  admin's ``require_auth`` is satisfied by a source-account auth entry when the admin is the
  transaction's source, or by an address auth entry whose ed25519 signature verifies (legacy
  ``ADDRESS`` and CAP-71 ``ADDRESS_V2`` payloads, via stellar-sdk's preimage code).
- Only the anchor contract's WASM (the committed artifact, by hash) can be uploaded and
  instantiated; any other code is refused.
- For tests: :meth:`LocalRpc.inject_try_again_later` makes the next N ``sendTransaction`` calls
  answer ``TRY_AGAIN_LATER``; :meth:`LocalRpc.drop_queue` loses the queued transactions.

What it does not model
----------------------
Fees and balances (nothing is charged; ``minResourceFee`` is a fixed figure), resource metering
and limits, footprint enforcement (simulation reports the keys a call wrote), storage TTLs,
archival and restoration, consensus, multiple validators, transaction sets and surge pricing,
strictly increasing close times (ledgers closing faster than once a second may share one),
fee-bump envelopes, multi-signature accounts and thresholds, custom account contracts, any
operation other than ``InvokeHostFunction``, and the ledger close meta (``metadataXdr`` is empty).

Time enters only through ``now`` arguments (unix seconds); this module does no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stellar_sdk import Address, Keypair, Network, TransactionEnvelope, scval
from stellar_sdk import xdr as sx
from stellar_sdk.auth import authorization_payload_hash, build_authorization_preimage
from stellar_sdk.exceptions import BadSignatureError
from stellar_sdk.operation import InvokeHostFunction

from coordinator.soroban.contract import anchor_wasm
from coordinator.soroban.wasm_host import HostError, Invocation, WasmContract

__all__ = [
    "LOCAL_PASSPHRASE",
    "PROTOCOL_VERSION",
    "LocalRpc",
    "RpcError",
]

LOCAL_PASSPHRASE = "Standalone Network ; February 2017"
PROTOCOL_VERSION = 25
MIN_RESOURCE_FEE = 100_000  # stroops; fixed, since resources are not metered
BASE_FEE = 100
RETENTION_WINDOW = 17_280  # ledgers, as Stellar RPC's default (one day at 5 s)
STARTING_BALANCE = 10_000 * 10_000_000  # stroops, as friendbot gives
_HOST_FN = sx.HostFunctionType


class RpcError(Exception):
    """A JSON-RPC error object: ``code`` (-32602 invalid params …) and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class _Account:
    seq: int
    balance: int
    last_modified: int


@dataclass
class _Contract:
    wasm_hash: bytes
    host: WasmContract
    last_modified: int
    entries_modified: dict[str, int] = field(default_factory=dict)


@dataclass
class _Applied:
    status: str  # SUCCESS | FAILED
    ledger: int
    created_at: int
    application_order: int
    envelope_xdr: str
    result_xdr: str
    meta_xdr: str
    contract_events_xdr: list[str]


@dataclass
class _Queued:
    envelope: TransactionEnvelope
    tx_hash: str
    source: str


@dataclass
class _Event:
    ledger: int
    closed_at: int
    contract_id: str
    event_id: str
    topics: list[str]
    value: str
    tx_hash: str
    tx_index: int


def _iso(ts: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat().replace("+00:00", "Z")


class LocalRpc:
    """The stand-in's state and JSON-RPC handler (see the module docstring for its scope).

    ``now`` is the unix time of the genesis ledger; ``passphrase`` the network passphrase;
    ``friendbot_url`` what ``getNetwork`` advertises (set by the HTTP shell).
    """

    def __init__(
        self,
        *,
        now: int,
        passphrase: str = LOCAL_PASSPHRASE,
        friendbot_url: str | None = None,
    ) -> None:
        self.passphrase = passphrase
        self.network_id = Network(passphrase).network_id()
        self.friendbot_url = friendbot_url
        self.ledger = 1
        self.close_time = now
        self.genesis_time = now
        self.ledger_hash = hashlib.sha256(self.network_id + b"genesis").digest()
        self.accounts: dict[str, _Account] = {}
        self.wasm: dict[bytes, int] = {}  # hash -> ledger uploaded
        self.contracts: dict[str, _Contract] = {}
        self.queue: list[_Queued] = []
        self.applied: dict[str, _Applied] = {}
        self.events: list[_Event] = []
        self.history: list[dict[str, Any]] = []  # closed ledgers, for persistence by replay
        self._try_again_later = 0
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "getHealth": self._get_health,
            "getNetwork": self._get_network,
            "getLatestLedger": self._get_latest_ledger,
            "getLedgerEntries": self._get_ledger_entries,
            "simulateTransaction": self._simulate_transaction,
            "sendTransaction": self._send_transaction,
            "getTransaction": self._get_transaction,
            "getEvents": self._get_events,
        }

    # -- JSON-RPC ---------------------------------------------------------------------------

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one JSON-RPC 2.0 request object (already decoded from JSON)."""
        req_id = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
                raise RpcError(-32600, "invalid request")
            method = request.get("method")
            if method not in self._methods:
                raise RpcError(-32601, f"method not found: {method}")
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise RpcError(-32602, "params must be an object")
            result = self._methods[method](params)
        except RpcError as err:
            return {
                "jsonrpc": "2.0",
                "id": req_id,
                "error": {"code": err.code, "message": err.message},
            }
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    # -- test and operator controls ----------------------------------------------------------

    def fund(self, account_id: str) -> None:
        """Create ``account_id`` with friendbot's balance (its sequence starts at ledger << 32)."""
        try:
            Keypair.from_public_key(account_id)
        except Exception as err:
            raise RpcError(-32602, f"invalid account id {account_id!r}") from err
        if account_id not in self.accounts:
            self.accounts[account_id] = _Account(
                seq=self.ledger << 32, balance=STARTING_BALANCE, last_modified=self.ledger
            )
            self.history.append({"fund": account_id, "ledger": self.ledger})

    def snapshot(self) -> dict[str, Any]:
        """What :meth:`restore` needs to rebuild this state: passphrase, genesis, history."""
        return {
            "passphrase": self.passphrase,
            "genesis_time": self.genesis_time,
            "history": list(self.history),
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any], *, friendbot_url: str | None = None) -> LocalRpc:
        """Rebuild a stand-in by replaying a :meth:`snapshot`'s funded accounts and ledgers."""
        rpc = cls(
            now=int(snapshot["genesis_time"]),
            passphrase=str(snapshot["passphrase"]),
            friendbot_url=friendbot_url,
        )
        for item in snapshot["history"]:
            if "fund" in item:
                rpc.fund(str(item["fund"]))
                continue
            for xdr in item["txs"]:
                envelope = TransactionEnvelope.from_xdr(xdr, rpc.passphrase)
                rpc.queue.append(
                    _Queued(
                        envelope=envelope,
                        tx_hash=envelope.hash_hex(),
                        source=envelope.transaction.source.account_id,
                    )
                )
            rpc.close_ledger(int(item["close_time"]))
        return rpc

    def inject_try_again_later(self, count: int = 1) -> None:
        """Answer the next ``count`` sendTransaction calls with TRY_AGAIN_LATER (tests)."""
        self._try_again_later += count

    def drop_queue(self) -> list[str]:
        """Lose every queued transaction, as a restarted node would; return their hashes."""
        dropped = [item.tx_hash for item in self.queue]
        self.queue.clear()
        return dropped

    def close_ledger(self, now: int) -> int:
        """Close the next ledger at unix time ``now`` applying the queue; return its sequence."""
        self.ledger += 1
        # stellar-core makes each close time exceed the last; with ledgers faster than one a
        # second that would run ahead of the clock, so here consecutive ledgers may share one.
        self.close_time = max(now, self.close_time)
        queued, self.queue = self.queue, []
        applied_xdrs: list[str] = []
        order = 0
        for item in queued:
            bounds = item.envelope.transaction.preconditions
            tb = bounds.time_bounds if bounds else None
            if tb is not None and tb.max_time and tb.max_time < self.close_time:
                continue  # expired in the queue: never included, stays NOT_FOUND
            account = self.accounts.get(item.source)
            if account is None or item.envelope.transaction.sequence != account.seq + 1:
                continue
            order += 1
            self._apply(item, order)
            applied_xdrs.append(item.envelope.to_xdr())
        header = self._header()
        self.ledger_hash = hashlib.sha256(header.to_xdr_bytes()).digest()
        self.history.append(
            {"ledger": self.ledger, "close_time": self.close_time, "txs": applied_xdrs}
        )
        return self.ledger

    # -- transaction application -----------------------------------------------------------

    def _apply(self, item: _Queued, order: int) -> None:
        envelope = item.envelope
        tx = envelope.transaction
        account = self.accounts[item.source]
        account.seq = tx.sequence
        account.last_modified = self.ledger
        op = tx.operations[0]
        assert isinstance(op, InvokeHostFunction)
        try:
            return_value, events = self._run_host_function(
                envelope, op, commit=True, recording=False
            )
        except HostError:
            op_result = sx.OperationResult(
                sx.OperationResultCode.opINNER,
                sx.OperationResultTr(
                    sx.OperationType.INVOKE_HOST_FUNCTION,
                    invoke_host_function_result=sx.InvokeHostFunctionResult(
                        sx.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_TRAPPED
                    ),
                ),
            )
            status, code, return_value, events = (
                "FAILED",
                sx.TransactionResultCode.txFAILED,
                None,
                [],
            )
        else:
            success_preimage = sx.InvokeHostFunctionSuccessPreImage(
                return_value, [self._contract_event(ev_contract, ev) for ev_contract, ev in events]
            )
            op_result = sx.OperationResult(
                sx.OperationResultCode.opINNER,
                sx.OperationResultTr(
                    sx.OperationType.INVOKE_HOST_FUNCTION,
                    invoke_host_function_result=sx.InvokeHostFunctionResult(
                        sx.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_SUCCESS,
                        success=sx.Hash(hashlib.sha256(success_preimage.to_xdr_bytes()).digest()),
                    ),
                ),
            )
            status, code = "SUCCESS", sx.TransactionResultCode.txSUCCESS
        result = sx.TransactionResult(
            fee_charged=sx.Int64(BASE_FEE),
            result=sx.TransactionResultResult(code, results=[op_result]),
            ext=sx.TransactionResultExt(0),
        )
        contract_events = [self._contract_event(cid, ev) for cid, ev in events]
        meta = sx.TransactionMeta(
            4,
            v4=sx.TransactionMetaV4(
                ext=sx.ExtensionPoint(0),
                tx_changes_before=sx.LedgerEntryChanges([]),
                operations=[
                    sx.OperationMetaV2(
                        ext=sx.ExtensionPoint(0),
                        changes=sx.LedgerEntryChanges([]),
                        events=contract_events,
                    )
                ],
                tx_changes_after=sx.LedgerEntryChanges([]),
                soroban_meta=sx.SorobanTransactionMetaV2(
                    ext=sx.SorobanTransactionMetaExt(0), return_value=return_value
                )
                if return_value is not None
                else None,
                events=[],
                diagnostic_events=[],
            ),
        )
        self.applied[item.tx_hash] = _Applied(
            status=status,
            ledger=self.ledger,
            created_at=self.close_time,
            application_order=order,
            envelope_xdr=envelope.to_xdr(),
            result_xdr=result.to_xdr(),
            meta_xdr=meta.to_xdr(),
            contract_events_xdr=[ev.to_xdr() for ev in contract_events],
        )
        for index, (cid, ev) in enumerate(events):
            toid = (self.ledger << 32) | (order << 12) | 1
            self.events.append(
                _Event(
                    ledger=self.ledger,
                    closed_at=self.close_time,
                    contract_id=cid,
                    event_id=f"{toid:019d}-{index:010d}",
                    topics=[t.to_xdr() for t in ev.topics],
                    value=ev.data.to_xdr(),
                    tx_hash=item.tx_hash,
                    tx_index=order,
                )
            )

    def _contract_event(self, contract_id: str, ev: Any) -> sx.ContractEvent:
        return sx.ContractEvent(
            ext=sx.ExtensionPoint(0),
            contract_id=sx.ContractID(sx.Hash(Address(contract_id).key)),
            type=sx.ContractEventType.CONTRACT,
            body=sx.ContractEventBody(0, v0=sx.ContractEventV0(list(ev.topics), ev.data)),
        )

    def _run_host_function(
        self,
        envelope: TransactionEnvelope,
        op: InvokeHostFunction,
        *,
        commit: bool,
        recording: bool,
    ) -> tuple[sx.SCVal, list[tuple[str, Any]]]:
        """Run ``op``; return its value and [(contract id, event)]. Raise HostError on a trap."""
        fn = op.host_function
        source = envelope.transaction.source.account_id
        if fn.type == _HOST_FN.HOST_FUNCTION_TYPE_UPLOAD_CONTRACT_WASM:
            assert fn.wasm is not None
            code = bytes(fn.wasm)
            if code != anchor_wasm():
                raise HostError(
                    "HostError: Error(WasmVm, InvalidInput)\n\nthis stand-in runs only the anchor "
                    "contract's WASM (coordinator/soroban/contract/anchor.wasm)"
                )
            digest = hashlib.sha256(code).digest()
            if commit:
                self.wasm.setdefault(digest, self.ledger)
            return scval.to_bytes(digest), []
        if fn.type in (
            _HOST_FN.HOST_FUNCTION_TYPE_CREATE_CONTRACT,
            _HOST_FN.HOST_FUNCTION_TYPE_CREATE_CONTRACT_V2,
        ):
            args = fn.create_contract or fn.create_contract_v2
            assert args is not None
            preimage = args.contract_id_preimage
            if preimage.type != sx.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ADDRESS:
                raise HostError(
                    "HostError: Error(Context, InvalidAction)\n\nasset contracts not modelled"
                )
            deployer = Address.from_xdr_sc_address(preimage.from_address.address).address
            if deployer != source:
                raise HostError(
                    "HostError: Error(Auth, InvalidAction)\n\nthe deployer must be the source"
                )
            wasm_hash = bytes(args.executable.wasm_hash.hash)
            if wasm_hash not in self.wasm:
                raise HostError("HostError: Error(Storage, MissingValue)\n\nWASM not uploaded")
            cid_preimage = sx.HashIDPreimage(
                sx.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
                contract_id=sx.HashIDPreimageContractID(sx.Hash(self.network_id), preimage),
            )
            contract_id = Address.from_raw_contract(
                hashlib.sha256(cid_preimage.to_xdr_bytes()).digest()
            ).address
            if contract_id in self.contracts:
                raise HostError("HostError: Error(Storage, ExistingValue)\n\ncontract exists")
            if commit:
                self.contracts[contract_id] = _Contract(
                    wasm_hash=wasm_hash,
                    host=WasmContract(contract_id=contract_id),
                    last_modified=self.ledger,
                )
            return scval.to_address(contract_id), []
        if fn.type != _HOST_FN.HOST_FUNCTION_TYPE_INVOKE_CONTRACT:
            raise HostError("HostError: Error(Context, InvalidAction)\n\nunknown host function")
        call = fn.invoke_contract
        assert call is not None
        contract_id = Address.from_xdr_sc_address(call.contract_address).address
        contract = self.contracts.get(contract_id)
        if contract is None:
            raise HostError("HostError: Error(Storage, MissingValue)\n\ncontract not found")
        function = call.function_name.sc_symbol.decode("utf-8")
        auth_check = None if recording else self._auth_checker(envelope, op, call)
        invocation: Invocation = contract.host.invoke(
            function,
            list(call.args),
            auth_check=auth_check,
            commit=commit,
            ledger_sequence=self.ledger + 1,
            ledger_timestamp=self.close_time,
        )
        if commit:
            for key in invocation.written_keys:
                contract.entries_modified[key.to_xdr()] = self.ledger
            if function == "init":
                contract.last_modified = self.ledger
        self._last_required_auth = invocation.required_auth
        return invocation.return_value, [(contract_id, ev) for ev in invocation.events]

    def _auth_checker(
        self, envelope: TransactionEnvelope, op: InvokeHostFunction, call: sx.InvokeContractArgs
    ) -> Callable[[str], bool]:
        source = envelope.transaction.source.account_id

        def matches(entry: sx.SorobanAuthorizationEntry) -> bool:
            inv = entry.root_invocation.function
            return (
                inv.type
                == sx.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN
                and inv.contract_fn is not None
                and inv.contract_fn.to_xdr() == call.to_xdr()
            )

        def check(address: str) -> bool:
            for entry in op.auth:
                if not matches(entry):
                    continue
                cred = entry.credentials
                kind = cred.type
                if kind == sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT:
                    if address == source:
                        return True
                    continue
                addr_cred = cred.address or cred.address_v2
                if addr_cred is None:
                    continue
                if Address.from_xdr_sc_address(addr_cred.address).address != address:
                    continue
                expiry = addr_cred.signature_expiration_ledger.uint32
                if expiry <= self.ledger:
                    continue
                if self._address_signature_ok(entry, address, expiry):
                    return True
            return False

        return check

    def _address_signature_ok(
        self, entry: sx.SorobanAuthorizationEntry, address: str, expiry: int
    ) -> bool:
        if not address.startswith("G"):
            return False
        cred = entry.credentials.address or entry.credentials.address_v2
        assert cred is not None
        payload = authorization_payload_hash(
            build_authorization_preimage(entry, expiry, self.passphrase)
        )
        try:
            signatures = scval.from_vec(cred.signature)
            for sig in signatures:
                fields = {
                    scval.from_symbol(k): scval.from_bytes(v)
                    for k, v in scval.from_map(sig).items()
                }
                key = Keypair.from_raw_ed25519_public_key(fields["public_key"])
                if key.public_key == address:
                    key.verify(payload, fields["signature"])
                    return True
        except (BadSignatureError, ValueError, KeyError, TypeError):
            return False
        return False

    # -- validation shared by simulate and send -----------------------------------------------

    def _parse_envelope(self, xdr: Any) -> TransactionEnvelope:
        if not isinstance(xdr, str):
            raise RpcError(-32602, "transaction must be a base64 XDR string")
        try:
            envelope = TransactionEnvelope.from_xdr(xdr, self.passphrase)
        except Exception as err:
            raise RpcError(-32602, f"invalid transaction XDR: {err}") from err
        return envelope

    def _soroban_op(self, envelope: TransactionEnvelope) -> InvokeHostFunction:
        ops = envelope.transaction.operations
        if len(ops) != 1 or not isinstance(ops[0], InvokeHostFunction):
            raise RpcError(
                -32602, "only transactions with one InvokeHostFunction operation are modelled"
            )
        return ops[0]

    def _check_valid(self, envelope: TransactionEnvelope) -> str | None:
        """stellar-core's checkValid for this subset: the failing result code, or None."""
        tx = envelope.transaction
        source = tx.source.account_id
        account = self.accounts.get(source)
        if account is None:
            return "txNO_ACCOUNT"
        if tx.sequence != account.seq + 1:
            return "txBAD_SEQ"
        bounds = tx.preconditions.time_bounds if tx.preconditions else None
        if bounds is not None:
            if bounds.min_time and bounds.min_time > self.close_time + 1:
                return "txTOO_EARLY"
            if bounds.max_time and bounds.max_time < self.close_time:
                return "txTOO_LATE"
        if tx.fee < BASE_FEE * len(tx.operations):
            return "txINSUFFICIENT_FEE"
        if tx.soroban_data is None:
            return "txSOROBAN_INVALID"
        keypair = Keypair.from_public_key(source)
        tx_hash = envelope.hash()
        good = False
        for sig in envelope.signatures:
            if sig.signature_hint != keypair.signature_hint():
                continue
            try:
                keypair.verify(tx_hash, sig.signature)
            except BadSignatureError:
                continue
            good = True
        if not good:
            return "txBAD_AUTH"
        return None

    # -- methods -------------------------------------------------------------------------------

    def _ledger_fields(self) -> dict[str, Any]:
        return {
            "latestLedger": self.ledger,
            "latestLedgerCloseTime": str(self.close_time),
            "oldestLedger": max(1, self.ledger - RETENTION_WINDOW + 1),
            "oldestLedgerCloseTime": str(self.genesis_time),
        }

    def _get_health(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": "healthy",
            "latestLedger": self.ledger,
            "oldestLedger": max(1, self.ledger - RETENTION_WINDOW + 1),
            "ledgerRetentionWindow": RETENTION_WINDOW,
        }

    def _get_network(self, params: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {
            "passphrase": self.passphrase,
            "protocolVersion": PROTOCOL_VERSION,
        }
        if self.friendbot_url:
            result["friendbotUrl"] = self.friendbot_url
        return result

    def _header(self) -> sx.LedgerHeader:
        return sx.LedgerHeader(
            ledger_version=sx.Uint32(PROTOCOL_VERSION),
            previous_ledger_hash=sx.Hash(self.ledger_hash),
            scp_value=sx.StellarValue(
                tx_set_hash=sx.Hash(bytes(32)),
                close_time=sx.TimePoint(sx.Uint64(self.close_time)),
                upgrades=[],
                ext=sx.StellarValueExt(sx.StellarValueType.STELLAR_VALUE_BASIC),
            ),
            tx_set_result_hash=sx.Hash(bytes(32)),
            bucket_list_hash=sx.Hash(bytes(32)),
            ledger_seq=sx.Uint32(self.ledger),
            total_coins=sx.Int64(10**18),
            fee_pool=sx.Int64(0),
            inflation_seq=sx.Uint32(0),
            id_pool=sx.Uint64(0),
            base_fee=sx.Uint32(BASE_FEE),
            base_reserve=sx.Uint32(5_000_000),
            max_tx_set_size=sx.Uint32(100),
            skip_list=[sx.Hash(bytes(32))] * 4,
            ext=sx.LedgerHeaderExt(0),
        )

    def _get_latest_ledger(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.ledger_hash.hex(),
            "protocolVersion": PROTOCOL_VERSION,
            "sequence": self.ledger,
            "closeTime": str(self.close_time),
            "headerXdr": self._header().to_xdr(),
            "metadataXdr": "",
        }

    def _get_ledger_entries(self, params: dict[str, Any]) -> dict[str, Any]:
        keys = params.get("keys")
        if not isinstance(keys, list) or not keys or len(keys) > 200:
            raise RpcError(-32602, "keys must be a list of 1 to 200 base64 LedgerKey XDR")
        entries = []
        for key_xdr in keys:
            try:
                key = sx.LedgerKey.from_xdr(key_xdr)
            except Exception as err:
                raise RpcError(-32602, f"invalid ledger key: {err}") from err
            found = self._ledger_entry(key)
            if found is not None:
                data, modified = found
                entries.append(
                    {
                        "key": key_xdr,
                        "xdr": data.to_xdr(),
                        "lastModifiedLedgerSeq": modified,
                        "liveUntilLedgerSeq": self.ledger + RETENTION_WINDOW * 30,
                    }
                )
        return {"entries": entries, "latestLedger": self.ledger}

    def _ledger_entry(self, key: sx.LedgerKey) -> tuple[sx.LedgerEntryData, int] | None:
        if key.type == sx.LedgerEntryType.ACCOUNT:
            assert key.account is not None
            account_id = Keypair.from_raw_ed25519_public_key(
                bytes(key.account.account_id.account_id.ed25519.uint256)
            ).public_key
            account = self.accounts.get(account_id)
            if account is None:
                return None
            entry = sx.AccountEntry(
                account_id=key.account.account_id,
                balance=sx.Int64(account.balance),
                seq_num=sx.SequenceNumber(sx.Int64(account.seq)),
                num_sub_entries=sx.Uint32(0),
                inflation_dest=None,
                flags=sx.Uint32(0),
                home_domain=sx.String32(b""),
                thresholds=sx.Thresholds(bytes([1, 0, 0, 0])),
                signers=[],
                ext=sx.AccountEntryExt(0),
            )
            return sx.LedgerEntryData(
                sx.LedgerEntryType.ACCOUNT, account=entry
            ), account.last_modified
        if key.type == sx.LedgerEntryType.CONTRACT_CODE:
            assert key.contract_code is not None
            digest = bytes(key.contract_code.hash.hash)
            if digest not in self.wasm:
                return None
            code = sx.ContractCodeEntry(
                ext=sx.ContractCodeEntryExt(0), hash=key.contract_code.hash, code=anchor_wasm()
            )
            return (
                sx.LedgerEntryData(sx.LedgerEntryType.CONTRACT_CODE, contract_code=code),
                self.wasm[digest],
            )
        if key.type == sx.LedgerEntryType.CONTRACT_DATA:
            assert key.contract_data is not None
            kd = key.contract_data
            contract_id = Address.from_xdr_sc_address(kd.contract).address
            contract = self.contracts.get(contract_id)
            if contract is None:
                return None
            if kd.key.type == sx.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE:
                storage = [sx.SCMapEntry(k, v) for k, v in contract.host.instance_storage()]
                val = sx.SCVal(
                    sx.SCValType.SCV_CONTRACT_INSTANCE,
                    instance=sx.SCContractInstance(
                        executable=sx.ContractExecutable(
                            sx.ContractExecutableType.CONTRACT_EXECUTABLE_WASM,
                            wasm_hash=sx.Hash(contract.wasm_hash),
                        ),
                        storage=sx.SCMap(storage) if storage else None,
                    ),
                )
                modified = contract.last_modified
            elif kd.durability == sx.ContractDataDurability.PERSISTENT:
                found = contract.host.persistent_entry(kd.key)
                if found is None:
                    return None
                val = found
                modified = contract.entries_modified.get(kd.key.to_xdr(), contract.last_modified)
            else:
                return None
            data = sx.ContractDataEntry(
                ext=sx.ExtensionPoint(0),
                contract=kd.contract,
                key=kd.key,
                durability=kd.durability,
                val=val,
            )
            return sx.LedgerEntryData(
                sx.LedgerEntryType.CONTRACT_DATA, contract_data=data
            ), modified
        return None

    def _simulate_transaction(self, params: dict[str, Any]) -> dict[str, Any]:
        envelope = self._parse_envelope(params.get("transaction"))
        op = self._soroban_op(envelope)
        upgraded = params.get("useUpgradedAuth", True) is not False
        base = {"latestLedger": self.ledger}
        self._last_required_auth: tuple[str, ...] = ()
        try:
            value, events = self._run_host_function(envelope, op, commit=False, recording=True)
        except HostError as err:
            return {**base, "error": err.diagnostic}
        auth = self._recorded_auth(envelope, op, upgraded)
        read_only, read_write = self._footprint(op, value)
        soroban_data = sx.SorobanTransactionData(
            ext=sx.SorobanTransactionDataExt(0),
            resources=sx.SorobanResources(
                footprint=sx.LedgerFootprint(read_only=read_only, read_write=read_write),
                instructions=sx.Uint32(1_000_000),
                disk_read_bytes=sx.Uint32(10_000),
                write_bytes=sx.Uint32(10_000),
            ),
            resource_fee=sx.Int64(MIN_RESOURCE_FEE),
        )
        diagnostic = [
            sx.DiagnosticEvent(True, self._contract_event(cid, ev)).to_xdr() for cid, ev in events
        ]
        return {
            **base,
            "transactionData": soroban_data.to_xdr(),
            "minResourceFee": str(MIN_RESOURCE_FEE),
            "events": diagnostic,
            "results": [{"auth": [entry.to_xdr() for entry in auth], "xdr": value.to_xdr()}],
        }

    def _recorded_auth(
        self, envelope: TransactionEnvelope, op: InvokeHostFunction, upgraded: bool
    ) -> list[sx.SorobanAuthorizationEntry]:
        fn = op.host_function
        source = envelope.transaction.source.account_id
        if fn.type == _HOST_FN.HOST_FUNCTION_TYPE_UPLOAD_CONTRACT_WASM:
            return []
        if fn.type in (
            _HOST_FN.HOST_FUNCTION_TYPE_CREATE_CONTRACT,
            _HOST_FN.HOST_FUNCTION_TYPE_CREATE_CONTRACT_V2,
        ):
            if fn.create_contract is not None:
                function = sx.SorobanAuthorizedFunction(
                    sx.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CREATE_CONTRACT_HOST_FN,
                    create_contract_host_fn=fn.create_contract,
                )
            else:
                function = sx.SorobanAuthorizedFunction(
                    sx.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CREATE_CONTRACT_V2_HOST_FN,
                    create_contract_v2_host_fn=fn.create_contract_v2,
                )
            return [
                sx.SorobanAuthorizationEntry(
                    credentials=sx.SorobanCredentials(
                        sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT
                    ),
                    root_invocation=sx.SorobanAuthorizedInvocation(function, []),
                )
            ]
        assert fn.invoke_contract is not None
        function = sx.SorobanAuthorizedFunction(
            sx.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
            contract_fn=fn.invoke_contract,
        )
        entries = []
        for address in self._last_required_auth:
            invocation = sx.SorobanAuthorizedInvocation(function, [])
            if address == source:
                credentials = sx.SorobanCredentials(
                    sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT
                )
            else:
                nonce = (
                    int.from_bytes(
                        hashlib.sha256(envelope.hash() + address.encode()).digest()[:8], "big"
                    )
                    >> 1
                )
                addr = sx.SorobanAddressCredentials(
                    address=Address(address).to_xdr_sc_address(),
                    nonce=sx.Int64(nonce),
                    signature_expiration_ledger=sx.Uint32(0),
                    signature=scval.to_void(),
                )
                credentials = (
                    sx.SorobanCredentials(
                        sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS_V2, address_v2=addr
                    )
                    if upgraded
                    else sx.SorobanCredentials(
                        sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS, address=addr
                    )
                )
            entries.append(sx.SorobanAuthorizationEntry(credentials, invocation))
        return entries

    def _footprint(
        self, op: InvokeHostFunction, value: sx.SCVal
    ) -> tuple[list[sx.LedgerKey], list[sx.LedgerKey]]:
        fn = op.host_function
        if fn.type == _HOST_FN.HOST_FUNCTION_TYPE_UPLOAD_CONTRACT_WASM:
            code_key = sx.LedgerKey(
                sx.LedgerEntryType.CONTRACT_CODE,
                contract_code=sx.LedgerKeyContractCode(sx.Hash(scval.from_bytes(value))),
            )
            return [], [code_key]
        if fn.type != _HOST_FN.HOST_FUNCTION_TYPE_INVOKE_CONTRACT:
            assert value.address is not None
            return [], [self._instance_key(value.address)]
        call = fn.invoke_contract
        assert call is not None
        contract_id = Address.from_xdr_sc_address(call.contract_address).address
        written = []
        for key in self._last_written(contract_id, op):
            written.append(
                sx.LedgerKey(
                    sx.LedgerEntryType.CONTRACT_DATA,
                    contract_data=sx.LedgerKeyContractData(
                        contract=call.contract_address,
                        key=key,
                        durability=sx.ContractDataDurability.PERSISTENT,
                    ),
                )
            )
        return [self._instance_key(call.contract_address)], written

    def _last_written(self, contract_id: str, op: InvokeHostFunction) -> list[sx.SCVal]:
        call = op.host_function.invoke_contract
        assert call is not None
        contract = self.contracts[contract_id]
        try:
            invocation = contract.host.invoke(
                call.function_name.sc_symbol.decode("utf-8"),
                list(call.args),
                auth_check=None,
                commit=False,
                ledger_sequence=self.ledger + 1,
                ledger_timestamp=self.close_time,
            )
        except HostError:
            return []
        return list(invocation.written_keys)

    @staticmethod
    def _instance_key(contract: sx.SCAddress) -> sx.LedgerKey:
        return sx.LedgerKey(
            sx.LedgerEntryType.CONTRACT_DATA,
            contract_data=sx.LedgerKeyContractData(
                contract=contract,
                key=sx.SCVal(sx.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE),
                durability=sx.ContractDataDurability.PERSISTENT,
            ),
        )

    def _send_transaction(self, params: dict[str, Any]) -> dict[str, Any]:
        envelope = self._parse_envelope(params.get("transaction"))
        tx_hash = envelope.hash_hex()
        base = {
            "hash": tx_hash,
            "latestLedger": self.ledger,
            "latestLedgerCloseTime": str(self.close_time),
        }
        if self._try_again_later > 0:
            self._try_again_later -= 1
            return {**base, "status": "TRY_AGAIN_LATER"}
        if any(item.tx_hash == tx_hash for item in self.queue):
            return {**base, "status": "DUPLICATE"}
        self._soroban_op(envelope)
        source = envelope.transaction.source.account_id
        if any(item.source == source for item in self.queue):
            return {**base, "status": "TRY_AGAIN_LATER"}
        code = self._check_valid(envelope)
        if code is not None:
            result = sx.TransactionResult(
                fee_charged=sx.Int64(0),
                result=sx.TransactionResultResult(sx.TransactionResultCode[code]),
                ext=sx.TransactionResultExt(0),
            )
            return {**base, "status": "ERROR", "errorResultXdr": result.to_xdr()}
        self.queue.append(_Queued(envelope=envelope, tx_hash=tx_hash, source=source))
        return {**base, "status": "PENDING"}

    def _get_transaction(self, params: dict[str, Any]) -> dict[str, Any]:
        tx_hash = params.get("hash")
        if not isinstance(tx_hash, str) or len(tx_hash) != 64:
            raise RpcError(-32602, "hash must be 64 hex characters")
        base = {"txHash": tx_hash, **self._ledger_fields()}
        found = self.applied.get(tx_hash.lower())
        if found is None:
            return {**base, "status": "NOT_FOUND"}
        return {
            **base,
            "status": found.status,
            "applicationOrder": found.application_order,
            "feeBump": False,
            "envelopeXdr": found.envelope_xdr,
            "resultXdr": found.result_xdr,
            "resultMetaXdr": found.meta_xdr,
            "ledger": found.ledger,
            "createdAt": str(found.created_at),
            "events": {
                "transactionEventsXdr": [],
                "contractEventsXdr": [found.contract_events_xdr],
            },
        }

    def _get_events(self, params: dict[str, Any]) -> dict[str, Any]:
        pagination = params.get("pagination") or {}
        limit = int(pagination.get("limit") or 100)
        if not 1 <= limit <= 10_000:
            raise RpcError(-32602, "limit must be between 1 and 10000")
        cursor = pagination.get("cursor")
        start = params.get("startLedger")
        oldest = max(1, self.ledger - RETENTION_WINDOW + 1)
        if cursor is None:
            if not isinstance(start, int):
                raise RpcError(-32602, "startLedger or a cursor is required")
            if start < oldest or start > self.ledger:
                raise RpcError(
                    -32602,
                    f"startLedger must be between the oldest ledger: {oldest} and the "
                    f"latest ledger: {self.ledger}",
                )
        end = params.get("endLedger")
        filters = params.get("filters") or []
        out = []
        for ev in self.events:
            if cursor is not None and ev.event_id <= cursor:
                continue
            if cursor is None and ev.ledger < start:
                continue
            if isinstance(end, int) and ev.ledger >= end:
                continue
            if filters and not any(self._matches(ev, flt) for flt in filters):
                continue
            out.append(ev)
            if len(out) >= limit:
                break
        return {
            "events": [
                {
                    "type": "contract",
                    "ledger": ev.ledger,
                    "ledgerClosedAt": _iso(ev.closed_at),
                    "contractId": ev.contract_id,
                    "id": ev.event_id,
                    "pagingToken": ev.event_id,
                    "operationIndex": 0,
                    "transactionIndex": ev.tx_index,
                    "topic": ev.topics,
                    "value": ev.value,
                    "inSuccessfulContractCall": True,
                    "txHash": ev.tx_hash,
                }
                for ev in out
            ],
            "cursor": out[-1].event_id
            if out
            else (cursor or f"{(self.ledger << 32):019d}-0000000000"),
            "latestLedger": self.ledger,
            "oldestLedger": oldest,
            "latestLedgerCloseTime": str(self.close_time),
            "oldestLedgerCloseTime": str(self.genesis_time),
        }

    @staticmethod
    def _matches(ev: _Event, flt: dict[str, Any]) -> bool:
        if flt.get("type") not in (None, "contract"):
            return False
        ids = flt.get("contractIds")
        if ids and ev.contract_id not in ids:
            return False
        topic_filters = flt.get("topics")
        if not topic_filters:
            return True
        for segments in topic_filters:
            if segments and segments[-1] == "**":
                head = segments[:-1]
                if len(ev.topics) < len(head):
                    continue
            else:
                head = segments
                if len(ev.topics) != len(head):
                    continue
            if all(seg == "*" or seg == topic for seg, topic in zip(head, ev.topics, strict=False)):
                return True
        return False
