"""Anchoring batches on Soroban: build, simulate, prepare, sign, store, send and poll.

:class:`Submitter` follows Stellar RPC's status rules for ``sendTransaction`` and
``getTransaction`` (developers.stellar.org, "sendTransaction" / "getTransaction"):

- ``PENDING`` or ``DUPLICATE``: poll ``getTransaction`` until ``SUCCESS`` or ``FAILED``.
- ``TRY_AGAIN_LATER``: back off (capped exponential) and resend the *same* envelope.
- ``ERROR`` with ``txBAD_SEQ``: if the stored envelope was in fact applied (a restart after
  sending), take its result; otherwise reload the account's sequence, rebuild and re-sign.
- ``ERROR`` with ``txTOO_LATE``: rebuild. Any other ``ERROR`` raises :class:`SubmissionError`.
- ``NOT_FOUND`` is not final until a ledger has closed after the transaction's max time (its
  time bounds, set by ``set_timeout`` on every transaction): then the envelope can never be
  included, and it is rebuilt and re-signed.

One transaction is in flight per source account (a lock; run one submitter per account). The
signed envelope and its hash are written to the :class:`EnvelopeStore` *before* sending, keyed by
what is being anchored (``anchor/<gateway>/<seq>``): a restarted submitter finds the stored
envelope and resumes by resending and polling it, so each batch anchors exactly once.

Time and sleeping are injected (``clock``, ``sleep``) so that tests control them.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stellar_sdk import (
    Address,
    Keypair,
    Network,
    SorobanServerAsync,
    TransactionBuilder,
    TransactionEnvelope,
    scval,
)
from stellar_sdk import xdr as sx
from stellar_sdk.exceptions import PrepareTransactionException
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import Durability

from coordinator.errors import AnchorRefusedError, ConfigError, SubmissionError
from coordinator.soroban.contract import ANCHOR_ERRORS, anchor_wasm

__all__ = [
    "AnchorResult",
    "EnvelopeStore",
    "SorobanConfig",
    "SqliteEnvelopeStore",
    "StoredTx",
    "Submitter",
    "anchor_contract_id",
    "deploy_anchor_contract",
]

SECRET_ENV = "NGRID_SOROBAN_SECRET"


@dataclass(frozen=True, kw_only=True)
class SorobanConfig:
    """Where and as whom to anchor.

    ``rpc_url``, ``network_passphrase`` and ``contract_id`` name the network and contract; the
    coordinator's secret key (S…) comes from ``secret_file`` when given, else from the environment
    variable ``secret_env``. ``tx_timeout_s`` is every transaction's ``set_timeout``.
    """

    rpc_url: str
    network_passphrase: str
    contract_id: str
    secret_file: Path | None = None
    secret_env: str = SECRET_ENV
    tx_timeout_s: int = 30
    base_fee: int = 100

    def keypair(self) -> Keypair:
        """The signing key; :class:`ConfigError` when it is missing or malformed."""
        if self.secret_file is not None:
            try:
                secret = self.secret_file.read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ConfigError(
                    f"cannot read {self.secret_file}: {err.strerror}", key="soroban.secret_file"
                ) from err
            key = "soroban.secret_file"
        else:
            secret = os.environ.get(self.secret_env, "").strip()
            key = f"env {self.secret_env}"
            if not secret:
                raise ConfigError("no secret key: set it or give soroban.secret_file", key=key)
        try:
            return Keypair.from_secret(secret)
        except Exception as err:
            raise ConfigError("not a Stellar secret key (S…)", key=key) from err


@dataclass(frozen=True)
class AnchorResult:
    """A confirmed anchoring: transaction hash (hex), ledger, status, and the contract's chain."""

    tx_hash: str
    ledger: int
    status: str
    chain: bytes


@dataclass(frozen=True, kw_only=True)
class StoredTx:
    """One row of the envelope store.

    ``status``: ``sent`` (signed, possibly sent, not confirmed), ``success`` or ``failed``.
    ``max_time``: the envelope's time-bound max (unix s). ``ledger``/``result`` once confirmed
    (``result`` is the contract's return value, hex).
    """

    key: str
    source: str
    tx_hash: str
    envelope_xdr: str
    max_time: int
    status: str
    ledger: int | None = None
    result: str | None = None


class EnvelopeStore(Protocol):
    """Where signed envelopes are kept before they are sent (see :class:`SqliteEnvelopeStore`)."""

    def get(self, key: str) -> StoredTx | None: ...

    def put(self, record: StoredTx) -> None: ...

    def in_flight(self, source: str) -> list[StoredTx]: ...


class SqliteEnvelopeStore:
    """The envelope store in SQLite (``path`` or ``":memory:"``). Schema::

        CREATE TABLE soroban_tx (
            key          TEXT PRIMARY KEY,   -- what is anchored: anchor/<gateway>/<seq>
            source       TEXT NOT NULL,      -- source account (G…)
            tx_hash      TEXT NOT NULL,      -- hex hash of the signed envelope
            envelope_xdr TEXT NOT NULL,      -- signed TransactionEnvelope, base64 XDR
            max_time     INTEGER NOT NULL,   -- time bounds max (unix s)
            status       TEXT NOT NULL CHECK (status IN ('sent', 'success', 'failed')),
            ledger       INTEGER,            -- ledger it was applied in
            result       TEXT                -- contract return value (hex)
        )

    Every ``put`` commits before returning (WAL mode), so a row written before sending survives
    a power cut.
    """

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS soroban_tx (
            key          TEXT PRIMARY KEY,
            source       TEXT NOT NULL,
            tx_hash      TEXT NOT NULL,
            envelope_xdr TEXT NOT NULL,
            max_time     INTEGER NOT NULL,
            status       TEXT NOT NULL CHECK (status IN ('sent', 'success', 'failed')),
            ledger       INTEGER,
            result       TEXT
        )
    """

    def __init__(self, *, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        if str(path) != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(self.SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _row(self, row: tuple[object, ...] | None) -> StoredTx | None:
        if row is None:
            return None
        key, source, tx_hash, envelope, max_time, status, ledger, result = row
        return StoredTx(
            key=str(key),
            source=str(source),
            tx_hash=str(tx_hash),
            envelope_xdr=str(envelope),
            max_time=int(max_time),  # type: ignore[call-overload]
            status=str(status),
            ledger=None if ledger is None else int(ledger),  # type: ignore[call-overload]
            result=None if result is None else str(result),
        )

    def get(self, key: str) -> StoredTx | None:
        cur = self._db.execute("SELECT * FROM soroban_tx WHERE key = ?", (key,))
        return self._row(cur.fetchone())

    def put(self, record: StoredTx) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO soroban_tx VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.key,
                record.source,
                record.tx_hash,
                record.envelope_xdr,
                record.max_time,
                record.status,
                record.ledger,
                record.result,
            ),
        )

    def in_flight(self, source: str) -> list[StoredTx]:
        cur = self._db.execute(
            "SELECT * FROM soroban_tx WHERE source = ? AND status = 'sent' ORDER BY rowid",
            (source,),
        )
        return [rec for rec in map(self._row, cur.fetchall()) if rec is not None]


_CONTRACT_ERROR = re.compile(r"Error\(Contract, #(\d+)\)")

BuildOp = Callable[[TransactionBuilder], TransactionBuilder]


class Submitter:
    """Anchors batches through the anchor contract, exactly once each (module docstring).

    ``server`` is a stellar-sdk ``SorobanServerAsync`` (made from ``config.rpc_url`` when None);
    ``store`` the envelope store. ``poll_interval_s`` spaces ``getTransaction`` calls;
    ``backoff_s``/``backoff_max_s`` bound the TRY_AGAIN_LATER back-off. Raises
    :class:`AnchorRefusedError` when the contract refuses (simulation) and
    :class:`SubmissionError` when the network does.
    """

    def __init__(
        self,
        *,
        config: SorobanConfig,
        store: EnvelopeStore,
        keypair: Keypair | None = None,
        server: SorobanServerAsync | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        poll_interval_s: float = 0.5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_rebuilds: int = 5,
    ) -> None:
        self.config = config
        self.store = store
        self.keypair = keypair if keypair is not None else config.keypair()
        self.server = server if server is not None else SorobanServerAsync(config.rpc_url)
        self.clock = clock
        self.sleep = sleep
        self.poll_interval_s = poll_interval_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_rebuilds = max_rebuilds
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        return self.keypair.public_key

    async def close(self) -> None:
        await self.server.close()

    async def __aenter__(self) -> Submitter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def anchor(self, gateway: str, seq: int, root: bytes, count: int) -> AnchorResult:
        """Anchor batch ``seq`` of ``gateway`` (Merkle ``root``, 32 bytes; ``count`` trades).

        Idempotent: a batch already anchored through this store returns the stored result.
        """
        if len(root) != 32:
            raise ValueError("root must be 32 bytes")
        if not 1 <= seq < 2**64 or not 0 <= count < 2**32:
            raise ValueError("seq must be a u64 >= 1 and count a u32")
        args = [
            scval.to_string(gateway),
            scval.to_uint64(seq),
            scval.to_bytes(root),
            scval.to_uint32(count),
        ]
        return await self.invoke(f"anchor/{gateway}/{seq}", "anchor", args)

    async def invoke(self, key: str, function: str, args: Sequence[sx.SCVal]) -> AnchorResult:
        """Call ``function(args)`` on the contract once for ``key`` (see :meth:`anchor`)."""
        contract_id = self.config.contract_id

        def build(builder: TransactionBuilder) -> TransactionBuilder:
            return builder.append_invoke_contract_function_op(contract_id, function, list(args))

        return await self.submit(key, build)

    async def resume(self) -> list[AnchorResult]:
        """Finish every envelope this source left in flight (call after a restart)."""
        results = []
        for record in self.store.in_flight(self.source):
            async with self._lock:
                results.append(await self._drive(record, None))
        return results

    async def submit(self, key: str, build: BuildOp) -> AnchorResult:
        """Run the operation ``build`` appends, once for ``key``."""
        async with self._lock:
            record = self.store.get(key)
            if record is not None and record.status == "success":
                return self._result(record)
            if record is None or record.status == "failed":
                record = await self._build_and_store(key, build)
            return await self._drive(record, build)

    # -- building ----------------------------------------------------------------------------

    async def _build_and_store(self, key: str, build: BuildOp) -> StoredTx:
        account = await self.server.load_account(self.source)
        builder = TransactionBuilder(
            account, self.config.network_passphrase, base_fee=self.config.base_fee
        )
        tx = build(builder).set_timeout(self.config.tx_timeout_s).build()
        try:
            prepared = await self.server.prepare_transaction(tx)
        except PrepareTransactionException as err:
            raise self._refusal(err.simulate_transaction_response.error or "") from err
        prepared.sign(self.keypair)
        bounds = prepared.transaction.preconditions
        max_time = bounds.time_bounds.max_time if bounds and bounds.time_bounds else 0
        record = StoredTx(
            key=key,
            source=self.source,
            tx_hash=prepared.hash_hex(),
            envelope_xdr=prepared.to_xdr(),
            max_time=max_time,
            status="sent",
        )
        self.store.put(record)  # before sending: a restart resumes from here
        return record

    @staticmethod
    def _refusal(diagnostic: str) -> AnchorRefusedError:
        match = _CONTRACT_ERROR.search(diagnostic)
        if match:
            code = int(match.group(1))
            case = ANCHOR_ERRORS.get(code, f"#{code}")
            return AnchorRefusedError(f"the anchor contract refused: {case}", code=code, case=case)
        if "Error(Auth" in diagnostic:
            return AnchorRefusedError(
                "the anchor contract refused: missing authorisation", code=None, case="AUTH"
            )
        first = diagnostic.strip().splitlines()[0] if diagnostic.strip() else "unknown error"
        return AnchorRefusedError(f"simulation failed: {first}", code=None, case="SIMULATION")

    # -- sending and polling -------------------------------------------------------------------

    async def _drive(self, record: StoredTx, build: BuildOp | None) -> AnchorResult:
        rebuilds = 0
        backoff = self.backoff_s
        while True:
            envelope = TransactionEnvelope.from_xdr(
                record.envelope_xdr, self.config.network_passphrase
            )
            sent = await self.server.send_transaction(envelope)
            if sent.status == SendTransactionStatus.TRY_AGAIN_LATER:
                await self.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                if not (record.max_time and self.clock() > record.max_time):
                    continue
                outcome = await self._poll(record)  # expired while backing off?
            elif sent.status == SendTransactionStatus.ERROR:
                code = self._error_code(sent.error_result_xdr)
                if code not in ("txBAD_SEQ", "txTOO_LATE"):
                    self.store.put(_replace(record, status="failed"))
                    raise SubmissionError(
                        f"the network refused the transaction: {code}",
                        tx_hash=record.tx_hash,
                        result_code=code,
                    )
                applied = await self.server.get_transaction(record.tx_hash)
                if applied.status != GetTransactionStatus.NOT_FOUND:
                    return self._finish(record, applied)
                outcome = None  # stale: rebuild
            else:  # PENDING or DUPLICATE
                outcome = await self._poll(record)
            if outcome is not None:
                return outcome
            rebuilds += 1
            if build is None or rebuilds > self.max_rebuilds:
                self.store.put(_replace(record, status="failed"))
                raise SubmissionError(
                    "the transaction expired and could not be rebuilt",
                    tx_hash=record.tx_hash,
                    result_code="NOT_FOUND",
                )
            record = await self._build_and_store(record.key, build)
            backoff = self.backoff_s

    async def _poll(self, record: StoredTx) -> AnchorResult | None:
        """Poll until final: the result, or None when the envelope can no longer be included."""
        while True:
            got = await self.server.get_transaction(record.tx_hash)
            if got.status != GetTransactionStatus.NOT_FOUND:
                return self._finish(record, got)
            if record.max_time and got.latest_ledger_close_time > record.max_time:
                return None
            await self.sleep(self.poll_interval_s)

    def _finish(self, record: StoredTx, got: object) -> AnchorResult:
        status = got.status  # type: ignore[attr-defined]
        ledger = int(got.ledger or 0)  # type: ignore[attr-defined]
        if status == GetTransactionStatus.FAILED:
            self.store.put(_replace(record, status="failed", ledger=ledger))
            code = self._error_code(got.result_xdr)  # type: ignore[attr-defined]
            raise SubmissionError(
                f"the transaction failed in ledger {ledger}: {code}",
                tx_hash=record.tx_hash,
                result_code=code,
            )
        value = b""
        meta_xdr = got.result_meta_xdr  # type: ignore[attr-defined]
        if meta_xdr:
            meta = sx.TransactionMeta.from_xdr(meta_xdr)
            soroban = (meta.v4 or meta.v3).soroban_meta if (meta.v4 or meta.v3) else None
            ret = soroban.return_value if soroban is not None else None
            if ret is not None and ret.type == sx.SCValType.SCV_BYTES:
                value = scval.from_bytes(ret)
            elif ret is not None:
                value = ret.to_xdr_bytes()
        done = _replace(record, status="success", ledger=ledger, result=value.hex())
        self.store.put(done)
        return self._result(done)

    @staticmethod
    def _result(record: StoredTx) -> AnchorResult:
        return AnchorResult(
            tx_hash=record.tx_hash,
            ledger=record.ledger or 0,
            status="SUCCESS",
            chain=bytes.fromhex(record.result or ""),
        )

    @staticmethod
    def _error_code(result_xdr: str | None) -> str:
        if not result_xdr:
            return "unknown"
        try:
            return sx.TransactionResult.from_xdr(result_xdr).result.code.name
        except Exception:
            return "unknown"


def _replace(record: StoredTx, **changes: object) -> StoredTx:
    from dataclasses import replace

    return replace(record, **changes)  # type: ignore[arg-type]


def anchor_contract_id(*, deployer: str, salt: bytes, network_passphrase: str) -> str:
    """The id (C…) of the contract ``deployer`` creates with ``salt`` on that network.

    ``sha256(HashIDPreimage(ENVELOPE_TYPE_CONTRACT_ID, networkID, FROM_ADDRESS(deployer, salt)))``.
    """
    preimage = sx.HashIDPreimage(
        sx.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
        contract_id=sx.HashIDPreimageContractID(
            sx.Hash(Network(network_passphrase).network_id()),
            sx.ContractIDPreimage(
                sx.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ADDRESS,
                from_address=sx.ContractIDPreimageFromAddress(
                    Address(deployer).to_xdr_sc_address(), sx.Uint256(salt)
                ),
            ),
        ),
    )
    return Address.from_raw_contract(_sha256(preimage.to_xdr_bytes())).address


async def deploy_anchor_contract(
    *, submitter: Submitter, admin: str | None = None, salt: bytes = bytes(32)
) -> str:
    """Upload the anchor WASM, create an instance from the submitter's account and ``init`` it.

    ``admin`` defaults to the submitter's account. Returns the contract id (C…), which is
    determined by the deployer, ``salt`` and the network (:func:`anchor_contract_id`). Steps
    already on chain are skipped, so running it again against the same network is harmless.
    """
    wasm = anchor_wasm()
    source = submitter.source
    server = submitter.server
    contract_id = anchor_contract_id(
        deployer=source, salt=salt, network_passphrase=submitter.config.network_passphrase
    )
    if (
        await server.get_contract_data(
            contract_id,
            sx.SCVal(sx.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE),
            Durability.PERSISTENT,
        )
        is None
    ):
        code_key = sx.LedgerKey(
            sx.LedgerEntryType.CONTRACT_CODE,
            contract_code=sx.LedgerKeyContractCode(sx.Hash(_sha256(wasm))),
        )
        if not (await server.get_ledger_entries([code_key])).entries:
            await submitter.submit(
                "deploy/upload", lambda b: b.append_upload_contract_wasm_op(contract=wasm)
            )
        created = await submitter.submit(
            f"deploy/create/{salt.hex()}",
            lambda b: b.append_create_contract_op(wasm_id=_sha256(wasm), address=source, salt=salt),
        )
        got = scval.from_address(sx.SCVal.from_xdr_bytes(created.chain)).address
        if got != contract_id:
            raise SubmissionError(f"created contract {got}, expected {contract_id}")
    init_submitter = Submitter(
        config=SorobanConfig(
            rpc_url=submitter.config.rpc_url,
            network_passphrase=submitter.config.network_passphrase,
            contract_id=contract_id,
            tx_timeout_s=submitter.config.tx_timeout_s,
        ),
        store=submitter.store,
        keypair=submitter.keypair,
        server=server,
        clock=submitter.clock,
        sleep=submitter.sleep,
        poll_interval_s=submitter.poll_interval_s,
    )
    try:
        await init_submitter.invoke(
            f"deploy/init/{contract_id}", "init", [scval.to_address(admin or source)]
        )
    except AnchorRefusedError as err:
        if err.case != "ALREADY_INITIALISED":
            raise
    return contract_id


def _sha256(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()
