"""The gateway's registration document: what a coordinator needs to know the gateway.

A self-signed JSON object (``registration.json``)::

    {"type": "ngrid.gateway.registration", "version": 1, "gateway_id": "gw1",
     "key_algorithm": "ed25519", "public_key": "<64 hex>", "meters": ["m-1", ...],
     "created_at": "2025-04-11T00:00:00Z", "signature": "<128 hex>"}

The signature is the gateway's Ed25519 signature over :func:`canonical_json` of every other
field, proving the sender holds the private key. ``ngrid provision gateway`` writes it into the
bundle, ``ngrid simulate`` into the run directory; the coordinator takes it on ``POST
/gateways`` and ``ngrid coordinator verify --registry`` (``coordinator.service.parse_registration``
checks it with :func:`verify_registration`). This module is the one builder and writer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.configfile import atomic_write_text

__all__ = [
    "REGISTRATION_TYPE",
    "canonical_json",
    "registration",
    "verify_registration",
    "write_registration",
]

REGISTRATION_TYPE = "ngrid.gateway.registration"


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no spaces: the bytes the registration signature covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def registration(
    key: Ed25519PrivateKey,
    *,
    gateway_id: str,
    meters: Iterable[str],
    created_at: str | None = None,
) -> dict[str, Any]:
    """The registration document of gateway ``gateway_id`` with signing key ``key`` and its
    ``meters``, signed. ``created_at`` defaults to now (UTC, ``YYYY-MM-DDTHH:MM:SSZ``)."""
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    request = {
        "type": REGISTRATION_TYPE,
        "version": 1,
        "gateway_id": gateway_id,
        "key_algorithm": "ed25519",
        "public_key": public.hex(),
        "meters": list(meters),
        "created_at": created_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return request | {"signature": key.sign(canonical_json(request)).hex()}


def write_registration(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` (``registration.json``: indented JSON, keys sorted)
    atomically."""
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def verify_registration(request: dict[str, Any]) -> bytes:
    """Check a registration request's self-signature; return the raw Ed25519 public key.

    The signature covers :func:`canonical_json` of every field except ``signature``, proving the
    sender holds the private key. Raises ValueError if a field is missing or the signature fails.
    """
    try:
        body = {key: value for key, value in request.items() if key != "signature"}
        public_raw = bytes.fromhex(request["public_key"])
        signature = bytes.fromhex(request["signature"])
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, canonical_json(body))
    except (KeyError, TypeError, ValueError, InvalidSignature) as err:
        raise ValueError(f"registration request does not verify: {err!r}") from err
    return public_raw
