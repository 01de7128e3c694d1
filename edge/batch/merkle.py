"""RFC 6962 Merkle tree hash over a batch's trade leaves, with inclusion proofs.

Source: RFC 6962 section 2.1 (tree hash and audit paths) and RFC 9162 section 2.1.3.2 (the
verification algorithm). SHA-256 with domain separation: a leaf hashes as
``SHA-256(0x00 || leaf)``, an interior node as ``SHA-256(0x01 || left || right)``; the tree over
``n`` leaves splits at ``k``, the largest power of two below ``n``. The empty tree hashes to
``SHA-256(b"")``. All hashes are 32 bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "MerkleTree",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "verify_inclusion",
]

HASH_SIZE = 32


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``: the hash of one leaf (a trade's canonical bytes)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(hashes: Sequence[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(_root(hashes[:k]), _root(hashes[k:]))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of ``leaves`` in order; ``SHA-256(b"")`` when there are none."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _root([leaf_hash(leaf) for leaf in leaves])


def _path(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return [*_path(index, hashes[:k]), _root(hashes[k:])]
    return [*_path(index - k, hashes[k:]), _root(hashes[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path (RFC 6962 PATH) of leaf ``index`` in the tree over ``leaves``.

    Raises ``IndexError`` when ``index`` is not in ``range(len(leaves))``.
    """
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    return _path(index, [leaf_hash(leaf) for leaf in leaves])


class MerkleTree:
    """The RFC 6962 Merkle tree over ``leaves`` (bytes each), for many audit paths of one tree.

    Each leaf and subtree hash is computed once, when a path first needs it: the paths of all
    ``n`` leaves cost O(n) hashes in all and O(log n) each after that, where
    :func:`inclusion_proof` costs O(n) per path. Same results as :func:`merkle_root` and
    :func:`inclusion_proof` (RFC 6962 sections 2.1 and 2.1.1).
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._hashes = [leaf_hash(leaf) for leaf in leaves]
        self._nodes: dict[tuple[int, int], bytes] = {}

    def __len__(self) -> int:
        return len(self._hashes)

    def _subtree(self, lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return self._hashes[lo]
        node = self._nodes.get((lo, hi))
        if node is None:
            k = _split(hi - lo)
            node = node_hash(self._subtree(lo, lo + k), self._subtree(lo + k, hi))
            self._nodes[(lo, hi)] = node
        return node

    def root(self) -> bytes:
        """The tree hash (MTH); ``SHA-256(b"")`` for no leaves."""
        if not self._hashes:
            return hashlib.sha256(b"").digest()
        return self._subtree(0, len(self._hashes))

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path of leaf ``index``, leaf side first. Raises ``IndexError`` when
        ``index`` is not in ``range(len(self))``."""
        size = len(self._hashes)
        if not 0 <= index < size:
            raise IndexError(f"leaf index {index} is outside a tree of {size} leaves")
        top_down: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                top_down.append(self._subtree(lo + k, hi))
                hi = lo + k
            else:
                top_down.append(self._subtree(lo, lo + k))
                lo += k
        return top_down[::-1]


def verify_inclusion(
    *, leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff ``proof`` shows ``leaf`` at ``index`` in a tree of ``size`` leaves with ``root``.

    RFC 9162 section 2.1.3.2. Never raises on malformed input: a wrong-length hash, an index out
    of range or a path of the wrong length returns False.
    """
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
