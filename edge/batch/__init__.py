"""Settlement batches shared by the gateway and the coordinator (pure: no I/O, no clock).

- :mod:`edge.batch.canonical`: canonical JSON, the one byte encoding signed and hashed.
- :mod:`edge.batch.merkle`: RFC 6962 Merkle tree over trade leaves, inclusion proofs.
- :mod:`edge.batch.batch`: trade/delivery records, the signed hash-chained batch, checks.

The format is specified in docs/gateway.md ("Batch format").
"""

from __future__ import annotations

from edge.batch.batch import (
    BATCH_FORMAT,
    DELIVERY_STATUSES,
    GENESIS_HASH,
    TOTAL_FIELDS,
    Batch,
    BatchError,
    BatchHeader,
    DeliveryRecord,
    Receipt,
    TradeRecord,
    batch_hash,
    check_batch,
    decode_batch,
    encode_batch,
    proof_context,
    receipt,
    seal_batch,
    totals_of,
    trade_leaf,
    verify_receipt,
)
from edge.batch.canonical import CanonicalError, canonical_bytes, parse_canonical
from edge.batch.merkle import (
    MerkleTree,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)

__all__ = [
    "BATCH_FORMAT",
    "DELIVERY_STATUSES",
    "GENESIS_HASH",
    "TOTAL_FIELDS",
    "Batch",
    "BatchError",
    "BatchHeader",
    "CanonicalError",
    "DeliveryRecord",
    "MerkleTree",
    "Receipt",
    "TradeRecord",
    "batch_hash",
    "canonical_bytes",
    "check_batch",
    "decode_batch",
    "encode_batch",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "parse_canonical",
    "proof_context",
    "receipt",
    "seal_batch",
    "totals_of",
    "trade_leaf",
    "verify_inclusion",
    "verify_receipt",
]
