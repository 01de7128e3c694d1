"""The prime-order group: secp256k1 through coincurve (libsecp256k1), and the generators.

Every point operation is libsecp256k1's: ``PublicKey.multiply`` (``secp256k1_ec_pubkey_tweak_mul``),
``PublicKey.combine_keys`` (``secp256k1_ec_pubkey_combine``), ``PublicKey.from_secret``
(``secp256k1_ec_pubkey_create``) and ``PublicKey(bytes)`` (``secp256k1_ec_pubkey_parse``, which
refuses x >= p and points off the curve). Only scalar arithmetic modulo the group order is done
here, with Python integers.

Generators (docs/zk.md, "Generators"): ``G`` is the standard secp256k1 base point; ``H`` and the
vector generators ``G_i``, ``H_i`` come from :func:`hash_to_curve` under :data:`DOMAIN_TAG`, so
nobody knows a discrete log between any two of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

from coincurve import PublicKey

__all__ = [
    "DOMAIN_TAG",
    "MAX_VECTOR",
    "ORDER",
    "G",
    "H",
    "Point",
    "decode_point",
    "encode_point",
    "hash_to_curve",
    "is_identity",
    "msm",
    "neg_vector_h",
    "vector_g",
    "vector_h",
]

Point = PublicKey

#: The order q of secp256k1's group: scalars live in [0, q).
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

#: The published domain tag every derived generator hangs from (docs/zk.md, "Generators").
DOMAIN_TAG = b"neighbourgrid/zk/v1/secp256k1/sha256-try-and-increment"

#: Enough vector generators for the largest proof: n = 64 bits times m = 2 values.
MAX_VECTOR = 128

_SECP256K1_G = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")


def hash_to_curve(label: bytes) -> Point:
    """Map ``label`` to a point with unknown discrete log: try-and-increment on SHA-256.

    For counter = 0, 1, 2, ...: x = SHA-256(DOMAIN_TAG || u32be(len(label)) || label ||
    u32be(counter)); the first x for which ``0x02 || x`` parses as a compressed secp256k1 point
    (x < p and x^3 + 7 is a square mod p; the root with even y) is the answer. About half the
    counters succeed, so the loop ends after two tries on average. Not constant-time, which is
    fine: the inputs are public labels.
    """
    prefix = DOMAIN_TAG + len(label).to_bytes(4, "big") + label
    for counter in range(1 << 32):
        x = hashlib.sha256(prefix + counter.to_bytes(4, "big")).digest()
        try:
            return PublicKey(b"\x02" + x)
        except ValueError:
            continue
    raise AssertionError("unreachable: 2^32 failed tries")  # pragma: no cover


#: The standard secp256k1 base point: the value generator of every commitment.
G: Point = PublicKey(_SECP256K1_G)

#: The blinding generator of every commitment: hash_to_curve(b"pedersen/H").
H: Point = hash_to_curve(b"pedersen/H")


@lru_cache(maxsize=1)
def _vectors() -> tuple[tuple[Point, ...], tuple[Point, ...], tuple[Point, ...]]:
    gs = tuple(hash_to_curve(b"bulletproofs/G/" + i.to_bytes(4, "big")) for i in range(MAX_VECTOR))
    hs = tuple(hash_to_curve(b"bulletproofs/H/" + i.to_bytes(4, "big")) for i in range(MAX_VECTOR))
    neg_hs = tuple(PublicKey(bytes([p.format()[0] ^ 1]) + p.format()[1:]) for p in hs)
    return gs, hs, neg_hs


def vector_g(count: int) -> tuple[Point, ...]:
    """The first ``count`` vector generators G_0..G_{count-1}."""
    return _vectors()[0][:count]


def vector_h(count: int) -> tuple[Point, ...]:
    """The first ``count`` vector generators H_0..H_{count-1}."""
    return _vectors()[1][:count]


def neg_vector_h(count: int) -> tuple[Point, ...]:
    """-H_0..-H_{count-1} (the prover's A uses them for the zero bits)."""
    return _vectors()[2][:count]


def encode_point(point: Point) -> bytes:
    """The 33-byte SEC1 compressed encoding (0x02/0x03 || x, big-endian)."""
    return bytes(point.format(compressed=True))


def decode_point(data: bytes) -> Point | None:
    """Parse a 33-byte compressed point strictly; None if it is not one.

    Refused: any length but 33, a first byte other than 0x02/0x03 (so no uncompressed or hybrid
    forms), x >= p, x not on the curve. The identity has no 33-byte encoding, so it is refused too.
    """
    if len(data) != 33 or data[0] not in (2, 3):
        return None
    try:
        return PublicKey(bytes(data))
    except ValueError:
        return None


def _scalar_bytes(scalar: int) -> bytes:
    return (scalar % ORDER).to_bytes(32, "big")


def msm(terms: Iterable[tuple[int, Point]]) -> Point | None:
    """Sum of scalar * point over ``terms``; None for the identity.

    Zero scalars are skipped (libsecp256k1 refuses a zero tweak, and 0 * P adds nothing).
    """
    products = [point.multiply(_scalar_bytes(s)) for s, point in terms if s % ORDER]
    if not products:
        return None
    try:
        return PublicKey.combine_keys(products)
    except ValueError:  # the sum is the point at infinity
        return None


def is_identity(g_scalar: int, terms: Sequence[tuple[int, Point]]) -> bool:
    """Whether g_scalar * G + sum(terms) is the identity (the verifier's one combined check).

    The G term goes through libsecp256k1's fixed-base multiplication: the other terms are summed
    and compared with (-g_scalar) * G.
    """
    rest = msm(terms)
    target = (-g_scalar) % ORDER
    if target == 0:
        return rest is None
    if rest is None:
        return False
    return bool(rest.format() == PublicKey.from_secret(target.to_bytes(32, "big")).format())
