"""Known-answer vectors (tests/unit/zk/vectors.json, written by make_vectors.py from docs/zk.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from edge.zk import DOMAIN_TAG, commit, verify_range
from edge.zk._group import G, H, encode_point, hash_to_curve, vector_g, vector_h

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors.json").read_text())


def test_domain_tag_is_the_published_one() -> None:
    assert DOMAIN_TAG.decode() == VECTORS["domain_tag"]


def test_value_generator_is_secp256k1_base_point() -> None:
    assert encode_point(G).hex() == VECTORS["G"]


def test_blinding_generator_h() -> None:
    assert encode_point(H).hex() == VECTORS["H"]["point"]
    assert (
        encode_point(hash_to_curve(VECTORS["H"]["label"].encode())).hex() == VECTORS["H"]["point"]
    )


@pytest.mark.parametrize("name", ["G_vec", "H_vec"])
def test_first_vector_generators(name: str) -> None:
    ours = vector_g(4) if name == "G_vec" else vector_h(4)
    for row, point in zip(VECTORS[name], ours, strict=True):
        assert encode_point(point).hex() == row["point"]
        assert encode_point(hash_to_curve(bytes.fromhex(row["label_hex"]))).hex() == row["point"]


def test_all_vector_generators_digest() -> None:
    everything = b"".join(encode_point(p) for p in (*vector_g(128), *vector_h(128)))
    assert hashlib.sha256(everything).hexdigest() == VECTORS["vector_digest"]["sha256"]


@pytest.mark.parametrize("case", VECTORS["commitments"], ids=lambda c: f"v={c['value']}")
def test_commitment_encoding(case: dict[str, Any]) -> None:
    commitment, opening = commit(case["value"], blinding=int(case["blinding_hex"], 16))
    assert commitment.hex() == case["commitment"]
    assert opening.value == case["value"]


def test_sample_proof_still_verifies() -> None:
    sample = VECTORS["sample_proof"]
    args = (bytes.fromhex(sample["commitment"]), sample["lo"], sample["hi"])
    context = bytes.fromhex(sample["context_hex"])
    proof = bytes.fromhex(sample["proof"])
    assert verify_range(*args, context, proof)
    assert not verify_range(*args, context + b"!", proof)
