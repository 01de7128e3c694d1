"""A trial ``gateway.toml`` with every setting at its documented default (``init-config``)."""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.configfile import atomic_write_bytes
from edge.errors import ConfigError

__all__ = ["SAMPLE", "write_sample"]

SAMPLE = """\
# neighbourgrid gateway {id}: `ngrid gateway run --config gateway.toml`. Reference: docs/gateway.md.
# Units: energy Wh, power W, state of charge basis points (0-10000), prices ticks per kWh, ms.
# Relative paths are relative to this file's directory (whatever the current directory).

[gateway]
id = "{id}"
# data_dir = "."                     # default directory for the key, ledger and order log
signing_key = "gateway.key"          # Ed25519 private key, PKCS#8 PEM
# meters = "meters.json"             # registry from `ngrid provision export` (or [[meters]])
log_level = "info"

[mqtt]
host = "127.0.0.1"
port = 1883
# username = "gateway"
# password = "..."
topic_prefix = "ngrid/{id}"
embedded_broker = false              # true: start an amqtt broker (trials only)

[ledger]
path = "ledger.sqlite3"
orderlog = "orderlog.jsonl"
snapshot_records = 100000            # an engine snapshot after this many new log records
                                     # (and after each prune): bounds the replay on restart

[api]
host = "127.0.0.1"
port = 8080

[market]
interval_s = 900                     # delivery interval
policy = "price-time"                # or "value-time"
# max_matches = 10                   # bound on matches per incoming order

[reference]
base_price = 100                     # ticks/kWh at full community charge
scarcity_bp = 10000                  # +100 % at empty
soc_step_bp = 100                    # community SoC is floored to this step

[telemetry]
max_age_s = 30
max_future_s = 5
stale_after_s = 120
max_power_w = 50000

[locks]
timeout_ms = 3000
prove_before_lock = false              # true: no lock command before its proof exists (slower)
telemetry_wait_ms = 10000            # a trade waits this long for the seller's telemetry
proof_workers = 1                    # proving processes; more where cores are free

[batch]
every_s = 300
max_trades = 100

[coordinator]
url = ""                             # e.g. "https://coordinator.example/api"; "" = keep batches
backoff_initial_s = 1.0
backoff_max_s = 300.0
timeout_s = 10.0

[settlement]
yield_apy_bp = 500
pool_commission_bp = 250
tokens_per_wh = 1
carbon_mg_per_wh = 820
grid_fee_per_kwh = 20

[[homes]]
id = "home-1"
token = "{token}"
# sell_above_bp = 6000
# sell_price = 120
# buy_below_bp = 3000
# buy_price = 150
"""


def write_sample(*, directory: Path, gateway_id: str) -> Path:
    """Write ``gateway.toml`` and ``gateway.key`` into ``directory``; refuse to overwrite."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    toml_path, key_path = directory / "gateway.toml", directory / "gateway.key"
    for path in (toml_path, key_path):
        if path.exists():
            raise ConfigError(f"{path} exists; not overwriting it")
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    text = SAMPLE.format(id=gateway_id, token=secrets.token_urlsafe(24))
    for path, data in ((key_path, pem), (toml_path, text.encode())):
        try:
            atomic_write_bytes(path, data, mode=0o600, overwrite=False)
        except FileExistsError:
            raise ConfigError(f"{path} exists; not overwriting it") from None
    return toml_path
