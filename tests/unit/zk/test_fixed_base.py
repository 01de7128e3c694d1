"""The two ways to multiply: libsecp256k1's tweak_mul per point, and fixed-base tables."""

from __future__ import annotations

import hashlib

import pytest
from coincurve import PublicKey

from edge.zk import _group, commit, precompute, prove_range, verify_batch, verify_range
from edge.zk._group import ORDER, encode_point, msm

CONTEXT = b"trade=7"


def fresh_point(label: bytes) -> PublicKey:
    return PublicKey.from_secret(hashlib.sha256(label).digest())


SCALARS = [1, 2, 255, 256, 257, 2**64 + 5, 2**128 - 1, 2**255, ORDER - 1, ORDER + 5, -3]


def test_table_products_equal_tweak_mul() -> None:
    point = fresh_point(b"table test")
    plain = [encode_point(msm([(s, point)])) for s in SCALARS]  # type: ignore[arg-type]
    _group.precompute([point])
    tabled = [encode_point(msm([(s, point)])) for s in SCALARS]  # type: ignore[arg-type]
    assert tabled == plain
    assert plain[0] == encode_point(point)
    assert plain[-1] == encode_point(point.multiply((ORDER - 3).to_bytes(32, "big")))


def test_mixed_sum_and_identity() -> None:
    p, q = fresh_point(b"p"), fresh_point(b"q")
    _group.precompute([p])
    assert _group.is_identity([(5, p), (-5, p)])
    assert _group.is_identity([(7, p), (3, q), (-7, p), (-3, q)])
    assert not _group.is_identity([(7, p), (3, q), (-7, p)])
    assert _group.is_identity([(0, p)])
    assert msm([]) is None
    expected = PublicKey.combine_keys([p.multiply((9).to_bytes(32, "big")), q])
    assert msm([(9, p), (1, q)]).format() == expected.format()  # type: ignore[union-attr]


@pytest.fixture
def no_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the plain path (one tweak_mul per point), whatever other tests precomputed."""
    monkeypatch.setattr(_group, "_TABLES", {})


def _proofs(count: int) -> list[tuple[bytes, int, int, bytes, bytes]]:
    out = []
    for i in range(count):
        commitment, opening = commit(3000 + i)
        out.append((commitment, 2000, 10000, CONTEXT, prove_range(opening, 2000, 10000, CONTEXT)))
    return out


def test_plain_path_verifies_and_refuses(no_tables: None) -> None:
    items = _proofs(2)
    assert _group.precomputed() == 0
    commitment, lo, hi, context, proof = items[0]
    assert verify_range(commitment, lo, hi, context, proof)
    assert not verify_range(commitment, lo, hi, context + b"x", proof)
    assert verify_batch(items)
    assert not verify_batch([items[0], (items[1][0], lo, hi, b"", items[1][4])])


def test_precompute_rejects_unknown_bit_sizes() -> None:
    with pytest.raises(ValueError, match="bits"):
        precompute(12)
