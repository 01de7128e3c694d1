"""Sealed batches: encoding round trip, signature, chain and every consistency check."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.batch import (
    GENESIS_HASH,
    Batch,
    BatchError,
    DeliveryRecord,
    TradeRecord,
    batch_hash,
    check_batch,
    decode_batch,
    encode_batch,
    merkle_root,
    proof_context,
    receipt,
    seal_batch,
    trade_leaf,
    verify_receipt,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def trade(n: int, *, wh: int = 500, price: int = 120) -> TradeRecord:
    value = wh * price // 1000
    return TradeRecord(
        id=f"t{n}",
        buy=f"b{n}",
        sell=f"s{n}",
        buyer="home-b",
        seller="home-s",
        wh=wh,
        price=price,
        interval=7,
        ts=1_000 + n,
        maker="sell",
        meter="m-s",
        settled_ts=1_050 + n,
        value=value,
        buyer_pays=value,
        seller_receives=value - 1,
        commission=1,
        grid_fee=0,
        yield_accrual=0,
        tokens_burned=wh,
        carbon_mg=wh * 820,
        commitment=bytes([n]) * 33,
        proof=b"\x01\x02" * 10,
        soc_threshold_bp=2500,
        soc_reserved_bp=0,
    )


def log(first: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "seq": first + i,
            "op": "order",
            "id": f"o{first + i}",
            "owner": "h",
            "side": "buy",
            "wh": 10,
            "price": 100,
            "ts": i,
            "interval": 7,
        }
        for i in range(n)
    ]


def sealed(seq: int = 1, prev: bytes = GENESIS_HASH, first: int = 1, n_trades: int = 3) -> Batch:
    return seal_batch(
        gateway="gw1",
        seq=seq,
        prev_hash=prev,
        created_ts=5_000,
        log_first=first,
        trades=[trade(i) for i in range(n_trades)],
        deliveries=[DeliveryRecord(trade="t0", status="defaulted", wh=500, delivered_wh=300, ts=9)],
        log=log(first, 4),
        key=KEY,
    )


def test_header_commits_to_contents() -> None:
    batch = sealed()
    h = batch.header
    assert h.merkle_root == merkle_root([trade_leaf(t) for t in batch.trades])
    assert h.totals["trades"] == 3
    assert h.totals["wh"] == 1500
    assert h.totals["carbon_mg"] == 1500 * 820
    assert (h.log_first, h.log_last) == (1, 4)
    check_batch(batch, public_key=KEY.public_key())


def test_encoding_round_trips_byte_for_byte() -> None:
    batch = sealed()
    data = encode_batch(batch)
    again = decode_batch(data)
    assert again == batch
    assert encode_batch(again) == data
    check_batch(again, public_key=KEY.public_key())


def test_sealing_is_deterministic() -> None:
    assert encode_batch(sealed()) == encode_batch(sealed())


def test_chain_links() -> None:
    first = sealed()
    second = sealed(seq=2, prev=batch_hash(first), first=5)
    check_batch(second, public_key=KEY.public_key(), prev=first)
    gap = sealed(seq=2, prev=batch_hash(first), first=6)
    with pytest.raises(BatchError) as err:
        check_batch(gap, public_key=KEY.public_key(), prev=first)
    assert err.value.reason == "chain"
    wrong_prev = sealed(seq=2, prev=bytes(32), first=5)
    with pytest.raises(BatchError, match="prev_hash"):
        check_batch(wrong_prev, public_key=KEY.public_key(), prev=first)
    with pytest.raises(BatchError) as err:
        check_batch(sealed(prev=b"\x01" * 32), public_key=KEY.public_key())
    assert err.value.reason == "chain"


def test_other_key_is_refused() -> None:
    other = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    with pytest.raises(BatchError) as err:
        check_batch(sealed(), public_key=other.public_key())
    assert err.value.reason == "signature"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: dataclasses.replace(b, trades=b.trades[:-1]), "merkle_root"),
        (
            lambda b: dataclasses.replace(
                b, trades=(dataclasses.replace(b.trades[0], wh=501), *b.trades[1:])
            ),
            "merkle_root",
        ),
        (lambda b: dataclasses.replace(b, trades=tuple(reversed(b.trades))), "merkle_root"),
        (
            lambda b: dataclasses.replace(b, log=(*b.log[:-1], {**b.log[-1], "wh": 11})),
            "log_hash",
        ),
        (lambda b: dataclasses.replace(b, deliveries=()), "deliveries_hash"),
        (
            lambda b: dataclasses.replace(
                b, header=dataclasses.replace(b.header, totals={**b.header.totals, "wh": 1})
            ),
            "totals",
        ),
        (
            lambda b: dataclasses.replace(
                b, header=dataclasses.replace(b.header, created_ts=5_001)
            ),
            "signature",
        ),
        (lambda b: dataclasses.replace(b, log=b.log[1:]), "format"),
    ],
)
def test_tampering_is_detected(change: Any, reason: str) -> None:
    with pytest.raises(BatchError) as err:
        check_batch(change(sealed()), public_key=KEY.public_key())
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.pop("signature"),
        lambda o: o["header"].update(format="ngrid-batch/9"),
        lambda o: o["header"].update(seq="1"),
        lambda o: o["trades"][0].update(wh=1.5),
        lambda o: o["trades"][0].update(commitment="XYZ"),
        lambda o: o["trades"][0].pop("proof"),
        lambda o: o["deliveries"][0].update(status="lost"),
        lambda o: o["log"][0].update(seq=9),
        lambda o: o["header"].update(prev_hash="00"),
    ],
)
def test_malformed_encodings_are_refused(mutate: Any) -> None:
    import json

    obj = json.loads(encode_batch(sealed()))
    mutate(obj)
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(BatchError) as err:
        decode_batch(data)
    assert err.value.reason == "format"


def test_non_canonical_bytes_are_refused() -> None:
    data = encode_batch(sealed())
    with pytest.raises(BatchError):
        decode_batch(data.replace(b'{"deliveries"', b'{ "deliveries"', 1))


def test_receipts_prove_each_trade() -> None:
    batch = sealed(n_trades=5)
    for t in batch.trades:
        rcpt = receipt(batch, t.id)
        assert verify_receipt(t, rcpt)
        assert not verify_receipt(dataclasses.replace(t, price=t.price + 1), rcpt)
    with pytest.raises(KeyError):
        receipt(batch, "nope")


def test_proof_context_binds_every_field() -> None:
    base = {"gateway": "g", "trade": "t1", "seller": "s", "meter": "m", "wh": 5, "interval": 1}
    contexts = {proof_context(**base)}  # type: ignore[arg-type]
    for key, other in [
        ("gateway", "h"),
        ("trade", "t2"),
        ("seller", "x"),
        ("meter", "m2"),
        ("wh", 6),
        ("interval", 2),
    ]:
        contexts.add(proof_context(**{**base, key: other}))  # type: ignore[arg-type]
    assert len(contexts) == 7


def test_bad_seal_arguments() -> None:
    with pytest.raises(BatchError):
        seal_batch(
            gateway="g",
            seq=0,
            prev_hash=GENESIS_HASH,
            created_ts=0,
            log_first=1,
            trades=[],
            deliveries=[],
            log=[],
            key=KEY,
        )
    with pytest.raises(BatchError):
        seal_batch(
            gateway="g",
            seq=1,
            prev_hash=b"",
            created_ts=0,
            log_first=1,
            trades=[],
            deliveries=[],
            log=[],
            key=KEY,
        )
    empty = seal_batch(
        gateway="g",
        seq=1,
        prev_hash=GENESIS_HASH,
        created_ts=0,
        log_first=1,
        trades=[],
        deliveries=[],
        log=[],
        key=KEY,
    )
    assert empty.header.log_last == 0
    check_batch(decode_batch(encode_batch(empty)), public_key=KEY.public_key())
