"""Executes the anchor contract's compiled WASM with wasmtime and a small Soroban host in Python.

What it stands in for: soroban-env-host, the Rust host that stellar-core embeds, which is not
available to Python. It implements exactly the host functions the anchor contract imports (the
protocol-25 ``env.json`` interface, by module and export name; a module that imports anything
else is refused at load), with Soroban's ``Val`` encoding: 8-bit tag, small values inline
(booleans, void, ``U32Val``/``I32Val``, 56-bit ``U64Small``/``I64Small``, 9-character
``SymbolSmall``), everything else as an object handle (u64/i64 objects, bytes, strings, symbols,
vectors, addresses) whose contents are kept as stellar-sdk ``SCVal``.

Modelled: linear-memory constructors, ``obj_cmp``, storage (instance, persistent, temporary),
``require_auth`` through a caller-supplied check, ``contract_event``, ``fail_with_error``
(the invocation's storage writes and events are discarded), ``compute_hash_sha256``, ``bytes_len``,
``bytes_append`` and ``serialize_to_bytes`` (SCVal XDR). A fresh instance (fresh linear memory)
runs each invocation, as in Soroban.

Not modelled: CPU/memory metering and budgets, object handle relativity between frames,
cross-contract calls, TTLs and archival, and any host function the contract does not import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import wasmtime
from stellar_sdk import scval
from stellar_sdk import xdr as sx

from coordinator.soroban.contract import ANCHOR_ERRORS, anchor_wasm, contract_interface

__all__ = [
    "ContractEventRecord",
    "HostAuthError",
    "HostContractError",
    "HostError",
    "Invocation",
    "WasmContract",
]

_MASK64 = (1 << 64) - 1

# Val tags (soroban-env-common, Tag enum)
FALSE, TRUE, VOID, ERROR, U32, I32, U64_SMALL, I64_SMALL = 0, 1, 2, 3, 4, 5, 6, 7
SYMBOL_SMALL = 14
OBJ_U64, OBJ_I64, OBJ_BYTES, OBJ_STRING, OBJ_SYMBOL, OBJ_VEC, OBJ_MAP, OBJ_ADDRESS = (
    64,
    65,
    72,
    73,
    74,
    75,
    76,
    77,
)
_OBJECT_TAG = {
    sx.SCValType.SCV_U64: OBJ_U64,
    sx.SCValType.SCV_I64: OBJ_I64,
    sx.SCValType.SCV_BYTES: OBJ_BYTES,
    sx.SCValType.SCV_STRING: OBJ_STRING,
    sx.SCValType.SCV_SYMBOL: OBJ_SYMBOL,
    sx.SCValType.SCV_VEC: OBJ_VEC,
    sx.SCValType.SCV_MAP: OBJ_MAP,
    sx.SCValType.SCV_ADDRESS: OBJ_ADDRESS,
}
_SYMBOL_CHARS = "_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_STORAGE = {0: "temporary", 1: "persistent", 2: "instance"}


class HostError(Exception):
    """The call trapped. ``diagnostic`` is Soroban's ``HostError: Error(Type, Code)`` wording."""

    def __init__(self, diagnostic: str) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic)


class HostContractError(HostError):
    """The contract failed with its own error ``code`` (``Error(Contract, #code)``)."""

    def __init__(self, code: int, case: str) -> None:
        self.code = code
        self.case = case
        super().__init__(f"HostError: Error(Contract, #{code})\n\n{case}")


class HostAuthError(HostError):
    """``require_auth`` found no valid authorisation for ``address``."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(
            f"HostError: Error(Auth, InvalidAction)\n\nmissing authorization for {address}"
        )


@dataclass(frozen=True)
class ContractEventRecord:
    """One contract event: topics and data as SCVal."""

    topics: tuple[sx.SCVal, ...]
    data: sx.SCVal


@dataclass(frozen=True)
class Invocation:
    """The outcome of one successful call.

    ``written_keys`` are the storage keys (persistent and temporary) the call wrote.
    """

    return_value: sx.SCVal
    events: tuple[ContractEventRecord, ...]
    required_auth: tuple[str, ...]
    written_keys: tuple[sx.SCVal, ...]


@cache
def _engine_and_module() -> tuple[wasmtime.Engine, wasmtime.Module]:
    engine = wasmtime.Engine()
    return engine, wasmtime.Module(engine, anchor_wasm())


@dataclass
class _Frame:
    """The state of one invocation: object table, memory, events, writes, required auth."""

    objects: list[sx.SCVal] = field(default_factory=list)
    events: list[ContractEventRecord] = field(default_factory=list)
    required: list[str] = field(default_factory=list)
    written: dict[str, sx.SCVal] = field(default_factory=dict)
    memory: wasmtime.Memory | None = None
    store: wasmtime.Store | None = None
    failure: HostError | None = None


class WasmContract:
    """One deployed instance of the anchor contract, executing its compiled WASM.

    ``contract_id`` is its C… strkey. Storage is kept here as SCVal, keyed by the key's XDR.
    """

    def __init__(self, *, contract_id: str) -> None:
        self.contract_id = contract_id
        self.storage: dict[str, dict[str, tuple[sx.SCVal, sx.SCVal]]] = {
            name: {} for name in _STORAGE.values()
        }
        self._functions = {item["name"]: item for item in contract_interface()["functions"]}
        self._frame = _Frame()
        self._auth_check: Callable[[str], bool] | None = None
        self._ledger = (0, 0)

    # -- Val <-> SCVal ---------------------------------------------------------------------------

    def _to_val(self, value: sx.SCVal) -> int:
        kind = value.type
        if kind == sx.SCValType.SCV_BOOL:
            return TRUE if value.b else FALSE
        if kind == sx.SCValType.SCV_VOID:
            return VOID
        if kind == sx.SCValType.SCV_U32:
            return (value.u32.uint32 << 32) | U32
        if kind == sx.SCValType.SCV_I32:
            return ((value.i32.int32 & 0xFFFFFFFF) << 32) | I32
        if kind == sx.SCValType.SCV_U64 and value.u64.uint64 < (1 << 56):
            return (value.u64.uint64 << 8) | U64_SMALL
        if kind == sx.SCValType.SCV_I64 and -(1 << 55) <= value.i64.int64 < (1 << 55):
            return ((value.i64.int64 << 8) & _MASK64) | I64_SMALL
        if kind == sx.SCValType.SCV_SYMBOL:
            text = value.sym.sc_symbol.decode()
            if len(text) <= 9 and all(ch in _SYMBOL_CHARS for ch in text):
                body = 0
                for ch in text:
                    body = (body << 6) | (_SYMBOL_CHARS.index(ch) + 1)
                return (body << 8) | SYMBOL_SMALL
        if kind not in _OBJECT_TAG:
            raise HostError(f"HostError: Error(Value, UnexpectedType)\n\n{kind.name}")
        self._frame.objects.append(value)
        return ((len(self._frame.objects) - 1) << 32) | _OBJECT_TAG[kind]

    def _to_scval(self, val: int) -> sx.SCVal:
        val &= _MASK64
        tag = val & 0xFF
        if tag in (FALSE, TRUE):
            return scval.to_bool(tag == TRUE)
        if tag == VOID:
            return scval.to_void()
        if tag == U32:
            return scval.to_uint32(val >> 32)
        if tag == I32:
            major = val >> 32
            return scval.to_int32(major - (1 << 32) if major >= (1 << 31) else major)
        if tag == U64_SMALL:
            return scval.to_uint64(val >> 8)
        if tag == I64_SMALL:
            signed = val - (1 << 64) if val >= (1 << 63) else val
            return scval.to_int64(signed >> 8)
        if tag == SYMBOL_SMALL:
            body, chars = val >> 8, []
            while body:
                chars.append(_SYMBOL_CHARS[(body & 0x3F) - 1])
                body >>= 6
            return scval.to_symbol("".join(reversed(chars)))
        if tag >= OBJ_U64:
            handle = val >> 32
            if handle >= len(self._frame.objects):
                raise HostError("HostError: Error(Object, MissingValue)\n\nbad object handle")
            return self._frame.objects[handle]
        raise HostError(f"HostError: Error(Value, InvalidInput)\n\nVal tag {tag}")

    @staticmethod
    def _u32(val: int) -> int:
        val &= _MASK64
        if val & 0xFF != U32:
            raise HostError("HostError: Error(Value, UnexpectedType)\n\nexpected U32Val")
        return val >> 32

    def _read(self, pos: int, length: int) -> bytes:
        frame = self._frame
        assert frame.memory is not None and frame.store is not None
        if pos + length > frame.memory.data_len(frame.store):
            raise HostError("HostError: Error(WasmVm, IndexBounds)\n\nlinear memory access")
        return bytes(frame.memory.read(frame.store, pos, pos + length))

    @staticmethod
    def _signed(value: int) -> int:
        value &= _MASK64
        return value - (1 << 64) if value >= (1 << 63) else value

    # -- host functions (env.json protocol 25: module, export name) ------------------------------

    def _host_functions(self) -> dict[tuple[str, str], Callable[..., int]]:
        def storage_kind(t: int) -> str:
            t &= _MASK64
            t = t >> 32 if t & 0xFF == U32 else t
            if t not in _STORAGE:
                raise HostError("HostError: Error(Storage, InvalidInput)\n\nstorage type")
            return _STORAGE[t]

        def put_contract_data(k: int, v: int, t: int) -> int:
            key, value, kind = self._to_scval(k), self._to_scval(v), storage_kind(t)
            self.storage[kind][key.to_xdr()] = (key, value)
            if kind != "instance":
                self._frame.written[key.to_xdr()] = key
            return VOID

        def has_contract_data(k: int, t: int) -> int:
            found = self._to_scval(k).to_xdr() in self.storage[storage_kind(t)]
            return TRUE if found else FALSE

        def get_contract_data(k: int, t: int) -> int:
            entry = self.storage[storage_kind(t)].get(self._to_scval(k).to_xdr())
            if entry is None:
                raise HostError("HostError: Error(Storage, MissingValue)\n\nno such key")
            return self._to_val(entry[1])

        def require_auth(address: int) -> int:
            target = scval.from_address(self._to_scval(address)).address
            self._frame.required.append(target)
            if self._auth_check is None or self._auth_check(target):
                return VOID
            raise HostAuthError(target)

        def obj_from_u64(raw: int) -> int:
            self._frame.objects.append(scval.to_uint64(raw & _MASK64))
            return ((len(self._frame.objects) - 1) << 32) | OBJ_U64

        def obj_to_u64(val: int) -> int:
            return self._signed(scval.from_uint64(self._to_scval(val)))

        def obj_from_i64(raw: int) -> int:
            self._frame.objects.append(scval.to_int64(self._signed(raw)))
            return ((len(self._frame.objects) - 1) << 32) | OBJ_I64

        def obj_to_i64(val: int) -> int:
            return scval.from_int64(self._to_scval(val))

        def from_memory(make: Callable[[bytes], sx.SCVal]) -> Callable[[int, int], int]:
            def host(pos: int, length: int) -> int:
                return self._to_object(make(self._read(self._u32(pos), self._u32(length))))

            return host

        def vec_new_from_linear_memory(pos: int, length: int) -> int:
            raw = self._read(self._u32(pos), 8 * self._u32(length))
            items = [
                self._to_scval(int.from_bytes(raw[i : i + 8], "little"))
                for i in range(0, len(raw), 8)
            ]
            return self._to_object(scval.to_vec(items))

        def obj_cmp(a: int, b: int) -> int:
            left, right = self._to_scval(a), self._to_scval(b)
            lkey = (int(left.type), left.to_xdr_bytes())
            rkey = (int(right.type), right.to_xdr_bytes())
            return (lkey > rkey) - (lkey < rkey)

        def contract_event(topics: int, data: int) -> int:
            vec = scval.from_vec(self._to_scval(topics))
            self._frame.events.append(
                ContractEventRecord(topics=tuple(vec), data=self._to_scval(data))
            )
            return VOID

        def fail_with_error(error: int) -> int:
            error &= _MASK64
            if error & 0xFF != ERROR:
                raise HostError("HostError: Error(Value, UnexpectedType)\n\nnot an Error")
            code, kind = error >> 32, (error >> 8) & 0xFFFFFF
            if kind != 0:
                raise HostError(f"HostError: Error({kind}, #{code})")
            raise HostContractError(code, ANCHOR_ERRORS.get(code, f"#{code}"))

        def compute_hash_sha256(b: int) -> int:
            data = scval.from_bytes(self._to_scval(b))
            return self._to_object(scval.to_bytes(hashlib.sha256(data).digest()))

        def bytes_len(b: int) -> int:
            return (len(scval.from_bytes(self._to_scval(b))) << 32) | U32

        def bytes_append(a: int, b: int) -> int:
            joined = scval.from_bytes(self._to_scval(a)) + scval.from_bytes(self._to_scval(b))
            return self._to_object(scval.to_bytes(joined))

        def serialize_to_bytes(v: int) -> int:
            return self._to_object(scval.to_bytes(self._to_scval(v).to_xdr_bytes()))

        return {
            ("l", "_"): put_contract_data,
            ("l", "0"): has_contract_data,
            ("l", "1"): get_contract_data,
            ("a", "0"): require_auth,
            ("i", "_"): obj_from_u64,
            ("i", "0"): obj_to_u64,
            ("i", "1"): obj_from_i64,
            ("i", "2"): obj_to_i64,
            ("b", "3"): from_memory(scval.to_bytes),
            ("b", "i"): from_memory(lambda raw: scval.to_string(raw)),
            ("b", "j"): from_memory(lambda raw: scval.to_symbol(raw.decode("ascii"))),
            ("v", "g"): vec_new_from_linear_memory,
            ("x", "0"): obj_cmp,
            ("x", "1"): contract_event,
            ("x", "5"): fail_with_error,
            ("c", "_"): compute_hash_sha256,
            ("b", "8"): bytes_len,
            ("b", "e"): bytes_append,
            ("b", "_"): serialize_to_bytes,
        }

    def _to_object(self, value: sx.SCVal) -> int:
        self._frame.objects.append(value)
        return ((len(self._frame.objects) - 1) << 32) | _OBJECT_TAG[value.type]

    # -- invocation ------------------------------------------------------------------------------

    def _instantiate(self) -> wasmtime.Instance:
        engine, module = _engine_and_module()
        store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        hosts = self._host_functions()
        for imp in module.imports:
            impl = hosts.get((imp.module, imp.name or ""))
            if impl is None or not isinstance(imp.type, wasmtime.FuncType):
                raise HostError(
                    f"HostError: Error(WasmVm, MissingValue)\n\nhost function "
                    f"{imp.module}.{imp.name} is not provided by this host"
                )
            linker.define_func(imp.module, imp.name or "", imp.type, self._trap_safe(impl))
        instance = linker.instantiate(store, module)
        memory = instance.exports(store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self._frame.store = store
        self._frame.memory = memory
        return instance

    def _trap_safe(self, impl: Callable[..., int]) -> Callable[..., int]:
        """Record a HostError before wasmtime turns it into a trap, and return signed i64."""

        def call(*args: int) -> int:
            try:
                return self._signed(impl(*args))
            except HostError as err:
                self._frame.failure = err
                raise
            except (ValueError, TypeError, KeyError, IndexError) as err:
                # a host function given a Val of the wrong type: the host's Error(Value, …)
                failure = HostError(f"HostError: Error(Value, UnexpectedType)\n\n{err}")
                self._frame.failure = failure
                raise failure from err

        return call

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
        """Call exported ``function`` with SCVal ``args``; raise :class:`HostError` on a trap.

        ``auth_check`` None records every ``require_auth`` and lets it pass (simulation's
        recording mode). ``commit`` False discards storage writes afterwards (simulation).
        """
        spec = self._functions.get(function)
        if spec is None:
            raise HostError(
                "HostError: Error(WasmVm, MissingValue)\n\ntrying to invoke non-existent "
                f"contract function {function}"
            )
        if len(args) != len(spec["inputs"]):
            raise HostError("HostError: Error(WasmVm, UnexpectedSize)\n\nwrong argument count")
        saved = {name: dict(entries) for name, entries in self.storage.items()}
        self._frame = _Frame()
        self._auth_check = auth_check
        self._ledger = (ledger_sequence, ledger_timestamp)
        try:
            instance = self._instantiate()
            export = instance.exports(self._frame.store)[function]
            assert isinstance(export, wasmtime.Func)
            vals = [self._signed(self._to_val(arg)) for arg in args]
            try:
                raw = export(self._frame.store, *vals)
            except Exception as err:  # a trap, or a host function's HostError re-raised
                if self._frame.failure is not None:
                    raise self._frame.failure from err
                raise HostError(
                    f"HostError: Error(WasmVm, InvalidAction)\n\n{str(err).splitlines()[0]}"
                ) from err
            return_value = self._to_scval(int(raw))
            result = Invocation(
                return_value=return_value,
                events=tuple(self._frame.events),
                required_auth=tuple(dict.fromkeys(self._frame.required)),
                written_keys=tuple(self._frame.written.values()),
            )
        except BaseException:
            self.storage = saved
            raise
        finally:
            self._auth_check = None
        if not commit:
            self.storage = saved
        return result

    # -- ledger views ----------------------------------------------------------------------------

    def instance_storage(self) -> list[tuple[sx.SCVal, sx.SCVal]]:
        """The instance storage as (key, value) SCVal pairs."""
        return list(self.storage["instance"].values())

    def persistent_entry(self, key: sx.SCVal) -> sx.SCVal | None:
        """The persistent value stored under ``key``, or None."""
        entry = self.storage["persistent"].get(key.to_xdr())
        return None if entry is None else entry[1]

    def snapshot_state(self) -> Any:
        return {name: dict(entries) for name, entries in self.storage.items()}
