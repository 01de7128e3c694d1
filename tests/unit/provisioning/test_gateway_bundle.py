"""`provision_gateway` and `export_registry`: the bundle's files, identity kept on re-runs."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge.errors import ConfigError
from provisioning.errors import ProvisionError, UnknownGatewayError
from provisioning.gateway import (
    export_registry,
    provision_gateway,
    verify_registration,
)
from provisioning.inventory import Inventory, fingerprint
from provisioning.mosquitto import verify_password
from tests.unit.provisioning.test_inventory import meter

NOW = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)


def make(inv: Inventory, out: Path, **kwargs: object) -> object:
    return provision_gateway(
        inventory=inv,
        name="gw1",
        out_dir=out,
        broker_host="gw1.local",
        now=NOW,
        by="ann@lap",
        **kwargs,  # type: ignore[arg-type]
    )


def test_bundle_files_and_permissions(tmp_path: Path) -> None:
    with Inventory(path=tmp_path / "inv.json") as inv:
        bundle = make(inv, tmp_path / "b")
    root = tmp_path / "b/root"
    for secret in ("etc/ngrid/gateway.key", "etc/ngrid/gateway.toml"):
        assert stat.S_IMODE(os.stat(root / secret).st_mode) == 0o600, secret
    config = tomllib.loads((root / "etc/ngrid/gateway.toml").read_text())
    assert config["gateway"]["id"] == "gw1"
    assert config["mqtt"]["username"] == "gw-gw1"
    assert config["settlement"] == {
        "yield_apy_bp": 500,
        "pool_commission_bp": 250,
        "tokens_per_wh": 1,
        "carbon_mg_per_wh": 820,
    }
    pw_line = (root / "etc/mosquitto/ngrid/passwords").read_text().strip()
    user, hashed = pw_line.split(":", 1)
    assert user == "gw-gw1" and verify_password(config["mqtt"]["password"], hashed)
    unit = (root / "etc/systemd/system/ngrid-gateway.service").read_text().splitlines()
    for line in (
        "User=ngrid",
        "Restart=always",
        "After=network-online.target mosquitto.service",
        "Wants=network-online.target",
        "ExecStart=/opt/ngrid/bin/ngrid gateway run --config /etc/ngrid/gateway.toml",
    ):
        assert line in unit
    assert (root / "usr/lib/sysusers.d/ngrid.conf").read_text().startswith("u ngrid ")
    assert bundle.record.provisioned_by == "ann@lap"  # type: ignore[attr-defined]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (the unit's lines are checked above)")
    with Inventory(path=tmp_path / "inv.json") as inv:
        make(inv, tmp_path / "b")
    unit = (tmp_path / "b/root/etc/systemd/system/ngrid-gateway.service").read_text()
    # ExecStart must exist for `verify`; the Pi's /opt/ngrid/bin/ngrid does not exist here.
    local = tmp_path / "ngrid-gateway.service"
    local.write_text(unit.replace("/opt/ngrid/bin/ngrid", "/bin/true"))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert result.returncode == 0 and "ngrid-gateway.service" not in result.stderr, result.stderr


def test_registration_is_self_signed_and_lists_meters(tmp_path: Path) -> None:
    with Inventory(path=tmp_path / "inv.json") as inv:
        make(inv, tmp_path / "b")
        inv.put_meter(meter("m-1"), mac_key=bytes(range(32)))
        make(inv, tmp_path / "b")
    request = json.loads((tmp_path / "b/registration.json").read_text())
    assert request["gateway_id"] == "gw1" and request["meters"] == ["m-1"]
    public = serialization.load_pem_public_key(
        (tmp_path / "b/root/etc/ngrid/gateway.pub").read_bytes()
    )
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert verify_registration(request) == raw
    with pytest.raises(ValueError, match="does not verify"):
        verify_registration(request | {"meters": ["m-1", "m-evil"]})


def test_rerun_keeps_identity_new_identity_replaces_it(tmp_path: Path) -> None:
    key_file = tmp_path / "b/root/etc/ngrid/gateway.key"
    with Inventory(path=tmp_path / "inv.json") as inv:
        first = make(inv, tmp_path / "b")
        key1 = key_file.read_bytes()
        second = make(inv, tmp_path / "b")
        assert key_file.read_bytes() == key1
        assert second.record == first.record  # type: ignore[attr-defined]
        assert second.reused_identity  # type: ignore[attr-defined]
        third = make(inv, tmp_path / "b", new_identity=True)
        assert key_file.read_bytes() != key1
        assert third.record.key_fingerprint != first.record.key_fingerprint  # type: ignore[attr-defined]
        assert inv.gateway("gw1") == third.record  # type: ignore[attr-defined]


def test_rerun_elsewhere_or_with_a_foreign_key_is_refused(tmp_path: Path) -> None:
    with Inventory(path=tmp_path / "inv.json") as inv:
        make(inv, tmp_path / "b")
        with pytest.raises(ProvisionError, match=r"--out .*b"):
            make(inv, tmp_path / "elsewhere")
    with Inventory(path=tmp_path / "other.json") as other:
        make(other, tmp_path / "foreign")
    shutil.copy(tmp_path / "foreign/root/etc/ngrid/gateway.key", tmp_path / "b/root/etc/ngrid/")
    with (
        Inventory(path=tmp_path / "inv.json") as inv,
        pytest.raises(ProvisionError, match="not the key the inventory recorded"),
    ):
        make(inv, tmp_path / "b")


def test_tls_needs_all_three_files_and_copies_them(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    for f in (ca, cert, key):
        f.write_text(f"-----BEGIN {f.stem}-----\n")
    with Inventory(path=tmp_path / "inv.json") as inv:
        with pytest.raises(ConfigError, match="together"):
            make(inv, tmp_path / "b", tls_ca=ca, tls_cert=cert)
        bundle = make(inv, tmp_path / "b", tls_ca=ca, tls_cert=cert, tls_key=key)
    certs = tmp_path / "b/root/etc/mosquitto/ngrid/certs"
    assert (certs / "server.key").read_text() == key.read_text()
    conf = (tmp_path / "b/root/etc/mosquitto/conf.d/ngrid.conf").read_text()
    assert "keyfile /etc/mosquitto/ngrid/certs/server.key" in conf
    assert bundle.record.broker_port == 8883  # type: ignore[attr-defined]


def test_export_writes_the_secret_registry(tmp_path: Path) -> None:
    key = os.urandom(32)
    with Inventory(path=tmp_path / "inv.json") as inv:
        with pytest.raises(UnknownGatewayError):
            export_registry(inventory=inv, gateway="gw1")
        make(inv, tmp_path / "b")
        inv.put_meter(meter("m-7", key=key), mac_key=key)
        path, count = export_registry(inventory=inv, gateway="gw1", now=NOW)
    assert count == 1 and path == tmp_path / "b/root/etc/ngrid/meters.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["gateway"] == "gw1"
    assert document["meters"] == [
        {
            "id": "m-7",
            "mac_key": key.hex(),
            "capacity_wh": 13_500,
            "reserve_bp": 2_000,
            "owner": "no-4",
        }
    ]
    assert fingerprint(bytes.fromhex(document["meters"][0]["mac_key"])) == fingerprint(key)


def test_the_gateway_loads_the_bundle_and_the_export(tmp_path: Path) -> None:
    """gateway.toml and meters.json, installed where they point, pass the gateway's own loader
    (edge.gateway.config, which refuses unknown keys)."""
    from pathlib import PurePosixPath

    from edge.gateway.config import load_config
    from provisioning.gateway import GatewayLayout

    etc = tmp_path / "etc/ngrid"
    layout = GatewayLayout(
        etc_dir=PurePosixPath(etc), state_dir=PurePosixPath(tmp_path / "var/lib/ngrid")
    )
    key = os.urandom(32)
    with Inventory(path=tmp_path / "inv.json") as inv:
        bundle = make(inv, tmp_path / "b", layout=layout, coordinator_url="http://coord:8700")
        inv.put_meter(meter("m-7", key=key), mac_key=key)
        export_registry(inventory=inv, gateway="gw1", out=etc / "meters.json")
    for name in ("gateway.toml", "gateway.key"):
        shutil.copy2(bundle.path(PurePosixPath(etc) / name), etc / name)  # type: ignore[attr-defined]
    config = load_config(etc / "gateway.toml")
    assert config.id == "gw1"
    assert config.signing_key == etc / "gateway.key"
    assert config.ledger_path == tmp_path / "var/lib/ngrid/ledger.sqlite3"
    assert (config.mqtt.username, config.coordinator.url) == ("gw-gw1", "http://coord:8700")
    assert [(m.id, m.key, m.capacity_wh, m.reserve_bp, m.owner) for m in config.meters] == [
        ("m-7", key, 13_500, 2_000, "no-4")
    ]


def test_homes_get_api_tokens_the_gateway_accepts(tmp_path: Path) -> None:
    """One [[homes]] entry per owner of the gateway's meters: edge.gateway.config loads them and
    each token authenticates its home on the API; re-runs keep the tokens; the inventory holds
    only their fingerprints."""
    import dataclasses
    from pathlib import PurePosixPath
    from types import SimpleNamespace

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from edge.gateway.api import _home, make_app
    from edge.gateway.config import load_config
    from provisioning.gateway import GatewayLayout

    etc = tmp_path / "etc/ngrid"
    layout = GatewayLayout(
        etc_dir=PurePosixPath(etc), state_dir=PurePosixPath(tmp_path / "var/lib/ngrid")
    )
    keys = {m: os.urandom(32) for m in ("m-1", "m-2", "m-3")}
    owners = {"m-1": "no-4", "m-2": "no-6", "m-3": "no-4"}
    with Inventory(path=tmp_path / "inv.json") as inv:
        make(inv, tmp_path / "b", layout=layout)  # the gateway first, then its meters
        for m, key in keys.items():
            inv.put_meter(dataclasses.replace(meter(m, key=key), owner=owners[m]), mac_key=key)
        bundle = make(inv, tmp_path / "b", layout=layout)
        export_registry(inventory=inv, gateway="gw1", out=etc / "meters.json")
        toml_file = bundle.path(PurePosixPath(etc) / "gateway.toml")  # type: ignore[attr-defined]
        shutil.copy2(toml_file, etc / "gateway.toml")
        shutil.copy2(bundle.path(PurePosixPath(etc) / "gateway.key"), etc / "gateway.key")  # type: ignore[attr-defined]
        config = load_config(etc / "gateway.toml")
        tokens = {home.id: home.token for home in config.homes}
        assert sorted(tokens) == ["no-4", "no-6"]
        assert len(set(tokens.values())) == 2 and all(len(t) >= 16 for t in tokens.values())

        app = make_app(SimpleNamespace(config=config))  # type: ignore[arg-type]

        def who(header: str) -> str:
            request = make_mocked_request(
                "GET", "/orders", headers={"Authorization": header}, app=app
            )
            return _home(request)

        for home, token in tokens.items():
            assert who(f"Bearer {token}") == home
        with pytest.raises(web.HTTPUnauthorized):
            who("Bearer " + "x" * 32)

        # The inventory holds fingerprints only; a re-run keeps every token.
        record = inv.gateway("gw1")
        assert record.home_tokens == {h: fingerprint(t.encode()) for h, t in tokens.items()}
        inventory_text = (tmp_path / "inv.json").read_text()
        assert not any(token in inventory_text for token in tokens.values())
        make(inv, tmp_path / "b", layout=layout)
        again = tomllib.loads(toml_file.read_text())["homes"]
        assert {h["id"]: h["token"] for h in again} == tokens
        # A new owner gets a new token; the others keep theirs.
        key = os.urandom(32)
        inv.put_meter(dataclasses.replace(meter("m-4", key=key), owner="no-8"), mac_key=key)
        make(inv, tmp_path / "b", layout=layout)
        grown = {h["id"]: h["token"] for h in tomllib.loads(toml_file.read_text())["homes"]}
        assert grown.keys() == {"no-4", "no-6", "no-8"}
        assert {h: grown[h] for h in tokens} == tokens
