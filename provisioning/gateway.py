"""``ngrid provision gateway`` and ``ngrid provision export``: everything a gateway Pi needs.

:func:`provision_gateway` writes a *bundle* directory whose ``root/`` mirrors the Pi's file
system, so installing it is one copy (``sudo cp -r bundle/root/. /``, see docs/provisioning.md)::

    <bundle>/registration.json                       for the coordinator (signed, no secret)
    <bundle>/root/etc/ngrid/gateway.toml             0600: settings, broker password, homes' tokens
    <bundle>/root/etc/ngrid/gateway.key              0600: Ed25519 private key (PKCS#8 PEM)
    <bundle>/root/etc/ngrid/gateway.pub              Ed25519 public key (PEM)
    <bundle>/root/etc/ngrid/meters.json              0600: the meter registry (`provision export`)
    <bundle>/root/etc/systemd/system/ngrid-gateway.service
    <bundle>/root/usr/lib/sysusers.d/ngrid.conf      the dedicated ``ngrid`` system user
    <bundle>/root/etc/mosquitto/conf.d/ngrid.conf    listener, persistence, TLS
    <bundle>/root/etc/mosquitto/ngrid/passwords      0640: per-meter $7$ hashes
    <bundle>/root/etc/mosquitto/ngrid/acl            each meter confined to its own topics
    <bundle>/root/etc/mosquitto/ngrid/certs/         copies of the TLS files, when given

Re-running is safe: the key pair, the gateway's broker password and the homes' API tokens are
read back from the bundle and kept (unless ``new_identity``); the password file, ACL,
registration and ``[[homes]]`` (one per owner of the gateway's meters) are rebuilt from the
inventory's current meters. Run it again after provisioning meters, then :func:`export_registry`.
"""

from __future__ import annotations

import base64
import dataclasses
import getpass
import json
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.configfile import toml_value
from edge.errors import ConfigError
from edge.gateway.registration import (
    canonical_json,
    registration,
    verify_registration,
    write_registration,
)
from provisioning.errors import ProvisionError
from provisioning.files import atomic_write_bytes, atomic_write_text
from provisioning.inventory import GatewayRecord, Inventory, fingerprint, validate_id
from provisioning.mosquitto import (
    TlsFiles,
    acl_text,
    hash_password,
    mosquitto_conf,
    passwords_text,
)

__all__ = [
    "GatewayBundle",
    "GatewayLayout",
    "canonical_json",
    "export_registry",
    "installer_identity",
    "provision_gateway",
    "verify_registration",
]

Random = Callable[[int], bytes]
HOME_TOKEN_MIN = 16  # edge.gateway.config refuses shorter tokens


def installer_identity() -> str:
    """``user@host`` of whoever runs the command, for the inventory's ``provisioned_by``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, kw_only=True)
class GatewayLayout:
    """Where things live on the gateway Pi (the paths written into its configuration files).

    Every path is absolute: the files written from it are read on the Pi by processes whose
    current directory is not the installer's (docs/gateway.md, "Paths in configuration
    files"); a relative one is refused (ValueError)."""

    etc_dir: PurePosixPath = PurePosixPath("/etc/ngrid")  # noqa: RUF009 (immutable)
    state_dir: PurePosixPath = PurePosixPath("/var/lib/ngrid")  # noqa: RUF009 (immutable)
    mosquitto_dir: PurePosixPath = PurePosixPath("/etc/mosquitto/ngrid")  # noqa: RUF009 (immutable)
    mosquitto_conf_d: PurePosixPath = PurePosixPath("/etc/mosquitto/conf.d")  # noqa: RUF009 (immutable)
    mosquitto_persistence: PurePosixPath = PurePosixPath("/var/lib/mosquitto")  # noqa: RUF009 (immutable)
    ngrid_bin: PurePosixPath = PurePosixPath("/opt/ngrid/bin/ngrid")  # noqa: RUF009 (immutable)
    user: str = "ngrid"

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, PurePosixPath) and not value.is_absolute():
                raise ValueError(f"GatewayLayout.{item.name} must be absolute, not {str(value)!r}")


@dataclass(frozen=True, kw_only=True)
class GatewayBundle:
    """What :func:`provision_gateway` wrote: the bundle directory, its record, its meters."""

    directory: Path
    record: GatewayRecord
    meters: tuple[str, ...]
    reused_identity: bool

    @property
    def root(self) -> Path:
        return self.directory / "root"

    def path(self, installed: PurePosixPath) -> Path:
        """The bundle file that will be installed at ``installed`` on the Pi."""
        return self.root / installed.relative_to("/")


def _local(root: Path, installed: PurePosixPath) -> Path:
    return root / installed.relative_to("/")


def _load_identity(key_path: Path, toml_path: Path) -> tuple[Ed25519PrivateKey, str] | None:
    if not key_path.exists():
        return None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as err:
        raise ProvisionError(
            f"{key_path} is not a readable Ed25519 private key ({err}); restore it from a "
            "backup, or pass --new-identity to make a new one (the coordinator must then "
            "re-register the gateway)"
        ) from err
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvisionError(f"{key_path} holds a key that is not Ed25519")
    try:
        password = tomllib.loads(toml_path.read_text())["mqtt"]["password"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(
            f"cannot read the broker password back from {toml_path} ({err}); fix the file or "
            "pass --new-identity",
            key="mqtt.password",
        ) from err
    if not isinstance(password, str) or not password:
        raise ConfigError(f"empty broker password in {toml_path}", key="mqtt.password")
    return key, password


def _load_home_tokens(toml_path: Path) -> dict[str, str]:
    """The homes' API tokens already in the bundle's gateway.toml ({} if there is none)."""
    if not toml_path.exists():
        return {}
    try:
        homes = tomllib.loads(toml_path.read_text()).get("homes", [])
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read {toml_path} ({err})", key="homes") from err
    tokens: dict[str, str] = {}
    for i, home in enumerate(homes if isinstance(homes, list) else [None]):
        token = home.get("token") if isinstance(home, dict) else None
        if not isinstance(token, str) or len(token) < HOME_TOKEN_MIN or "id" not in home:
            raise ConfigError(
                f"{toml_path} has a home without a readable token: fix the file, or pass "
                "--new-identity to draw new tokens for every home",
                key=f"homes[{i}].token",
            )
        tokens[str(home["id"])] = token
    return tokens


def new_home_token(rng: Random) -> str:
    """A home's bearer token for the gateway's order API: 24 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(rng(24)).decode()


def gateway_toml(
    *,
    gateway_id: str,
    layout: GatewayLayout,
    mqtt_user: str,
    mqtt_password: str,
    broker_port: int,
    coordinator_url: str,
    api_port: int,
    generated: str,
    homes: Mapping[str, str] | None = None,
) -> str:
    """The gateway's configuration file; every setting is written out with its default.

    ``homes`` maps each home id on the order API to its bearer token (``[[homes]]`` tables).
    Paths are the layout's, absolute: the file is read on the Pi, from any directory.
    """
    etc, state = layout.etc_dir, layout.state_dir
    home_tables = "".join(
        f"\n[[homes]]\nid = {toml_value(home)}\ntoken = {toml_value(token)}\n"
        for home, token in sorted((homes or {}).items())
    )
    return f"""\
# neighbourgrid gateway {gateway_id}: configuration for `ngrid gateway run --config`.
# Generated {generated} by `ngrid provision gateway`. Keep it 0600: it holds the broker password.
# Units: energy Wh, power W, state of charge basis points (0-10000), prices integer ticks per kWh.

[gateway]
id = {toml_value(gateway_id)}
# Ed25519 private key that signs settlement batches (PKCS#8 PEM, 0600).
signing_key = {toml_value(str(etc / "gateway.key"))}
# Meter registry from `ngrid provision export`: id, MAC key, capacity, reserve, owner.
meters = {toml_value(str(etc / "meters.json"))}

[mqtt]
# The local Mosquitto configured by /etc/mosquitto/conf.d/ngrid.conf.
host = "127.0.0.1"
port = {broker_port}
username = {toml_value(mqtt_user)}
password = {toml_value(mqtt_password)}
topic_prefix = {toml_value(f"ngrid/{gateway_id}")}

[ledger]
# SQLite in WAL mode, synchronous=FULL.
path = {toml_value(str(state / "ledger.sqlite3"))}

[api]
# The homes' order API.
host = "0.0.0.0"
port = {api_port}

[coordinator]
# Where signed batches are uploaded (store-and-forward: trading goes on while it is down).
url = {toml_value(coordinator_url)}

[settlement]
# Defaults from docs/DESIGN: 5 % APY seller yield, 2.5 % pool commission, 1 token per Wh,
# 820 mg CO2 per Wh. Rates in basis points.
yield_apy_bp = 500
pool_commission_bp = 250
tokens_per_wh = 1
carbon_mg_per_wh = 820

# The homes on the order API, one per owner (`ngrid provision meter --owner`) of this gateway's
# meters. Each home sends `Authorization: Bearer <token>`: hand each household its own token.
# Standing policies (sell_above_bp/sell_price, buy_below_bp/buy_price) may be added per home.
{home_tables}"""


def systemd_unit(*, gateway_id: str, layout: GatewayLayout) -> str:
    """``ngrid-gateway.service``: dedicated user, restart always, after network-online."""
    return f"""\
# neighbourgrid gateway {gateway_id}. Generated by `ngrid provision gateway`.
[Unit]
Description=neighbourgrid gateway {gateway_id}
Documentation=https://github.com/neighbourgrid/neighbourgrid/blob/main/docs/provisioning.md
Wants=network-online.target
After=network-online.target mosquitto.service
Requires=mosquitto.service

[Service]
Type=simple
User={layout.user}
Group={layout.user}
ExecStart={layout.ngrid_bin} gateway run --config {layout.etc_dir / "gateway.toml"}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=30
StateDirectory={layout.state_dir.name}
StateDirectoryMode=0700
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths={layout.state_dir}

[Install]
WantedBy=multi-user.target
"""


def sysusers_conf(*, layout: GatewayLayout) -> str:
    """systemd-sysusers snippet that creates the gateway's dedicated system user."""
    return f'u {layout.user} - "neighbourgrid gateway" {layout.state_dir}\n'


def provision_gateway(
    *,
    inventory: Inventory,
    name: str,
    out_dir: Path,
    broker_host: str,
    broker_port: int = 1883,
    bind: str = "0.0.0.0",
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_port: int = 8883,
    coordinator_url: str = "http://coordinator.invalid:8700",
    api_port: int = 8080,
    layout: GatewayLayout = GatewayLayout(),
    new_identity: bool = False,
    now: datetime | None = None,
    by: str | None = None,
    rng: Random = os.urandom,
) -> GatewayBundle:
    """Create or refresh gateway ``name``'s bundle in ``out_dir`` and record it in the inventory.

    ``broker_host`` is how meters reach the gateway's broker (a hostname or address on the
    home network); it goes into each meter's configuration. TLS needs all of ``tls_ca``,
    ``tls_cert`` and ``tls_key`` (PEM files, copied into the bundle). ``now`` (UTC) and ``by``
    default to the clock and :func:`installer_identity`; ``rng`` supplies key, password and salt
    bytes. Raises ValueError for a bad name, :class:`ConfigError` for incomplete TLS options or
    an unreadable existing bundle, :class:`ProvisionError` if the bundle's key is not the one
    the inventory recorded.
    """
    gateway_id = validate_id(name, what="gateway")
    now = now or datetime.now(UTC)
    by = by or installer_identity()
    stamp = now.astimezone(UTC).isoformat(timespec="seconds")
    tls_given = [p for p in (tls_ca, tls_cert, tls_key) if p is not None]
    if tls_given and len(tls_given) != 3:
        raise ConfigError("TLS needs --tls-ca, --tls-cert and --tls-key together", key="tls")
    for tls_path in tls_given:
        if not Path(tls_path).is_file():
            raise ConfigError(f"TLS file {tls_path} does not exist", key="tls")

    out_dir = Path(out_dir)
    root = out_dir / "root"
    key_path = _local(root, layout.etc_dir / "gateway.key")
    toml_path = _local(root, layout.etc_dir / "gateway.toml")
    mqtt_user = f"gw-{gateway_id}"

    previous = inventory.find_gateway(gateway_id)
    identity = None if new_identity else _load_identity(key_path, toml_path)
    if identity is None and previous is not None and not new_identity:
        raise ProvisionError(
            f"gateway {gateway_id!r} was provisioned before (bundle {previous.bundle}) but "
            f"{key_path} is missing: pass --out {previous.bundle} to refresh that bundle, or "
            "--new-identity to replace the gateway's key (the coordinator must re-register it)"
        )
    if identity is None:
        private_key = Ed25519PrivateKey.from_private_bytes(rng(32))
        mqtt_password = base64.urlsafe_b64encode(rng(18)).decode()
    else:
        private_key, mqtt_password = identity
    public_raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    if (
        identity is not None
        and previous is not None
        and previous.key_fingerprint != fingerprint(public_raw)
    ):
        raise ProvisionError(
            f"{key_path} (key {fingerprint(public_raw)}) is not the key the inventory recorded "
            f"for gateway {gateway_id!r} ({previous.key_fingerprint}): check --out, or pass "
            "--new-identity to replace it"
        )
    reuse_hash = (
        previous is not None
        and identity is not None
        and previous.mqtt_password_hash
        and previous.mqtt_user == mqtt_user
    )
    gateway_hash = (
        previous.mqtt_password_hash
        if reuse_hash and previous is not None
        else hash_password(mqtt_password, salt=rng(12))
    )

    meters = inventory.meters(gateway=gateway_id)
    meter_ids = tuple(meter.id for meter in meters)
    # One home per owner, its token kept across re-runs (new ones for new owners).
    known_tokens = {} if new_identity else _load_home_tokens(toml_path)
    home_tokens = {
        owner: known_tokens.get(owner) or new_home_token(rng)
        for owner in sorted({meter.owner for meter in meters})
    }

    # Secrets first, each written atomically with its final permissions.
    atomic_write_bytes(
        key_path,
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    atomic_write_bytes(
        _local(root, layout.etc_dir / "gateway.pub"),
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    atomic_write_text(
        toml_path,
        gateway_toml(
            gateway_id=gateway_id,
            layout=layout,
            mqtt_user=mqtt_user,
            mqtt_password=mqtt_password,
            broker_port=broker_port,
            coordinator_url=coordinator_url,
            api_port=api_port,
            generated=stamp,
            homes=home_tokens,
        ),
        mode=0o600,
    )

    tls: TlsFiles | None = None
    if tls_ca is not None and tls_cert is not None and tls_key is not None:
        certs = layout.mosquitto_dir / "certs"
        tls = TlsFiles(
            cafile=certs / "ca.crt", certfile=certs / "server.crt", keyfile=certs / "server.key"
        )
        for source, target, mode in (
            (tls_ca, tls.cafile, 0o644),
            (tls_cert, tls.certfile, 0o644),
            (tls_key, tls.keyfile, 0o640),
        ):
            atomic_write_bytes(_local(root, target), Path(source).read_bytes(), mode=mode)

    password_file = layout.mosquitto_dir / "passwords"
    acl_file = layout.mosquitto_dir / "acl"
    hashes = {mqtt_user: gateway_hash} | {m.id: m.mqtt_password_hash for m in meters}
    atomic_write_text(_local(root, password_file), passwords_text(hashes), mode=0o640)
    atomic_write_text(
        _local(root, acl_file),
        acl_text(gateway_id=gateway_id, gateway_user=mqtt_user, meters=meter_ids),
    )
    atomic_write_text(
        _local(root, layout.mosquitto_conf_d / "ngrid.conf"),
        mosquitto_conf(
            gateway_id=gateway_id,
            port=broker_port,
            bind=bind,
            password_file=password_file,
            acl_file=acl_file,
            persistence_dir=layout.mosquitto_persistence,
            tls=tls,
            tls_port=tls_port,
        ),
    )
    atomic_write_text(
        _local(root, PurePosixPath("/etc/systemd/system/ngrid-gateway.service")),
        systemd_unit(gateway_id=gateway_id, layout=layout),
    )
    atomic_write_text(
        _local(root, PurePosixPath("/usr/lib/sysusers.d/ngrid.conf")),
        sysusers_conf(layout=layout),
    )

    write_registration(
        out_dir / "registration.json",
        registration(private_key, gateway_id=gateway_id, meters=meter_ids, created_at=stamp),
    )

    record = GatewayRecord(
        id=gateway_id,
        public_key=public_raw.hex(),
        key_fingerprint=fingerprint(public_raw),
        broker_host=broker_host,
        broker_port=tls_port if tls is not None else broker_port,
        mqtt_user=mqtt_user,
        mqtt_password_hash=gateway_hash,
        bundle=str(out_dir.resolve()),
        provisioned_at=stamp if previous is None or new_identity else previous.provisioned_at,
        provisioned_by=by if previous is None or new_identity else previous.provisioned_by,
        home_tokens={home: fingerprint(token.encode()) for home, token in home_tokens.items()},
    )
    inventory.put_gateway(record)
    return GatewayBundle(
        directory=out_dir, record=record, meters=meter_ids, reused_identity=identity is not None
    )


def export_registry(
    *,
    inventory: Inventory,
    gateway: str,
    out: Path | None = None,
    now: datetime | None = None,
) -> tuple[Path, int]:
    """Write gateway ``gateway``'s meter registry (with the meters' MAC keys) and return
    ``(path, meter count)``.

    This is the one place secret keys leave the key store. The file (0600) is::

        {"gateway": "gw1", "exported_at": "...Z",
         "meters": [{"id", "mac_key" (64 hex digits), "capacity_wh", "reserve_bp", "owner"}]}

    ``out`` defaults to ``/etc/ngrid/meters.json`` inside the gateway's bundle. Raises
    :class:`UnknownGatewayError` if the gateway is not in the inventory.
    """
    record = inventory.gateway(gateway)
    now = now or datetime.now(UTC)
    meters = []
    for meter in inventory.meters(gateway=gateway):
        key = inventory.keystore.get(meter.id)
        if fingerprint(key) != meter.key_fingerprint:
            raise ProvisionError(
                f"key store entry for meter {meter.id!r} does not match its fingerprint "
                f"{meter.key_fingerprint}: re-provision the meter with --new-identity"
            )
        meters.append(
            {
                "id": meter.id,
                "mac_key": key.hex(),
                "capacity_wh": meter.capacity_wh,
                "reserve_bp": meter.reserve_bp,
                "owner": meter.owner,
            }
        )
    document = {
        "gateway": gateway,
        "exported_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "meters": meters,
    }
    path = Path(out) if out is not None else Path(record.bundle) / "root/etc/ngrid/meters.json"
    atomic_write_text(path, json.dumps(document, indent=2) + "\n", mode=0o600)
    return path, len(meters)
