"""Canonical JSON: the one byte encoding of everything a batch signs or hashes.

Rules (documented in docs/gateway.md, "Batch format"):

- UTF-8 JSON with object keys sorted by code point, no insignificant whitespace
  (separators ``","`` and ``":"``) and every non-ASCII character escaped (``\\uXXXX``), as
  :func:`json.dumps` with ``sort_keys=True, separators=(",", ":"), ensure_ascii=True`` writes it.
- Values are ``null``, ``true``/``false``, integers, strings, arrays and objects with string keys.
  Floats, NaN and infinities are refused: energy, money and time are integers.
- Byte strings are carried as lowercase hexadecimal strings; the schema names which fields are.

Decoding is strict: bytes that are valid JSON but not in canonical form are refused, so a value
has exactly one encoding and its hash is stable across machines.
"""

from __future__ import annotations

import json
from typing import Any

from edge.errors import NgridError

__all__ = ["CanonicalError", "canonical_bytes", "from_hex", "parse_canonical", "to_hex"]

JsonValue = Any  # None | bool | int | str | list[JsonValue] | dict[str, JsonValue]


class CanonicalError(NgridError, ValueError):
    """A value cannot be encoded canonically, or bytes are not canonical JSON."""


def _check(value: object, path: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object key {key!r} is not a string")
            _check(item, f"{path}.{key}")
        return
    raise CanonicalError(f"{path}: {type(value).__name__} is not allowed in canonical JSON")


def _plain(value: object) -> bool:
    """True if ``value`` is made only of None, bool, int, str and lists, tuples and dicts with
    string keys, by exact type: the common case, walked without building paths (a batch of 100
    trades holds ~5,000 values). Anything else, subclasses included, goes to :func:`_check`,
    which decides and names the path."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is int or kind is str or kind is bool or item is None:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return False
    return True


def canonical_bytes(value: JsonValue) -> bytes:
    """Encode ``value`` (JSON-shaped, integers only) as canonical JSON bytes.

    Raises :class:`CanonicalError` naming the path of the first value that is not allowed
    (a float, bytes, a non-string key ...).
    """
    if not _plain(value):
        _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def _no_float(text: str) -> int:
    raise CanonicalError(f"non-integer number {text!r}")


def _no_constant(text: str) -> int:
    raise CanonicalError(f"{text} is not allowed")


def parse_canonical(data: bytes) -> JsonValue:
    """Decode canonical JSON ``data``; raise :class:`CanonicalError` unless it is canonical."""
    try:
        value = json.loads(data.decode("ascii"), parse_float=_no_float, parse_constant=_no_constant)
    except UnicodeDecodeError as err:
        raise CanonicalError("canonical JSON is ASCII only") from err
    except json.JSONDecodeError as err:
        raise CanonicalError(f"not JSON: {err}") from err
    if canonical_bytes(value) != data:
        raise CanonicalError("JSON is not in canonical form (key order, spacing or escapes)")
    return value


def to_hex(data: bytes) -> str:
    """Bytes as the lowercase hexadecimal string canonical JSON carries."""
    return data.hex()


def from_hex(text: object, *, field: str) -> bytes:
    """Parse a lowercase hex string from canonical JSON; raise :class:`CanonicalError` if bad."""
    if not isinstance(text, str) or len(text) % 2 or text != text.lower():
        raise CanonicalError(f"{field}: expected a lowercase hex string")
    try:
        return bytes.fromhex(text)
    except ValueError as err:
        raise CanonicalError(f"{field}: expected a lowercase hex string") from err
