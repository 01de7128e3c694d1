"""The anchor contract's source run on pysoroban's test host: a second executor, for tests.

What executes is ``anchor_contract.py`` checked and lowered by pysoroban-compiler to its Typed IR
(the same front end and IR that emit ``anchor.wasm``) and interpreted by ``pysoroban.testing``.
The local RPC stand-in runs the compiled WASM instead (:mod:`coordinator.soroban.wasm_host`);
the unit tests run every contract rule on both and expect the same outcome, which checks the
compiler's WASM against its own IR semantics and the WASM host against pysoroban's host.

This module converts between Stellar XDR values (``SCVal``) and the test host's native values,
records which addresses a call required authorisation from (simulation's recording mode), and
runs a call either committed or rolled back. Storage TTLs, fees and metering are not modelled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from pysoroban import compile_source
from pysoroban.model import ValueType
from pysoroban.testing import AuthorizationError, ContractError, ContractTest, InvocationError
from stellar_sdk import Address, scval
from stellar_sdk import xdr as sx

from coordinator.soroban.contract import CONTRACT_SOURCE, contract_interface, contract_source
from coordinator.soroban.wasm_host import (
    ContractEventRecord,
    HostAuthError,
    HostContractError,
    HostError,
    Invocation,
)

__all__ = [
    "AnchorHost",
    "ContractEventRecord",
    "HostAuthError",
    "HostContractError",
    "HostError",
    "Invocation",
    "native_to_scval",
    "scval_to_native",
]


def _type_to_scval(type_name: str, value: Any) -> sx.SCVal:
    converters: dict[str, Callable[[Any], sx.SCVal]] = {
        "String": scval.to_string,
        "Symbol": scval.to_symbol,
        "Bytes": scval.to_bytes,
        "Address": scval.to_address,
        "u32": scval.to_uint32,
        "i32": scval.to_int32,
        "u64": scval.to_uint64,
        "i64": scval.to_int64,
        "u128": scval.to_uint128,
        "i128": scval.to_int128,
        "boolean": scval.to_bool,
    }
    if value is None:
        return scval.to_void()
    if type_name not in converters:
        raise HostError(f"HostError: Error(Value, UnexpectedType)\n\nno SCVal for {type_name}")
    return converters[type_name](value)


def native_to_scval(value: Any, value_type: ValueType | str | None = None) -> sx.SCVal:
    """A test-host value as SCVal.

    Without a type, a string is a symbol, except after the first element of a tuple, where it is
    a string (the shape of the contract's storage keys).
    """
    if isinstance(value_type, ValueType):
        value_type = value_type.value
    if value_type is not None:
        return _type_to_scval(value_type, value)
    if isinstance(value, tuple):
        # The contract's keys are Tuple[Symbol, String] / Tuple[Symbol, Bytes]: a tag, then data.
        return scval.to_vec(
            [
                scval.to_string(item) if index and isinstance(item, str) else native_to_scval(item)
                for index, item in enumerate(value)
            ]
        )
    if isinstance(value, bool):
        return scval.to_bool(value)
    if isinstance(value, bytes):
        return scval.to_bytes(value)
    if isinstance(value, int):
        return scval.to_uint64(value)
    if isinstance(value, str):
        return scval.to_symbol(value)
    raise HostError(f"HostError: Error(Value, UnexpectedType)\n\n{type(value).__name__}")


_SCVAL_TYPE_NAMES = {
    sx.SCValType.SCV_STRING: "String",
    sx.SCValType.SCV_SYMBOL: "Symbol",
    sx.SCValType.SCV_BYTES: "Bytes",
    sx.SCValType.SCV_ADDRESS: "Address",
    sx.SCValType.SCV_U32: "u32",
    sx.SCValType.SCV_I32: "i32",
    sx.SCValType.SCV_U64: "u64",
    sx.SCValType.SCV_I64: "i64",
    sx.SCValType.SCV_BOOL: "boolean",
}


def scval_to_native(value: sx.SCVal) -> Any:
    """An SCVal as a test-host value (vectors become tuples, addresses strkeys)."""
    kind = value.type
    if kind == sx.SCValType.SCV_VEC:
        return tuple(scval_to_native(item) for item in scval.from_vec(value))
    if kind == sx.SCValType.SCV_STRING:
        return scval.from_string(value).decode("utf-8")
    if kind == sx.SCValType.SCV_SYMBOL:
        return scval.from_symbol(value)
    if kind == sx.SCValType.SCV_BYTES:
        return scval.from_bytes(value)
    if kind == sx.SCValType.SCV_ADDRESS:
        return scval.from_address(value).address
    if kind == sx.SCValType.SCV_BOOL:
        return scval.from_bool(value)
    if kind in (sx.SCValType.SCV_U32, sx.SCValType.SCV_I32):
        return value.u32.uint32 if kind == sx.SCValType.SCV_U32 else value.i32.int32
    if kind == sx.SCValType.SCV_U64:
        return scval.from_uint64(value)
    if kind == sx.SCValType.SCV_I64:
        return scval.from_int64(value)
    if kind == sx.SCValType.SCV_VOID:
        return None
    raise HostError(f"HostError: Error(Value, UnexpectedType)\n\n{kind.name}")


class _RecordingContract(ContractTest):  # type: ignore[misc]
    """pysoroban's test host with a pluggable authorisation check.

    ``auth_check`` None records every address that ``require_auth`` asks for and lets the call go
    on (simulation's recording mode); otherwise it decides, as the transaction's auth entries do.
    """

    auth_check: Callable[[str], bool] | None = None
    required: list[str]

    def _require_auth(self, address: str) -> None:
        self.required.append(address)
        if self.auth_check is None or self.auth_check(address):
            return
        raise AuthorizationError(f"missing authorization for {address!r}")


class AnchorHost:
    """One deployed instance of the anchor contract (its storage lives here).

    ``contract_id`` is the instance's C… strkey, used as the address in events and ledger keys.
    """

    def __init__(self, *, contract_id: str) -> None:
        self.contract_id = contract_id
        self._contract = _RecordingContract(compile_source(contract_source(), CONTRACT_SOURCE))
        self._contract.contract_address = contract_id
        self._contract.required = []
        info = contract_interface()
        self._functions = {item["name"]: item for item in info["functions"]}
        self._events = {tuple(item["prefix_topics"]): item for item in info["events"]}
        self._errors = {
            case["value"]: case["name"] for err in info["errors"] for case in err["cases"]
        }

    def invoke(
        self,
        function: str,
        args: Sequence[sx.SCVal],
        *,
        auth_check: Callable[[str], bool] | None,
        commit: bool,
        ledger_sequence: int,
        ledger_timestamp: int,
    ) -> Invocation:
        """Call ``function`` with SCVal ``args``; raise :class:`HostError` when it traps.

        ``commit`` False rolls storage and events back afterwards (simulation).
        """
        spec = self._functions.get(function)
        if spec is None:
            raise HostError(
                f"HostError: Error(WasmVm, MissingValue)\n\ntrying to invoke non-existent "
                f"contract function {function}"
            )
        if len(args) != len(spec["inputs"]):
            raise HostError("HostError: Error(WasmVm, UnexpectedSize)\n\nwrong argument count")
        natives = []
        for arg, param in zip(args, spec["inputs"], strict=True):
            if _SCVAL_TYPE_NAMES.get(arg.type) != param["type"]:
                raise HostError(
                    f"HostError: Error(Value, UnexpectedType)\n\n{param['name']} expects "
                    f"{param['type']}, got {arg.type.name}"
                )
            natives.append(scval_to_native(arg))
        contract = self._contract
        snapshot = self._snapshot()
        contract.auth_check = auth_check
        contract.required = []
        contract.ledger_sequence = ledger_sequence
        contract.ledger_timestamp = ledger_timestamp
        before = dict(contract.persistent)
        try:
            result = contract.invoke(function, *natives)
        except ContractError as err:
            raise HostContractError(err.code, self._errors.get(err.code, err.case)) from err
        except AuthorizationError as err:
            raise HostAuthError(contract.required[-1] if contract.required else "?") from err
        except InvocationError as err:
            raise HostError(f"HostError: Error(Context, InternalError)\n\n{err}") from err
        finally:
            contract.auth_check = None
        outputs = spec["outputs"]
        try:
            return_value = _type_to_scval(outputs[0], result) if outputs else scval.to_void()
            events = tuple(self._event_record(ev) for ev in contract.last_events)
            after = contract.persistent
            written = tuple(
                native_to_scval(key)
                for key in after
                if key not in before or before[key] != after[key]
            )
            required = tuple(dict.fromkeys(contract.required))
        finally:
            if not commit:
                self._restore(snapshot)
        return Invocation(
            return_value=return_value, events=events, required_auth=required, written_keys=written
        )

    def _event_record(self, event: Any) -> ContractEventRecord:
        topics = tuple(event.topics)
        for prefix, spec in self._events.items():
            if topics[: len(prefix)] == prefix:
                fields = spec["topics"]
                converted = [scval.to_symbol(item) for item in prefix]
                converted += [
                    _type_to_scval(field["type"], value)
                    for field, value in zip(fields, topics[len(prefix) :], strict=True)
                ]
                data_type = spec["data"][0]["type"] if spec["data"] else None
                data = _type_to_scval(data_type, event.data) if data_type else scval.to_void()
                return ContractEventRecord(topics=tuple(converted), data=data)
        raise HostError("HostError: Error(Events, InvalidInput)\n\nundeclared event")

    def _snapshot(self) -> tuple[Any, ...]:
        c = self._contract
        return (
            copy.deepcopy(c._storage),
            copy.deepcopy(c._persistent),
            copy.deepcopy(c._temporary),
            list(c._events),
        )

    def _restore(self, snapshot: tuple[Any, ...]) -> None:
        c = self._contract
        c._storage, c._persistent, c._temporary, events = snapshot
        c._events = list(events)

    def instance_storage(self) -> list[tuple[sx.SCVal, sx.SCVal]]:
        """The instance storage as (key, value) SCVal pairs (keys are symbols)."""
        return [
            (native_to_scval(key), native_to_scval(value, value_type))
            for key, (value, value_type) in self._contract._storage.items()
        ]

    def persistent_entry(self, key: sx.SCVal) -> sx.SCVal | None:
        """The persistent value stored under ``key``, or None."""
        try:
            native = scval_to_native(key)
        except HostError:
            return None
        stored = self._contract._persistent.get(native)
        if stored is None:
            return None
        value, value_type = stored
        return native_to_scval(value, value_type)


def contract_address_of(contract_id: bytes) -> str:
    """The C… strkey of a 32-byte contract id."""
    return Address.from_raw_contract(contract_id).address
