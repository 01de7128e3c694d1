"""Every configuration file the project writes means the same thing from any directory.

The rule (docs/gateway.md, "Paths in configuration files"; edge.configfile): a path in a written
configuration is relative to the file's own directory or absolute, never relative to the
writer's current directory. Each writer here writes with a RELATIVE output directory from one
current directory; the real loader then reads the file from ANOTHER one, and every path must
lead to the file that was written. (``make demo`` failed on exactly this: the simulation wrote
``runs/<ts>/gateway/gateway.key`` into a gateway.toml kept in ``runs/<ts>/gateway``.)
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import tomllib
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from coordinator.config import load_config as load_coordinator_config
from edge.configfile import config_path, dumps_toml, toml_value, write_toml
from edge.gateway.config import load_config as load_gateway_config
from edge.gateway.service import load_signing_key
from neighbourgrid.cli import main as ngrid
from neighbourgrid.simulate import run as sim
from neighbourgrid.simulate.homes import make_homes
from provisioning.gateway import GatewayLayout, export_registry, provision_gateway
from provisioning.inventory import GatewayRecord, Inventory, MeterRecord, fingerprint
from provisioning.meter import WifiSettings, meter_config

NOW = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)


@pytest.fixture
def cwds(tmp_path: Path) -> tuple[Path, Path]:
    """(the writer's current directory, the reader's): two unrelated directories."""
    writer, reader = tmp_path / "writer", tmp_path / "elsewhere" / "reader"
    writer.mkdir()
    reader.mkdir(parents=True)
    return writer, reader


def test_simulation_gateway_config(
    cwds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = cwds
    monkeypatch.chdir(writer)
    directory = Path("runs/20250411T000000Z/gateway")  # as `--out runs/<ts>` gives it
    directory.mkdir(parents=True)
    homes = make_homes(4, 7)
    doc = sim._gateway_document(
        sim.SimConfig(homes=4, days=1),
        homes,
        sim.behaviours(homes, 7),
        {h.id: bytes(32) for h in homes},
        {h.id: f"token-of-{h.id}-0123456789" for h in homes},
        directory=directory,
        host="127.0.0.1",
        port=1883,
        username=None,
        password=None,
        coordinator_url="http://127.0.0.1:8100",
    )
    path = sim._write_config(directory / "gateway.toml", doc)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = writer / directory
    text = (written / "gateway.toml").read_text()
    assert 'signing_key = "gateway.key"' in text and 'data_dir = "."' in text
    for cwd in (writer, reader):  # the writer's own directory too: that is where it broke
        monkeypatch.chdir(cwd)
        config = load_gateway_config(written / "gateway.toml")
        assert config.signing_key == written / "gateway.key"
        load_signing_key(config.signing_key)
        assert config.ledger_path == written / "ledger.sqlite3"
        assert config.orderlog_path == written / "orderlog.jsonl"
        assert len(config.homes) == 4
    # The run directory can be moved as a whole.
    moved = reader / "moved"
    shutil.move(writer / "runs", moved)
    config = load_gateway_config(moved / "20250411T000000Z/gateway/gateway.toml")
    assert config.signing_key == moved / "20250411T000000Z/gateway/gateway.key"
    load_signing_key(config.signing_key)


def test_simulation_coordinator_config(
    cwds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = cwds
    monkeypatch.chdir(writer)
    directory = Path("runs/x/coordinator")
    directory.mkdir(parents=True)
    # The files _chain_and_coordinator writes beside the configuration.
    (directory / "admin.token").write_text("an-admin-token-of-some-length")
    (directory / "coordinator.secret").write_text("S" + "A" * 55)
    document = sim._coordinator_document(rpc_url="http://127.0.0.1:8000/", contract_id="")
    sim._write_config(directory / "coordinator.toml", document)
    monkeypatch.chdir(reader)
    written = writer / directory
    config = load_coordinator_config(written / "coordinator.toml")
    assert config.store_path.resolve() == written / "coordinator.sqlite3"
    assert config.http.admin_token_file is not None
    assert config.http.admin_token_file.resolve() == written / "admin.token"
    assert config.http.admin_token() == "an-admin-token-of-some-length"
    assert config.soroban.secret_file is not None
    assert config.soroban.secret_file.resolve() == written / "coordinator.secret"


def test_gateway_init_config(cwds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    writer, reader = cwds
    monkeypatch.chdir(writer)
    assert ngrid(["gateway", "init-config", "--id", "gw9", "--dir", "trial/gw9"]) == 0
    monkeypatch.chdir(reader)
    written = writer / "trial/gw9"
    config = load_gateway_config(written / "gateway.toml")
    assert config.signing_key == written / "gateway.key"
    load_signing_key(config.signing_key)
    assert config.ledger_path == written / "ledger.sqlite3"
    assert config.orderlog_path == written / "orderlog.jsonl"
    assert ngrid(["gateway", "check-config", "--config", str(written / "gateway.toml")]) == 0
    for name in ("gateway.toml", "gateway.key"):
        assert stat.S_IMODE((written / name).stat().st_mode) == 0o600


def test_coordinator_init_config(cwds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    writer, reader = cwds
    monkeypatch.chdir(writer)
    assert ngrid(["coordinator", "init-config", "coord/coordinator.toml"]) == 0
    assert ngrid(["coordinator", "init-config", "coord/coordinator.toml"]) == 1  # not overwritten
    written = writer / "coord"
    # The sample's commented paths, switched on as docs/coordinator.md says to.
    path = written / "coordinator.toml"
    text = path.read_text()
    for key in ("admin_token_file", "secret_file"):
        assert f"# {key} = " in text
        text = text.replace(f"# {key} = ", f"{key} = ")
    path.write_text(text)
    (written / "admin.token").write_text("an-admin-token-of-some-length")
    (written / "coordinator.secret").write_text("S" + "A" * 55)
    monkeypatch.chdir(reader)
    config = load_coordinator_config(path)
    assert config.store_path.resolve() == written / "coordinator.sqlite3"
    assert config.http.admin_token() == "an-admin-token-of-some-length"
    assert config.soroban.secret_file is not None
    assert config.soroban.secret_file.resolve() == written / "coordinator.secret"


def _meter_record(meter_id: str, key: bytes) -> MeterRecord:
    return MeterRecord(
        id=meter_id,
        gateway="gw1",
        owner="no-4",
        capacity_wh=13_500,
        reserve_bp=2_000,
        key_fingerprint=fingerprint(key),
        mqtt_password_hash="$7$101$x$y",
        port="/dev/ttyUSB0",
        chip="esp32",
        firmware_sha256="0" * 64,
        image_sha256=None,
        self_test="pass",
        provisioned_at="2026-06-01T14:00:00+00:00",
        provisioned_by="ann@laptop",
    )


def test_provisioning_gateway_bundle(
    cwds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bundle's configuration files name the Pi's absolute paths (the layout), so the
    gateway reads them from any directory once the bundle is installed (`cp -r root/. /`).
    Installed here under a layout rooted in tmp_path, so the test can install it."""
    writer, reader = cwds
    pi = PurePosixPath(tmp_path.as_posix()) / "pi"
    layout = GatewayLayout(etc_dir=pi / "etc/ngrid", state_dir=pi / "var/lib/ngrid")
    monkeypatch.chdir(writer)
    with Inventory(path=Path("inv.json")) as inv:
        provision = functools.partial(
            provision_gateway,
            inventory=inv,
            name="gw1",
            out_dir=Path("bundles/gw1"),
            broker_host="gw1.local",
            layout=layout,
            now=NOW,
            by="ann@lap",
        )
        provision()
        inv.put_meter(_meter_record("m-1", bytes(range(32))), mac_key=bytes(range(32)))
        bundle = provision()  # again, now that the gateway has a meter
        export_registry(
            inventory=inv, gateway="gw1", out=bundle.path(layout.etc_dir / "meters.json")
        )
        record = inv.gateway("gw1")
    assert record.bundle == str(writer / "bundles/gw1")  # the inventory's path is absolute
    # Install: the bundle's root/ mirrors the Pi's file system.
    installed = Path(str(pi))
    shutil.copytree(bundle.root / installed.relative_to("/"), installed)
    monkeypatch.chdir(reader)
    config = load_gateway_config(installed / "etc/ngrid/gateway.toml")
    assert config.signing_key == installed / "etc/ngrid/gateway.key"
    load_signing_key(config.signing_key)
    assert config.ledger_path == installed / "var/lib/ngrid/ledger.sqlite3"
    assert [m.id for m in config.meters] == ["m-1"]  # meters.json, by its absolute path
    registration = json.loads((writer / "bundles/gw1/registration.json").read_text())
    assert registration["meters"] == ["m-1"]


def test_provisioning_default_layout_writes_only_absolute_paths(
    cwds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, _ = cwds
    monkeypatch.chdir(writer)
    with Inventory(path=Path("inv.json")) as inv:
        bundle = provision_gateway(
            inventory=inv, name="gw1", out_dir=Path("b"), broker_host="h", now=NOW, by="a@b"
        )
    document = tomllib.loads(bundle.path(PurePosixPath("/etc/ngrid/gateway.toml")).read_text())
    for value in (
        document["gateway"]["signing_key"],
        document["gateway"]["meters"],
        document["ledger"]["path"],
    ):
        assert PurePosixPath(value).is_absolute(), value
    conf = bundle.path(PurePosixPath("/etc/mosquitto/conf.d/ngrid.conf")).read_text()
    for line in conf.splitlines():
        if line.split(" ", 1)[0] in ("password_file", "acl_file", "persistence_location"):
            assert PurePosixPath(line.split(" ", 1)[1].strip()).is_absolute(), line
    unit = bundle.path(PurePosixPath("/etc/systemd/system/ngrid-gateway.service")).read_text()
    assert "--config /etc/ngrid/gateway.toml" in unit
    with pytest.raises(ValueError, match="must be absolute"):
        GatewayLayout(etc_dir=PurePosixPath("etc/ngrid"))


def test_meter_config_names_no_files() -> None:
    """The meter's configuration (written to the board's /config.json, which the firmware finds
    by its fixed name) holds identity, broker and battery settings, and no path."""
    record = GatewayRecord(
        id="gw1",
        public_key="ab" * 32,
        key_fingerprint=fingerprint(bytes.fromhex("ab" * 32)),
        broker_host="gw.local",
        broker_port=1883,
        mqtt_user="gw-gw1",
        mqtt_password_hash="$7$101$x$y",
        bundle="/tmp/bundle",
        provisioned_at="2026-06-01T14:00:00+00:00",
        provisioned_by="ann@laptop",
    )
    config = meter_config(
        meter_id="m-1",
        gateway=record,
        mac_key=bytes(32),
        mqtt_password="pw",
        capacity_wh=10_000,
        reserve_bp=2000,
        wifi=WifiSettings(ssid="home", password="secret"),
    )
    assert not [k for k, v in config.items() if isinstance(v, str) and ("/" in v or os.sep in v)]


# ---------------------------------------------------------------------------- edge.configfile


def test_the_writer_applies_the_rule_to_path_values(
    cwds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = cwds
    monkeypatch.chdir(writer)
    Path("cfg").mkdir()
    doc = {
        "gateway": {"id": "gw1", "signing_key": Path("cfg/keys/gateway.key")},
        "ledger": {"path": Path("/var/lib/ngrid/ledger.sqlite3")},
    }
    path = write_toml(Path("cfg/gateway.toml"), doc)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = tomllib.loads(path.read_text())
    assert written["gateway"]["signing_key"] == "keys/gateway.key"
    assert written["ledger"]["path"] == "/var/lib/ngrid/ledger.sqlite3"
    assert config_path(Path("elsewhere/x"), config_dir=Path("cfg")) == str(writer / "elsewhere/x")
    assert config_path(Path("cfg"), config_dir=Path("cfg")) == "."
    monkeypatch.chdir(reader)
    with pytest.raises(ValueError, match="relative path"):
        dumps_toml({"a": {"p": Path("relative/file")}})
    assert not list((writer / "cfg").glob(".*.tmp"))  # no temporary file left behind


def test_toml_value_quotes_like_toml() -> None:
    for value in ('a "quoted" \\ value\n', "ünïcode", 7, True, ["a", 1]):
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value
