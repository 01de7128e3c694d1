"""The Mosquitto files `ngrid provision gateway` writes, run on a real Mosquitto.

The bundle's conf.d snippet, password file and ACL are installed into a temporary file system
layout and loaded by a real broker; MQTT 5 clients then prove that each meter's credentials can
publish on its own topics and are refused (reason code 0x87, not authorized) on another meter's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from provisioning.gateway import GatewayBundle, GatewayLayout, provision_gateway
from provisioning.inventory import Inventory, MeterRecord, fingerprint
from provisioning.mosquitto import hash_password
from tests.brokers import find_mosquitto, free_port

NOW = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
PASSWORDS = {"m-alpha": "alpha-pass-1", "m-beta": "beta-pass-2"}


def _meter(meter_id: str, key: bytes) -> MeterRecord:
    return MeterRecord(
        id=meter_id,
        gateway="gw1",
        owner=f"owner of {meter_id}",
        capacity_wh=10_000,
        reserve_bp=2_000,
        key_fingerprint=fingerprint(key),
        mqtt_password_hash=hash_password(PASSWORDS[meter_id], salt=os.urandom(12)),
        port="/dev/ttyUSB0",
        chip="ESP32",
        firmware_sha256="0" * 64,
        image_sha256=None,
        self_test="passed",
        provisioned_at=NOW.isoformat(),
        provisioned_by="test@bench",
    )


def _install(bundle: GatewayBundle, paths: list[PurePosixPath]) -> None:
    for installed in paths:
        target = Path(installed)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle.path(installed), target)


@contextlib.contextmanager
def _broker(sysroot: Path, layout: GatewayLayout, port: int) -> Iterator[None]:
    mosquitto, _ = find_mosquitto()
    if mosquitto is None:
        pytest.fail("mosquitto is not installed: sudo apt-get install -y mosquitto")
    log = sysroot / "mosquitto.log"
    main = sysroot / "mosquitto.conf"
    lines = [f"log_dest file {log}", f"include_dir {layout.mosquitto_conf_d}"]
    if os.geteuid() == 0:
        lines.insert(0, "user root")
    main.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([mosquitto, "-c", str(main)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"mosquitto refused the generated config: {err}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


class Client:
    """A blocking MQTT 5 client that records reason codes and received messages."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{user}-{os.getpid()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(user, password)
        self.connected = threading.Event()
        self.connect_rc: ReasonCode | None = None
        self.published: dict[int, ReasonCode] = {}
        self.subscribed: dict[int, list[ReasonCode]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, msg: self.messages.append((msg.topic, msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(self, client, userdata, flags, rc, properties=None):  # type: ignore[no-untyped-def]
        self.connect_rc = rc
        self.connected.set()

    def _on_publish(self, client, userdata, mid, rc, properties=None):  # type: ignore[no-untyped-def]
        self.published[mid] = rc

    def _on_subscribe(self, client, userdata, mid, rcs, properties=None):  # type: ignore[no-untyped-def]
        self.subscribed[mid] = list(rcs)

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in self.published:
            assert time.monotonic() < deadline, "no PUBACK"
            time.sleep(0.01)
        return self.published[info.mid]

    def subscribe(self, topic: str) -> ReasonCode:
        _, mid = self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while mid not in self.subscribed:
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.01)
        return self.subscribed[mid][0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_for(predicate, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def gateway_broker(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """gw1 with meters m-alpha and m-beta, its generated broker config running; yields
    (port, gateway password)."""
    sysroot = tmp_path / "sysroot"
    layout = GatewayLayout(
        etc_dir=PurePosixPath(sysroot / "etc/ngrid"),
        state_dir=PurePosixPath(sysroot / "var/lib/ngrid"),
        mosquitto_dir=PurePosixPath(sysroot / "etc/mosquitto/ngrid"),
        mosquitto_conf_d=PurePosixPath(sysroot / "etc/mosquitto/conf.d"),
        mosquitto_persistence=PurePosixPath(sysroot / "var/lib/mosquitto"),
    )
    (sysroot / "var/lib/mosquitto").mkdir(parents=True)
    port = free_port()
    with Inventory(path=tmp_path / "inventory.json") as inventory:
        provision_gateway(
            inventory=inventory,
            name="gw1",
            out_dir=tmp_path / "bundle",
            broker_host="127.0.0.1",
            broker_port=port,
            bind="127.0.0.1",
            layout=layout,
            now=NOW,
            by="test@bench",
        )
        for meter_id in PASSWORDS:
            key = os.urandom(32)
            inventory.put_meter(_meter(meter_id, key), mac_key=key)
        bundle = provision_gateway(
            inventory=inventory,
            name="gw1",
            out_dir=tmp_path / "bundle",
            broker_host="127.0.0.1",
            broker_port=port,
            bind="127.0.0.1",
            layout=layout,
            now=NOW,
            by="test@bench",
        )
    assert bundle.meters == ("m-alpha", "m-beta")
    _install(
        bundle,
        [
            layout.mosquitto_conf_d / "ngrid.conf",
            layout.mosquitto_dir / "passwords",
            layout.mosquitto_dir / "acl",
            layout.etc_dir / "gateway.toml",
        ],
    )
    gw_password = tomllib.loads(Path(layout.etc_dir / "gateway.toml").read_text())["mqtt"][
        "password"
    ]
    with _broker(sysroot, layout, port):
        yield port, gw_password


def test_meter_publishes_on_its_own_topics_and_the_gateway_receives(
    gateway_broker: tuple[int, str],
) -> None:
    port, gw_password = gateway_broker
    gateway = Client(port, "gw-gw1", gw_password)
    alpha = Client(port, "m-alpha", PASSWORDS["m-alpha"])
    try:
        assert gateway.connect_rc == 0 and alpha.connect_rc == 0
        assert gateway.subscribe("ngrid/gw1/#").value == 1  # granted QoS 1
        assert alpha.publish("ngrid/gw1/m-alpha/state", b"telemetry").value == 0
        assert alpha.publish("ngrid/gw1/m-alpha/ack", b"ack").value == 0
        assert _wait_for(lambda: len(gateway.messages) == 2)
        assert sorted(t for t, _ in gateway.messages) == [
            "ngrid/gw1/m-alpha/ack",
            "ngrid/gw1/m-alpha/state",
        ]
        # The gateway's commands reach the meter on its cmd topic.
        assert alpha.subscribe("ngrid/gw1/m-alpha/cmd").value == 1
        assert gateway.publish("ngrid/gw1/m-alpha/cmd", b"lock").value == 0
        assert _wait_for(lambda: ("ngrid/gw1/m-alpha/cmd", b"lock") in alpha.messages)
    finally:
        alpha.close()
        gateway.close()


def test_meter_cannot_touch_another_meters_topics(gateway_broker: tuple[int, str]) -> None:
    port, gw_password = gateway_broker
    gateway = Client(port, "gw-gw1", gw_password)
    alpha = Client(port, "m-alpha", PASSWORDS["m-alpha"])
    try:
        gateway.subscribe("ngrid/gw1/#")
        not_authorized = 0x87
        # Forging beta's telemetry, acks or commands is refused by the broker ...
        for leaf in ("state", "ack", "status", "cmd"):
            assert alpha.publish(f"ngrid/gw1/m-beta/{leaf}", b"forged").value == not_authorized
        # ... and so is writing its own cmd topic or anything outside its subtree.
        assert alpha.publish("ngrid/gw1/m-alpha/cmd", b"self-command").value == not_authorized
        assert alpha.publish("ngrid/gw2/m-alpha/state", b"x").value == not_authorized
        # A control message proves the gateway's subscription works, and nothing forged got in.
        assert alpha.publish("ngrid/gw1/m-alpha/state", b"real").value == 0
        assert _wait_for(lambda: gateway.messages)
        assert gateway.messages == [("ngrid/gw1/m-alpha/state", b"real")]
    finally:
        alpha.close()
        gateway.close()


def test_meter_cannot_read_another_meters_commands(gateway_broker: tuple[int, str]) -> None:
    port, gw_password = gateway_broker
    gateway = Client(port, "gw-gw1", gw_password)
    alpha = Client(port, "m-alpha", PASSWORDS["m-alpha"])
    try:
        # Mosquitto 2.0 grants the SUBACK but checks "read" on every delivery: the ACL decides.
        for topic in ("ngrid/gw1/m-beta/cmd", "ngrid/gw1/#", "ngrid/gw1/m-alpha/cmd"):
            alpha.subscribe(topic)
        for meter in ("m-beta", "m-alpha"):
            for leaf in ("cmd", "state"):
                assert gateway.publish(f"ngrid/gw1/{meter}/{leaf}", meter.encode()).value == 0
        # A last command for alpha: the broker delivers one publisher's messages in order, so
        # once it is in, everything published before it has been delivered or withheld.
        assert gateway.publish("ngrid/gw1/m-alpha/cmd", b"sentinel").value == 0
        assert _wait_for(lambda: ("ngrid/gw1/m-alpha/cmd", b"sentinel") in alpha.messages)
        # Its own command arrived (once per matching subscription that the ACL allows) ...
        assert ("ngrid/gw1/m-alpha/cmd", b"m-alpha") in alpha.messages
        # ... and nothing of beta's, nor even its own state topic (meters only write that).
        assert {topic for topic, _ in alpha.messages} == {"ngrid/gw1/m-alpha/cmd"}
    finally:
        alpha.close()
        gateway.close()


def test_wrong_password_and_anonymous_are_refused(gateway_broker: tuple[int, str]) -> None:
    port, _ = gateway_broker
    for user, password in (("m-alpha", PASSWORDS["m-beta"]), ("", "")):
        _refused(port, user, password)


def _refused(port: int, user: str, password: str) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if user:
        client.username_pw_set(user, password)
    codes: list[ReasonCode] = []
    client.on_connect = lambda c, u, f, rc, p=None: codes.append(rc)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert _wait_for(lambda: codes)
        assert codes[0].is_failure, f"{user or 'anonymous'} was let in"
    finally:
        client.loop_stop()
        client.disconnect()


def _self_signed(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (cryptography), as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("ngrid test CA"))
        .issuer_name(name("ngrid test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_listener_from_given_certificates(tmp_path: Path) -> None:
    """With --tls-*, meters connect over TLS with their credentials; plain is loopback-only."""
    sysroot = tmp_path / "sysroot"
    layout = GatewayLayout(
        etc_dir=PurePosixPath(sysroot / "etc/ngrid"),
        state_dir=PurePosixPath(sysroot / "var/lib/ngrid"),
        mosquitto_dir=PurePosixPath(sysroot / "etc/mosquitto/ngrid"),
        mosquitto_conf_d=PurePosixPath(sysroot / "etc/mosquitto/conf.d"),
        mosquitto_persistence=PurePosixPath(sysroot / "var/lib/mosquitto"),
    )
    (sysroot / "var/lib/mosquitto").mkdir(parents=True)
    ca, cert, key = _self_signed(tmp_path)
    plain_port, tls_port = free_port(), free_port()
    with Inventory(path=tmp_path / "inventory.json") as inventory:
        provision_gateway(
            inventory=inventory,
            name="gw1",
            out_dir=tmp_path / "bundle",
            broker_host="127.0.0.1",
            broker_port=plain_port,
            layout=layout,
            now=NOW,
            by="t@b",
        )
        meter_key = os.urandom(32)
        inventory.put_meter(_meter("m-alpha", meter_key), mac_key=meter_key)
        bundle = provision_gateway(
            inventory=inventory,
            name="gw1",
            out_dir=tmp_path / "bundle",
            broker_host="127.0.0.1",
            broker_port=plain_port,
            layout=layout,
            now=NOW,
            by="t@b",
            tls_ca=ca,
            tls_cert=cert,
            tls_key=key,
            tls_port=tls_port,
        )
    certs = layout.mosquitto_dir / "certs"
    _install(
        bundle,
        [
            layout.mosquitto_conf_d / "ngrid.conf",
            layout.mosquitto_dir / "passwords",
            layout.mosquitto_dir / "acl",
            certs / "ca.crt",
            certs / "server.crt",
            certs / "server.key",
        ],
    )
    with _broker(sysroot, layout, tls_port):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(ca))
        client.username_pw_set("m-alpha", PASSWORDS["m-alpha"])
        codes: list[ReasonCode] = []
        published: list[ReasonCode] = []
        client.on_connect = lambda c, u, f, rc, p=None: codes.append(rc)
        client.on_publish = lambda c, u, mid, rc, p=None: published.append(rc)
        client.connect("127.0.0.1", tls_port)
        client.loop_start()
        try:
            assert _wait_for(lambda: codes) and codes[0] == 0
            client.publish("ngrid/gw1/m-alpha/state", b"over tls", qos=1)
            assert (
                _wait_for(lambda: published) and not published[0].is_failure
            )  # 0x10: no subscriber
        finally:
            client.loop_stop()
            client.disconnect()
        # The plain listener answers on loopback only.
        conf = (sysroot / "etc/mosquitto/conf.d/ngrid.conf").read_text().splitlines()
        assert f"listener {plain_port} 127.0.0.1" in conf
