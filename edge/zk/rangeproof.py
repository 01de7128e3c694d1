"""Bulletproofs range proofs for a Pedersen commitment: v in [lo, hi], exactly.

Source: Bunz, Bootle, Boneh, Poelstra, Wuille, Maxwell, "Bulletproofs: Short Proofs for
Confidential Transactions and More" (IEEE S&P 2018), sections 4.1-4.3 (aggregated range proof)
and 3 (inner-product argument), in the arrangement of the dalek-cryptography ``bulletproofs``
crate (``range_proof/mod.rs``, ``inner_product_proof.rs``): the same messages in the same order,
the same single-multiscalar verification equation and the same batch verification.

A two-sided range is an aggregated proof for m = 2 values: ``v - lo`` and ``hi - v``, each in
[0, 2^n), committed as ``V_0 = C - lo*G`` and ``V_1 = hi*G - C`` (the verifier derives both from
C). Since (v - lo) + (hi - v) = hi - lo < 2^64 < q, both being in [0, 2^n) means exactly
lo <= v <= hi. n is the smallest of 8, 16, 32, 64 with hi - lo < 2^n (16 for SoC in basis points,
0..10000).

Proof bytes (docs/zk.md, "Proof encoding"): ``version (1 byte) || n (1 byte) || A || S || T1 || T2
|| t_hat || tau_x || mu || L_1 || R_1 || ... || L_k || R_k || a || b`` with points 33-byte
compressed, scalars 32-byte big-endian < q, k = log2(2n). 624 bytes for n = 16.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.zk._group import (
    DOMAIN_TAG,
    ORDER,
    Point,
    decode_point,
    encode_point,
    msm,
    neg_vector_h,
    vector_g,
    vector_h,
)
from edge.zk._group import G as BASE_G
from edge.zk._group import H as BASE_H
from edge.zk._transcript import Transcript

__all__ = [
    "BIT_SIZES",
    "PROOF_VERSION",
    "Checks",
    "RandBelow",
    "bits_for_range",
    "proof_size",
    "prove",
    "verification_checks",
]

#: The version byte at the head of every proof this module writes.
PROOF_VERSION = 1

#: The bit sizes n a proof may have (each value is proved in [0, 2^n)).
BIT_SIZES = (8, 16, 32, 64)

#: Number of values aggregated in one proof: v - lo and hi - v.
AGGREGATION = 2

_PROTOCOL = b"neighbourgrid/zk/rangeproof"
_POINT = 33
_SCALAR = 32

#: A source of uniform integers in [0, bound): ``secrets.randbelow`` or a test's stand-in.
RandBelow = Callable[[int], int]


def bits_for_range(lo: object, hi: object) -> int:
    """The bit size n for the range [lo, hi]; ValueError if it is not a valid range.

    A valid range has integers (not bools) 0 <= lo <= hi < 2^64.
    """
    for name, bound in (("lo", lo), ("hi", hi)):
        if not isinstance(bound, int) or isinstance(bound, bool):
            raise ValueError(f"{name} must be an int, got {type(bound).__name__}")
    assert isinstance(lo, int) and isinstance(hi, int)
    if not 0 <= lo <= hi < 1 << 64:
        raise ValueError(f"need 0 <= lo <= hi < 2^64, got lo={lo} hi={hi}")
    width = hi - lo
    return next(n for n in BIT_SIZES if width < 1 << n)


def proof_size(n: int) -> int:
    """Length in bytes of a proof with bit size n (m = 2 values)."""
    rounds = (n * AGGREGATION).bit_length() - 1
    return 2 + (4 + 2 * rounds) * _POINT + 5 * _SCALAR


def _start(n: int, commitment: bytes, lo: int, hi: int, context: bytes) -> Transcript:
    """The transcript's opening: everything the proof is bound to, in the order of docs/zk.md."""
    transcript = Transcript(_PROTOCOL)
    transcript.append_u64(b"version", PROOF_VERSION)
    transcript.append(b"generators", DOMAIN_TAG)
    transcript.append_u64(b"n", n)
    transcript.append_u64(b"m", AGGREGATION)
    transcript.append(b"C", commitment)
    transcript.append_u64(b"lo", lo)
    transcript.append_u64(b"hi", hi)
    transcript.append(b"context", context)
    return transcript


def _inner(xs: Sequence[int], ys: Sequence[int]) -> int:
    return sum(x * y for x, y in zip(xs, ys, strict=True)) % ORDER


def _powers(base: int, count: int) -> list[int]:
    out = [1] * count
    for i in range(1, count):
        out[i] = out[i - 1] * base % ORDER
    return out


def _z_and_2(z: int, n: int, m: int) -> list[int]:
    """z^j * 2^i at index j*n + i (dalek's ``concat_z_and_2``)."""
    out: list[int] = []
    zj = 1
    for _ in range(m):
        out.extend(zj * (1 << i) % ORDER for i in range(n))
        zj = zj * z % ORDER
    return out


def _delta(n: int, m: int, y: int, z: int, sum_y: int | None = None) -> int:
    """delta(y, z) = (z - z^2) <1, y^nm> - sum_j z^(j+3) <1, 2^n>.

    ``sum_y`` = <1, y^nm> when the caller has it already.
    """
    if sum_y is None:
        sum_y = sum(_powers(y, n * m)) % ORDER
    sum_2 = (1 << n) - 1
    sum_z = sum(_powers(z, m)) % ORDER
    z2 = z * z % ORDER
    return ((z - z2) * sum_y - z2 * z % ORDER * sum_z * sum_2) % ORDER


def _point(terms: list[tuple[int, Point]]) -> Point:
    out = msm(terms)
    if out is None:  # pragma: no cover - probability 2^-256 with fresh randomness
        raise ArithmeticError("a proof point came out as the identity; prove again")
    return out


def prove(
    *,
    commitment: bytes,
    value: int,
    blinding: int,
    lo: int,
    hi: int,
    context: bytes,
    randbelow: RandBelow = secrets.randbelow,
) -> bytes:
    """Prove that ``commitment`` = value*G + blinding*H holds a value in [lo, hi].

    The caller (``edge.zk.prove_range``) has checked lo <= value <= hi and computed
    ``commitment`` from the opening. Returns the proof bytes (module docstring).
    """
    n = bits_for_range(lo, hi)
    m = AGGREGATION
    nm = n * m
    values = (value - lo, hi - value)
    gammas = (blinding % ORDER, -blinding % ORDER)
    gs, hs, neg_hs = vector_g(nm), vector_h(nm), neg_vector_h(nm)
    transcript = _start(n, commitment, lo, hi, context)

    def rand() -> int:
        return randbelow(ORDER - 1) + 1

    a_l = [(v >> i) & 1 for v in values for i in range(n)]
    alpha = rand()
    # a_R = a_L - 1 is 0 or -1: A is a plain sum of G_i (bit 1) and -H_i (bit 0), plus alpha*H.
    bit_points = [gs[i] if bit else neg_hs[i] for i, bit in enumerate(a_l)]
    big_a = _point([(1, p) for p in bit_points] + [(alpha, BASE_H)])
    s_l = [rand() for _ in range(nm)]
    s_r = [rand() for _ in range(nm)]
    rho = rand()
    big_s = _point([*zip(s_l, gs, strict=True), *zip(s_r, hs, strict=True), (rho, BASE_H)])
    transcript.append_point(b"A", big_a)
    transcript.append_point(b"S", big_s)
    y = transcript.challenge(b"y")
    z = transcript.challenge(b"z")

    y_pow = _powers(y, nm)
    z2 = z * z % ORDER
    zz_2 = [z2 * t % ORDER for t in _z_and_2(z, n, m)]
    l0 = [(bit - z) % ORDER for bit in a_l]
    r0 = [(y_pow[i] * (a_l[i] - 1 + z) + zz_2[i]) % ORDER for i in range(nm)]
    r1 = [y_pow[i] * s_r[i] % ORDER for i in range(nm)]
    t1 = (_inner(l0, r1) + _inner(s_l, r0)) % ORDER
    t2 = _inner(s_l, r1)
    tau1, tau2 = rand(), rand()
    big_t1 = _point([(t1, BASE_G), (tau1, BASE_H)])
    big_t2 = _point([(t2, BASE_G), (tau2, BASE_H)])
    transcript.append_point(b"T1", big_t1)
    transcript.append_point(b"T2", big_t2)
    x = transcript.challenge(b"x")

    z_pow = _powers(z, m)
    tau_x = (
        tau2 * x * x + tau1 * x + sum(z2 * zj * g for zj, g in zip(z_pow, gammas, strict=True))
    ) % ORDER
    mu = (alpha + rho * x) % ORDER
    l_vec = [(l0[i] + s_l[i] * x) % ORDER for i in range(nm)]
    r_vec = [(r0[i] + r1[i] * x) % ORDER for i in range(nm)]
    t_hat = _inner(l_vec, r_vec)
    transcript.append_scalar(b"t_hat", t_hat)
    transcript.append_scalar(b"tau_x", tau_x)
    transcript.append_scalar(b"mu", mu)
    w = transcript.challenge(b"w")
    q_point = _point([(w, BASE_G)])

    head = bytes([PROOF_VERSION, n]) + b"".join(
        encode_point(p) for p in (big_a, big_s, big_t1, big_t2)
    )
    scalars = b"".join(s.to_bytes(_SCALAR, "big") for s in (t_hat, tau_x, mu))
    ipa = _prove_inner_product(
        transcript, q_point, gs, hs, _powers(pow(y, -1, ORDER), nm), l_vec, r_vec
    )
    return head + scalars + ipa


def _prove_inner_product(
    transcript: Transcript,
    q_point: Point,
    gs: Sequence[Point],
    hs: Sequence[Point],
    h_factors: Sequence[int],
    a: list[int],
    b: list[int],
) -> bytes:
    """The inner-product argument for P = <a, G> + <b, H'> + <a, b> Q, H'_i = h_factors[i] * H_i.

    dalek's ``InnerProductProof::create``: each round sends L, R, takes challenge u and halves
    a, b, G, H. The first round applies the H factors as scalars instead of making H' points.
    """
    g_pts: list[Point] = list(gs)
    h_pts: list[Point] = list(hs)
    g_f = [1] * len(gs)
    h_f = list(h_factors)
    out = []
    size = len(a)
    while size > 1:
        half = size // 2
        a_lo, a_hi, b_lo, b_hi = a[:half], a[half:], b[:half], b[half:]
        c_l = _inner(a_lo, b_hi)
        c_r = _inner(a_hi, b_lo)
        big_l = _point(
            [(a_lo[i] * g_f[half + i], g_pts[half + i]) for i in range(half)]
            + [(b_hi[i] * h_f[i], h_pts[i]) for i in range(half)]
            + [(c_l, q_point)]
        )
        big_r = _point(
            [(a_hi[i] * g_f[i], g_pts[i]) for i in range(half)]
            + [(b_lo[i] * h_f[half + i], h_pts[half + i]) for i in range(half)]
            + [(c_r, q_point)]
        )
        transcript.append_point(b"L", big_l)
        transcript.append_point(b"R", big_r)
        out.append(encode_point(big_l) + encode_point(big_r))
        u = transcript.challenge(b"u")
        u_inv = pow(u, -1, ORDER)
        a = [(a_lo[i] * u + u_inv * a_hi[i]) % ORDER for i in range(half)]
        b = [(b_lo[i] * u_inv + u * b_hi[i]) % ORDER for i in range(half)]
        if half > 1:  # the last round's folded generators are never used
            g_pts = [
                _point([(u_inv * g_f[i], g_pts[i]), (u * g_f[half + i], g_pts[half + i])])
                for i in range(half)
            ]
            h_pts = [
                _point([(u * h_f[i], h_pts[i]), (u_inv * h_f[half + i], h_pts[half + i])])
                for i in range(half)
            ]
            g_f = [1] * half
            h_f = [1] * half
        size = half
    return b"".join(out) + a[0].to_bytes(_SCALAR, "big") + b[0].to_bytes(_SCALAR, "big")


@dataclass(frozen=True, slots=True)
class _Proof:
    n: int
    a_pt: Point
    s_pt: Point
    t1: Point
    t2: Point
    t_hat: int
    tau_x: int
    mu: int
    ls: tuple[Point, ...]
    rs: tuple[Point, ...]
    a: int
    b: int


def _parse(data: bytes, n: int) -> _Proof | None:
    """Strict parse for bit size n; None for any deviation from the encoding."""
    if len(data) != proof_size(n) or data[0] != PROOF_VERSION or data[1] != n:
        return None
    rounds = (n * AGGREGATION).bit_length() - 1
    pos = 2
    points = []
    for _ in range(4):
        pt = decode_point(data[pos : pos + _POINT])
        if pt is None:
            return None
        points.append(pt)
        pos += _POINT
    scalars = []
    for _ in range(3):
        s = int.from_bytes(data[pos : pos + _SCALAR], "big")
        if s >= ORDER:
            return None
        scalars.append(s)
        pos += _SCALAR
    ls, rs = [], []
    for _ in range(rounds):
        lp = decode_point(data[pos : pos + _POINT])
        rp = decode_point(data[pos + _POINT : pos + 2 * _POINT])
        if lp is None or rp is None:
            return None
        ls.append(lp)
        rs.append(rp)
        pos += 2 * _POINT
    a = int.from_bytes(data[pos : pos + _SCALAR], "big")
    b = int.from_bytes(data[pos + _SCALAR : pos + 2 * _SCALAR], "big")
    if a >= ORDER or b >= ORDER:
        return None
    big_a, big_s, t1, t2 = points
    t_hat, tau_x, mu = scalars
    return _Proof(n, big_a, big_s, t1, t2, t_hat, tau_x, mu, tuple(ls), tuple(rs), a, b)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checks:
    """One proof's verification equation, scaled by a weight, as scalars on named points.

    The proof is valid iff g*G + h*H + sum(g_vec[i]*G_i) + sum(h_vec[i]*H_i) + sum(s*P for s, P in
    terms) is the identity. Checks from several proofs add up (batch verification).
    """

    g: int
    h: int
    g_vec: list[int]
    h_vec: list[int]
    terms: list[tuple[int, Point]]


def verification_checks(
    *,
    commitment: bytes,
    lo: int,
    hi: int,
    context: bytes,
    proof: bytes,
    weight: int | None = None,
    combiner: int | None = None,
) -> Checks | None:
    """Parse and replay one proof; None if the inputs or the proof are malformed.

    ``combiner`` (dalek's ``c``) joins the t-check and the inner-product check into one equation;
    by default it is a challenge drawn from the transcript after the whole proof is absorbed (a
    deterministic single verification, which a prover cannot steer without breaking SHA-512);
    a batch passes a random one. ``weight`` (default 1) scales the whole equation for a batch.
    """
    try:
        n = bits_for_range(lo, hi)
    except ValueError:
        return None
    if not isinstance(commitment, bytes | bytearray) or not isinstance(context, bytes | bytearray):
        return None
    if not isinstance(proof, bytes | bytearray):
        return None
    c_point = decode_point(bytes(commitment))
    parsed = _parse(bytes(proof), n)
    if c_point is None or parsed is None:
        return None
    m = AGGREGATION
    nm = n * m
    data = bytes(proof)
    # The transcript takes the encodings as received (they are canonical: _parse checked them).
    transcript = _start(n, bytes(commitment), lo, hi, bytes(context))
    transcript.append(b"A", data[2:35])
    transcript.append(b"S", data[35:68])
    y = transcript.challenge(b"y")
    z = transcript.challenge(b"z")
    transcript.append(b"T1", data[68:101])
    transcript.append(b"T2", data[101:134])
    x = transcript.challenge(b"x")
    transcript.append(b"t_hat", data[134:166])
    transcript.append(b"tau_x", data[166:198])
    transcript.append(b"mu", data[198:230])
    w = transcript.challenge(b"w")
    us = []
    for j in range(len(parsed.ls)):
        pos = 230 + 2 * _POINT * j
        transcript.append(b"L", data[pos : pos + _POINT])
        transcript.append(b"R", data[pos + _POINT : pos + 2 * _POINT])
        us.append(transcript.challenge(b"u"))
    c = combiner if combiner is not None else transcript.challenge(b"combine")
    k = weight if weight is not None else 1

    # One modular inversion for y and every u (Montgomery's trick).
    y_inv, *u_inv = _batch_invert([y, *us])
    # dalek's InnerProductProof::verification_scalars
    u_sq = [u * u % ORDER for u in us]
    u_inv_sq = [ui * ui % ORDER for ui in u_inv]
    s = [1] * nm
    all_inv = 1
    for ui in u_inv:
        all_inv = all_inv * ui % ORDER
    s[0] = all_inv
    rounds = len(us)
    for i in range(1, nm):
        lg_i = i.bit_length() - 1
        s[i] = s[i - (1 << lg_i)] * u_sq[rounds - 1 - lg_i] % ORDER

    a, b = parsed.a, parsed.b
    z2 = z * z % ORDER
    y_inv_pow = _powers(y_inv, nm)
    # <1, y^nm> = y^(nm-1) <1, y^-nm>
    sum_y = pow(y, nm - 1, ORDER) * sum(y_inv_pow) % ORDER
    # g_i = k(-z - a s_i); h_i = k(z + y^-i (z^2 z^j 2^i - b s_(nm-1-i))), index i = j*n + (bit).
    kz, ka, kb, kz2 = k * z % ORDER, k * a % ORDER, k * b % ORDER, k * z2 % ORDER
    kz2_zj_2i = [kz2 * zj % ORDER << i for zj in _powers(z, m) for i in range(n)]
    g_vec = [(-kz - ka * si) % ORDER for si in s]
    h_vec = [
        (kz + yi * (t - kb * si)) % ORDER
        for yi, t, si in zip(y_inv_pow, kz2_zj_2i, reversed(s), strict=True)
    ]
    # V_0 = C - lo*G and V_1 = hi*G - C with weights c*z^2 and c*z^3.
    cz2 = c * z2 % ORDER
    delta = _delta(n, m, y, z, sum_y)
    g_scalar = w * (parsed.t_hat - a * b) + c * (delta - parsed.t_hat) + cz2 * (z * hi - lo)
    h_scalar = -parsed.mu - c * parsed.tau_x
    kc = k * c % ORDER
    terms: list[tuple[int, Point]] = [
        (k, parsed.a_pt),
        (k * x % ORDER, parsed.s_pt),
        (kc * x % ORDER, parsed.t1),
        (kc * x % ORDER * x % ORDER, parsed.t2),
        (k * cz2 % ORDER * (1 - z) % ORDER, c_point),
    ]
    terms += [(k * sq % ORDER, lp) for sq, lp in zip(u_sq, parsed.ls, strict=True)]
    terms += [(k * sq % ORDER, rp) for sq, rp in zip(u_inv_sq, parsed.rs, strict=True)]
    return Checks(
        g=k * g_scalar % ORDER, h=k * h_scalar % ORDER, g_vec=g_vec, h_vec=h_vec, terms=terms
    )


def _batch_invert(values: list[int]) -> list[int]:
    """Inverses mod q of non-zero ``values`` with one modular exponentiation."""
    prefix = [1] * (len(values) + 1)
    for i, v in enumerate(values):
        prefix[i + 1] = prefix[i] * v % ORDER
    inv = pow(prefix[-1], -1, ORDER)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = prefix[i] * inv % ORDER
        inv = inv * values[i] % ORDER
    return out
