"""Mosquitto password hashes and ACL text (the broker itself runs in tests/integration)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from provisioning.mosquitto import (
    TlsFiles,
    acl_text,
    hash_password,
    mosquitto_conf,
    passwords_text,
    verify_password,
)
from tests.brokers import find_mosquitto


def test_hash_equals_mosquitto_passwd_for_the_same_salt(tmp_path: Path) -> None:
    _, passwd = find_mosquitto()
    if passwd is None:
        pytest.fail("mosquitto_passwd is not installed (package mosquitto)")
    pwfile = tmp_path / "pw"
    pwfile.touch()
    subprocess.run([passwd, "-b", str(pwfile), "m-1", "correct horse"], check=True)
    user, theirs = pwfile.read_text().strip().split(":", 1)
    salt = base64.b64decode(theirs.split("$")[3])
    assert user == "m-1"
    assert hash_password("correct horse", salt=salt) == theirs
    assert verify_password("correct horse", theirs)
    assert not verify_password("correct horsf", theirs)


def test_hash_rejects_empty_password_and_bad_salt() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("", salt=bytes(12))
    with pytest.raises(ValueError, match="12 bytes"):
        hash_password("x", salt=bytes(8))
    assert not verify_password("x", "not-a-hash")


def test_passwords_file_is_sorted_user_colon_hash() -> None:
    text = passwords_text({"m-b": "$7$h2", "gw-x": "$7$h1"})
    assert text == "gw-x:$7$h1\nm-b:$7$h2\n"


def test_acl_gives_each_meter_only_its_own_subtree() -> None:
    text = acl_text(gateway_id="gw1", gateway_user="gw-gw1", meters=["m-b", "m-a"])
    blocks = {
        block.splitlines()[0]: block.splitlines()[1:]
        for block in text.split("\n\n")
        if block.startswith("user ")
    }
    assert blocks["user gw-gw1"] == ["topic readwrite ngrid/gw1/#"]
    for meter in ("m-a", "m-b"):
        rules = blocks[f"user {meter}"]
        assert rules, meter
        assert all(rule.split()[-1].startswith(f"ngrid/gw1/{meter}/") for rule in rules)
        assert not any("#" in rule or "+" in rule for rule in rules)
        assert f"topic read ngrid/gw1/{meter}/cmd" in rules
        assert f"topic write ngrid/gw1/{meter}/state" in rules


def test_conf_with_tls_binds_plain_listener_to_loopback() -> None:
    common = dict(
        gateway_id="gw1",
        port=1883,
        bind="0.0.0.0",
        password_file=PurePosixPath("/etc/mosquitto/ngrid/passwords"),
        acl_file=PurePosixPath("/etc/mosquitto/ngrid/acl"),
        persistence_dir=PurePosixPath("/var/lib/mosquitto"),
    )
    plain = mosquitto_conf(**common)  # type: ignore[arg-type]
    assert "listener 1883 0.0.0.0" in plain.splitlines()
    assert "certfile" not in plain
    tls = TlsFiles(
        cafile=PurePosixPath("/c/ca.crt"),
        certfile=PurePosixPath("/c/s.crt"),
        keyfile=PurePosixPath("/c/s.key"),
    )
    secured = mosquitto_conf(**common, tls=tls, tls_port=8883).splitlines()  # type: ignore[arg-type]
    assert "listener 1883 127.0.0.1" in secured
    assert "listener 8883" in secured
    assert secured.index("certfile /c/s.crt") > secured.index("listener 8883")
    # set_tcp_nodelay: no Nagle delay on commands and acks (a global option, for every listener;
    # tests/integration/test_provision_gateway_broker.py runs Mosquitto on this file).
    for line in ("allow_anonymous false", "persistence true", "set_tcp_nodelay true"):
        assert line in secured and line in plain.splitlines()
