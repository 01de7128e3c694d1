"""Pedersen commitments: encoding, fresh blinding, homomorphic shift, input checks."""

from __future__ import annotations

import pytest

from edge.zk import MAX_VALUE, Opening, commit, shift_commitment, shift_opening
from edge.zk._group import ORDER


def test_commitment_is_a_compressed_point() -> None:
    commitment, opening = commit(6400)
    assert len(commitment) == 33
    assert commitment[0] in (2, 3)
    assert opening.value == 6400
    assert 1 <= opening.blinding < ORDER


def test_fresh_blinding_hides_equal_values() -> None:
    first, a = commit(5000)
    second, b = commit(5000)
    assert first != second
    assert a.blinding != b.blinding


def test_same_value_and_blinding_give_the_same_commitment() -> None:
    assert commit(42, blinding=99)[0] == commit(42, blinding=99)[0]
    assert commit(42, blinding=99)[0] != commit(43, blinding=99)[0]


def test_shift_subtracts_a_public_amount() -> None:
    commitment, opening = commit(6400, blinding=123456789)
    shifted = shift_commitment(commitment, 1500)
    assert shifted == commit(4900, blinding=123456789)[0]
    assert shift_opening(opening, 1500) == Opening(value=4900, blinding=123456789)


def test_repr_hides_the_blinding() -> None:
    _, opening = commit(7, blinding=31337)
    assert "31337" not in repr(opening)


@pytest.mark.parametrize("value", [-1, MAX_VALUE + 1])
def test_value_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="value"):
        commit(value)


@pytest.mark.parametrize("value", [1.0, True, "5", None])
def test_value_not_an_int(value: object) -> None:
    with pytest.raises(TypeError, match="value"):
        commit(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("blinding", [0, ORDER])
def test_blinding_out_of_range(blinding: int) -> None:
    with pytest.raises(ValueError, match="blinding"):
        commit(5, blinding=blinding)


FIELD_P = 2**256 - 2**32 - 977


@pytest.mark.parametrize(
    "bad", [b"", b"\x02" + FIELD_P.to_bytes(32, "big"), b"\x04" + b"\x01" * 64, b"\x05" * 33]
)
def test_shift_refuses_malformed_commitments(bad: bytes) -> None:
    with pytest.raises(ValueError, match="point"):
        shift_commitment(bad, 1)


def test_shift_refuses_negative_delta() -> None:
    commitment, _ = commit(5)
    with pytest.raises(ValueError, match="delta"):
        shift_commitment(commitment, -1)
