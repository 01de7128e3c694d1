"""The coordinator's configuration: ``coordinator.toml``, read with :mod:`tomllib`.

Every setting has a default, so an empty file (or none: :func:`default_config`) runs a
coordinator against ``ngrid coordinator soroban-local`` on this machine. Errors are
:class:`coordinator.errors.ConfigError` naming the key (``http.port``, ``soroban.rpc_url`` …).
Relative paths are resolved against the directory of the file. Reference: docs/coordinator.md.

Sections: ``[http]`` (listener, admin token, body limit), ``[store]`` (SQLite path),
``[soroban]`` (RPC URL, network passphrase, contract id, secret key source, timings),
``[market]`` and ``[settlement]`` (the community's rules batches are checked against, with the
keys and defaults of the gateway's ``gateway.toml``), ``[verify]`` (the least SoC reserve).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.errors import ConfigError
from coordinator.soroban import LOCAL_PASSPHRASE, SorobanConfig
from coordinator.verify import Rules
from edge.settings import Table as _Table
from edge.settings import read_market, read_rates

__all__ = [
    "ADMIN_TOKEN_ENV",
    "SAMPLE",
    "CoordinatorConfig",
    "HttpConfig",
    "SorobanSettings",
    "default_config",
    "load_config",
    "parse_config",
]

ADMIN_TOKEN_ENV = "NGRID_COORDINATOR_ADMIN_TOKEN"
LOCAL_RPC_URL = "http://127.0.0.1:8000/"


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """The HTTP listener. ``admin_token_file`` (or env ``NGRID_COORDINATOR_ADMIN_TOKEN``) holds
    the bearer token gateway registration needs; without one, registration is disabled.
    ``max_body_mb``: the largest batch accepted (a 10k-trade batch is about 20 MB)."""

    host: str = "127.0.0.1"
    port: int = 8100
    admin_token_file: Path | None = None
    max_body_mb: int = 64

    def admin_token(self) -> str | None:
        """The admin token, or None; :class:`ConfigError` if the file cannot be read."""
        if self.admin_token_file is not None:
            try:
                token = self.admin_token_file.read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ConfigError(
                    f"cannot read {self.admin_token_file}: {err.strerror}",
                    key="http.admin_token_file",
                ) from err
            if len(token) < 16:
                raise ConfigError(
                    "the token must be at least 16 characters", key="http.admin_token_file"
                )
            return token
        token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        return token or None


@dataclass(frozen=True, kw_only=True)
class SorobanSettings:
    """``[soroban]``: ``enabled`` false keeps batches unanchored (verification only).

    ``contract_id`` empty means the id ``soroban-local --deploy`` gives for this key
    (:func:`coordinator.soroban.anchor_contract_id`, salt 0)."""

    enabled: bool = True
    rpc_url: str = LOCAL_RPC_URL
    network_passphrase: str = LOCAL_PASSPHRASE
    contract_id: str = ""
    secret_file: Path | None = None
    tx_timeout_s: int = 30
    poll_interval_s: float = 0.5
    retry_max_s: float = 60.0

    def submitter_config(self, contract_id: str) -> SorobanConfig:
        return SorobanConfig(
            rpc_url=self.rpc_url,
            network_passphrase=self.network_passphrase,
            contract_id=contract_id,
            secret_file=self.secret_file,
            tx_timeout_s=self.tx_timeout_s,
        )


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    http: HttpConfig = field(default_factory=HttpConfig)
    store_path: Path = Path("coordinator.sqlite3")
    soroban: SorobanSettings = field(default_factory=SorobanSettings)
    rules: Rules = field(default_factory=Rules)


def parse_config(data: Mapping[str, Any], *, base: Path) -> CoordinatorConfig:
    """Build the configuration from a parsed TOML document; paths relative to ``base``."""
    root = _Table(data, "")
    h = root.table("http")
    http = HttpConfig(
        host=h.text("host", "127.0.0.1"),
        port=h.integer("port", 8100, hi=65535),
        admin_token_file=h.path_or_none("admin_token_file", base),
        max_body_mb=h.integer("max_body_mb", 64, lo=1, hi=4096),
    )
    h.done()

    st = root.table("store")
    store_path = base / st.text("path", "coordinator.sqlite3")
    st.done()

    so = root.table("soroban")
    soroban = SorobanSettings(
        enabled=so.flag("enabled", True),
        rpc_url=so.text("rpc_url", LOCAL_RPC_URL),
        network_passphrase=so.text("network_passphrase", LOCAL_PASSPHRASE),
        contract_id=so.text("contract_id", ""),
        secret_file=so.path_or_none("secret_file", base),
        tx_timeout_s=so.integer("tx_timeout_s", 30, lo=1, hi=3600),
        poll_interval_s=so.number("poll_interval_s", 0.5, lo=0.01),
        retry_max_s=so.number("retry_max_s", 60.0, lo=0.01),
    )
    if not soroban.rpc_url.startswith(("http://", "https://")):
        raise ConfigError("expected an http:// or https:// URL", key="soroban.rpc_url")
    if soroban.contract_id and not (
        soroban.contract_id.startswith("C") and len(soroban.contract_id) == 56
    ):
        raise ConfigError("expected a contract id (C…, 56 characters)", key="soroban.contract_id")
    if not soroban.network_passphrase:
        raise ConfigError("must not be empty", key="soroban.network_passphrase")
    so.done()

    mk = root.table("market")
    interval_s, market = read_market(mk)
    mk.done()
    rates = read_rates(root.table("settlement"), interval_s=interval_s)

    ve = root.table("verify")
    rules = Rules(
        market=market,
        rates=rates,
        min_reserve_bp=ve.integer("min_reserve_bp", 2000, hi=10000),
        proof_chunk=ve.integer("proof_chunk", 256, lo=1, hi=100_000),
    )
    ve.done()
    root.done()
    return CoordinatorConfig(http=http, store_path=store_path, soroban=soroban, rules=rules)


def default_config(base: Path | None = None) -> CoordinatorConfig:
    """Every default, paths relative to ``base`` (default: the current directory)."""
    return parse_config({}, base=base if base is not None else Path.cwd())


def load_config(path: Path) -> CoordinatorConfig:
    """Read and check ``path``; :class:`ConfigError` (with the key) on any problem."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text: {err}") from err
    return parse_config(data, base=Path(path).resolve().parent)


SAMPLE = """\
# neighbourgrid coordinator: `ngrid coordinator serve --config coordinator.toml`.
# Reference: docs/coordinator.md. Every setting is shown with its default.
# Relative paths are relative to this file's directory (whatever the current directory).

[http]
host = "127.0.0.1"
port = 8100
# Bearer token for POST /gateways (registration); or env NGRID_COORDINATOR_ADMIN_TOKEN.
# admin_token_file = "admin.token"
max_body_mb = 64

[store]
path = "coordinator.sqlite3"          # SQLite, WAL

[soroban]
# The local stand-in (`ngrid coordinator soroban-local --deploy`). For testnet change three lines:
#   rpc_url = "https://soroban-testnet.stellar.org"
#   network_passphrase = "Test SDF Network ; September 2015"
#   contract_id = "C..."               # printed by deploy_anchor_contract on testnet
enabled = true
rpc_url = "http://127.0.0.1:8000/"
network_passphrase = "Standalone Network ; February 2017"
contract_id = ""                       # "": the id soroban-local --deploy gives this key
# secret_file = "coordinator.secret"   # else env NGRID_SOROBAN_SECRET
tx_timeout_s = 30
poll_interval_s = 0.5
retry_max_s = 60.0

# The community's rules; the keys and defaults of the gateways' gateway.toml.
[market]
interval_s = 900
policy = "price-time"
# max_matches = 10

[settlement]
yield_apy_bp = 500
pool_commission_bp = 250
tokens_per_wh = 1
carbon_mg_per_wh = 820
grid_fee_per_kwh = 20

[verify]
min_reserve_bp = 2000                  # a SoC proof must cover at least this reserve
proof_chunk = 256                      # range proofs per combined batch check
"""
