# The anchor contract, in the Python subset that pysoroban-compiler compiles to Soroban WASM.
# This file is compiler input, never imported by Python: `python -m coordinator.soroban.contract`
# rebuilds anchor.wasm from it, and the local RPC stand-in runs it on pysoroban's test host.
#
# Rules (docs/soroban.md):
# - init(admin) once; every anchor() needs admin.require_auth().
# - anchor(gateway, seq, root, count): seq == last(gateway) + 1 (the first is 1), root is 32 bytes
#   and never anchored before (by any gateway).
# - chain(gateway) = sha256(prev_chain || root || XDR(SCV_U64 seq) || XDR(SCV_U32 count)),
#   prev_chain = 32 zero bytes for seq 1. anchor() returns the new chain and emits
#   ("anchored", gateway, seq) -> chain.
from pysoroban import (
    Address,
    Bytes,
    String,
    Symbol,
    Topic,
    Tuple,
    contract,
    crypto,
    error,
    event,
    events,
    fail,
    public,
    storage,
    to_xdr,
    u32,
    u64,
)


@error
class AnchorError:
    NOT_INITIALISED = 1
    ALREADY_INITIALISED = 2
    OUT_OF_ORDER = 3
    DUPLICATE_ROOT = 4
    BAD_ROOT = 5


@event
class Anchored:
    gateway: Topic[String]
    seq: Topic[u64]
    chain: Bytes


@contract
class Anchor:
    @public
    def init(self, admin: Address) -> None:
        if storage.instance.has(Symbol("admin")):
            fail(AnchorError.ALREADY_INITIALISED)
        storage.instance.set(Symbol("admin"), admin)

    @public
    def anchor(self, gateway: String, seq: u64, root: Bytes, count: u32) -> Bytes:
        if not storage.instance.has(Symbol("admin")):
            fail(AnchorError.NOT_INITIALISED)
        admin: Address = storage.instance.get_address(Symbol("admin"))
        admin.require_auth()
        if len(root) != 32:
            fail(AnchorError.BAD_ROOT)
        last: u64 = u64(0)
        prev: Bytes = Bytes(
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
            b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        )
        skey = Tuple[Symbol, String](Symbol("seq"), gateway)
        ckey = Tuple[Symbol, String](Symbol("chain"), gateway)
        if storage.persistent.has(skey):
            last = storage.persistent.get(skey, u64)
            prev = storage.persistent.get(ckey, Bytes)
        if seq != last + u64(1):
            fail(AnchorError.OUT_OF_ORDER)
        rkey = Tuple[Symbol, Bytes](Symbol("root"), root)
        if storage.persistent.has(rkey):
            fail(AnchorError.DUPLICATE_ROOT)
        data: Bytes = Bytes(b"")
        data.append(prev)
        data.append(root)
        data.append(to_xdr(seq))
        data.append(to_xdr(count))
        chain: Bytes = crypto.sha256(data)
        storage.persistent.set(skey, seq)
        storage.persistent.set(ckey, chain)
        storage.persistent.set(rkey, seq)
        events.publish(Anchored(gateway, seq, chain))
        return chain

    @public
    def last(self, gateway: String) -> u64:
        skey = Tuple[Symbol, String](Symbol("seq"), gateway)
        if storage.persistent.has(skey):
            return storage.persistent.get(skey, u64)
        return u64(0)

    @public
    def chain(self, gateway: String) -> Bytes:
        ckey = Tuple[Symbol, String](Symbol("chain"), gateway)
        if storage.persistent.has(ckey):
            return storage.persistent.get(ckey, Bytes)
        return Bytes(b"")
