"""The homes' meters as one fleet the simulation steps: the real firmware on CPython (default)
or in the MicroPython VM (``--vm``).

- :class:`CPythonFleet`: each meter is a :class:`neighbourgrid.simulate.firmware.FirmwareMeter`
  (device/ngmeter imported on CPython, hil.virtual's hal over the physics, umqtt's API over
  paho: :class:`hil.virtual.mqttclient.PahoClient`).
- :class:`VmFleet`: each meter's firmware runs in its own MicroPython VM (the WebAssembly port
  pinned in package-lock.json), one long-lived Node process per meter
  (``neighbourgrid/simulate/vm/vm_host.mjs``; the port keeps module-level state, so two VMs
  cannot share a process). Its hal is hil.virtual.simhal's ``SimHal`` (uploaded with the
  firmware) over the clock and sensors of ``vm/simvm.py``. The VM has no sockets, so its MQTT
  client (``vm/simvm.py``) turns the firmware's MQTT calls into events that the host carries
  out on a real connection per meter (:class:`hil.virtual.mqttclient.PahoClient`, with
  ``wait_puback=False``) and hands received messages back in. The relay takes a message from
  the connection (and PUBACKs it) when it passes it into the VM, whose client hands the
  firmware one per ``check_msg``. The firmware itself is unchanged: the same files as on the board.

Both expose the same methods, so the run does not care which one it drives.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hil.virtual.mqttclient import PahoClient
from neighbourgrid.simulate.firmware import FirmwareMeter

__all__ = ["CPythonFleet", "Fleet", "FleetError", "VmFleet"]

VM_DIR = Path(__file__).with_name("vm")


async def _readable(sock: Any, timeout: float) -> None:
    """Wait until ``sock`` is readable or ``timeout`` s passed (just the timeout if None)."""
    if sock is None:
        await asyncio.sleep(timeout)
        return
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)


class FleetError(RuntimeError):
    """A meter host failed (the VM could not start, or the firmware raised in it)."""


class Fleet(Protocol):
    kind: str

    async def add(
        self, *, home: str, config: dict[str, Any], soc: Callable[[], int], seed: int
    ) -> None: ...

    async def step_one(self, home: str) -> None: ...

    def published_seq(self, home: str) -> int: ...

    async def wait_readable(self, home: str, timeout: float) -> None: ...

    def connected(self) -> bool: ...

    def add_energy(self, home: str, *, import_wh: int, export_wh: int, seconds: int) -> None: ...

    def refusals(self) -> int: ...

    async def close(self) -> None: ...


class CPythonFleet:
    """Meters whose firmware runs on CPython in this process."""

    kind = "the real firmware, device/ngmeter, hosted on CPython"

    def __init__(self, *, directory: Path, clock: Callable[[], int]) -> None:
        self.directory = directory
        self.clock = clock
        self.meters: dict[str, FirmwareMeter] = {}

    async def add(
        self, *, home: str, config: dict[str, Any], soc: Callable[[], int], seed: int
    ) -> None:
        self.meters[home] = FirmwareMeter(
            directory=self.directory / home, config=config, soc=soc, clock=self.clock, seed=seed
        )

    async def step_one(self, home: str) -> None:
        """Run ``home``'s firmware until it has handled what it has received."""
        self.meters[home].step()

    def published_seq(self, home: str) -> int:
        """The seq of the last message ``home``'s meter published (-1 before the first)."""
        return int(self.meters[home].runner.store.seq) - 1

    async def wait_readable(self, home: str, timeout: float) -> None:
        """Return when ``home``'s meter has bytes to read from its broker, or after
        ``timeout`` s."""
        client = self.meters[home].runner.client
        await _readable(client.socket() if client is not None else None, timeout)

    def connected(self) -> bool:
        return all(m.connected for m in self.meters.values())

    def add_energy(self, home: str, *, import_wh: int, export_wh: int, seconds: int) -> None:
        self.meters[home].add_energy(import_wh=import_wh, export_wh=export_wh, seconds=seconds)

    def refusals(self) -> int:
        return sum(int(m.runner.meter.refusals) for m in self.meters.values())

    async def close(self) -> None:
        for meter in self.meters.values():
            meter.close()


@dataclass
class _VmMeter:
    home: str
    meter: str
    config: dict[str, Any]
    soc: Callable[[], int]
    proc: asyncio.subprocess.Process | None = None
    relay: PahoClient | None = None
    received: list[tuple[bytes, bytes]] = field(default_factory=list)
    will: tuple[str, bytes, bool, int] | None = None
    imp: int = 0
    exp: int = 0
    power: int = 0
    connected: bool = False
    refusals: int = 0
    published: int = 0
    seq: int = 0  # the firmware's next message seq, as its last step reported it
    errors: list[str] = field(default_factory=list)


class VmFleet:
    """Meters whose firmware runs in the MicroPython VM (see the module docstring)."""

    kind = "the real firmware, device/ngmeter, in the MicroPython VM (WebAssembly, under Node)"

    def __init__(self, *, directory: Path, clock: Callable[[], int], heapsize: int = 512 * 1024):
        self.directory = directory
        self.clock = clock
        self.heapsize = heapsize
        self.meters: dict[str, _VmMeter] = {}

    async def _start(self) -> asyncio.subprocess.Process:
        from hil.virtual.firmware import REPO_ROOT
        from hil.virtual.vm import node_path, vm_available

        node = node_path()
        if node is None or not vm_available():
            raise FleetError(
                "--vm needs Node and the MicroPython VM: run `npm ci` in the repository root"
            )
        return await asyncio.create_subprocess_exec(
            node,
            str(VM_DIR / "vm_host.mjs"),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )

    @staticmethod
    async def _call(proc: asyncio.subprocess.Process, request: dict[str, Any]) -> dict[str, Any]:
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise FleetError("the MicroPython VM host stopped")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise FleetError(f"meter {request.get('meter')}: {answer.get('error')}")
        return answer

    async def add(
        self, *, home: str, config: dict[str, Any], soc: Callable[[], int], seed: int
    ) -> None:
        from hil.virtual.vm import flash_files

        proc = await self._start()
        meter = config["device_id"]
        # the firmware without device/hal.py, hil/virtual/simhal.py and the simulation's side
        files = flash_files("/fw", extra={"simvm.py": (VM_DIR / "simvm.py").read_text()})
        root = f"/m/{meter}"
        files[f"{root}/config.json"] = json.dumps(config)
        code = (
            "import sys\nsys.path.insert(0, '/fw')\nimport simvm\n"
            f"simvm.boot({root!r}, {int(seed)}, {int(self.clock())})\n"
        )
        self.meters[home] = _VmMeter(home=home, meter=meter, config=config, soc=soc, proc=proc)
        await self._call(
            proc,
            {"op": "boot", "meter": meter, "files": files, "code": code, "heapsize": self.heapsize},
        )

    def _apply(self, m: _VmMeter, events: list[list[Any]]) -> None:
        for event in events:
            kind = event[0]
            if kind == "will":
                m.will = (event[1], base64.b64decode(event[2]), bool(event[3]), int(event[4]))
            elif kind == "connect":
                if m.relay is not None:
                    m.relay.disconnect()
                cfg = m.config
                relay = PahoClient(
                    m.meter,
                    cfg["broker_host"],
                    cfg["broker_port"],
                    cfg.get("broker_user") or "",
                    cfg.get("broker_password") or "",
                    cfg.get("keepalive_s", 60),
                    wait_puback=False,
                    nodelay=True,
                )
                relay.set_callback(functools.partial(self._received, m))
                if m.will is not None:
                    relay.set_last_will(*m.will)
                relay.connect()
                m.relay = relay
            elif kind == "subscribe" and m.relay is not None:
                m.relay.subscribe(event[1], qos=int(event[2]))
            elif kind == "publish" and m.relay is not None:
                m.relay.publish(
                    event[1], base64.b64decode(event[2]), retain=bool(event[3]), qos=int(event[4])
                )
                m.published += 1
            elif kind == "close" and m.relay is not None:
                m.relay.disconnect()
                m.relay = None

    async def step_one(self, home: str) -> None:
        """Run ``home``'s firmware until it has handled what it has received."""
        await self._step(self.meters[home])

    def published_seq(self, home: str) -> int:
        """The seq of the last message ``home``'s meter published (-1 before the first)."""
        return self.meters[home].seq - 1

    async def wait_readable(self, home: str, timeout: float) -> None:
        """Return when the relay of ``home``'s meter has bytes to read from its broker, or
        after ``timeout`` s."""
        relay = self.meters[home].relay
        await _readable(relay.socket() if relay is not None else None, timeout)

    async def _step(self, m: _VmMeter) -> None:
        assert m.proc is not None
        for _ in range(16):
            try:
                if m.relay is not None:
                    self._receive(m)
            except OSError as err:
                raise FleetError(f"meter {m.meter}: its MQTT relay failed: {err}") from err
            inbox = [[t.decode(), base64.b64encode(p).decode()] for t, p in m.received]
            m.received.clear()
            request = {
                "now": int(self.clock()),
                "soc": int(m.soc()),
                "power": m.power,
                "imp": m.imp,
                "exp": m.exp,
                "link": True,
                "inbox": inbox,
            }
            m.imp = m.exp = 0
            answer = await self._call(
                m.proc,
                {
                    "op": "run",
                    "meter": m.meter,
                    "code": f"simvm.step({json.dumps(json.dumps(request))})",
                },
            )
            out = json.loads(answer["out"].strip().splitlines()[-1])
            self._apply(m, out["events"])
            m.connected = bool(out["connected"])
            m.refusals = int(out["refusals"])
            m.seq = int(out["seq"])
            try:
                if m.relay is None or m.relay.pending() == 0:
                    break
            except OSError as err:
                raise FleetError(f"meter {m.meter}: its MQTT relay failed: {err}") from err

    @staticmethod
    def _received(m: _VmMeter, topic: bytes, payload: bytes) -> None:
        m.received.append((topic, payload))

    @staticmethod
    def _receive(m: _VmMeter) -> None:
        """Move what the relay's connection holds into ``m.received``, one message per
        check_msg as umqtt.simple reads them."""
        assert m.relay is not None
        while True:
            before = len(m.received)
            m.relay.check_msg()
            if len(m.received) == before:
                return

    def connected(self) -> bool:
        return all(m.connected and m.relay is not None for m in self.meters.values())

    def add_energy(self, home: str, *, import_wh: int, export_wh: int, seconds: int) -> None:
        m = self.meters[home]
        m.imp += import_wh
        m.exp += export_wh
        m.power = (import_wh - export_wh) * 3600 // seconds

    def refusals(self) -> int:
        return sum(m.refusals for m in self.meters.values())

    async def close(self) -> None:
        """Copy each meter's flash (config.json, state.json) out of its VM, then stop."""
        for m in self.meters.values():
            proc = m.proc
            try:
                if proc is not None and proc.returncode is None:
                    answer = await self._call(
                        proc, {"op": "files", "meter": m.meter, "dir": f"/m/{m.meter}"}
                    )
                    target = self.directory / m.home
                    target.mkdir(parents=True, exist_ok=True)
                    for path, text in answer["files"].items():
                        (target / Path(path).name).write_text(text)
            finally:
                if m.relay is not None:
                    m.relay.disconnect()
                if proc is not None and proc.returncode is None:
                    assert proc.stdin is not None
                    proc.stdin.close()
                    try:
                        await asyncio.wait_for(proc.wait(), timeout=10)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
