"""A gateway's batches and registration as files anyone can verify offline.

The layout (``ngrid coordinator verify DIR`` reads it; docs/coordinator.md)::

    DIR/registration.json            the gateway's signed registration (edge.gateway.registration)
    DIR/batches/batch-000001.json    each sealed batch's canonical bytes, as uploaded
    DIR/batches/batch-000002.json    ... one per batch, names in chain order

``ngrid simulate`` writes it into its run directory (:func:`export_for_verification`);
``ngrid gateway export-batches`` writes the batch files alone (:meth:`Ledger.export_batches`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import GatewayError
from edge.gateway.config import GatewayConfig
from edge.gateway.ledger import Ledger
from edge.gateway.registration import registration, write_registration

__all__ = [
    "BATCHES_DIR",
    "REGISTRATION_FILE",
    "Exported",
    "export_batches",
    "export_for_verification",
]

REGISTRATION_FILE = "registration.json"
BATCHES_DIR = "batches"


@dataclass(frozen=True, kw_only=True)
class Exported:
    """What was written: the registration (None if not asked for) and ``(seq, path)`` per batch."""

    registration: Path | None
    batches: tuple[tuple[int, Path], ...]


def export_batches(config: GatewayConfig, directory: Path, *, first: int = 1) -> Exported:
    """Write the batches stored in ``config``'s ledger into ``directory`` (one file per batch,
    :meth:`Ledger.export_batches`). Raises :class:`GatewayError` if there is no ledger. Safe
    while the gateway runs (SQLite WAL: a reader sees committed batches only)."""
    if not config.ledger_path.is_file():
        raise GatewayError(f"no ledger at {config.ledger_path} (ledger.path): nothing to export")
    ledger = Ledger(config.ledger_path)
    try:
        written = ledger.export_batches(directory, first=first)
    finally:
        ledger.close()
    return Exported(registration=None, batches=tuple(written))


def export_for_verification(
    config: GatewayConfig, directory: Path, *, document: Mapping[str, Any] | None = None
) -> Exported:
    """Write ``directory/registration.json`` and ``directory/batches/batch-NNNNNN.json`` for
    every stored batch: what ``ngrid coordinator verify DIR`` needs to check the gateway's whole
    chain offline. ``document`` is the registration the coordinator was given (so the file is
    the one registered); without it a new one is signed with the gateway's key, listing its
    configured meters."""
    from edge.gateway.service import load_signing_key

    directory = Path(directory)
    if document is None:
        document = registration(
            load_signing_key(config.signing_key),
            gateway_id=config.id,
            meters=[m.id for m in config.meters],
        )
    path = directory / REGISTRATION_FILE
    write_registration(path, document)
    batches = export_batches(config, directory / BATCHES_DIR)
    return Exported(registration=path, batches=batches.batches)
