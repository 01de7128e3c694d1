"""The golden vectors of the wire format: ``edge/wire/vectors.json``.

Shape: ``{"hmac_sha256": [{name, key, data, mac}], "messages": [{name, key, fields, canonical,
mac, payload}], "invalid": [{name, key, payload, reason}]}``; keys and data in hex, canonical and
payload as text. Made by ``tests/unit/wire/make_vectors.py`` with MACs from the openssl command
line; the firmware tests (CPython and the MicroPython VM) and the gateway tests load this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

__all__ = ["VECTORS_PATH", "load_vectors"]

VECTORS_PATH: Final = Path(__file__).with_name("vectors.json")


def load_vectors() -> dict[str, Any]:
    """The parsed vectors file (see the module docstring for its shape)."""
    loaded: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return loaded
