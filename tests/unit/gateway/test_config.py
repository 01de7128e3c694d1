"""gateway.toml: defaults, the registry file, and errors reported by key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.errors import ConfigError
from edge.gateway.config import load_config, parse_config
from tests.unit.gateway.conftest import KEY_A, config_dict


def test_defaults() -> None:
    config = parse_config({"gateway": {"id": "gw7"}}, base=Path("/srv/gw"))
    assert config.mqtt.topic_prefix == "ngrid/gw7"
    assert config.ledger_path == Path("/srv/gw/ledger.sqlite3")
    assert config.orderlog_path == Path("/srv/gw/orderlog.jsonl")
    assert config.signing_key == Path("/srv/gw/gateway.key")
    assert (config.market.interval_s, config.locks.timeout_ms, config.batch.max_trades) == (
        900,
        3000,
        100,
    )
    assert config.rates.commission_ppm == 25_000 and config.rates.carbon_mg_per_kwh == 820_000


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["gateway"].pop("id"), "gateway.id"),
        (lambda d: d["gateway"].update(id="bad id!"), "gateway.id"),
        (lambda d: d.update(mqtt={"port": 70000}), "mqtt.port"),
        (lambda d: d.update(mqtt={"port": "1883"}), "mqtt.port"),
        (lambda d: d.update(market={"policy": "fifo"}), "market.policy"),
        (lambda d: d.update(locks={"prove_before_lock": 1}), "locks.prove_before_lock"),
        (lambda d: d.update(coordinator={"url": "ftp://x"}), "coordinator.url"),
        (lambda d: d["meters"][1].update(mac_key="abcd"), "meters[1].mac_key"),
        (lambda d: d["meters"][0].update(capacity_wh=0), "meters[0].capacity_wh"),
        (lambda d: d["meters"][0].update(reserve_bp=10_001), "meters[0].reserve_bp"),
        (lambda d: d["homes"][2].update(token="short"), "homes[2].token"),
        (lambda d: d["homes"][0].update(sell_price=100), "homes[0].sell_price"),
        (lambda d: d["homes"][0].update(colour="red"), "homes[0].colour"),
        (lambda d: d.update(telemetry={"max_age": 3}), "telemetry.max_age"),
    ],
)
def test_errors_name_the_key(change: Any, key: str) -> None:
    data = config_dict()
    change(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data, base=Path("/tmp"))
    assert err.value.key == key
    assert str(err.value).startswith(key)


def test_duplicates_are_refused() -> None:
    data = config_dict()
    data["meters"].append(dict(data["meters"][0]))
    with pytest.raises(ConfigError, match="twice"):
        parse_config(data, base=Path("/tmp"))
    data = config_dict()
    data["homes"][1]["token"] = data["homes"][0]["token"]
    with pytest.raises(ConfigError, match="token"):
        parse_config(data, base=Path("/tmp"))


def test_registry_file_as_provisioning_exports_it(tmp_path: Path) -> None:
    meters = [
        {"id": "m1", "mac_key": KEY_A.hex(), "capacity_wh": 9000, "reserve_bp": 2500, "owner": "h1"}
    ]
    (tmp_path / "meters.json").write_text(
        json.dumps({"gateway": "gw1", "exported_at": "x", "meters": meters})
    )
    (tmp_path / "gateway.toml").write_text('[gateway]\nid = "gw1"\nmeters = "meters.json"\n')
    config = load_config(tmp_path / "gateway.toml")
    assert [(m.id, m.capacity_wh, m.reserve_bp, m.owner) for m in config.meters] == [
        ("m1", 9000, 2500, "h1")
    ]
    (tmp_path / "meters.json").write_text('{"meters": [{"id": "m1"}]}')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "gateway.toml")
    assert err.value.key == "meters.json:meters[0].mac_key"


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[gateway\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
