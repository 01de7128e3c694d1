"""The anchor contract: its pysoroban source, its committed Soroban WASM, and how to rebuild it.

``anchor_contract.py`` beside this module is the contract's only definition. It is compiled by
pysoroban-compiler (pinned to 0.19.0a2, whose output is byte-for-byte deterministic) to
``anchor.wasm``, which is committed so that deploying needs no compiler; ``tests/unit/soroban``
rebuilds it and checks the hash. Rebuild after an edit with
``python -m coordinator.soroban.contract``.

The contract's interface (docs/soroban.md):

- ``init(admin: Address)``: once; sets the address whose ``require_auth`` every anchor needs.
- ``anchor(gateway: String, seq: u64, root: Bytes, count: u32) -> Bytes``: ``seq`` must be the
  gateway's last sequence + 1 (the first is 1) and ``root`` (32 bytes) never anchored before by any
  gateway. Keeps ``chain = sha256(prev_chain || root || XDR(SCV_U64 seq) || XDR(SCV_U32 count))``
  per gateway (``prev_chain`` of sequence 1 is 32 zero bytes), emits the event
  ``["anchored", gateway, seq] -> chain`` and returns ``chain``.
- ``last(gateway) -> u64``, ``chain(gateway) -> Bytes``: read-only views (0 / empty when unknown).
- Errors (``Error(Contract, #n)``): see :data:`ANCHOR_ERRORS`.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from stellar_sdk import scval

__all__ = [
    "ANCHOR_ERRORS",
    "CONTRACT_SOURCE",
    "CONTRACT_WASM",
    "anchor_wasm",
    "build_wasm",
    "contract_interface",
    "expected_chain",
]

CONTRACT_SOURCE = "anchor_contract.py"
CONTRACT_WASM = "anchor.wasm"

# Error(Contract, #code) -> case, as declared by the contract's @error enum (checked by a test).
ANCHOR_ERRORS: dict[int, str] = {
    1: "NOT_INITIALISED",
    2: "ALREADY_INITIALISED",
    3: "OUT_OF_ORDER",
    4: "DUPLICATE_ROOT",
    5: "BAD_ROOT",
}


def _here() -> Path:
    return Path(str(resources.files(__package__)))


def contract_source() -> str:
    """The contract's pysoroban source text."""
    return (_here() / CONTRACT_SOURCE).read_text(encoding="utf-8")


def build_wasm() -> bytes:
    """Compile the contract source to Soroban WASM with pysoroban-compiler (deterministic)."""
    from pysoroban import compile_source

    return compile_source(contract_source(), CONTRACT_SOURCE).wasm


@cache
def anchor_wasm() -> bytes:
    """The committed WASM artifact (what gets uploaded to a network)."""
    return (_here() / CONTRACT_WASM).read_bytes()


@cache
def contract_interface() -> dict[str, Any]:
    """The artifact's functions, events and errors as decoded by ``pysoroban.inspect_wasm``."""
    from pysoroban import inspect_wasm

    info: dict[str, Any] = inspect_wasm(anchor_wasm())
    return info


def expected_chain(prev_chain: bytes, root: bytes, seq: int, count: int) -> bytes:
    """The chain value the contract computes, for a client that checks a receipt offline.

    ``prev_chain`` is 32 zero bytes before sequence 1. This restates the documented formula for
    verifiers; the contract itself is the authority (a unit test compares the two).
    """
    return hashlib.sha256(
        prev_chain
        + root
        + scval.to_uint64(seq).to_xdr_bytes()
        + scval.to_uint32(count).to_xdr_bytes()
    ).digest()


def main() -> None:
    """Rebuild ``anchor.wasm`` from the source and print its SHA-256."""
    wasm = build_wasm()
    (_here() / CONTRACT_WASM).write_bytes(wasm)
    print(f"{CONTRACT_WASM}: {len(wasm)} bytes, sha256 {hashlib.sha256(wasm).hexdigest()}")
