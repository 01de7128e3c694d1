"""RFC 6962 Merkle tree: the Certificate Transparency reference vectors and inclusion proofs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.batch.merkle import MerkleTree, inclusion_proof, merkle_root, verify_inclusion

# certificate-transparency testonly/constants.go: leaf inputs and the roots of their prefixes.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# Inclusion paths from the same suite (verifier_test.go): (index, size, path).
CT_PATHS = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_root_matches_reference(size: int) -> None:
    assert merkle_root(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_inclusion_proof_matches_reference(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(CT_LEAVES[:size], index)
    assert [p.hex() for p in proof] == path
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(leaf=CT_LEAVES[index], index=index, size=size, proof=proof, root=root)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_every_leaf_proves_and_a_changed_leaf_does_not(
    leaves: list[bytes], data: st.DataObject
) -> None:
    root = merkle_root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(leaves, index)
    size = len(leaves)
    assert verify_inclusion(leaf=leaves[index], index=index, size=size, proof=proof, root=root)
    assert not verify_inclusion(
        leaf=leaves[index] + b"x", index=index, size=size, proof=proof, root=root
    )
    if size > 1:
        other = (index + 1) % size
        assert (
            not verify_inclusion(leaf=leaves[index], index=other, size=size, proof=proof, root=root)
            or leaves[other] == leaves[index]
        )


def test_malformed_proofs_are_refused_without_raising() -> None:
    leaves = CT_LEAVES
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, 3)
    assert not verify_inclusion(leaf=leaves[3], index=3, size=8, proof=proof[:-1], root=root)
    assert not verify_inclusion(leaf=leaves[3], index=3, size=8, proof=[*proof, root], root=root)
    assert not verify_inclusion(
        leaf=leaves[3], index=3, size=8, proof=[proof[0][:31], *proof[1:]], root=root
    )
    assert not verify_inclusion(leaf=leaves[3], index=8, size=8, proof=proof, root=root)
    assert not verify_inclusion(leaf=leaves[3], index=-1, size=8, proof=proof, root=root)
    with pytest.raises(IndexError):
        inclusion_proof(leaves, 8)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    # A two-leaf tree's root must not verify as a leaf of a one-leaf tree (second preimage).
    a, b = b"a", b"b"
    root = merkle_root([a, b])
    from edge.batch.merkle import leaf_hash

    forged = leaf_hash(a) + leaf_hash(b)
    assert merkle_root([forged]) != root


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_tree_root_matches_reference(size: int) -> None:
    assert MerkleTree(CT_LEAVES[:size]).root().hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_tree_inclusion_proof_matches_reference(index: int, size: int, path: list[str]) -> None:
    assert [p.hex() for p in MerkleTree(CT_LEAVES[:size]).inclusion_proof(index)] == path


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70))
def test_tree_gives_every_path_the_function_gives(leaves: list[bytes]) -> None:
    tree = MerkleTree(leaves)
    root = merkle_root(leaves)
    assert tree.root() == root and len(tree) == len(leaves)
    for index in reversed(range(len(leaves))):  # later paths reuse the first ones' nodes
        path = tree.inclusion_proof(index)
        assert path == inclusion_proof(leaves, index)
        assert verify_inclusion(
            leaf=leaves[index], index=index, size=len(leaves), proof=path, root=root
        )
    for bad in (-1, len(leaves)):
        with pytest.raises(IndexError):
            tree.inclusion_proof(bad)
