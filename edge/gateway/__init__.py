"""The neighbourhood gateway: MQTT ingest, event-driven matching, lock before settle, an atomic
ledger and store-and-forward batches (docs/gateway.md).

- :mod:`edge.gateway.config`: ``gateway.toml`` and the meter registry.
- :mod:`edge.gateway.core`: the pure decision logic (events in, effects out, time injected).
- :mod:`edge.gateway.orderlog`: the durable order log (append + fsync before ack).
- :mod:`edge.gateway.ledger`: the SQLite ledger (WAL, synchronous=FULL, migrations, outbox).
- :mod:`edge.gateway.service`: the asyncio shell (aiomqtt, aiohttp, one TaskGroup).
- :mod:`edge.gateway.api`: the homes' HTTP API.
- :mod:`edge.gateway.meterwire`: the seam to the meters' wire format.
"""

from __future__ import annotations

from edge.gateway.config import GatewayConfig, load_config, parse_config
from edge.gateway.core import GatewayCore, reference_price

__all__ = ["GatewayConfig", "GatewayCore", "load_config", "parse_config", "reference_price"]
