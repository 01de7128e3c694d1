"""Canonical JSON: one encoding per value, strict decoding."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.batch.canonical import CanonicalError, canonical_bytes, from_hex, parse_canonical

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def test_sorted_keys_no_spaces_ascii() -> None:
    assert canonical_bytes({"b": 1, "a": [True, None, "é"]}) == b'{"a":[true,null,"\\u00e9"],"b":1}'


@given(json_values)
def test_round_trip(value: object) -> None:
    data = canonical_bytes(value)
    assert canonical_bytes(parse_canonical(data)) == data


@pytest.mark.parametrize("value", [1.5, {"a": float("nan")}, [b"raw"], {1: "x"}, {"a": {2.0}}])
def test_non_json_values_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError):
        canonical_bytes(value)


@pytest.mark.parametrize(
    "data",
    [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b"[NaN]", b'"\xc3\xa9"', b"{", b'{"a":1e3}'],
)
def test_non_canonical_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(CanonicalError):
        parse_canonical(data)


def test_hex_fields() -> None:
    assert from_hex("00ff", field="x") == b"\x00\xff"
    for bad in ("00FF", "0", "zz", 12):
        with pytest.raises(CanonicalError, match="x"):
            from_hex(bad, field="x")


def test_refusal_names_the_path_of_the_first_bad_value() -> None:
    with pytest.raises(CanonicalError, match=r"\$\.trades\[1\]\.wh: float"):
        canonical_bytes({"trades": [{"wh": 1}, {"wh": 1.5}]})


def test_subclasses_of_allowed_types_encode_as_their_base() -> None:
    # Values of exact JSON types take the fast walk; a subclass takes the checked one and is
    # encoded as its base type, as before that walk existed.
    class Wh(int):
        pass

    assert canonical_bytes(OrderedDict(b=Wh(2), a=(1,))) == b'{"a":[1],"b":2}'
