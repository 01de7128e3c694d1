"""Range proofs: completeness at the edges, soundness checks, binding, strict parsing, batches."""

from __future__ import annotations

import random
from functools import cache

import pytest

from edge.zk import (
    Opening,
    at_least_statement,
    commit,
    precompute,
    proof_size,
    prove_at_least,
    prove_range,
    verify_at_least,
    verify_batch,
    verify_range,
)
from edge.zk._group import ORDER
from edge.zk.pedersen import commit_with
from edge.zk.rangeproof import prove

CONTEXT = b"gateway=gw-1;trade=42;epoch=7"
FIELD_P = 2**256 - 2**32 - 977


@pytest.fixture(scope="module", autouse=True)
def tables() -> None:
    """Fixed-base tables for the 16-bit generators: makes the ~5,000 verifications here fast.

    The plain path (no tables) is exercised in test_fixed_base.py.
    """
    precompute(16)


@cache
def soc_proof() -> tuple[bytes, bytes]:
    """One honest proof for SoC 6400 bp in [2000, 10000], shared by the mutation tests."""
    commitment, opening = commit(6400)
    return commitment, prove_range(opening, 2000, 10000, CONTEXT)


@pytest.mark.parametrize(
    ("lo", "hi", "value"),
    [
        (0, 10000, 0),
        (0, 10000, 10000),
        (2000, 10000, 2000),
        (2000, 10000, 10000),
        (5, 5, 5),
        (0, 0, 0),
        (0, 255, 255),
        (0, 256, 256),
        (0, 2**64 - 1, 2**64 - 1),
        (2**64 - 1, 2**64 - 1, 2**64 - 1),
    ],
)
def test_honest_proofs_verify_at_the_edges(lo: int, hi: int, value: int) -> None:
    commitment, opening = commit(value)
    proof = prove_range(opening, lo, hi, CONTEXT)
    assert verify_range(commitment, lo, hi, CONTEXT, proof)


def test_soc_proof_size() -> None:
    _, proof = soc_proof()
    assert len(proof) == proof_size(16) == 624
    assert len(proof) <= 700


@pytest.mark.parametrize(("lo", "hi", "value"), [(2000, 10000, 1999), (2000, 10000, 10001)])
def test_out_of_range_is_refused(lo: int, hi: int, value: int) -> None:
    _, opening = commit(value)
    with pytest.raises(ValueError, match="outside"):
        prove_range(opening, lo, hi, CONTEXT)


@pytest.mark.parametrize(("lo", "hi"), [(10, 9), (-1, 5), (0, 2**64), (True, 5), (0, 5.0)])
def test_invalid_range_is_refused(lo: object, hi: object) -> None:
    _, opening = commit(5)
    with pytest.raises(ValueError):
        prove_range(opening, lo, hi, CONTEXT)  # type: ignore[arg-type]
    commitment, proof = soc_proof()
    assert not verify_range(commitment, lo, hi, CONTEXT, proof)  # type: ignore[arg-type]


def test_a_false_opening_cannot_prove_the_commitment() -> None:
    commitment, real = commit(9000)
    lie = Opening(value=5000, blinding=real.blinding)
    proof = prove_range(lie, 0, 6000, CONTEXT)
    assert not verify_range(commitment, 0, 6000, CONTEXT, proof)
    other_blinding = Opening(value=9000, blinding=real.blinding + 1)
    proof = prove_range(other_blinding, 0, 10000, CONTEXT)
    assert not verify_range(commitment, 0, 10000, CONTEXT, proof)


@pytest.mark.parametrize("value", [1999, 10001, 0, 2**64 - 1])
def test_a_prover_that_skips_the_range_check_does_not_verify(value: int) -> None:
    """The core prover run on an out-of-range value (bits of a negative or too-wide number)."""
    blinding = 12345
    commitment = commit_with(value, blinding)
    proof = prove(
        commitment=commitment, value=value, blinding=blinding, lo=2000, hi=10000, context=CONTEXT
    )
    assert len(proof) == proof_size(16)
    assert not verify_range(commitment, 2000, 10000, CONTEXT, proof)


def test_proof_is_bound_to_context_range_and_commitment() -> None:
    commitment, proof = soc_proof()
    assert verify_range(commitment, 2000, 10000, CONTEXT, proof)
    assert not verify_range(commitment, 2000, 10000, CONTEXT + b"\x00", proof)
    assert not verify_range(commitment, 2000, 10000, b"gateway=gw-1;trade=43;epoch=7", proof)
    assert not verify_range(commitment, 2001, 10000, CONTEXT, proof)
    assert not verify_range(commitment, 2000, 9999, CONTEXT, proof)
    assert not verify_range(commitment, 1000, 10000, CONTEXT, proof)
    same_value, _ = commit(6400)
    assert not verify_range(same_value, 2000, 10000, CONTEXT, proof)


def test_every_single_bit_flip_fails() -> None:
    commitment, proof = soc_proof()
    accepted = []
    for i in range(len(proof) * 8):
        flipped = bytearray(proof)
        flipped[i // 8] ^= 1 << (i % 8)
        if verify_range(commitment, 2000, 10000, CONTEXT, bytes(flipped)):
            accepted.append(i)
    assert accepted == []


def test_a_bit_flip_in_the_commitment_fails() -> None:
    commitment, proof = soc_proof()
    for i in range(len(commitment) * 8):
        flipped = bytearray(commitment)
        flipped[i // 8] ^= 1 << (i % 8)
        assert not verify_range(bytes(flipped), 2000, 10000, CONTEXT, proof)


@pytest.mark.parametrize("cut", [1, 32, 33, 623])
def test_truncation_fails(cut: int) -> None:
    commitment, proof = soc_proof()
    assert not verify_range(commitment, 2000, 10000, CONTEXT, proof[:-cut])
    assert not verify_range(commitment, 2000, 10000, CONTEXT, proof[cut:])


@pytest.mark.parametrize("pad", [b"\x00", b"\x01", b"\x00" * 32, b"\x00" * 33])
def test_padding_fails(pad: bytes) -> None:
    commitment, proof = soc_proof()
    assert not verify_range(commitment, 2000, 10000, CONTEXT, proof + pad)
    assert not verify_range(commitment, 2000, 10000, CONTEXT, pad + proof)


@pytest.mark.parametrize(("offset", "byte"), [(0, 0), (0, 2), (0, 255), (1, 8), (1, 32), (1, 0)])
def test_unknown_version_or_wrong_bit_size_fails(offset: int, byte: int) -> None:
    commitment, proof = soc_proof()
    changed = bytearray(proof)
    changed[offset] = byte
    assert not verify_range(commitment, 2000, 10000, CONTEXT, bytes(changed))


# Offsets in the n = 16 encoding: header 2, A S T1 T2 at 2/35/68/101, t_hat tau_x mu at 134/166/198,
# L_1 at 230, ..., a at 560, b at 592.
@pytest.mark.parametrize("offset", [134, 166, 198, 560, 592])
@pytest.mark.parametrize("scalar", [ORDER, ORDER + 1, 2**256 - 1])
def test_non_canonical_scalars_fail(offset: int, scalar: int) -> None:
    """32-byte integers >= q (q itself is 0 mod q, q + 1 is 1): only strict parsing refuses them."""
    commitment, proof = soc_proof()
    changed = proof[:offset] + scalar.to_bytes(32, "big") + proof[offset + 32 :]
    assert not verify_range(commitment, 2000, 10000, CONTEXT, changed)


@pytest.mark.parametrize("offset", [2, 35, 68, 101, 230, 263])
@pytest.mark.parametrize(
    "bad_point",
    [
        b"\x02" + FIELD_P.to_bytes(32, "big"),  # x = p: non-canonical
        b"\x03" + (FIELD_P + 1).to_bytes(32, "big"),  # x = p + 1 (would be x = 1 mod p)
        b"\x00" * 33,  # not an encoding (the identity has none)
        b"\x04" + b"\x00" * 32,  # uncompressed prefix
    ],
)
def test_invalid_points_fail(offset: int, bad_point: bytes) -> None:
    commitment, proof = soc_proof()
    changed = proof[:offset] + bad_point + proof[offset + 33 :]
    assert not verify_range(commitment, 2000, 10000, CONTEXT, changed)


@pytest.mark.parametrize(
    "args",
    [
        (None, 0, 10, b"", b""),
        (b"\x02" * 33, "0", 10, b"", b"\x01\x10"),
        (b"\x02" * 33, 0, 10, "context", b"\x01\x10"),
        (b"\x02" * 33, 0, 10, b"", None),
        (b"\x02" * 33, 0, 10, b"", 12345),
        (12, 0, 10, b"", b"\x01\x10" + b"\x00" * 622),
    ],
)
def test_verify_never_raises(args: tuple[object, ...]) -> None:
    assert verify_range(*args) is False  # type: ignore[arg-type]


def _batch(count: int) -> list[tuple[bytes, int, int, bytes, bytes]]:
    items = []
    for i in range(count):
        commitment, opening = commit(2000 + 1000 * i)
        context = CONTEXT + bytes([i])
        items.append((commitment, 2000, 10000, context, prove_range(opening, 2000, 10000, context)))
    return items


def test_batch_of_honest_proofs_verifies() -> None:
    rng = random.Random(4)
    assert verify_batch(_batch(4))
    assert verify_batch(_batch(3), randbelow=rng.randrange)
    assert verify_batch([])


def test_batch_with_one_bad_proof_fails() -> None:
    items = _batch(4)
    commitment, lo, hi, context, proof = items[2]
    for bad in [
        (commitment, lo, hi, context + b"x", proof),
        (commitment, lo + 1, hi, context, proof),
        (items[1][0], lo, hi, context, proof),
        (commitment, lo, hi, context, proof[:-1]),
        (commitment, lo, hi, context, items[1][4]),
    ]:
        assert not verify_batch([*items[:2], bad, items[3]])


def test_batch_of_proofs_with_different_bit_sizes() -> None:
    items = _batch(2)
    commitment, opening = commit(300)
    items.append((commitment, 0, 1000, b"", prove_range(opening, 0, 1000, b"")))
    commitment, opening = commit(17)
    items.append((commitment, 10, 20, b"", prove_range(opening, 10, 20, b"")))
    assert verify_batch(items)
    items[-1] = (commitment, 10, 20, b"other", items[-1][4])
    assert not verify_batch(items)


@pytest.mark.parametrize("item", [(), (b"", 0, 1, b""), "not a tuple", None])
def test_batch_with_malformed_item_fails(item: object) -> None:
    assert verify_batch([*_batch(1), item]) is False  # type: ignore[list-item]


def test_at_least_covers_reserved_energy() -> None:
    commitment, opening = commit(6400)  # SoC 64.00 %
    # 10 % already locked by earlier trades; this sale needs 20 % reserve + 30 % for the sale.
    proof = prove_at_least(opening, threshold=5000, reserved=1000, context=CONTEXT)
    assert verify_at_least(commitment, threshold=5000, reserved=1000, context=CONTEXT, proof=proof)
    assert not verify_at_least(
        commitment, threshold=5000, reserved=999, context=CONTEXT, proof=proof
    )
    assert not verify_at_least(
        commitment, threshold=5001, reserved=1000, context=CONTEXT, proof=proof
    )
    assert not verify_at_least(commitment, threshold=5000, reserved=1000, context=b"", proof=proof)
    other, _ = commit(6400)
    assert not verify_at_least(other, threshold=5000, reserved=1000, context=CONTEXT, proof=proof)


def test_at_least_refuses_when_the_reserve_is_not_covered() -> None:
    _, opening = commit(6400)
    with pytest.raises(ValueError, match="outside"):
        prove_at_least(opening, threshold=5000, reserved=1401, context=CONTEXT)
    with pytest.raises(ValueError):
        prove_at_least(opening, threshold=2000, reserved=9000, context=CONTEXT)


def test_at_least_at_the_exact_edge() -> None:
    commitment, opening = commit(6400)
    proof = prove_at_least(opening, threshold=5000, reserved=1400, context=CONTEXT)
    assert verify_at_least(commitment, threshold=5000, reserved=1400, context=CONTEXT, proof=proof)


def test_at_least_verify_never_raises() -> None:
    commitment, _ = commit(6400)
    for kwargs in [
        {"threshold": 5000, "reserved": -1},
        {"threshold": 9000, "reserved": 2000},
        {"threshold": "5000", "reserved": 0},
    ]:
        assert not verify_at_least(commitment, context=CONTEXT, proof=b"", **kwargs)  # type: ignore[arg-type]
    assert not verify_at_least(b"junk", threshold=1, reserved=0, context=CONTEXT, proof=b"")


def test_at_least_statements_verify_in_a_batch() -> None:
    items, commitments = [], []
    for soc, reserved in [(6400, 1000), (9000, 0), (2500, 500)]:
        commitment, opening = commit(soc)
        proof = prove_at_least(opening, threshold=2000, reserved=reserved, context=CONTEXT)
        statement = at_least_statement(
            commitment, threshold=2000, reserved=reserved, context=CONTEXT
        )
        items.append((*statement, proof))
        commitments.append(commitment)
    assert verify_batch(items)
    # The first seller's proof, presented as if nothing had been reserved: refused.
    understated = at_least_statement(commitments[0], threshold=2000, reserved=0, context=CONTEXT)
    assert not verify_batch([*items[1:], (*understated, items[0][4])])
