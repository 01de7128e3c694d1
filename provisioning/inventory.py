"""The installer's inventory: which gateways and meters exist, and who provisioned them when.

Two files side by side:

* the **inventory** (``ngrid-inventory.json`` by default), a TinyDB JSON file the installer can
  open in any editor: tables ``gateways`` and ``meters``, each key shown only by its fingerprint
  (:func:`fingerprint`), meters' broker passwords only as Mosquitto hashes;
* the **key store** (``<inventory>.keys.json``, permissions 0600): the meters' 32-byte MAC keys in
  hex. It is read only by :func:`provisioning.gateway.export_registry`, the explicit secret export
  that hands a gateway its meter registry.

Every write replaces the whole file atomically (:mod:`provisioning.files`), so a crash or a pulled
laptop plug leaves the previous inventory, never half a record. The key store is written before
the inventory, so a meter in the inventory always has its key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from provisioning.errors import InventoryError, UnknownGatewayError
from provisioning.files import atomic_write_text

__all__ = [
    "DEFAULT_INVENTORY",
    "GatewayRecord",
    "Inventory",
    "KeyStore",
    "MeterRecord",
    "fingerprint",
    "validate_id",
]

DEFAULT_INVENTORY = Path("ngrid-inventory.json")

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def validate_id(value: str, *, what: str) -> str:
    """Return ``value`` if it is a usable gateway or meter id, else raise :class:`ValueError`.

    An id is 1-32 characters of lower-case letters, digits and ``-``, starting with a letter or
    digit: it is one MQTT topic level (``ngrid/<gateway>/<meter>/state``) and a Mosquitto user
    name, so ``/``, ``+``, ``#`` and spaces are out.
    """
    if not _ID.match(value):
        raise ValueError(
            f"{what} id {value!r} is not usable: use 1-32 lower-case letters, digits and '-'"
        )
    return value


def fingerprint(key: bytes) -> str:
    """``sha256:`` and the first 16 hex digits of SHA-256 over the raw key bytes.

    Short enough to read aloud and compare; reveals nothing useful about a secret key.
    """
    return "sha256:" + hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class GatewayRecord:
    """One gateway as the inventory keeps it (no secret: the private key stays in its bundle).

    ``public_key`` is the raw 32-byte Ed25519 public key in hex; ``provisioned_at`` is ISO 8601
    UTC; ``provisioned_by`` is ``user@host`` of the installer's laptop. ``home_tokens`` maps
    each home on the gateway's order API to the :func:`fingerprint` of its bearer token (the
    tokens themselves are only in the bundle's 0600 gateway.toml).
    """

    id: str
    public_key: str
    key_fingerprint: str
    broker_host: str
    broker_port: int
    mqtt_user: str
    mqtt_password_hash: str
    bundle: str
    provisioned_at: str
    provisioned_by: str
    home_tokens: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class MeterRecord:
    """One meter as the inventory keeps it (its MAC key lives in the :class:`KeyStore`).

    ``capacity_wh`` is the battery's usable capacity in Wh; ``reserve_bp`` the state of charge in
    basis points (0-10000) that trading never goes below. ``mqtt_password_hash`` is the Mosquitto
    ``$7$`` hash of the meter's broker password. ``firmware_sha256`` is the digest over the
    uploaded firmware files (:func:`provisioning.board.tree_digest`); ``image_sha256`` the
    MicroPython image flashed, if one was.
    """

    id: str
    gateway: str
    owner: str
    capacity_wh: int
    reserve_bp: int
    key_fingerprint: str
    mqtt_password_hash: str
    port: str
    chip: str | None
    firmware_sha256: str
    image_sha256: str | None
    self_test: str
    provisioned_at: str
    provisioned_by: str


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces its JSON file atomically on every write (see module doc)."""

    def __init__(self, path: str | Path, *, mode: int = 0o644) -> None:
        self.path = Path(path)
        self.mode = mode

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise InventoryError(f"cannot read {self.path}: {err.strerror}") from err
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InventoryError(
                f"{self.path} is not valid JSON (line {err.lineno}): fix it or restore a backup"
            ) from err
        if not isinstance(data, dict):
            raise InventoryError(f"{self.path} is not a TinyDB inventory (top level not an object)")
        return data

    def write(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        atomic_write_text(self.path, text, mode=self.mode)

    def close(self) -> None:
        pass


def _record(cls: type[Any], doc: Mapping[str, Any]) -> Any:
    names = {field.name for field in dataclasses.fields(cls)}
    try:
        return cls(**{key: value for key, value in doc.items() if key in names})
    except TypeError as err:
        raise InventoryError(f"inventory record {dict(doc)!r} is incomplete: {err}") from err


class Inventory:
    """The installer's inventory file (see module doc). Use as a context manager or ``close()``.

    ``Inventory(path=Path("ngrid-inventory.json"))``; the key store sits beside it
    (:attr:`keystore`).
    """

    def __init__(self, *, path: Path = DEFAULT_INVENTORY) -> None:
        self.path = Path(path)
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        self.keystore = KeyStore(path=self.path.with_name(self.path.stem + ".keys.json"))

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # gateways ---------------------------------------------------------------------------------
    def put_gateway(self, record: GatewayRecord) -> None:
        """Insert or replace the gateway ``record.id``."""
        self._db.table("gateways").upsert(dataclasses.asdict(record), Query().id == record.id)

    def find_gateway(self, gateway_id: str) -> GatewayRecord | None:
        doc = self._db.table("gateways").get(Query().id == gateway_id)
        return None if doc is None else _record(GatewayRecord, doc)

    def gateway(self, gateway_id: str) -> GatewayRecord:
        """The gateway ``gateway_id``; raises :class:`UnknownGatewayError` if it is not here."""
        record = self.find_gateway(gateway_id)
        if record is None:
            known = ", ".join(sorted(g.id for g in self.gateways())) or "none yet"
            raise UnknownGatewayError(
                f"gateway {gateway_id!r} is not in the inventory {self.path} (known: {known}); "
                f"run `ngrid provision gateway --name {gateway_id}` first, or pass --inventory",
                gateway=gateway_id,
            )
        return record

    def gateways(self) -> list[GatewayRecord]:
        return sorted(
            (_record(GatewayRecord, doc) for doc in self._db.table("gateways").all()),
            key=lambda record: record.id,
        )

    # meters -----------------------------------------------------------------------------------
    def put_meter(self, record: MeterRecord, *, mac_key: bytes) -> None:
        """Insert or replace meter ``record.id``, keeping ``mac_key`` in the key store.

        Raises ValueError if ``mac_key`` is not 32 bytes or does not match the record's
        fingerprint, and :class:`UnknownGatewayError` if the meter's gateway is not here.
        """
        if len(mac_key) != 32:
            raise ValueError("a meter's MAC key is 32 bytes")
        if fingerprint(mac_key) != record.key_fingerprint:
            raise ValueError("MAC key does not match the record's key_fingerprint")
        self.gateway(record.gateway)
        self.keystore.put(record.id, mac_key)
        self._db.table("meters").upsert(dataclasses.asdict(record), Query().id == record.id)

    def find_meter(self, meter_id: str) -> MeterRecord | None:
        doc = self._db.table("meters").get(Query().id == meter_id)
        return None if doc is None else _record(MeterRecord, doc)

    def meters(self, *, gateway: str | None = None) -> list[MeterRecord]:
        """All meters (of ``gateway`` if given), sorted by id."""
        table = self._db.table("meters")
        docs = table.all() if gateway is None else table.search(Query().gateway == gateway)
        return sorted((_record(MeterRecord, doc) for doc in docs), key=lambda r: r.id)


class KeyStore:
    """The meters' MAC keys, ``{"meters": {id: {"mac_key": hex}}}`` in a 0600 JSON file."""

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as err:
            raise InventoryError(f"key store {self.path} is unreadable: {err}") from err
        meters = data.get("meters") if isinstance(data, dict) else None
        if not isinstance(meters, dict):
            raise InventoryError(f"key store {self.path} has no 'meters' table")
        return meters

    def put(self, meter_id: str, mac_key: bytes) -> None:
        meters = self._load()
        meters[meter_id] = {"mac_key": mac_key.hex()}
        text = json.dumps({"meters": meters}, indent=2, sort_keys=True) + "\n"
        atomic_write_text(self.path, text, mode=0o600)

    def get(self, meter_id: str) -> bytes:
        """The MAC key of ``meter_id``; raises :class:`InventoryError` if it is missing."""
        entry = self._load().get(meter_id)
        if entry is None:
            raise InventoryError(
                f"no MAC key for meter {meter_id!r} in {self.path}: re-provision the meter with "
                "`ngrid provision meter --new-identity`"
            )
        try:
            key = bytes.fromhex(entry["mac_key"])
        except (KeyError, ValueError, TypeError) as err:
            raise InventoryError(f"malformed MAC key of meter {meter_id!r} in {self.path}") from err
        if len(key) != 32:
            raise InventoryError(f"MAC key for meter {meter_id!r} in {self.path} is not 32 bytes")
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._load()))
