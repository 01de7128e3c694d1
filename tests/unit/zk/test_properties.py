"""Property tests: completeness and refusal over random ranges, and the prover's randomness."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.zk import commit, prove_range, verify_range

U64 = 2**64 - 1


@st.composite
def statements(draw: st.DrawFn) -> tuple[int, int, int]:
    lo = draw(st.integers(0, U64))
    hi = draw(
        st.integers(lo, min(U64, lo + draw(st.sampled_from([0, 1, 255, 10_000, 2**40, U64]))))
    )
    value = draw(st.integers(max(0, lo - 2), min(U64, hi + 2)))
    return lo, hi, value


@settings(max_examples=15, deadline=None)
@given(statements(), st.binary(max_size=40))
def test_in_range_verifies_out_of_range_is_refused(
    statement: tuple[int, int, int], context: bytes
) -> None:
    lo, hi, value = statement
    commitment, opening = commit(value)
    if lo <= value <= hi:
        proof = prove_range(opening, lo, hi, context)
        assert verify_range(commitment, lo, hi, context, proof)
        assert not verify_range(commitment, lo, hi, context + b"\x00", proof)
    else:
        with pytest.raises(ValueError, match="outside"):
            prove_range(opening, lo, hi, context)


def test_proofs_are_randomised_and_injected_randomness_is_used() -> None:
    _, opening = commit(6400, blinding=777)
    first = prove_range(opening, 2000, 10000, b"ctx")
    second = prove_range(opening, 2000, 10000, b"ctx")
    assert first != second
    seeded = [
        prove_range(opening, 2000, 10000, b"ctx", randbelow=random.Random(9).randrange)
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
