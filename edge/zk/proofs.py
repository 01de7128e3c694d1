"""The range-proof API: prove, verify one, verify a batch; and SoC - reserved >= threshold.

Shapes: commitments are 33-byte compressed points (:mod:`edge.zk.pedersen`), proofs the bytes of
:mod:`edge.zk.rangeproof` (624 bytes for the 16-bit SoC range), ranges integers
0 <= lo <= hi < 2^64, contexts arbitrary bytes (gateway id, trade id, epoch: the caller's encoding,
length-prefixed into the transcript). Verifiers never raise on malformed input: they return False.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from edge.zk import _group
from edge.zk._group import ORDER, G, H, Point, is_identity, vector_g, vector_h
from edge.zk.pedersen import (
    MAX_VALUE,
    Opening,
    commit_with,
    shift_commitment,
    shift_opening,
)
from edge.zk.rangeproof import (
    AGGREGATION,
    BIT_SIZES,
    Checks,
    RandBelow,
    bits_for_range,
    prove,
    verification_checks,
)

__all__ = [
    "SOC_MAX_BP",
    "at_least_statement",
    "precompute",
    "prove_at_least",
    "prove_range",
    "verify_at_least",
    "verify_batch",
    "verify_range",
]

#: State of charge is carried in basis points: 0 (empty) to 10000 (full).
SOC_MAX_BP = 10_000

_AT_LEAST = b"neighbourgrid/zk/at-least/v1\x00"


def precompute(bits: int = 16) -> None:
    """Build fixed-base tables for every generator an n-bit proof uses (n = ``bits``).

    For long-running provers and verifiers (the gateway, the coordinator): afterwards the
    generators' terms cost table look-ups instead of scalar multiplications (docs/zk.md,
    "Performance"). Costs 512 KiB and about 8,000 point additions per generator: 2 + 4n
    generators, so 66 (33 MiB, a few seconds) for the 16-bit SoC range. Idempotent; results
    never change, only speed. ValueError if ``bits`` is not one of 8, 16, 32, 64.
    """
    if bits not in BIT_SIZES:
        raise ValueError(f"bits must be one of {BIT_SIZES}, got {bits!r}")
    nm = bits * AGGREGATION
    _group.precompute([G, H, *vector_g(nm), *vector_h(nm)])


def prove_range(
    opening: Opening,
    lo: int,
    hi: int,
    context: bytes,
    *,
    randbelow: RandBelow = secrets.randbelow,
) -> bytes:
    """Prove that the commitment of ``opening`` holds a value in [lo, hi], bound to ``context``.

    Raises ValueError if the value is outside [lo, hi] or the range is invalid (integers
    0 <= lo <= hi < 2^64 are valid), TypeError if ``context`` is not bytes. ``randbelow`` is the
    prover's randomness (``secrets.randbelow``; tests may pass another).
    """
    if not isinstance(opening, Opening):
        raise TypeError(f"opening must be an Opening, got {type(opening).__name__}")
    if not isinstance(context, bytes | bytearray):
        raise TypeError(f"context must be bytes, got {type(context).__name__}")
    bits_for_range(lo, hi)
    if not lo <= opening.value <= hi:
        raise ValueError(f"value {opening.value} is outside [{lo}, {hi}]")
    return prove(
        commitment=commit_with(opening.value, opening.blinding),
        value=opening.value,
        blinding=opening.blinding,
        lo=lo,
        hi=hi,
        context=bytes(context),
        randbelow=randbelow,
    )


def _holds(checks: list[Checks]) -> bool:
    """Whether the sum of the checks is the identity: one combined multi-scalar equation."""
    nm = max(len(c.g_vec) for c in checks)
    g_vec = [0] * nm
    h_vec = [0] * nm
    g = h = 0
    terms: list[tuple[int, Point]] = []
    for c in checks:
        g += c.g
        h += c.h
        for i, s in enumerate(c.g_vec):
            g_vec[i] += s
        for i, s in enumerate(c.h_vec):
            h_vec[i] += s
        terms.extend(c.terms)
    terms.append((h, H))
    terms.extend(zip(g_vec, vector_g(nm), strict=True))
    terms.extend(zip(h_vec, vector_h(nm), strict=True))
    terms.append((g, G))
    return is_identity(terms)


def verify_range(commitment: bytes, lo: int, hi: int, context: bytes, proof: bytes) -> bool:
    """Whether ``proof`` shows that ``commitment`` holds a value in [lo, hi] under ``context``.

    Deterministic (the combining scalar comes from the transcript). Never raises: malformed
    commitments, ranges, contexts or proofs give False.
    """
    try:
        checks = verification_checks(
            commitment=commitment, lo=lo, hi=hi, context=context, proof=proof
        )
        return checks is not None and _holds([checks])
    except (ValueError, TypeError, ArithmeticError):  # pragma: no cover - belt and braces
        return False


def verify_batch(
    items: Iterable[tuple[bytes, int, int, bytes, bytes]],
    *,
    randbelow: RandBelow = secrets.randbelow,
) -> bool:
    """Whether every (commitment, lo, hi, context, proof) item verifies; one combined check.

    Each proof's equation is scaled by a fresh random weight and its two checks joined by a fresh
    random scalar (both from ``randbelow``, by default ``secrets.randbelow``), then all are summed
    so the generators' terms are multiplied once for the whole batch (dalek's
    ``RangeProof::verify_multiple``). A false proof slips through with probability about 1/q. An
    empty batch is vacuously true. Never raises: malformed items give False.
    """
    try:
        checks: list[Checks] = []
        for item in items:
            if not isinstance(item, tuple) or len(item) != 5:
                return False
            commitment, lo, hi, context, proof = item
            one = verification_checks(
                commitment=commitment,
                lo=lo,
                hi=hi,
                context=context,
                proof=proof,
                weight=randbelow(ORDER - 1) + 1,
                combiner=randbelow(ORDER - 1) + 1,
            )
            if one is None:
                return False
            checks.append(one)
        return not checks or _holds(checks)
    except (ValueError, TypeError, ArithmeticError):  # pragma: no cover - belt and braces
        return False


def at_least_statement(
    commitment: bytes,
    *,
    threshold: int,
    reserved: int,
    context: bytes,
    maximum: int = SOC_MAX_BP,
) -> tuple[bytes, int, int, bytes]:
    """The range statement behind "committed SoC - reserved >= threshold".

    Returns (C - reserved*G, threshold, maximum - reserved, context') where context' binds the
    original commitment and ``reserved`` ahead of the caller's context:
    ``b"neighbourgrid/zk/at-least/v1\\x00" || C (33 bytes) || u64be(reserved) || context``.
    The upper end maximum - reserved follows from SoC <= maximum (10000 basis points).
    Units: SoC, reserved, threshold and maximum in basis points. Raises ValueError if the
    commitment is malformed or threshold > maximum - reserved.
    """
    shifted = shift_commitment(commitment, reserved)
    hi = maximum - reserved
    bits_for_range(threshold, hi)
    bound = _AT_LEAST + bytes(commitment) + reserved.to_bytes(8, "big") + bytes(context)
    return shifted, threshold, hi, bound


def prove_at_least(
    opening: Opening,
    *,
    threshold: int,
    reserved: int,
    context: bytes,
    maximum: int = SOC_MAX_BP,
    randbelow: RandBelow = secrets.randbelow,
) -> bytes:
    """Prove SoC - reserved >= threshold for the SoC committed by ``opening``.

    The gateway's helper: ``reserved`` is the SoC (basis points) already locked by earlier trades,
    ``threshold`` the 20 % reserve plus this sale, both public. The proof is an ordinary range
    proof on C - reserved*G over [threshold, maximum - reserved] (see :func:`at_least_statement`).
    Raises ValueError if SoC - reserved < threshold or the numbers are out of range.
    """
    if not isinstance(opening, Opening):
        raise TypeError(f"opening must be an Opening, got {type(opening).__name__}")
    if not 0 <= opening.value <= MAX_VALUE:
        raise ValueError(f"value {opening.value} is not a committed u64")
    commitment = commit_with(opening.value, opening.blinding)
    _, lo, hi, bound = at_least_statement(
        commitment, threshold=threshold, reserved=reserved, context=context, maximum=maximum
    )
    return prove_range(shift_opening(opening, reserved), lo, hi, bound, randbelow=randbelow)


def verify_at_least(
    commitment: bytes,
    *,
    threshold: int,
    reserved: int,
    context: bytes,
    proof: bytes,
    maximum: int = SOC_MAX_BP,
) -> bool:
    """Whether ``proof`` shows committed SoC - reserved >= threshold. Never raises."""
    try:
        statement = at_least_statement(
            commitment, threshold=threshold, reserved=reserved, context=context, maximum=maximum
        )
    except (ValueError, TypeError):
        return False
    return verify_range(*statement, proof)
