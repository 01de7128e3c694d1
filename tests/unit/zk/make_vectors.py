"""Write tests/unit/zk/vectors.json from the spec in docs/zk.md, independently of edge.zk.

This is a second, deliberately naive implementation of the spec's derivations -- affine secp256k1
arithmetic on Python integers, square roots by x^((p+1)/4) -- so the known-answer vectors do not
come from the code they check. It was run once to write vectors.json:

    .venv/bin/python -m tests.unit.zk.make_vectors > tests/unit/zk/vectors.json

It does not import edge.zk except for one thing it cannot derive on its own: a sample proof
(made by edge.zk's prover, which is randomised) that a future native verifier must accept.
"""

from __future__ import annotations

import hashlib
import json
import sys

P = 2**256 - 2**32 - 977
Q = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GX = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
GY = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8
DOMAIN_TAG = b"neighbourgrid/zk/v1/secp256k1/sha256-try-and-increment"

Affine = tuple[int, int] | None


def add(a: Affine, b: Affine) -> Affine:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    if a == b:
        lam = 3 * a[0] * a[0] * pow(2 * a[1], -1, P) % P
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (lam * lam - a[0] - b[0]) % P
    return x, (lam * (a[0] - x) - a[1]) % P


def mul(k: int, a: Affine) -> Affine:
    out: Affine = None
    for bit in bin(k % Q)[2:]:
        out = add(out, out)
        if bit == "1":
            out = add(out, a)
    return out


def lift_even(x: int) -> Affine:
    """The point with this x and even y, or None if there is none."""
    if x >= P:
        return None
    rhs = (x * x * x + 7) % P
    y = pow(rhs, (P + 1) // 4, P)
    if y * y % P != rhs:
        return None
    return x, y if y % 2 == 0 else P - y


def compressed(a: Affine) -> str:
    assert a is not None
    return (bytes([2 + (a[1] & 1)]) + a[0].to_bytes(32, "big")).hex()


def hash_to_curve(label: bytes) -> tuple[Affine, int]:
    prefix = DOMAIN_TAG + len(label).to_bytes(4, "big") + label
    counter = 0
    while True:
        x = int.from_bytes(hashlib.sha256(prefix + counter.to_bytes(4, "big")).digest(), "big")
        point = lift_even(x)
        if point is not None:
            return point, counter
        counter += 1


def main() -> None:
    g = (GX, GY)
    h, h_counter = hash_to_curve(b"pedersen/H")
    vectors: dict[str, object] = {
        "domain_tag": DOMAIN_TAG.decode(),
        "G": compressed(g),
        "H": {"label": "pedersen/H", "counter": h_counter, "point": compressed(h)},
    }
    for name in ("G", "H"):
        rows = []
        for i in range(4):
            label = f"bulletproofs/{name}/".encode() + i.to_bytes(4, "big")
            point, counter = hash_to_curve(label)
            rows.append(
                {
                    "index": i,
                    "label_hex": label.hex(),
                    "counter": counter,
                    "point": compressed(point),
                }
            )
        vectors[f"{name}_vec"] = rows
    everything = b"".join(
        bytes.fromhex(
            compressed(hash_to_curve(f"bulletproofs/{name}/".encode() + i.to_bytes(4, "big"))[0])
        )
        for name in ("G", "H")
        for i in range(128)
    )
    vectors["vector_digest"] = {
        "about": "SHA-256 of G_0..G_127 then H_0..H_127, each 33-byte compressed",
        "sha256": hashlib.sha256(everything).hexdigest(),
    }
    cases = [(0, 1), (1, 1), (2000, 0x1234), (10000, Q - 1), (6400, 2**200 + 12345), (2**64 - 1, 7)]
    vectors["commitments"] = [
        {
            "value": v,
            "blinding_hex": r.to_bytes(32, "big").hex(),
            "commitment": compressed(add(mul(v, g), mul(r, h))),
        }
        for v, r in cases
    ]
    from edge.zk import commit, prove_range  # the one thing this script cannot make itself

    commitment, opening = commit(6400)
    context = b"gateway=gw-1;trade=42;epoch=7"
    vectors["sample_proof"] = {
        "commitment": commitment.hex(),
        "lo": 2000,
        "hi": 10000,
        "context_hex": context.hex(),
        "proof": prove_range(opening, 2000, 10000, context).hex(),
    }
    json.dump(vectors, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
