"""The gateway's configuration: ``gateway.toml`` (read with :mod:`tomllib`) and the meter registry.

Every setting has a documented default except ``gateway.id``; docs/gateway.md lists them all.
:func:`load_config` checks the whole file before anything starts and raises
:class:`edge.errors.ConfigError` naming the offending key (``mqtt.port``, ``homes[2].token`` ...).
Relative paths are resolved against the directory of the configuration file.

The layout follows the file ``ngrid provision gateway`` writes (``[gateway]``, ``[mqtt]``,
``[ledger]``, ``[api]``, ``[coordinator]``, ``[settlement]``) and adds ``[market]``,
``[reference]``, ``[telemetry]``, ``[locks]``, ``[batch]`` and the homes' API tokens
(``[[homes]]``). The meter registry is the JSON file ``ngrid provision export`` writes
(``gateway.meters``), or inline ``[[meters]]`` tables with the same fields.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.market import MarketParams, Rates
from edge.settings import REQUIRED as _REQUIRED
from edge.settings import Table as _Table
from edge.settings import read_market, read_rates

__all__ = [
    "ApiConfig",
    "BatchConfig",
    "CoordinatorConfig",
    "GatewayConfig",
    "Home",
    "LockConfig",
    "MarketConfig",
    "Meter",
    "MqttConfig",
    "ReferenceConfig",
    "TelemetryConfig",
    "load_config",
    "parse_config",
]

_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, kw_only=True)
class Meter:
    """A registered meter: its MAC key (32 bytes), battery ``capacity_wh``, ``reserve_bp``
    (the SoC it never sells below, basis points; default 2000 = 20 %) and the home that owns it."""

    id: str
    key: bytes = field(repr=False)
    capacity_wh: int
    reserve_bp: int
    owner: str


@dataclass(frozen=True, kw_only=True)
class Home:
    """A home on the API: its bearer ``token`` and optional standing policies.

    Sell policy: at each delivery interval, offer what the home's meter holds above
    ``sell_above_bp`` (minus what is locked) at ``sell_price`` ticks/kWh. Buy policy: when the
    SoC is below ``buy_below_bp``, bid for the deficit up to it at ``buy_price``.
    """

    id: str
    token: str = field(repr=False)
    sell_above_bp: int | None = None
    sell_price: int | None = None
    buy_below_bp: int | None = None
    buy_price: int | None = None


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    topic_prefix: str = ""  # default "ngrid/<gateway id>"
    embedded_broker: bool = False


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, kw_only=True)
class MarketConfig:
    interval_s: int = 900
    policy: str = "price-time"
    max_matches: int | None = None


@dataclass(frozen=True, kw_only=True)
class ReferenceConfig:
    base_price: int = 100
    scarcity_bp: int = 10000
    soc_step_bp: int = 100


@dataclass(frozen=True, kw_only=True)
class TelemetryConfig:
    max_age_s: int = 30
    max_future_s: int = 5
    stale_after_s: int = 120
    max_power_w: int = 50_000


@dataclass(frozen=True, kw_only=True)
class LockConfig:
    timeout_ms: int = 3000
    prove_before_lock: bool = False
    telemetry_wait_ms: int = 10_000
    max_in_flight: int = 4  # unacknowledged commands per meter (the firmware's inbox)
    queue_max: int = 32  # commands waiting in the gateway per meter beyond those
    busy_backoff_ms: int = 100  # first wait before a command refused `busy` is sent again
    proof_workers: int = 1  # proving processes (one leaves the event loop a core on a Pi)


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    every_s: int = 300
    max_trades: int = 100


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    url: str = ""
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float = 10.0


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """The whole configuration, validated. Paths are absolute."""

    id: str
    signing_key: Path
    ledger_path: Path
    orderlog_path: Path
    snapshot_records: int  # save an engine snapshot after this many new log records
    log_level: str
    mqtt: MqttConfig
    api: ApiConfig
    market: MarketConfig
    reference: ReferenceConfig
    telemetry: TelemetryConfig
    locks: LockConfig
    batch: BatchConfig
    coordinator: CoordinatorConfig
    rates: Rates
    meters: tuple[Meter, ...]
    homes: tuple[Home, ...]

    @property
    def market_params(self) -> MarketParams:
        return MarketParams(policy=self.market.policy, max_matches=self.market.max_matches)


def _ident(table: _Table, name: str) -> str:
    value = table.text(name, _REQUIRED)
    if not _ID.match(value):
        raise ConfigError("use 1-64 letters, digits, '.', '_' or '-'", key=table.key(name))
    return str(value)


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _meter(table: _Table) -> Meter:
    meter_id = _ident(table, "id")
    key_hex = table.text("mac_key", _REQUIRED)
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError("expected 64 hex digits (a 32-byte key)", key=table.key("mac_key"))
    meter = Meter(
        id=meter_id,
        key=key,
        capacity_wh=table.integer("capacity_wh", _REQUIRED, lo=1),
        reserve_bp=table.integer("reserve_bp", 2000, hi=10000),
        owner=_ident(table, "owner"),
    )
    table.done()
    return meter


def _home(table: _Table) -> Home:
    home = Home(
        id=_ident(table, "id"),
        token=table.text("token", _REQUIRED),
        sell_above_bp=table.integer("sell_above_bp", None, hi=10000),
        sell_price=table.integer("sell_price", None, lo=1),
        buy_below_bp=table.integer("buy_below_bp", None, hi=10000),
        buy_price=table.integer("buy_price", None, lo=1),
    )
    if len(home.token) < 16:
        raise ConfigError("use a random token of at least 16 characters", key=table.key("token"))
    if (home.sell_above_bp is None) != (home.sell_price is None):
        raise ConfigError("set both sell_above_bp and sell_price", key=table.key("sell_price"))
    if (home.buy_below_bp is None) != (home.buy_price is None):
        raise ConfigError("set both buy_below_bp and buy_price", key=table.key("buy_price"))
    table.done()
    return home


def _registry(path: Path, key: str) -> list[Meter]:
    try:
        document = json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(
            f"cannot read the meter registry {path}: {err.strerror}", key=key
        ) from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not JSON: {err}", key=key) from err
    if not isinstance(document, dict) or not isinstance(document.get("meters"), list):
        raise ConfigError(f"{path}: expected {{'meters': [...]}}", key=key)
    meters = []
    for i, entry in enumerate(document["meters"]):
        if not isinstance(entry, dict):
            raise ConfigError("expected an object", key=f"{path.name}:meters[{i}]")
        meters.append(_meter(_Table(entry, f"{path.name}:meters[{i}]")))
    return meters


def parse_config(data: Mapping[str, Any], *, base: Path) -> GatewayConfig:
    """Validate a parsed TOML document; relative paths are taken from ``base``."""
    root = _Table(data, "")
    gw = root.table("gateway")
    gateway_id = _ident(gw, "id")
    data_dir = _path(base, gw.text("data_dir", "."))
    signing_key = _path(base, gw.text("signing_key", str(data_dir / "gateway.key")))
    registry = gw.text("meters", None)
    log_level = gw.text("log_level", "info").lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("expected debug, info, warning or error", key="gateway.log_level")
    gw.done()

    mq = root.table("mqtt")
    mqtt = MqttConfig(
        host=mq.text("host", "127.0.0.1"),
        port=mq.integer("port", 1883, lo=1, hi=65535),
        username=mq.text("username", None),
        password=mq.text("password", None),
        topic_prefix=mq.text("topic_prefix", f"ngrid/{gateway_id}").rstrip("/"),
        embedded_broker=mq.flag("embedded_broker", False),
    )
    mq.done()

    led = root.table("ledger")
    ledger_path = _path(base, led.text("path", str(data_dir / "ledger.sqlite3")))
    orderlog_path = _path(base, led.text("orderlog", str(ledger_path.parent / "orderlog.jsonl")))
    snapshot_records = led.integer("snapshot_records", 100_000, lo=1)
    led.done()

    ap = root.table("api")
    api = ApiConfig(host=ap.text("host", "127.0.0.1"), port=ap.integer("port", 8080, hi=65535))
    ap.done()

    mk = root.table("market")
    interval_s, market_params = read_market(mk)
    market = MarketConfig(
        interval_s=interval_s,
        policy=market_params.policy,
        max_matches=market_params.max_matches,
    )
    mk.done()

    rf = root.table("reference")
    reference = ReferenceConfig(
        base_price=rf.integer("base_price", 100, lo=0),
        scarcity_bp=rf.integer("scarcity_bp", 10000, hi=100_000),
        soc_step_bp=rf.integer("soc_step_bp", 100, lo=1, hi=10000),
    )
    rf.done()

    tl = root.table("telemetry")
    telemetry = TelemetryConfig(
        max_age_s=tl.integer("max_age_s", 30, lo=1),
        max_future_s=tl.integer("max_future_s", 5),
        stale_after_s=tl.integer("stale_after_s", 120, lo=1),
        max_power_w=tl.integer("max_power_w", 50_000, lo=1),
    )
    tl.done()

    lk = root.table("locks")
    locks = LockConfig(
        timeout_ms=lk.integer("timeout_ms", 3000, lo=1),
        prove_before_lock=lk.flag("prove_before_lock", False),
        telemetry_wait_ms=lk.integer("telemetry_wait_ms", 10_000, lo=0),
        max_in_flight=lk.integer("max_in_flight", 4, lo=1, hi=16),
        queue_max=lk.integer("queue_max", 32, lo=0, hi=10_000),
        busy_backoff_ms=lk.integer("busy_backoff_ms", 100, lo=1),
        proof_workers=lk.integer("proof_workers", 1, lo=1, hi=16),
    )
    lk.done()

    bt = root.table("batch")
    batch = BatchConfig(
        every_s=bt.integer("every_s", 300, lo=1), max_trades=bt.integer("max_trades", 100, lo=1)
    )
    bt.done()

    co = root.table("coordinator")
    coordinator = CoordinatorConfig(
        url=co.text("url", "").rstrip("/"),
        backoff_initial_s=co.number("backoff_initial_s", 1.0, lo=0.01),
        backoff_max_s=co.number("backoff_max_s", 300.0, lo=0.01),
        timeout_s=co.number("timeout_s", 10.0, lo=0.1),
    )
    if coordinator.url and not coordinator.url.startswith(("http://", "https://")):
        raise ConfigError("expected an http:// or https:// URL", key="coordinator.url")
    co.done()

    rates = read_rates(root.table("settlement"), interval_s=market.interval_s)

    meters: list[Meter] = []
    if registry is not None:
        meters += _registry(_path(base, registry), "gateway.meters")
    inline = root.get("meters", (list,), "an array of tables", [])
    for i, entry in enumerate(inline):
        if not isinstance(entry, dict):
            raise ConfigError("expected a table", key=f"meters[{i}]")
        meters.append(_meter(_Table(entry, f"meters[{i}]")))
    seen: set[str] = set()
    for m in meters:
        if m.id in seen:
            raise ConfigError(f"meter {m.id!r} is registered twice", key="meters")
        seen.add(m.id)

    homes: list[Home] = []
    for i, entry in enumerate(root.get("homes", (list,), "an array of tables", [])):
        if not isinstance(entry, dict):
            raise ConfigError("expected a table", key=f"homes[{i}]")
        homes.append(_home(_Table(entry, f"homes[{i}]")))
    if len({h.id for h in homes}) != len(homes):
        raise ConfigError("a home is listed twice", key="homes")
    if len({h.token for h in homes}) != len(homes):
        raise ConfigError("two homes share a token", key="homes")
    root.done()

    return GatewayConfig(
        id=gateway_id,
        signing_key=signing_key,
        ledger_path=ledger_path,
        orderlog_path=orderlog_path,
        snapshot_records=snapshot_records,
        log_level=log_level,
        mqtt=mqtt,
        api=api,
        market=market,
        reference=reference,
        telemetry=telemetry,
        locks=locks,
        batch=batch,
        coordinator=coordinator,
        rates=rates,
        meters=tuple(meters),
        homes=tuple(homes),
    )


def load_config(path: Path) -> GatewayConfig:
    """Read and validate ``path``; raise :class:`ConfigError` (with the key) on any problem."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err
    return parse_config(data, base=Path(path).resolve().parent)
