"""``ngrid gateway`` through the CLI: config errors by key before anything starts, a trial config,
and a run on the embedded amqtt broker that stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from tests.brokers import free_port
from tests.integration.gateway_harness import Api, eventually

NGRID = str(Path(sys.executable).with_name("ngrid"))


def ngrid(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NGRID, *args], capture_output=True, text=True, timeout=60)


def test_config_errors_name_the_key_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[gateway]\nid = "gw1"\n[mqtt]\nport = "1883"\n')
    result = ngrid("gateway", "run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == "ngrid: error: mqtt.port: expected an integer, got '1883'"
    assert not (tmp_path / "ledger.sqlite3").exists()  # nothing started
    missing_key = ngrid("gateway", "check-config", "--config", str(config.with_name("nope.toml")))
    assert missing_key.returncode == 2 and "cannot read" in missing_key.stderr


def test_init_config_then_check(tmp_path: Path) -> None:
    result = ngrid("gateway", "init-config", "--id", "gw9", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gateway.key").stat().st_mode & 0o777 == 0o600
    check = ngrid("gateway", "check-config", "--config", str(tmp_path / "gateway.toml"))
    assert check.returncode == 0 and check.stdout.startswith("gateway gw9:")
    again = ngrid("gateway", "init-config", "--id", "gw9", "--dir", str(tmp_path))
    assert again.returncode == 2 and "not overwriting" in again.stderr


async def test_embedded_broker_run_and_sigterm(tmp_path: Path) -> None:
    ngrid("gateway", "init-config", "--id", "gw1", "--dir", str(tmp_path))
    config = tmp_path / "gateway.toml"
    mqtt_port, api_port = free_port(), free_port()
    text = config.read_text().replace("port = 1883", f"port = {mqtt_port}")
    text = text.replace("port = 8080", f"port = {api_port}")
    token = text.split('token = "')[1].split('"')[0]
    # A meter the gateway knows, so the junk below reaches the wire parser (and is refused there).
    text += '\n[[meters]]\nid = "m-x"\nmac_key = "' + "00" * 32 + '"\n'
    text += 'capacity_wh = 10000\nowner = "home-1"\n'
    config.write_text(text)
    proc = subprocess.Popen(
        [NGRID, "gateway", "run", "--config", str(config), "--embedded-broker"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        api = Api(api_port)

        async def status() -> dict[str, Any] | None:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        f"{api.base}/v1/status", headers={"Authorization": f"Bearer {token}"}
                    ) as r,
                ):
                    return await r.json() if r.status == 200 else None
            except OSError:
                return None

        async def up() -> bool:
            body = await status()
            return body is not None and body["mqtt_connected"]

        async def refused_malformed() -> bool:
            body = await status()
            return body is not None and body["refusals"].get("malformed", 0) >= 1

        await eventually(up, timeout=30)
        assert (await status() or {}).get("refusals") == {}
        async with aiomqtt.Client("127.0.0.1", mqtt_port) as client:  # the broker is there
            await client.publish("ngrid/gw1/m-x/state", b"junk", qos=1)
        await eventually(refused_malformed, timeout=10)  # received, parsed, refused, counted
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert '"event": "stopped"' in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
