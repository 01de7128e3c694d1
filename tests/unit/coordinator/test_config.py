"""coordinator.config: defaults that point at soroban-local, errors by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coordinator.config import SAMPLE, default_config, load_config, parse_config
from coordinator.errors import ConfigError
from coordinator.soroban import LOCAL_PASSPHRASE
from edge.gateway.config import parse_config as gateway_parse
from edge.market import Rates


def test_defaults_point_at_the_local_stand_in(tmp_path: Path) -> None:
    c = default_config(tmp_path)
    assert c.soroban.rpc_url == "http://127.0.0.1:8000/"
    assert c.soroban.network_passphrase == LOCAL_PASSPHRASE
    assert c.soroban.contract_id == "" and c.soroban.enabled
    assert c.store_path == tmp_path / "coordinator.sqlite3"
    assert c.rules.rates == Rates() and c.rules.min_reserve_bp == 2000


def test_the_sample_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.toml"
    path.write_text(SAMPLE)
    assert load_config(path) == default_config(tmp_path)


def test_settlement_keys_are_the_gateways(tmp_path: Path) -> None:
    c = parse_config(
        {
            "market": {"interval_s": 600, "policy": "value-time", "max_matches": 4},
            "settlement": {"pool_commission_bp": 300, "tokens_per_wh": 2, "carbon_mg_per_wh": 500},
        },
        base=tmp_path,
    )
    assert c.rules.rates == Rates(
        interval_s=600, commission_ppm=30_000, tokens_per_kwh=2000, carbon_mg_per_kwh=500_000
    )
    assert c.rules.market.policy == "value-time" and c.rules.market.max_matches == 4


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"http": {"port": 70000}}, "http.port"),
        ({"http": {"port": "80"}}, "http.port"),
        ({"http": {"colour": "red"}}, "http.colour"),
        ({"soroban": {"rpc_url": "ftp://x"}}, "soroban.rpc_url"),
        ({"soroban": {"contract_id": "G123"}}, "soroban.contract_id"),
        ({"soroban": {"enabled": "yes"}}, "soroban.enabled"),
        ({"market": {"policy": "random"}}, "market.policy"),
        ({"market": {"max_matches": 0}}, "market.max_matches"),
        ({"settlement": {"pool_commission_bp": 10001}}, "settlement.pool_commission_bp"),
        ({"verify": {"min_reserve_bp": -1}}, "verify.min_reserve_bp"),
        ({"extra": {}}, "extra"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, base=tmp_path)
    assert err.value.key == key


def test_unreadable_files_and_tokens(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "short.token").write_text("abc")
    c = parse_config({"http": {"admin_token_file": "short.token"}}, base=tmp_path)
    with pytest.raises(ConfigError) as err:
        c.http.admin_token()
    assert err.value.key == "http.admin_token_file"
    c = parse_config({"soroban": {"secret_file": "none"}}, base=tmp_path)
    with pytest.raises(ConfigError) as err:
        c.soroban.submitter_config("").keypair()
    assert err.value.key == "soroban.secret_file"


BAD_RULES = [
    ({"settlement": {"pool_commission_bp": 10001}}, "settlement.pool_commission_bp"),
    ({"settlement": {"yield_apy_bp": -1}}, "settlement.yield_apy_bp"),
    ({"settlement": {"tokens_per_wh": "1"}}, "settlement.tokens_per_wh"),
    ({"settlement": {"grid_fee_per_kwh": 2.5}}, "settlement.grid_fee_per_kwh"),
    ({"settlement": {"carbon_mg_per_kwh": 820}}, "settlement.carbon_mg_per_kwh"),  # unknown
    ({"market": {"policy": "fifo"}}, "market.policy"),
    ({"market": {"max_matches": 0}}, "market.max_matches"),
    ({"market": {"interval_s": 0}}, "market.interval_s"),
]


def _gateway(tables: dict[str, Any], base: Path) -> Any:
    return gateway_parse({"gateway": {"id": "gw1"}, **tables}, base=base)


@pytest.mark.parametrize(("tables", "key"), BAD_RULES)
def test_a_bad_rule_names_its_key_in_both_configs(
    tmp_path: Path, tables: dict[str, Any], key: str
) -> None:
    """[market] and [settlement] are read by one reader (edge.settings): the coordinator and
    the gateway refuse the same values with the same key."""
    for parse in (lambda: parse_config(tables, base=tmp_path), lambda: _gateway(tables, tmp_path)):
        with pytest.raises(ConfigError) as caught:
            parse()
        assert caught.value.key == key


def test_both_configs_read_the_same_rules(tmp_path: Path) -> None:
    tables = {
        "market": {"interval_s": 300, "policy": "value-time", "max_matches": 7},
        "settlement": {
            "yield_apy_bp": 123,
            "pool_commission_bp": 10000,
            "tokens_per_wh": 3,
            "carbon_mg_per_wh": 1,
            "grid_fee_per_kwh": 0,
        },
    }
    coordinator = parse_config(tables, base=tmp_path).rules
    gateway = _gateway(tables, tmp_path)
    expected = Rates(
        yield_apy_ppm=12_300,
        interval_s=300,
        commission_ppm=1_000_000,
        tokens_per_kwh=3000,
        carbon_mg_per_kwh=1000,
        grid_fee_per_kwh=0,
    )
    assert coordinator.rates == gateway.rates == expected
    assert coordinator.market == gateway.market_params
    assert (gateway.market_params.policy, gateway.market_params.max_matches) == ("value-time", 7)
