"""Anchoring verified batches on Stellar Soroban, and a local Stellar RPC stand-in to do it against.

- :class:`Submitter` / :class:`AnchorResult`: ``await submitter.anchor(gateway, seq, root, count)``
  anchors one batch exactly once (see :mod:`coordinator.soroban.submitter`).
- :class:`SorobanConfig`: RPC URL, network passphrase, contract id, secret key source.
- :func:`deploy_anchor_contract`: upload, instantiate and ``init`` the anchor contract.
- :func:`local_soroban`: ``async with local_soroban() as rpc: rpc.url …`` runs the stand-in
  (:mod:`coordinator.soroban.rpc` says what it models) in-process on a free loopback port.
- The contract itself: :mod:`coordinator.soroban.contract`.
"""

from __future__ import annotations

from coordinator.soroban.contract import expected_chain
from coordinator.soroban.rpc import LOCAL_PASSPHRASE, LocalRpc
from coordinator.soroban.server import LocalSoroban, local_soroban
from coordinator.soroban.submitter import (
    AnchorResult,
    EnvelopeStore,
    SorobanConfig,
    SqliteEnvelopeStore,
    StoredTx,
    Submitter,
    anchor_contract_id,
    deploy_anchor_contract,
)

__all__ = [
    "LOCAL_PASSPHRASE",
    "AnchorResult",
    "EnvelopeStore",
    "LocalRpc",
    "LocalSoroban",
    "SorobanConfig",
    "SqliteEnvelopeStore",
    "StoredTx",
    "Submitter",
    "anchor_contract_id",
    "deploy_anchor_contract",
    "expected_chain",
    "local_soroban",
]
