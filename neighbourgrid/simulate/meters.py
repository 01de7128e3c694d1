"""The homes' meters as the simulation drives them.

A meter reports its battery's state of charge and energy counters over MQTT and answers the
gateway's lock commands. The simulation owns the physics (:mod:`neighbourgrid.simulate.physics`)
and tells each meter what its sensors read before asking it to report.

:class:`StandInMeter` STANDS IN for issue 5's virtual meter (``hil.virtual``: the real MicroPython
firmware, CPython-hosted or in the MicroPython VM) until that lands: it speaks the gateway's
current wire format (:mod:`edge.gateway.meterwire`: canonical JSON + HMAC-SHA256) over the real
broker -- signed telemetry on ``<prefix>/<meter>/state`` (QoS 1), and for each lock command
whose MAC verifies and whose expiry has not passed (on the simulated clock), a signed ack on
``<prefix>/<meter>/ack`` that accepts the lock if the SoC above the reserve covers it and what
is already locked, or refuses it. It is not the firmware; the run's summary says so
(``stages.meters``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import aiomqtt

from edge.batch import canonical_bytes
from edge.gateway.meterwire import sign_payload

__all__ = ["StandInMeter"]


class StandInMeter:
    """One meter on the broker (see the module docstring for what it stands in for).

    ``meter`` id, ``key`` its 32-byte MAC key, ``capacity_wh`` and ``reserve_bp`` of its
    battery, ``clock`` the simulated time in ms since the epoch.
    """

    def __init__(
        self,
        *,
        meter: str,
        key: bytes,
        capacity_wh: int,
        reserve_bp: int,
        host: str,
        port: int,
        prefix: str,
        clock: Callable[[], int],
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.meter = meter
        self.key = key
        self.capacity_wh = capacity_wh
        self.reserve_bp = reserve_bp
        self.host = host
        self.port = port
        self.prefix = prefix
        self.clock = clock
        self.username = username
        self.password = password
        self.seq = 0
        self.soc_bp = 0
        self.import_wh = 0
        self.export_wh = 0
        self.power_w = 0
        self.locks: dict[str, int] = {}  # trade -> Wh
        self.acks = 0
        self.refusals = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    def sense(self, *, soc_bp: int, import_wh: int, export_wh: int, power_w: int) -> None:
        """Set what the meter's sensors read now (SoC in bp, cumulative counters in Wh)."""
        self.soc_bp = soc_bp
        self.import_wh = import_wh
        self.export_wh = export_wh
        self.power_w = power_w

    async def start(self) -> None:
        """Connect, subscribe to the command topic and start answering commands."""
        self._client = await self._stack.enter_async_context(
            aiomqtt.Client(
                self.host,
                self.port,
                identifier=f"sim-{self.meter}",
                username=self.username,
                password=self.password,
            )
        )
        await self._client.subscribe(f"{self.prefix}/{self.meter}/cmd", qos=1)
        self._task = asyncio.create_task(self._listen(), name=f"meter-{self.meter}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    async def report(self, *, ts: int) -> int:
        """Publish one signed telemetry message stamped ``ts``; return its sequence number."""
        assert self._client is not None
        self.seq += 1
        body = {
            "dev": self.meter,
            "seq": self.seq,
            "ts": ts,
            "soc_bp": self.soc_bp,
            "import_wh": self.import_wh,
            "export_wh": self.export_wh,
            "power_w": self.power_w,
            "locked_wh": sum(self.locks.values()),
        }
        await self._client.publish(
            f"{self.prefix}/{self.meter}/state", sign_payload(self.key, body), qos=1
        )
        return self.seq

    def release_all(self) -> None:
        """Forget the locks of the interval that ended (the energy was delivered or not)."""
        self.locks.clear()

    async def _listen(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            try:
                body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                mac = body.pop("mac")
            except (ValueError, KeyError, TypeError):
                continue
            want = hmac.new(self.key, canonical_bytes(body), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(str(mac), want) or body.get("dev") != self.meter:
                continue
            if body.get("exp", 0) < self.clock():
                continue
            if body.get("cmd") == "release":
                self.locks.pop(body.get("trade", ""), None)
                continue
            if body.get("cmd") != "lock":
                continue
            wh = int(body["wh"])
            locked = sum(self.locks.values())
            above_wh = (self.soc_bp - self.reserve_bp) * self.capacity_wh // 10_000
            ok = above_wh - locked >= wh
            if ok:
                self.locks[body["trade"]] = wh
                self.acks += 1
            else:
                self.refusals += 1
            self.seq += 1
            reply: dict[str, Any] = {"dev": self.meter, "seq": self.seq, "trade": body["trade"]}
            reply["ok"] = ok
            if not ok:
                reply["reason"] = "soc"
            await self._client.publish(
                f"{self.prefix}/{self.meter}/ack", sign_payload(self.key, reply), qos=1
            )
