"""The Fiat-Shamir transcript: a SHA-512 hash chain with length-prefixed, labelled messages.

Layout (docs/zk.md, "Transcript"): the state is one running SHA-512. ``append(label, data)``
absorbs ``u8(len(label)) || label || u32be(len(data)) || data``. ``challenge(label)`` absorbs
``u8(len(label)) || label || u32be(0)`` and returns the 64-byte digest of a copy of the state as a
big-endian integer mod q; a zero result (probability 2^-256) absorbs the label again and retries.
Every message is length-prefixed, so no two sequences of appends collide.

This plays the part of dalek's Merlin transcript (STROBE over Keccak): the same message labels in
the same order, over a hash we have in the standard library.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from edge.zk._group import ORDER, Point, encode_point

__all__ = ["Transcript"]


@lru_cache(maxsize=256)
def _prefix(label: bytes, length: int) -> bytes:
    return len(label).to_bytes(1, "big") + label + length.to_bytes(4, "big")


class Transcript:
    """A running Fiat-Shamir transcript; see the module docstring for the byte layout."""

    __slots__ = ("_state",)

    def __init__(self, protocol: bytes) -> None:
        self._state = hashlib.sha512()
        self.append(b"dom-sep", protocol)

    def append(self, label: bytes, data: bytes) -> None:
        """Absorb one labelled message."""
        self._state.update(_prefix(label, len(data)) + data)

    def append_u64(self, label: bytes, value: int) -> None:
        """Absorb an integer in [0, 2^64) as 8 bytes big-endian."""
        self.append(label, value.to_bytes(8, "big"))

    def append_point(self, label: bytes, point: Point) -> None:
        """Absorb a point as its 33-byte compressed encoding."""
        self.append(label, encode_point(point))

    def append_scalar(self, label: bytes, scalar: int) -> None:
        """Absorb a scalar in [0, q) as 32 bytes big-endian."""
        self.append(label, scalar.to_bytes(32, "big"))

    def challenge(self, label: bytes) -> int:
        """A non-zero scalar derived from everything absorbed so far."""
        while True:
            self.append(label, b"")
            value = int.from_bytes(self._state.copy().digest(), "big") % ORDER
            if value:
                return value
