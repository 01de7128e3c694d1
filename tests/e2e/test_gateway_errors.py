"""The gateway fails loudly and promptly, never hangs: an API port that is taken ends
``ngrid gateway run`` with a one-line error, and a task that fails stops the whole service even
while its MQTT connection is stuck (the failure must reach every task, whatever aiomqtt does
with the cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge.gateway.core import Effect, GatewayCore
from edge.gateway.service import GatewayService
from tests.brokers import Broker
from tests.integration.gateway_harness import gateway_config, load, toml_text

NGRID = str(Path(sys.executable).with_name("ngrid"))


def test_api_port_in_use_is_a_one_line_error(
    tmp_path: Path, mosquitto: Broker, topic_prefix: str
) -> None:
    """Before the fix the gateway logged ``mqtt_connected`` and then hung forever (the failed
    ``http`` task's group never finished); here it must exit 1 within the timeout."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        data = gateway_config(
            tmp_path, port=mosquitto.port, prefix=topic_prefix, api={"port": port}
        )
        config = tmp_path / "gateway.toml"
        config.write_text(toml_text(data))
        result = subprocess.run(
            [NGRID, "gateway", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ngrid: error:")]
    assert errors == [f"ngrid: error: api.port: port {port} on 127.0.0.1 is in use"]
    assert "Traceback" not in result.stderr
    assert '"event": "stopped"' in result.stderr  # the ledger and log were closed


async def _end(run: asyncio.Task[None]) -> None:
    """After a failed test, end a service that swallowed its cancellation: cancel every other
    task again until ``run`` is done, so the test fails instead of hanging the event loop's
    teardown (which waits for every task it cancels)."""
    for _ in range(40):
        if run.done():
            return
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.wait({run}, timeout=0.25)


class Relay:
    """A TCP relay between the gateway and the real Mosquitto that a test can cut
    (:meth:`drop`: the gateway sees its connection lost) and whose replies from the broker it can
    hold back (``hold``) and then hand over at a moment of its choosing (:meth:`release`, which
    writes them synchronously). Stands in for the network between the two."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.hold = False
        self.held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, reply: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if reply and self.hold:
                    self.held.append((writer, data))
                else:
                    writer.write(data)
                    await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer, reply=False), self._pump(up_reader, writer, reply=True)
        )

    def drop(self) -> None:
        """Close every connection (both sides)."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def release(self) -> None:
        """Stop holding; write what was held to the gateway now (loopback: it is readable on
        the gateway's socket before this returns)."""
        self.hold = False
        for writer, data in self.held:
            writer.write(data)
        self.held.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            self.drop()


class FailingCore(GatewayCore):
    """The real core, whose timer tick fails once ``fail_with`` is set: it calls it (the test's
    hook, run at exactly that moment), then raises -- a task (``ticker``) that fails while the
    others run."""

    fail_with: Callable[[], None] | None = None

    def tick(self, *, now: int) -> list[Effect]:
        hook = FailingCore.fail_with
        if hook is not None:
            hook()
            raise RuntimeError("injected tick failure")
        return super().tick(now=now)


async def test_a_failing_task_stops_the_service_while_mqtt_reconnects(
    tmp_path: Path, mosquitto: Broker, topic_prefix: str
) -> None:
    """The connection to the broker is lost; while the gateway reconnects, the ticker fails in
    the very step the broker's CONNACK reaches the gateway (as the failed ``http`` task did in
    the reported hang). The TaskGroup cancels ``mqtt`` while aiomqtt waits for that CONNACK, and
    Python 3.11's ``asyncio.wait_for`` returns the CONNACK instead of raising the cancellation.
    Before the fix ``mqtt`` carried on subscribing and reading messages, so the group -- and
    ``run`` -- never finished; now it notices it is being cancelled and stops."""
    relay = Relay(mosquitto)
    async with relay.running():
        config = load(gateway_config(tmp_path, port=relay.port, prefix=topic_prefix), tmp_path)
        FailingCore.fail_with = None
        service = GatewayService(
            config=config, tick_s=0.05, handle_signals=False, core_class=FailingCore
        )
        run = asyncio.create_task(service.run())
        try:
            async with asyncio.timeout(20):
                await service.mqtt_connected.wait()
                while service.api_port is None:
                    await asyncio.sleep(0.01)
                relay.hold = True
                relay.drop()
                while service.mqtt_connected.is_set() or not relay.held:
                    await asyncio.sleep(0.005)  # reconnecting; the CONNACK is held back
            FailingCore.fail_with = relay.release
            # Not `await run` under a timeout: awaiting a task that ignores its cancellation
            # would hang the test too.
            await asyncio.wait({run}, timeout=15)
            assert run.done(), "the service still runs 15 s after its ticker failed"
            with pytest.raises(ExceptionGroup) as caught:
                await run
        finally:
            FailingCore.fail_with = None
            await _end(run)
    failures = caught.value.subgroup(RuntimeError)
    assert failures is not None
    assert [str(e) for e in failures.exceptions] == ["injected tick failure"]
