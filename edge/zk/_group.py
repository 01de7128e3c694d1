"""The prime-order group: secp256k1 through coincurve (libsecp256k1), and the generators.

Every point operation is libsecp256k1's, reached through coincurve: ``PublicKey(bytes)``
(``secp256k1_ec_pubkey_parse``, which refuses x >= p and points off the curve) and, for speed,
coincurve's own cffi handle on the library (``coincurve._libsecp256k1``; coincurve >= 20, < 22
as pinned): ``secp256k1_ec_pubkey_tweak_mul`` (constant-time scalar multiplication) and
``secp256k1_ec_pubkey_combine`` (adds many points in one call). Only scalar arithmetic modulo the
group order is done here, with Python integers; there is no hand-written field arithmetic.

Generators (docs/zk.md, "Generators"): ``G`` is the standard secp256k1 base point; ``H`` and the
vector generators ``G_i``, ``H_i`` come from :func:`hash_to_curve` under :data:`DOMAIN_TAG`, so
nobody knows a discrete log between any two of them.

Multi-scalar sums (:func:`msm`, :func:`is_identity`) multiply each point by its scalar (or look
the product up in a fixed-base table built by :func:`precompute`) and add all products with one
``secp256k1_ec_pubkey_combine``. Not constant-time as a whole: the Python scalar arithmetic and
the table look-ups depend on the scalars, so run the prover where local timing attackers are not
a concern (the gateway already holds the SoC in the clear).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from coincurve import PublicKey
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

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
    "precompute",
    "precomputed",
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


class _FixedBase:
    """A fixed-base table for one point P: entry (k, d) = d * 256^k * P, k < 32, 1 <= d < 256.

    One libsecp256k1 ``secp256k1_pubkey`` (64 opaque bytes, valid only inside this process) per
    entry in one contiguous cffi array: 32 * 256 * 64 bytes = 512 KiB per point, built with 8,160
    calls of ``secp256k1_ec_pubkey_combine``. s * P is then the sum of the entries (k, byte k of s),
    at most 32 additions, which :func:`_sum` hands to libsecp256k1 together with every other term.
    """

    __slots__ = ("_array", "address")

    def __init__(self, point: Point) -> None:
        entries = ffi.new("secp256k1_pubkey[]", _WINDOWS * 256)
        pair = ffi.new("secp256k1_pubkey *[2]")
        base = ffi.new("secp256k1_pubkey *", point.public_key[0])
        for k in range(_WINDOWS):
            row = k * 256
            entries[row + 1] = base[0]
            pair[1] = base
            for d in range(2, 256):
                pair[0] = entries + row + d - 1
                if not lib.secp256k1_ec_pubkey_combine(_CTX, entries + row + d, pair, 2):
                    raise ArithmeticError("fixed-base table hit the identity")  # pragma: no cover
            pair[0] = pair[1] = entries + row + 128  # next base: 256 * base = 128 * base * 2
            base = ffi.new("secp256k1_pubkey *")
            if not lib.secp256k1_ec_pubkey_combine(_CTX, base, pair, 2):
                raise ArithmeticError("fixed-base table hit the identity")  # pragma: no cover
        self._array = entries
        self.address = int(ffi.cast("uintptr_t", entries))


_CTX = GLOBAL_CONTEXT.ctx
_ONE = (1).to_bytes(32, "big")
_WINDOWS = 32
_ENTRY = ffi.sizeof("secp256k1_pubkey")
_ROW = 256 * _ENTRY
_POINTER_CODE = next(c for c in "QLI" if array(c).itemsize == ffi.sizeof("void *"))
# id(point) -> (point, table); the point is kept so its id is never reused while the table lives.
_TABLES: dict[int, tuple[Point, _FixedBase]] = {}


def precompute(points: Iterable[Point]) -> None:
    """Build fixed-base tables for ``points`` (idempotent; 512 KiB and ~8,000 additions each).

    A cache for long-running verifiers: results do not change, only their speed.
    """
    for point in points:
        if id(point) not in _TABLES:
            _TABLES[id(point)] = (point, _FixedBase(point))


def precomputed() -> int:
    """How many points have a fixed-base table."""
    return len(_TABLES)


def _sum(terms: Iterable[tuple[int, Point]]) -> Any:
    """sum(scalar * point) as a ``secp256k1_pubkey *`` cdata, or None for the identity.

    Points with a table contribute their entries; every other point one
    ``secp256k1_ec_pubkey_tweak_mul`` (zero scalars are skipped). Then one
    ``secp256k1_ec_pubkey_combine`` adds everything, in C.
    """
    addresses: list[int] = []
    variable: list[tuple[bytes, Point]] = []
    for scalar, point in terms:
        scalar %= ORDER
        if not scalar:
            continue
        entry = _TABLES.get(id(point))
        if entry is None:
            variable.append((scalar.to_bytes(32, "big"), point))
        else:
            start = entry[1].address
            digits = scalar.to_bytes(32, "little")
            addresses += [start + k * _ROW + d * _ENTRY for k, d in enumerate(digits) if d]
    products = ffi.new("secp256k1_pubkey[]", len(variable) or 1)
    for i, (scalar_bytes, point) in enumerate(variable):
        products[i] = point.public_key[0]
        if scalar_bytes != _ONE:
            lib.secp256k1_ec_pubkey_tweak_mul(_CTX, products + i, scalar_bytes)
    first = int(ffi.cast("uintptr_t", products))
    addresses += range(first, first + len(variable) * _ENTRY, _ENTRY)
    if not addresses:
        return None
    pointers = ffi.from_buffer("secp256k1_pubkey *[]", array(_POINTER_CODE, addresses))
    out = ffi.new("secp256k1_pubkey *")
    if not lib.secp256k1_ec_pubkey_combine(_CTX, out, pointers, len(addresses)):
        return None  # the sum is the point at infinity
    return out


def msm(terms: Iterable[tuple[int, Point]]) -> Point | None:
    """Sum of scalar * point over ``terms``; None for the identity."""
    out = _sum(terms)
    return None if out is None else PublicKey(out)


def is_identity(terms: Iterable[tuple[int, Point]]) -> bool:
    """Whether sum(scalar * point) is the identity: the verifier's one combined check."""
    return _sum(terms) is None
