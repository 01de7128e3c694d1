"""``ngrid provision meter``: turn a board on a USB port into a registered meter.

For each port, :func:`provision_meter` runs these steps (each one safe to repeat):

1. *flash* (only with an image): esptool detects the chip, refuses a chip the image is not for,
   optionally erases, writes the image at the chip family's offset and verifies it
   (:mod:`provisioning.flash`);
2. *connect*: open the port, interrupt a running ``main.py`` (Ctrl-C) and enter the raw REPL
   (:class:`provisioning.board.Board`), retrying while a freshly flashed board boots;
3. *identity*: read the board's existing configuration. A provisioned board keeps its meter id,
   MAC key and broker password, and its durable state (sequence numbers, locks), unless
   ``new_identity``; otherwise a fresh id, a 32-byte MAC key and a broker password are drawn
   from ``rng`` and the old identity's state files are removed;
4. *upload* the firmware from ``device/`` (optionally ``mpy-cross``-compiled) and *verify* it:
   every file is hashed on the board and compared;
5. *configure*: write the meter's configuration atomically (temp file, then rename), verify it;
6. *self-test*: run the firmware's on-board self-test;
7. *record*: the meter's MAC key goes to the key store, its record (fingerprint, password hash,
   chip, firmware digest, who and when) to the inventory; then soft-reset the board to start it.

:func:`provision_meters` runs several ports at once (one thread per port, a progress bar each)
and reports each port's outcome; one failing board does not stop the others.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Protocol

from provisioning.board import Board, FirmwareFile, tree_digest
from provisioning.errors import (
    BoardStuckError,
    NoBoardError,
    ProvisionError,
    UploadVerificationError,
    WrongChipError,
)
from provisioning.flash import ImageInfo, chip_key
from provisioning.flash import flash as esptool_flash
from provisioning.gateway import installer_identity
from provisioning.inventory import (
    GatewayRecord,
    Inventory,
    MeterRecord,
    fingerprint,
    validate_id,
)
from provisioning.mosquitto import hash_password, verify_password
from provisioning.selftest import run_self_test

__all__ = [
    "CONFIG_PATH",
    "MeterOutcome",
    "MeterSpec",
    "ProgressBar",
    "WifiSettings",
    "meter_config",
    "provision_meter",
    "provision_meters",
]

#: Where the meter's configuration lives on the board's filesystem.
CONFIG_PATH = "/config.json"
#: The firmware's durable state (device/ngmeter/store.py), kept with an identity, dropped with it.
STATE_FILES = ("/state.json", "/state.tmp")

Random = Callable[[int], bytes]
_HOME_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ProgressBar(Protocol):
    """What the flow needs of a progress bar (``tqdm`` fits): ``update(n)`` and ``close()``."""

    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


ProgressFactory = Callable[[str, int, int], ProgressBar]  # (label, total bytes, slot)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(label: str, total: int, slot: int) -> ProgressBar:
    return _NoBar()


@dataclass(frozen=True, kw_only=True)
class WifiSettings:
    """The home network the meter joins (written into its configuration)."""

    ssid: str
    password: str


@dataclass(frozen=True, kw_only=True)
class MeterSpec:
    """One board to provision: its port, and the meter's owner and battery.

    ``owner``: the home's id on the gateway's order API (1-64 of ``[A-Za-z0-9_.-]``, the
    gateway's rule); ``capacity_wh``: usable battery capacity in Wh (> 0); ``reserve_bp``: the
    state of charge (basis points, 0-10000) trading never goes below; ``meter_id``: a chosen id
    for a new meter (default ``m-`` and 8 random hex digits).
    """

    port: str
    owner: str
    capacity_wh: int
    reserve_bp: int = 2000
    meter_id: str | None = None

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise ValueError(f"capacity must be a positive number of Wh, not {self.capacity_wh}")
        if not 0 <= self.reserve_bp <= 10_000:
            raise ValueError(f"reserve must be 0-10000 basis points, not {self.reserve_bp}")
        if self.meter_id is not None:
            validate_id(self.meter_id, what="meter")
        if not _HOME_ID.match(self.owner):
            raise ValueError(
                f"owner {self.owner!r} is not a home id: use 1-64 letters, digits, '.', '_' or "
                "'-' (the home's id on the gateway's order API, e.g. no-4)"
            )


@dataclass(frozen=True, kw_only=True)
class MeterOutcome:
    """What happened on one port: the record written, or the error that stopped it."""

    port: str
    record: MeterRecord | None = None
    error: ProvisionError | None = None
    reused_identity: bool = False
    flashed: bool = False
    uploaded: int = 0


def meter_config(
    *,
    meter_id: str,
    gateway: GatewayRecord,
    mac_key: bytes,
    mqtt_password: str,
    capacity_wh: int,
    reserve_bp: int,
    wifi: WifiSettings | None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration file written to the board (``CONFIG_PATH``), as a dict for JSON.

    Keys are those of the firmware's schema (``device/ngmeter/config.py``), which rejects any
    other; settings not given here take the firmware's documented defaults. ``settings`` adds
    further firmware settings (``report_s``, ``hal`` pins ...); it may not override the identity,
    broker or battery keys set here (ValueError).
    """
    config: dict[str, Any] = {
        "device_id": meter_id,
        "gateway_id": gateway.id,
        "broker_host": gateway.broker_host,
        "broker_port": gateway.broker_port,
        "broker_user": meter_id,
        "broker_password": mqtt_password,
        "mac_key": mac_key.hex(),
        "capacity_wh": capacity_wh,
        "reserve_bp": reserve_bp,
    }
    if wifi is not None:
        config["wifi_ssid"] = wifi.ssid
        config["wifi_password"] = wifi.password
    clash = sorted(set(settings or {}) & set(config))
    if clash:
        raise ValueError(f"settings may not override {', '.join(clash)}")
    config.update(settings or {})
    return config


def _existing_identity(raw: bytes | None) -> tuple[str, bytes, str] | None:
    """(meter id, MAC key, broker password) from a board's configuration, if it is usable."""
    if raw is None:
        return None
    try:
        config = json.loads(raw)
        meter_id = validate_id(str(config["device_id"]), what="meter")
        key = bytes.fromhex(config["mac_key"])
        password = str(config["broker_password"])
    except (ValueError, KeyError, TypeError):
        return None
    if len(key) != 32 or not password:
        return None
    return meter_id, key, password


def _connect(port: str, *, attempts: int, timeout: float) -> Board:
    """Open the board and reach its raw REPL, retrying while it boots (after a flash/reset)."""
    last: ProvisionError | None = None
    for attempt in range(attempts):
        board = Board(port=port, timeout=timeout)
        try:
            board.interrupt()
            return board
        except (NoBoardError, BoardStuckError) as err:
            board.close()
            last = err
            if attempt + 1 < attempts:
                time.sleep(1.0)
    assert last is not None
    raise last


def _chip_of(machine: str) -> str | None:
    """The chip named in ``sys.implementation._machine`` ("... with ESP32S3"), or None."""
    words = machine.replace("-", "").upper().split()
    for word in reversed(words):
        if word.startswith("ESP32"):
            try:
                return chip_key(word)
            except ProvisionError:
                return None
    return None


def provision_meter(
    *,
    inventory: Inventory,
    spec: MeterSpec,
    gateway: str,
    files: Sequence[FirmwareFile],
    image: ImageInfo | None = None,
    erase: bool = False,
    expect_chip: str | None = None,
    new_identity: bool = False,
    wifi: WifiSettings | None = None,
    settings: Mapping[str, Any] | None = None,
    self_test: bool = True,
    now: datetime | None = None,
    by: str | None = None,
    rng: Random = os.urandom,
    progress: ProgressFactory = no_progress,
    slot: int = 0,
    lock: threading.Lock | None = None,
    connect_attempts: int = 5,
    timeout: float = 10.0,
    flasher: Callable[..., str] = esptool_flash,
) -> MeterOutcome:
    """Provision the board on ``spec.port`` as a meter of ``gateway`` (steps in the module doc).

    ``files`` is the firmware (:func:`provisioning.board.firmware_files`); ``image`` a checked
    MicroPython image to flash first (:func:`provisioning.flash.check_image`), ``erase`` erases
    the whole flash before. ``expect_chip`` refuses a board of another family even without an
    image. ``settings``: further firmware settings for the configuration (see
    :func:`meter_config`). ``self_test`` runs :func:`provisioning.selftest.run_self_test`
    (False skips it, recorded as "skipped").
    ``lock`` serialises inventory writes between threads. Raises the
    :mod:`provisioning.errors` of each step; the inventory is written only at the very end, so
    a failed run leaves no record.
    """
    lock = lock or threading.Lock()
    with lock:  # TinyDB is not thread-safe: every inventory access holds the lock
        gw = inventory.gateway(gateway)
    now = now or datetime.now(UTC)
    by = by or installer_identity()
    port = spec.port
    flashed_chip: str | None = None

    if image is not None:
        bar = progress(f"{port} flash", image.size, slot)
        try:
            flashed_chip = flasher(port, image, erase=erase, progress=bar.update)
        finally:
            bar.close()

    board = _connect(port, attempts=connect_attempts, timeout=timeout)
    try:
        machine = board.machine()
        chip = flashed_chip or _chip_of(machine)
        if expect_chip is not None and (chip is None or chip_key(chip) != chip_key(expect_chip)):
            found = chip or machine
            raise WrongChipError(
                f"the board runs MicroPython for {found!r}, not {expect_chip}: use the right "
                "board or drop --chip",
                port=port,
                found=found,
                expected=expect_chip,
            )

        existing = None if new_identity else _existing_identity(board.read_file(CONFIG_PATH))
        if existing is not None:
            meter_id, mac_key, mqtt_password = existing
            if spec.meter_id is not None and spec.meter_id != meter_id:
                raise ProvisionError(
                    f"this board is already meter {meter_id!r}; pass --new-identity to make it "
                    f"{spec.meter_id!r} (the old identity stops working)",
                    port=port,
                )
        else:
            meter_id = spec.meter_id or f"m-{rng(4).hex()}"
            mac_key = rng(32)
            mqtt_password = base64.urlsafe_b64encode(rng(18)).decode()
            # The durable state of an earlier identity (its sequence numbers and locks) is not
            # this meter's: a new identity starts from a fresh state.
            for stale in STATE_FILES:
                board.remove(stale)

        total = sum(len(f.data) for f in files)
        bar = progress(f"{port} upload", total, slot)
        try:
            for directory in sorted(
                {str(PurePosixPath("/", f.path).parent) for f in files} - {"/"}
            ):
                board.makedirs(PurePosixPath(directory))
            for file in files:
                board.write_file("/" + file.path, file.data, progress=bar.update)
                # A module left from an earlier upload in the other form would shadow or
                # confuse this one (MicroPython imports name.py before name.mpy).
                stem, _, suffix = file.path.rpartition(".")
                if suffix in ("py", "mpy"):
                    board.remove(f"/{stem}.{'mpy' if suffix == 'py' else 'py'}")
        finally:
            bar.close()
        board.verify(list(files))

        config = meter_config(
            meter_id=meter_id,
            gateway=gw,
            mac_key=mac_key,
            mqtt_password=mqtt_password,
            capacity_wh=spec.capacity_wh,
            reserve_bp=spec.reserve_bp,
            wifi=wifi,
            settings=settings,
        )
        config_bytes = (json.dumps(config, sort_keys=True) + "\n").encode()
        board.write_file_atomic(CONFIG_PATH, config_bytes)
        if board.read_file(CONFIG_PATH) != config_bytes:
            raise UploadVerificationError(
                "the configuration read back from the board differs from what was written: "
                "re-run the command",
                port=port,
                paths=(CONFIG_PATH,),
            )

        result = "skipped"
        if self_test:
            run_self_test(board, meter_id=meter_id, mac_key=mac_key)
            result = "passed"
        board.soft_reset()
    finally:
        board.close()

    with lock:
        previous = inventory.find_meter(meter_id)
    password_hash = (
        previous.mqtt_password_hash
        if previous is not None and verify_password(mqtt_password, previous.mqtt_password_hash)
        else hash_password(mqtt_password, salt=rng(12))
    )
    record = MeterRecord(
        id=meter_id,
        gateway=gw.id,
        owner=spec.owner,
        capacity_wh=spec.capacity_wh,
        reserve_bp=spec.reserve_bp,
        key_fingerprint=fingerprint(mac_key),
        mqtt_password_hash=password_hash,
        port=port,
        chip=CHIP_NAMES.get(chip_key(chip)) if chip else None,
        firmware_sha256=tree_digest(list(files)),
        image_sha256=image.sha256 if image is not None else None,
        self_test=result,
        provisioned_at=now.astimezone(UTC).isoformat(timespec="seconds"),
        provisioned_by=by,
    )
    with lock:
        inventory.put_meter(record, mac_key=mac_key)
    return MeterOutcome(
        port=port,
        record=record,
        reused_identity=existing is not None,
        flashed=image is not None,
        uploaded=len(files),
    )


def _names() -> dict[str, str]:
    from esptool.targets import CHIP_DEFS

    return {key: cls.CHIP_NAME for key, cls in CHIP_DEFS.items()}


CHIP_NAMES = _names()


def provision_meters(
    *,
    inventory: Inventory,
    specs: Sequence[MeterSpec],
    gateway: str,
    files: Sequence[FirmwareFile],
    progress: ProgressFactory = no_progress,
    **options: Any,
) -> list[MeterOutcome]:
    """Provision every board in ``specs`` in parallel (one thread per port).

    Checks the gateway first (:class:`UnknownGatewayError` before any board is touched) and
    refuses a port listed twice (ValueError). ``options`` are passed to
    :func:`provision_meter`. Returns one :class:`MeterOutcome` per spec, in order; a board's
    :class:`ProvisionError` is in its outcome, not raised.
    """
    inventory.gateway(gateway)
    ports = [spec.port for spec in specs]
    if len(set(ports)) != len(ports):
        raise ValueError("the same --port is listed twice")
    lock = threading.Lock()

    def one(slot: int, spec: MeterSpec) -> MeterOutcome:
        try:
            return provision_meter(
                inventory=inventory,
                spec=spec,
                gateway=gateway,
                files=files,
                progress=progress,
                slot=slot,
                lock=lock,
                **options,
            )
        except ProvisionError as err:
            return MeterOutcome(port=spec.port, error=err)

    if len(specs) == 1:
        return [one(0, specs[0])]
    with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="provision") as pool:
        return list(pool.map(one, range(len(specs)), specs))
