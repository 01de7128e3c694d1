"""The anchor contract: its WASM build, and its rules on both executors.

Every rule runs on the compiled WASM (wasmtime + our Soroban host, what the RPC stand-in uses) and
on the contract source interpreted by pysoroban's test host; both must give the same outcome.
"""

from __future__ import annotations

import hashlib

import pytest
from pysoroban import inspect_wasm
from stellar_sdk import Keypair, scval
from stellar_sdk import xdr as sx

from coordinator.soroban.contract import (
    ANCHOR_ERRORS,
    anchor_wasm,
    build_wasm,
    contract_interface,
    expected_chain,
)
from coordinator.soroban.wasm_host import (
    HostAuthError,
    HostContractError,
    HostError,
    WasmContract,
)
from tests.unit.soroban.pysoroban_host import AnchorHost

CONTRACT_ID = "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSC4"


def _admin() -> str:
    return Keypair.from_raw_ed25519_seed(bytes(range(32))).public_key


def _args(gateway: str, seq: int, root: bytes, count: int) -> list[sx.SCVal]:
    return [
        scval.to_string(gateway),
        scval.to_uint64(seq),
        scval.to_bytes(root),
        scval.to_uint32(count),
    ]


EXECUTORS = {"wasm": WasmContract, "source": AnchorHost}


@pytest.fixture(params=sorted(EXECUTORS))
def make(request: pytest.FixtureRequest):
    return lambda: EXECUTORS[request.param](contract_id=CONTRACT_ID)


@pytest.fixture
def host(make) -> AnchorHost:
    h = make()
    h.invoke(
        "init",
        [scval.to_address(_admin())],
        auth_check=None,
        commit=True,
        ledger_sequence=2,
        ledger_timestamp=0,
    )
    return h


def _anchor(host: AnchorHost, gateway: str, seq: int, root: bytes, count: int = 3, *, ok=True):
    return host.invoke(
        "anchor",
        _args(gateway, seq, root, count),
        auth_check=lambda address: ok and address == _admin(),
        commit=True,
        ledger_sequence=3,
        ledger_timestamp=0,
    )


def _last(host: AnchorHost, gateway: str) -> int:
    inv = host.invoke(
        "last",
        [scval.to_string(gateway)],
        auth_check=lambda a: False,
        commit=False,
        ledger_sequence=3,
        ledger_timestamp=0,
    )
    return scval.from_uint64(inv.return_value)


def test_committed_wasm_is_the_deterministic_build_of_the_source() -> None:
    rebuilt = build_wasm()
    assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(anchor_wasm()).hexdigest()
    info = inspect_wasm(anchor_wasm())
    assert info["status"] == "valid"
    assert {f["name"] for f in info["functions"]} == {"init", "anchor", "last", "chain"}
    assert anchor_wasm()[:4] == b"\x00asm"


def test_error_table_matches_the_contract() -> None:
    declared = {
        case["value"]: case["name"]
        for err in contract_interface()["errors"]
        for case in err["cases"]
    }
    assert declared == ANCHOR_ERRORS


def test_in_order_anchors_chain_per_gateway(host: AnchorHost) -> None:
    r1, r2 = b"\x01" * 32, b"\x02" * 32
    first = _anchor(host, "gw-a", 1, r1, 10)
    second = _anchor(host, "gw-a", 2, r2, 20)
    # chain = sha256(prev || root || XDR(u64 seq) || XDR(u32 count)), written out independently
    c1 = hashlib.sha256(
        bytes(32)
        + r1
        + b"\x00\x00\x00\x05"
        + (1).to_bytes(8, "big")
        + b"\x00\x00\x00\x03"
        + (10).to_bytes(4, "big")
    ).digest()
    c2 = hashlib.sha256(
        c1
        + r2
        + b"\x00\x00\x00\x05"
        + (2).to_bytes(8, "big")
        + b"\x00\x00\x00\x03"
        + (20).to_bytes(4, "big")
    ).digest()
    assert scval.from_bytes(first.return_value) == c1
    assert scval.from_bytes(second.return_value) == c2
    assert expected_chain(c1, r2, 2, 20) == c2
    assert _last(host, "gw-a") == 2
    assert _last(host, "gw-b") == 0
    # another gateway has its own sequence
    assert _anchor(host, "gw-b", 1, b"\x03" * 32).return_value is not None


@pytest.mark.parametrize("seq", [0, 2, 5])
def test_out_of_order_is_refused_and_changes_nothing(host: AnchorHost, seq: int) -> None:
    with pytest.raises(HostContractError) as err:
        _anchor(host, "gw-a", seq, b"\x01" * 32)
    assert (err.value.code, err.value.case) == (3, "OUT_OF_ORDER")
    assert _last(host, "gw-a") == 0


def test_replayed_sequence_is_refused(host: AnchorHost) -> None:
    _anchor(host, "gw-a", 1, b"\x01" * 32)
    with pytest.raises(HostContractError) as err:
        _anchor(host, "gw-a", 1, b"\x09" * 32)
    assert err.value.case == "OUT_OF_ORDER"


def test_duplicate_root_is_refused_across_gateways(host: AnchorHost) -> None:
    _anchor(host, "gw-a", 1, b"\x01" * 32)
    for gateway, seq in (("gw-a", 2), ("gw-b", 1)):
        with pytest.raises(HostContractError) as err:
            _anchor(host, gateway, seq, b"\x01" * 32)
        assert (err.value.code, err.value.case) == (4, "DUPLICATE_ROOT")
    assert _last(host, "gw-a") == 1 and _last(host, "gw-b") == 0


def test_root_must_be_32_bytes(host: AnchorHost) -> None:
    with pytest.raises(HostContractError) as err:
        _anchor(host, "gw-a", 1, b"\x01" * 31)
    assert err.value.case == "BAD_ROOT"


def test_unauthorised_call_is_refused(host: AnchorHost) -> None:
    with pytest.raises(HostAuthError) as err:
        _anchor(host, "gw-a", 1, b"\x01" * 32, ok=False)
    assert err.value.address == _admin()
    assert _last(host, "gw-a") == 0


def test_anchor_requires_init_and_init_runs_once(make) -> None:
    fresh = make()
    with pytest.raises(HostContractError) as err:
        _anchor(fresh, "gw-a", 1, b"\x01" * 32)
    assert err.value.case == "NOT_INITIALISED"
    init = [scval.to_address(_admin())]
    fresh.invoke("init", init, auth_check=None, commit=True, ledger_sequence=2, ledger_timestamp=0)
    with pytest.raises(HostContractError) as err:
        fresh.invoke(
            "init", init, auth_check=None, commit=True, ledger_sequence=2, ledger_timestamp=0
        )
    assert err.value.case == "ALREADY_INITIALISED"


def test_anchor_emits_event_and_records_admin_auth(host: AnchorHost) -> None:
    inv = _anchor(host, "gw-a", 1, b"\x01" * 32)
    assert inv.required_auth == (_admin(),)
    (event,) = inv.events
    assert [t.to_xdr() for t in event.topics] == [
        scval.to_symbol("anchored").to_xdr(),
        scval.to_string("gw-a").to_xdr(),
        scval.to_uint64(1).to_xdr(),
    ]
    assert event.data.to_xdr() == inv.return_value.to_xdr()


def test_uncommitted_call_leaves_no_trace(host: AnchorHost) -> None:
    inv = host.invoke(
        "anchor",
        _args("gw-a", 1, b"\x01" * 32, 3),
        auth_check=None,
        commit=False,
        ledger_sequence=3,
        ledger_timestamp=0,
    )
    assert len(inv.written_keys) == 3
    assert _last(host, "gw-a") == 0
    _anchor(host, "gw-a", 1, b"\x01" * 32)  # still possible


def test_wasm_traps_cleanly_on_a_wrongly_typed_argument() -> None:
    wasm = WasmContract(contract_id=CONTRACT_ID)
    wasm.invoke(
        "init",
        [scval.to_address(_admin())],
        auth_check=None,
        commit=True,
        ledger_sequence=2,
        ledger_timestamp=0,
    )
    args = _args("gw-a", 1, b"\x01" * 32, 3)
    args[1] = scval.to_uint32(1)  # the contract takes a u64
    with pytest.raises(HostError) as err:
        wasm.invoke(
            "anchor", args, auth_check=None, commit=True, ledger_sequence=3, ledger_timestamp=0
        )
    assert "Error(Value, UnexpectedType)" in err.value.diagnostic
    assert wasm.storage["persistent"] == {}


def test_wasm_host_handles_values_beyond_the_small_encoding() -> None:
    wasm = WasmContract(contract_id=CONTRACT_ID)
    wasm.invoke(
        "init",
        [scval.to_address(_admin())],
        auth_check=None,
        commit=True,
        ledger_sequence=2,
        ledger_timestamp=0,
    )
    with pytest.raises(HostContractError) as err:  # u64 >= 2**56 travels as an object
        wasm.invoke(
            "anchor",
            _args("gw-a", 2**60, b"\x01" * 32, 3),
            auth_check=None,
            commit=True,
            ledger_sequence=3,
            ledger_timestamp=0,
        )
    assert err.value.case == "OUT_OF_ORDER"
    inv = wasm.invoke(
        "last",
        [scval.to_string("a-gateway-id-longer-than-nine-characters")],
        auth_check=None,
        commit=False,
        ledger_sequence=3,
        ledger_timestamp=0,
    )
    assert scval.from_uint64(inv.return_value) == 0
