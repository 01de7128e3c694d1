"""``ngrid coordinator verify`` and ``serve`` as an operator runs them (subprocesses)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from edge.batch import encode_batch
from tests.unit.coordinator.pipeline import GatewaySim, reseal

NGRID = shutil.which("ngrid") or str(Path(sys.executable).with_name("ngrid"))


def ngrid(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGRID, "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("batches")
    sim = GatewaySim(gateway="gw-cli")
    t1, t2 = sim.pair(), sim.pair()
    b1 = sim.seal(settle_ids=[t1.id])
    sim.pair()
    b2 = sim.seal()
    out = {"reg": d / "registration.json", "b1": d / "b1.batch", "b2": d / "b2.batch"}
    out["reg"].write_text(json.dumps(sim.registration(), indent=2) + "\n")
    out["b1"].write_bytes(encode_batch(b1))
    out["b2"].write_bytes(encode_batch(b2))
    t = b2.trades[0]
    bad = reseal(b2, sim.key, trades=(dataclasses.replace(t, price=t.price + 3), *b2.trades[1:]))
    out["bad"] = d / "bad.batch"
    out["bad"].write_bytes(encode_batch(bad))
    assert t2.id in {r.id for r in b2.trades}
    return out


def test_verify_prints_every_check_and_exits_zero_for_a_good_chain(files: dict[str, Path]) -> None:
    r = ngrid("verify", str(files["b1"]), str(files["b2"]), "--registry", str(files["reg"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gw-cli/1 accepted" in r.stdout and "gw-cli/2 accepted" in r.stdout
    for check in (
        "signature",
        "merkle_root",
        "totals",
        "chain.prev_hash",
        "proof",
        "settlement",
        "replay",
    ):
        assert re.search(rf"^  PASS {re.escape(check)}:", r.stdout, re.M), check
    assert "FAIL" not in r.stdout


def test_verify_names_the_tampered_trade_and_exits_one(files: dict[str, Path]) -> None:
    r = ngrid("verify", str(files["b1"]), str(files["bad"]), "--registry", str(files["reg"]))
    assert r.returncode == 1
    assert "gw-cli/2 refused" in r.stdout
    assert re.search(
        r"^  FAIL replay.mismatch \[t\d+\]: price: batch \d+, replay \d+", r.stdout, re.M
    ), r.stdout
    assert "not accepted" in r.stderr and "Traceback" not in r.stderr


def test_verify_as_json(files: dict[str, Path]) -> None:
    r = ngrid("verify", str(files["b1"]), "--registry", str(files["reg"]), "--json")
    assert r.returncode == 0
    (result,) = json.loads(r.stdout)
    assert result["verdict"] == "accepted" and result["seq"] == 1


def test_verify_without_the_registry_or_the_predecessor_is_not_ok(files: dict[str, Path]) -> None:
    r = ngrid("verify", str(files["b1"]))
    assert r.returncode == 1 and "FAIL gateway.registered" in r.stdout
    r = ngrid("verify", str(files["b2"]), "--registry", str(files["reg"]))
    assert r.returncode == 1 and "HELD chain.seq" in r.stdout and "1 held" in r.stderr


def test_verify_errors_are_one_line(tmp_path: Path, files: dict[str, Path]) -> None:
    junk = tmp_path / "junk.batch"
    junk.write_text("{}")
    r = ngrid("verify", str(junk))
    assert r.returncode == 1 and "junk.batch" in r.stderr and "Traceback" not in r.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("[settlement]\npool_commission_bp = -1\n")
    r = ngrid("verify", str(files["b1"]), "--config", str(cfg))
    assert r.returncode == 2 and "settlement.pool_commission_bp" in r.stderr
    r = ngrid("verify", str(tmp_path / "missing.batch"))
    assert r.returncode != 0 and "Traceback" not in r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start(
    procs: list[subprocess.Popen[str]], *args: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [NGRID, "coordinator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    procs.append(p)
    return p


def wait_line(p: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    seen = []
    assert p.stdout is not None
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise AssertionError(f"exited {p.poll()}: {''.join(seen)}")
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError("".join(seen))


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_with_the_defaults_anchors_on_soroban_local(
    tmp_path: Path, files: dict[str, Path], procs: list[subprocess.Popen[str]]
) -> None:
    """The README path: soroban-local --deploy, then serve with the default [soroban] section
    (only the port changed, because tests cannot take 8000), register, upload, anchored."""
    secret = tmp_path / "coordinator.secret"
    secret.write_text(Keypair.random().secret)
    token = tmp_path / "admin.token"
    token.write_text("admin-token-0123456789")
    rpc_port, http_port = free_port(), free_port()
    start(
        procs,
        "soroban-local",
        "--port",
        str(rpc_port),
        "--ledger-close-ms",
        "100",
        "--deploy",
        "--secret-file",
        str(secret),
        env={},
    )
    wait_line(procs[0], r"anchor contract C")
    assert ngrid("init-config", str(tmp_path / "coordinator.toml")).returncode == 0
    text = (tmp_path / "coordinator.toml").read_text()
    text = text.replace("port = 8100", f"port = {http_port}")
    text = text.replace("http://127.0.0.1:8000/", f"http://127.0.0.1:{rpc_port}/")
    text = text.replace(
        '# secret_file = "coordinator.secret"', 'secret_file = "coordinator.secret"'
    )
    text = text.replace('# admin_token_file = "admin.token"', 'admin_token_file = "admin.token"')
    text = text.replace("poll_interval_s = 0.5", "poll_interval_s = 0.05")
    (tmp_path / "coordinator.toml").write_text(text)
    serve = start(procs, "serve", "--config", str(tmp_path / "coordinator.toml"), env={})
    url = wait_line(serve, r"listening on (http://\S+)").group(1)

    status, _ = http(
        "POST", url + "/gateways", files["reg"].read_bytes(), {"Content-Type": "application/json"}
    )
    assert status == 401
    status, body = http(
        "POST",
        url + "/gateways",
        files["reg"].read_bytes(),
        {"Authorization": "Bearer admin-token-0123456789", "Content-Type": "application/json"},
    )
    assert status == 201, body
    status, body = http(
        "POST",
        url + "/batches",
        files["b1"].read_bytes(),
        {"Content-Type": "application/json", "Idempotency-Key": "gw-cli:1"},
    )
    assert status == 200 and body["status"] == "accepted", body
    deadline = time.monotonic() + 30
    while True:
        _, body = http("GET", url + "/batches/gw-cli/1")
        anchor = body["anchor"]
        assert isinstance(anchor, dict)
        if anchor["status"] == "anchored":
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    assert isinstance(anchor["ledger"], int) and anchor["ledger"] > 0
    status, receipt = http("GET", url + "/receipts/gw-cli/t1")
    assert status == 200 and receipt["anchor"]["tx_hash"] == anchor["tx_hash"]  # type: ignore[index]


def test_serve_reports_a_bad_config_by_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[soroban]\nrpc_url = "ftp://x"\n')
    r = ngrid("serve", "--config", str(cfg))
    assert r.returncode == 2 and "soroban.rpc_url" in r.stderr
    cfg.write_text('[soroban]\nsecret_file = "nope.secret"\n')
    r = ngrid("serve", "--config", str(cfg))
    assert r.returncode == 2 and "soroban.secret_file" in r.stderr
