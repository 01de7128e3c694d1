"""Privacy core: Pedersen commitments and Bulletproofs range proofs on a seller's state of charge.

The gateway commits to a seller's SoC (basis points, 0-10000) and proves, bound to the trade's
context, that SoC - reserved >= threshold; the coordinator verifies, one proof or a batch, and
never learns the SoC. Pure: no I/O, no clock; randomness comes from ``secrets`` or the caller.
Construction, transcript, encodings and generators: docs/zk.md.

>>> from edge.zk import commit, prove_range, verify_range
>>> c, opening = commit(6400)
>>> proof = prove_range(opening, 2000, 10000, b"trade-1")
>>> verify_range(c, 2000, 10000, b"trade-1", proof)
True
"""

from edge.zk._group import DOMAIN_TAG
from edge.zk.pedersen import MAX_VALUE, Opening, commit, shift_commitment, shift_opening
from edge.zk.proofs import (
    SOC_MAX_BP,
    at_least_statement,
    precompute,
    prove_at_least,
    prove_range,
    verify_at_least,
    verify_batch,
    verify_range,
)
from edge.zk.rangeproof import BIT_SIZES, PROOF_VERSION, bits_for_range, proof_size

__all__ = [
    "BIT_SIZES",
    "DOMAIN_TAG",
    "MAX_VALUE",
    "PROOF_VERSION",
    "SOC_MAX_BP",
    "Opening",
    "at_least_statement",
    "bits_for_range",
    "commit",
    "precompute",
    "proof_size",
    "prove_at_least",
    "prove_range",
    "shift_commitment",
    "shift_opening",
    "verify_at_least",
    "verify_batch",
    "verify_range",
]
