"""Shared pieces of the gateway integration tests: a config on a real broker, the service
running in-process, and a meter stand-in.

:class:`MeterStandIn` stands in for issue 5's virtual meter (hil.virtual) until that lands: it
speaks the real wire format (edge.wire, docs/wire.md) over the real Mosquitto -- signed ``state``
messages on ``.../state`` (QoS 1), and for each command an authenticated ``ack`` on ``.../ack``
(``ok`` for a lock whose MAC verifies and which has not expired, unless told not to answer). It
does not model the battery, lock persistence or delivery counting: the firmware does that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.gateway.config import GatewayConfig, parse_config
from edge.gateway.service import GatewayService
from edge.wire import WireError, parse_command, seal

KEYS = {"m-a": bytes(range(32)), "m-b": bytes(range(32, 64))}
TOKENS = {
    "alice": "alice-token-0123456789",
    "bob": "bob-token-0123456789",
    "carol": "carol-token-012345",
}
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def gateway_config(
    directory: Path, *, port: int, prefix: str, coordinator: str = "", **tables: dict[str, Any]
) -> dict[str, Any]:
    """A gateway.toml document (as a dict) for a broker on 127.0.0.1:``port``."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "gateway.key"
    if not key_path.exists():
        key_path.write_bytes(
            SIGNING_KEY.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    data: dict[str, Any] = {
        "gateway": {"id": "gw1", "signing_key": str(key_path), "data_dir": str(directory)},
        "mqtt": {"host": "127.0.0.1", "port": port, "topic_prefix": prefix},
        "api": {"host": "127.0.0.1", "port": 0},
        "coordinator": {"url": coordinator, "backoff_initial_s": 0.1, "backoff_max_s": 0.4},
        "locks": {"timeout_ms": 1500},
        "meters": [
            {"id": "m-a", "mac_key": KEYS["m-a"].hex(), "capacity_wh": 10_000, "owner": "alice"},
            {"id": "m-b", "mac_key": KEYS["m-b"].hex(), "capacity_wh": 5_000, "owner": "bob"},
        ],
        "homes": [{"id": h, "token": t} for h, t in TOKENS.items()],
    }
    for name, table in tables.items():
        data[name] = {**data.get(name, {}), **table}
    return data


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, int | float) else '"' + str(value) + '"'


def toml_text(data: dict[str, Any]) -> str:
    """Write a config dict as TOML (strings, ints, floats, bools; tables; arrays of tables)."""
    lines: list[str] = []
    for name, value in data.items():
        if isinstance(value, list):
            for item in value:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running_gateway(
    config: GatewayConfig, *, clock: Any = None, tick_s: float = 0.05, **kwargs: Any
) -> AsyncIterator[GatewayService]:
    """The service running in-process (``clock``: ms since the epoch, wall time by default;
    ``kwargs`` go to :class:`GatewayService`)."""
    extra = kwargs if clock is None else {"clock": clock, **kwargs}
    service = GatewayService(config=config, tick_s=tick_s, handle_signals=False, **extra)
    task = asyncio.create_task(service.run())
    async with asyncio.timeout(10):
        await service.ready.wait()
        await service.mqtt_connected.wait()
        while service.api_port is None:
            await asyncio.sleep(0.01)
    try:
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(10):
            await task


def load(data: dict[str, Any], directory: Path) -> GatewayConfig:
    return parse_config(data, base=directory)


class Api:
    """The homes' HTTP API as a client sees it."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    async def call(self, method: str, path: str, home: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKENS[home]}"} if home in TOKENS else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json()


class MeterStandIn:
    """A meter on the broker (see the module docstring for what it stands in for)."""

    def __init__(
        self,
        meter: str,
        *,
        port: int,
        prefix: str,
        soc_bp: int = 8000,
        ack: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.meter = meter
        self.key = KEYS[meter]
        self.port = port
        self.prefix = prefix
        self.soc_bp = soc_bp
        self.ack = ack
        self.username = username
        self.password = password
        self.seq = 0
        self.export_wh = 0
        self.commands: list[dict[str, Any]] = []
        self.client: aiomqtt.Client | None = None

    def telemetry(self, **over: Any) -> bytes:
        """A signed ``state`` message; ``ts`` in Unix seconds (docs/wire.md)."""
        self.seq += 1
        body: dict[str, Any] = {
            "v": 1,
            "kind": "state",
            "meter": self.meter,
            "seq": self.seq,
            "ts": int(time.time()),
            "soc_bp": self.soc_bp,
            "import_wh": 0,
            "export_wh": self.export_wh,
            "power_w": 0,
            "locked_wh": 0,
            "fw": "stand-in",
        }
        body.update(over)
        return seal(self.key, body)

    async def publish(self, payload: bytes, leaf: str = "state", meter: str | None = None) -> None:
        assert self.client is not None
        topic = f"{self.prefix}/{meter or self.meter}/{leaf}"
        await self.client.publish(topic, payload, qos=1)

    @contextlib.asynccontextmanager
    async def running(self, *, period: float = 0.5) -> AsyncIterator[MeterStandIn]:
        async with aiomqtt.Client(
            "127.0.0.1", self.port, username=self.username, password=self.password
        ) as client:
            self.client = client
            await client.subscribe(f"{self.prefix}/{self.meter}/cmd", qos=1)
            tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._report(period))]
            await self.publish(self.telemetry())
            try:
                yield self
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await t

    async def _report(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            await self.publish(self.telemetry())

    async def _listen(self) -> None:
        assert self.client is not None
        async for message in self.client.messages:
            payload = bytes(message.payload)  # type: ignore[arg-type]
            try:
                cmd = parse_command(payload, key=self.key, meter=self.meter)
            except WireError as err:
                self.commands.append({"error": err.reason})
                continue
            self.commands.append(
                {
                    "cmd": cmd.kind,
                    "trade": cmd.trade,
                    "wh": cmd.wh,
                    "exp": cmd.exp,
                    "seq": cmd.seq,
                    "retain": message.retain,
                    "qos": message.qos,
                }
            )
            if not self.ack:
                continue
            fresh = int(time.time()) <= cmd.exp
            self.seq += 1
            reply = {
                "v": 1,
                "kind": "ack",
                "meter": self.meter,
                "seq": self.seq,
                "ts": int(time.time()),
                "cmd": cmd.seq,
                "op": cmd.kind,
                "trade": cmd.trade,
                "ok": 1 if fresh else 0,
                "reason": "ok" if fresh else "expired",
                "locked_wh": cmd.wh if cmd.kind == "lock" and fresh else 0,
            }
            await self.publish(seal(self.key, reply), "ack")


async def eventually(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(step)
