"""Pedersen commitments C = v*G + r*H on secp256k1, and the shift C - d*G the gateway needs.

G is the standard secp256k1 base point; H = hash_to_curve(b"pedersen/H") under the published
domain tag (docs/zk.md, "Generators"), so nobody knows log_G(H) and C binds v computationally
while r, drawn uniformly from [1, q), hides it perfectly. Encoding: 33-byte SEC1 compressed point.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from edge.zk._group import ORDER, G, H, decode_point, encode_point, msm

__all__ = ["MAX_VALUE", "Opening", "commit", "commit_with", "shift_commitment", "shift_opening"]

#: Committed values are integers in [0, MAX_VALUE] (u64: Wh, basis points, ticks).
MAX_VALUE = (1 << 64) - 1


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Opening:
    """What opens a commitment: the value and the blinding scalar r in [1, q).

    Secret: keep it with the prover (the gateway), never send it. ``value`` may be negative after
    :func:`shift_opening` (a reservation larger than the value); such an opening proves nothing.
    The blinding is left out of ``repr``.
    """

    value: int
    blinding: int = field(repr=False)


def commit_with(value: int, blinding: int) -> bytes:
    """The 33-byte commitment value*G + blinding*H for given integers (value may be negative).

    ValueError if the result is the identity, which has no encoding (only when
    value = blinding = 0 mod q, or by solving a discrete log).
    """
    point = msm([(value, G), (blinding, H)])
    if point is None:
        raise ValueError("the commitment is the identity point")
    return encode_point(point)


def commit(value: int, *, blinding: int | None = None) -> tuple[bytes, Opening]:
    """Commit to ``value`` (an int in [0, 2^64)): returns (33-byte commitment, opening).

    The blinding is drawn with ``secrets.randbelow`` from [1, q) unless the caller passes one
    (tests, known-answer vectors); a passed blinding must be an int in [1, q).
    Raises TypeError for a non-int and ValueError for a value or blinding out of range.
    """
    _check_int("value", value, 0, MAX_VALUE)
    if blinding is None:
        blinding = secrets.randbelow(ORDER - 1) + 1
    _check_int("blinding", blinding, 1, ORDER - 1)
    return commit_with(value, blinding), Opening(value=value, blinding=blinding)


def shift_commitment(commitment: bytes, delta: int) -> bytes:
    """C - delta*G: a commitment to (v - delta) with the same blinding. ``delta`` is public.

    The gateway uses it with ``delta = reserved`` (basis points of SoC already locked) so a trade's
    proof covers SoC - reserved. Raises ValueError for a malformed commitment, TypeError or
    ValueError for a delta that is not an int in [0, 2^64).
    """
    _check_int("delta", delta, 0, MAX_VALUE)
    point = decode_point(bytes(commitment))
    if point is None:
        raise ValueError("not a 33-byte compressed secp256k1 point")
    shifted = msm([(1, point), (-delta, G)])
    if shifted is None:
        raise ValueError("the shifted commitment is the identity point")
    return encode_point(shifted)


def shift_opening(opening: Opening, delta: int) -> Opening:
    """The opening of :func:`shift_commitment` (commitment, delta): value - delta, same blinding."""
    _check_int("delta", delta, 0, MAX_VALUE)
    return Opening(value=opening.value - delta, blinding=opening.blinding)
