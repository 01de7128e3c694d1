"""Write edge/wire/vectors.json, the golden vectors of the meter wire format (docs/wire.md).

The canonical bytes below are written out by hand, in the order docs/wire.md defines (sorted keys,
compact JSON); the MACs come from the ``openssl`` command line, independently of both
implementations under test (device/ngmeter/wire.py and edge/wire). Run it only to add vectors:

    .venv/bin/python tests/unit/wire/make_vectors.py
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parents[3] / "edge" / "wire" / "vectors.json"
KEY = bytes(range(32)).hex()
KEY2 = "a5" * 32


def openssl_hmac(key_hex: str, data: bytes) -> str:
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{key_hex}"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return out.strip().split("= ")[-1]


# (name, key, canonical bytes of the fields without mac)
MESSAGES = [
    (
        "state",
        KEY,
        '{"export_wh":1520,"fw":"0.1.0","import_wh":48211,"kind":"state","locked_wh":500,'
        '"meter":"m-001","power_w":-1830,"seq":1042,"soc_bp":7350,"ts":1767225600,"v":1}',
    ),
    (
        "state-empty-battery",
        KEY2,
        '{"export_wh":0,"fw":"0.1.0","import_wh":0,"kind":"state","locked_wh":0,'
        '"meter":"home_7.b:2","power_w":0,"seq":0,"soc_bp":0,"ts":0,"v":1}',
    ),
    (
        "delivery",
        KEY,
        '{"delivered_wh":480,"end":1767226500,"kind":"delivery","meter":"m-001","seq":1043,'
        '"start":1767225600,"trade":"t-000017","ts":1767226501,"v":1,"wh":500}',
    ),
    (
        "ack-ok",
        KEY,
        '{"cmd":77,"kind":"ack","locked_wh":500,"meter":"m-001","ok":1,"op":"lock",'
        '"reason":"ok","seq":1044,"trade":"t-000017","ts":1767225601,"v":1}',
    ),
    (
        "ack-insufficient-reserve",
        KEY,
        '{"cmd":78,"kind":"ack","locked_wh":500,"meter":"m-001","ok":0,"op":"lock",'
        '"reason":"insufficient_reserve","seq":1045,"trade":"t-000018","ts":1767225602,"v":1}',
    ),
    (
        "lock",
        KEY,
        '{"end":1767226500,"exp":1767225630,"kind":"lock","meter":"m-001","seq":77,'
        '"start":1767225600,"trade":"t-000017","ts":1767225600,"v":1,"wh":500}',
    ),
    (
        "release",
        KEY,
        '{"exp":1767225700,"kind":"release","meter":"m-001","seq":79,"trade":"t-000017",'
        '"ts":1767225670,"v":1}',
    ),
    (
        "ping",
        KEY,
        '{"exp":1767225730,"kind":"ping","meter":"m-001","seq":80,"ts":1767225700,"v":1}',
    ),
]

RFC4231 = [
    ("RFC 4231 test case 1", "0b" * 20, b"Hi There".hex()),
    ("RFC 4231 test case 2", b"Jefe".hex(), b"what do ya want for nothing?".hex()),
    (
        "RFC 4231 test case 6 (key longer than the block)",
        "aa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
    ),
]


def main() -> None:
    messages = []
    for name, key, body in MESSAGES:
        mac = openssl_hmac(key, body.encode())
        fields = json.loads(body)
        payload = (
            "{"
            + ",".join(f'"{k}":{json.dumps(v)}' for k, v in sorted({**fields, "mac": mac}.items()))
            + "}"
        )
        messages.append(
            {
                "name": name,
                "key": key,
                "fields": fields,
                "canonical": body,
                "mac": mac,
                "payload": payload,
            }
        )
    good = messages[0]
    flipped = good["mac"][:-1] + ("0" if good["mac"][-1] != "0" else "1")
    invalid = [
        {
            "name": "bad-mac",
            "key": KEY,
            "reason": "bad_mac",
            "payload": good["payload"].replace(good["mac"], flipped),
        },
        {"name": "wrong-key", "key": KEY2, "reason": "bad_mac", "payload": good["payload"]},
        {
            "name": "not-canonical-spaces",
            "key": KEY,
            "reason": "malformed",
            "payload": good["payload"].replace(",", ", "),
        },
        {
            "name": "missing-field",
            "key": KEY,
            "reason": "malformed",
            "payload": good["payload"].replace('"fw":"0.1.0",', ""),
        },
        {
            "name": "extra-field",
            "key": KEY,
            "reason": "malformed",
            "payload": good["payload"].replace('"fw":', '"extra":1,"fw":'),
        },
        {
            "name": "float-value",
            "key": KEY,
            "reason": "malformed",
            "payload": good["payload"].replace('"power_w":-1830', '"power_w":-1830.0'),
        },
        {
            "name": "unknown-kind",
            "key": KEY,
            "reason": "malformed",
            "payload": good["payload"].replace('"kind":"state"', '"kind":"stats"'),
        },
        {"name": "not-json", "key": KEY, "reason": "malformed", "payload": '{"kind":'},
    ]
    hmacs = [
        {"name": n, "key": k, "data": d, "mac": openssl_hmac(k, bytes.fromhex(d))}
        for n, k, d in RFC4231
    ]
    doc = {
        "about": "Golden vectors of the meter wire format (docs/wire.md). Canonical bytes written "
        "by hand; MACs from `openssl dgst -sha256 -mac HMAC`. Loaded by the firmware tests (on "
        "CPython and in the MicroPython VM) and by the gateway's tests.",
        "hmac_sha256": hmacs,
        "messages": messages,
        "invalid": invalid,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}: {len(messages)} messages, {len(invalid)} invalid, {len(hmacs)} hmac")


if __name__ == "__main__":
    main()
